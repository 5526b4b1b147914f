#!/usr/bin/python3
"""Several control-plane nodes, one set of keys (design brief §9): `dup`
generations duplicated TPM to TPM under an admin key's approval, staged
rotation across nodes while they serve, every refusal, and independent
checks with tpm2-tools and openssl. Each node is a swtpm, a state directory
and a daemon of its own."""

import base64
import os
import re
import shutil
import unittest

import grpc

from clusterlib import (ClusterTest, Node, der_items, duplicate_with_tools, key_id_of, make_key,
                        openssl, pem_blocks, read_text, snapshot, write_file)
from kmsclient import Daemon, Swtpm, run_cli, wait_until


class ThreeNodes(ClusterTest):
    def check_cluster(self, nodes, made):
        """No node writes under a key another cannot read: whatever each
        node's Status names, a ciphertext it makes decrypts on every node."""
        clients = {n.name: n.daemon.client() for n in nodes}
        try:
            for n in nodes:
                c = clients[n.name]
                st = c.status()
                self.assertEqual(st.healthz, 'ok', n.name)
                seed = os.urandom(32)
                e = c.encrypt(seed)
                self.assertEqual(e.key_id, st.key_id)
                made.append((seed, e.ciphertext, e.key_id))
                for m in nodes:
                    self.assertEqual(clients[m.name].decrypt(e.ciphertext, e.key_id).plaintext,
                                     seed, '%s -> %s' % (n.name, m.name))
        finally:
            for c in clients.values():
                c.close()

    def wait_key_id(self, node, key_id):
        wait_until(lambda: node.key_id() == key_id, '%s to write under %s' % (node.name, key_id))

    def test_join_and_staged_rotation(self):
        a, b, c = self.first_node(), self.node('b'), self.node('c')
        keys = run_cli('keys', '--state-dir', a.state).stdout
        self.assertRegex(keys, r'1 +tpm2-kms-g1-[0-9a-f]{32} +\S+ +write +dup')
        self.join(a, b)
        self.join(a, c)
        for n in (a, b, c):
            n.daemon.start()
        first = a.key_id()
        self.assertEqual([b.key_id(), c.key_id()], [first, first])
        made = []
        self.check_cluster([a, b, c], made)

        # Rotation across nodes: stage, export/import everywhere, promote
        # everywhere; the cluster is checked after every step.
        staged = a.cli('rotate', '--stage').stdout.strip()
        self.assertRegex(staged, r'^tpm2-kms-g2-')
        self.assertEqual(a.key_id(), first)          # staged: not the write key
        self.check_cluster([a, b, c], made)
        for n in (b, c):
            # The approvals made at join time cover the new generation.
            node_file = os.path.join(n.root, 'node.pem')
            bundle = os.path.join(n.root, 'bundle-2')
            a.cli('export', '--to', node_file, '--approval', os.path.join(n.root, 'approval'),
                  '--generation', '2', '-o', bundle)
            self.assertEqual(n.cli('import', '--admin-key', self.admin_pub, bundle).stdout, '1 generation added\n')
            self.check_cluster([a, b, c], made)
        # What the guide says to check before promoting: every node's daemon
        # has the staged generation loaded.
        for n in (a, b, c):
            wait_until(lambda: re.search(r'\n2 +\S+ +\S+ +decrypt-only +dup +- +loaded ',
                                         n.offline('keys').stdout),
                       '%s to load generation 2' % n.name)
        for n in (a, b, c):
            n.offline('promote', '2')
            self.wait_key_id(n, staged)
            self.check_cluster([a, b, c], made)
        keys = run_cli('keys', '--state-dir', c.state).stdout
        self.assertRegex(keys, r'1 +tpm2-kms-g1-\S+ +\S+ +decrypt-only +dup')
        self.assertRegex(keys, r'2 +tpm2-kms-g2-\S+ +\S+ +write +dup')

        # Every ciphertext ever made decrypts everywhere, after restarts too.
        for n in (a, b, c):
            n.daemon.stop()
            n.daemon.start()
        for n in (a, b, c):
            cl = n.daemon.client()
            for seed, ct, kid in made:
                self.assertEqual(cl.decrypt(ct, kid).plaintext, seed)
            cl.close()
        self.assertEqual(len(made), 7 * 3)

    def test_plain_rotate_and_none_generations(self):
        # A node that started without an admin key: generation 1 is `none`.
        # Recording the admin key makes the next generation `dup`; only that
        # one can reach another node (the migration in docs/operations.md).
        a = self.node('a')
        a.cli('init')
        a.cli('init', '--admin-key', self.admin_pub)
        self.certify(a)              # its generations made from now on travel
        second = a.cli('rotate').stdout.strip()
        keys = run_cli('keys', '--state-dir', a.state).stdout
        self.assertRegex(keys, r'1 +\S+ +\S+ +decrypt-only +none')
        self.assertRegex(keys, r'2 +\S+ +\S+ +write +dup')
        b = self.node('b')
        self.join(a, b)
        keys = run_cli('keys', '--state-dir', b.state).stdout
        self.assertNotRegex(keys, r'\n1 ')
        a.daemon.start()
        b.daemon.start()
        self.assertEqual(b.key_id(), second)
        ca, cb = a.daemon.client(), b.daemon.client()
        e = ca.encrypt(b'seed under dup')
        self.assertEqual(cb.decrypt(e.ciphertext, e.key_id).plaintext, b'seed under dup')
        ca.close()
        cb.close()
        # A second admin key cannot replace the first in place.
        other_pub = make_key(os.path.join(self.root, 'other.pem'))
        before = snapshot(a.state)
        r = a.cli('init', '--admin-key', other_pub, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('another admin key', r.stderr)
        self.assertEqual(snapshot(a.state), before)


class Upgrade(ClusterTest):
    def test_state_of_0_1_0_serves_and_moves_to_dup(self):
        """A state directory and TPM from tpm2-kms 0.1.0 (tests/fixtures)
        keeps working, and moves to `dup` generations as the operations
        guide says: record the admin key, rotate, then join nodes."""
        src = os.path.join(os.environ.get('TOP_SRCDIR', '..'), 'tests', 'fixtures', 'v0.1.0')
        a = Node.__new__(Node)
        a.name, a.root = 'a', os.path.join(self.root, 'a')
        os.makedirs(os.path.join(a.root, 'swtpm', 'state'))
        shutil.copy(os.path.join(src, 'swtpm', 'tpm2-00.permall'),
                    os.path.join(a.root, 'swtpm', 'state'))
        shutil.copytree(os.path.join(src, 'state'), os.path.join(a.root, 'state'))
        os.chmod(os.path.join(a.root, 'state'), 0o700)
        a.tpm = Swtpm(a.root)
        a.tpm.start()
        a.daemon = Daemon(a.root, a.tpm)
        a.state = a.daemon.state_dir
        self.nodes.append(a)
        with open(os.path.join(src, 'ciphertext'), 'rb') as f:
            old = f.read()
        plain = b'written by tpm2-kms 0.1.0 before the ASN.1 templates'
        a.daemon.start()
        self.assertRegex(a.key_id(), r'^tpm2-kms-g2-307578fcf81f434908dd19f5666d5268$')
        c = a.daemon.client()
        self.assertEqual(c.decrypt(old, a.key_id()).plaintext, plain)
        c.close()

        a.cli('init', '--admin-key', self.admin_pub)
        self.certify(a)
        third = a.cli('rotate').stdout.strip()
        self.assertRegex(third, r'^tpm2-kms-g3-')
        wait_until(lambda: a.key_id() == third, 'the daemon to follow the rotation')
        b = self.node('b')
        self.join(a, b)
        b.daemon.start()
        self.assertEqual(b.key_id(), third)
        ca, cb = a.daemon.client(), b.daemon.client()
        e = ca.encrypt(b'under the first dup generation')
        self.assertEqual(cb.decrypt(e.ciphertext, e.key_id).plaintext,
                         b'under the first dup generation')
        # The `none` generations stayed on A: B cannot read what they wrap
        # until it is re-encrypted (then generations 1 and 2 are retired).
        with self.assertRaises(grpc.RpcError) as cm:
            cb.decrypt(old, 'tpm2-kms-g2-307578fcf81f434908dd19f5666d5268')
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(ca.decrypt(old, 'tpm2-kms-g2-307578fcf81f434908dd19f5666d5268')
                         .plaintext, plain)
        ca.close()
        cb.close()


class NodesBC(ClusterTest):
    """A set up with the admin key; B and C with node files, B approved."""

    def setUp(self):
        super().setUp()
        self.a = self.first_node()
        self.b = self.node('b')
        self.c = self.node('c')
        self.b_file, self.b_fp = self.b.node_file()
        self.c_file, self.c_fp = self.c.node_file()
        self.b_approval, _ = self.approve(self.b_file)


class Refusals(NodesBC):
    def refused(self, node, args, why, also=()):
        """The command fails with a one-line reason and every state directory
        involved is left byte for byte as it was."""
        dirs = [n.state for n in (node,) + tuple(also) if os.path.isdir(n.state)]
        before = [snapshot(d) for d in dirs]
        r = node.cli(*args, check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertTrue([l for l in r.stderr.splitlines() if ' error ' in l], r.stderr)
        self.assertIn(why, r.stderr)
        self.assertEqual([snapshot(d) for d in dirs], before)
        return r

    def export_args(self, node_file, approval, out):
        return ['export', '--to', node_file, '--approval', approval, '-o', out]

    def test_early_promote_is_refused(self):
        # rotate --stage && promote on A was accepted at once: B, which
        # shares A's keys, could not decrypt what A then wrote.
        a, b = self.a, self.b
        bundle = os.path.join(self.root, 'b1')
        a.cli(*self.export_args(self.b_file, self.b_approval, bundle))
        b.cli('import', '--admin-key', self.admin_pub, bundle)
        self.assertIn('exported to:  node %s (not attested), generation 1\n' % self.b_fp,
                      a.offline('keys').stdout)
        a.cli('rotate', '--stage')
        before = snapshot(a.state)
        # A generation the state does not hold: named, and how to get it.
        for cmd, said in (('promote', 'has no generation 9: stage it here, or import it'),
                          ('retire', 'has no generation 9')):
            r = a.offline(cmd, '9', check=False)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(said, r.stderr)
        self.assertEqual(snapshot(a.state), before)
        r = a.offline('promote', '2', check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('generation 2 was never exported to 1 node this node exports to (%s)'
                      % self.b_fp, r.stderr)
        self.assertIn('--force', r.stderr)
        self.assertEqual(snapshot(a.state), before)
        # The guide's order: export, import, then promote.
        a.cli('export', '--to', self.b_file, '--approval', self.b_approval, '--generation', '2',
              '-o', bundle)
        b.cli('import', '--admin-key', self.admin_pub, bundle)
        self.assertIn('exported to:  node %s (not attested), generations 1, 2\n' % self.b_fp,
                      a.offline('keys').stdout)
        a.offline('promote', '2')
        self.assertRegex(a.offline('keys').stdout, r'\n2 +\S+ +\S+ +write ')
        # --force, for a node that has it from elsewhere or is gone.
        a.cli('rotate', '--stage')
        r = a.offline('promote', '3', '--force')
        self.assertIn('never exported to %s (--force)' % self.b_fp, r.stderr)
        self.assertRegex(a.offline('keys').stdout, r'\n3 +\S+ +\S+ +write ')

    def test_export_refusals(self):
        out = os.path.join(self.root, 'out')
        self.refused(self.a, self.export_args(self.b_file, os.path.join(self.root, 'none'), out),
                     'no such file')
        # An approval for another node.
        self.refused(self.a, self.export_args(self.c_file, self.b_approval, out),
                     'approves another node')
        # An approval signed by another key than the recorded admin key.
        rogue = os.path.join(self.root, 'rogue.pem')
        make_key(rogue)
        rogue_approval, _ = self.approve(self.b_file, admin=rogue,
                                         out=os.path.join(self.root, 'rogue-approval'))
        self.refused(self.a, self.export_args(self.b_file, rogue_approval, out),
                     'signed by another key')
        # ... and one whose signer line was changed to the admin's Name.
        with open(self.b_approval) as f:
            genuine = f.read()
        signer = re.search(r'^signer (\S+)$', genuine, re.M).group(1)
        with open(rogue_approval) as f:
            forged = re.sub(r'^signer \S+$', 'signer ' + signer, f.read(), flags=re.M)
        forged_path = os.path.join(self.root, 'forged-approval')
        with open(forged_path, 'w') as f:
            f.write(forged)
        self.refused(self.a, self.export_args(self.b_file, forged_path, out),
                     "signature is not the admin key's")
        # A node file that is not a storage key: TPM_RH_NULL's Name would
        # duplicate in clear (brief §9), a signing key is no parent.
        bad_node = os.path.join(self.root, 'bad-node.pem')
        pub = pem_blocks(read_text(self.b_file), 'TPM2-KMS NODE')[0]
        attrs = int.from_bytes(pub[6:10], 'big') & ~0x00010000   # restricted off
        with open(bad_node, 'w') as f:
            f.write('-----BEGIN TPM2-KMS NODE-----\n%s\n-----END TPM2-KMS NODE-----\n' %
                    base64.b64encode(pub[:6] + attrs.to_bytes(4, 'big') + pub[10:]).decode())
        self.refused(self.a, self.export_args(bad_node, self.b_approval, out),
                     'not a storage key')
        self.assertFalse(os.path.exists(out))

    def test_none_generation_never_leaves(self):
        x = self.node('x')
        x.cli('init')
        x.cli('init', '--admin-key', self.admin_pub)
        x.cli('rotate')
        out = os.path.join(self.root, 'out')
        self.refused(x, self.export_args(self.b_file, self.b_approval, out) +
                     ['--generation', '1'], 'of kind none')
        # Without an admin key nothing is exportable at all.
        y = self.node('y')
        y.cli('init')
        self.refused(y, self.export_args(self.b_file, self.b_approval, out),
                     'records no admin key')
        self.assertFalse(os.path.exists(out))

    def test_approve_refusals(self):
        out = os.path.join(self.root, 'approval-out')
        for bad_admin in (self.admin_pub,                    # the public half
                          self.b_file):                      # not a key at all
            r = run_cli('approve', '--admin-key', bad_admin, self.b_file, '-o', out, check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn('is not a PEM private admin key', r.stderr)
        weak = os.path.join(self.root, 'weak.pem')
        openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024', '-out', weak)
        r = run_cli('approve', '--admin-key', weak, self.b_file, '-o', out, check=False)
        self.assertIn('neither ECC P-256/P-384 nor RSA 2048-4096', r.stderr)
        ed = os.path.join(self.root, 'ed.pem')
        openssl('genpkey', '-algorithm', 'ED25519', '-out', ed)
        r = run_cli('approve', '--admin-key', ed, self.b_file, '-o', out, check=False)
        self.assertEqual(r.returncode, 1)
        r = run_cli('approve', '--admin-key', self.admin, self.admin_pub, '-o', out, check=False)
        self.assertIn('not a node file', r.stderr)
        self.assertFalse(os.path.exists(out))
        # An encrypted admin key: a wrong passphrase is said to be one (it
        # read "not a PEM private admin key"), and the passphrase can come
        # from a file or the systemd credential, with no terminal.
        enc = os.path.join(self.root, 'admin-enc.pem')
        openssl('pkey', '-in', self.admin, '-aes-256-cbc', '-passout', 'pass:right one',
                '-out', enc)
        right, wrong = os.path.join(self.root, 'right'), os.path.join(self.root, 'wrong')
        with open(right, 'w') as f:
            f.write('right one\n')
        with open(wrong, 'w') as f:
            f.write('wrong one\n')
        r = run_cli('approve', '--admin-key', enc, '--passphrase-file', wrong, self.b_file,
                    '-o', out, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('the admin key %s does not open with that passphrase' % enc, r.stderr)
        self.assertFalse(os.path.exists(out))
        run_cli('approve', '--admin-key', enc, '--passphrase-file', right, self.b_file, '-o', out)
        os.unlink(out)
        creds = os.path.join(self.root, 'creds')
        os.makedirs(creds)
        shutil.copy(right, os.path.join(creds, 'passphrase'))
        run_cli('approve', '--admin-key', enc, self.b_file, '-o', out,
                env=dict(os.environ, CREDENTIALS_DIRECTORY=creds))
        self.assertTrue(os.path.exists(out))

    def bundle_for_b(self):
        bundle = os.path.join(self.root, 'b.bundle')
        self.a.cli(*self.export_args(self.b_file, self.b_approval, bundle))
        with open(bundle) as f:
            return bundle, f.read()

    def test_import_refusals(self):
        bundle, text = self.bundle_for_b()
        # A bundle for another node's TPM.
        self.refused(self.c, ['import', '--admin-key', self.admin_pub, bundle],
                     'was exported for node ' + self.b_fp)
        # node-key made the directory (for the signing key); nothing else.
        self.assertFalse(os.path.exists(os.path.join(self.c.state, 'state')))

        damaged = os.path.join(self.root, 'damaged')

        def attempt(content, why):
            with open(damaged, 'w') as f:
                f.write(content)
            self.refused(self.b, ['import', '--admin-key', self.admin_pub, damaged], why)
            self.assertFalse(os.path.exists(os.path.join(self.b.state, 'state')))

        # Truncated anywhere: the MACs, the last key, the header.
        attempt(text[:-30], 'not a valid bundle line')
        attempt(text[:text.index('mac ')], 'not a valid bundle line')
        attempt(text[:len(text) // 2], 'not a valid bundle line')
        # Altered: metadata the TPM does not protect, the key, the MAC.
        # (the creation time is signed by the node that made the key: its
        # certificate refuses it before the MAC is reached)
        attempt(text.replace(' created ', ' created 1', 1),
                "its certificate is not the creating node's signature")
        attempt(text.replace(' write\n', '\n', 1), 'no write generation')
        pem = re.search(r'-----BEGIN TSS2 PRIVATE KEY-----\n(.)', text)
        i = pem.end(1) + 40
        flipped = text[:i] + ('A' if text[i] != 'A' else 'B') + text[i + 1:]
        attempt(flipped, '')
        mac = re.search(r'^mac 1 ([0-9a-f])', text, re.M)
        attempt(text[:mac.start(1)] + ('0' if mac.group(1) != '0' else '1') +
                text[mac.end(1):], 'altered')

        # The genuine bundle imports, and importing it again changes nothing.
        self.b.cli('import', '--admin-key', self.admin_pub, bundle)
        once = snapshot(self.b.state)
        self.assertEqual(self.b.cli('import', '--admin-key', self.admin_pub, bundle).stdout, '0 generations added\n')
        self.assertEqual(snapshot(self.b.state), once)

    def test_generation_number_taken_by_another_key(self):
        # C was set up on its own: its generation 1 is another key.
        self.c.cli('init', '--admin-key', self.admin_pub)
        c_approval, _ = self.approve(self.c_file)
        bundle = os.path.join(self.root, 'c.bundle')
        self.a.cli(*self.export_args(self.c_file, c_approval, bundle))
        self.refused(self.c, ['import', '--admin-key', self.admin_pub, bundle],
                     'refusing to replace a key')
        # Another admin key's bundle is refused too.
        d = self.node('d')
        other_pub = make_key(os.path.join(self.root, 'other.pem'))
        d.cli('init', '--admin-key', other_pub)
        d_file, _ = d.node_file()
        d_approval, _ = self.approve(d_file)
        bundle_d = os.path.join(self.root, 'd.bundle')
        self.a.cli(*self.export_args(d_file, d_approval, bundle_d))
        self.refused(d, ['import', bundle_d], 'another admin key')


class Tpm2ToolsCrossCheck(NodesBC):
    """Our formats judged by tpm2-tools and openssl, not by our own code."""

    def unseal_with_tools(self, node, pub, dpriv, seed):
        """tpm2_import + tpm2_load + tpm2_unseal under node's SRK."""
        node.tools('tpm2_import', '-C', '0x81000001', '-u', pub, '-i', dpriv, '-s', seed,
                   '-r', 'imported.priv')
        node.tools('tpm2_load', '-C', '0x81000001', '-u', pub, '-r', 'imported.priv',
                   '-c', 'imported.ctx')
        kek = node.tools('tpm2_unseal', '-c', 'imported.ctx').stdout
        node.tools('tpm2_flushcontext', '-t')
        return kek

    def test_export_imports_with_tpm2_tools(self):
        bundle = os.path.join(self.root, 'b.bundle')
        self.a.cli('export', '--to', self.b_file, '--approval', self.b_approval, '-o', bundle)
        with open(bundle) as f:
            text = f.read()
        key_id = re.search(r'key-id (\S+)', text).group(1)
        items = der_items(pem_blocks(text, 'TSS2 PRIVATE KEY')[0])
        self.assertEqual(items[0][1], bytes.fromhex('6781050a0104'))   # id-importablekey
        secret = der_items(b'\x30\x00' + items[2][1])                   # [2] EXPLICIT
        pub = write_file(self.b, 'dup.pub', items[4][1])
        dpriv = write_file(self.b, 'dup.dpriv', items[5][1])
        seed = write_file(self.b, 'dup.seed', secret[0][1])
        kek = self.unseal_with_tools(self.b, pub, dpriv, seed)
        self.assertEqual(key_id_of(kek, 1), key_id)
        # The node's fingerprint is the Name tpm2-tools computes.
        node_pub = write_file(self.b, 'node.tpub', pem_blocks(read_text(self.b_file),
                                                              'TPM2-KMS NODE')[0])
        out = self.b.tools('tpm2_loadexternal', '-C', 'n', '-u', node_pub, '-c', 'n.ctx').stdout
        self.b.tools('tpm2_flushcontext', '-t')
        self.assertIn(self.b_fp, out.decode())

    def test_duplicate_with_tpm2_tools(self):
        sealed = os.path.join(self.a.state, 'gen-000001.pem')
        r = duplicate_with_tools(self.a, sealed, self.b_file, self.b_approval, self.admin_pub)
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in ('g.pub', 'tools.dpriv', 'tools.seed'):
            shutil.copy(os.path.join(self.a.root, name), os.path.join(self.b.root, name))
        kek = self.unseal_with_tools(self.b, 'g.pub', 'tools.dpriv', 'tools.seed')
        keys = run_cli('keys', '--state-dir', self.a.state).stdout
        self.assertIn(key_id_of(kek, 1), keys)
        # A target the approval does not name: the TPM refuses with
        # tpm2-tools too.
        os.unlink(os.path.join(self.a.root, 'tools.dpriv'))
        r = duplicate_with_tools(self.a, sealed, self.c_file, self.b_approval, self.admin_pub)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b'PolicyAuthorize', r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.a.root, 'tools.dpriv')))


if __name__ == '__main__':
    unittest.main(verbosity=2)
