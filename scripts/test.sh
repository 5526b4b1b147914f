#!/bin/sh
# Installs what is missing (Debian 12), builds, and runs every test.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure --enable-unit --enable-integration
make -j"$(nproc)"
make -j"$(nproc)" check || { cat test-suite.log; exit 1; }
