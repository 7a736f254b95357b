package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wevion/keyproxy/bench/loadgen"
)

// wrkScript sends the prepared requests in turn (one per key, so load
// spreads over every user) and prints the summary as one JSON line.
const wrkScript = `
local reqs, n, i = {}, 0, 0
function init(args)
  local f = io.open(args[1])
  if f then
    for line in f:lines() do
      if line ~= "" then
        n = n + 1
        reqs[n] = wrk.format("GET", args[2], {["Authorization"] = "Bearer " .. line,
          ["User-Agent"] = "wrk", ["Accept"] = "application/json"})
      end
    end
    f:close()
  end
  if n == 0 then
    reqs[1] = wrk.format("GET", args[2], {["User-Agent"] = "wrk", ["Accept"] = "application/json"})
    n = 1
  end
  i = math.random(n) - 1
end
function request()
  i = i % n + 1
  return reqs[i]
end
function done(s, lat, reqs)
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    s.requests, s.duration, s.errors.connect, s.errors.read, s.errors.write, s.errors.status, s.errors.timeout,
    lat:percentile(50), lat:percentile(90), lat:percentile(99), lat.max))
end
`

// generator drives one measured run against addr.
type generator interface {
	name() string
	run(ctx context.Context, addr string, tokens []string, d time.Duration) (loadgen.Result, error)
}

// wrkGen runs wrk (closed loop) pinned to the generator's cores.
type wrkGen struct {
	bin, dir, cpus string
	conns          int
}

func (w *wrkGen) name() string { return "wrk" }

func (w *wrkGen) run(ctx context.Context, addr string, tokens []string, d time.Duration) (loadgen.Result, error) {
	script := filepath.Join(w.dir, "bench.lua")
	if _, err := os.Stat(script); err != nil {
		if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
			return loadgen.Result{}, err
		}
	}
	keys := filepath.Join(w.dir, "tokens-"+strings.ReplaceAll(addr, ":", "_"))
	if err := os.WriteFile(keys, []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
		return loadgen.Result{}, err
	}
	secs := max(1, int(d/time.Second))
	argv := []string{w.bin, "-t1", "-c" + strconv.Itoa(w.conns), "-d" + strconv.Itoa(secs) + "s", "--timeout", "5s",
		"-s", script, "http://" + addr + "/v1/projects/42", "--", keys, "/v1/projects/42"}
	if w.cpus != "" {
		argv = append([]string{"taskset", "-c", w.cpus}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return loadgen.Result{}, fmt.Errorf("wrk: %w\n%s", err, out.String())
	}
	return parseWrk(out.Bytes())
}

type wrkSummary struct {
	Requests   int   `json:"requests"`
	DurationUS int64 `json:"duration_us"`
	Connect    int   `json:"connect"`
	Read       int   `json:"read"`
	Write      int   `json:"write"`
	Status     int   `json:"status"`
	Timeout    int   `json:"timeout"`
	P50US      int64 `json:"p50_us"`
	P90US      int64 `json:"p90_us"`
	P99US      int64 `json:"p99_us"`
	MaxUS      int64 `json:"max_us"`
}

// parseWrk finds the script's WRKJSON line in wrk's output.
func parseWrk(out []byte) (loadgen.Result, error) {
	for line := range strings.Lines(string(out)) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "WRKJSON ")
		if !ok {
			continue
		}
		var s wrkSummary
		if err := json.Unmarshal([]byte(rest), &s); err != nil {
			return loadgen.Result{}, fmt.Errorf("wrk summary %q: %w", rest, err)
		}
		us := func(n int64) time.Duration { return time.Duration(n) * time.Microsecond }
		return loadgen.Result{
			Requests: s.Requests,
			Non2xx:   s.Status,
			Errors:   s.Connect + s.Read + s.Write + s.Timeout,
			Elapsed:  us(s.DurationUS),
			P50:      us(s.P50US), P90: us(s.P90US), P99: us(s.P99US), Max: us(s.MaxUS),
		}, nil
	}
	return loadgen.Result{}, errors.New("wrk printed no summary (was the script loaded?):\n" + string(out))
}

// goGen is the built-in generator, closed loop or at a fixed rate. It runs
// inside loadbench, which run pins to the generator's cores.
type goGen struct {
	conns int
	rate  float64
}

func (g *goGen) name() string {
	if g.rate > 0 {
		return fmt.Sprintf("loadgen@%.0f/s", g.rate)
	}
	return "loadgen"
}

func (g *goGen) run(ctx context.Context, addr string, tokens []string, d time.Duration) (loadgen.Result, error) {
	return loadgen.Run(ctx, loadgen.Options{
		Addr: addr, Requests: loadgen.NewRequests(addr, "/v1/projects/42", tokens),
		Conns: g.conns, Duration: d, Rate: g.rate,
	})
}
