package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wevion/keyproxy/bench/loadgen"
)

type options struct {
	keyproxy   string
	duration   time.Duration
	latencyDur time.Duration
	warmup     time.Duration
	rewarm     time.Duration
	rounds     int
	conns      int
	keys       int
	generator  string
	redis      string
	genCPUs    string
	proxyCPUs  string
	keep       bool
	perUser    int
	only       string
	env        string
	nginx      string
	baseline   string
	control    bool
}

// target is one proxy under test.
type target struct {
	name, desc string
	addr       string
	proc       *proc
	extra      []*proc // processes whose CPU counts toward the target (redis-server)
	pair       *proc   // nginx-auth's key-check service, on the proxy's core
	control    bool    // a second bare proxy: what it "adds" is the run's noise
	keys       []string
	adminURL   string
	thr, lat   []measurement
}

type measurement struct {
	res       loadgen.Result
	cpuPerReq time.Duration // the proxy process's CPU per response
	extraCPU  time.Duration // the extra processes' CPU per response
	proxyCore float64       // busy share of the proxy's core
	genCore   float64       // busy share of the generator's core
	logPerReq float64       // bytes the proxy logged per response
	ratio     float64       // throughput ÷ bare's in the same round
	cpuRatio  float64       // bare's CPU per response ÷ this one's, same round
	addP50    time.Duration // latency run: p50 − bare's p50 in the same round
	addP99    time.Duration
	// held: the latency run kept its rate, so its latencies mean something;
	// added: this and bare's run of the round both held it.
	held, added bool
}

func runCmd(args []string) error {
	var o options
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&o.keyproxy, "keyproxy", "", "keyproxy binary (default: go build ./cmd/keyproxy into the work directory)")
	fs.DurationVar(&o.duration, "duration", 4*time.Second, "length of each throughput run")
	fs.DurationVar(&o.latencyDur, "latency-duration", 4*time.Second, "length of each fixed-rate latency run")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "warm-up per target before the first round")
	fs.DurationVar(&o.rewarm, "rewarm", time.Second, "unmeasured load at the run's own rate before every measured run: taking turns leaves each target idle for longer than keyproxy's key cache TTL (cache.ttl, 10s), which steady traffic never does, so without it every run would start with a cold cache (0: measure from whatever state the previous turn left)")
	fs.IntVar(&o.rounds, "rounds", 9, "rounds; each runs every target once, in turn (many short rounds: a noisy stretch of the machine then spoils one round, not a target)")
	fs.IntVar(&o.conns, "conns", 64, "keep-alive connections of the load generator")
	fs.IntVar(&o.keys, "keys", 1000, "API keys (one user each) the load is spread over")
	fs.StringVar(&o.generator, "generator", "auto", "throughput load generator: wrk, go, or auto (wrk when installed)")
	fs.StringVar(&o.redis, "redis", "auto", "Redis mode: on, off, or auto (on when redis-server is installed)")
	fs.StringVar(&o.genCPUs, "gen-cpus", "0", "CPUs of the load generator, backend and redis-server (taskset list)")
	fs.StringVar(&o.proxyCPUs, "proxy-cpus", "1", "CPU of the proxy under test (taskset list); it runs with GOMAXPROCS=1")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, databases)")
	fs.IntVar(&o.perUser, "per-user-limit", 600_000, "rate limit per user per minute: generous, so the limiter decides every request but refuses none")
	fs.StringVar(&o.only, "only", "", "comma-separated target names to run (default: all)")
	fs.StringVar(&o.nginx, "nginx", "", "nginx binary for the nginx-auth comparison (default: nginx on PATH; none: the target is left out)")
	fs.StringVar(&o.baseline, "baseline", "", "a second keyproxy binary, run with its defaults as target \"baseline\" in every round: two builds compared in one run, as this machine's noise allows no other way")
	fs.BoolVar(&o.control, "control", true, "run a second bare proxy as target \"bare-again\": its added p99 and ratio are what the machine's noise alone produces in this run")
	fs.StringVar(&o.env, "env", "", "space-separated KEYPROXY_NAME=value settings added to every keyproxy target (to measure a setting)")
	_ = fs.Parse(args)
	// Processes start in the work directory: a relative binary path would
	// name nothing there.
	for _, bin := range []*string{&o.keyproxy, &o.baseline, &o.nginx} {
		if *bin != "" && strings.ContainsRune(*bin, filepath.Separator) {
			abs, err := filepath.Abs(*bin)
			if err != nil {
				return err
			}
			*bin = abs
		}
	}
	if o.rounds < 1 || o.conns < 1 || o.keys < 1 || o.duration < time.Second {
		return errors.New("rounds, conns and keys must be positive and duration at least 1s")
	}
	if o.rewarm != 0 && o.rewarm < time.Second {
		return errors.New("rewarm must be 0 or at least 1s (wrk counts whole seconds)")
	}
	if err := pinSelf(o.genCPUs); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "keyproxy-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Printf("work directory: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	b := &bench{o: o, dir: dir}
	defer b.stopAll()
	if err := b.setup(ctx); err != nil {
		return err
	}
	return b.measure(ctx, os.Stdout)
}

// pinSelf re-executes loadbench under taskset on the generator's CPUs, so
// the built-in generator and anything it starts unpinned stay off the
// proxy's core. It is a no-op when taskset is missing or already done.
func pinSelf(cpus string) error {
	if os.Getenv("LOADBENCH_PINNED") != "" || cpus == "" {
		return nil
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil || runtime.NumCPU() < 2 {
		fmt.Fprintln(os.Stderr, "loadbench: taskset missing or a single CPU: nothing is pinned, figures will be noisier")
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	env := append(os.Environ(), "LOADBENCH_PINNED=1")
	return syscall.Exec(taskset, append([]string{"taskset", "-c", cpus, self}, os.Args[1:]...), env)
}

type bench struct {
	o        options
	dir      string
	self     string
	upstream *proc
	upAddr   string
	redis    *proc
	redisOff string // why Redis mode is not measured
	nginxOff string // why the nginx pair is not measured
	targets  []*target
	gen      generator
	procs    []*proc
}

func (b *bench) start(name, cpus string, env []string, argv ...string) (*proc, error) {
	p, err := startProc(b.dir, name, cpus, env, argv...)
	if err == nil {
		b.procs = append(b.procs, p)
	}
	return p, err
}

// stopAll stops every process this run started, newest first.
func (b *bench) stopAll() {
	for i := len(b.procs) - 1; i >= 0; i-- {
		b.procs[i].stop(15 * time.Second)
	}
}

func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.o.keyproxy == "" {
		b.o.keyproxy = filepath.Join(b.dir, "keyproxy")
		fmt.Fprintln(os.Stderr, "building keyproxy ...")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.o.keyproxy, "./cmd/keyproxy")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building keyproxy (run from the repository root, or pass -keyproxy): %w", err)
		}
	}
	switch b.o.generator {
	case "wrk", "auto":
		if bin, err := exec.LookPath("wrk"); err == nil {
			b.gen = &wrkGen{bin: bin, dir: b.dir, cpus: b.o.genCPUs, conns: b.o.conns}
		} else if b.o.generator == "wrk" {
			return errors.New("wrk not found on PATH (bench/run.sh installs it; or -generator go)")
		}
	case "go":
	default:
		return fmt.Errorf("-generator %q: want wrk, go or auto", b.o.generator)
	}
	if b.gen == nil {
		b.gen = &goGen{conns: b.o.conns}
	}

	if b.upAddr, err = freeAddr(); err != nil {
		return err
	}
	if b.upstream, err = b.start("upstream", b.o.genCPUs, []string{"GOMAXPROCS=1"}, b.self, "upstream", "-listen", b.upAddr); err != nil {
		return err
	}
	if err := waitHTTP(ctx, b.upstream, "http://"+b.upAddr+"/", 10*time.Second); err != nil {
		return err
	}

	want := func(name string) bool {
		if b.o.only == "" {
			return true
		}
		for n := range strings.SplitSeq(b.o.only, ",") {
			if strings.TrimSpace(n) == name {
				return true
			}
		}
		return false
	}
	if want("bare") {
		if err := b.startBare(ctx, "bare", "bare httputil.ReverseProxy (MaxIdleConnsPerHost 1024)"); err != nil {
			return err
		}
		if b.o.control {
			if err := b.startBare(ctx, "bare-again", "the same bare proxy, a second process: the control, whose figures are noise"); err != nil {
				return err
			}
			b.targets[len(b.targets)-1].control = true
		}
	}
	variants := []struct {
		name, desc string
		env        []string
		redis      bool
		bin        string
	}{
		{name: "keyproxy", desc: "keyproxy, defaults (audit sinks [log, store]; log.access auto: no second line beside the audit event's)"},
		{name: "baseline", desc: "-baseline " + b.o.baseline + ", defaults", bin: b.o.baseline},
		{name: "access-log", desc: "keyproxy, defaults plus log.access=true (an access line beside the audit event's)", env: []string{"KEYPROXY_LOG_ACCESS=true"}},
		{name: "audit-store-only", desc: "keyproxy, log.access=false, audit.sinks=[store]", env: []string{"KEYPROXY_LOG_ACCESS=false", "KEYPROXY_AUDIT_SINKS=store"}},
		{name: "redis", desc: "keyproxy + Redis (cache, revocation, GCRA limits), defaults", redis: true},
	}
	for _, v := range variants {
		if !want(v.name) || v.name == "baseline" && v.bin == "" {
			continue
		}
		if v.bin == "" {
			v.bin = b.o.keyproxy
		}
		if v.redis {
			if err := b.startRedis(ctx); err != nil {
				return err
			}
			if b.redis == nil {
				continue
			}
			v.env = append(v.env, "KEYPROXY_REDIS_ADDR="+b.redisAddr())
		}
		t, err := b.startKeyproxy(ctx, v.bin, v.name, v.desc, v.env)
		if err != nil {
			if v.redis {
				b.redisOff = "keyproxy did not start in Redis mode: " + firstLine(err.Error())
				continue
			}
			return err
		}
		if v.redis {
			t.extra = []*proc{b.redis}
		}
	}
	if want("nginx-auth") {
		if err := b.startNginx(ctx); err != nil {
			return err
		}
	}
	if len(b.targets) == 0 {
		return errors.New("no target to measure")
	}
	return nil
}

func (b *bench) startBare(ctx context.Context, name, desc string) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	p, err := b.start(name, b.o.proxyCPUs, []string{"GOMAXPROCS=1"}, b.self, "bare", "-listen", addr, "-upstream", "http://"+b.upAddr)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, p, "http://"+addr+"/", 10*time.Second); err != nil {
		return err
	}
	t := &target{name: name, desc: desc, addr: addr, proc: p}
	// The same requests as keyproxy gets, so request sizes match.
	t.keys, err = randomTokens(b.o.keys)
	if err != nil {
		return err
	}
	b.targets = append(b.targets, t)
	return nil
}

func (b *bench) startRedis(ctx context.Context) error {
	if b.redis != nil || b.redisOff != "" {
		return nil
	}
	switch b.o.redis {
	case "off":
		b.redisOff = "-redis off"
		return nil
	case "on", "auto":
	default:
		return fmt.Errorf("-redis %q: want on, off or auto", b.o.redis)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if b.o.redis == "on" {
			return errors.New("redis-server not found on PATH (bench/run.sh installs it)")
		}
		b.redisOff = "redis-server is not installed"
		return nil
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := strings.Cut(addr, ":")
	p, err := b.start("redis", b.o.genCPUs, nil, bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", b.dir)
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, p, addr, 10*time.Second); err != nil {
		return err
	}
	b.redis = p
	return nil
}

func (b *bench) redisAddr() string {
	for i, a := range b.redis.cmd.Args {
		if a == "--port" && i+1 < len(b.redis.cmd.Args) {
			return "127.0.0.1:" + b.redis.cmd.Args[i+1]
		}
	}
	return ""
}

func (b *bench) startKeyproxy(ctx context.Context, bin, name, desc string, extraEnv []string) (*target, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	tok, err := randomHex(24)
	if err != nil {
		return nil, err
	}
	limit := strconv.Itoa(b.o.perUser)
	env := append([]string{
		"GOMAXPROCS=1",
		"KEYPROXY_LISTEN=" + addr,
		"KEYPROXY_ADMIN_LISTEN=" + adminAddr,
		"KEYPROXY_ADMIN_TOKENS=" + tok,
		"KEYPROXY_UPSTREAM_URL=http://" + b.upAddr,
		"KEYPROXY_STORE_DSN=" + filepath.Join(b.dir, name+".db"),
		"KEYPROXY_RATELIMIT_DEFAULT_REQUESTS=" + limit,
		"KEYPROXY_RATELIMIT_DEFAULT_PER=1m",
		"KEYPROXY_RATELIMIT_DEFAULT_BURST=" + strconv.Itoa(max(b.o.perUser/60, 100)),
	}, extraEnv...)
	env = append(env, strings.Fields(b.o.env)...)
	p, err := b.start(name, b.o.proxyCPUs, env, bin, "serve")
	if err != nil {
		return nil, err
	}
	adminURL := "http://" + adminAddr
	if err := waitHTTP(ctx, p, adminURL+"/readyz", 20*time.Second); err != nil {
		p.stop(5 * time.Second)
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "%s: creating %d keys through the admin API ...\n", name, b.o.keys)
	keys, err := createKeys(ctx, adminURL, tok, b.o.keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := checkForwarding(ctx, addr, keys[0]); err != nil {
		return nil, fmt.Errorf("%s does not forward as expected: %w", name, err)
	}
	t := &target{name: name, desc: desc, addr: addr, proc: p, keys: keys, adminURL: adminURL}
	b.targets = append(b.targets, t)
	return t, nil
}

// once runs gen against t for d and measures CPU and log growth around it.
func (b *bench) once(ctx context.Context, gen generator, t *target, d time.Duration) (measurement, error) {
	proxyCore, _ := strconv.Atoi(strings.SplitN(b.o.proxyCPUs, ",", 2)[0])
	genCore, _ := strconv.Atoi(strings.SplitN(b.o.genCPUs, ",", 2)[0])
	cores0, _ := readCores()
	cpu0, _ := t.cpuTime()
	extra0 := extraCPU(t)
	log0 := fileSize(t.proc.log)
	res, err := gen.run(ctx, t.addr, t.keys, d)
	if err != nil {
		return measurement{}, fmt.Errorf("%s: %w", t.name, err)
	}
	cores1, _ := readCores()
	cpu1, _ := t.cpuTime()
	m := measurement{res: res}
	if res.Requests > 0 {
		n := time.Duration(res.Requests)
		m.cpuPerReq = (cpu1 - cpu0) / n
		m.extraCPU = (extraCPU(t) - extra0) / n
		m.logPerReq = float64(fileSize(t.proc.log)-log0) / float64(res.Requests)
	}
	m.proxyCore = busyShare(cores0, cores1, proxyCore)
	m.genCore = busyShare(cores0, cores1, genCore)
	if t.proc.exited() {
		return m, fmt.Errorf("%s exited during the run:\n%s", t.name, t.proc.tail(10))
	}
	return m, nil
}

func extraCPU(t *target) time.Duration {
	var sum time.Duration
	for _, p := range t.extra {
		c, _ := p.cpuTime()
		sum += c
	}
	return sum
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// auditLosses reads keyproxy's spilled and dropped audit counters.
func auditLosses(adminURL string) (spilled, dropped float64, err error) {
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	return sumMetric(string(body), "keyproxy_audit_spilled_total"), sumMetric(string(body), "keyproxy_audit_dropped_total"), nil
}

// sumMetric adds every sample of a metric in Prometheus text exposition.
func sumMetric(exposition, name string) float64 {
	var sum float64
	for line := range strings.Lines(exposition) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func randomTokens(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		h, err := randomHex(20)
		if err != nil {
			return nil, err
		}
		out[i] = "wev_" + h
	}
	return out, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
