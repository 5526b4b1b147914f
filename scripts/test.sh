#!/bin/sh
# Installs what is missing (Debian 12), builds, and runs every test.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure --enable-unit --enable-integration
make -j"$(nproc)"
status=0
make -j"$(nproc)" check || status=$?
# One closing line for whoever reads only the end.
pass=$(sed -n 's/^# PASS: *//p' test-suite.log | head -n1)
fail=$(sed -n 's/^# FAIL: *//p' test-suite.log | head -n1)
error=$(sed -n 's/^# ERROR: *//p' test-suite.log | head -n1)
if [ "$status" != 0 ]; then
	cat test-suite.log
fi
echo "${pass:-0} passed, $(( ${fail:-0} + ${error:-0} )) failed"
exit "$status"
