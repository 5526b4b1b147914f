#!/usr/bin/python3
"""tpm2-kms as an operator runs it: installed by `make install`, started by
systemd 252 as PID 1 (Debian 12's), on a real /dev/tpmrm0 (QEMU's tpm-tis
backed by a swtpm on the host).

The guest's root is Debian 12 minbase with systemd, udev, tpm-udev,
tpm2-tools and curl, made by debootstrap from Debian's archive once and
kept in the build tree (systemd-guest/); the binaries, units and example
drop-ins come from `make install DESTDIR=...` of a tree configured as the
guide says (--prefix=/usr --sysconfdir=/etc), with the guide's commands
run inside the guest by tests/systemd/driver.sh. The guest reports one
CHECK line per step on its serial console; each is a subtest here."""

import glob
import hashlib
import os
import queue
import shutil
import subprocess
import sys
import time
import unittest

import console
from kmsclient import Swtpm, builddir, run_cli, tempdir, wait_until

SRC = os.environ.get('TOP_SRCDIR', os.getcwd())
BUILD = builddir()
WORK = os.path.join(BUILD, 'systemd-guest')
MIRROR = 'http://deb.debian.org/debian'
BOOT_AND_RUN_TIMEOUT = 900

# Everything the guide and the driver run, besides what tpm2-kms links.
GUEST_PACKAGES = ['systemd', 'systemd-sysv', 'udev', 'tpm-udev', 'tpm2-tools', 'curl',
                  'procps', 'util-linux']

# Every step of driver.sh, in order: each must report ok.
CHECKS = '''useradd tpm-device-owner signature-dir socket-enable socket-owner first-call-healthy enable-now
status-says-serving guide-status runs-as-service-user socket-still-root generation-1
restart-command restart-no-refused-call rotate reload status-reports-new-key stop
stopped-cleanly socket-kept-listening reactivated metrics-enable metrics-scrape journal-levels
journal-no-own-timestamp pcr-init pcr-read pcr-sign pcr-sig-copy pcr-rotate pcr-kind
pcr-bound-serving pcr-bound-healthy pcr-unreadable-named pcr-readable-again escrow-node-key escrow-approve escrow-init escrow-rotate
escrow-dir-owner escrow-files-owner escrow-serving-new-key escrow-status-ok escrow-alarm-status
escrow-alarm-metric escrow-again escrow-healthy-again apiserver-dropin apiserver-socket-group apiserver-connects
others-refused restart-with-dropin group-kept-after-restart late-tpm-restart late-tpm-restart-prompt
late-tpm-status-text late-tpm-unhealthy late-tpm-healthy late-tpm-no-restart fresh-stop
no-tpm-restarts no-tpm-status-text no-tpm-provisions-when-it-comes wrong-srk-exit-78
wrong-srk-status-text wrong-srk-not-restarted wrong-srk-journal-error private-tmp-hint
back-to-device-restart back-to-device hardening-exposure no-capabilities owner-password-set
owner-password-missing-78 owner-password-hint owner-password-guide owner-password-start
owner-password-provisions owner-password-not-logged'''.split()


def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, **kw)


def runtime_packages(binary):
    """The Debian packages holding the libraries binary links, and the
    TCTI it loads at run time."""
    libs = [l.split('=>')[1].split()[0] for l in
            run(['ldd', binary], text=True).stdout.splitlines() if '=> /' in l]
    libs += glob.glob('/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0')
    pkgs = set()
    for lib in libs:
        # dpkg knows the file by its name under /lib or /usr/lib (merged /usr).
        real = os.path.realpath(lib)
        paths = {real, real.replace('/usr/lib/', '/lib/', 1)}
        out = run(['dpkg', '-S', '*/' + os.path.basename(real)], text=True).stdout
        pkgs.update(l.split(':')[0] for l in out.splitlines()
                    if l.split(': ', 1)[1] in paths)
    return sorted(pkgs)


def base_image(packages):
    """Debian 12 with systemd as an uncompressed cpio archive, made once."""
    key = hashlib.sha256(('%s %s' % (MIRROR, ' '.join(packages))).encode()).hexdigest()[:16]
    image = os.path.join(WORK, 'base-%s.cpio' % key)
    if os.path.exists(image):
        return image
    root = os.path.join(WORK, 'root-tmp')
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(WORK, exist_ok=True)
    t0 = time.monotonic()
    r = subprocess.run(['debootstrap', '--variant=minbase', '--include=' + ','.join(packages),
                        'bookworm', root, MIRROR], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError('debootstrap failed:\n%s' % (r.stdout + r.stderr)[-3000:])
    # What a RAM-backed guest does not need.
    for d in ('var/cache/apt/archives', 'var/lib/apt/lists', 'usr/share/doc', 'usr/share/man',
              'usr/share/locale', 'usr/share/info'):
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)
        os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(root, 'etc', 'hostname'), 'w') as f:
        f.write('tpm2-kms-guest\n')
    with open(os.path.join(root, 'etc', 'machine-id'), 'w'):
        pass
    # The console is the driver's: no login prompt on it.
    for unit in ('serial-getty@ttyS0.service', 'getty@tty1.service',
                 'systemd-timesyncd.service', 'apt-daily.timer', 'apt-daily-upgrade.timer'):
        link = os.path.join(root, 'etc', 'systemd', 'system', unit)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink('/dev/null', link)
    pack(root, image + '.tmp')
    os.rename(image + '.tmp', image)
    shutil.rmtree(root)
    for old in glob.glob(os.path.join(WORK, 'base-*.cpio')):
        if old != image:
            os.unlink(old)
    print('guest root: debootstrap and pack took %.0f s' % (time.monotonic() - t0))
    return image


def pack(root, out):
    files = run(['find', '.'], cwd=root).stdout
    with open(out, 'wb') as f:
        subprocess.run(['cpio', '-o', '-H', 'newc', '--quiet'], cwd=root,
                       input=files, stdout=f, check=True)


def installed_tree():
    """A build tree configured as the guide says; `make install` from it."""
    with open(os.path.join(BUILD, 'Makefile')) as f:
        makefile = f.read()
    if '\nprefix = /usr\n' in makefile and '\nsysconfdir = /etc\n' in makefile:
        return BUILD
    tree = os.path.join(WORK, 'tree')
    if not os.path.exists(os.path.join(tree, 'Makefile')):
        os.makedirs(tree, exist_ok=True)
        run([os.path.join(SRC, 'configure'), '--prefix=/usr', '--sysconfdir=/etc',
             '--disable-unit', '--disable-integration'], cwd=tree)
    run(['make', '-j%d' % os.cpu_count()], cwd=tree)
    return tree


def foreign_state(work):
    """A state directory provisioned on another TPM: the wrong-SRK case."""
    tpm = Swtpm(os.path.join(work, 'other-tpm'))
    tpm.start()
    try:
        state = os.path.join(work, 'foreign-state')
        run_cli('init', '--tcti', tpm.tcti, '--state-dir', state)
        return state
    finally:
        tpm.kill()


def guide_keys(work):
    """What the admin's offline machine hands the node for §7.2 and §10.2:
    the admin key (for the node's own approval, made in the guest), the
    recovery node file with its approval, and the PCR signer (the guest
    plays the offline machine for pcr-sign). Made here, as the guide makes
    them."""
    d = os.path.join(work, 'guide')
    os.makedirs(d)
    pw = os.path.join(d, 'passphrase')
    with open(pw, 'w') as f:
        f.write('correct horse battery staple\n')
    for name in ('admin', 'recovery', 'pcr'):
        key = os.path.join(d, name + '.pem')
        run(['openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
             '-aes-256-cbc', '-pass', 'file:' + pw, '-out', key])
        run(['openssl', 'pkey', '-in', key, '-passin', 'file:' + pw, '-pubout', '-out',
             os.path.join(d, name + '.pub.pem')])
    run_cli('node-key', '--public', os.path.join(d, 'recovery.pub.pem'), '-o',
            os.path.join(d, 'recovery.node'))
    run_cli('approve', '--admin-key', os.path.join(d, 'admin.pem'), '--passphrase-file', pw,
            '-o', os.path.join(d, 'recovery.approval'), os.path.join(d, 'recovery.node'))
    os.unlink(os.path.join(d, 'recovery.pem'))      # stays offline
    return d


def overlay_image(work):
    root = os.path.join(work, 'overlay')
    run(['make', 'install', 'DESTDIR=' + root], cwd=installed_tree())
    os.makedirs(os.path.join(root, 'usr', 'local', 'bin'), exist_ok=True)
    shutil.copy(os.path.join(BUILD, 'tests', 'guest-client'),
                os.path.join(root, 'usr', 'local', 'bin'))
    shutil.copy(os.path.join(SRC, 'tests', 'systemd', 'driver.sh'),
                os.path.join(root, 'usr', 'local', 'bin', 'vmtest-driver'))
    units = os.path.join(root, 'etc', 'systemd', 'system')
    os.makedirs(os.path.join(units, 'multi-user.target.wants'), exist_ok=True)
    with open(os.path.join(units, 'vmtest.service'), 'w') as f:
        f.write('[Unit]\nDescription=tpm2-kms systemd test driver\nAfter=multi-user.target\n'
                '[Service]\nType=oneshot\nExecStart=/usr/local/bin/vmtest-driver\n'
                'StandardOutput=tty\nTTYPath=/dev/ttyS0\n'
                '[Install]\nWantedBy=multi-user.target\n')
    os.symlink('../vmtest.service', os.path.join(units, 'multi-user.target.wants',
                                                 'vmtest.service'))
    os.makedirs(os.path.join(root, 'root'), exist_ok=True)
    shutil.copytree(foreign_state(work), os.path.join(root, 'root', 'foreign-state'))
    shutil.copytree(guide_keys(work), os.path.join(root, 'root', 'guide'))
    image = os.path.join(work, 'overlay.cpio')
    pack(root, image)
    return image


class Guest:
    def __init__(self, work, kernel, initrd):
        os.makedirs(os.path.join(work, 'tpm'))
        self.ctrl = os.path.join(work, 'ctrl.sock')
        self.swtpm = subprocess.Popen(
            ['swtpm', 'socket', '--tpm2', '--tpmstate', 'dir=' + os.path.join(work, 'tpm'),
             '--ctrl', 'type=unixio,path=' + self.ctrl,
             '--log', 'file=%s,level=2' % os.path.join(work, 'swtpm.log')],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(self.ctrl), 'swtpm control socket')
        self.qemu = subprocess.Popen(
            ['qemu-system-x86_64', '-accel', 'tcg', '-m', '2048', '-smp', '2',
             '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio',
             '-no-reboot', '-kernel', kernel, '-initrd', initrd,
             '-append', 'console=ttyS0 rdinit=/lib/systemd/systemd panic=-1 quiet loglevel=3 '
                        'systemd.show_status=false',
             '-chardev', 'socket,id=chrtpm,path=' + self.ctrl,
             '-tpmdev', 'emulator,id=tpm0,chardev=chrtpm', '-device', 'tpm-tis,tpmdev=tpm0',
             '-device', 'vmgenid'],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = console.read_lines(self.qemu.stdout, os.path.join(work, 'console.log'))

    def close(self):
        for p in (self.qemu, self.swtpm):
            if p.poll() is None:
                p.kill()
                p.wait()


class Systemd(unittest.TestCase):
    def test_installed_units_under_systemd(self):
        assert os.geteuid() == 0, 'debootstrap needs root'
        kernel = run([os.path.join(SRC, 'tests', 'vm', 'guest-kernel.sh'),
                      os.path.join(BUILD, 'guest-kernel')], text=True).stdout.strip()
        base = base_image(GUEST_PACKAGES + runtime_packages(os.path.join(BUILD, 'tpm2-kms')))
        work = tempdir('kmssd-')
        self.addCleanup(shutil.rmtree, work, True)
        initrd = os.path.join(work, 'initrd.cpio')
        with open(initrd, 'wb') as out:
            for part in (base, overlay_image(work)):
                with open(part, 'rb') as f:
                    shutil.copyfileobj(f, out)
        g = Guest(work, kernel, initrd)
        self.addCleanup(g.close)
        t0 = time.monotonic()
        results, console, done = {}, [], False
        while not done:
            try:
                line = g.lines.get(timeout=max(1, t0 + BOOT_AND_RUN_TIMEOUT - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            console.append(line)
            if line.startswith('SYSTEMD-TEST-BEGIN'):
                print('guest: %s (booted in %.0f s)' % (line.split(' ', 1)[1],
                                                        time.monotonic() - t0))
            elif line.startswith('CHECK '):
                parts = line.split(' ', 3)
                results[parts[1]] = parts[2] if parts[2] == 'ok' else ' '.join(parts[2:])
            elif line.startswith('EXPOSURE '):
                print('systemd-analyze security: exposure %s' % line.split()[1])
            elif line == 'SYSTEMD-TEST-DONE':
                done = True
        print('guest ran the guide in %.0f s' % (time.monotonic() - t0))
        tail = '\n'.join(console[-80:])
        self.assertTrue(done, 'the guest did not finish; console:\n%s' % tail)
        for name in CHECKS:
            with self.subTest(check=name):
                self.assertEqual(results.get(name), 'ok', '\n'.join(
                    l for l in console if name in l or l.startswith('JOURNAL')))
        self.assertEqual(sorted(set(results) - set(CHECKS)), [])


if __name__ == '__main__':
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
