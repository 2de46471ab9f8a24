#!/usr/bin/env bash
# Installs what stream-conductor needs to run and to test on a Debian-like
# machine: nginx with the stream module, and etcd (the server the fleet
# mode's tests start) and Chromium (the dashboard's browser tests). Does
# nothing when they are there.
set -euo pipefail

have_stream() {
	local bin
	bin=$(command -v nginx || true)
	[ -n "$bin" ] || { [ -x /usr/sbin/nginx ] && bin=/usr/sbin/nginx; } || return 1
	local v
	v=$("$bin" -V 2>&1) || return 1
	case "$v" in
	*--with-stream=dynamic*)
		local dir
		dir=$(printf '%s\n' "$v" | tr ' ' '\n' | sed -n 's/^--modules-path=//p')
		[ -e "${dir:-/usr/lib/nginx/modules}/ngx_stream_module.so" ] ;;
	*--with-stream*) return 0 ;;
	*) return 1 ;;
	esac
}

if ! command -v go >/dev/null 2>&1; then
	echo "install-deps: Go is not installed; install Go 1.26 or newer (https://go.dev/doc/install)" >&2
	exit 1
fi

pkgs=()
have_stream || pkgs+=(nginx libnginx-mod-stream)
# etcd is for the tests (and fleets, which run their own): `make run`
# does not install it, since Debian's package also starts an etcd service.
want_etcd=false
[ "${1:-}" = test ] && want_etcd=true
$want_etcd && ! command -v etcd >/dev/null 2>&1 && pkgs+=(etcd-server)
# The dashboard's tests drive a headless Chromium (integration/ui_test.go).
$want_etcd && ! command -v chromium >/dev/null 2>&1 && pkgs+=(chromium)
if [ ${#pkgs[@]} -eq 0 ]; then
	exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "install-deps: missing; run as root: apt-get install ${pkgs[*]}" >&2; exit 1; }
	sudo=sudo
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: no apt-get here; install with your package manager: ${pkgs[*]} (nginx with the stream module, etcd, chromium)" >&2
	exit 1
fi
echo "install-deps: installing ${pkgs[*]} with apt-get" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
have_stream || { echo "install-deps: nginx still lacks the stream module" >&2; exit 1; }
if $want_etcd && ! command -v etcd >/dev/null 2>&1; then
	echo "install-deps: etcd is still missing" >&2
	exit 1
fi
if $want_etcd && ! command -v chromium >/dev/null 2>&1; then
	echo "install-deps: chromium is still missing" >&2
	exit 1
fi
