#!/bin/bash
# Runs inside the package test's guest (systemd as PID 1, a real /dev/tpmrm0
# from swtpm), as vmtest.service once the boot is done. Nothing of tpm2-kms
# is installed yet: /root/deb holds the package the host built and a second
# build of it with a higher version. It installs the first as
# docs/operations.md §1 says, makes the first start of §2 from the package,
# upgrades to the second and purges it, printing one line per check on the
# console:
#   CHECK <name> ok
#   CHECK <name> FAIL <what happened>
# then SYSTEMD-TEST-DONE, and powers off. The host asserts on those lines.
set -u
. /usr/local/bin/vmtest-checks.sh
export DEBIAN_FRONTEND=noninteractive
key_id() { tpm2-kms status --listen /run/tpm2-kms/kms.sock | sed -n 's/^key_id: //p'; }

echo "SYSTEMD-TEST-BEGIN $(systemctl --version | head -n 1)"
cd /root/deb
version() { dpkg-deb -f "$1" Version; }
set -- tpm2-kms_*.deb
if dpkg --compare-versions "$(version "$1")" lt "$(version "$2")"; then
	first=$1 second=$2
else
	first=$2 second=$1
fi

# --- §1 Install: from the package -------------------------------------------
check pkg-install apt-get install -y --no-install-recommends "./$first"
check pkg-user sh -c 'id -nG tpm2-kms | tr " " "\n" | grep -qx tss &&
	[ "$(getent passwd tpm2-kms | cut -d: -f7)" = /usr/sbin/nologin ]'
check pkg-state-dir sh -c '[ "$(stat -c "%U:%G %a" /var/lib/tpm2-kms)" = "tpm2-kms:tpm2-kms 700" ]'
check pkg-signature-dir sh -c '[ "$(stat -c "%U:%G %a" /etc/tpm2-kms/pcr-signatures)" = "root:root 755" ]'
check pkg-conffile sh -c 'dpkg-query -W -f="\${Conffiles}" tpm2-kms | grep -q "/etc/tpm2-kms/tpm2-kms.conf "'
check pkg-man-docs sh -c '[ -f /usr/share/man/man8/tpm2-kms.8.gz ] &&
	[ -f /usr/share/doc/tpm2-kms/examples/tpm2-kms-rules.yml ] &&
	[ -f /usr/share/doc/tpm2-kms/examples/tpm2-kms.json ]'
# Installed, not started, not enabled: nothing runs before init.
check pkg-not-started sh -c '! systemctl is-active -q tpm2-kms.socket &&
	! systemctl is-active -q tpm2-kms.service &&
	[ "$(systemctl is-enabled tpm2-kms.socket)" = disabled ] && [ ! -e /var/lib/tpm2-kms/state ]'

# --- §2 First start, as the guide writes it ---------------------------------
check pkg-init tpm2-kms init
check pkg-init-files-owner sh -c '[ "$(stat -c %U /var/lib/tpm2-kms/state)" = tpm2-kms ]'
check pkg-enable-now systemctl enable --now tpm2-kms.socket tpm2-kms.service
check pkg-healthy until_ok 30 status_ok
check pkg-runs-as-service-user sh -c '[ "$(ps -o user= -p "$(systemctl show -P MainPID tpm2-kms)")" = tpm2-kms ]'
check pkg-doctor sh -c 'out=$(tpm2-kms doctor) || { echo "$out"; exit 1; }'
before_key=$(key_id)
before_pid=$(systemctl show -P MainPID tpm2-kms)
# An operator's change to the configuration file survives the upgrade.
echo 'log-level debug' >> /etc/tpm2-kms/tpm2-kms.conf

# --- An upgrade: keys kept, the service restarted ---------------------------
check pkg-upgrade apt-get install -y --no-install-recommends "./$second"
check pkg-upgrade-version sh -c '[ "$(dpkg-query -W -f="\${Version}" tpm2-kms)" = "$1" ]' _ \
	"$(version "$second")"
check pkg-upgrade-restarted until_ok 30 sh -c '[ "$(systemctl show -P MainPID tpm2-kms)" != "'"$before_pid"'" ] &&
	[ "$(systemctl show -P MainPID tpm2-kms)" != 0 ]'
check pkg-upgrade-healthy until_ok 30 status_ok
check pkg-upgrade-same-key sh -c '[ "$(tpm2-kms status --listen /run/tpm2-kms/kms.sock | sed -n "s/^key_id: //p")" = "'"$before_key"'" ]'
check pkg-upgrade-conffile-kept grep -qx 'log-level debug' /etc/tpm2-kms/tpm2-kms.conf
check pkg-upgrade-doctor tpm2-kms doctor

# --- Remove, then purge: the keys stay --------------------------------------
check pkg-remove apt-get remove -y tpm2-kms
check pkg-remove-stopped sh -c '! systemctl is-active -q tpm2-kms.service && ! systemctl is-active -q tpm2-kms.socket'
check pkg-purge apt-get purge -y tpm2-kms
check pkg-purge-keeps-keys sh -c '[ -f /var/lib/tpm2-kms/state ] && ls /var/lib/tpm2-kms/gen-000001.pem'
check pkg-purge-conffile-gone sh -c '[ ! -e /etc/tpm2-kms/tpm2-kms.conf ]'
check pkg-purge-units-gone sh -c '[ ! -e /lib/systemd/system/tpm2-kms.service ] &&
	! systemctl cat tpm2-kms.service >/dev/null 2>&1'

echo SYSTEMD-TEST-DONE
systemctl poweroff
