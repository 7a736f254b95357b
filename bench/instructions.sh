#!/usr/bin/env bash
# Instructions per operation of a proxy micro-benchmark, counted by
# callgrind (default: the hot path). Unlike ns/op on a shared machine, the
# count is the same for the same binary whatever else the machine is doing,
# so two commits can be compared by it:
#
#   bench/instructions.sh                      # BenchmarkHotPath/auth+limit+rewrite
#   bench/instructions.sh '^BenchmarkServeHTTP$/keyproxy'
#
# The collector is off (GOGC=off): its share depends on timing, not on the
# code. Two run lengths are counted and subtracted, so start-up drops out.
# valgrind reports a CPU without SHA extensions, so SHA-256 runs its AVX2
# code here: about 2,000 instructions more than on a CPU with SHA-NI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
	if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
	$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

bench="${1:-^BenchmarkHotPath\$/auth}"
dir="$(mktemp -d /tmp/keyproxy-instr.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
go test -c -o "$dir/proxy.test" ./proxy

count() {
	# Async preemption signals occasionally stop a run under valgrind.
	GOGC=off GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		"$dir/proxy.test" -test.run '^$' -test.bench "$bench" -test.benchtime "${1}x" -test.cpu 1 2>&1 |
		awk '/Collected/ {print $4}'
}
short=$(count 20000)
long=$(count 60000)
if [[ -z "$short" || -z "$long" ]]; then
	echo "instructions.sh: callgrind gave no count for $bench" >&2
	exit 1
fi
echo "$bench: $(((long - short) / 40000)) instructions per op"
