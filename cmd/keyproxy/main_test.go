package main

import (
	"testing"

	"go.uber.org/goleak"
)

// Every instance a test starts must stop whole: its listeners, audit
// writers, Redis loops and store pool.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
