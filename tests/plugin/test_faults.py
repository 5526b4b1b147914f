#!/usr/bin/python3
"""Faults and security properties of the running plugin: a slow TPM, damaged
and missing state, a full or read-only state filesystem, secrets kept out of
logs and core dumps."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

import grpc

from kmsclient import (Daemon, DelayProxy, Kms, Process, Swtpm, can_connect, run_cli,
                       tempdir, tpm2_kms, wait_until)


BUILD = os.environ.get('TOP_BUILDDIR', os.getcwd())


def read_text(path):
    with open(path) as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def metric(port, name):
    """A gauge's value from the daemon's /metrics, None when unreachable."""
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r'^%s (\S+)$' % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


class Base(unittest.TestCase):
    def setUp(self):
        self.root = tempdir('kmsf-')
        self.tpm = Swtpm(self.root)
        self.tpm.start()
        self.daemon = Daemon(self.root, self.tpm)
        self.mounts = []

    def tearDown(self):
        if self.daemon.proc and self.daemon.proc.alive():
            self.daemon.stop()
        for m in reversed(self.mounts):
            subprocess.run(['umount', '-l', m])
        self.tpm.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def tpm_args(self):
        return ['--tcti', self.daemon.swtpm.tcti, '--state-dir', self.daemon.state_dir]

    def daemon_via_proxy(self, name):
        """self.daemon, reaching the TPM through a DelayProxy (returned)."""
        proxy = DelayProxy(self.tpm.sock, os.path.join(self.root, name))
        self.addCleanup(proxy.close)

        class Via:
            tcti = 'swtpm:path=' + os.path.join(self.root, name)
        self.daemon = Daemon(self.root, Via)
        return proxy

    def started_then_tpm_stopped(self):
        """Starts the daemon, makes one call, then stops swtpm (SIGSTOP: a
        TPM command that never returns); the client."""
        self.daemon.start()
        c = self.daemon.client()
        c.encrypt(b'before')
        self.tpm.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: self.tpm.proc.poll() is None and
                        self.tpm.proc.send_signal(signal.SIGCONT))
        return c

    def tmpfs(self, path, size):
        os.makedirs(path, exist_ok=True)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0700' % size, 'tmpfs', path],
                       check=True)
        self.mounts.append(path)


class SlowTpm(Base):
    def test_deadlines_with_a_slow_tpm(self):
        proxy = self.daemon_via_proxy('slow.sock')
        self.daemon.start()
        c = self.daemon.client()
        e = c.encrypt(b'before')
        proxy.delay = 2.0           # every TPM command now takes 2 s
        pending = c.encrypt(b'during', timeout=1, future=True)
        # Status and Decrypt do not wait behind the TPM.
        for _ in range(5):
            self.assertEqual(c.status(timeout=0.5).healthz, 'ok')
            self.assertEqual(c.decrypt(e.ciphertext, e.key_id, timeout=0.5).plaintext, b'before')
        with self.assertRaises(grpc.RpcError) as cm:
            pending.result()
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        proxy.delay = 0.0
        wait_until(lambda: self._encrypt_ok(c), 'encrypt after the TPM speeds up', timeout=30)
        c.close()

    @staticmethod
    def _encrypt_ok(c):
        try:
            return c.encrypt(b'after', timeout=3).ciphertext
        except grpc.RpcError:
            return False


class Start(Base):
    def test_the_hold_window_starts_after_provisioning(self):
        # The window in which calls wait for the start (10 s) was measured
        # from the loop's clock before provisioning: a first start that
        # provisioned through a slow TPM left held calls a few seconds, and
        # they heard "not loaded yet" while the key was a moment away.
        proxy = self.daemon_via_proxy('slow.sock')
        proxy.delay = 0.6           # provisioning takes about 7 s, the start 5 s
        self.daemon.start(wait_healthy=False)
        c = self.daemon.client()
        self.assertEqual(c.status(timeout=30).healthz, 'ok')
        c.close()
        proxy.delay = 0.0

    def test_calls_during_the_start_wait_for_it(self):
        # kube-apiserver often comes up before the plugin has probed its
        # TPM and unsealed the write key. Calls in that window used to hear
        # "not probed yet" / "not loaded yet", and the apiserver marked the
        # plugin unhealthy. Now they wait for the start (bounded by their
        # own deadline) and are then answered.
        proxy = self.daemon_via_proxy('slow.sock')
        self.daemon.start()
        c = self.daemon.client()
        e = c.encrypt(b'before the restart')
        c.close()
        self.daemon.stop()
        proxy.delay = 0.4           # the start now takes a few seconds
        self.daemon.start(wait_healthy=False)
        # `tpm2-kms status` as a probe right after the start: ok, exit 0.
        probe = subprocess.Popen([tpm2_kms(), 'status', '--listen', self.daemon.sock],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        c = self.daemon.client()
        status = c.status(timeout=30, future=True)
        enc = c.encrypt(b'at once', timeout=30, future=True)
        dec = c.decrypt(e.ciphertext, e.key_id, timeout=30, future=True)
        # A call whose deadline comes first (every command takes 0.4 s: the
        # start takes longer than 1 s) is answered before that deadline,
        # with what the daemon is still waiting for.
        early = c.status(timeout=1).healthz
        self.assertNotEqual(early, 'ok')
        self.assertTrue('not probed yet' in early or 'not loaded yet' in early, early)
        self.assertEqual(status.result().healthz, 'ok')
        self.assertEqual(len(enc.result().ciphertext), 7 + 65)
        self.assertEqual(dec.result().plaintext, b'before the restart')
        out = probe.communicate(timeout=30)[0]
        self.assertEqual(probe.returncode, 0, out)
        self.assertIn('healthz: ok', out)
        proxy.delay = 0.0
        c.close()


    def test_a_silent_tpm_does_not_hold_up_the_start(self):
        # A TPM that accepts the connection and never answers: the start
        # waited in provisioning for ever, before binding its socket or
        # telling systemd it was ready. Now each command at start has the
        # command timeout; past it the state's keys are served, loading
        # when the TPM answers. Status names the stuck command (it said
        # "not probed yet" while the worker connected, unwatched), and
        # SIGTERM answers the calls held meanwhile (they got no gRPC status
        # at all when the grace period ended).
        proxy = self.daemon_via_proxy('slow.sock')
        port = free_port()
        self.daemon.extra = ['--tpm-command-timeout', '1000',
                             '--metrics-listen', '127.0.0.1:%d' % port]
        self.daemon.start()
        self.daemon.stop()
        proxy.delay = 3600.0        # silent from now on
        self.daemon.start(wait_healthy=False)
        self.assertIn('TPM unavailable at start', self.daemon.output())
        c = self.daemon.client()
        self.assertIn('has not answered', c.status(timeout=4).healthz)
        # Too large is said at once, not after the hold (10 s).
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            c.encrypt(b'x' * 65000, timeout=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(cm.exception.details(), 'plaintext larger than 958 bytes')
        self.assertLess(time.monotonic() - t0, 5)
        calls = [c.encrypt(b'held %d' % i, timeout=40, future=True) for i in range(20)]
        calls.append(c.status(timeout=40, future=True))
        wait_until(lambda: metric(port, 'tpm2kms_calls_waiting_for_start') == 21,
                   '21 calls held')
        self.daemon.proc.proc.send_signal(signal.SIGTERM)
        answers = {}
        for f in calls:
            try:
                key = 'OK ' + f.result().healthz
            except grpc.RpcError as e:
                key = '%s: %s' % (e.code().name, e.details())
            answers[key] = answers.get(key, 0) + 1
        self.assertEqual(sum(v for k, v in answers.items() if k.startswith('UNAVAILABLE')),
                         20, answers)
        status = [k for k in answers if k.startswith('OK')]
        self.assertEqual(len(status), 1, answers)
        self.assertRegex(status[0], r'^OK tpm: a command has not answered for \d+ s$')
        self.assertEqual(self.daemon.proc.proc.wait(30), 0, self.daemon.output()[-2000:])
        c.close()

    def test_sigterm_answers_encrypts_queued_behind_a_stuck_command(self):
        # Encrypts waiting behind a TPM command that never returns were cut
        # off at SIGTERM with no gRPC status.
        port = free_port()
        self.daemon.extra = ['--tpm-command-timeout', '1000',
                             '--metrics-listen', '127.0.0.1:%d' % port]
        c = self.started_then_tpm_stopped()
        calls = [c.encrypt(b'q %d' % i, timeout=60, future=True) for i in range(10)]
        wait_until(lambda: metric(port, 'tpm2kms_calls_in_flight') == 10, '10 calls waiting')
        wait_until(lambda: 'has not answered' in (self.daemon.healthz() or ''),
                   'Status to say the TPM is stuck', timeout=15)
        self.daemon.proc.proc.send_signal(signal.SIGTERM)
        # Each gets a gRPC status: "shutting down" for what was still
        # queued at the stop, the stall itself for one the watchdog failed
        # just before (which of the two depends on timing); never a cut
        # connection ("Socket closed").
        for f in calls:
            with self.assertRaises(grpc.RpcError) as cm:
                f.result()
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                             cm.exception.details())
            self.assertRegex(cm.exception.details(),
                             r'^(shutting down|tpm: a command has not answered for \d+ s)$')
        self.assertEqual(self.daemon.proc.proc.wait(30), 0)
        c.close()


class SecureHeap(Base):
    def test_waiting_plaintexts_never_exhaust_the_secure_heap(self):
        # With the TPM stalled, 600 Encrypts of 958 bytes wait at once: the
        # secure heap used to run out ("out of memory" from a third of them)
        # and then unseals failed too. Now waiting plaintexts have half the
        # heap: past it an Encrypt is RESOURCE_EXHAUSTED, never "out of
        # memory", and a rotation meanwhile still loads its key.
        proxy = self.daemon_via_proxy('slow.sock')
        self.daemon.start()
        proxy.delay = 3.0
        clients = [self.daemon.client() for _ in range(6)]
        calls = [c.encrypt(b'k' * 958, timeout=4, future=True) for c in clients
                 for _ in range(100)]
        codes = {}
        for f in calls:
            try:
                f.result()
                key = 'OK'
            except grpc.RpcError as e:
                key = '%s: %s' % (e.code().name, e.details())
            codes[key] = codes.get(key, 0) + 1
        self.assertNotIn('RESOURCE_EXHAUSTED: out of memory', codes)
        self.assertFalse([k for k in codes if 'out of memory' in k], codes)
        self.assertGreater(codes.get('RESOURCE_EXHAUSTED: too many calls waiting for the TPM', 0),
                           0, codes)
        proxy.delay = 0.0
        new_id = run_cli('rotate', *self.tpm_args()).stdout.strip()
        wait_until(lambda: clients[0].status().key_id == new_id, 'the new key to load',
                   timeout=30)
        self.assertEqual(clients[0].encrypt(b'x').key_id, new_id)
        for c in clients:
            c.close()


class StuckTpm(Base):
    def test_command_that_never_returns(self):
        # swtpm stopped (SIGSTOP) in the middle of a command: Status said
        # "ok" for as long as it hung, every Encrypt waited for its deadline,
        # and SIGTERM never finished (the worker thread was joined).
        self.daemon.extra = ['--tpm-command-timeout', '1500']
        c = self.started_then_tpm_stopped()
        hung = c.encrypt(b'stuck', timeout=60, future=True)
        wait_until(lambda: 'has not answered' in (self.daemon.healthz() or ''),
                   'Status to say the TPM is stuck', timeout=15)
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            c.encrypt(b'fails fast', timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertLess(time.monotonic() - t0, 5)
        # It answers again: healthy by itself, and the stuck call ends.
        self.tpm.proc.send_signal(signal.SIGCONT)
        self.assertEqual(len(hung.result().ciphertext), 5 + 65)
        wait_until(lambda: self.daemon.healthz() == 'ok', 'healthy again', timeout=15)
        # Stuck again, then SIGTERM: the daemon stops within bounds, the
        # stuck call is answered (it was ended by a bare closed socket, and
        # the daemon by SIGABRT on an assertion), and the exit is clean.
        self.tpm.proc.send_signal(signal.SIGSTOP)
        stuck = c.encrypt(b'stuck again', timeout=60, future=True)
        wait_until(lambda: 'has not answered' in (self.daemon.healthz() or ''),
                   'Status to say the TPM is stuck', timeout=15)
        t0 = time.monotonic()
        self.daemon.proc.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.daemon.proc.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.fail('the daemon did not stop with a TPM command stuck')
        self.assertLess(time.monotonic() - t0, 20)
        self.assertEqual(rc, 0, self.daemon.output())
        with self.assertRaises(grpc.RpcError) as cm:
            stuck.result()
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                         cm.exception.details())
        self.assertEqual(cm.exception.details(), 'shutting down')
        c.close()
        self.assertIn('stopping without it', self.daemon.output())
        self.tpm.proc.send_signal(signal.SIGCONT)


class LostCommands(Base):
    def test_lost_unseal_after_rotate_is_retried(self):
        # The daemon's first Unseal after a rotation is lost on the way
        # (its TCTI connection cut) while the TPM stays healthy. The
        # rotation used to stall on the old key until SIGHUP; the unseal
        # must be tried again by itself.
        proxy = self.daemon_via_proxy('lossy.sock')
        self.daemon.start()
        proxy.drop = {0x15e: 1}                  # TPM_CC_Unseal, once
        new_id = run_cli('rotate', *self.tpm_args()).stdout.strip()
        wait_until(lambda: proxy.drop[0x15e] == 0, 'the unseal to be lost')
        c = self.daemon.client()
        wait_until(lambda: c.status().key_id == new_id, 'the new key to load all the same',
                   timeout=20)
        e = c.encrypt(b'under the new key')
        self.assertEqual(e.key_id, new_id)
        c.close()
        self.assertIn('unseal failed', self.daemon.output())


class DamagedState(Base):
    def test_damaged_sealed_file_is_named_and_others_served(self):
        self.daemon.start()
        c = self.daemon.client()
        old = c.encrypt(b'old')
        c.close()
        self.daemon.stop()
        new_id = run_cli('rotate', *self.tpm_args()).stdout.strip()
        path = os.path.join(self.daemon.state_dir, 'gen-000001.pem')
        with open(path, 'r+') as f:
            f.truncate(100)
        self.daemon.start()
        c = self.daemon.client()
        self.assertEqual(c.status().key_id, new_id)
        fresh = c.encrypt(b'new')
        self.assertEqual(c.decrypt(fresh.ciphertext, fresh.key_id).plaintext, b'new')
        with self.assertRaises(grpc.RpcError) as cm:
            c.decrypt(old.ciphertext, old.key_id)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        c.close()
        self.assertIn('gen-000001.pem is missing or damaged', self.daemon.output())

    def test_swapped_generation_files_are_refused(self):
        # Each generation's key is checked against the key_id the state
        # names when it is unsealed: swapped files (or an edited key_id)
        # load nothing, and Status says so; Decrypt under the old key_ids
        # is UNAVAILABLE, not answered with the other key.
        self.daemon.start()
        c = self.daemon.client()
        old = c.encrypt(b'old')
        c.close()
        self.daemon.stop()
        run_cli('rotate', *self.tpm_args())
        d = self.daemon.state_dir
        one, two = os.path.join(d, 'gen-000001.pem'), os.path.join(d, 'gen-000002.pem')
        os.rename(one, one + '.x')
        os.rename(two, one)
        os.rename(one + '.x', two)
        self.daemon.start(wait_healthy=False)
        wait_until(lambda: (self.daemon.healthz() or '') ==
                   'write key generation 2 is unusable', 'Status to say so', timeout=15)
        out = self.daemon.output()
        for g in (1, 2):
            self.assertIn('generation %d: the unsealed key does not match key_id' % g, out)
        c = self.daemon.client()
        with self.assertRaises(grpc.RpcError) as cm:
            c.decrypt(old.ciphertext, old.key_id)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        c.close()

    def test_damaged_state_file_refused_with_line(self):
        run_cli('init', *self.tpm_args())
        path = os.path.join(self.daemon.state_dir, 'state')
        with open(path, 'a') as f:
            f.write('generation 2 created x\n')
        r = run_cli('serve', '--listen', self.daemon.sock, *self.tpm_args(), check=False)
        self.assertEqual(r.returncode, 78)
        self.assertRegex(r.stderr, r'state: line 7 is not valid')
        r = run_cli('keys', '--state-dir', self.daemon.state_dir, check=False)
        self.assertEqual(r.returncode, 1)


class Filesystem(Base):
    def fill(self, mount):
        # Leave no room: write until ENOSPC.
        fd = os.open(os.path.join(mount, 'filler'), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b'\0' * 4096) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    def test_full_filesystem_during_init_and_rotate(self):
        mount = os.path.join(self.root, 'fs')
        self.tmpfs(mount, '256k')
        self.daemon.state_dir = os.path.join(mount, 'state')
        os.mkdir(self.daemon.state_dir, 0o700)
        self.fill(mount)
        r = run_cli('init', *self.tpm_args(), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('No space left on device', r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.daemon.state_dir, 'state')))
        os.unlink(os.path.join(mount, 'filler'))

        self.daemon.start()
        c = self.daemon.client()
        e = c.encrypt(b'x')
        before = open(os.path.join(self.daemon.state_dir, 'state')).read()
        self.fill(mount)
        r = run_cli('rotate', *self.tpm_args(), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('No space left on device', r.stderr)
        self.assertEqual(open(os.path.join(self.daemon.state_dir, 'state')).read(), before)
        # Still serving with the old key; nothing half-written is used.
        self.assertEqual(c.status().key_id, e.key_id)
        # The first Decrypt with generation 1: its count cannot be written.
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'x')
        counts = os.path.join(self.daemon.state_dir, 'decrypt-counts')
        with open(counts) as f:
            self.assertIn('generation 1 0', f.read())
        os.unlink(os.path.join(mount, 'filler'))
        # Once there is room, the daemon writes it by itself, with no
        # further call, so `retire` sees the use.
        wait_until(lambda: 'generation 1 1' in read_text(counts),
                   'decrypt count written after the disk had room again', timeout=10)
        self.assertRegex(run_cli('rotate', *self.tpm_args()).stdout, r'tpm2-kms-g2-')
        r = run_cli('retire', '1', *self.tpm_args(), check=False)
        self.assertNotEqual(r.returncode, 0, 'retire of a generation in use needs --force')
        c.close()

    def test_directory_sync_failing_after_rename_keeps_the_key(self):
        # The rename of the new state happened but the directory fsync
        # failed (tests/fsync-fail.so, the second directory sync of rotate:
        # the first is the new key file's). rotate must say so and keep the
        # key file the state now names; it used to delete it, leaving the
        # write key without its file.
        run_cli('init', *self.tpm_args())
        state = os.path.realpath(self.daemon.state_dir)
        env = dict(os.environ, LD_PRELOAD=os.path.join(BUILD, 'tests', 'fsync-fail.so'),
                   FSYNC_FAIL_DIR=state, FSYNC_FAIL_NTH='2')
        env['ASAN_OPTIONS'] = ':'.join(filter(None, [env.get('ASAN_OPTIONS'),
                                                     'verify_asan_link_order=0']))
        r = run_cli('rotate', *self.tpm_args(), check=False, env=env)
        self.assertEqual(r.returncode, 1)
        self.assertIn('cannot sync directory', r.stderr)
        names = read_text(os.path.join(state, 'state'))
        self.assertIn('write-generation 2', names)
        self.assertTrue(os.path.exists(os.path.join(state, 'gen-000002.pem')))
        self.daemon.start()
        self.assertRegex(self.daemon.client().status().key_id, r'^tpm2-kms-g2-')

    def test_read_only_state_directory(self):
        mount = os.path.join(self.root, 'fs')
        self.tmpfs(mount, '1m')
        self.daemon.state_dir = os.path.join(mount, 'state')
        run_cli('init', *self.tpm_args())
        subprocess.run(['mount', '-o', 'remount,ro', mount], check=True)
        r = run_cli('rotate', *self.tpm_args(), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('Read-only file system', r.stderr)
        # Serving needs no writes.
        self.daemon.start()
        c = self.daemon.client()
        e = c.encrypt(b'ro')
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'ro')
        c.close()


class Secrets(Base):
    def test_no_plaintext_in_debug_logs(self):
        self.daemon.extra = ['--log-level', 'debug']
        self.daemon.start()
        c = self.daemon.client()
        seed = bytes(range(0x41, 0x41 + 32))        # printable, so any leak is findable
        e = c.encrypt(seed, uid='leak-check')
        c.decrypt(e.ciphertext, e.key_id, uid='leak-check')
        c.v1_decrypt(c.v1_encrypt(seed).cipher)
        c.close()
        self.daemon.stop()
        log = self.daemon.output()
        self.assertIn('uid="leak-check"', log)      # the log does see the calls
        for form in (seed.decode(), seed.hex(), seed[:8].decode(), seed[8:16].hex()):
            self.assertNotIn(form, log)

    def test_tss2_trace_in_the_environment_logs_nothing(self):
        # TSS2_LOG=all+trace, set by whoever starts us, made tpm2-tss
        # hex-dump every command, unsealed KEKs included, into stderr (the
        # journal): the caller's value was kept. Provisioning, unsealing
        # and an Encrypt run here; tpm2-tss says nothing at all.
        env = dict(os.environ, TSS2_LOG='all+trace')
        r = run_cli('init', *self.tpm_args(), env=env)
        self.assertNotRegex(r.stderr, r'(?i)trace:|:esys:|:tcti:')
        self.daemon.env = {'TSS2_LOG': 'all+trace'}
        self.daemon.start()
        c = self.daemon.client()
        e = c.encrypt(b'traced?')
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'traced?')
        c.close()
        self.assertEqual(self.daemon.stop(), 0)
        log = self.daemon.output()
        self.assertIn('generation 1', log)          # our own lines are there
        self.assertNotRegex(log, r'(?i)trace:|:esys:|:tcti:|:sys:')

    @staticmethod
    def memory_holds(pid, secret, window=8):
        """Where in the process's writable memory any `window` bytes of
        secret appear (read through /proc/PID/mem, as root)."""
        pieces = {secret[i:i + window] for i in range(len(secret) - window + 1)}
        found = []
        with open('/proc/%d/maps' % pid) as maps, open('/proc/%d/mem' % pid, 'rb', 0) as mem:
            for line in maps:
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split('-'))
                if 'rw' not in fields[1] or len(fields) > 5 and fields[5].startswith('[v'):
                    continue
                # In pieces, overlapping by a window, so nothing is missed.
                for start in range(lo, hi, 1 << 24):
                    try:
                        mem.seek(start)
                        data = mem.read(min(hi, start + (1 << 24) + window) - start)
                    except OSError:
                        continue
                    for piece in pieces:
                        if piece in data:
                            found.append((line.strip(), piece.hex()))
        return found

    def test_no_seed_left_in_memory_after_a_call(self):
        # A Decrypt's answer is a data key in clear. After the call, while
        # the connection stays open and after it closed, no 8 bytes of it
        # may be left anywhere in the daemon's memory (nghttp2 used to keep
        # a copy in its frame buffer, and in freed chunks).
        if 'asan' in subprocess.run(['ldd', tpm2_kms()], capture_output=True,
                                    text=True).stdout:
            self.skipTest('sanitizer build: its allocator reserves terabytes; scanned in the '
                          'normal build')
        self.daemon.start()
        pid = self.daemon.proc.proc.pid
        idle = self._sockets(pid)
        c = self.daemon.client()
        seed = os.urandom(32)
        e = c.encrypt(seed)
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, seed)
        # The scan sees what is there: the key_id the daemon holds.
        self.assertNotEqual(self.memory_holds(pid, e.key_id.encode(), len(e.key_id)), [])
        self.assertEqual(self.memory_holds(pid, seed), [])
        c.close()
        wait_until(lambda: self._sockets(pid) <= idle, 'the connection to close')
        self.assertEqual(self.memory_holds(pid, seed), [])

    def kek_by_tools(self):
        """Generation 1's KEK, unsealed by stock tpm2-tools: the test's own
        copy, to look for where it must not be."""
        from clusterlib import der_items, pem_blocks
        items = der_items(pem_blocks(read_text(os.path.join(self.daemon.state_dir,
                                                            'gen-000001.pem')),
                                     'TSS2 PRIVATE KEY')[0])
        for name, data in (('k.pub', items[3][1]), ('k.priv', items[4][1])):
            with open(os.path.join(self.root, name), 'wb') as f:
                f.write(data)
        env = dict(os.environ, TPM2TOOLS_TCTI=self.tpm.tcti)
        subprocess.run(['tpm2_load', '-C', '0x81000001', '-u', 'k.pub', '-r', 'k.priv', '-c',
                        'k.ctx'], cwd=self.root, env=env, check=True, capture_output=True)
        kek = subprocess.run(['tpm2_unseal', '-c', 'k.ctx'], cwd=self.root, env=env,
                             check=True, capture_output=True).stdout
        subprocess.run(['tpm2_flushcontext', '-t'], cwd=self.root, env=env, check=True)
        self.assertEqual(len(kek), 32)
        return kek

    def test_no_kek_outside_locked_memory_after_provisioning(self):
        # A first start provisions generation 1 in the daemon itself: its KEK
        # stayed in the ordinary heap (a freed tpm2-tss context) for the
        # daemon's life. Anywhere but the locked secure heap, no 8 bytes of
        # it may be found.
        if 'asan' in subprocess.run(['ldd', tpm2_kms()], capture_output=True,
                                    text=True).stdout:
            self.skipTest('sanitizer build: its allocator reserves terabytes; scanned in the '
                          'normal build')
        if os.environ.get('TPM2KMS_VALGRIND'):
            self.skipTest('under valgrind the process holds valgrind\'s own copies of its '
                          'memory; scanned in the normal build')
        self.daemon.start()
        pid = self.daemon.proc.proc.pid
        kek = self.kek_by_tools()
        locked = []
        for m in re.split(r'\n(?=[0-9a-f]+-[0-9a-f]+ )', open('/proc/%d/smaps' % pid).read()):
            if re.search(r'\nVmFlags:.* lo ', m + ' '):
                locked.append(m.split()[0])
        found = self.memory_holds(pid, kek)
        self.assertNotEqual(found, [])               # the scan sees the secure heap's copy
        outside = [(where, piece) for where, piece in found
                   if where.split()[0] not in locked]
        self.assertEqual(outside, [])

    def test_unsealed_keks_are_wiped_before_they_are_freed(self):
        # Every buffer that held a KEK is wiped before free(): an
        # LD_PRELOAD shim (tests/fakes/freed_secret.c) looks at each block
        # as it is freed. A memory scan misses a freed block once reused.
        if 'asan' in subprocess.run(['ldd', tpm2_kms()], capture_output=True,
                                    text=True).stdout:
            self.skipTest('sanitizer build: it replaces the allocator')
        if os.environ.get('TPM2KMS_VALGRIND'):
            self.skipTest('valgrind replaces the allocator too; run in the normal build')
        run_cli('init', *self.tpm_args())
        kek = self.kek_by_tools()
        log = os.path.join(self.root, 'freed.log')
        self.daemon.env = {'LD_PRELOAD': os.path.join(BUILD, 'tests', 'freed-secret.so'),
                           'FREED_SECRET_HEX': kek.hex(), 'FREED_SECRET_LOG': log}
        self.daemon.start()
        c = self.daemon.client()
        e = c.encrypt(b'x')
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'x')
        c.close()
        self.daemon.proc.proc.send_signal(signal.SIGHUP)       # reload: unseal again
        self.assertEqual(self.daemon.stop(), 0)
        self.assertTrue(os.path.exists(log), 'the shim did not run')
        self.assertEqual(read_text(log), '')

    @staticmethod
    def _sockets(pid):
        n = 0
        for fd in os.listdir('/proc/%d/fd' % pid):
            try:
                n += os.readlink('/proc/%d/fd/%s' % (pid, fd)).startswith('socket:')
            except OSError:
                pass
        return n

    def start_as_nobody(self, init_as_root=False):
        """The daemon as an unprivileged service user (as under systemd)."""
        os.chmod(self.root, 0o755)
        for p in (self.tpm.sock, self.tpm.sock + '.ctrl'):
            os.chmod(p, 0o777)
        os.chmod(self.tpm.dir, 0o755)
        state = os.path.join(self.root, 'nobody-state')
        os.mkdir(state, 0o700)
        os.chown(state, 65534, 65534)
        if init_as_root:
            run_cli('init', '--tcti', self.tpm.tcti, '--state-dir', state)
        sock = os.path.join(self.root, 'nobody', 'kms.sock')
        os.makedirs(os.path.dirname(sock))
        os.chown(os.path.dirname(sock), 65534, 65534)
        p = subprocess.Popen([tpm2_kms(), 'serve', '--tcti', self.tpm.tcti, '--state-dir', state,
                              '--listen', sock], user=65534, group=65534,
                             stderr=open(os.path.join(self.root, 'nobody.log'), 'wb'))
        wait_until(lambda: can_connect(sock) or p.poll() is not None, 'daemon as nobody')
        self.assertIsNone(p.poll(), open(os.path.join(self.root, 'nobody.log')).read())
        return p, state, sock

    def test_root_administers_the_service_users_state(self):
        # An operator runs init and rotate as root on the service user's
        # directory: the files must end up the service user's.
        p, state, sock = self.start_as_nobody(init_as_root=True)
        try:
            c = Kms('unix:' + sock)
            wait_until(lambda: c.status().healthz == 'ok', 'healthy as nobody')
            new_id = run_cli('rotate', '--tcti', self.tpm.tcti, '--state-dir', state).stdout.strip()
            for f in os.listdir(state):
                st = os.stat(os.path.join(state, f))
                self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (65534, 0o600), f)
            wait_until(lambda: c.status().key_id == new_id, 'rotation seen as nobody')
            e = c.encrypt(b'x')
            self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'x')
            c.close()
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(15), 0)

    def test_commands_holding_keys_are_not_dumpable(self):
        # init makes a KEK in clear: like serve, it must be non-dumpable
        # with no core limit (it was neither). Run as nobody, through a slow
        # TPM so the process is there to look at.
        proxy = DelayProxy(self.tpm.sock, os.path.join(self.root, 'slow.sock'))
        self.addCleanup(proxy.close)
        proxy.delay = 0.2
        os.chmod(self.root, 0o755)
        for p in (os.path.join(self.root, 'slow.sock'), os.path.join(self.root, 'slow.sock.ctrl'),
                  self.tpm.sock, self.tpm.sock + '.ctrl'):
            os.chmod(p, 0o777)
        state = os.path.join(self.root, 'nobody-state')
        os.mkdir(state, 0o700)
        os.chown(state, 65534, 65534)
        p = subprocess.Popen([tpm2_kms(), 'init', '--tcti',
                              'swtpm:path=' + os.path.join(self.root, 'slow.sock'),
                              '--state-dir', state], user=65534, group=65534,
                             stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            def hardened():
                try:
                    limits = open('/proc/%d/limits' % p.pid).read()
                    owner = os.stat('/proc/%d/status' % p.pid).st_uid
                except OSError:
                    return None
                return re.search(r'Max core file size\s+0\s+0', limits) and owner == 0
            wait_until(lambda: hardened() or p.poll() is not None, 'init to harden itself')
            self.assertIsNone(p.poll(), 'init ran to its end without being non-dumpable with no core')
            self.assertTrue(hardened())
        finally:
            self.assertEqual(p.wait(60), 0)

    def test_not_dumpable_and_key_memory_locked(self):
        # Run as nobody, so /proc shows what PR_SET_DUMPABLE 0 does: the
        # process's /proc files belong to root instead of to its user.
        p, state, sock = self.start_as_nobody()
        try:
            status = open('/proc/%d/status' % p.pid).read()
            self.assertRegex(status, r'\nUid:\s+65534\s')
            self.assertEqual(os.stat('/proc/%d/status' % p.pid).st_uid, 0)
            limits = open('/proc/%d/limits' % p.pid).read()
            self.assertRegex(limits, r'Max core file size\s+0\s+0')
            # The secure heap: a 1 MiB mapping that is locked (OpenSSL
            # uses MLOCK_ONFAULT: "lo") and left out of core dumps ("dd").
            smaps = open('/proc/%d/smaps' % p.pid).read()
            heaps = [m for m in re.split(r'\n(?=[0-9a-f]+-[0-9a-f]+ )', smaps)
                     if re.search(r'\nSize:\s+1024 kB', m) and
                     re.search(r'\nVmFlags:.* lo .*dd', m + ' ')]
            self.assertEqual(len(heaps), 1, 'no locked, undumpable 1 MiB secure heap')
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(15), 0)


if __name__ == '__main__':
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
