#!/bin/sh
# Installs what is missing (Debian 12), builds, starts a private swtpm as the
# TPM, serves tpm2-kms on ./run/kms.sock, shows a KMS v2 round trip and keeps
# serving until Ctrl-C. State (swtpm and keys) stays in ./run between runs.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
./scripts/build.sh tpm2-kms
kms="$top/build/tpm2-kms"

run="$top/run"
mkdir -p "$run/swtpm/state"
chmod 700 "$run"
tpm_sock="$run/swtpm/tpm.sock"
kms_sock="$run/kms.sock"

swtpm socket --tpm2 --tpmstate dir="$run/swtpm/state" \
	--server type=unixio,path="$tpm_sock" --ctrl type=unixio,path="$tpm_sock.ctrl" \
	--flags not-need-init,startup-clear 2>"$run/swtpm/log" &
swtpm_pid=$!
daemon_pid=
cleanup() {
	[ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
	[ -z "$daemon_pid" ] || wait "$daemon_pid" 2>/dev/null || true
	kill "$swtpm_pid" 2>/dev/null || true
	wait "$swtpm_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Poll for readiness.
wait_for() {
	i=0
	while ! [ -S "$1" ]; do
		i=$((i + 1))
		[ $i -lt 500 ] || { echo "run: $2 did not come up" >&2; exit 1; }
		kill -0 "$3" 2>/dev/null || { echo "run: $2 exited" >&2; exit 1; }
		sleep 0.02
	done
}
wait_for "$tpm_sock" swtpm "$swtpm_pid"

"$kms" serve --tcti "swtpm:path=$tpm_sock" --state-dir "$run/state" \
	--listen "$kms_sock" &
daemon_pid=$!
wait_for "$kms_sock" tpm2-kms "$daemon_pid"
i=0
until "$kms" status --listen "$kms_sock" >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 500 ] || { echo "run: tpm2-kms did not become healthy" >&2; exit 1; }
	sleep 0.02
done

echo
echo "== tpm2-kms is serving KMS v2 on $kms_sock (TPM: private swtpm in $run/swtpm)"
/usr/bin/python3 scripts/roundtrip.py "$kms_sock"
cat <<MSG

Talk to it:
  build/tpm2-kms status --listen $kms_sock
  /usr/bin/python3 scripts/roundtrip.py $kms_sock
  build/tpm2-kms keys --state-dir $run/state
  build/tpm2-kms rotate --tcti swtpm:path=$tpm_sock --state-dir $run/state
kube-apiserver: EncryptionConfiguration provider endpoint unix://$kms_sock
(see deploy/encryption-configuration.yaml). Ctrl-C stops it.
MSG
wait "$daemon_pid"
