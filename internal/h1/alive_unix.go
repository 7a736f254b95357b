//go:build unix

package h1

import (
	"net"
	"syscall"
)

// prober peeks at an idle connection without blocking, one system call,
// and without disturbing the connection's deadlines. It is made once per
// connection: a peek through a fresh SyscallConn and closure cost four
// allocations on every reuse.
type prober struct {
	raw  syscall.RawConn // nil: the connection has no descriptor to peek at
	peek func(fd uintptr) bool
	buf  [1]byte
	ok   bool
}

func newProber(nc net.Conn) *prober {
	p := &prober{}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			p.raw = raw
		}
	}
	p.peek = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read is the healthy state; EOF (n == 0), a reset or
		// stray bytes all mean the connection is done.
		p.ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	}
	return p
}

// alive reports whether an idle connection can still carry a request: the
// backend has neither closed it nor sent anything unasked.
func (p *prober) alive() bool {
	if p.raw == nil {
		return true
	}
	p.ok = false
	err := p.raw.Read(p.peek)
	return err == nil && p.ok
}
