#!/usr/bin/env bash
# keyproxy's benchmark, one command on a fresh Debian machine with Go:
#
#   bench/run.sh                 # full run (about 15 minutes on 2 cores)
#   bench/run.sh -rounds 5       # flags go to `loadbench run` (see -h)
#   QUICK=1 bench/run.sh         # short smoke run (about 3 minutes)
#   SKIP_STORE=1 bench/run.sh    # load benchmark only
#
# 1. installs wrk and redis-server with apt-get when missing (without wrk the
#    built-in Go generator is used instead);
# 2. builds keyproxy and bench/cmd/loadbench, unpacks Debian's nginx when it
#    is not installed, then runs the side-by-side load benchmark: a bare
#    httputil.ReverseProxy, the same again as a control (its figures are the
#    run's noise), keyproxy (single node, with and without its logs, and with
#    Redis) and nginx auth_request with a Go key-check service, in front of
#    the same backend, pinned to their own core, alternating round by round;
# 3. runs the key store benchmark: Resolve on a cache miss with 1 k and 1 M
#    keys in SQLite (and PostgreSQL when KEYPROXY_TEST_POSTGRES_DSN is set),
#    and the memory a cached key takes.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if ((${#need[@]})); then
	echo "run.sh: installing ${need[*]}" >&2
	if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
	if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
		echo "run.sh: could not install ${need[*]}; going on without (the Go load generator replaces wrk)" >&2
	fi
fi

bin="$(mktemp -d /tmp/keyproxy-bench-bin.XXXXXX)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/keyproxy" ./cmd/keyproxy
go build -o "$bin/loadbench" ./bench/cmd/loadbench

args=()
# nginx for the stretch comparison: Debian's binary unpacked here, not
# installed, so no service starts on port 80.
if ! command -v nginx >/dev/null 2>&1; then
	if (cd "$bin" && apt-get download -qq nginx >/dev/null 2>&1 && dpkg -x nginx_*.deb nginx-root) && [[ -x "$bin/nginx-root/usr/sbin/nginx" ]]; then
		args+=(-nginx "$bin/nginx-root/usr/sbin/nginx")
	else
		echo "run.sh: could not unpack Debian's nginx; the nginx-auth comparison is left out" >&2
	fi
fi
if [[ -n "${QUICK:-}" ]]; then
	args+=(-rounds 1 -duration 4s -latency-duration 4s -warmup 2s)
else
	# Many short rounds rather than 9 of 4 s, in the same time: on the
	# shared VMs a 4 s or 10 s latency run often holds one of the machine's
	# stalls, and the control then disqualifies the p99 verdicts; with 2 s
	# runs it qualified in both runs tried, against none of four longer ones.
	args+=(-rounds 15 -duration 2s -latency-duration 2s)
fi
"$bin/loadbench" run -keyproxy "$bin/keyproxy" "${args[@]}" "$@"

if [[ -z "${SKIP_STORE:-}" ]]; then
	keys="${STORE_KEYS:-1000000}"
	[[ -n "${QUICK:-}" ]] && keys="${STORE_KEYS:-100000}"
	echo
	echo "key store: Resolve on a cache miss, 1 k vs ${keys} keys; memory per cached key"
	STORE_KEYS="$keys" go test -run '^$' -bench . -benchtime 200000x -benchmem ./bench/storebench/ | grep -Ev '^(goos|goarch|pkg|cpu):'
fi
