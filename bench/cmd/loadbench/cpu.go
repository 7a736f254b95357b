package main

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// coreTimes are one core's cumulative busy and total jiffies.
type coreTimes struct{ busy, total uint64 }

// readCores reads per-core times from /proc/stat, keyed by core number.
func readCores() (map[int]coreTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	return parseProcStat(b), nil
}

// parseProcStat reads the "cpuN user nice system idle iowait irq softirq
// steal ..." lines; idle and iowait are not busy.
func parseProcStat(b []byte) map[int]coreTimes {
	out := map[int]coreTimes{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		var t coreTimes
		for i, s := range f[1:min(len(f), 9)] { // guest time is already in user
			v, _ := strconv.ParseUint(s, 10, 64)
			t.total += v
			if i != 3 && i != 4 {
				t.busy += v
			}
		}
		out[n] = t
	}
	return out
}

// busyShare is how busy core was between two readings, 0..1.
func busyShare(before, after map[int]coreTimes, core int) float64 {
	a, b := before[core], after[core]
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}
