# Sourced by the guests' drivers (driver.sh, pkg-driver.sh): how a step
# reports on the serial console, which the host reads.
#   CHECK <name> ok
#   CHECK <name> FAIL <what happened>   (then the units' journal)
exec >/dev/ttyS0 2>&1
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMD_PAGER= SYSTEMD_COLORS=0

ok() { echo "CHECK $1 ok"; }
fail() {
	echo "CHECK $1 FAIL $2"
	journalctl -u tpm2-kms -u tpm2-kms.socket -u tpm2-kms-metrics.socket -n 40 --no-pager \
		-o short-monotonic | sed 's/^/JOURNAL /'
}
# check NAME COMMAND...: ok when COMMAND succeeds.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$name"
	else
		fail "$name" "$(printf '%s' "$out" | tail -n 8 | tr '\n' '|')"
	fi
}
# until_ok SECONDS COMMAND...: polls COMMAND every 0.2 s.
until_ok() {
	local end=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.2
	done
}
status_ok() { tpm2-kms status --listen /run/tpm2-kms/kms.sock | grep -qx 'healthz: ok'; }
