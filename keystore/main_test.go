package keystore_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The resolver's caches and the stores' pools start goroutines; every test
// must stop them (Resolver.Close, Store.Close).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
