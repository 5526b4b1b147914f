#!/bin/sh
# Installs, from Debian 12's archive, the packages tpm2-kms needs, skipping
# those already present. Run as root.
#   (no option)  to build it and run it on a private swtpm (scripts/run.sh)
#   --test       also what the tests use (scripts/test.sh)
#   --bench      also what bench/run.sh uses: Go and Debian's grpc-go for the
#                reference plugin, gnuplot for the plot
#   --list       (last) print the packages instead of installing them
# Nothing here changes how the host boots: the VM tests' guest kernel is
# unpacked into the build tree by tests/vm/guest-kernel.sh, never installed.
set -eu

# Build, and run on a swtpm with a KMS round trip (scripts/roundtrip.py).
PACKAGES="
build-essential
pkg-config
autoconf
automake
libtss2-dev
libssl-dev
libuv1-dev
libnghttp2-dev
libprotobuf-c-dev
protobuf-c-compiler
libhttp-parser-dev
swtpm
python3-grpcio
python3-protobuf
"

list=
case " $* " in *" --list "*) list=1 ;; esac
case "${1-}" in
--test)
	PACKAGES="$PACKAGES
libcmocka-dev
mandoc
prometheus
swtpm-tools
tpm2-tools
python3-yaml
python3-cryptography
etcd-server
etcd-client
qemu-system-x86
busybox-static
cpio
debootstrap
umoci
skopeo
containerd
clang-14
libclang-rt-14-dev
valgrind
debhelper
lintian
"
	;;
--bench)
	PACKAGES="$PACKAGES
golang-go
golang-google-grpc-dev
golang-google-protobuf-dev
golang-github-golang-protobuf-1-5-dev
protobuf-compiler
protoc-gen-go
protoc-gen-go-grpc
gnuplot-nox
time
etcd-server
etcd-client
python3-cryptography
"
	;;
""|--list) ;;
*)
	echo "usage: install-deps.sh [--test | --bench] [--list]" >&2
	exit 2
	;;
esac

if [ -n "$list" ]; then
	echo $PACKAGES
	exit 0
fi

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
# etcd-server enables and starts a system etcd on 127.0.0.1:2379. The audit's
# tests and benchmark start their own on free ports; a machine that had no
# etcd before gets none running after: stop and disable the one the package
# just enabled (an etcd installed earlier is left alone).
case " $missing " in
*" etcd-server "*)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now etcd.service >/dev/null 2>&1 || true
	fi
	;;
esac
