#!/usr/bin/env bash
# Runs keyproxy's whole test suite on a fresh Debian machine with Go:
# installs redis-server, PostgreSQL, promtool and a C compiler (the race
# detector's cgo) when missing, starts a private PostgreSQL cluster for the
# run (unless KEYPROXY_TEST_POSTGRES_DSN names one), then runs
# `go vet`, `staticcheck`, `go test -race ./...` and a short pass of every
# fuzz target.
# The tests start their own redis-server processes on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME="${FUZZTIME:-3s}"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
pg_bin=""
find_pg_bin() { pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"; }
find_pg_bin
if [[ -z "${KEYPROXY_TEST_POSTGRES_DSN:-}" && ( -z "$pg_bin" || ! -x "$pg_bin/initdb" ) ]]; then
	need_apt+=(postgresql)
fi
# promtool lints the deploy kit and a live scrape; the tests fail without
# it. It comes in Debian's prometheus package, whose install would also
# start a Prometheus server on :9090 (keyproxy's admin port) at every boot:
# the package is unpacked into a cache directory instead, and only its
# promtool put on PATH.
tools="${XDG_CACHE_HOME:-$HOME/.cache}/keyproxy-test"
[[ -x "$tools/root/usr/bin/promtool" ]] && export PATH="$tools/root/usr/bin:$PATH"
need_promtool=
command -v promtool >/dev/null 2>&1 || need_promtool=1
# The race detector needs cgo, and go turns cgo off when it finds no C
# compiler: a Debian system installed without one gets "-race requires cgo".
cc="$(go env CC)"
command -v "${cc%% *}" >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
if ((${#need_apt[@]})) || [[ -n "$need_promtool" ]]; then
	if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
	$SUDO apt-get update -qq
fi
if ((${#need_apt[@]})); then
	echo "test.sh: installing ${need_apt[*]}"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
	find_pg_bin
fi
if [[ -n "$need_promtool" ]]; then
	echo "test.sh: unpacking promtool from Debian's prometheus package into $tools"
	rm -rf "$tools" && mkdir -p "$tools"
	# apt-get download as root warns that its sandbox user cannot write
	# here, then downloads all the same.
	(cd "$tools" && apt-get download -qq prometheus >/dev/null 2>&1; dpkg -x prometheus_*.deb root && rm -f prometheus_*.deb)
	export PATH="$tools/root/usr/bin:$PATH"
	command -v promtool >/dev/null || { echo "test.sh: could not unpack promtool" >&2; exit 1; }
fi

pg_dir=""
cleanup() {
	if [[ -n "$pg_dir" ]]; then
		run_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
		rm -rf "$pg_dir"
	fi
}
trap cleanup EXIT

# PostgreSQL refuses to run as root; run it as the postgres user then.
run_pg() {
	if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [[ -z "${KEYPROXY_TEST_POSTGRES_DSN:-}" ]]; then
	pg_dir="$(mktemp -d /tmp/keyproxy-pg.XXXXXX)"
	chmod 755 "$pg_dir"
	[[ $(id -u) -eq 0 ]] && chown postgres "$pg_dir"
	run_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
	# A port below the kernel's ephemeral range: one inside it may be the
	# local port of a client socket or of a TIME_WAIT left by an earlier
	# run's tests, and PostgreSQL's bind then fails although nothing
	# listens there. A start that fails anyway is tried on another port.
	read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_lo=32768
	((eph_lo > 12000)) || eph_lo=32768
	pg_port=""
	for _ in $(seq 5); do
		p=""
		for _ in $(seq 50); do
			c=$((10000 + RANDOM % (eph_lo - 10000)))
			if ! (exec 3<>"/dev/tcp/127.0.0.1/$c") 2>/dev/null; then p=$c; break; fi
		done
		[[ -n "$p" ]] || continue
		if run_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w -t 60 \
			-o "-c listen_addresses=127.0.0.1 -p $p -k $pg_dir -c fsync=off -c max_connections=300" start >/dev/null 2>&1; then
			pg_port=$p
			break
		fi
		run_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
	done
	if [[ -z "$pg_port" ]]; then
		echo "test.sh: could not start a private PostgreSQL; its log:" >&2
		cat "$pg_dir/log" >&2 || true
		exit 1
	fi
	run_pg "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qc "CREATE DATABASE test" >/dev/null
	export KEYPROXY_TEST_POSTGRES_DSN="postgres://postgres@127.0.0.1:$pg_port/test?sslmode=disable"
	echo "test.sh: private PostgreSQL on 127.0.0.1:$pg_port"
fi

export CGO_ENABLED=1
go vet ./...
# staticcheck at a fixed version: a newer one may bring new checks that
# fail a tree nobody changed.
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
go test -race -count=1 -timeout 12m ./...

# A short pass of every fuzz target (go test -fuzz takes one target at a time).
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
	pkg="./$(dirname "${f#./}")"
	grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | while read -r target; do
		echo "fuzz $pkg $target ($FUZZTIME)"
		# Quiet when it passes; the whole output when it fails, which is
		# the only account of why (a crasher is also saved under the
		# package's testdata/fuzz).
		if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1); then
			# Go 1.26's fuzz coordinator can report its own -fuzztime
			# deadline as the target's failure (go.dev/issue/75804, fixed
			# in Go 1.27): a bare "context deadline exceeded" with no input
			# written. That alone gets one more pass; a finding never does.
			if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
				echo "fuzz $pkg $target: the coordinator's deadline race (go.dev/issue/75804); once more"
				out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1) && continue
			fi
			printf '%s\n' "$out" >&2
			exit 1
		fi
	done
done
echo "test.sh: all tests and fuzz passes OK"
