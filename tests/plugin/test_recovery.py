#!/usr/bin/python3
"""Escrow and disaster recovery (design brief §9): every dup generation is
duplicated to an offline recovery key when it is made; when the TPM is
lost, `recover` (offline, no TPM) re-wraps the escrowed generations to a
new node's TPM and `import` takes them. The software unwrap and wrap are
checked against tpm2-tools in both directions."""

import base64
import glob
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import unittest

import grpc

from clusterlib import (ClusterTest, bundle_text, der_items, duplicate_with_tools,
                        importable_pem, key_id_of, make_key, pem_blocks, read_text, snapshot,
                        write_file)
from kmsclient import Daemon, Swtpm, run_cli, scrape_metrics, tpm2_kms, wait_until


def counter_of(envelope):
    return int.from_bytes(envelope[37:45], 'big')


class EscrowTest(ClusterTest):
    def setUp(self):
        super().setUp()
        (self.recovery, self.recovery_node, self.recovery_fp,
         self.recovery_approval) = self.recovery_key()
        self.recovery_pub = self.recovery.replace('.pem', '.pub.pem')

    def escrowed_node(self, name='a'):
        return self.node_with_escrow(name, self.recovery_node, self.recovery_approval)

    def unseal(self, node, gen_file):
        """The KEK in clear, by stock tpm2-tools on node's TPM: the test's
        own knowledge, to look for it where it must not be."""
        items = der_items(pem_blocks(read_text(gen_file), 'TSS2 PRIVATE KEY')[0])
        write_file(node, 'u.pub', items[3][1])
        write_file(node, 'u.priv', items[4][1])
        node.tools('tpm2_load', '-C', '0x81000001', '-u', 'u.pub', '-r', 'u.priv', '-c', 'u.ctx')
        kek = node.tools('tpm2_unseal', '-c', 'u.ctx').stdout
        node.tools('tpm2_flushcontext', '-t')
        return kek

    def recover(self, target_file, bundles, out, key=None, check=True):
        return run_cli('recover', '--recovery-key', key or self.recovery, '--admin-key',
                       self.admin_pub, '--to', target_file, *bundles, '-o', out, check=check)


class OutputFiles(EscrowTest):
    def test_output_to_a_pipe_is_written_not_replaced(self):
        # -o on a FIFO (or /dev/stdout) writes into it; an earlier version
        # renamed a temporary file over it.
        import threading
        fifo = os.path.join(self.root, 'fifo')
        os.mkfifo(fifo)
        got = []

        def read_fifo():
            with open(fifo) as f:
                got.append(f.read())
        reader = threading.Thread(target=read_fifo)
        reader.start()
        run_cli('node-key', '--public', self.recovery_pub, '-o', fifo)
        reader.join(30)
        self.assertTrue(os.path.exists(fifo) and not os.path.isfile(fifo))
        self.assertEqual(got, [read_text(self.recovery_node)])


class Disaster(EscrowTest):
    def test_whole_disaster(self):
        a = self.escrowed_node()
        a.daemon.start()
        c = a.daemon.client()
        made = [(s, c.encrypt(s)) for s in (os.urandom(32) for _ in range(25))]
        second = a.cli('rotate').stdout.strip()                   # while serving
        wait_until(lambda: a.key_id() == second, 'the daemon to write under generation 2')
        made += [(s, c.encrypt(s)) for s in (os.urandom(32) for _ in range(25))]
        c.close()
        self.assertEqual(len(made), 50)
        first = made[0][1].key_id
        self.assertEqual({e.key_id for _, e in made}, {first, second})
        keys = a.offline('keys').stdout
        self.assertRegex(keys, r'\n1 +\S+ +\S+ +decrypt-only +dup +yes ')
        self.assertRegex(keys, r'\n2 +\S+ +\S+ +write +dup +yes ')
        keks = [self.unseal(a, os.path.join(a.state, 'gen-%06d.pem' % g)) for g in (1, 2)]
        old_counter = max(counter_of(e.ciphertext) for _, e in made)

        # The backup of the state directory is all that survives; the TPM
        # is destroyed (its state deleted) and replaced by an empty one.
        backup = os.path.join(self.root, 'backup')
        shutil.copytree(a.state, backup)
        a.daemon.stop()
        a.tpm.kill()
        shutil.rmtree(a.tpm.state)
        new = self.node('new')
        new_file, _ = new.node_file()
        bundle = os.path.join(self.root, 'recovered.bundle')
        escrow = sorted(glob.glob(os.path.join(backup, 'escrow', 'gen-*.pem')))
        self.assertEqual(len(escrow), 2)
        r = self.recover(new_file, escrow, bundle)
        # The KEKs are in clear only inside recover: not in what it wrote or
        # printed, not in the escrow files.
        written = [read_text(bundle).encode(), r.stdout.encode(), r.stderr.encode()]
        for p in escrow:
            with open(p, 'rb') as f:
                written.append(f.read())
        for kek in keks:
            self.assertEqual(len(kek), 32)
            for blob in written:
                for form in (kek, kek.hex().encode(), base64.b64encode(kek)):
                    self.assertNotIn(form, blob)
        self.assertEqual(new.cli('import', '--admin-key', self.admin_pub, bundle).stdout, '2 generations added\n')
        new.daemon.start()
        self.assertEqual(new.key_id(), second)
        c = new.daemon.client()
        for seed, e in made:
            self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, seed)
        e = c.encrypt(b'after the recovery')
        self.assertEqual(e.key_id, second)
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'after the recovery')
        # The counter is the new TPM's.
        self.assertLess(counter_of(e.ciphertext), old_counter)
        c.close()

    def test_rsa_recovery_key(self):
        self.recovery = os.path.join(self.root, 'rsa-recovery.pem')
        self.recovery_pub = make_key(self.recovery, kind=2048)
        self.recovery_node = os.path.join(self.root, 'rsa-recovery.node')
        run_cli('node-key', '--public', self.recovery_pub, '-o', self.recovery_node)
        self.recovery_approval, _ = self.approve(self.recovery_node,
                                                 out=os.path.join(self.root, 'rsa.approval'))
        a = self.escrowed_node()
        first = re.search(r'tpm2-kms-g1-\S+', a.offline('keys').stdout).group(0)
        new = self.node('new')
        new_file, _ = new.node_file()
        bundle = os.path.join(self.root, 'b')
        self.recover(new_file, [os.path.join(a.state, 'escrow', 'gen-000001.pem')], bundle)
        new.cli('import', '--admin-key', self.admin_pub, bundle)
        self.assertIn(first, new.offline('keys').stdout)


class Independence(EscrowTest):
    """The software unwrap and wrap judged by tpm2-tools."""

    def test_tpm2_tools_duplicate_recovers(self):
        # tpm2_duplicate, through the policy our approval satisfies, to the
        # recovery node: recover opens it.
        a = self.first_node()
        gen = os.path.join(a.state, 'gen-000001.pem')
        r = duplicate_with_tools(a, gen, self.recovery_node, self.recovery_approval,
                                 self.admin_pub)
        self.assertEqual(r.returncode, 0, r.stderr)
        kek = self.unseal(a, gen)
        state = read_text(os.path.join(a.state, 'state'))
        admin = bytes.fromhex(re.search(r'^admin-key (\S+)$', state, re.M).group(1))
        key_id = re.search(r'key-id (\S+)', state).group(1)
        created = int(re.search(r'created (\d+)', state).group(1))
        with open(os.path.join(a.root, 'g.pub'), 'rb') as f:
            pub = f.read()
        with open(os.path.join(a.root, 'tools.dpriv'), 'rb') as f:
            dup = f.read()
        with open(os.path.join(a.root, 'tools.seed'), 'rb') as f:
            seed = f.read()
        node_name = bytes.fromhex(self.recovery_fp)
        tools_bundle = os.path.join(self.root, 'tools.bundle')
        # The generation's certificate names the sealed object, not its
        # wrapping: A's own certificate goes with tpm2-tools' duplicate.
        cert = [l for l in read_text(os.path.join(a.state, 'gen-000001.cert')).splitlines()
                if l.startswith('certificate ')]
        with open(tools_bundle, 'w') as f:
            f.write(bundle_text(node_name, admin, [(1, created, key_id, True,
                                                    importable_pem(pub, dup, seed), kek,
                                                    *cert)]))
        new = self.node('new')
        new_file, _ = new.node_file()
        out = os.path.join(self.root, 'out')
        self.recover(new_file, [tools_bundle], out)
        new.cli('import', '--admin-key', self.admin_pub, out)
        self.assertIn(key_id, new.offline('keys').stdout)

    def test_recovered_bundle_imports_with_tpm2_tools(self):
        # recover's software wrap, taken by stock tpm2_import.
        a = self.escrowed_node()
        kek = self.unseal(a, os.path.join(a.state, 'gen-000001.pem'))
        new = self.node('new')
        new_file, _ = new.node_file()
        out = os.path.join(self.root, 'out')
        self.recover(new_file, [os.path.join(a.state, 'escrow', 'gen-000001.pem')], out)
        items = der_items(pem_blocks(read_text(out), 'TSS2 PRIVATE KEY')[0])
        secret = der_items(b'\x30\x00' + items[2][1])
        write_file(new, 'r.pub', items[4][1])
        write_file(new, 'r.dpriv', items[5][1])
        write_file(new, 'r.seed', secret[0][1])
        new.tools('tpm2_import', '-C', '0x81000001', '-u', 'r.pub', '-i', 'r.dpriv', '-s',
                  'r.seed', '-r', 'r.priv')
        new.tools('tpm2_load', '-C', '0x81000001', '-u', 'r.pub', '-r', 'r.priv', '-c', 'r.ctx')
        self.assertEqual(new.tools('tpm2_unseal', '-c', 'r.ctx').stdout, kek)
        new.tools('tpm2_flushcontext', '-t')


class RecoverRefusals(EscrowTest):
    def setUp(self):
        super().setUp()
        self.a = self.escrowed_node()
        self.escrow = os.path.join(self.a.state, 'escrow', 'gen-000001.pem')
        self.new = self.node('new')
        self.new_file, _ = self.new.node_file()
        self.out = os.path.join(self.root, 'out')

    def refused(self, why, bundles=None, key=None, target=None):
        r = self.recover(target or self.new_file, bundles or [self.escrow], self.out, key=key,
                         check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(why, r.stderr)
        self.assertFalse(os.path.exists(self.out))

    def test_wrong_recovery_key(self):
        other = os.path.join(self.root, 'other.pem')
        make_key(other)
        self.refused('not to this recovery key', key=other)
        self.refused('is not a PEM private recovery key', key=self.recovery_pub)

    def test_target_not_a_storage_key(self):
        self.refused('not a node file', target=self.recovery_pub)
        # The admin key as a node file: a signing key, not a storage key.
        pub = pem_blocks(read_text(self.new_file), 'TPM2-KMS NODE')[0]
        attrs = int.from_bytes(pub[6:10], 'big') | 0x00040000          # sign
        bad = os.path.join(self.root, 'bad.node')
        with open(bad, 'w') as f:
            f.write('-----BEGIN TPM2-KMS NODE-----\n%s\n-----END TPM2-KMS NODE-----\n' %
                    base64.b64encode(pub[:6] + attrs.to_bytes(4, 'big') + pub[10:]).decode())
        self.refused('not a storage key', target=bad)

    def test_any_altered_byte(self):
        text = read_text(self.escrow)
        damaged = os.path.join(self.root, 'damaged')
        # Every byte, newlines included. The sanitizer build, which runs
        # the same refusals for memory errors at several times the cost,
        # alters every fourth byte: each field still has many altered.
        sanitized = 'asan' in subprocess.run(['ldd', tpm2_kms()], capture_output=True,
                                             text=True).stdout
        positions = range(0, len(text), 4 if sanitized else 1)
        for i in positions:
            c = text[i]
            repl = '0' if c != '0' else '1'
            if c in 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=':
                repl = 'A' if c != 'A' else 'B'
            with open(damaged, 'w') as f:
                f.write(text[:i] + repl + text[i + 1:])
            r = self.recover(self.new_file, [damaged], self.out, check=False)
            self.assertEqual(r.returncode, 1, 'byte %d (%r) altered: %s' % (i, c, r.stderr))
            self.assertFalse(os.path.exists(self.out))
        self.assertGreater(len(positions), 250 if sanitized else 1000)
        # Truncated anywhere.
        for n in (len(text) - 1, len(text) // 2, 10):
            with open(damaged, 'w') as f:
                f.write(text[:n])
            r = self.recover(self.new_file, [damaged], self.out, check=False)
            self.assertEqual(r.returncode, 1)
        self.assertFalse(os.path.exists(self.out))

    def test_under_valgrind(self):
        # The recovery process under memcheck: no error, no definite leak.
        if 'asan' in subprocess.run(['ldd', tpm2_kms()], capture_output=True,
                                    text=True).stdout:
            self.skipTest('sanitizer build: valgrind cannot run it')
        r = subprocess.run(['valgrind', '--quiet', '--error-exitcode=99', '--leak-check=full',
                            '--errors-for-leak-kinds=definite', '--show-leak-kinds=definite',
                            tpm2_kms(), 'recover', '--recovery-key', self.recovery,
                            '--admin-key', self.admin_pub, '--to',
                            self.new_file, self.escrow, '-o', self.out],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.new.cli('import', '--admin-key', self.admin_pub, self.out)


class EscrowAtRotation(EscrowTest):
    def test_escrow_failure_leaves_generation_unpromoted(self):
        a = self.escrowed_node()
        a.daemon.start()
        first = a.key_id()
        # Something in the way of the escrow file: the write fails, even as
        # root (a mode would not stop root).
        os.mkdir(os.path.join(a.state, 'escrow', 'gen-000002.pem'))
        r = a.cli('rotate', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('could not be escrowed: it stays decrypt-only', r.stderr)
        keys = a.offline('keys').stdout
        self.assertRegex(keys, r'\n1 +\S+ +\S+ +write +dup +yes ')
        self.assertRegex(keys, r'\n2 +\S+ +\S+ +decrypt-only +dup +no ')
        self.assertEqual(a.key_id(), first)
        self.assertEqual(a.daemon.healthz(), 'ok')
        r = a.offline('promote', '2', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('not escrowed', r.stderr)
        # Fixed: init escrows what is missing, then promote.
        os.rmdir(os.path.join(a.state, 'escrow', 'gen-000002.pem'))
        a.cli('init')
        self.assertRegex(a.offline('keys').stdout, r'\n2 +\S+ +\S+ +decrypt-only +dup +yes ')
        a.offline('promote', '2')
        wait_until(lambda: a.key_id() != first, 'the daemon to follow the promotion')

    def test_status_says_when_the_write_key_is_not_escrowed(self):
        a = self.escrowed_node()
        a.daemon.extra += ['--metrics-listen', os.path.join(a.root, 'metrics.sock')]
        a.daemon.start()
        os.unlink(os.path.join(a.state, 'escrow', 'gen-000001.pem'))
        a.daemon.proc.proc.send_signal(1)                 # SIGHUP: reload
        wait_until(lambda: 'not escrowed' in (a.daemon.healthz() or ''), 'Status to say so')
        self.assertIn('tpm2kms_escrow_missing 1', self.scrape(a))
        self.assertIn('tpm2kms_kek_generation_escrowed{generation="1"} 0', self.scrape(a))
        self.assertRegex(a.offline('keys').stdout, r'\n1 +\S+ +\S+ +write +dup +no ')
        a.cli('init')                                     # escrows it again
        wait_until(lambda: a.daemon.healthz() == 'ok', 'healthy again')
        self.assertIn('tpm2kms_escrow_missing 0', self.scrape(a))

    def test_a_dup_pcr_write_key_is_monitored_alike(self):
        # Escrow was checked for `dup` only: a `dup+pcr` write key without
        # its escrow file showed Status ok, tpm2kms_escrow_missing 0 and
        # ESCROW "-".
        import hashlib
        a = self.node('a')
        a.tools('tpm2_pcrextend', '7:sha256=' + hashlib.sha256(b'boot').hexdigest())
        pcr_key = os.path.join(self.root, 'pcr.pem')
        pcr_pub = make_key(pcr_key)
        sigs = os.path.join(a.root, 'sigs')
        os.makedirs(sigs)
        values = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stdout.strip()
        run_cli('pcr-sign', '--key', pcr_key, '--pcrs', values, '-o',
                os.path.join(sigs, 'boot.sig'))
        node_file, _ = a.node_file()
        approval, _ = self.approve(node_file)
        a.cli('init', '--admin-key', self.admin_pub, '--approval', approval, '--pcr-key', pcr_pub,
              '--pcrs', '7', '--pcr-signatures', sigs, '--escrow-to', self.recovery_node,
              '--escrow-approval', self.recovery_approval)
        self.assertRegex(a.offline('keys').stdout, r'\n1 +\S+ +\S+ +write +dup\+pcr +yes ')
        a.daemon.extra += ['--metrics-listen', os.path.join(a.root, 'metrics.sock'),
                           '--pcr-signatures', sigs]
        a.daemon.start()
        self.assertIn('tpm2kms_escrow_missing 0', self.scrape(a))
        os.unlink(os.path.join(a.state, 'escrow', 'gen-000001.pem'))
        a.daemon.proc.proc.send_signal(1)                 # SIGHUP: reload
        wait_until(lambda: 'not escrowed' in (a.daemon.healthz() or ''), 'Status to say so')
        self.assertIn('tpm2kms_escrow_missing 1', self.scrape(a))
        self.assertIn('tpm2kms_kek_generation_escrowed{generation="1"} 0', self.scrape(a))
        self.assertRegex(a.offline('keys').stdout, r'\n1 +\S+ +\S+ +write +dup\+pcr +no ')
        a.cli('init', '--pcr-signatures', sigs)           # escrows it again
        wait_until(lambda: a.daemon.healthz() == 'ok', 'healthy again')
        self.assertIn('tpm2kms_escrow_missing 0', self.scrape(a))

    def test_retire_keeps_the_escrow_file_and_says_so(self):
        a = self.escrowed_node()
        a.cli('rotate')
        # No audit of etcd here (test_audit.py has those): --force.
        r = a.offline('retire', '1', '--force')
        escrow = os.path.join(a.state, 'escrow', 'gen-000001.pem')
        self.assertTrue(os.path.exists(escrow))
        self.assertIn('its escrow file %s is kept' % escrow, r.stderr)
        self.assertIn('remove it yourself once no backup does', r.stderr)
        self.assertFalse(os.path.exists(os.path.join(a.state, 'gen-000001.pem')))
        self.assertFalse(os.path.exists(os.path.join(a.state, 'gen-000001.cert')))

    @staticmethod
    def scrape(node):
        return scrape_metrics(os.path.join(node.root, 'metrics.sock'))

    def test_escrow_needs_a_valid_approval(self):
        # An approval of another node, or none: refused, nothing recorded.
        a = self.first_node()
        other = self.node('b')
        other_file, _ = other.node_file()
        wrong, _ = self.approve(other_file)
        before = snapshot(a.state)
        r = a.cli('init', '--escrow-to', self.recovery_node, '--escrow-approval', wrong,
                  check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('approves another node', r.stderr)
        r = a.cli('rotate', '--escrow-to', self.recovery_node, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('needs both escrow-to and escrow-approval', r.stderr)
        self.assertEqual(snapshot(a.state), before)
        self.assertFalse(os.path.exists(os.path.join(a.state, 'escrow')))


if __name__ == '__main__':
    unittest.main(verbosity=2)
