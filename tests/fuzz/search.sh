#!/bin/sh
# One libFuzzer target searching from a copy of its corpus for a set time:
# search.sh NAME SECONDS, run in the build directory. On a crash it shows
# the end of the target's log and fails.
set -eu
name=$1
seconds=$2
srcdir=$(dirname "$0")
mkdir -p "fuzz-corpus/$name"
cp "$srcdir/corpus/$name"/* "fuzz-corpus/$name/"
if ! "./tests/fuzz/fuzz_$name" -max_total_time="$seconds" -print_final_stats=1 \
	-artifact_prefix="fuzz-crash-$name-" "fuzz-corpus/$name" >"fuzz-$name.log" 2>&1; then
	echo "== fuzz_$name found a crash (fuzz-crash-$name-*):"
	tail -n 60 "fuzz-$name.log"
	exit 1
fi
echo "== fuzz_$name, $seconds s: $(grep -E '^stat::(number_of_executed_units|new_units_added)' \
	"fuzz-$name.log" | tr '\n' ' ')"
