#!/usr/bin/python3
"""tpm2-kms doctor, finding by finding: each test breaks one thing an
operator gets wrong on a real node (swtpm, the real daemon) and checks
that doctor names it, with its level and fix, and the exit status."""

import json
import os
import shutil
import signal
import subprocess
import sys
import unittest

from clusterlib import ClusterTest
from kmsclient import run_cli, wait_until

NOBODY = 65534


def encryption_config(listen, phase='2'):
    return run_cli('encryption-config', '--listen', listen, '--phase', phase).stdout


class Doctor(ClusterTest):
    def setUp(self):
        super().setUp()
        self.a = self.node('a')
        self.a.cli('init')
        # The service user owns its state, as the units and the package
        # set it up: root (the test) may administer it.
        for d, _, files in os.walk(self.a.state):
            os.chown(d, NOBODY, NOBODY)
            for f in files:
                os.chown(os.path.join(d, f), NOBODY, NOBODY)
        self.apiserver = None

    def tearDown(self):
        if self.apiserver:
            self.apiserver.kill()
            self.apiserver.wait()
        super().tearDown()

    def doctor(self, *extra, node=None, tcti=None):
        n = node or self.a
        r = run_cli('doctor', '--tcti', tcti or n.tpm.tcti, '--state-dir', n.state, '--listen',
                    n.daemon.sock, '--output', 'json', *extra, check=False)
        report = json.loads(r.stdout)
        findings = {f['id']: f for f in report['findings']}
        self.assertEqual(len(findings), len(report['findings']), 'each ID once')
        return r, report, findings

    def level(self, findings, fid):
        return findings[fid]['level']

    def assert_finding(self, findings, fid, level, text):
        f = findings[fid]
        self.assertEqual(f['level'], level, f)
        self.assertIn(text, f['finding'])
        if level in ('warning', 'error'):
            self.assertTrue(f['fix'], 'a fix for %s' % fid)

    def test_a_healthy_node_is_all_ok(self):
        self.a.daemon.start()
        r, report, f = self.doctor()
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(report['worst'], 'ok')
        for fid in ('config.parse', 'state.dir', 'state.files', 'state.load', 'tpm.reachable',
                    'tpm.srk', 'keys.unseal', 'socket.perm', 'daemon.status',
                    'daemon.roundtrip', 'audit.age'):
            self.assertEqual(f[fid]['level'], 'ok', f[fid])
        self.assertIn('owner nobody', f['state.dir']['finding'])
        self.assertIn('the same key came back', f['daemon.roundtrip']['finding'])
        # People get the same, one line each.
        text = self.a.cli('doctor', '--listen', self.a.daemon.sock).stdout
        self.assertRegex(text, r'(?m)^ok +tpm\.srk +the storage root key is the provisioned one$')
        self.assertNotIn('error', text)

    def test_state_directory_and_file_permissions(self):
        self.a.daemon.start()
        os.chmod(self.a.state, 0o750)
        r, _, f = self.doctor()
        self.assertEqual(r.returncode, 3)
        self.assert_finding(f, 'state.dir', 'warning', 'can be listed by group or others')
        os.chmod(self.a.state, 0o770)
        r, _, f = self.doctor()
        self.assertEqual(r.returncode, 4)
        self.assert_finding(f, 'state.dir', 'error', 'the daemon refuses it')
        os.chmod(self.a.state, 0o700)
        gen = os.path.join(self.a.state, 'gen-000001.pem')
        os.chown(gen, 0, 0)
        r, _, f = self.doctor()
        self.assertEqual(r.returncode, 4)
        self.assert_finding(f, 'state.files', 'error', gen + ' is root\'s')
        self.assertEqual(f['state.files']['fix'], 'chown -R nobody: ' + self.a.state)
        os.chown(gen, NOBODY, NOBODY)
        os.chmod(gen, 0o644)
        r, _, f = self.doctor()
        self.assert_finding(f, 'state.files', 'warning', 'can be read by group or others')

    def test_tpm_findings(self):
        # Not there.
        r, _, f = self.doctor(tcti='device:/nonexistent/tpmrm0')
        self.assertEqual(r.returncode, 4)
        self.assert_finding(f, 'tpm.device', 'error', '/nonexistent/tpmrm0')
        self.assert_finding(f, 'tpm.reachable', 'error', 'does not answer')
        # Another TPM: no SRK at all, then one that is not the provisioned.
        b = self.node('b')
        r, _, f = self.doctor(tcti=b.tpm.tcti)
        self.assert_finding(f, 'tpm.srk', 'error', 'no storage root key')
        b.cli('init')
        r, _, f = self.doctor(tcti=b.tpm.tcti)
        self.assert_finding(f, 'tpm.srk', 'error', 'is not the one')
        self.assertNotIn('keys.unseal', f, 'no unseal on another TPM')

    def test_a_generation_that_does_not_unseal(self):
        self.a.cli('rotate')
        # Generation 2's sealed file in place of generation 1's: it
        # unseals, to the wrong key_id.
        shutil.copy(os.path.join(self.a.state, 'gen-000002.pem'),
                    os.path.join(self.a.state, 'gen-000001.pem'))
        r, _, f = self.doctor()
        self.assertEqual(r.returncode, 4)
        self.assert_finding(f, 'keys.unseal', 'error', 'generation 1 (none) first')

    def test_escrow_not_done(self):
        key, node_file, _, approval = self.recovery_key()
        n = self.node_with_escrow('e', node_file, approval)
        r, _, f = self.doctor(node=n)
        self.assert_finding(f, 'escrow.keys', 'ok', 'all 1 duplicable generation escrowed')
        os.unlink(os.path.join(n.state, 'escrow', 'gen-000001.pem'))
        r, _, f = self.doctor(node=n)
        self.assertEqual(r.returncode, 4)
        self.assert_finding(f, 'escrow.keys', 'error', 'generation 1 first')

    def start_apiserver(self, uid, gid):
        """A process named kube-apiserver with the apiserver's ids: Debian 12
        has no kube-apiserver, and doctor reads no more of it than its
        name and ids in /proc."""
        def become():
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
        # PR_SET_NAME after exec (exec names the process after its file).
        self.apiserver = subprocess.Popen(
            [sys.executable, '-c', 'import ctypes, time; '
             'ctypes.CDLL(None).prctl(15, b"kube-apiserver", 0, 0, 0); time.sleep(600)'],
            preexec_fn=become)
        def named():
            with open('/proc/%d/comm' % self.apiserver.pid) as f:
                return f.read().strip() == 'kube-apiserver'
        wait_until(named, 'the stand-in apiserver')

    def test_the_daemon_as_the_apiserver_meets_it(self):
        r, _, f = self.doctor()
        self.assert_finding(f, 'socket.perm', 'error', 'no socket at')
        self.assert_finding(f, 'daemon.status', 'error', 'failed')
        self.assertEqual(f['daemon.roundtrip']['level'], 'skipped')

        self.start_apiserver(NOBODY, NOBODY)
        os.chmod(self.root, 0o755)
        os.chmod(self.a.root, 0o755)
        self.a.daemon.start()                       # socket 0600, root's
        r, _, f = self.doctor()
        self.assert_finding(f, 'apiserver.found', 'ok', 'as nobody')
        self.assert_finding(f, 'socket.perm', 'error', 'cannot write to')
        self.assert_finding(f, 'daemon.status', 'error', 'as nobody failed: Permission denied')
        self.a.daemon.stop()

        # The guide's way: a group the apiserver has, mode 0660.
        group = subprocess.run(['getent', 'group', str(NOBODY)], capture_output=True,
                               text=True).stdout.split(':')[0]
        self.a.daemon.extra = ['--socket-group', group, '--socket-mode', '0660']
        self.a.daemon.start()
        r, _, f = self.doctor()
        self.assert_finding(f, 'socket.perm', 'ok', 'open to kube-apiserver\'s user')
        self.assert_finding(f, 'daemon.status', 'ok', 'Status as nobody: healthz ok')
        self.assert_finding(f, 'daemon.roundtrip', 'ok', 'as nobody: the same key came back')
        # A directory above the socket closed to it.
        os.chmod(self.a.root, 0o700)
        r, _, f = self.doctor()
        self.assert_finding(f, 'socket.perm', 'error', 'is closed to it')
        os.chmod(self.a.root, 0o755)
        # Open to everyone.
        os.chmod(self.a.daemon.sock, 0o666)
        r, _, f = self.doctor()
        self.assert_finding(f, 'socket.perm', 'warning', 'any local user may connect')

    def test_encryption_configuration(self):
        self.a.daemon.start()
        sock = self.a.daemon.sock
        cases = [
            (encryption_config(sock, '2'), {'encconfig.endpoint': 'ok', 'encconfig.order': 'ok',
                                            'encconfig.kms': 'ok'}),
            (encryption_config(sock, '1'), {'encconfig.order': 'warning'}),
            (encryption_config('/run/elsewhere.sock'), {'encconfig.endpoint': 'error'}),
            (encryption_config(sock).replace('apiVersion: v2', 'apiVersion: v1'),
             {'encconfig.kms': 'error'}),
            (encryption_config(sock).replace('timeout: 3s', 'timeout: 100ms'),
             {'encconfig.kms': 'warning'}),
            (encryption_config(sock).replace('timeout: 3s', 'timeout: soon'),
             {'encconfig.kms': 'error'}),
            (encryption_config(sock).replace('- secrets', '- configmaps'),
             {'encconfig.parse': 'error'}),
            ('apiVersion: v1\nkind: Pod\n', {'encconfig.parse': 'error'}),
            ('apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n'
             'resources: [{resources: [secrets]}]\n', {'encconfig.parse': 'error'}),
        ]
        # The same in the flow list form for the resource names.
        flow = encryption_config(sock).replace('resources:\n      - secrets',
                                               'resources: [secrets, configmaps]')
        self.assertIn('[secrets, configmaps]', flow)
        cases.append((flow, {'encconfig.endpoint': 'ok', 'encconfig.order': 'ok'}))
        path = os.path.join(self.root, 'encryption.yaml')
        for text, want in cases:
            with open(path, 'w') as f:
                f.write(text)
            r, _, f = self.doctor('--encryption-config', path)
            for fid, level in want.items():
                self.assertEqual(f[fid]['level'], level, (text, f[fid]))

    def test_flow_style_is_reported_with_its_line(self):
        path = os.path.join(self.root, 'encryption.yaml')
        with open(path, 'w') as f:
            f.write('apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n'
                    'resources: [{resources: [secrets]}]\n')
        r, _, f = self.doctor('--encryption-config', path)
        self.assert_finding(f, 'encconfig.parse', 'error', 'encryption.yaml:3: flow style')

    def write_audit(self, **fields):
        rec = {'format': 1, 'started': 1, 'finished': 2, 'source': 'https://127.0.0.1:2379',
               'prefix': '/registry', 'revision': 10, 'complete': 'yes', 'objects': 5,
               'encrypted': 5, 'undecryptable': 0, 'foreign': 0}
        rec.update(fields)
        path = os.path.join(self.a.state, 'audit')
        with open(path, 'w') as f:
            f.write(''.join('%s %s\n' % kv for kv in rec.items()))
            f.write('generation 1 5\n')
        os.chown(path, NOBODY, NOBODY)
        os.chmod(path, 0o600)

    def test_audit_findings(self):
        import time
        r, _, f = self.doctor()
        self.assert_finding(f, 'audit.age', 'ok', 'one generation, nothing to retire')
        self.a.cli('rotate')
        r, _, f = self.doctor()
        self.assert_finding(f, 'audit.age', 'warning', '2 generations and no audit of etcd')
        now = int(time.time())
        self.write_audit(started=now - 60, finished=now - 30)
        r, _, f = self.doctor()
        self.assert_finding(f, 'audit.age', 'ok', 'all decryptable')
        self.write_audit(started=now - 30 * 86400, finished=now - 30 * 86400)
        r, _, f = self.doctor()
        self.assert_finding(f, 'audit.age', 'warning', 'is 30 days old')
        self.write_audit(started=now - 60, finished=now - 30, undecryptable=3)
        r, _, f = self.doctor()
        self.assert_finding(f, 'audit.age', 'error', 'found 3 objects this node cannot decrypt')
        self.write_audit(started=now - 60, finished=now - 30, complete='no')
        r, _, f = self.doctor()
        self.assert_finding(f, 'audit.age', 'warning', 'did not finish')

    def test_pcr_signature_directory_and_approval(self):
        pcr_key = os.path.join(self.root, 'pcr.pem')
        subprocess.run(['openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt',
                        'ec_paramgen_curve:P-256', '-out', pcr_key], check=True)
        subprocess.run(['openssl', 'pkey', '-in', pcr_key, '-pubout', '-out', pcr_key + '.pub'],
                       check=True)
        p = self.node('p')
        sigs = os.path.join(p.root, 'sigs')
        p.cli('init', '--pcr-key', pcr_key + '.pub', '--pcrs', '7', '--pcr-signatures', sigs)
        r, _, f = self.doctor('--pcr-signatures', sigs, node=p)
        self.assert_finding(f, 'pcr.dir', 'error', 'is missing')
        os.makedirs(sigs)
        r, _, f = self.doctor('--pcr-signatures', sigs, node=p)
        self.assert_finding(f, 'keys.pcr', 'error', 'no signature approves it')
        values = run_cli('pcr-read', '--tcti', p.tpm.tcti, '--pcrs', '7').stdout.strip()
        run_cli('pcr-sign', '--key', pcr_key, '--pcrs', values, '-o',
                os.path.join(sigs, 'boot.sig'))
        r, _, f = self.doctor('--pcr-signatures', sigs, node=p)
        self.assertNotIn('keys.pcr', f)
        self.assert_finding(f, 'keys.unseal', 'ok', 'unseals to its key_id')
        self.assert_finding(f, 'pcr.dir', 'ok', sigs)
        os.chmod(sigs, 0o777)
        r, _, f = self.doctor('--pcr-signatures', sigs, node=p)
        self.assert_finding(f, 'pcr.dir', 'warning', 'anyone can write')

    def test_a_configuration_file_that_does_not_parse(self):
        conf = os.path.join(self.root, 'bad.conf')
        with open(conf, 'w') as f:
            f.write('listen /run/x.sock\nno-such-setting 1\n')
        r = self.a.cli('doctor', '--config', conf, '--listen', self.a.daemon.sock, '--output',
                       'json', check=False)
        self.assertIn('bad.conf:2: unknown setting "no-such-setting"', r.stderr)
        f = {x['id']: x for x in json.loads(r.stdout)['findings']}
        self.assertEqual(r.returncode, 4)
        self.assert_finding(f, 'config.parse', 'error', 'does not parse')
        # The rest was still checked.
        self.assertEqual(f['tpm.srk']['level'], 'ok')


if __name__ == '__main__':
    unittest.main(verbosity=2)
