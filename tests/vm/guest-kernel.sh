#!/bin/sh
# Prints the path of a Debian 12 kernel for the VM tests' guests. It comes
# from the archive's linux-image package, unpacked into DIR (default
# ./guest-kernel, in the build tree) and never installed: the host's /boot
# and boot loader stay as they were. A kernel already unpacked is reused.
set -eu
dir=${1:-guest-kernel}
found=$(ls "$dir"/boot/vmlinuz-* 2>/dev/null | tail -n 1 || true)
if [ -z "$found" ]; then
	resolve() {
		apt-cache depends linux-image-amd64 2>/dev/null |
			sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1
	}
	pkg=$(resolve)
	if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
		apt-get update -qq
		pkg=$(resolve)
	fi
	if [ -z "$pkg" ]; then
		echo "guest-kernel: apt knows no linux-image-amd64 (run apt-get update)" >&2
		exit 1
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg")
	mkdir -p "$dir"
	dpkg-deb -x "$tmp"/*.deb "$dir"
	found=$(ls "$dir"/boot/vmlinuz-* | tail -n 1)
fi
echo "$found"
