package testserver

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestFreePort_IsBelowTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatalf("reading the ephemeral range: %v", err)
	}
	lo, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if p := freePort(t); p < 10000 || (lo > 12000 && p >= lo) {
			t.Fatalf("port %d, want 10000 ≤ port < %d", p, lo)
		}
	}
}

func TestRedis_KillAndRestartOnTheSamePort(t *testing.T) {
	r := StartRedis(t)
	if err := redisPing(r.Addr); err != nil {
		t.Fatalf("fresh server: %v", err)
	}
	r.Kill()
	if err := redisPing(r.Addr); err == nil {
		t.Fatal("a killed server still answers")
	}
	r.Restart()
	if reply, err := r.Do("PING"); err != nil || reply != "+PONG\r\n" {
		t.Fatalf("restarted server: %q, %v", reply, err)
	}
}
