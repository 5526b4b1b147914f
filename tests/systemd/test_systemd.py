#!/usr/bin/python3
"""tpm2-kms as an operator runs it: installed by `make install`, started by
systemd 252 as PID 1 (Debian 12's), on a real /dev/tpmrm0 (QEMU's tpm-tis
backed by a swtpm on the host); and installed from its Debian package,
built here by dpkg-buildpackage and checked by lintian, in a second guest
that upgrades and purges it.

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
                  'procps', 'util-linux', 'adduser']

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

# Every step of pkg-driver.sh, in order.
PKG_CHECKS = '''pkg-install pkg-user pkg-state-dir pkg-signature-dir pkg-conffile pkg-man-docs
pkg-not-started pkg-init pkg-init-files-owner pkg-enable-now pkg-healthy pkg-runs-as-service-user
pkg-doctor pkg-upgrade pkg-upgrade-version pkg-upgrade-restarted pkg-upgrade-healthy
pkg-upgrade-same-key pkg-upgrade-conffile-kept pkg-upgrade-doctor pkg-remove pkg-remove-stopped
pkg-purge pkg-purge-keeps-keys pkg-purge-conffile-gone pkg-purge-units-gone'''.split()


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


def source_files():
    """The source tree's files, as a clean clone has them."""
    r = subprocess.run(['git', '-C', SRC, 'ls-files', '-co', '--exclude-standard'],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return [f for f in r.stdout.splitlines() if os.path.isfile(os.path.join(SRC, f))]
    out = []
    for d, dirs, files in os.walk(SRC):
        dirs[:] = [x for x in dirs if not x.startswith(('build', '.git', 'autom4te'))]
        out += [os.path.relpath(os.path.join(d, f), SRC) for f in files]
    return out


def debian_packages(work):
    """dpkg-buildpackage -us -uc -b on a copy of the tree, lintian on what
    it built, then a second build with a higher version for the upgrade:
    (first .deb, second .deb, lintian's result)."""
    top = os.path.join(work, 'deb')
    tree = os.path.join(top, 'tpm2-kms')
    for f in source_files():
        os.makedirs(os.path.dirname(os.path.join(tree, f)), exist_ok=True)
        shutil.copy2(os.path.join(SRC, f), os.path.join(tree, f))
    # As on a fresh machine: nothing of this make (whose TESTS= and
    # MAKEFLAGS would reach the package's own `make check` and run this
    # test inside it) or of the test harness.
    env = {k: v for k, v in os.environ.items()
           if k not in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES', 'TESTS',
                        'TOP_BUILDDIR', 'TOP_SRCDIR', 'PYTHONPATH')}
    t0 = time.monotonic()
    run(['dpkg-buildpackage', '-us', '-uc', '-b', '-j%d' % os.cpu_count()], cwd=tree, env=env)
    [first] = glob.glob(os.path.join(top, 'tpm2-kms_*_amd64.deb'))
    lint = subprocess.run(['lintian', '--fail-on', 'error,warning', first],
                          capture_output=True, text=True)
    version = run(['dpkg-deb', '-f', first, 'Version'], text=True).stdout.strip()
    with open(os.path.join(tree, 'debian', 'changelog')) as f:
        changelog = f.read()
    with open(os.path.join(tree, 'debian', 'changelog'), 'w') as f:
        f.write('tpm2-kms (%s+1) unstable; urgency=medium\n\n  * Test upgrade.\n\n'
                ' -- tpm2-kms tests <tests@lists.tpm2-kms.org>  Sun, 06 Dec 2026 19:00:00 +0000'
                '\n\n' % version + changelog)
    # -nc: the same build, packaged again under the new version (its tests
    # ran in the first).
    run(['dpkg-buildpackage', '-us', '-uc', '-b', '-nc'], cwd=tree,
        env=dict(env, DEB_BUILD_OPTIONS='nocheck'))
    second = os.path.join(top, 'tpm2-kms_%s+1_amd64.deb' % version)
    print('package: two builds and lintian took %.0f s' % (time.monotonic() - t0))
    return first, second, lint


def driver_service(root, driver):
    """driver (a script in tests/systemd) as the guest's vmtest.service."""
    os.makedirs(os.path.join(root, 'usr', 'local', 'bin'), exist_ok=True)
    shutil.copy(os.path.join(SRC, 'tests', 'systemd', driver),
                os.path.join(root, 'usr', 'local', 'bin', 'vmtest-driver'))
    shutil.copy(os.path.join(SRC, 'tests', 'systemd', 'checks.sh'),
                os.path.join(root, 'usr', 'local', 'bin', 'vmtest-checks.sh'))
    units = os.path.join(root, 'etc', 'systemd', 'system')
    os.makedirs(os.path.join(units, 'multi-user.target.wants'), exist_ok=True)
    with open(os.path.join(units, 'vmtest.service'), 'w') as f:
        f.write('[Unit]\nDescription=tpm2-kms systemd test driver\nAfter=multi-user.target\n'
                '[Service]\nType=oneshot\nExecStart=/usr/local/bin/vmtest-driver\n'
                'StandardOutput=tty\nTTYPath=/dev/ttyS0\n'
                '[Install]\nWantedBy=multi-user.target\n')
    os.symlink('../vmtest.service', os.path.join(units, 'multi-user.target.wants',
                                                 'vmtest.service'))


def overlay_image(work):
    root = os.path.join(work, 'overlay')
    run(['make', 'install', 'DESTDIR=' + root], cwd=installed_tree())
    driver_service(root, 'driver.sh')
    shutil.copy(os.path.join(BUILD, 'tests', 'guest-client'),
                os.path.join(root, 'usr', 'local', 'bin'))
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


def package_overlay(work, debs):
    """The package guest's additions: the two .deb files in /root/deb and
    the package driver. Nothing of tpm2-kms is installed."""
    root = os.path.join(work, 'pkg-overlay')
    driver_service(root, 'pkg-driver.sh')
    os.makedirs(os.path.join(root, 'root', 'deb'))
    for deb in debs:
        shutil.copy(deb, os.path.join(root, 'root', 'deb'))
    image = os.path.join(work, 'pkg-overlay.cpio')
    pack(root, image)
    return image


class Systemd(unittest.TestCase):
    def boot_and_collect(self, work, overlay, what):
        """Boots the base image with overlay and collects the driver's CHECK
        lines: (results, console lines)."""
        assert os.geteuid() == 0, 'debootstrap needs root'
        kernel = run([os.path.join(SRC, 'tests', 'vm', 'guest-kernel.sh'),
                      os.path.join(BUILD, 'guest-kernel')], text=True).stdout.strip()
        base = base_image(GUEST_PACKAGES + runtime_packages(os.path.join(BUILD, 'tpm2-kms')))
        initrd = os.path.join(work, 'initrd.cpio')
        with open(initrd, 'wb') as out:
            for part in (base, overlay):
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
        print('guest ran %s in %.0f s' % (what, time.monotonic() - t0))
        tail = '\n'.join(console[-80:])
        self.assertTrue(done, 'the guest did not finish; console:\n%s' % tail)
        return results, console

    def assert_checks(self, checks, results, console):
        for name in checks:
            with self.subTest(check=name):
                self.assertEqual(results.get(name), 'ok', '\n'.join(
                    l for l in console if name in l or l.startswith('JOURNAL')))
        self.assertEqual(sorted(set(results) - set(checks)), [])

    def test_installed_units_under_systemd(self):
        work = tempdir('kmssd-')
        self.addCleanup(shutil.rmtree, work, True)
        results, console = self.boot_and_collect(work, overlay_image(work), 'the guide')
        self.assert_checks(CHECKS, results, console)

    def test_the_debian_package_installed_upgraded_and_purged(self):
        work = tempdir('kmspk-')
        self.addCleanup(shutil.rmtree, work, True)
        first, second, lint = debian_packages(work)
        # lintian: no errors or warnings (informational tags are shown).
        self.assertEqual(lint.returncode, 0, lint.stdout + lint.stderr)
        self.assertNotRegex(lint.stdout, r'(?m)^[EW]: ', lint.stdout)
        print('lintian: %s' % (lint.stdout.strip().replace('\n', '; ') or 'clean'))
        results, console = self.boot_and_collect(work, package_overlay(work, (first, second)),
                                                 'install, upgrade and purge')
        self.assert_checks(PKG_CHECKS, results, console)


if __name__ == '__main__':
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
