#!/usr/bin/env bash
# CI: builds the .deb, installs it with dpkg -i, checks the unit with
# systemd-analyze, runs the installed binary's --version and a short
# managed-mode smoke test (a stream created, bytes through it), then
# removes the package. Needs root; systemd need not be running.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "deb-smoke: needs root" >&2; exit 1; }
deb=$(scripts/build-deb.sh)
echo "deb-smoke: installing $deb"
dpkg -i "$deb" >/dev/null
cleanup() {
	[ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true
	[ -n "${echo_pid:-}" ] && kill "$echo_pid" 2>/dev/null || true
	# Every master of the pool: shard 0's and each shard-k's.
	if [ -n "${data:-}" ]; then
		for pidfile in "$data"/nginx/nginx.pid "$data"/nginx/shard-*/nginx.pid; do
			[ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
		done
	fi
	dpkg -r stream-conductor >/dev/null 2>&1 || true
	[ -n "${data:-}" ] && rm -rf "$data"
}
trap cleanup EXIT

/usr/bin/stream-conductor -version
getent passwd stream-conductor >/dev/null || { echo "deb-smoke: no stream-conductor user" >&2; exit 1; }
if command -v systemd-analyze >/dev/null 2>&1; then
	systemd-analyze verify /lib/systemd/system/stream-conductor.service
	echo "deb-smoke: systemd-analyze verify: ok"
fi

# Managed mode, as the unit would run it, on ports of our own.
data=$(mktemp -d)
go build -o "$data/sc-echo" ./cmd/sc-echo
"$data/sc-echo" -listen 127.0.0.1:18999 >/dev/null 2>&1 & echo_pid=$!
DATA_DIR="$data" BIND_PORT=18990 PORT_RANGE=18991-18995 LOG_FORMAT=json /usr/bin/stream-conductor >"$data/log" 2>&1 & daemon=$!
for _ in $(seq 100); do
	/usr/bin/stream-conductor healthz -url http://127.0.0.1:18990 >/dev/null 2>&1 && break
	sleep 0.1
done
/usr/bin/stream-conductor create tcp/18991 127.0.0.1:18999 -url http://127.0.0.1:18990
got=$(curl -s --max-time 5 http://127.0.0.1:18991/deb-smoke)
case "$got" in
*"GET /deb-smoke"*) echo "deb-smoke: bytes through the installed binary's stream: ok" ;;
*) echo "deb-smoke: unexpected answer through the stream: $got" >&2; cat "$data/log" >&2; exit 1 ;;
esac
kill "$daemon"; wait "$daemon" || true; daemon=
dpkg -r stream-conductor >/dev/null
[ ! -e /usr/bin/stream-conductor ] || { echo "deb-smoke: binary left after dpkg -r" >&2; exit 1; }
echo "deb-smoke: removed; passed"
