#!/usr/bin/python3
"""tpm2-kms end to end: the daemon and CLI on a private swtpm, driven by an
independent gRPC client (Debian's python3-grpcio) the way kube-apiserver
drives a KMS v2 plugin."""

import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
import unittest

import grpc

from kmsclient import Daemon, Kms, Swtpm, run_cli, tempdir, tpm2_kms, wait_until

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def counter_of(envelope):
    return int.from_bytes(envelope[37:45], 'big')


def generation_of(envelope):
    return int.from_bytes(envelope[1:5], 'big')


class PluginTest(unittest.TestCase):
    def setUp(self):
        self.root = tempdir('kmsp-')
        self.tpm = Swtpm(self.root)
        self.tpm.start()
        self.daemon = Daemon(self.root, self.tpm)

    def tearDown(self):
        if self.daemon.proc:
            self.daemon.stop()
        self.tpm.kill()
        result = self._outcome.result
        if any(t is self for t, _ in result.failures + result.errors):
            # Keep the evidence: the daemon's logs go with the failure.
            sys.stderr.write('--- daemon log (%s) ---\n%s\n' % (self.root,
                                                               self.daemon.output()[-6000:]))
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def cli(self, *args, **kw):
        return run_cli(*args, **kw)

    def state_args(self):
        return ['--state-dir', self.daemon.state_dir]

    def tpm_args(self):
        return ['--tcti', self.tpm.tcti, '--state-dir', self.daemon.state_dir]


class RoundTrip(PluginTest):
    def test_all_apis_round_trip(self):
        self.daemon.start()
        c = self.daemon.client()
        st = c.status()
        self.assertEqual((st.version, st.healthz), ('v2', 'ok'))
        self.assertRegex(st.key_id, r'^tpm2-kms-g1-[0-9a-f]{32}$')
        seed = os.urandom(32)
        a = c.encrypt(seed)
        b = c.encrypt(seed)
        self.assertEqual(a.key_id, st.key_id)
        self.assertLess(len(a.ciphertext), 1024)
        self.assertEqual(len(a.ciphertext), 32 + 65)
        self.assertNotEqual(a.ciphertext, b.ciphertext)
        self.assertGreater(counter_of(b.ciphertext), counter_of(a.ciphertext))
        self.assertEqual(c.decrypt(a.ciphertext, a.key_id).plaintext, seed)
        self.assertEqual(c.decrypt(b.ciphertext, b.key_id).plaintext, seed)

        self.assertEqual(c.status(pkg='v2beta1').version, 'v2beta1')
        e = c.encrypt(seed, pkg='v2beta1')
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id, pkg='v2beta1').plaintext, seed)
        # v1beta1 has no key_id: the envelope's generation picks the key.
        v = c.v1_version()
        self.assertEqual((v.version, v.runtime_name), ('v1beta1', 'tpm2-kms'))
        e1 = c.v1_encrypt(seed)
        self.assertEqual(c.v1_decrypt(e1.cipher).plain, seed)
        self.assertEqual(c.v1_decrypt(a.ciphertext).plain, seed)
        self.assertEqual(c.decrypt(e1.cipher, st.key_id).plaintext, seed)
        c.close()

    def test_like_kube_apiserver(self):
        # kube-apiserver 1.27-1.31: raw socket path as :authority, 3 s
        # deadlines, Status then Encrypt of a fresh 32-byte seed, then
        # Decrypt with the key_id and annotations it stored.
        self.daemon.start()
        c = self.daemon.client(authority=self.daemon.sock)
        st = c.status(timeout=3)
        self.assertEqual(st.healthz, 'ok')
        seed = os.urandom(32)
        e = c.encrypt(seed, uid='6b1f0a4e-8d2c-4a55-9e51-0c6f1d7f2a10', timeout=3)
        self.assertEqual(e.key_id, st.key_id)
        self.assertTrue(0 < len(e.ciphertext) <= 1024)
        for k in e.annotations:
            self.assertIn('.', k)   # fully qualified names, if any
        d = c.decrypt(e.ciphertext, e.key_id, uid='0c6f1d7f', timeout=3,
                      annotations=dict(e.annotations))
        self.assertEqual(d.plaintext, seed)
        c.close()
        self.assertIn('uid="6b1f0a4e-8d2c-4a55-9e51-0c6f1d7f2a10" status=0', self.daemon.output())

    def test_rejections_are_generic(self):
        self.daemon.start()
        c = self.daemon.client()
        e = c.encrypt(b's' * 32)
        bad = []
        flipped = bytearray(e.ciphertext)
        flipped[60] ^= 1
        bad.append((bytes(flipped), e.key_id))
        bad.append((e.ciphertext[:-1], e.key_id))
        wrong_gen = bytearray(e.ciphertext)
        wrong_gen[4] = 9
        bad.append((bytes(wrong_gen), e.key_id))                          # unknown generation
        wrong_ver = bytearray(e.ciphertext)
        wrong_ver[0] = 2
        bad.append((bytes(wrong_ver), e.key_id))
        bad.append((b'\x01' * 3, e.key_id))
        for ct, kid in bad:
            with self.assertRaises(grpc.RpcError) as cm:
                c.decrypt(ct, kid)
            self.assertEqual(cm.exception.code(), INVALID)
            self.assertEqual(cm.exception.details(), 'invalid ciphertext')
        # A key_id this node has no generation for (retired, not imported
        # yet, another cluster's) is named as such, from the key_id alone:
        # the same answer whatever the ciphertext.
        for ct in (e.ciphertext, bytes(flipped), b'\x01' * 3):
            with self.assertRaises(grpc.RpcError) as cm:
                c.decrypt(ct, 'tpm2-kms-g1-' + '0' * 32)
            self.assertEqual(cm.exception.code(), INVALID)
            self.assertTrue(cm.exception.details().startswith('unknown key_id:'),
                            cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            c.v1_decrypt(bytes(flipped))
        self.assertEqual((cm.exception.code(), cm.exception.details()),
                         (INVALID, 'invalid ciphertext'))
        for pt in (b'', b'x' * 959):
            with self.assertRaises(grpc.RpcError) as cm:
                c.encrypt(pt)
            self.assertEqual(cm.exception.code(), INVALID)
        self.assertEqual(len(c.encrypt(b'x' * 958).ciphertext), 1023)
        c.close()


class OneDaemonPerStateDirectory(PluginTest):
    def test_second_daemon_refuses_naming_the_first(self):
        # Two daemons on one state directory (a mis-set unit, a second
        # container) drew the same nonce counter values; the second must
        # not start.
        self.daemon.start()
        second = Daemon(os.path.join(self.root, 'second'), self.tpm,
                        state_dir=self.daemon.state_dir)
        os.makedirs(second.root)
        p = subprocess.Popen([tpm2_kms(), 'serve', '--listen', second.sock, '--tcti',
                              self.tpm.tcti, '--state-dir', self.daemon.state_dir],
                             stderr=subprocess.PIPE, text=True)
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            self.fail('a second daemon started on the same state directory')
        self.assertEqual(p.returncode, 1)
        self.assertIn('another tpm2-kms serve (pid %d) uses' % self.daemon.proc.proc.pid, err)
        self.assertFalse(os.path.exists(second.sock))
        self.assertEqual(self.daemon.healthz(), 'ok')
        # Once the first is gone, a daemon starts there again.
        self.daemon.stop()
        self.daemon.start()


class Restarts(PluginTest):
    def test_daemon_and_swtpm_restarts(self):
        self.daemon.start()
        c = self.daemon.client()
        made = [(s, c.encrypt(s)) for s in (os.urandom(32) for _ in range(20))]
        c.close()
        last = counter_of(made[-1][1].ciphertext)

        self.assertEqual(self.daemon.stop(), 0)
        self.assertFalse(os.path.exists(self.daemon.sock))
        self.daemon.start()
        c = self.daemon.client()
        for seed, e in made:
            self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, seed)
        e = c.encrypt(b'after daemon restart')
        self.assertGreater(counter_of(e.ciphertext), last)
        last = counter_of(e.ciphertext)
        c.close()

        # swtpm dies uncleanly and comes back: no restart of the daemon.
        self.tpm.kill(9)
        self.tpm.start()
        c = self.daemon.client()
        wait_until(lambda: self._encrypt_ok(c), 'encrypt after swtpm restart', timeout=15)
        e = c.encrypt(b'after swtpm restart')
        self.assertGreater(counter_of(e.ciphertext), last)
        c.close()

    @staticmethod
    def _encrypt_ok(c):
        try:
            c.encrypt(b'probe', timeout=2)
            return True
        except grpc.RpcError:
            return False

    def test_swtpm_killed_while_serving(self):
        self.daemon.start()
        c = self.daemon.client()
        e = c.encrypt(b'seed')
        self.tpm.kill(9)
        t0 = time.monotonic()
        wait_until(lambda: self.daemon.healthz() != 'ok', 'unhealthy', timeout=10)
        healthz = self.daemon.healthz()
        self.assertIn('tpm', healthz)
        # Decrypt needs no TPM.
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'seed')
        with self.assertRaises(grpc.RpcError) as cm:
            c.encrypt(b'seed')
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn('tpm', cm.exception.details())
        st = run_cli('status', '--listen', self.daemon.sock, check=False)
        self.assertEqual(st.returncode, 1)
        self.assertIn('healthz: tpm', st.stdout)

        self.tpm.start()
        wait_until(lambda: self.daemon.healthz() == 'ok', 'healthy again', timeout=10)
        self.assertEqual(c.decrypt(c.encrypt(b'again').ciphertext,
                                   c.status().key_id).plaintext, b'again')
        c.close()
        print('unhealthy→healthy cycle took %.1f s' % (time.monotonic() - t0))


class Rotation(PluginTest):
    def test_rotate_while_serving(self):
        self.daemon.start()
        c = self.daemon.client()
        old_id = c.status().key_id
        old = c.encrypt(b'old seed')
        self.assertEqual(c.decrypt(old.ciphertext, old.key_id).plaintext, b'old seed')

        r = self.cli('rotate', *self.tpm_args())
        new_id = r.stdout.strip()
        self.assertRegex(new_id, r'^tpm2-kms-g2-[0-9a-f]{32}$')
        t0 = time.monotonic()
        wait_until(lambda: c.status().key_id == new_id, 'Status reports the new key_id',
                   timeout=2)
        print('new key_id visible after %.3f s' % (time.monotonic() - t0))
        new = c.encrypt(b'new seed')
        self.assertEqual(new.key_id, new_id)
        self.assertEqual(generation_of(new.ciphertext), 2)
        self.assertEqual(c.decrypt(old.ciphertext, old_id).plaintext, b'old seed')
        self.assertEqual(c.decrypt(new.ciphertext, new_id).plaintext, b'new seed')

        # First use of a generation is recorded at once, later counts
        # within a second.
        wait_until(lambda: '  2\n2 ' in self.cli('keys', *self.state_args()).stdout,
                   'decrypt counts', timeout=3)
        keys = self.cli('keys', *self.state_args()).stdout
        self.assertRegex(keys, r'\n1 +%s +\S+ +decrypt-only +none +- +loaded +2\n' % old_id)
        self.assertRegex(keys, r'\n2 +%s +\S+ +write +none +- +loaded +1\n' % new_id)

        r = self.cli('retire', *self.state_args(), '2', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('write key', r.stderr)
        r = self.cli('retire', *self.state_args(), '1', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('Decrypt calls since the daemon', r.stderr)
        self.cli('retire', *self.state_args(), '1', '--force')
        wait_until(lambda: 'generation 1 retired' in self.daemon.output(), 'retire seen')
        with self.assertRaises(grpc.RpcError) as cm:
            c.decrypt(old.ciphertext, old_id)
        self.assertEqual(cm.exception.code(), INVALID)
        self.assertNotIn(old_id, self.cli('keys', *self.state_args()).stdout)
        c.close()

    def test_sighup_reload(self):
        self.daemon.start()
        r = self.cli('rotate', *self.tpm_args())
        new_id = r.stdout.strip()
        self.daemon.proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.daemon.client().status().key_id == new_id, 'reload', timeout=5)

    def test_kill_during_rotation(self):
        self.daemon.start()
        rng = random.Random(4242)
        made = []
        c = self.daemon.client()
        for i in range(20):
            made.append((b'seed %d' % i, c.encrypt(b'seed %d' % i)))
            victim = rng.choice(('rotate', 'daemon'))
            rot = subprocess.Popen([tpm2_kms(), 'rotate'] + self.tpm_args(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0, 0.03))   # a random point, not a readiness wait
            if victim == 'rotate':
                rot.kill()
                rot.wait()
            else:
                self.daemon.stop(signal.SIGKILL)
                rot.wait()
                self.daemon.start()
                c.close()
                c = self.daemon.client()
            # The state directory always loads...
            self.cli('keys', *self.state_args())
            made.append((b'after %d' % i, c.encrypt(b'after %d' % i)))
        c.close()
        # ... and nothing that ever encrypted is lost, also after a restart.
        self.daemon.stop()
        self.daemon.start()
        c = self.daemon.client()
        for seed, e in made:
            self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, seed)
        c.close()
        # The next rotation sweeps what the killed ones left behind.
        self.cli('rotate', *self.tpm_args())
        st = open(os.path.join(self.daemon.state_dir, 'state')).read()
        for f in os.listdir(self.daemon.state_dir):
            if f.startswith('gen-'):
                self.assertIn(' file %s ' % f, st)
            self.assertFalse(f.startswith('.') and '.tmp.' in f and
                             not f.startswith('.decrypt-counts'), f)
        print('generations after 20 killed rotations: %d' % st.count('\ngeneration '))


class OwnerPassword(PluginTest):
    """A TPM whose owner hierarchy has a password (tpm2_changeauth -c o)
    used to fail init at NV_DefineSpace with no hint and no way to give it."""

    def setUp(self):
        super().setUp()
        self.env = dict(os.environ, TPM2TOOLS_TCTI=self.tpm.tcti)
        self.pw = os.path.join(self.root, 'owner-auth')
        with open(self.pw, 'wb') as f:
            f.write(b'Owner pass\n')        # the bytes are the password, as file: reads them
        os.chmod(self.pw, 0o600)
        subprocess.run(['tpm2_changeauth', '-c', 'o', 'file:' + self.pw], env=self.env,
                       check=True, capture_output=True)
        # How the guide says to tell.
        caps = subprocess.run(['tpm2_getcap', 'properties-variable'], env=self.env, check=True,
                              capture_output=True, text=True).stdout
        self.assertRegex(caps, r'ownerAuthSet: +1\b')

    def tpm_has_counter(self):
        r = subprocess.run(['tpm2_nvreadpublic'], env=self.env, capture_output=True, text=True,
                           check=True)
        return '0x1800101' in r.stdout

    def test_refused_without_it_with_the_commands_to_run(self):
        r = run_cli('init', *self.tpm_args(), check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('owner hierarchy has a password: give it with --owner-auth-file', r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.daemon.state_dir, 'state')))
        # The commands the error gives, run as written: then init needs no
        # password, and nothing of ours ever saw it.
        commands = r.stderr.split('provision it yourself: ', 1)[1].strip()
        subprocess.run(['sh', '-ec', commands.replace('FILE', self.pw)], cwd=self.root,
                       env=self.env, check=True, capture_output=True)
        self.assertTrue(self.tpm_has_counter())
        key_id = self.cli('init', *self.tpm_args()).stdout.strip()
        self.daemon.start()
        c = self.daemon.client()
        self.assertEqual(c.encrypt(b'x').key_id, key_id)
        c.close()

    def test_from_a_file_or_a_credential(self):
        wrong = os.path.join(self.root, 'wrong')
        with open(wrong, 'wb') as f:
            f.write(b'Owner pass')          # no newline: another password
        os.chmod(wrong, 0o600)
        r = run_cli('init', *self.tpm_args(), '--owner-auth-file', wrong, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('the TPM refused the owner password in %s' % wrong, r.stderr)
        # serve: a refused authorization is not cured by restarting.
        r = run_cli('serve', *self.tpm_args(), '--listen', self.daemon.sock,
                    '--owner-auth-file', wrong, check=False)
        self.assertEqual(r.returncode, 78, r.stderr)
        for bad, why in ((os.path.join(self.root, 'none'), 'No such file'),
                         (self.root, 'not a regular file')):
            r = run_cli('init', *self.tpm_args(), '--owner-auth-file', bad, check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn(why, r.stderr)
        with open(wrong, 'wb') as f:
            f.write(b'x' * 65)
        r = run_cli('init', *self.tpm_args(), '--owner-auth-file', wrong, check=False)
        self.assertIn('longer than 64 bytes', r.stderr)
        self.assertFalse(self.tpm_has_counter())
        # systemd's LoadCredential=owner-auth:FILE, as serve sees it.
        creds = os.path.join(self.root, 'creds')
        os.mkdir(creds, 0o700)
        shutil.copy(self.pw, os.path.join(creds, 'owner-auth'))
        self.daemon.env = {'CREDENTIALS_DIRECTORY': creds}
        self.daemon.start()
        self.assertTrue(self.tpm_has_counter())
        self.assertNotIn('Owner pass', self.daemon.output())
        c = self.daemon.client()
        e = c.encrypt(b'with the owner password')
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'with the owner password')
        c.close()
        # The owner password is still the TPM's: nothing changed it.
        subprocess.run(['tpm2_changeauth', '-c', 'o', '-p', 'file:' + self.pw, 'file:' + self.pw],
                       env=self.env, check=True, capture_output=True)


    def test_the_file_is_read_only_when_something_must_be_created(self):
        # The guide has the owner password's file removed once provisioning
        # is done; with owner-auth-file left in the configuration every
        # later start then exited 1, for ever.
        conf = os.path.join(self.root, 'tpm2-kms.conf')
        with open(conf, 'w') as f:
            f.write('owner-auth-file %s\n' % self.pw)
        self.cli('init', *self.tpm_args(), '--config', conf)
        os.unlink(self.pw)
        self.cli('init', *self.tpm_args(), '--config', conf)
        self.daemon.extra = ['--config', conf]
        self.daemon.start()
        c = self.daemon.client()
        self.assertEqual(c.status().healthz, 'ok')
        c.close()


class Provisioning(PluginTest):
    def test_init_is_idempotent_and_files_are_private(self):
        a = self.cli('init', *self.tpm_args()).stdout.strip()
        b = self.cli('init', *self.tpm_args()).stdout.strip()
        self.assertEqual(a, b)
        d = self.daemon.state_dir
        self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o700)
        for f in os.listdir(d):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode), 0o600, f)
        pem = open(os.path.join(d, 'gen-000001.pem')).read()
        self.assertTrue(pem.startswith('-----BEGIN TSS2 PRIVATE KEY-----'))

    def test_concurrent_first_start(self):
        procs = [subprocess.Popen([tpm2_kms(), 'init'] + self.tpm_args(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outs = [p.communicate(timeout=60) for p in procs]
        self.assertEqual([p.returncode for p in procs], [0] * 4, outs)
        self.assertEqual(len({o[0] for o in outs}), 1)   # one key_id for all

    def test_wrong_srk_refused(self):
        self.cli('init', *self.tpm_args())
        other = Swtpm(os.path.join(self.root, 'other'))
        other.start()
        try:
            r = run_cli('serve', '--tcti', other.tcti, '--state-dir', self.daemon.state_dir,
                        '--listen', os.path.join(self.root, 'x.sock'), check=False)
            self.assertEqual(r.returncode, 78)      # serve: permanent, not restarted
            self.assertIn('storage root key is not the one', r.stderr)
            r = run_cli('rotate', '--tcti', other.tcti, '--state-dir', self.daemon.state_dir,
                        check=False)
            self.assertEqual(r.returncode, 1)
        finally:
            other.kill()

    def test_reuses_rsa_srk_from_swtpm_setup(self):
        self.tpm.kill()
        self.tpm = Swtpm(os.path.join(self.root, 'spk'), setup_spk=True)
        self.tpm.start()
        self.daemon = Daemon(self.root, self.tpm)
        self.daemon.start()
        self.assertNotIn('created the SRK', self.daemon.output())
        c = self.daemon.client()
        e = c.encrypt(b'rsa parent')
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'rsa parent')
        c.close()

    def test_state_dir_permissions_refused(self):
        self.cli('init', *self.tpm_args())
        os.chmod(self.daemon.state_dir, 0o777)
        r = run_cli('serve', '--tcti', self.tpm.tcti, '--state-dir', self.daemon.state_dir,
                    '--listen', self.daemon.sock, check=False)
        self.assertEqual(r.returncode, 78)
        self.assertIn('world-writable', r.stderr)
        os.chmod(self.daemon.state_dir, 0o700)

    def test_cli_errors(self):
        r = run_cli('keys', '--state-dir', os.path.join(self.root, 'missing'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('missing', r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        r = run_cli('rotate', '--bogus', check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn('unknown option --bogus', r.stderr)
        r = run_cli('init', '--tcti', 'swtpm:path=' + os.path.join(self.root, 'no.sock'),
                    '--state-dir', self.daemon.state_dir, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('TCTI', r.stderr)
        self.assertIn('no.sock does not exist: is the TPM simulator running?', r.stderr)
        # Under systemd (INVOCATION_ID set), a socket under /tmp is hidden by
        # PrivateTmp=yes: the error says so rather than leave a restart loop
        # to puzzle over.
        r = run_cli('init', '--tcti', 'swtpm:path=/tmp/tpm2-kms-test-absent/tpm.sock',
                    '--state-dir', self.daemon.state_dir, check=False,
                    env=dict(os.environ, INVOCATION_ID='0123'))
        self.assertIn('this service has its own /tmp (PrivateTmp=yes); put the TPM simulator\'s '
                      'socket under /run', r.stderr)
        r = run_cli('init', '--tcti', 'device:/dev/tpmrm-absent', '--state-dir',
                    self.daemon.state_dir, check=False)
        self.assertIn('there is no /dev/tpmrm-absent: no TPM, or its driver is not loaded',
                      r.stderr)
        r = run_cli('status', '--listen', os.path.join(self.root, 'none.sock'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('cannot connect', r.stderr)
        r = run_cli('retire', '--state-dir', self.daemon.state_dir, 'x', check=False)
        self.assertEqual(r.returncode, 2)
        for cmd in ('serve', 'init', 'rotate', 'keys', 'retire', 'status'):
            r = run_cli(cmd, '--help')
            self.assertIn('Usage: tpm2-kms ' + cmd, r.stdout)

    def test_status_command(self):
        self.daemon.start()
        r = run_cli('status', '--listen', 'unix://' + self.daemon.sock)
        self.assertIn('healthz: ok', r.stdout)
        self.assertIn('version: v2', r.stdout)


if __name__ == '__main__':
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
