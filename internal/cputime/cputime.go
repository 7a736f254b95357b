// Package cputime measures benchmarks by the process's CPU time, for work
// that pauses on purpose (the audit sinks yield to requests), where ns/op
// would be mostly idle time.
package cputime

import (
	"syscall"
	"testing"
	"time"
)

// Process is the user and system CPU time the process has used so far.
func Process(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchBatches runs write, which handles a batch of n items, once per n
// ops of b, and reports the process's CPU per op as cpu-ns/op.
func BenchBatches(b *testing.B, n int, write func() error) {
	b.ReportAllocs()
	cpu0 := Process(b)
	for i := 0; b.Loop(); i++ {
		if i%n == 0 {
			if err := write(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(Process(b)-cpu0)/float64(b.N), "cpu-ns/op")
}
