#!/bin/sh
# Installs, from Debian 12's archive, exactly the packages tpm2-kms needs to
# build, run and test, skipping those already present. Run as root.
# --bench adds what bench/run.sh needs besides: Go and Debian's grpc-go for
# the reference plugin, gnuplot for the plot.
set -eu

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
libcmocka-dev
libhttp-parser-dev
mandoc
prometheus
swtpm
swtpm-tools
tpm2-tools
python3-grpcio
python3-protobuf
python3-yaml
python3-cryptography
qemu-system-x86
linux-image-amd64
busybox-static
cpio
clang-14
libclang-rt-14-dev
valgrind
"

if [ "${1-}" = --bench ]; then
	PACKAGES="$PACKAGES
golang-go
golang-google-grpc-dev
golang-google-protobuf-dev
golang-github-golang-protobuf-1-5-dev
protobuf-compiler
protoc-gen-go
protoc-gen-go-grpc
gnuplot-nox
"
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
