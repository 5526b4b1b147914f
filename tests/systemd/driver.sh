#!/bin/bash
# Runs inside the systemd test's guest (systemd as PID 1, a real /dev/tpmrm0
# from swtpm), as vmtest.service once the boot is done. It installs nothing:
# `make install` put tpm2-kms, its units and the example drop-ins in place.
# It follows docs/operations.md, command for command where the guide gives
# one, and prints one line per check on the console:
#   CHECK <name> ok
#   CHECK <name> FAIL <what happened>
# then SYSTEMD-TEST-DONE, and powers off. The host asserts on those lines.
set -u
. /usr/local/bin/vmtest-checks.sh
prop() { systemctl show -P "$1" tpm2-kms.service; }

echo "SYSTEMD-TEST-BEGIN $(systemctl --version | head -n 1)"

# --- docs/operations.md §1 Install ------------------------------------------
check useradd useradd --system --no-create-home --shell /usr/sbin/nologin --groups tss tpm2-kms
check tpm-device-owner sh -c 'ls -l /dev/tpmrm0 | grep -q "^crw-rw---- 1 tss tss "'
# The directory §10 copies signatures into exists after make install.
check signature-dir sh -c '[ "$(stat -c "%U:%G %a" /etc/tpm2-kms/pcr-signatures)" = "root:root 755" ]'

# --- §2 First start: socket activation answers healthy on the first call ----
check socket-enable systemctl enable --now tpm2-kms.socket
check socket-owner sh -c '[ "$(stat -c "%U:%G %a" /run/tpm2-kms/kms.sock)" = "root:root 600" ]'
check first-call-healthy sh -c 'out=$(tpm2-kms status --listen /run/tpm2-kms/kms.sock) &&
	echo "$out" | grep -qx "healthz: ok" || { echo "$out"; exit 1; }'
check enable-now systemctl enable --now tpm2-kms.socket tpm2-kms.service
check status-says-serving sh -c 'systemctl status tpm2-kms | grep -q "serving KMS v2"'
check guide-status tpm2-kms status --listen /run/tpm2-kms/kms.sock
check runs-as-service-user sh -c '[ "$(ps -o user= -p "$(systemctl show -P MainPID tpm2-kms)")" = tpm2-kms ]'
check socket-still-root sh -c '[ "$(stat -c "%U:%G %a" /run/tpm2-kms/kms.sock)" = "root:root 600" ]'
check generation-1 sh -c 'tpm2-kms keys | grep -q "tpm2-kms-g1-"'

# --- restart with no refused call --------------------------------------------
guest-client /run/tpm2-kms/kms.sock restart 300 >/tmp/restart.out 2>&1 &
client=$!
until_ok 30 grep -q "n=20 " /tmp/restart.out
check restart-command systemctl restart tpm2-kms
wait $client
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c 'dec=ok' /tmp/restart.out)" = 300 ]; then
	ok restart-no-refused-call
else
	fail restart-no-refused-call "client exit $rc, $(grep -c 'dec=ok' /tmp/restart.out) of 300: $(grep -v '^KMS' /tmp/restart.out | tail -n 3 | tr '\n' '|')"
fi

# --- §5 Rotation, then reload ------------------------------------------------
new=$(tpm2-kms rotate 2>/tmp/rotate.err)
check rotate [ -n "$new" ]
check reload systemctl reload tpm2-kms
check status-reports-new-key until_ok 10 sh -c "tpm2-kms status --listen /run/tpm2-kms/kms.sock | grep -qx 'key_id: $new'"

# --- stop, and activation again -----------------------------------------------
check stop systemctl stop tpm2-kms
check stopped-cleanly sh -c '[ "$(systemctl show -P Result tpm2-kms)" = success ] && [ "$(systemctl show -P ExecMainStatus tpm2-kms)" = 0 ]'
check socket-kept-listening sh -c '[ -S /run/tpm2-kms/kms.sock ] && systemctl is-active -q tpm2-kms.socket'
check reactivated status_ok

# --- §8 Monitoring, as the guide says -----------------------------------------
check metrics-enable sh -c 'systemctl enable tpm2-kms-metrics.socket &&
	systemctl stop tpm2-kms && systemctl start tpm2-kms-metrics.socket tpm2-kms'
# The guide's command; tpm_up turns 1 with the first probe, just after the start.
check metrics-scrape until_ok 20 sh -c 'curl -s http://127.0.0.1:9464/metrics | grep -x "tpm2kms_tpm_up 1"'
check journal-levels sh -c 'journalctl -u tpm2-kms -p info -o json --no-pager | grep -q "\"PRIORITY\":\"6\""'
check journal-no-own-timestamp sh -c '! journalctl -u tpm2-kms -o cat --no-pager | grep -E "^[0-9]{4}-[0-9]{2}-[0-9]{2}T"'

# --- §7.2 escrow turned on as root: the service user's files, and the alarm --
# (The review found escrow/ made root:root 0700 here: the daemon, blind,
# kept saying ok with the write key's escrow file gone.)
cd /root/guide
check escrow-node-key tpm2-kms node-key -o node-a.node
check escrow-approve tpm2-kms approve --admin-key admin.pem --passphrase-file passphrase -o node-a.approval node-a.node
check escrow-init tpm2-kms init --admin-key admin.pub.pem --approval node-a.approval --escrow-to recovery.node --escrow-approval recovery.approval
escrowed=$(tpm2-kms rotate 2>/tmp/rotate2.err)
check escrow-rotate [ -n "$escrowed" ]
check escrow-dir-owner sh -c '[ "$(stat -c "%U:%G %a" /var/lib/tpm2-kms/escrow)" = "tpm2-kms:tpm2-kms 700" ]'
check escrow-files-owner sh -c '[ -z "$(find /var/lib/tpm2-kms ! -user tpm2-kms)" ]'
check escrow-serving-new-key until_ok 20 sh -c "tpm2-kms status --listen /run/tpm2-kms/kms.sock | grep -qx 'key_id: $escrowed'"
check escrow-status-ok until_ok 10 status_ok
gen=$(tpm2-kms keys | awk '$2 == "'"$escrowed"'" { printf "%06d", $1 }')
rm -f "/var/lib/tpm2-kms/escrow/gen-$gen.pem"
systemctl reload tpm2-kms
check escrow-alarm-status until_ok 10 sh -c 'tpm2-kms status --listen /run/tpm2-kms/kms.sock | grep -q "is not escrowed"'
check escrow-alarm-metric until_ok 10 sh -c 'curl -s http://127.0.0.1:9464/metrics | grep -x "tpm2kms_escrow_missing 1"'
check escrow-again tpm2-kms init
check escrow-healthy-again until_ok 10 status_ok
cd /

# --- §10.2 boot-state binding with our own signer, as root -----------------
# (The signature the guide copies into /etc/tpm2-kms/pcr-signatures/ was
# written 0600 by root, and the service ignored it: "no PCR signature
# approves the boot state".)
cd /root/guide
check pcr-init tpm2-kms init --pcr-key pcr.pub.pem --pcrs 7
values=$(tpm2-kms pcr-read --pcrs 7 2>/dev/null)
check pcr-read sh -c "echo '$values' | grep -qE '^7=[0-9a-f]{64}$'"
check pcr-sign tpm2-kms pcr-sign --key pcr.pem --passphrase-file passphrase --pcrs "$values" -o node-a-2026-12.sig
check pcr-sig-copy cp node-a-2026-12.sig /etc/tpm2-kms/pcr-signatures/
bound=$(tpm2-kms rotate 2>/tmp/rotate3.err)
check pcr-rotate [ -n "$bound" ]
check pcr-kind sh -c "tpm2-kms keys | grep -E ' $bound .* dup\+pcr '"
check pcr-bound-serving until_ok 20 sh -c "tpm2-kms status --listen /run/tpm2-kms/kms.sock | grep -qx 'key_id: $bound'"
check pcr-bound-healthy until_ok 10 status_ok
chmod 0600 /etc/tpm2-kms/pcr-signatures/node-a-2026-12.sig && touch /etc/tpm2-kms/pcr-signatures/node-a-2026-12.sig
check pcr-unreadable-named until_ok 10 sh -c 'tpm2-kms status --listen /run/tpm2-kms/kms.sock | grep -q "cannot read 1 PCR signature file(s), first /etc/tpm2-kms/pcr-signatures/node-a-2026-12.sig (owner uid 0, group 0, mode 0600"'
chmod 0644 /etc/tpm2-kms/pcr-signatures/node-a-2026-12.sig && touch /etc/tpm2-kms/pcr-signatures/node-a-2026-12.sig
check pcr-readable-again until_ok 10 status_ok
cd /

# --- §2: kube-apiserver as another user, with the shipped drop-in ------------
groupadd --system kube-apiserver
useradd --system --no-create-home --gid kube-apiserver kube-apiserver
check apiserver-dropin sh -c 'mkdir -p /etc/systemd/system/tpm2-kms.socket.d &&
	cp /usr/share/doc/tpm2-kms/examples/apiserver-group.conf /etc/systemd/system/tpm2-kms.socket.d/ &&
	systemctl daemon-reload && systemctl restart tpm2-kms.socket tpm2-kms'
check apiserver-socket-group sh -c '[ "$(stat -c "%U:%G %a" /run/tpm2-kms/kms.sock)" = "root:kube-apiserver 660" ]'
check apiserver-connects setpriv --reuid kube-apiserver --regid kube-apiserver --init-groups \
	tpm2-kms status --listen /run/tpm2-kms/kms.sock
check others-refused sh -c 'setpriv --reuid nobody --regid nogroup --clear-groups \
	tpm2-kms status --listen /run/tpm2-kms/kms.sock 2>&1 |
	grep -q "cannot connect to /run/tpm2-kms/kms.sock: Permission denied"'
check restart-with-dropin systemctl restart tpm2-kms
check group-kept-after-restart sh -c '[ "$(stat -c "%G" /run/tpm2-kms/kms.sock)" = kube-apiserver ]'

# --- a late TPM: READY at once, healthy when it comes --------------------------
chmod 0600 /dev/tpmrm0       # the service user cannot open it for now
start=$SECONDS
check late-tpm-restart timeout 30 systemctl restart tpm2-kms
check late-tpm-restart-prompt [ $((SECONDS - start)) -lt 20 ]
check late-tpm-status-text sh -c 'systemctl show -P StatusText tpm2-kms | grep -q "waiting for the TPM"'
check late-tpm-unhealthy sh -c '! out=$(tpm2-kms status --listen /run/tpm2-kms/kms.sock --timeout 3000) &&
	echo "$out" | grep -q "^healthz: tpm: "'
chmod 0660 /dev/tpmrm0
check late-tpm-healthy until_ok 30 status_ok
check late-tpm-no-restart [ "$(prop NRestarts)" = 0 ]

# --- no TPM and nothing provisioned: restarted until the TPM comes -----------
check fresh-stop systemctl stop tpm2-kms
mv /var/lib/tpm2-kms /var/lib/tpm2-kms.kept
chmod 0600 /dev/tpmrm0
systemctl start tpm2-kms
check no-tpm-restarts until_ok 30 sh -c '[ "$(systemctl show -P NRestarts tpm2-kms)" -ge 1 ]'
check no-tpm-status-text until_ok 20 sh -c 'systemctl show -P StatusText tpm2-kms | grep -q "stopped: cannot provision"'
chmod 0660 /dev/tpmrm0
check no-tpm-provisions-when-it-comes until_ok 40 status_ok
systemctl stop tpm2-kms
rm -rf /var/lib/tpm2-kms
mv /var/lib/tpm2-kms.kept /var/lib/tpm2-kms

# --- a wrong SRK: exit 78, not restarted ----------------------------------------
mv /var/lib/tpm2-kms /var/lib/tpm2-kms.kept
cp -a /root/foreign-state /var/lib/tpm2-kms
systemctl reset-failed tpm2-kms
systemctl start tpm2-kms
check wrong-srk-exit-78 until_ok 20 sh -c '[ "$(systemctl show -P ExecMainStatus tpm2-kms)" = 78 ]'
check wrong-srk-status-text sh -c 'systemctl show -P StatusText tpm2-kms | grep -q "stopped, not restarting: the TPM.s storage root key is not the one"'
sleep 7       # longer than RestartSec=5s: proving the absence of a restart takes waiting
check wrong-srk-not-restarted sh -c '[ "$(systemctl show -P NRestarts tpm2-kms)" = 0 ] && systemctl is-failed -q tpm2-kms'
check wrong-srk-journal-error sh -c 'journalctl -u tpm2-kms -p err -o cat --no-pager | grep -q "storage root key is not the one"'
rm -rf /var/lib/tpm2-kms
mv /var/lib/tpm2-kms.kept /var/lib/tpm2-kms
systemctl reset-failed tpm2-kms

# --- a swtpm socket under /tmp: the error names PrivateTmp ---------------------
cp /etc/tpm2-kms/tpm2-kms.conf /root/conf.kept
echo "tcti swtpm:path=/tmp/swtpm.sock" >>/etc/tpm2-kms/tpm2-kms.conf
systemctl restart tpm2-kms
check private-tmp-hint until_ok 20 sh -c 'journalctl -u tpm2-kms -o cat --no-pager | grep -q "this service has its own /tmp (PrivateTmp=yes)"'
cp /root/conf.kept /etc/tpm2-kms/tpm2-kms.conf
check back-to-device-restart systemctl restart tpm2-kms
check back-to-device until_ok 30 status_ok

# --- hardening, as systemd sees it ---------------------------------------------
exposure=$(systemd-analyze security tpm2-kms.service --no-pager | sed -n 's/.*Overall exposure level for tpm2-kms.service: \([0-9.]*\).*/\1/p')
echo "EXPOSURE $exposure"
check hardening-exposure sh -c "[ -n '$exposure' ] && awk 'BEGIN { exit !($exposure <= 1.5) }'"
check no-capabilities sh -c 'grep -q "^CapEff:	0000000000000000" /proc/$(systemctl show -P MainPID tpm2-kms)/status'

# --- §2: a TPM whose owner hierarchy has a password ----------------------------
systemctl stop tpm2-kms
mv /var/lib/tpm2-kms /var/lib/tpm2-kms.kept
tpm2_evictcontrol -C o -c 0x81000001 >/dev/null 2>&1
tpm2_nvundefine -C o 0x01800101 >/dev/null 2>&1
check owner-password-set tpm2_changeauth -c o 'the owner password'
systemctl reset-failed tpm2-kms
systemctl start tpm2-kms
check owner-password-missing-78 until_ok 20 sh -c '[ "$(systemctl show -P ExecMainStatus tpm2-kms)" = 78 ]'
check owner-password-hint sh -c 'journalctl -u tpm2-kms -o cat --no-pager | grep -q "give it with --owner-auth-file FILE (or the systemd credential owner-auth)"'
# The guide's commands, as written.
check owner-password-guide sh -c "install -m 0600 /dev/null /etc/tpm2-kms/owner-auth &&
	printf '%s' 'the owner password' > /etc/tpm2-kms/owner-auth &&
	mkdir -p /etc/systemd/system/tpm2-kms.service.d &&
	cp /usr/share/doc/tpm2-kms/examples/owner-auth.conf /etc/systemd/system/tpm2-kms.service.d/ &&
	systemctl daemon-reload"
systemctl reset-failed tpm2-kms
check owner-password-start systemctl start tpm2-kms
check owner-password-provisions until_ok 30 status_ok
check owner-password-not-logged sh -c '! journalctl --no-pager -o cat | grep -q "the owner password"'

echo SYSTEMD-TEST-DONE
systemctl poweroff
