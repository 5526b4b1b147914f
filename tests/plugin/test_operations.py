#!/usr/bin/python3
"""Operability: man pages, --help, configuration file, systemd units and
protocols (readiness notification, socket activation), Prometheus metrics,
log formats, static pod manifest."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import unittest
import urllib.request


from kmsclient import Daemon, Kms, Swtpm, run_cli, tempdir, tpm2_kms, wait_until

SRC = os.environ.get('TOP_SRCDIR', os.getcwd())
BUILD = os.environ.get('TOP_BUILDDIR', os.getcwd())
COMMANDS = ('serve', 'init', 'rotate', 'promote', 'keys', 'retire', 'node-key', 'approve',
            'export', 'import', 'recover', 'certify', 'pcr-read', 'pcr-sign', 'pcr-revoke',
            'audit', 'encryption-config', 'status')
# Options that name one run's input or output: not in the configuration file.
FLAG_ONLY = ('stage', 'to', 'approval', 'generation', 'output', 'public', 'recovery-key',
             'write-generation', 'snapshot', 'legacy', 'epoch', 'passphrase-file', 'answer',
             'ek-ca', 'response', 'name', 'phase')


def make_admin(root, name):
    """An admin key pair made with openssl; its public half's path."""
    key = os.path.join(root, name + '.pem')
    subprocess.run('openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s && '
                   'openssl pkey -in %s -pubout -out %s.pub' % (key, key, key), shell=True,
                   check=True, capture_output=True)
    return key + '.pub'


def read(path):
    with open(path) as f:
        return f.read()


class Documentation(unittest.TestCase):
    def test_man_pages_lint_clean(self):
        r = subprocess.run(['mandoc', '-T', 'lint', '-W', 'warning',
                            os.path.join(SRC, 'man', 'tpm2-kms.8'),
                            os.path.join(SRC, 'man', 'tpm2-kms.conf.5')],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_help_and_man_page_agree(self):
        man8 = read(os.path.join(SRC, 'man', 'tpm2-kms.8'))
        man5 = read(os.path.join(SRC, 'man', 'tpm2-kms.conf.5'))
        seen = set()
        for cmd in COMMANDS:
            self.assertIn('.Cm %s' % cmd, man8)
            help_text = run_cli(cmd, '--help').stdout
            for flag in re.findall(r'^  --([a-z-]+)', help_text, re.M):
                seen.add(flag)
                self.assertIn('.It Fl -%s' % flag, man8, '--%s of %s' % (flag, cmd))
                if flag in FLAG_ONLY:
                    self.assertNotIn('.It Cm %s' % flag, man5, flag)
                elif flag not in ('help', 'config', 'print-config'):
                    self.assertIn('.It Cm %s' % flag, man5, flag)
        self.assertGreater(len(seen), 15)


class Dependencies(unittest.TestCase):
    def packages(self, *opts):
        r = subprocess.run([os.path.join(SRC, 'scripts', 'install-deps.sh')] + list(opts) +
                           ['--list'], capture_output=True, text=True, check=True)
        return r.stdout.split()

    def test_trying_it_does_not_change_the_host(self):
        # scripts/run.sh used to install every test tool and linux-image-amd64,
        # whose install rewrote /boot on the user's machine.
        run = self.packages()
        for p in run:
            self.assertFalse(re.match(r'linux-image|qemu|clang|valgrind|prometheus|debootstrap',
                                      p), p)
        self.assertIn('swtpm', run)
        test = self.packages('--test')
        self.assertTrue(set(run) < set(test))
        self.assertIn('qemu-system-x86', test)
        self.assertFalse([p for p in test if p.startswith('linux-image')], test)
        # What the lists name is what this machine was set up with.
        for p in test:
            r = subprocess.run(['dpkg-query', '-W', '-f=${Status}', p], capture_output=True,
                               text=True)
            self.assertIn('install ok installed', r.stdout, p)


class ConfigFile(unittest.TestCase):
    def test_flags_win_and_print_config(self):
        d = tempdir('kmso-')
        conf = os.path.join(d, 'tpm2-kms.conf')
        with open(conf, 'w') as f:
            f.write('# test\nlisten /tmp/from-file.sock\ntcti swtpm:path=/tmp/t.sock\n'
                    'metrics-listen 127.0.0.1:9464\nallow-uid 0\nallow-uid 12\n')
        out = run_cli('serve', '--config', conf, '--print-config',
                      '--tcti', 'device:/dev/tpm0').stdout
        self.assertIn('listen /tmp/from-file.sock\n', out)
        self.assertIn('tcti device:/dev/tpm0\n', out)
        self.assertIn('metrics-listen 127.0.0.1:9464\n', out)
        self.assertIn('allow-uid 0\nallow-uid 12\n', out)
        with open(conf, 'a') as f:
            f.write('listne /oops\n')
        r = run_cli('serve', '--config', conf, '--print-config', check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn('%s:7: unknown setting "listne"' % conf, r.stderr)
        # What names one run's input or output is not a setting.
        for flag in FLAG_ONLY:
            with open(conf, 'w') as f:
                f.write('%s x\n' % flag)
            r = run_cli('export', '--config', conf, '--to', 'n', '--approval', 'a', check=False)
            self.assertEqual(r.returncode, 2)
            self.assertIn('unknown setting "%s"' % flag, r.stderr)
        shutil.rmtree(d)


class Systemd(unittest.TestCase):
    def test_units_verify(self):
        d = tempdir('kmsu-')
        unit = read(os.path.join(BUILD, 'dist', 'systemd', 'tpm2-kms.service'))
        # verify wants ExecStart to exist: point it at the built binary.
        unit = re.sub(r'ExecStart=\S+/tpm2-kms', 'ExecStart=' + tpm2_kms(), unit)
        with open(os.path.join(d, 'tpm2-kms.service'), 'w') as f:
            f.write(unit)
        for sock in ('tpm2-kms.socket', 'tpm2-kms-metrics.socket'):
            shutil.copy(os.path.join(SRC, 'dist', 'systemd', sock), d)
        shutil.copy(os.path.join(SRC, 'dist', 'systemd', 'examples',
                                 'uki-pcr-signature.service'), d)
        r = subprocess.run(['systemd-analyze', 'verify', '--man=no',
                            os.path.join(d, 'tpm2-kms.service'),
                            os.path.join(d, 'tpm2-kms.socket'),
                            os.path.join(d, 'tpm2-kms-metrics.socket'),
                            os.path.join(d, 'uki-pcr-signature.service')],
                           capture_output=True, text=True, cwd=d)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for key in ('Type=notify', 'ProtectSystem=strict', 'PrivateNetwork=yes',
                    'NoNewPrivileges=yes', 'MemoryDenyWriteExecute=yes',
                    'SystemCallFilter=@system-service', 'RestrictAddressFamilies=AF_UNIX',
                    'CapabilityBoundingSet=\n', 'LockPersonality=yes',
                    'DeviceAllow=/dev/tpmrm0', 'StateDirectory=tpm2-kms',
                    'SupplementaryGroups=tss', 'RestartPreventExitStatus=2 78'):
            self.assertIn(key, unit)
        # Its recursive chown would take the socket from SocketGroup=.
        self.assertNotRegex(unit, r'(?m)^RuntimeDirectory')
        shutil.rmtree(d)

    def test_notify_and_socket_activation(self):
        # As the shipped units pass them: the KMS socket (named kms) and the
        # metrics socket (named metrics, loopback TCP: the service itself
        # has no network).
        root = tempdir('kmsn-')
        tpm = Swtpm(root)
        tpm.start()
        notify_path = os.path.join(root, 'notify.sock')
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(20)
        kms_path = os.path.join(root, 'kms.sock')
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(kms_path)
        listener.listen(16)
        metrics = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        metrics.bind(('127.0.0.1', 0))
        metrics.listen(16)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, LISTEN_FDS='2',
                   LISTEN_FDNAMES='kms:metrics')
        # LISTEN_PID must be the daemon's own pid, and the sockets fds 3 and
        # 4: exec from a shell.
        cmd = 'LISTEN_PID=$$ exec "$0" "$@" 3<&%d 4<&%d' % (listener.fileno(), metrics.fileno())
        log = os.path.join(root, 'log')
        p = subprocess.Popen(['sh', '-c', cmd, tpm2_kms(), 'serve', '--tcti', tpm.tcti,
                              '--state-dir', os.path.join(root, 'state'),
                              '--listen', os.path.join(root, 'unused.sock'),
                              '--socket-mode', '0660'],
                             env=env, pass_fds=(listener.fileno(), metrics.fileno()),
                             stderr=open(log, 'wb'))
        try:
            messages = []
            while not any('READY=1' in m for m in messages):
                messages.append(notify.recv(4096).decode())
            # Ready means the passed socket answers; the first Status waits
            # for the keys and says ok.
            c = Kms('unix:' + kms_path)
            self.assertEqual(c.status().healthz, 'ok')
            c.close()
            self.assertFalse(os.path.exists(os.path.join(root, 'unused.sock')))
            url = 'http://127.0.0.1:%d/metrics' % metrics.getsockname()[1]
            self.assertIn('tpm2kms_tpm_up 1', urllib.request.urlopen(url, timeout=5).read()
                          .decode())
            # systemd made the socket: --socket-mode cannot apply, and says so.
            self.assertIn('socket-mode and socket-group do not apply to the socket systemd '
                          'passed', open(log).read())
            # The log names the socket served, not --listen.
            self.assertIn('serving KMS on %s (socket passed by the service manager)' % kms_path,
                          open(log).read())
            self.assertNotIn('unused.sock', open(log).read())
            p.send_signal(signal.SIGTERM)
            while not any('STOPPING=1' in m for m in messages):
                messages.append(notify.recv(4096).decode())
            self.assertEqual(p.wait(15), 0)
            self.assertTrue(any(m.startswith('STATUS=') or '\nSTATUS=' in m for m in messages))
            print('notifications: %r' % messages)
        finally:
            if p.poll() is None:
                p.kill()
            tpm.kill()
            notify.close()
            listener.close()
            metrics.close()
            shutil.rmtree(root, ignore_errors=True)

    def test_passed_sockets_must_be_ours(self):
        root = tempdir('kmsn-')
        self.addCleanup(shutil.rmtree, root, True)
        tpm = Swtpm(root)
        tpm.start()
        self.addCleanup(tpm.kill)
        a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        a.bind(os.path.join(root, 'a.sock'))
        a.listen(1)
        b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        b.bind(('0.0.0.0', 0))
        b.listen(1)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        for names, why in (('kms:other', 'fd 4 is named "other", not one of ours'),
                           ('metrics:kms', 'fd 4 (kms) is not a listening Unix stream socket'),
                           ('kms:metrics', 'the passed socket is not on a loopback address')):
            r = subprocess.run(['sh', '-c', 'LISTEN_PID=$$ exec "$0" "$@" 3<&%d 4<&%d' % (
                a.fileno(), b.fileno()), tpm2_kms(), 'serve', '--tcti', tpm.tcti,
                '--state-dir', os.path.join(root, 'state')],
                env=dict(os.environ, LISTEN_FDS='2', LISTEN_FDNAMES=names),
                pass_fds=(a.fileno(), b.fileno()), capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(why, r.stderr)
        # Two sockets named kms (a drop-in that forgot the empty
        # ListenStream=): the first listened and was never accepted, calls
        # hung to their deadline. Now a permanent start error.
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.bind(os.path.join(root, 'c.sock'))
        c.listen(1)
        self.addCleanup(c.close)
        r = subprocess.run(['sh', '-c', 'LISTEN_PID=$$ exec "$0" "$@" 3<&%d 4<&%d' % (
            a.fileno(), c.fileno()), tpm2_kms(), 'serve', '--tcti', tpm.tcti,
            '--state-dir', os.path.join(root, 'state')],
            env=dict(os.environ, LISTEN_FDS='2', LISTEN_FDNAMES='kms:kms'),
            pass_fds=(a.fileno(), c.fileno()), capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn('fds 3 and 4 are both named "kms"', r.stderr)

    @staticmethod
    def _serve_notified(root, tcti, state):
        """serve with a NOTIFY_SOCKET of ours: (process, notifications
        socket, listening path)."""
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(os.path.join(root, 'notify.sock'))
        notify.settimeout(30)
        sock = os.path.join(root, 'kms.sock')
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(root, 'notify.sock'))
        p = subprocess.Popen([tpm2_kms(), 'serve', '--tcti', tcti, '--state-dir', state,
                              '--listen', sock], env=env,
                             stderr=open(os.path.join(root, 'log'), 'ab'))
        return p, notify, sock

    def _provisioned(self):
        """A temporary directory, a running swtpm and a state directory
        provisioned on it."""
        root = tempdir('kmsn-')
        self.addCleanup(shutil.rmtree, root, True)
        tpm = Swtpm(root)
        tpm.start()
        self.addCleanup(tpm.kill)
        state = os.path.join(root, 'state')
        run_cli('init', '--tcti', tpm.tcti, '--state-dir', state)
        return root, tpm, state

    @staticmethod
    def _until(notify, pred):
        got = []
        while not any(pred(m) for m in got):
            got.append(notify.recv(4096).decode())
        return got

    def test_ready_without_the_tpm_and_healthy_when_it_comes(self):
        # A late TPM used to hold READY=1 back until systemd killed the
        # start after 90 s (and `systemctl restart` blocked as long).
        root, tpm, state = self._provisioned()
        tpm.kill()
        p, notify, sock = self._serve_notified(root, tpm.tcti, state)
        self.addCleanup(notify.close)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        got = self._until(notify, lambda m: 'READY=1' in m)
        ready = [m for m in got if 'READY=1' in m][0]
        self.assertIn('STATUS=serving; waiting for the TPM', ready)
        c = Kms('unix:' + sock)
        self.assertNotEqual(c.status(timeout=15).healthz, 'ok')
        tpm.start()
        self._until(notify, lambda m: m == 'STATUS=serving KMS v2')
        self.assertEqual(c.status().healthz, 'ok')
        c.close()
        p.terminate()
        self.assertEqual(p.wait(15), 0)

    def test_status_follows_the_tpm_health(self):
        # STATUS= said "serving KMS v2" after the TPM became unreachable.
        root, tpm, state = self._provisioned()
        p, notify, sock = self._serve_notified(root, tpm.tcti, state)
        self.addCleanup(notify.close)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        self._until(notify, lambda m: m == 'STATUS=serving KMS v2')
        tpm.kill()
        got = self._until(notify, lambda m: m.startswith('STATUS=serving; not healthy:'))
        self.assertIn('STATUS=serving; not healthy: tpm: unreachable', got)
        tpm.start()
        self._until(notify, lambda m: m == 'STATUS=serving KMS v2')
        p.terminate()
        self.assertEqual(p.wait(15), 0)

    def test_no_stopping_for_a_start_that_never_got_ready(self):
        # The socket cannot be bound (a regular file is in the way): the
        # start fails after the TPM and the keys are set up. It sent
        # STOPPING=1 before any READY=1.
        root, tpm, state = self._provisioned()
        with open(os.path.join(root, 'kms.sock'), 'w'):
            pass
        p, notify, sock = self._serve_notified(root, tpm.tcti, state)
        self.addCleanup(notify.close)
        self.assertEqual(p.wait(30), 78)
        got = self._until(notify, lambda m: m.startswith('STATUS=stopped'))
        self.assertFalse([m for m in got if 'STOPPING=1' in m or 'READY=1' in m], got)

    def test_permanent_errors_exit_78_with_the_reason(self):
        # A wrong TPM or damaged state used to exit 1, and Restart= started
        # the daemon again every 2 s for ever. Now they exit 78 (which the
        # unit's RestartPreventExitStatus= names) with STATUS= saying why;
        # a TPM that is merely absent stays a failure worth a restart.
        root, tpm, state = self._provisioned()
        other = Swtpm(os.path.join(root, 'other'))
        other.start()
        self.addCleanup(other.kill)
        damaged = os.path.join(root, 'damaged')
        shutil.copytree(state, damaged)
        with open(os.path.join(damaged, 'state'), 'a') as f:
            f.write('nonsense line\n')
        nowhere = 'swtpm:path=' + os.path.join(root, 'no-tpm.sock')
        for tcti, st, code, why in (
                (other.tcti, state, 78, 'stopped, not restarting: '),
                (tpm.tcti, damaged, 78, 'stopped, not restarting: '),
                (nowhere, os.path.join(root, 'fresh'), 1, 'stopped: cannot provision')):
            p, notify, sock = self._serve_notified(root, tcti, st)
            try:
                self.assertEqual(p.wait(30), code, (tcti, st))
                got = self._until(notify, lambda m: m.startswith('STATUS=stopped'))
            finally:
                notify.close()
                os.unlink(os.path.join(root, 'notify.sock'))
            final = [m for m in got if m.startswith('STATUS=stopped')][0]
            self.assertTrue(final.startswith('STATUS=' + why), final)
            # A start that never got ready does not say it is stopping.
            self.assertFalse([m for m in got if 'STOPPING=1' in m], got)
            self.assertNotIn('\n', final)
            print('exit %d, %s' % (code, final))
        # Operator-only errors exited 1 and were restarted for ever: another
        # admin key than the state's, --listen that is no Unix socket
        # address or is too long for one, a regular file at the socket path.
        run_cli('init', '--tcti', tpm.tcti, '--state-dir', state, '--admin-key',
                make_admin(root, 'admin'))
        other_admin = make_admin(root, 'other-admin')
        regular = os.path.join(root, 'regular')
        with open(regular, 'w'):
            pass
        for extra, why in ((['--admin-key', other_admin], 'another admin key'),
                           (['--listen', 'tcp://127.0.0.1:1'], 'not a Unix socket address'),
                           (['--listen', os.path.join(root, 'x' * 120)], 'File name too long'),
                           (['--listen', regular], 'is not a socket; refusing')):
            r = subprocess.run([tpm2_kms(), 'serve', '--tcti', tpm.tcti, '--state-dir', state] +
                               extra, capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 78, (extra, r.stderr))
            self.assertIn(why, r.stderr)

    def test_socket_activation_fd_must_be_a_listening_socket(self):
        root = tempdir('kmsn-')
        r, w = os.pipe()
        env = dict(os.environ, LISTEN_FDS='1')
        p = subprocess.run(['sh', '-c', 'LISTEN_PID=$$ exec "$0" "$@" 3<&%d' % r, tpm2_kms(),
                            'serve', '--tcti', 'swtpm:path=/nonexistent',
                            '--state-dir', os.path.join(root, 'state')],
                           env=env, pass_fds=(r,), capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 78)   # a permanent error: not restarted
        self.assertIn('not a listening Unix stream socket', p.stderr)
        os.close(r)
        os.close(w)
        shutil.rmtree(root)


class Observability(unittest.TestCase):
    def setUp(self):
        self.root = tempdir('kmsm-')
        self.tpm = Swtpm(self.root)
        self.tpm.start()

    def tearDown(self):
        self.tpm.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def test_metrics_scrape_and_promtool(self):
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        d = Daemon(self.root, self.tpm, '--metrics-listen', '127.0.0.1:%d' % port)
        d.start()
        try:
            c = d.client()
            e = c.encrypt(b'seed' * 8)
            c.decrypt(e.ciphertext, e.key_id)
            try:
                c.decrypt(b'junk' * 30, e.key_id)
            except Exception:
                pass
            url = 'http://127.0.0.1:%d/metrics' % port
            with urllib.request.urlopen(url, timeout=5) as r:
                self.assertEqual(r.status, 200)
                self.assertIn('text/plain; version=0.0.4', r.headers['Content-Type'])
                text = r.read().decode()
            promtool = subprocess.run(['promtool', 'check', 'metrics'], input=text,
                                      capture_output=True, text=True)
            self.assertEqual(promtool.returncode, 0, promtool.stdout + promtool.stderr)
            for want in ('tpm2kms_requests_total{api="v2",method="Encrypt",code="0"} 1',
                         'tpm2kms_requests_total{api="v2",method="Decrypt",code="3"} 1',
                         'tpm2kms_request_duration_seconds_bucket{api="v2",method="Decrypt",le="1e-05"}',
                         'tpm2kms_tpm_operation_duration_seconds_count{op="counter"} 1',
                         'tpm2kms_tpm_command_duration_seconds_count{command="NV_Increment"} 1',
                         'tpm2kms_tpm_command_duration_seconds_count{command="NV_Read"} 1',
                         'tpm2kms_tpm_command_duration_seconds_count{command="Unseal"} 1',
                         'tpm2kms_tpm_up 1', 'tpm2kms_nonce_value 1',
                         'tpm2kms_kek_generation_info{generation="1",key_id="%s",state="write"} 1'
                         % e.key_id,
                         'tpm2kms_decrypts_total{generation="1"} 1',
                         'tpm2kms_open_connections 1', 'tpm2kms_build_info{version='):
                self.assertIn(want, text)
            c.close()
            with self.assertRaises(urllib.error.HTTPError) as cm:
                urllib.request.urlopen('http://127.0.0.1:%d/other' % port, timeout=5)
            self.assertEqual(cm.exception.code, 404)
            # TPM trouble shows up.
            self.tpm.kill(9)
            wait_until(lambda: 'tpm2kms_tpm_up 0' in urllib.request.urlopen(
                url, timeout=5).read().decode(), 'tpm_up 0', timeout=10)
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            self.assertRegex(text, r'tpm2kms_tpm_errors_total\{op="probe",error="[^"]+"\} \d+')
        finally:
            d.stop()

    def test_idle_clients_cannot_starve_the_metrics(self):
        # Any local user could hold all 16 client slots with idle
        # connections: every scrape was refused. Now a new client takes the
        # slot of the oldest one still waiting.
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        d = Daemon(self.root, self.tpm, '--metrics-listen', '127.0.0.1:%d' % port)
        d.start()
        idle = []
        try:
            for _ in range(16):
                idle.append(socket.create_connection(('127.0.0.1', port)))
            url = 'http://127.0.0.1:%d/metrics' % port
            for _ in range(5):
                body = urllib.request.urlopen(url, timeout=5).read().decode()
                self.assertIn('tpm2kms_tpm_up', body)
        finally:
            for i in idle:
                i.close()
            d.stop()

    def test_metrics_refuses_non_loopback(self):
        r = run_cli('serve', '--tcti', self.tpm.tcti, '--state-dir',
                    os.path.join(self.root, 'state'), '--listen',
                    os.path.join(self.root, 'k.sock'), '--metrics-listen', '0.0.0.0:9464',
                    check=False)
        self.assertEqual(r.returncode, 78)
        self.assertIn('only loopback', r.stderr)

    def hostile_uid_call(self, d):
        """An Encrypt whose uid carries a newline, a forged log line, a
        quote, a control byte and bytes that are not UTF-8, sent as raw
        protobuf (a client library would refuse to)."""
        uid = b'evil\n2026-12-01T00:00:00.000Z error tpm: forged line\x01"\xff\xc3('
        req = b'\x0a\x01x' + b'\x12' + bytes([len(uid)]) + uid
        c = d.client()
        c.raw('/v2.KeyManagementService/Encrypt', req)
        c.close()

    def test_log_injection_text(self):
        d = Daemon(self.root, self.tpm)
        d.start()
        self.hostile_uid_call(d)
        d.stop()
        out = d.output()
        self.assertNotRegex(out, r'(?m)^\S+ error tpm: forged')
        line = [l for l in out.splitlines() if 'Encrypt' in l and 'rpc ' in l][0]
        self.assertIn('uid="evil\\x0a2026-12-01T00:00:00.000Z error tpm: forged line'
                      '\\x01\\"\\xff\\xc3("', line)

    def test_log_injection_json(self):
        d = Daemon(self.root, self.tpm, '--log-format', 'json')
        d.start()
        self.hostile_uid_call(d)
        d.stop()
        # Strict UTF-8, then JSON, line by line: every byte is valid.
        with open(os.path.join(self.root, 'serve-1.log'), 'rb') as f:
            raw = f.read().decode('utf-8')
        objs = [json.loads(l) for l in raw.splitlines() if l.strip()]
        rpc = [o for o in objs if o['msg'] == 'rpc' and o['method'].endswith('/Encrypt')]
        self.assertEqual(rpc[0]['uid'], 'evil\n2026-12-01T00:00:00.000Z error tpm: forged line'
                         '\x01"\ufffd\ufffd(')
        self.assertEqual(len([o for o in objs if 'forged' in o.get('msg', '')]), 0)

    def test_json_logs_and_journal_levels(self):
        d = Daemon(self.root, self.tpm, '--log-format', 'json')
        d.start()
        c = d.client()
        c.encrypt(b'x', uid='uid-"quoted"')
        c.close()
        d.stop()
        lines = [l for l in d.output().splitlines() if l.strip()]
        objs = [json.loads(l) for l in lines]           # every line is JSON
        rpc = [o for o in objs if o['msg'] == 'rpc' and o['method'].endswith('/Encrypt')]
        self.assertEqual(rpc[0]['uid'], 'uid-"quoted"')
        self.assertEqual(rpc[0]['grpc_status'], 0)
        self.assertRegex(rpc[0]['key_id'], r'^tpm2-kms-g1-')
        self.assertIn('duration_us', rpc[0])

        # The journal is recognised by stderr's device and inode, as
        # systemd documents; a mere JOURNAL_STREAM (a shell started by a
        # service inherits it) changes nothing.
        for journal in (True, False):
            with open(os.path.join(self.root, 'stderr'), 'w+') as err:
                st = os.fstat(err.fileno())
                env = dict(os.environ, JOURNAL_STREAM='%d:%d' % (st.st_dev,
                                                                 st.st_ino + (not journal)))
                subprocess.run([tpm2_kms(), 'keys', '--state-dir',
                                os.path.join(self.root, 'nope')], stderr=err, env=env)
                err.seek(0)
                text = err.read()
            if journal:
                # The journal records time and level: the line has neither.
                self.assertTrue(text.startswith('<3>'), text)
                self.assertNotRegex(text, r'^<3>(\d{4}-\d\d-\d\dT\S+ )?error ')
            else:
                self.assertRegex(text, r'^\d{4}-\d\d-\d\dT[0-9:.]+Z error ', text)


if __name__ == '__main__':
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
