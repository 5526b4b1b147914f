#!/bin/sh
# Builds the grpc-go reference plugin offline from Debian's Go packages, in
# GOPATH mode (Debian ships Go libraries as sources under /usr/share/gocode).
# Usage: bench/reference/build.sh OUTPUT   (run from anywhere)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=$1
gopath=$(mktemp -d /tmp/tpm2kms-gopath-XXXXXX)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/tpm2kmsbench/reference"
# The same .proto the plugin is built from, so both serve the same messages.
protoc -I "$top/proto" \
	--go_out="$gopath/src" --go_opt=Mv2/api.proto=tpm2kmsbench/kmsv2 \
	--go-grpc_out="$gopath/src" --go-grpc_opt=Mv2/api.proto=tpm2kmsbench/kmsv2 \
	v2/api.proto
cp "$here/main.go" "$gopath/src/tpm2kmsbench/reference/"
cd "$gopath/src/tpm2kmsbench/reference"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS= GOPROXY=off \
	go build -o "$out" .
