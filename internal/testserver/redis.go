// Package testserver starts the real servers the tests talk to: a private
// redis-server per test on a free port (so a test can kill and restart it),
// and a throw-away PostgreSQL database. A missing server fails the test with
// a clear message; it is never a silent skip.
package testserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Redis is a redis-server owned by one test.
type Redis struct {
	Addr string
	tb   testing.TB
	dir  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has exited and been waited for
}

// StartRedis starts redis-server on a free loopback port and stops it when
// the test ends. It fails the test if redis-server is not installed.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("testserver: redis-server not found on PATH (run scripts/test.sh, which installs it): %v", err)
	}
	port := freePort(tb)
	r := &Redis{tb: tb, dir: tb.TempDir(), port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	r.Start()
	tb.Cleanup(r.Kill)
	return r
}

// Start (re)starts the server on its port and waits until it answers.
func (r *Redis) Start() {
	r.tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir,
		"--logfile", filepath.Join(r.dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		r.tb.Fatalf("testserver: starting redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			// A port taken or a bad option: say so now, with redis's reason,
			// rather than after the PING deadline.
			r.cmd = nil
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.tb.Fatalf("testserver: redis-server on %s exited at start; its log ends:\n%s", r.Addr, lastLines(string(log), 5))
		default:
		}
		if err := redisPing(r.Addr); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.tb.Fatalf("testserver: redis-server on %s did not answer PING within 10s", r.Addr)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (r *Redis) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

// Restart kills the server and starts a new, empty one on the same port.
func (r *Redis) Restart() {
	r.Kill()
	r.Start()
}

// Do sends one command in RESP and returns the raw first reply line; enough
// for fault injection (CLIENT KILL, CLIENT PAUSE, DEBUG SLEEP) without a client.
func (r *Redis) Do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", r.Addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	msg := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		msg += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Fill makes the server answer reads and PUBLISH but refuse writes, as a
// Redis out of memory under the noeviction policy does (and a replica left
// read-only by a failover, for writes); Fill(false) lifts it.
func (r *Redis) Fill(tb testing.TB, full bool) {
	tb.Helper()
	limit := map[bool]string{true: "1", false: "0"}[full]
	for _, kv := range [][2]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", limit}} {
		if reply, err := r.Do("CONFIG", "SET", kv[0], kv[1]); err != nil || !strings.HasPrefix(reply, "+OK") {
			tb.Fatalf("CONFIG SET %s %s: %q %v", kv[0], kv[1], reply, err)
		}
	}
}

func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "+PONG\r\n" {
		return fmt.Errorf("unexpected reply %q", buf[:n])
	}
	return nil
}

// freePort picks a free loopback port below the kernel's ephemeral range.
// A port from that range (what listening on :0 gives) can become the local
// port of another test's client socket while the server is down between
// Kill and Start, and redis-server then cannot bind it again; ports below
// the range are never handed to client sockets. PostgreSQL's start in
// scripts/test.sh failed that way.
func freePort(tb testing.TB) int {
	tb.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				lo = n
			}
		}
	}
	for range 100 {
		port := 10000 + rand.IntN(lo-10000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken
		}
		_ = l.Close()
		return port
	}
	tb.Fatalf("testserver: no free port below %d in 100 tries", lo)
	return 0
}

// Context returns a context bounded by the test's deadline or 2 minutes.
func Context(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}
