#!/usr/bin/python3
"""Key custody under an adversary (design brief §9.1): a generation becomes
usable on a node only if a node the admin approved created it, provable
offline back to the admin key the operator gives. The attacks are the ones
the third review reproduced: an attacker holding only public or
backed-up material (the admin's public key, a victim's node file and its
genuine approval, the recovery node and its approval) makes a KEK of their
own on their own TPM and hands it over as a bundle or an escrow file. The
attacker's files are made here with tpm2-tools and the test's own bundle
writer, not by our export, which refuses to write them. openssl checks our
signatures from the files alone."""

import glob
import hashlib
import os
import re
import shutil
import unittest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clusterlib import (ClusterTest, bundle_text, der_items, duplicate_with_tools,
                        importable_pem, key_id_of, make_key, openssl, pem_blocks, read_text,
                        snapshot, write_file)
from kmsclient import run_cli


def sealed_blobs(node, sealed_file):
    """A sealed generation file's TPM2B_PUBLIC and TPM2B_PRIVATE."""
    items = der_items(pem_blocks(read_text(sealed_file), 'TSS2 PRIVATE KEY')[0])
    return items[3][1], items[4][1]


def name_of(tpm2b_public):
    """A TPM Name: SHA-256 algorithm id || SHA-256(TPMT_PUBLIC)."""
    return b'\x00\x0b' + hashlib.sha256(tpm2b_public[2:]).digest()


def certificate_message(number, kind, created, key_id, obj_pub):
    """What a generation certificate signs (provenance.h), written here."""
    return (b'tpm2-kms generation v1\n' + number.to_bytes(4, 'big') + kind.encode() + b'\n' +
            created.to_bytes(8, 'big') + key_id.encode() + b'\n' + (34).to_bytes(2, 'big') +
            name_of(obj_pub))


def sign_with_node(node, msg):
    """The node's own signing key signs msg, by stock tpm2-tools: DER."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    write_file(node, 'msg.bin', msg)
    sk = der_items(pem_blocks(read_text(os.path.join(node.state, 'node-signing-key.pem')),
                              'TSS2 PRIVATE KEY')[0])
    write_file(node, 's.pub', sk[3][1])
    write_file(node, 's.priv', sk[4][1])
    node.tools('tpm2_load', '-C', '0x81000001', '-u', 's.pub', '-r', 's.priv', '-c', 's.ctx')
    node.tools('tpm2_sign', '-c', 's.ctx', '-g', 'sha256', '-f', 'plain', '-o', 'cert.sig',
               'msg.bin')
    node.tools('tpm2_flushcontext', '-t')
    with open(os.path.join(node.root, 'cert.sig'), 'rb') as f:
        sig = f.read()
    # tpm2-tools 5.4 writes an ECDSA signature in "plain" form as DER.
    if sig[0] == 0x30:
        return sig
    return encode_dss_signature(int.from_bytes(sig[:32], 'big'), int.from_bytes(sig[32:], 'big'))


def certificate_line(node, approval, number, kind, created, key_id, obj_pub):
    """A certificate line that node's TPM signs for whatever the test
    asks: the node is approved, so only the other checks can refuse it."""
    fields = dict(l.split(' ', 1) for l in read_text(approval).splitlines()
                  if not l.startswith('#'))
    node_pem = pem_blocks(read_text(os.path.join(node.state, 'node-signing-key.pem')),
                          'TSS2 PRIVATE KEY')[0]
    sign_pub = der_items(node_pem)[3][1]
    sig = sign_with_node(node, certificate_message(number, kind, created, key_id, obj_pub))
    return 'certificate %d %s %s %s %s' % (number, sign_pub.hex(), fields['node'],
                                           fields['node-statement'], sig.hex())


def unseal_with_tools(node, sealed_file):
    pub, priv = sealed_blobs(node, sealed_file)
    write_file(node, 'k.pub', pub)
    write_file(node, 'k.priv', priv)
    node.tools('tpm2_load', '-C', '0x81000001', '-u', 'k.pub', '-r', 'k.priv', '-c', 'k.ctx')
    kek = node.tools('tpm2_unseal', '-c', 'k.ctx').stdout
    node.tools('tpm2_flushcontext', '-t')
    return kek


def importable_parts(text):
    """pub, duplicate and seed of a bundle's first key."""
    items = der_items(pem_blocks(text, 'TSS2 PRIVATE KEY')[0])
    seed = der_items(b'\x30\x00' + items[2][1])[0][1]
    return items[4][1], items[5][1], seed


class Attacker(ClusterTest):
    def attacker_generation(self, m, number):
        """The attacker's own TPM makes a dup generation under the real
        admin's public key (no private key needed for that), and unseals it
        with stock tpm2-tools: the attacker knows the KEK."""
        m.cli('init', '--admin-key', self.admin_pub)
        for _ in range(number - 1):
            m.cli('rotate')
        gen = os.path.join(m.state, 'gen-%06d.pem' % number)
        pub, priv = sealed_blobs(m, gen)
        write_file(m, 'k.pub', pub)
        write_file(m, 'k.priv', priv)
        m.tools('tpm2_load', '-C', '0x81000001', '-u', 'k.pub', '-r', 'k.priv', '-c', 'k.ctx')
        kek = m.tools('tpm2_unseal', '-c', 'k.ctx').stdout
        m.tools('tpm2_flushcontext', '-t')
        self.assertEqual(len(kek), 32)
        return gen, kek

    def forged_bundle(self, m, gen, number, kek, target_file, target_name, approval,
                      cert=()):
        """tpm2_duplicate of the attacker's generation to the target, through
        the target's genuine approval, written up as a bundle."""
        r = duplicate_with_tools(m, gen, target_file, approval, self.admin_pub)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(m.root, 'g.pub'), 'rb') as f:
            pub = f.read()
        with open(os.path.join(m.root, 'tools.dpriv'), 'rb') as f:
            dup = f.read()
        with open(os.path.join(m.root, 'tools.seed'), 'rb') as f:
            seed = f.read()
        admin_der = openssl('pkey', '-pubin', '-in', self.admin_pub, '-outform', 'DER')
        return bundle_text(target_name, admin_der,
                           [(number, 1700000000, key_id_of(kek, number), True,
                             importable_pem(pub, dup, seed), kek, *cert)])


class ForgedBundle(Attacker):
    def test_a_bundle_from_an_unapproved_node_is_refused(self):
        # The victim: a fresh node the admin approved (node file and
        # approval are public).
        v = self.node('v')
        v_file, v_fp = v.node_file()
        v_approval, _ = self.approve(v_file)
        m = self.node('m')
        gen, kek = self.attacker_generation(m, 1)
        bundle = os.path.join(self.root, 'forged.bundle')
        with open(bundle, 'w') as f:
            f.write(self.forged_bundle(m, gen, 1, kek, v_file, bytes.fromhex(v_fp),
                                       v_approval))
        before = snapshot(v.state)
        # 0.2.0 took the admin key from the bundle and adopted the KEK as
        # the write key.
        r = v.cli('import', bundle, check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('records no admin key: give the admin\'s public key', r.stderr)
        self.assertEqual(snapshot(v.state), before)
        # With the operator's admin key: the bundle is under that key, but
        # no approved node made the generation.
        r = v.cli('import', '--admin-key', self.admin_pub, bundle, check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('generation 1 carries no certificate of the node that made it', r.stderr)
        self.assertEqual(snapshot(v.state), before)

        # A certificate the attacker makes: their node signs, and their
        # own admin key approves their node. Not the operator's admin key.
        rogue = os.path.join(self.root, 'rogue.pem')
        make_key(rogue)
        m_file, _ = m.node_file()
        rogue_approval = os.path.join(self.root, 'rogue.approval')
        run_cli('approve', '--admin-key', rogue, m_file, '-o', rogue_approval)
        fields = dict(l.split(' ', 1) for l in read_text(rogue_approval).splitlines()
                      if not l.startswith('#'))
        m_sign = pem_blocks(read_text(m_file), 'TPM2-KMS NODE')[0]
        m_sign = m_sign[2 + int.from_bytes(m_sign[:2], 'big'):]
        # The certificate's own signature is a genuine one from the
        # attacker's TPM: record the rogue approval and let tpm2-kms sign.
        shutil.copy(rogue_approval, os.path.join(m.state, 'node-approval'))
        # (the rogue approval does not check out against the recorded admin
        # key, so tpm2-kms itself refuses to certify with it)
        r = m.cli('certify', '--approval', rogue_approval, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('signed by another key than the recorded admin key', r.stderr)
        # So the attacker signs the certificate message with tpm2-tools.
        created, key_id = 1700000000, key_id_of(kek, 1)
        pub, _ = sealed_blobs(m, gen)
        der_sig = sign_with_node(m, certificate_message(1, 'dup', created, key_id, pub))
        cert = 'certificate 1 %s %s %s %s' % (m_sign.hex(), fields['node'],
                                                fields['node-statement'], der_sig.hex())
        with open(bundle, 'w') as f:
            f.write(self.forged_bundle(m, gen, 1, kek, v_file, bytes.fromhex(v_fp),
                                       v_approval, cert=[cert]))
        r = v.cli('import', '--admin-key', self.admin_pub, bundle, check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('generation 1: the node that made it is not one the admin key approved',
                      r.stderr)
        self.assertEqual(snapshot(v.state), before)

        # A genuine certificate from a real, approved node, moved onto the
        # attacker's key: it names another sealed object.
        a = self.first_node('a')
        genuine = [l for l in read_text(os.path.join(a.state, 'gen-000001.cert')).splitlines()
                   if l.startswith('certificate ')]
        with open(bundle, 'w') as f:
            f.write(self.forged_bundle(m, gen, 1, kek, v_file, bytes.fromhex(v_fp),
                                       v_approval, cert=genuine))
        r = v.cli('import', '--admin-key', self.admin_pub, bundle, check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("its certificate is not the creating node's signature", r.stderr)
        self.assertEqual(snapshot(v.state), before)

    def test_another_admin_key_given_is_refused(self):
        # The victim records the real admin key; an operator who passes
        # another one to import is told, and nothing changes.
        a = self.first_node('a')
        b = self.node('b')
        bundle = self.join(a, b)
        other = os.path.join(self.root, 'other.pem')
        other_pub = make_key(other)
        before = snapshot(b.state)
        r = b.cli('import', '--admin-key', other_pub, bundle, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('is not the admin key', r.stderr)
        self.assertEqual(snapshot(b.state), before)


class ForgedEscrow(Attacker):
    def test_an_escrow_file_slipped_into_a_backup_is_refused(self):
        recovery, recovery_node, recovery_fp, recovery_approval = self.recovery_key()
        a = self.node_with_escrow('a', recovery_node, recovery_approval)
        a.cli('rotate')
        backup = os.path.join(self.root, 'backup')
        shutil.copytree(a.state, backup)
        # From the backup alone (the recovery node and its approval), the
        # attacker makes "generation 3" on their own TPM.
        m = self.node('m')
        gen, kek = self.attacker_generation(m, 3)
        with open(os.path.join(backup, 'escrow', 'gen-000003.pem'), 'w') as f:
            f.write(self.forged_bundle(m, gen, 3, kek, os.path.join(backup, 'escrow',
                                                                     'node.pem'),
                                       bytes.fromhex(recovery_fp),
                                       os.path.join(backup, 'escrow', 'approval')))
        new = self.node('new')
        new_file, _ = new.node_file()
        out = os.path.join(self.root, 'recovered')
        # Recovery as the guide says, every escrow file at once: 0.2.0 made
        # the attacker's generation 3 the write key.
        r = run_cli('recover', '--recovery-key', recovery, '--admin-key', self.admin_pub,
                    '--to', new_file, *sorted(glob.glob(os.path.join(backup, 'escrow',
                                                                     'gen-*.pem'))),
                    '-o', out, check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('generation 3: it carries no certificate of the node that made it',
                      r.stderr)
        self.assertFalse(os.path.exists(out))
        # The genuine escrow files recover, and import on a new node.
        r = run_cli('recover', '--recovery-key', recovery, '--admin-key', self.admin_pub,
                    '--to', new_file, *sorted(glob.glob(os.path.join(a.state, 'escrow',
                                                                     'gen-*.pem'))),
                    '-o', out)
        self.assertEqual(new.cli('import', '--admin-key', self.admin_pub, out).stdout,
                         '2 generations added\n')
        # recover takes the admin key from the operator only: another one is
        # refused, whatever the files say.
        other_pub = make_key(os.path.join(self.root, 'other.pem'))
        r = run_cli('recover', '--recovery-key', recovery, '--admin-key', other_pub,
                    '--to', new_file, os.path.join(a.state, 'escrow', 'gen-000001.pem'),
                    '-o', out + '2', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('made under another admin key than --admin-key', r.stderr)
        self.assertFalse(os.path.exists(out + '2'))


class Openssl(ClusterTest):
    def test_certificates_and_statements_verify_with_openssl(self):
        a = self.first_node('a')
        a.cli('rotate')
        b = self.node('b')
        bundle = self.join(a, b)
        text = read_text(bundle)
        admin_der = openssl('pkey', '-pubin', '-in', self.admin_pub, '-outform', 'DER')
        pems = pem_blocks(text, 'TSS2 PRIVATE KEY')
        certs = re.findall(r'^certificate (\d+) (\S+) (\S+) (\S+) (\S+)$', text, re.M)
        gens = re.findall(r'^generation (\d+) created (\d+) key-id (\S+) policy (\S+)', text,
                          re.M)
        self.assertEqual(len(certs), 2)
        self.assertEqual(len(gens), 2)
        self.assertIn(admin_der.hex(), text)
        for (number, sign_pub, storage, statement, sig), (n2, created, key_id, kind), pem in \
                zip(certs, gens, pems):
            self.assertEqual(number, n2)
            sign_pub = bytes.fromhex(sign_pub)
            # The signing key's public area: ECC P-256, x and y at the end.
            x = int.from_bytes(sign_pub[-66:-34], 'big')
            y = int.from_bytes(sign_pub[-32:], 'big')
            self.assertEqual(sign_pub[-68:-66], b'\x00\x20')
            key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
            key_pem = os.path.join(self.root, 'signing.pub.pem')
            with open(key_pem, 'wb') as f:
                f.write(key.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))
            # The admin's node statement over A's storage and signing keys.
            stmt = (b'tpm2-kms node v1\n' + (34).to_bytes(2, 'big') + bytes.fromhex(storage) +
                    (34).to_bytes(2, 'big') + name_of(sign_pub))
            self.verify(self.admin_pub, stmt, bytes.fromhex(statement))
            # The certificate over the generation, its Name computed here
            # from the key in the bundle.
            obj_pub = der_items(pem)[4][1]
            msg = (b'tpm2-kms generation v1\n' + int(number).to_bytes(4, 'big') +
                   kind.encode() + b'\n' + int(created).to_bytes(8, 'big') +
                   key_id.encode() + b'\n' + (34).to_bytes(2, 'big') + name_of(obj_pub))
            self.verify(key_pem, msg, bytes.fromhex(sig))
            with self.assertRaises(Exception):
                self.verify(key_pem, msg + b'x', bytes.fromhex(sig))
        # B keeps the certificates it imported, byte for byte.
        for number, *rest in certs:
            self.assertIn('certificate %s %s' % (number, ' '.join(rest)),
                          read_text(os.path.join(b.state, 'gen-%06d.cert' % int(number))))

    def verify(self, pub_pem, msg, sig):
        m = os.path.join(self.root, 'msg.bin')
        s = os.path.join(self.root, 'sig.der')
        with open(m, 'wb') as f:
            f.write(msg)
        with open(s, 'wb') as f:
            f.write(sig)
        out = openssl('dgst', '-sha256', '-verify', pub_pem, '-signature', s, m)
        self.assertIn(b'Verified OK', out)


class KeyChecks(ClusterTest):
    """Inputs that only one check refuses, each made here with a key the
    test knows: the check removed, they are taken (each was tried)."""

    def approved_a(self):
        a = self.node('a')
        node_file, _ = a.node_file()
        approval, _ = self.approve(node_file)
        a.cli('init', '--admin-key', self.admin_pub, '--approval', approval)
        return a, approval

    def admin_der(self):
        return openssl('pkey', '-pubin', '-in', self.admin_pub, '-outform', 'DER')

    def test_import_checks_the_key_against_its_key_id(self):
        # A bundle whose key_id is not its key's, with a certificate an
        # approved node signed for that key_id and MACs under the real key.
        a, a_approval = self.approved_a()
        b = self.node('b')
        b_file, b_fp = b.node_file()
        b_approval, _ = self.approve(b_file)
        genuine = os.path.join(self.root, 'genuine.bundle')
        a.cli('export', '--to', b_file, '--approval', b_approval, '-o', genuine)
        kek = unseal_with_tools(a, os.path.join(a.state, 'gen-000001.pem'))
        pub, dup, seed = importable_parts(read_text(genuine))
        wrong = key_id_of(os.urandom(32), 1)
        created = 1700000000
        cert = certificate_line(a, a_approval, 1, 'dup', created, wrong, pub)
        forged = os.path.join(self.root, 'forged.bundle')
        with open(forged, 'w') as f:
            f.write(bundle_text(bytes.fromhex(b_fp), self.admin_der(),
                                [(1, created, wrong, True, importable_pem(pub, dup, seed), kek,
                                  cert)]))
        r = b.cli('import', '--admin-key', self.admin_pub, forged, check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('generation 1 does not match its key_id', r.stderr)
        self.assertFalse(os.path.exists(os.path.join(b.state, 'state')))

    def test_import_checks_the_objects_policy(self):
        # A sealed object whose authPolicy is not P_dup of the admin key
        # (PolicyDuplicationSelect alone: anyone could duplicate it on), made
        # and duplicated by tpm2-tools on an approved node, which also signs
        # its certificate. Its attributes are a dup generation's.
        a, a_approval = self.approved_a()
        b = self.node('b')
        b_file, b_fp = b.node_file()
        node = pem_blocks(read_text(b_file), 'TPM2-KMS NODE')[0]
        write_file(a, 'parent.tpub', node[:2 + int.from_bytes(node[:2], 'big')])
        secret = os.urandom(32)
        write_file(a, 'secret.bin', secret)
        t = a.tools
        t('tpm2_loadexternal', '-C', 'n', '-u', 'parent.tpub', '-c', 'parent.ctx',
          '-n', 'parent.name')
        t('tpm2_flushcontext', '-t')
        t('tpm2_startauthsession', '-S', 'trial.ctx')
        t('tpm2_policyduplicationselect', '-S', 'trial.ctx', '-N', 'parent.name', '-L', 'pol.dat')
        t('tpm2_flushcontext', 'trial.ctx')
        t('tpm2_create', '-C', '0x81000001', '-i', 'secret.bin', '-L', 'pol.dat', '-g', 'sha256',
          '-a', 'noda|adminwithpolicy|userwithauth', '-u', 'o.pub', '-r', 'o.priv')
        t('tpm2_load', '-C', '0x81000001', '-u', 'o.pub', '-r', 'o.priv', '-c', 'o.ctx',
          '-n', 'o.name')
        t('tpm2_flushcontext', '-t')
        t('tpm2_startauthsession', '--policy-session', '-S', 's.ctx')
        t('tpm2_policyduplicationselect', '-S', 's.ctx', '-n', 'o.name', '-N', 'parent.name')
        t('tpm2_duplicate', '-C', 'parent.ctx', '-c', 'o.ctx', '-G', 'null',
          '-p', 'session:s.ctx', '-r', 'd.priv', '-s', 'd.seed')
        t('tpm2_flushcontext', 's.ctx')
        t('tpm2_flushcontext', '-t')
        with open(os.path.join(a.root, 'o.pub'), 'rb') as f:
            pub = f.read()
        with open(os.path.join(a.root, 'd.priv'), 'rb') as f:
            dup = f.read()
        with open(os.path.join(a.root, 'd.seed'), 'rb') as f:
            seed = f.read()
        created, key_id = 1700000000, key_id_of(secret, 1)
        cert = certificate_line(a, a_approval, 1, 'dup', created, key_id, pub)
        forged = os.path.join(self.root, 'forged.bundle')
        with open(forged, 'w') as f:
            f.write(bundle_text(bytes.fromhex(b_fp), self.admin_der(),
                                [(1, created, key_id, True, importable_pem(pub, dup, seed),
                                  secret, cert)]))
        r = b.cli('import', '--admin-key', self.admin_pub, forged, check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('generation 1 is not a duplicable generation under the bundle\'s keys',
                      r.stderr)
        self.assertFalse(os.path.exists(os.path.join(b.state, 'state')))

    def test_recover_checks_the_outer_hmac(self):
        # An escrow file whose duplicate's outer HMAC is altered, with its
        # MAC made again under the real key: the software unwrap's HMAC
        # check alone refuses it.
        recovery, recovery_node, recovery_fp, recovery_approval = self.recovery_key()
        a = self.node_with_escrow('a', recovery_node, recovery_approval)
        escrow = read_text(os.path.join(a.state, 'escrow', 'gen-000001.pem'))
        kek = unseal_with_tools(a, os.path.join(a.state, 'gen-000001.pem'))
        pub, dup, seed = importable_parts(escrow)
        m = re.search(r'^generation 1 created (\d+) key-id (\S+)', escrow, re.M)
        cert = [l for l in escrow.splitlines() if l.startswith('certificate ')]
        new = self.node('new')
        new_file, _ = new.node_file()
        for altered, what in ((False, 'genuine'), (True, 'altered')):
            d = bytearray(dup)
            if altered:
                d[4] ^= 1          # TPM2B size, HMAC size, then the HMAC
            path = os.path.join(self.root, what)
            with open(path, 'w') as f:
                f.write(bundle_text(bytes.fromhex(recovery_fp), self.admin_der(),
                                    [(1, int(m.group(1)), m.group(2), True,
                                      importable_pem(pub, bytes(d), seed), kek, *cert)]))
            r = run_cli('recover', '--recovery-key', recovery, '--admin-key', self.admin_pub,
                        '--to', new_file, path, '-o', path + '.out', check=False)
            if not altered:
                self.assertEqual(r.returncode, 0, r.stderr)    # the test's own bundle is right
                continue
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn('does not open with this recovery key', r.stderr)
            self.assertFalse(os.path.exists(path + '.out'))


if __name__ == '__main__':
    import sys
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
