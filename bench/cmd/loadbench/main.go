// Command loadbench is keyproxy's side-by-side load benchmark.
//
//	loadbench run [flags]        the whole benchmark (bench/run.sh calls this)
//	loadbench upstream -listen   the fast backend every proxy forwards to
//	loadbench bare -listen -upstream
//	                             a bare httputil.ReverseProxy: the ceiling
//	loadbench keycheck -listen -db -keys-out
//	                             the Go key-check service behind nginx's
//	                             auth_request: the stretch comparison
//
// run starts the backend, the bare proxy and keyproxy (single node, then
// with Redis) as separate processes, the proxies pinned to one core with
// GOMAXPROCS=1 and the load generator and backend on another, creates API
// keys through the admin API, then alternates the targets round by round
// and prints each one's throughput and latency as ratios to the bare proxy
// measured in the same round.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		err = runCmd(args)
	case "upstream":
		err = upstreamCmd(args)
	case "bare":
		err = bareCmd(args)
	case "keycheck":
		err = keycheckCmd(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadbench run|upstream|bare|keycheck [flags] (-h for flags)")
	os.Exit(2)
}
