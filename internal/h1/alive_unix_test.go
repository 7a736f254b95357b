//go:build unix

package h1

import (
	"net"
	"testing"
)

func TestProber(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer peer.Close()

	p := newProber(nc)
	if !p.alive() {
		t.Fatal("a quiet open connection is not alive")
	}
	// It runs on every reuse of a backend connection.
	if n := testing.AllocsPerRun(100, func() { p.alive() }); n != 0 {
		t.Errorf("a peek allocates %v times, want 0", n)
	}
	if _, err := peer.Write([]byte("H")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stray byte to be seen", func() bool { return !p.alive() })
	// A peek does not consume: the byte is still there to read.
	var b [1]byte
	if n, err := nc.Read(b[:]); n != 1 || b[0] != 'H' {
		t.Fatalf("read %d %q, %v: want the peeked byte", n, b[:n], err)
	}
	if !p.alive() {
		t.Fatal("not alive once the stray byte was read")
	}
	peer.Close()
	waitFor(t, "the hang-up to be seen", func() bool { return !p.alive() })
}
