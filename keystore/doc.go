// Package keystore holds everything about API keys behind the request path:
// the key format (parsed and checksummed without I/O), the Store of record
// (SQLite for a single node, PostgreSQL for several; both pass
// keystore/storetest), the caches in front of it and the usage tracker.
//
// A request resolves a key in layers, each falling through to the next:
//
//	Format.Parse   no I/O; junk never reaches a cache
//	Resolver       in-process, bounded, TTL'd, single-flight misses
//	(Redis cache)  shared by replicas, with tombstones and eviction fan-out
//	Store          the record
//
// Revocation is immediate on the replica that serves it: the caller revokes
// in the Store, then invalidates the hash, and no Resolve that starts after
// Invalidate returns serves the old identity, even if a read that began
// before the revocation finishes afterwards.
package keystore
