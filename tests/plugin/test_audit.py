#!/usr/bin/python3
"""tpm2-kms audit against a real etcd (Debian's etcd-server, TLS with client
certificates, started here): objects written as kube-apiserver writes them
(etcdlib.Apiserver: python3-cryptography, their DEK sources made by the real
daemon's Encrypt), the audit's findings, its record, and the retire guard
that relies on it."""

import glob
import json
import os
import pty
import re
import shutil
import sys
import time
import unittest

from etcdlib import Apiserver, AuditStack, Etcd, have_etcd
from kmsclient import Daemon, Swtpm, run_cli, scrape_metrics, tempdir, tpm2_kms, wait_until

NO_ETCD = 'etcd-server and etcd-client are not installed (scripts/install-deps.sh --test)'


@unittest.skipUnless(have_etcd(), NO_ETCD)
class AuditTest(unittest.TestCase):
    def setUp(self):
        self.root = tempdir('kmsa-')
        self.metrics = os.path.join(self.root, 'metrics.sock')
        self.stack = AuditStack(self.root, '--metrics-listen', self.metrics)
        self.tpm, self.daemon, self.etcd = self.stack.tpm, self.stack.daemon, self.stack.etcd
        self.kms = self.daemon.client()
        self.others = []

    def tearDown(self):
        self.kms.close()
        for d, t in self.others:
            d.stop()
            t.kill()
        self.stack.stop()
        result = self._outcome.result
        if any(t is self for t, _ in result.failures + result.errors):
            sys.stderr.write('--- daemon log ---\n%s\n--- etcd log ---\n%s\n' % (
                self.daemon.output()[-4000:], self.etcd.proc.output()[-3000:]))
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def audit(self, *extra, check_exit=None):
        r = run_cli('audit', *self.stack.audit_args(), *extra, check=False)
        if check_exit is not None:
            self.assertEqual(r.returncode, check_exit, r.stdout + r.stderr)
        return r

    def audit_json(self, *extra, check_exit=0):
        r = self.audit('--output', 'json', *extra, check_exit=check_exit)
        return json.loads(r.stdout)

    def revision(self):
        out = self.etcd.etcdctl('get', '/', '--prefix', '--keys-only', '-w', 'json').stdout
        return json.loads(out)['header']['revision']

    def gen(self, report, n):
        return next(g for g in report['generations'] if g['generation'] == n)

    def test_every_object_is_proved_and_recorded(self):
        seeds = Apiserver(self.kms)                 # HKDF seed, the default since 1.29
        keys = Apiserver(self.kms, dek_type=0)      # AES-GCM key, as before
        objects = {
            b'/registry/secrets/default/a': seeds,
            b'/registry/secrets/kube-system/b': keys,
            b'/registry/configmaps/default/c': seeds,
            # Cluster-scoped, and a custom resource under its group.
            b'/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com':
                seeds,
            b'/registry/example.com/widgets/default/w1': keys,
        }
        for k, api in objects.items():
            self.etcd.put(k, api.value(k, b'{"kind":"Secret"}' * 20,
                                       annotations={'note.example.com': b'1'}))
        self.etcd.put(b'/registry/namespaces/default', b'{"kind":"Namespace"}')
        self.etcd.put(b'/registry/events/default/e', b'k8s:enc:aescbc:v1:key1:' + os.urandom(64))
        self.etcd.put(b'/other/not-under-the-prefix', b'x')
        before = self.revision()

        rep = self.audit_json()
        self.assertTrue(rep['complete'])
        self.assertTrue(rep['all_decrypt'])
        self.assertEqual(rep['objects'], 7)
        self.assertEqual(rep['by_provider'], {'identity': 1, 'kms-v2': 5, 'aescbc': 1})
        self.assertEqual(rep['decrypted'], 5)
        self.assertEqual(rep['dek_sources'], 2, 'each DEK source is decrypted once')
        g1 = self.gen(rep, 1)
        self.assertEqual((g1['objects'], g1['decrypted'], g1['write']), (5, 5, True))
        self.assertEqual(rep['other_key_ids'], [])
        names = {r['resource'] for r in rep['resources']}
        self.assertEqual(names, {'secrets', 'configmaps', 'namespaces', 'events',
                                 'customresourcedefinitions.apiextensions.k8s.io',
                                 'widgets.example.com'})
        self.assertEqual(rep['failures'], [])
        self.assertEqual(self.revision(), before, 'the audit wrote to etcd')

        # Recorded, and shown by keys and the metrics.
        keys_out = run_cli('keys', '--state-dir', self.daemon.state_dir).stdout
        self.assertIn('last audit:', keys_out)
        self.assertIn(self.etcd.url, keys_out)
        self.assertIn('generation 1: 5 objects', keys_out)
        wait_until(lambda: 'tpm2kms_audit_objects{generation="1"} 5' in scrape_metrics(self.metrics),
                   'audit in the metrics', timeout=10)
        m = scrape_metrics(self.metrics)
        self.assertIn('tpm2kms_audit_complete 1', m)
        stamp = int(re.search(r'^tpm2kms_audit_timestamp_seconds (\d+)$', m, re.M).group(1))
        self.assertLessEqual(abs(stamp - time.time()), 60)

        # The people's form says the same.
        text = self.audit(check_exit=0).stdout
        self.assertIn('complete', text)
        self.assertIn('None: every object is under the write key.', text)

    def test_failures_are_named_with_their_etcd_keys(self):
        api = Apiserver(self.kms)
        good = b'/registry/secrets/default/good'
        self.etcd.put(good, api.value(good, b'fine'))
        # A flipped bit in the ciphertext: the tag no longer holds.
        bad = b'/registry/secrets/default/tampered'
        self.etcd.put(bad, api.value(bad, b'will be altered', tamper=True))
        # Moved: same bytes under another key, so the AAD differs.
        moved = b'/registry/secrets/default/moved'
        self.etcd.put(moved, api.value(good, b'copied'))
        self.etcd.put(b'/registry/secrets/default/garbled', b'k8s:enc:kms:v2:tpm2-kms:\xff\xff')
        self.etcd.put(b'/registry/secrets/default/clear', b'{"kind":"Secret"}')
        # Another cluster's plugin (its own TPM) wrote this one.
        other_root = os.path.join(self.root, 'other')
        os.makedirs(other_root)
        t = Swtpm(other_root)
        t.start()
        d = Daemon(other_root, t)
        d.start()
        self.others.append((d, t))
        c = d.client()
        foreign = Apiserver(c)
        c.close()
        fk = b'/registry/secrets/default/foreign'
        self.etcd.put(fk, foreign.value(fk, b'theirs'))

        rep = self.audit_json(check_exit=3)
        self.assertFalse(rep['all_decrypt'])
        reasons = {f['key']: f['reason'] for f in rep['failures']}
        self.assertIn('tag mismatch', reasons['/registry/secrets/default/tampered'])
        self.assertIn('tag mismatch', reasons['/registry/secrets/default/moved'])
        self.assertIn('malformed', reasons['/registry/secrets/default/garbled'])
        self.assertEqual(len(reasons), 3, reasons)
        self.assertEqual(self.gen(rep, 1)['decrypted'], 1)
        [other] = rep['other_key_ids']
        self.assertEqual((other['key_id'], other['objects'], other['decrypted']),
                         (foreign.key_id, 1, 0))
        self.assertIn('another cluster', other['why'])
        [secrets] = [r for r in rep['resources'] if r['resource'] == 'secrets']
        self.assertTrue(secrets['unencrypted_among_encrypted'])
        self.assertEqual(secrets['unencrypted_examples'], ['/registry/secrets/default/clear'])
        self.assertEqual(secrets['undecryptable'], 4)

        text = self.audit(check_exit=3).stdout
        self.assertIn('KEP-3926', text)
        self.assertIn('WARNING', text)
        self.assertIn('kubectl delete secrets -n default tampered '
                      '--ignore-store-read-error-with-cluster-breaking-potential=true', text)
        self.assertIn('not this node\'s', text)

    def test_retire_trusts_only_an_audit_made_after_the_rotation(self):
        sd = ['--state-dir', self.daemon.state_dir]
        old = Apiserver(self.kms)
        for i in range(3):
            k = b'/registry/secrets/default/s%d' % i
            self.etcd.put(k, old.value(k, b'v%d' % i))
        run_cli('rotate', '--tcti', self.tpm.tcti, *sd)
        wait_until(lambda: self.kms.status().key_id.startswith('tpm2-kms-g2-'), 'rotation seen')
        new = Apiserver(self.kms)
        k = b'/registry/secrets/default/fresh'
        self.etcd.put(k, new.value(k, b'new'))

        r = run_cli('retire', '1', *sd, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('no audit of etcd is recorded', r.stderr)

        # Right after the rotation an apiserver may still write under the
        # old key: an audit this early does not count.
        rep = self.audit_json()
        self.assertEqual((self.gen(rep, 1)['objects'], self.gen(rep, 2)['objects']), (3, 1))
        r = run_cli('retire', '1', *sd, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('began less than 120 s after generation 2 became the write key', r.stderr)

        # The rotation "long ago": the record is rewound instead of waiting
        # two minutes (the rule under test is the comparison, not the clock).
        since = os.path.join(self.daemon.state_dir, 'write-since')
        with open(since) as f:
            self.assertRegex(f.read(), r'^generation 2 since \d+\n$')
        with open(since, 'w') as f:
            f.write('generation 2 since %d\n' % (time.time() - 300))
        self.audit_json()
        r = run_cli('retire', '1', *sd, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('found 3 objects under generation 1', r.stderr)
        text = self.audit(check_exit=0).stdout
        self.assertIn('3 secrets are not under the write key (generation 2)', text)
        self.assertIn('kubectl get secrets --all-namespaces -o json | kubectl replace -f -', text)
        self.assertIn('kind: StorageVersionMigration', text)

        # Re-encrypted (the apiserver rewrites each under the new key).
        for i in range(3):
            k = b'/registry/secrets/default/s%d' % i
            self.etcd.put(k, new.value(k, b'v%d' % i))
        text = self.audit(check_exit=0).stdout
        self.assertIn('Generation 1 protects nothing in etcd: tpm2-kms retire 1', text)
        r = run_cli('retire', '1', *sd)
        self.assertIn('found no object under generation 1', r.stderr)
        self.assertNotIn('tpm2-kms-g1-', run_cli('keys', *sd).stdout)

    def test_a_snapshot_is_audited_in_a_private_etcd(self):
        api = Apiserver(self.kms)
        for i in range(4):
            k = b'/registry/secrets/default/s%d' % i
            self.etcd.put(k, api.value(k, b'v'))
        snap = os.path.join(self.root, 'backup.db')
        self.etcd.etcdctl('snapshot', 'save', snap)
        # Written after the backup: the snapshot audit must not see it.
        k = b'/registry/secrets/default/later'
        self.etcd.put(k, api.value(k, b'v'))
        live_before = os.path.exists(os.path.join(self.daemon.state_dir, 'audit'))
        tmp = os.path.join(self.root, 'tmp')
        os.makedirs(tmp)

        r = run_cli('audit', '--snapshot', snap, '--listen', self.daemon.sock,
                    '--state-dir', self.daemon.state_dir, '--output', 'json', check=False,
                    env=dict(os.environ, TMPDIR=tmp))
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = json.loads(r.stdout)
        self.assertTrue(rep['snapshot'])
        self.assertEqual(rep['source'], snap)
        self.assertEqual((rep['objects'], rep['decrypted']), (4, 4))
        self.assertEqual(rep['backup'], {'restorable_here': True,
                                         'restorable_from_escrow': False})
        self.assertEqual(os.listdir(tmp), [], 'the private etcd left files behind')
        with open(os.path.join(self.daemon.state_dir, 'audit-snapshot')) as f:
            self.assertIn('source %s\n' % snap, f.read())
        self.assertEqual(os.path.exists(os.path.join(self.daemon.state_dir, 'audit')),
                         live_before, 'a snapshot audit is not an audit of the live etcd')

        text = run_cli('audit', '--snapshot', snap, '--listen', self.daemon.sock,
                       '--state-dir', self.daemon.state_dir).stdout
        self.assertIn('restorable after losing this TPM (from escrow): NO', text)

        # A damaged snapshot: etcdctl's own words, and nothing left behind.
        with open(snap, 'r+b') as f:
            f.seek(4096)
            f.write(b'\0' * 64)
        r = run_cli('audit', '--snapshot', snap, '--listen', self.daemon.sock,
                    '--state-dir', self.daemon.state_dir, check=False,
                    env=dict(os.environ, TMPDIR=tmp))
        self.assertEqual(r.returncode, 1)
        self.assertIn('etcdctl snapshot restore', r.stderr)
        self.assertEqual(os.listdir(tmp), [])

    def test_a_terminal_gets_a_progress_line(self):
        api = Apiserver(self.kms)
        self.etcd.put_many((k, api.value(k, b'v')) for k in
                           (b'/registry/secrets/ns/s%05d' % i for i in range(2000)))
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(tpm2_kms(), [tpm2_kms(), 'audit'] + self.stack.audit_args())
        out = b''
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, out)
        self.assertRegex(out, rb'\raudit: 2000 objects read, 1 DEK sources decrypted\r?\n')
        # Not on a pipe: the report alone.
        self.assertNotIn('objects read', self.audit(check_exit=0).stderr)

    def test_tls_is_required_as_etcd_asks(self):
        r = run_cli('audit', *self.etcd.cli_args(with_client_cert=False),
                    '--listen', self.daemon.sock, '--state-dir', self.daemon.state_dir,
                    check=False)
        self.assertEqual(r.returncode, 1)
        # TLS 1.3: etcd's refusal arrives after the handshake, as an alert
        # or as the connection closed under the first request.
        self.assertRegex(r.stderr, 'alert (bad certificate|certificate required)|'
                                   'does it accept this client certificate')
        # A CA that did not sign etcd's certificate.
        other = Etcd(os.path.join(self.root, 'other'))
        r = run_cli('audit', '--endpoints', self.etcd.url, '--cacert', other.pki['ca.crt'],
                    '--cert', self.etcd.pki['client.crt'], '--key', self.etcd.pki['client.key'],
                    '--listen', self.daemon.sock, '--state-dir', self.daemon.state_dir,
                    check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("the server's certificate", r.stderr)
        # A list: the first endpoint is down, the second answers.
        r = run_cli('audit', '--endpoints', 'https://127.0.0.1:1,' + self.etcd.url,
                    *self.etcd.cli_args()[2:], '--listen', self.daemon.sock,
                    '--state-dir', self.daemon.state_dir, check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('audit of %s' % self.etcd.url, r.stdout)


@unittest.skipUnless(have_etcd(), NO_ETCD)
class IncompleteAudit(unittest.TestCase):
    def test_an_audit_that_cannot_read_everything_proves_nothing(self):
        # A value over the audit's 16 MiB page limit (etcd takes it with a
        # raised --max-request-bytes): the walk stops there, the record
        # says incomplete, and retire trusts none of it.
        root = tempdir('kmsc-')
        stack = AuditStack(root, tls=False)
        try:
            api = Apiserver(stack.daemon.client())
            stack.etcd.stop()
            stack.etcd = Etcd(root + '/big', tls=False, extra=['--max-request-bytes', str(20 << 20)])
            stack.etcd.start()
            for name in ('a', 'b'):
                k = b'/registry/secrets/default/' + name.encode()
                stack.etcd.put(k, api.value(k, b'v'))
            stack.etcd.put(b'/registry/configmaps/default/huge', b'x' * (17 << 20))
            run_cli('rotate', '--tcti', stack.tpm.tcti, '--state-dir', stack.daemon.state_dir)
            with open(os.path.join(stack.daemon.state_dir, 'write-since'), 'w') as f:
                f.write('generation 2 since 1\n')
            r = run_cli('audit', *stack.audit_args()[:2], '--listen', stack.daemon.sock,
                        '--state-dir', stack.daemon.state_dir, '--output', 'json', check=False)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn('is over 16 MiB, the audit\'s limit', r.stderr)
            self.assertIn('the audit stopped after 0 objects', r.stderr)
            rep = json.loads(r.stdout)
            self.assertEqual((rep['complete'], rep['all_decrypt']), (False, False))
            self.assertFalse(any(g['retirable'] for g in rep['generations']))
            with open(os.path.join(stack.daemon.state_dir, 'audit')) as f:
                self.assertIn('complete no\n', f.read())
            r = run_cli('retire', '1', '--state-dir', stack.daemon.state_dir, check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn('is incomplete: run tpm2-kms audit again', r.stderr)
        finally:
            stack.stop()
        shutil.rmtree(root, ignore_errors=True)


@unittest.skipUnless(have_etcd(), NO_ETCD)
class PlainEtcd(unittest.TestCase):
    def test_plain_http_etcd_and_an_empty_prefix(self):
        root = tempdir('kmsb-')
        stack = AuditStack(root, tls=False)
        try:
            r = run_cli('audit', *stack.audit_args(), '--prefix', '/custom', '--output', 'json')
            rep = json.loads(r.stdout)
            self.assertEqual((rep['complete'], rep['objects'], rep['prefix']),
                             (True, 0, '/custom'))
            r = run_cli('audit', *stack.etcd.cli_args(), '--output', 'yaml', check=False)
            self.assertEqual(r.returncode, 2)
            self.assertIn('is not text or json', r.stderr)
        finally:
            stack.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    unittest.main(verbosity=2)
