package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// nginxConf is the two-hop design DESIGN.md's stretch target names: nginx
// asks a Go key-check service (keycheckCmd) about every request with
// auth_request, copies the identity and rate-limit headers it answers
// with, and forwards to the backend. One worker, keep-alive pools on both
// sides as deep as keyproxy's, and its access log buffered as keyproxy's
// is (an operator's audit trail in this design).
const nginxConf = `worker_processes 1;
user root;
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log warn;
events { worker_connections 8192; }
http {
	access_log {{dir}}/nginx-access.log combined buffer=256k flush=1s;
	client_body_temp_path {{dir}}/nginx-body;
	proxy_temp_path {{dir}}/nginx-proxy;
	fastcgi_temp_path {{dir}}/nginx-fastcgi;
	uwsgi_temp_path {{dir}}/nginx-uwsgi;
	scgi_temp_path {{dir}}/nginx-scgi;
	keepalive_requests 1000000;
	upstream backend { server {{backend}}; keepalive 1024; keepalive_requests 1000000; }
	upstream keycheck { server {{keycheck}}; keepalive 1024; keepalive_requests 1000000; }
	server {
		listen {{listen}};
		location / {
			auth_request /_keycheck;
			auth_request_set $uid $upstream_http_x_wevion_user_id;
			auth_request_set $tid $upstream_http_x_wevion_team_id;
			auth_request_set $role $upstream_http_x_wevion_role;
			auth_request_set $kid $upstream_http_x_wevion_key_id;
			auth_request_set $rl_policy $upstream_http_ratelimit_policy;
			auth_request_set $rl $upstream_http_ratelimit;
			auth_request_set $rl_limit $upstream_http_ratelimit_limit;
			auth_request_set $rl_remaining $upstream_http_ratelimit_remaining;
			auth_request_set $rl_reset $upstream_http_ratelimit_reset;
			proxy_set_header Authorization "";
			proxy_set_header X-Wevion-User-Id $uid;
			proxy_set_header X-Wevion-Team-Id $tid;
			proxy_set_header X-Wevion-Role $role;
			proxy_set_header X-Wevion-Key-Id $kid;
			proxy_set_header X-Request-Id $request_id;
			proxy_set_header X-Forwarded-For $remote_addr;
			proxy_set_header X-Forwarded-Host $host;
			proxy_set_header X-Forwarded-Proto $scheme;
			proxy_set_header Connection "";
			proxy_http_version 1.1;
			proxy_buffering off;
			add_header X-Request-Id $request_id always;
			add_header RateLimit-Policy $rl_policy always;
			add_header RateLimit $rl always;
			add_header RateLimit-Limit $rl_limit always;
			add_header RateLimit-Remaining $rl_remaining always;
			add_header RateLimit-Reset $rl_reset always;
			proxy_pass http://backend;
		}
		location = /_keycheck {
			internal;
			proxy_pass http://keycheck;
			proxy_pass_request_body off;
			proxy_set_header Content-Length "";
			proxy_set_header Connection "";
			proxy_http_version 1.1;
		}
	}
}
`

func renderNginxConf(dir, backend, keycheck, listen string) string {
	return strings.NewReplacer("{{dir}}", dir, "{{backend}}", backend, "{{keycheck}}", keycheck, "{{listen}}", listen).Replace(nginxConf)
}

// startNginx starts the key-check service and nginx, both on the proxy's
// core, and adds them as the target "nginx-auth". Without an nginx binary
// it notes why and measures the rest.
func (b *bench) startNginx(ctx context.Context) error {
	bin := b.o.nginx
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("nginx"); err != nil {
			b.nginxOff = "nginx not found (bench/run.sh unpacks Debian's; or pass -nginx PATH)"
			return nil
		}
	}
	kcAddr, err := freeAddr()
	if err != nil {
		return err
	}
	keysFile := filepath.Join(b.dir, "keycheck.keys")
	fmt.Fprintf(os.Stderr, "nginx-auth: creating %d keys in the key-check service's store ...\n", b.o.keys)
	kc, err := b.start("keycheck", b.o.proxyCPUs, []string{"GOMAXPROCS=1"}, b.self, "keycheck", "-listen", kcAddr,
		"-db", filepath.Join(b.dir, "keycheck.db"), "-keys", strconv.Itoa(b.o.keys), "-keys-out", keysFile,
		"-per-user-limit", strconv.Itoa(b.o.perUser))
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, kc, kcAddr, 2*time.Minute); err != nil {
		return err
	}
	raw, err := os.ReadFile(keysFile)
	if err != nil {
		return err
	}
	keys := strings.Fields(string(raw))
	if len(keys) != b.o.keys {
		return fmt.Errorf("keycheck wrote %d keys, want %d", len(keys), b.o.keys)
	}

	addr, err := freeAddr()
	if err != nil {
		return err
	}
	conf := renderNginxConf(b.dir, b.upAddr, kcAddr, addr)
	confPath := filepath.Join(b.dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	p, err := b.start("nginx", b.o.proxyCPUs, nil, bin, "-p", b.dir, "-c", confPath, "-e", filepath.Join(b.dir, "nginx-error.log"), "-g", "daemon off;")
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, p, addr, 10*time.Second); err != nil {
		return err
	}
	if err := checkForwarding(ctx, addr, keys[0]); err != nil {
		return fmt.Errorf("nginx-auth does not forward as expected: %w", err)
	}
	t := &target{name: "nginx-auth", desc: "nginx auth_request (1 worker, access log) + Go key-check service, both on the proxy core",
		addr: addr, proc: p, keys: keys, pair: kc}
	b.targets = append(b.targets, t)
	return nil
}

// cpuTime is the target's CPU; for nginx-auth, that of nginx (master and
// workers) and the key-check service together, which share the core.
func (t *target) cpuTime() (time.Duration, error) {
	if t.pair == nil {
		return t.proc.cpuTime()
	}
	sum, err := t.proc.cpuTime()
	if err != nil {
		return 0, err
	}
	for _, pid := range childPIDs(t.proc.pid()) {
		if c, err := pidCPU(pid); err == nil {
			sum += c
		}
	}
	c, err := t.pair.cpuTime()
	return sum + c, err
}

// childPIDs reads the children of pid from /proc (nginx's workers).
func childPIDs(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}
