#!/usr/bin/python3
"""The CLI as root and the daemon as an unprivileged service user, as the
operations guide sets them up: what root makes under the service user's
state directory belongs to that user, the files the guide hands to the
daemon are readable by it, and what the daemon cannot read it says, in
Status and a metric, instead of reporting ok on what it never saw."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import unittest
import urllib.request

import grpc

from clusterlib import ClusterTest, make_key
from kmsclient import Kms, can_connect, run_cli, tpm2_kms, wait_until

NOBODY = 65534


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class ServiceUserTest(ClusterTest):
    def service_node(self, name='a'):
        """A node whose state directory belongs to the service user (nobody
        here), and whose swtpm that user can reach."""
        n = self.node(name)
        for d in (self.root, n.root, n.tpm.dir):
            os.chmod(d, 0o755)
        for p in (n.tpm.sock, n.tpm.sock + '.ctrl'):
            os.chmod(p, 0o777)
        os.mkdir(n.state, 0o700)
        os.chown(n.state, NOBODY, NOBODY)
        return n

    def serve_as_nobody(self, n, *extra):
        """serve as the service user; (process, client, metrics port, log)."""
        sockdir = os.path.join(n.root, 'run')
        os.makedirs(sockdir, exist_ok=True)
        os.chown(sockdir, NOBODY, NOBODY)
        sock = os.path.join(sockdir, 'kms.sock')
        port = free_port()
        log = os.path.join(n.root, 'serve-nobody.log')
        p = subprocess.Popen([tpm2_kms(), 'serve', '--tcti', n.tpm.tcti, '--state-dir', n.state,
                              '--listen', sock, '--metrics-listen', '127.0.0.1:%d' % port]
                             + list(extra), user=NOBODY, group=NOBODY,
                             stderr=open(log, 'wb'))
        self.addCleanup(lambda: p.poll() is None and (p.send_signal(signal.SIGTERM), p.wait(20)))
        wait_until(lambda: can_connect(sock) or p.poll() is not None, 'daemon as nobody')
        self.assertIsNone(p.poll(), open(log).read())
        c = Kms('unix:' + sock)
        self.addCleanup(c.close)
        return p, c, port, log

    @staticmethod
    def metrics(port):
        with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=5) as r:
            return r.read().decode()

    def metric(self, port, line):
        m = re.search('^' + re.escape(line) + r' (\S+)$', self.metrics(port), re.M)
        return float(m.group(1)) if m else None

    @staticmethod
    def healthz(c):
        try:
            return c.status(timeout=5).healthz
        except grpc.RpcError:
            return None

    def escrowed_first_start(self, n):
        """§7's first start with escrow, every command run as root."""
        _, recovery_node, _, recovery_approval = self.recovery_key()
        node_file, _ = n.node_file()
        approval, _ = self.approve(node_file)
        n.cli('init', '--admin-key', self.admin_pub, '--approval', approval, '--escrow-to',
              recovery_node, '--escrow-approval', recovery_approval)
        return recovery_node, recovery_approval



class Ownership(ServiceUserTest):
    def test_escrow_made_as_root_is_the_service_users_and_watched(self):
        # init --escrow-to as root made escrow/ root:root 0700 inside the
        # service user's directory: the daemon could not look in it, and
        # with the write key's escrow file gone Status still said ok and
        # tpm2kms_escrow_missing was 0.
        n = self.service_node()
        self.escrowed_first_start(n)
        for top, dirs, files in os.walk(n.state):
            for name in dirs + files:
                st = os.lstat(os.path.join(top, name))
                self.assertEqual((st.st_uid, st.st_gid), (NOBODY, NOBODY),
                                 os.path.join(top, name))
        p, c, port, _ = self.serve_as_nobody(n)
        wait_until(lambda: self.healthz(c) == 'ok', 'healthy as the service user')
        self.assertEqual(self.metric(port, 'tpm2kms_escrow_missing'), 0)
        self.assertEqual(self.metric(port, 'tpm2kms_state_unreadable{what="escrow"}'), 0)

        # The write key's escrow file lost: the alarm rings.
        escrow = os.path.join(n.state, 'escrow')
        os.unlink(os.path.join(escrow, 'gen-000001.pem'))
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: 'not escrowed' in (self.healthz(c) or ''), 'the escrow alarm')
        self.assertEqual(self.metric(port, 'tpm2kms_escrow_missing'), 1)

        # A directory it cannot look into is said so, never taken as ok.
        os.chown(escrow, 0, 0)
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: 'cannot read' in (self.healthz(c) or ''), 'Status to say it is blind')
        h = self.healthz(c)
        self.assertIn(escrow, h)
        self.assertIn('owner uid 0', h)
        self.assertIn('mode 0700', h)
        self.assertEqual(self.metric(port, 'tpm2kms_state_unreadable{what="escrow"}'), 1)
        # Running init as root again repairs the owner and escrows again.
        n.cli('init')
        self.assertEqual(os.stat(escrow).st_uid, NOBODY)
        wait_until(lambda: self.healthz(c) == 'ok', 'healthy once repaired')
        self.assertEqual(self.metric(port, 'tpm2kms_state_unreadable{what="escrow"}'), 0)
        self.assertEqual(self.metric(port, 'tpm2kms_escrow_missing'), 0)

    def test_an_unreadable_state_file_is_said(self):
        n = self.service_node()
        n.cli('init')
        p, c, port, _ = self.serve_as_nobody(n)
        wait_until(lambda: self.healthz(c) == 'ok', 'healthy as the service user')
        state = os.path.join(n.state, 'state')
        os.chown(state, 0, 0)
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: 'cannot read' in (self.healthz(c) or ''), 'Status to say so')
        self.assertIn(state + ': owner uid 0', self.healthz(c))
        self.assertEqual(self.metric(port, 'tpm2kms_state_unreadable{what="state"}'), 1)
        os.chown(state, NOBODY, NOBODY)
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: self.healthz(c) == 'ok', 'healthy again')
        self.assertEqual(self.metric(port, 'tpm2kms_state_unreadable{what="state"}'), 0)

    def test_files_handed_to_the_daemon_are_readable_or_named(self):
        # Node files, approvals and PCR signatures hold only public keys and
        # signatures: -o writes them 0644, so the service user reads what
        # root made. A file it still cannot read is named with its owner
        # and mode (it said only "Permission denied").
        n = self.service_node()
        _, recovery_node, _, recovery_approval = self.recovery_key()
        for f in (recovery_node, recovery_approval):
            self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o644, f)
        bundle = os.path.join(self.root, 'b')
        node_file, _ = n.node_file()
        approval, _ = self.approve(node_file)
        n.cli('init', '--admin-key', self.admin_pub, '--approval', approval)
        n.cli('export', '--to', node_file, '--approval', approval, '-o', bundle)
        self.assertEqual(stat.S_IMODE(os.stat(bundle).st_mode), 0o600)

        # §7.2's configuration-file form, the recovery node file left 0600.
        os.chmod(recovery_node, 0o600)
        r = subprocess.run([tpm2_kms(), 'serve', '--tcti', n.tpm.tcti, '--state-dir', n.state,
                            '--listen', os.path.join(n.root, 'x.sock'), '--escrow-to',
                            recovery_node, '--escrow-approval', recovery_approval],
                           user=NOBODY, group=NOBODY, capture_output=True, text=True,
                           timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(recovery_node, r.stderr)
        self.assertIn('owner uid 0, group 0, mode 0600', r.stderr)


class UnreadableSignature(ServiceUserTest):
    def test_a_signature_the_daemon_cannot_read_is_named(self):
        # A root 0600 signature was ignored with "no PCR signature approves
        # the boot state" and nothing more.
        n = self.service_node()
        pcr_key = os.path.join(self.root, 'pcr.pem')
        pcr_pub = make_key(pcr_key)
        sigdir = os.path.join(n.root, 'pcr-signatures')
        os.mkdir(sigdir, 0o755)
        n.cli('init', '--pcr-key', pcr_pub, '--pcrs', '7', '--pcr-signatures', sigdir)
        values = run_cli('pcr-read', '--tcti', n.tpm.tcti, '--pcrs', '7').stdout.strip()
        sig = os.path.join(sigdir, 'boot.sig')
        run_cli('pcr-sign', '--key', pcr_key, '--pcrs', values, '-o', sig)
        self.assertEqual(stat.S_IMODE(os.stat(sig).st_mode), 0o644)
        os.chmod(sig, 0o600)
        p, c, port, _ = self.serve_as_nobody(n, '--pcr-signatures', sigdir)
        wait_until(lambda: 'no PCR signature' in (self.healthz(c) or ''), 'Status to say why')
        h = self.healthz(c)
        self.assertIn('1 signature file(s) not readable, first ' + sig, h)
        self.assertIn('owner uid 0, group 0, mode 0600', h)
        self.assertEqual(self.metric(port, 'tpm2kms_state_unreadable{what="pcr-signatures"}'), 1)
        os.chmod(sig, 0o644)
        os.utime(sig)                   # the directory watch sees the change
        wait_until(lambda: self.healthz(c) == 'ok', 'healthy with the signature readable')
        self.assertEqual(self.metric(port, 'tpm2kms_state_unreadable{what="pcr-signatures"}'), 0)


if __name__ == '__main__':
    unittest.main(verbosity=2)
