#!/usr/bin/env bash
# What a Redis outage costs a request: keyproxy on SQLite with a private
# redis-server, one key in use, then Redis stopped (refusing connections)
# and, in a second phase, restarted full (maxmemory 1, noeviction: it
# answers, refuses writes). Each phase sends 80 requests 50 ms apart and
# prints their status codes, how many took over 50 ms, the slowest,
# /readyz with its time, and how many log lines about Redis it caused. Every process runs on loopback and is stopped by
# PID at the end.
#
#   bench/redis-outage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-outage.sh: needs redis-server (apt-get install redis-server)" >&2; exit 1; }
command -v curl >/dev/null || { echo "redis-outage.sh: needs curl" >&2; exit 1; }

dir="$(mktemp -d /tmp/keyproxy-outage.XXXXXX)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
go build -o "$dir/keyproxy" ./cmd/keyproxy
go build -o "$dir/loadbench" ./bench/cmd/loadbench

# port picks a loopback port below the ephemeral range that nothing listens on.
port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 10000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}
rport=$(port) uport=$(port) pport=$(port) aport=$(port)
redis() { redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no "$@" >/dev/null & rpid=$!; pids+=("$rpid"); }
redis
"$dir/loadbench" upstream -listen "127.0.0.1:$uport" >/dev/null 2>&1 & pids+=($!)
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
env KEYPROXY_LISTEN="127.0.0.1:$pport" KEYPROXY_ADMIN_LISTEN="127.0.0.1:$aport" KEYPROXY_ADMIN_TOKENS="$token" \
	KEYPROXY_UPSTREAM_URL="http://127.0.0.1:$uport" KEYPROXY_STORE_DSN="$dir/keys.db" \
	KEYPROXY_REDIS_ADDR="127.0.0.1:$rport" "$dir/keyproxy" serve >"$dir/log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$aport/readyz" && break; sleep 0.1; done
out=$(curl -s -X POST "http://127.0.0.1:$aport/admin/v1/keys" -H "Authorization: Bearer $token" \
	-H 'Content-Type: application/json' -d '{"name":"outage","user_id":"usr_outage","team_id":"team_outage","role":"admin"}')
key=$(sed -E 's/.*"key":"([^"]+)".*/\1/' <<<"$out")
for _ in $(seq 20); do curl -s -o /dev/null -H "Authorization: Bearer $key" "http://127.0.0.1:$pport/x"; done
sleep 1.5 # past the first heartbeat and its start-up line

# lines counts the log lines about Redis that a phase added.
lines() {
	local all n
	all=$(grep -E 'falls back to the local|back on redis|identity cache|redis refuses|redis not answering|redis answering again' "$dir/log" | grep -v 'readiness check failed' || true)
	n=$(grep -c . <<<"$all" || true)
	echo "  log lines about Redis: $((n - ${seen:-0}))"
	tail -n "$((n - ${seen:-0}))" <<<"$all" | sed -E 's/.*"msg":"([^"]*)".*/    \1/' | head -n "$((n - ${seen:-0}))"
	seen=$n
}
phase() {
	lines >/dev/null
	sleep "$2"
	echo "$1"
	echo "  /readyz: $(curl -s -w ' in %{time_total} s' "http://127.0.0.1:$aport/readyz" | tr -d '\n')"
	for _ in $(seq 80); do
		curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "Authorization: Bearer $key" "http://127.0.0.1:$pport/x"
		sleep 0.05
	done | awk '{n++; codes[$1]++; if ($2 > m) m = $2; if ($2 > 0.05) slow++}
		END {printf "  %d requests:", n; for (c in codes) printf " %d× %s", codes[c], c; printf "; over 50 ms: %d; slowest %.1f ms\n", slow + 0, m * 1000}'
	lines
}
kill "$rpid"; wait "$rpid" 2>/dev/null || true
phase "Redis stopped (connections refused):" 0.2
redis --maxmemory 1 --maxmemory-policy noeviction
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
# go-redis redials a pool that failed only after a second, and the
# heartbeat that finds Redis refusing writes comes a second after that.
phase "Redis back but full (answers, refuses writes):" 3
