#!/bin/sh
# Installs what is missing (Debian 12) and builds the given make targets
# (default: all) out of tree in build/.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[ -x configure ] || autoreconf -fi
mkdir -p build
cd build
[ -f Makefile ] || ../configure
make -j"$(nproc)" "$@"
