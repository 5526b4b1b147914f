#!/bin/sh
# Benchmarks tpm2-kms on a private swtpm against the grpc-go reference plugin
# (bench/reference) and writes docs/benchmarks.md and docs/benchmarks-latency.png.
# One command: ./bench/run.sh   (Debian 12, as root; installs what is missing)
# ROUNDS=N sets how many alternating rounds each median is taken over (5).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
./scripts/install-deps.sh --bench
./scripts/build.sh bench
kms="$top/build/tpm2-kms"
loadgen="$top/build/bench/loadgen"
ref="$top/build/bench/kms-reference"
bench/reference/build.sh "$ref"

work=$(mktemp -d /tmp/tpm2kms-bench-XXXXXX)
swtpm_pid=
daemon_pid=
ref_pid=
cleanup() {
	for p in $daemon_pid $ref_pid $swtpm_pid; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

py() { /usr/bin/python3 -c "import sys; sys.path.insert(0, '$top/tests/lib'); $1"; }

mkdir -p "$work/tpm"
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --server type=unixio,path="$work/tpm.sock" \
	--ctrl type=unixio,path="$work/tpm.sock.ctrl" --flags not-need-init,startup-clear \
	2>/dev/null &
swtpm_pid=$!
while ! [ -S "$work/tpm.sock" ]; do sleep 0.01; done
tcti="swtpm:path=$work/tpm.sock"
"$kms" init --tcti "$tcti" --state-dir "$work/state" >/dev/null 2>&1

now_us() { echo $(( $(date +%s%N) / 1000 )); }

# Cold start: process start to the first healthy Status, provisioned state.
# The metrics say how much of it the TPM commands took. Writes "ms n tpm_ms"
# to $work/cold; the daemon is left running (its pid in daemon_pid).
cold_start() {
	state=$1
	shift
	rm -f "$work/metrics.sock"
	t0=$(now_us)
	"$kms" serve --tcti "$tcti" --state-dir "$state" --listen "$work/kms.sock" \
		--metrics-listen "$work/metrics.sock" --log-level warning "$@" 2>"$work/serve.log" &
	daemon_pid=$!
	until "$kms" status --listen "$work/kms.sock" >/dev/null 2>&1; do sleep 0.001; done
	echo "$(( ($(now_us) - t0) / 1000 )) $(py "
import socket
s = socket.socket(socket.AF_UNIX); s.connect('$work/metrics.sock')
s.sendall(b'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')
text = b''
while True:
    b = s.recv(65536)
    if not b: break
    text += b
secs = n = 0
for l in text.decode().splitlines():
    if l.startswith('tpm2kms_tpm_command_duration_seconds_sum'): secs += float(l.split()[-1])
    if l.startswith('tpm2kms_tpm_command_duration_seconds_count'): n += int(l.split()[-1])
print('%d %.1f' % (n, secs * 1000))")" >"$work/cold"
}

# A dup+pcr state beside it: admin key, PCR signer, and a signature of the
# PCR 7 value the swtpm has.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/admin.pem" 2>/dev/null
openssl pkey -in "$work/admin.pem" -pubout -out "$work/admin.pub.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/pcr.pem" 2>/dev/null
openssl pkey -in "$work/pcr.pem" -pubout -out "$work/pcr.pub.pem"
mkdir -p "$work/sigs"
"$kms" init --tcti "$tcti" --state-dir "$work/state-pcr" --admin-key "$work/admin.pub.pem" \
	--pcr-key "$work/pcr.pub.pem" --pcrs 7 --pcr-signatures "$work/sigs" >/dev/null 2>&1
"$kms" pcr-sign --key "$work/pcr.pem" --pcrs "$("$kms" pcr-read --tcti "$tcti" --pcrs 7)" \
	-o "$work/sigs/boot.sig"

cold_start "$work/state-pcr" --pcr-signatures "$work/sigs"
read -r cold_pcr_ms cold_pcr_tpm_n cold_pcr_tpm_ms <"$work/cold"
kill "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
cold_start "$work/state"
read -r cold_ms cold_tpm_n cold_tpm_ms <"$work/cold"

"$ref" --listen "$work/ref.sock" &
ref_pid=$!
until py "
from kmsclient import Kms
Kms('unix:$work/ref.sock').status()" 2>/dev/null; do sleep 0.01; done

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One ciphertext for the Decrypt runs, and 1,000 distinct ones for the burst.
ciphertexts() {
	py "
from kmsclient import Kms
c = Kms('unix:$1')
with open('$2', 'w') as f:
    for i in range($3):
        e = c.encrypt(i.to_bytes(32, 'big'))
        f.write(e.ciphertext.hex() + ' ' + e.key_id + '\\n')"
}

results="$work/results"
: >"$results"
# The machine's noise (CPU wake-ups, frequency, swtpm's state writes) moves a
# single run by tens of percent: every figure is the median of ROUNDS runs,
# ours and the reference's alternating, and the TPM floor alternates with
# our Encrypt at concurrency 1.
ROUNDS=${ROUNDS:-5}
ciphertexts "$work/kms.sock" "$work/ours.ct" 1000
ciphertexts "$work/ref.sock" "$work/ref.ct" 1000
# one TAG PID SOCKET METHOD CONCURRENCY: one load run, with the server's CPU
# time per call.
one() {
	# Enough calls for the CPU ticks (1/$hz s) to resolve well; ours calls
	# the TPM on every Encrypt.
	n=100000
	[ "$5" != 1 ] || n=20000
	[ "$1:$4" != ours:encrypt ] || n=1000
	[ -z "$pinned" ] || n=100000
	arg=
	[ "$4" != decrypt ] || arg=$(head -n1 "$work/$1.ct")
	c0=$(cpu_ticks "$2")
	# shellcheck disable=SC2086
	line=$($pin_client "$loadgen" "$3" "$4" "$5" "$n" $arg)
	c1=$(cpu_ticks "$2")
	cpu=$(awk "BEGIN {printf \"%.1f\", ($c1 - $c0) * 1000000 / $hz / $n}")
	echo "${pinned}tag=$1 $line cpu_us_per_call=$cpu" | tee -a "$results"
}
pin_client=
pinned=
cpus=$(taskset -cp $$ | sed 's/.*: //')
# same_cpu TAG PID SOCKET METHOD: concurrency 1 with the server and the
# client on one CPU. At concurrency 1 each call is two wake-ups, and on a VM
# a wake-up that crosses CPUs costs more than the whole call (see
# bench/pingpong.c); this shows what is left when none does.
same_cpu() {
	taskset -a -cp 0 "$2" >/dev/null
	pin_client="taskset -c 0" pinned="same-cpu "
	one "$1" "$2" "$3" "$4" 1
	pin_client= pinned=
	taskset -a -cp "$cpus" "$2" >/dev/null
}
round=0
while [ "$round" -lt "$ROUNDS" ]; do
	for method in status decrypt encrypt; do
		for conc in 1 8 64; do
			one ours "$daemon_pid" "$work/kms.sock" "$method" "$conc"
			one ref "$ref_pid" "$work/ref.sock" "$method" "$conc"
		done
	done
	for method in status decrypt; do
		same_cpu ours "$daemon_pid" "$work/kms.sock" "$method"
		same_cpu ref "$ref_pid" "$work/ref.sock" "$method"
	done
	echo "floor $("$top/build/bench/tpm-floor" "$tcti" 500)" | tee -a "$results"
	one ours "$daemon_pid" "$work/kms.sock" encrypt 1
	# The apiserver-restart burst: 1,000 distinct ciphertexts, one
	# connection, 100 concurrent streams; twice per round, as one burst
	# lasts milliseconds.
	for t in ours ref ours ref; do
		sock=$work/kms.sock
		[ "$t" = ours ] || sock=$work/ref.sock
		echo "tag=$t burst $("$loadgen" "$sock" decrypt 100 1000 "@$work/$t.ct")" |
			tee -a "$results"
	done
	# What the kernel alone costs per request/response at concurrency 1.
	echo "echo $("$top/build/bench/pingpong" 5000 100)" | tee -a "$results"
	echo "hop $("$top/build/bench/pingpong" 5000 100 hop)" | tee -a "$results"
	round=$((round + 1))
done
echo "tag=ours hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$daemon_pid/status")" >>"$results"
echo "tag=ref hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$ref_pid/status")" >>"$results"

# The memory OpenSSL and nghttp2 alone hold.
rss_floor=$("$top/build/bench/rss-floor")
echo "$rss_floor"

# RSS with 200 idle connections (each past the HTTP/2 preface and SETTINGS).
idle_rss() {
	/usr/bin/python3 - "$1" "$2" <<'PY'
import socket, sys
socks = []
for _ in range(200):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00')
    s.recv(100)
    socks.append(s)
status = dict(l.split(':', 1) for l in open('/proc/%s/status' % sys.argv[2]))
print(status['VmRSS'].split()[0], status['RssAnon'].split()[0])
PY
}
ours_idle=$(idle_rss "$work/kms.sock" "$daemon_pid")
ours_idle_anon=${ours_idle#* }
ours_idle=${ours_idle% *}
ref_idle=$(idle_rss "$work/ref.sock" "$ref_pid")
ref_idle=${ref_idle% *}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
get() { grep "^tag=$1 method=$2 concurrency=$3 " "$results" | field "$4" | median; }
ratio() { awk "BEGIN {printf \"%.2f\", $1 / $2}"; }
# Three decimals where a figure is held against a target.
ratio3() { awk "BEGIN {printf \"%.3f\", $1 / $2}"; }

# The plot: p50 and p99 latency against concurrency, ours and the reference.
for t in ours ref; do
	for m in status decrypt encrypt; do
		for c in 1 8 64; do echo "$c $(get $t $m $c p50_us) $(get $t $m $c p99_us)"; done \
			>"$work/$t-$m.dat"
	done
done
gnuplot <<EOF
set terminal pngcairo size 1200,420 font "DejaVu Sans,10"
set output "$top/docs/benchmarks-latency.png"
set multiplot layout 1,3 title "Latency against concurrency (one HTTP/2 connection, Unix socket)"
set logscale xy
set xtics (1, 8, 64)
set xrange [0.8:80]
set xlabel "concurrent streams"
set ylabel "µs"
set key top left
set grid
do for [m in "status decrypt encrypt"] {
	set title m
	plot "$work/ours-".m.".dat" using 1:2 with linespoints lw 2 lc rgb "#1f77b4" title "tpm2-kms p50", \
	     "$work/ours-".m.".dat" using 1:3 with linespoints lw 2 dt 2 lc rgb "#1f77b4" title "tpm2-kms p99", \
	     "$work/ref-".m.".dat" using 1:2 with linespoints lw 2 lc rgb "#d62728" title "grpc-go p50", \
	     "$work/ref-".m.".dat" using 1:3 with linespoints lw 2 dt 2 lc rgb "#d62728" title "grpc-go p99"
}
unset multiplot
EOF

row() {
	echo "| $1 | $2 | $(get ours $1 $2 rps) | $(get ours $1 $2 p50_us) | $(get ours $1 $2 p99_us) | $(get ours $1 $2 cpu_us_per_call) | $(get ref $1 $2 rps) | $(get ref $1 $2 p50_us) | $(get ref $1 $2 p99_us) | $(get ref $1 $2 cpu_us_per_call) |"
}
ratio_row() {
	echo "| $1 | $2 | $(ratio "$(get ours $1 $2 cpu_us_per_call)" "$(get ref $1 $2 cpu_us_per_call)") | $(ratio "$(get ours $1 $2 rps)" "$(get ref $1 $2 rps)") | $(ratio "$(get ours $1 $2 p99_us)" "$(get ref $1 $2 p99_us)") |"
}
burst() { grep "^tag=$1 burst" "$results" | field "$2" | median; }
pp() { grep "^$1 pingpong" "$results" | field "$2" | median; }
same() { grep "^same-cpu tag=$1 method=$2 " "$results" | field "$3" | median; }
floor_p50=$(grep "^floor " "$results" | field esapi_p50_us | median)
kms_floor_p50=$(grep "^floor " "$results" | field kms_p50_us | median)
enc_p50=$(get ours encrypt 1 p50_us)
# verdict MEASURED LIMIT: whether MEASURED <= LIMIT, and by how much not.
verdict() {
	awk "BEGIN { if ($1 <= $2) print \"met\"; else printf \"missed by %.0f %%\", ($1 / $2 - 1) * 100 }"
}
target_row() { # NAME MEASURED LIMIT
	echo "| $1 | $2 | $3 | $(verdict "$2" "$3") |"
}
cpu_ratio() { ratio3 "$(get ours "$1" "$2" cpu_us_per_call)" "$(get ref "$1" "$2" cpu_us_per_call)"; }
p99_ratio() { ratio3 "$(get ours "$1" "$2" p99_us)" "$(get ref "$1" "$2" p99_us)"; }

{
	echo "# tpm2-kms benchmarks"
	echo
	echo "Generated by \`./bench/run.sh\` (as root on Debian 12: it installs Go, Debian's"
	echo "grpc-go and gnuplot on first use, builds everything and takes about 4 minutes)"
	echo "on $(date -u +%Y-%m-%d): $(nproc) cores,"
	echo "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r),"
	echo "swtpm $(swtpm --version 2>&1 | sed -n 's/.*version \([0-9.]*\).*/\1/p'), $(go version | cut -d' ' -f3),"
	echo "grpc-go $(dpkg-query -W -f='${Version}' golang-google-grpc-dev)."
	echo
	echo "Load: bench/loadgen (our own client on nghttp2), one HTTP/2 connection over"
	echo "the Unix socket, the given number of concurrent streams, 20,000 calls at"
	echo "concurrency 1 and 100,000 above (1,000 for tpm2-kms Encrypt, which waits for"
	echo "the TPM); every figure is the median of $ROUNDS rounds (bursts: $((ROUNDS * 2))), ours and the"
	echo "reference's alternating. tpm2-kms logs at warning. The reference is bench/reference: the"
	echo "same KMS v2 API on grpc-go with AES-256-GCM under an in-memory key, the"
	echo "shape of the existing plugins, driven by the same client in the same run."
	echo "Server CPU per call is the process's utime+stime (all threads) from /proc"
	echo "divided by the calls."
	echo
	echo "| method | concurrency | calls/s | p50 µs | p99 µs | CPU µs/call | ref calls/s | ref p50 µs | ref p99 µs | ref CPU µs/call |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	for m in status decrypt encrypt; do
		for c in 1 8 64; do row $m $c; done
	done
	echo
	echo "Ratios, tpm2-kms / reference (Encrypt is not like for like: ours waits for"
	echo "two TPM commands per call, the reference for none):"
	echo
	echo "| method | concurrency | CPU per call | throughput | p99 |"
	echo "|---|---|---|---|---|"
	for m in status decrypt encrypt; do
		for c in 1 8 64; do ratio_row $m $c; done
	done
	echo
	echo "![p50 and p99 latency against concurrency](benchmarks-latency.png)"
	echo
	echo "- TPM floor, same swtpm, same run (bench/tpm_floor.c): NV_Increment +"
	echo "  NV_Read through ESAPI, p50 $floor_p50 µs; the same two commands as"
	echo "  tpm2-kms issues them (NV_Increment through SAPI), p50 $kms_floor_p50 µs."
	echo "  tpm2-kms Encrypt p50 at concurrency 1: $enc_p50 µs, $(ratio "$enc_p50" "$floor_p50") × the"
	echo "  ESAPI floor, $(ratio "$enc_p50" "$kms_floor_p50") × the floor of its own commands."
	echo "- Kernel floor (bench/pingpong.c), one request/response of 100 bytes over a"
	echo "  Unix socket with a server that only echoes: p50 $(pp echo p50_us) µs,"
	echo "  server CPU $(pp echo server_cpu_us_per_call) µs per round trip; with a hop to a worker"
	echo "  thread and back, as for a TPM command: p50 $(pp hop p50_us) µs, CPU"
	echo "  $(pp hop server_cpu_us_per_call) µs."
	echo "- Concurrency 1 with server and client on one CPU (taskset), so that no"
	echo "  wake-up crosses CPUs: Status $(same ours status cpu_us_per_call) µs of CPU per call, p50"
	echo "  $(same ours status p50_us) µs (reference $(same ref status cpu_us_per_call) µs, p50 $(same ref status p50_us) µs); Decrypt $(same ours decrypt cpu_us_per_call) µs,"
	echo "  p50 $(same ours decrypt p50_us) µs (reference $(same ref decrypt cpu_us_per_call) µs, p50 $(same ref decrypt p50_us) µs)."
	echo "- Burst of 1,000 distinct ciphertexts, one connection, 100 concurrent"
	echo "  streams: tpm2-kms $(burst ours seconds) s, reference $(burst ref seconds) s wall time"
	echo "  (ratio $(ratio "$(burst ours seconds)" "$(burst ref seconds)"); p99 $(burst ours p99_us) µs vs $(burst ref p99_us) µs)."
	echo "- Cold start, process start to first healthy Status (provisioned state):"
	echo "  $cold_ms ms, of which $cold_tpm_ms ms in the $cold_tpm_n TPM commands it issued."
	echo "- The same with a dup+pcr write key (unsealed through a signed PCR policy):"
	echo "  $cold_pcr_ms ms, of which $cold_pcr_tpm_ms ms in the $cold_pcr_tpm_n TPM commands."
	echo "- Peak RSS during the run: tpm2-kms $(field hwm_kb <"$results" | head -n1) kB, reference"
	echo "  $(field hwm_kb <"$results" | tail -n1) kB. RSS with 200 idle connections: tpm2-kms"
	echo "  $ours_idle kB ($ours_idle_anon kB of it anonymous, the rest library pages), reference"
	echo "  $ref_idle kB. Memory floor of the libraries (bench/rss_floor.c): a process"
	echo "  that has only loaded OpenSSL 3 and fetched SHA-256 and AES-256-GCM,"
	echo "  $(echo "$rss_floor" | field openssl_rss_kb) kB; one nghttp2 server session after the SETTINGS"
	echo "  exchange, $(echo "$rss_floor" | field nghttp2_session_kb) kB."
	echo "- Instructions per Decrypt, server side, under callgrind: guarded in"
	echo "  make check by tests/plugin/test_instructions.py (budget in"
	echo "  tests/plugin/decrypt-instructions.budget)."
	echo
	echo "## Targets (issue 7), this run"
	echo
	echo "Ratios to three decimals; a limit of one third is written 0.333."
	echo
	echo "| target | measured | limit | verdict |"
	echo "|---|---|---|---|"
	for m in decrypt status; do
		for c in 1 8 64; do
			target_row "$m CPU per call / reference's, concurrency $c" "$(cpu_ratio $m $c)" 0.333
		done
	done
	for m in decrypt status; do
		target_row "$m CPU per call / reference's, concurrency 1, one CPU" \
			"$(ratio3 "$(same ours $m cpu_us_per_call)" "$(same ref $m cpu_us_per_call)")" 0.333
	done
	target_row "decrypt p99 / reference's, concurrency 8" "$(p99_ratio decrypt 8)" 0.500
	target_row "status p99 / reference's, concurrency 8" "$(p99_ratio status 8)" 0.500
	target_row "Encrypt p50 / ESAPI TPM floor" "$(ratio3 "$enc_p50" "$floor_p50")" 1.150
	target_row "burst wall time / reference's" "$(ratio3 "$(burst ours seconds)" "$(burst ref seconds)")" 0.500
	target_row "cold start, ms (50 + TPM commands)" "$cold_ms" "$(awk "BEGIN {printf \"%.1f\", 50 + $cold_tpm_ms}")"
	target_row "cold start, dup+pcr, ms (50 + TPM commands)" "$cold_pcr_ms" "$(awk "BEGIN {printf \"%.1f\", 50 + $cold_pcr_tpm_ms}")"
	target_row "RSS with 200 idle connections, kB" "$ours_idle" 8192
} >"$work/table.md"

# The audit of etcd (issue 25): its own etcd, swtpm and daemon.
/usr/bin/python3 "$top/bench/audit.py" >"$work/audit.md"

# The analysis below the table is written by hand and kept across runs.
notes="$top/bench/notes.md"
{
	cat "$work/table.md"
	echo
	cat "$work/audit.md"
	if [ -f "$notes" ]; then
		echo
		cat "$notes"
	fi
} >"$top/docs/benchmarks.md"
cat "$work/table.md"
