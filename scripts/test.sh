#!/bin/sh
# Installs what is missing (Debian 12), builds, and runs every test twice:
# a normal build (build/) and one with AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/), where any leak, memory error or
# undefined behaviour fails the test that hit it; then the daemon under
# valgrind and, beside it, the installed units under systemd; and the
# fuzzers.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
./scripts/install-deps.sh --test
[ -x configure ] || autoreconf -fi

status=0
pass=0
fail=0
# Tests run two per core: most of their time is spent waiting on a TPM, a
# daemon or a guest, and at one per core the cores sat 30% idle (the normal
# suite: 214 s at -j2, 161 s at -j4).
jobs=$(($(nproc) * 2))
# What each part costs, for the closing summary.
times=""
started=$(date +%s)
took() {
	now=$(date +%s)
	times="$times $1 $((now - started)) s,"
	started=$now
}
suite() {
	dir=$1
	shift
	mkdir -p "$top/$dir"
	cd "$top/$dir"
	# Configured otherwise (by scripts/run.sh, say): configure again, or
	# tests would be left out.
	want="--enable-unit --enable-integration${*:+ $*}"
	if ! [ -f Makefile ] || [ "$(./config.status --config)" != "$want" ]; then
		"$top/configure" --enable-unit --enable-integration "$@"
	fi
	make -j"$(nproc)"
	if ! make -j"$jobs" check; then
		status=1
		cat test-suite.log
	fi
	pass=$((pass + $(sed -n 's/^# PASS: *//p' test-suite.log | head -n1)))
	fail=$((fail + $(sed -n 's/^# FAIL: *//p' test-suite.log | head -n1) +
		$(sed -n 's/^# ERROR: *//p' test-suite.log | head -n1)))
	cd "$top"
}
# build/ is configured as the operations guide installs (tests/systemd
# installs from it).
suite build --prefix=/usr --sysconfdir=/etc
took "build and suite"
suite build-asan --with-sanitizer=address,undefined
took "sanitizer build and suite"

# The daemon under valgrind memcheck through the end-to-end tests, beside
# the installed units under systemd as PID 1 in QEMU guests (whose Debian
# root debootstrap makes once, kept in build/systemd-guest/). Together:
# the valgrind run mostly waits (on the TPM timeouts its fault tests
# provoke); one after the other they took 129 s and 266 s. Each keeps its
# own suite log.
cd "$top/build"
make -j"$(nproc)" check-valgrind TEST_SUITE_LOG=valgrind-suite.log >valgrind-run.log 2>&1 &
valgrind_job=$!
if make check-systemd TEST_SUITE_LOG=systemd-suite.log; then
	pass=$((pass + 1))
else
	status=1
	cat systemd-suite.log
	fail=$((fail + 1))
fi
valgrind_status=0
wait "$valgrind_job" || valgrind_status=$?
cat valgrind-run.log
if [ "$valgrind_status" -eq 0 ]; then
	pass=$((pass + $(sed -n 's/^# PASS: *//p' valgrind-suite.log | head -n1)))
else
	status=1
	cat valgrind-suite.log
	fail=$((fail + 1))
fi
cd "$top"
took "valgrind and the systemd guests"

# libFuzzer: every target searches for 10 s from its corpus, one per core
# at once (40 s on two cores).
mkdir -p "$top/build-fuzz"
cd "$top/build-fuzz"
[ -f Makefile ] || "$top/configure" CC=clang-14 --enable-fuzzing --disable-unit \
	--disable-integration --with-sanitizer=address,undefined
make -j"$(nproc)"
if make fuzz-run FUZZ_SECONDS=10; then
	pass=$((pass + 1))
else
	status=1
	fail=$((fail + 1))
fi
cd "$top"
took "fuzz build and search"
echo "time:${times%,}"
# One closing line for whoever reads only the end.
echo "$pass passed, $fail failed"
exit "$status"
