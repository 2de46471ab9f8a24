#!/usr/bin/env bash
# Builds dist/stream-conductor_VERSION_ARCH.deb with dpkg-deb: the binary,
# the systemd unit and /etc/default/stream-conductor.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(git describe --tags --always 2>/dev/null || echo dev)
debversion="0.0.0+${version//[^A-Za-z0-9.+~]/.}"
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
chmod 755 "$stage"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/default" "$stage/usr/share/doc/stream-conductor"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$stage/usr/bin/stream-conductor" ./cmd/stream-conductor
install -m 644 packaging/stream-conductor.service "$stage/lib/systemd/system/"
install -m 644 packaging/default "$stage/etc/default/stream-conductor"
install -m 644 README.md "$stage/usr/share/doc/stream-conductor/"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: stream-conductor
Version: $debversion
Architecture: $arch
Maintainer: stream-conductor developers <stream-conductor@localhost>
Depends: nginx-core | nginx, libnginx-mod-stream
Section: net
Priority: optional
Description: forward TCP/UDP ports to backends through nginx
 A daemon with an HTTP API that opens ports on an edge host and forwards
 them to backends through nginx's stream module, keeping nginx's
 configuration equal to its own state database.
CONTROL
echo /etc/default/stream-conductor > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
	getent passwd stream-conductor >/dev/null || \
		useradd --system --home-dir /var/lib/stream-conductor --no-create-home --shell /usr/sbin/nologin stream-conductor
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
		systemctl enable stream-conductor.service || true
	fi
fi
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	systemctl stop stream-conductor.service || true
	systemctl disable stream-conductor.service || true
fi
PRERM
cat > "$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
POSTRM
chmod 755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
mkdir -p dist
out="dist/stream-conductor_${debversion}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$out" >/dev/null
echo "$out"
