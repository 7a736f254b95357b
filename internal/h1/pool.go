package h1

import (
	"sync"
	"time"
)

// pool keeps idle connections per backend address, most recently used on
// top: a busy proxy keeps reusing its warmest connections, and those left
// at the bottom age out after the idle timeout.
type pool struct {
	t     *Transport
	mu    sync.Mutex
	idle  map[string][]*conn
	n     int
	timer *time.Timer // armed while any connection is idle
}

func (p *pool) init(t *Transport) {
	p.t = t
	p.idle = make(map[string][]*conn)
}

// get returns an idle connection to addr, or nil when there is none. It
// first makes sure the backend has neither closed the connection nor
// written to it while it sat idle. A request that cannot be sent twice
// must know the first before it is written; and bytes the backend sent
// unasked (a 408 on an idle timeout, the tail of a body longer than its
// Content-Length) would otherwise be read as the next request's response.
// net/http discards such a connection too.
func (p *pool) get(addr string) (*conn, error) {
	for {
		p.mu.Lock()
		s := p.idle[addr]
		if len(s) == 0 {
			p.mu.Unlock()
			return nil, nil
		}
		c := s[len(s)-1]
		s[len(s)-1] = nil
		p.idle[addr] = s[:len(s)-1]
		p.n--
		p.mu.Unlock()
		if p.t.idleTimeout > 0 && p.t.now().Sub(c.idleAt) >= p.t.idleTimeout {
			c.close()
			continue
		}
		if !c.probe.alive() {
			c.close()
			continue
		}
		return c, nil
	}
}

// put parks c as idle; false means the pool is full and the caller must
// close c.
func (p *pool) put(c *conn) bool {
	c.idleAt = p.t.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.idle[c.addr]
	if len(s) >= p.t.maxIdle {
		return false
	}
	p.idle[c.addr] = append(s, c)
	p.n++
	if p.n == 1 && p.t.idleTimeout > 0 {
		p.arm(p.t.idleTimeout)
	}
	return true
}

func (p *pool) arm(d time.Duration) {
	if p.timer == nil {
		p.timer = time.AfterFunc(d, p.prune)
		return
	}
	p.timer.Reset(d)
}

// prune closes the connections idle for the whole timeout (they sit at the
// bottom of each stack) and re-arms for the oldest one left.
func (p *pool) prune() {
	now := p.t.now()
	var expired []*conn
	p.mu.Lock()
	var oldest time.Time
	for addr, s := range p.idle {
		i := 0
		for i < len(s) && now.Sub(s[i].idleAt) >= p.t.idleTimeout {
			i++
		}
		expired = append(expired, s[:i]...)
		rest := append(s[:0:0], s[i:]...)
		p.idle[addr] = rest
		p.n -= i
		if len(rest) > 0 && (oldest.IsZero() || rest[0].idleAt.Before(oldest)) {
			oldest = rest[0].idleAt
		}
		if len(rest) == 0 {
			delete(p.idle, addr)
		}
	}
	if p.n > 0 {
		p.arm(p.t.idleTimeout - now.Sub(oldest))
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// closeAll closes every idle connection; the pool keeps working, as
// net/http's CloseIdleConnections leaves its Transport usable.
func (p *pool) closeAll() {
	p.mu.Lock()
	var all []*conn
	for addr, s := range p.idle {
		all = append(all, s...)
		delete(p.idle, addr)
	}
	p.n = 0
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
}
