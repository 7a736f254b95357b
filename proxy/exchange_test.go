package proxy

import (
	"testing"
	"unsafe"
)

// Every request allocates an exchange. Up to 512 bytes it takes the 512
// size class; past that an object with pointers also carries a malloc
// header and lands in the 640 class: 128 bytes more per request for the
// collector to sweep.
func TestExchangeFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(exchange{}); n > 512 {
		t.Fatalf("exchange is %d bytes, over 512", n)
	}
}
