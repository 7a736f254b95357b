//go:build unix

package h1

import (
	"net"
	"syscall"
)

// alive reports whether an idle connection can still carry a request: the
// backend has neither closed it nor sent anything unasked. It peeks at the
// socket without blocking, one system call, and without disturbing the
// connection's deadlines.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read is the healthy state; EOF (n == 0), a reset or
		// stray bytes all mean the connection is done.
		ok = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && ok
}
