#!/usr/bin/python3
"""The attested join on swtpm TPMs with EK certificates made by swtpm_setup
and swtpm_localca (a test manufacturer CA: root and intermediate): the join
end to end, with openssl checking the chain and python3-cryptography the
TPM's HMAC independently of our code, and each refusal."""

import base64
import glob
import os
import shutil
import subprocess
import unittest

from cryptography.hazmat.primitives import hashes, hmac

from ektpm import HAVE_SETUP, drop_ek, ek_tpm, make_ca_config, roots_dir, tpm2
from kmsclient import run_cli, tempdir

def read(path):
    with open(path) as f:
        return f.read()


def pem_blocks(path, label):
    text = read(path)
    out = []
    for part in text.split('-----BEGIN %s-----' % label)[1:]:
        out.append(base64.b64decode(part.split('-----END')[0]))
    return out


def fields(data):
    out = []
    while data:
        n = int.from_bytes(data[:2], 'big')
        out.append(data[2:2 + n])
        data = data[2 + n:]
    return out


@unittest.skipUnless(HAVE_SETUP, 'swtpm_setup and swtpm_localca (swtpm-tools) are needed')
class AttestedJoin(unittest.TestCase):
    def setUp(self):
        self.root = tempdir('kmsat-')
        self.ca = os.path.join(self.root, 'ca-a')
        make_ca_config(self.ca)
        self.tpms = []
        self.admin_dir = os.path.join(self.root, 'admin')
        os.makedirs(self.admin_dir)
        self.admin = os.path.join(self.admin_dir, 'admin.pem')
        subprocess.run(['openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt',
                        'ec_paramgen_curve:P-256', '-out', self.admin], check=True,
                       capture_output=True)

    def tearDown(self):
        for t in self.tpms:
            t.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def tpm(self, name, ca=None):
        t = ek_tpm(self.root, name, ca or self.ca)
        self.tpms.append(t)
        return t

    def p(self, *names):
        return os.path.join(self.root, *names)

    def node_key(self, t, name):
        out = self.p(name + '.node')
        run_cli('node-key', '--tcti', t.tcti, '--state-dir', self.p(name + '-state'), '-o', out)
        return out

    def approve(self, node, *extra, out=None, check=True):
        return run_cli('approve', '--admin-key', self.admin, '--ek-ca',
                       roots_dir(self.ca, self.p('roots')), *extra, node,
                       '-o', out or self.p('out'), check=check)

    def answer(self, t, name, challenge, out, check=True):
        return run_cli('node-key', '--answer', challenge, '--tcti', t.tcti,
                       '--state-dir', self.p(name + '-state'), '-o', out, check=check)

    def test_attested_join_end_to_end(self):
        t = self.tpm('node-a')
        node = self.node_key(t, 'node-a')
        # openssl, not our code, checks the EK certificate the node file carries.
        r = subprocess.run(['openssl', 'verify', '-CAfile',
                            os.path.join(self.ca, 'swtpm-localca-rootca-cert.pem'),
                            '-untrusted', os.path.join(self.ca, 'issuercert.pem'), node],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        challenge = self.p('a.challenge')
        r = self.approve(node, out=challenge)
        self.assertIn('chains to /CN=swtpm-localca-rootca', r.stderr)
        response = self.p('a.response')
        self.answer(t, 'node-a', challenge, response)

        self.check_hmacs(response)

        approval = self.p('a.approval')
        r = self.approve(node, '--response', response, out=approval)
        self.assertIn('attested: the node\'s storage and signing keys are in the TPM', r.stderr)
        self.assertIn('# attested: EK certificate chains to /CN=swtpm-localca-rootca',
                      read(approval))
        self.assertEqual(os.listdir(os.path.join(self.admin_dir, 'tpm2-kms-challenges')), [],
                         'the challenge is spent')
        # A replay of the same response approves nothing.
        r = self.approve(node, '--response', response, out=self.p('again'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('answered already (a replay)', r.stderr)
        self.assertFalse(os.path.exists(self.p('again')))

    def test_missing_files_are_named(self):
        t = self.tpm('node-a')
        node = self.node_key(t, 'node-a')
        for r, said in (
                (self.answer(t, 'node-a', self.p('none.challenge'), self.p('o1'), check=False),
                 'challenge %s: no such file' % self.p('none.challenge')),
                (self.approve(node, '--response', self.p('none.response'), out=self.p('o2'),
                              check=False),
                 'response %s: no such file' % self.p('none.response')),
                (self.approve(self.p('none.node'), out=self.p('o3'), check=False),
                 'node file %s: no such file' % self.p('none.node'))):
            self.assertEqual(r.returncode, 1)
            self.assertIn(said, r.stderr)
            self.assertNotIn('carries no EK', r.stderr)
        for out in ('o1', 'o2', 'o3'):
            self.assertFalse(os.path.exists(self.p(out)))

    def test_an_ek_that_is_not_persistent_is_made_from_its_template(self):
        # Many TPMs ship with the EK certificate in NV but no persistent EK:
        # tpm2-tools evicts swtpm's, and the join must still go through,
        # with the EK made again from the TCG template.
        t = self.tpm('node-a')
        subprocess.run(['tpm2_evictcontrol', '-T', t.tcti, '-C', 'o', '-c', '0x81010001'],
                       check=True, capture_output=True)
        node = self.node_key(t, 'node-a')
        self.approve(node, out=self.p('a.challenge'))
        r = self.answer(t, 'node-a', self.p('a.challenge'), self.p('a.response'))
        self.assertNotIn('error', r.stderr)
        self.approve(node, '--response', self.p('a.response'), out=self.p('a.approval'))
        self.assertIn('# attested', read(self.p('a.approval')))
        caps = subprocess.run(['tpm2_getcap', '-T', t.tcti, 'handles-transient'],
                              capture_output=True, text=True, check=True).stdout
        self.assertEqual(caps.strip(), '', 'the EK made for the call was not flushed')

    def join(self, t, name):
        """node-key, approve, answer, approve: the attested approval's path,
        with the TPM's HMACs checked by python3-cryptography on the way."""
        node = self.node_key(t, name)
        challenge, response = self.p(name + '.challenge'), self.p(name + '.response')
        self.approve(node, out=challenge)
        self.answer(t, name, challenge, response)
        self.check_hmacs(response)
        approval = self.p(name + '.approval')
        self.approve(node, '--response', response, out=approval)
        return node, challenge, response, approval

    def check_hmacs(self, response):
        """The TPM's HMAC over each certification, checked by
        python3-cryptography with the key the open challenge holds; the
        nonce, and that the TPM made them (magic, certify type)."""
        [journal] = glob.glob(os.path.join(self.admin_dir, 'tpm2-kms-challenges', '*'))
        key = bytes.fromhex(read(journal).split()[3])
        resp = fields(pem_blocks(response, 'TPM2-KMS RESPONSE')[0])
        self.assertEqual(resp[0].hex(), os.path.basename(journal), 'the nonce')
        for attest, mac in ((resp[1], resp[2]), (resp[3], resp[4])):
            digest = hashes.Hash(hashes.SHA256())
            digest.update(attest[2:])
            h = hmac.HMAC(key, hashes.SHA256())
            h.update(digest.finalize())
            h.verify(mac)
            self.assertEqual(attest[2:6], b'\xff\x54\x43\x47')  # TPM_GENERATED_VALUE
            self.assertEqual(attest[6:8], b'\x80\x17')          # TPM_ST_ATTEST_CERTIFY

    def test_an_ecc_p384_ek_joins(self):
        # A TPM whose only EK is ECC P-384 (high range, SHA-384 Names,
        # AES-256): the challenge is wrapped to it with ECDH and the
        # SHA-384 KDFs, and the TPM opens it.
        t = self.tpm('node-a')
        drop_ek(t, 0x01c00002, 0x81010001)
        node = self.node_key(t, 'node-a')
        self.assertEqual(len(pem_blocks(node, 'TPM2-KMS EK')), 1)
        ek_pub = pem_blocks(node, 'TPM2-KMS EK')[0]
        self.assertEqual(ek_pub[2:6], b'\x00\x23\x00\x0c', 'ECC, nameAlg SHA-384')
        challenge = self.p('a.challenge')
        r = self.approve(node, out=challenge)
        self.assertIn('chains to /CN=swtpm-localca-rootca', r.stderr)
        ch = fields(pem_blocks(challenge, 'TPM2-KMS CHALLENGE')[0])
        self.assertEqual(ch[5][:2], b'\x00\x0c', 'wrapped to the SHA-384 EK')
        self.assertEqual(int.from_bytes(ch[4][2:4], 'big'), 48, 'an ephemeral P-384 point')
        self.answer(t, 'node-a', challenge, self.p('a.response'))
        self.check_hmacs(self.p('a.response'))
        self.approve(node, '--response', self.p('a.response'), out=self.p('a.approval'))
        self.assertIn('attested', read(self.p('a.approval')))

    def test_an_ecc_p384_ek_that_is_not_persistent_is_made_from_template_h3(self):
        t = self.tpm('node-a')
        drop_ek(t, 0x01c00002, 0x81010001)
        tpm2(t, 'evictcontrol', '-C', 'o', '-c', '0x81010016')
        _, _, response, approval = self.join(t, 'node-a')
        self.assertIn('attested', read(approval))
        self.assertEqual(tpm2(t, 'getcap', 'handles-transient').strip(), '')

    def test_an_ecc_p256_ek_joins(self):
        # swtpm_setup makes no P-256 EK: tpm2-tools makes one from its own
        # copy of the TCG template L-2 and persists it, the test CA
        # certifies its key, and the certificate goes where a maker puts
        # it (NV 0x01C0000A). Evicted again, our template must make the
        # same key.
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.x509.oid import ObjectIdentifier
        import datetime
        t = self.tpm('node-a')
        drop_ek(t, 0x01c00002, 0x81010001)
        drop_ek(t, 0x01c00016, 0x81010016)
        tpm2(t, 'createek', '-G', 'ecc', '-c', '0x81010002', '-u', self.p('ek.pub'),
             '-f', 'pem')
        with open(self.p('ek.pub'), 'rb') as f:
            ek_key = serialization.load_pem_public_key(f.read())
        with open(os.path.join(self.ca, 'signkey.pem'), 'rb') as f:
            ca_key = serialization.load_pem_private_key(f.read(), None)
        with open(os.path.join(self.ca, 'issuercert.pem'), 'rb') as f:
            issuer = x509.load_pem_x509_certificate(f.read())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(issuer.subject).public_key(ek_key).serial_number(7)
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.ExtendedKeyUsage([ObjectIdentifier('2.23.133.8.1')]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DirectoryName(x509.Name([x509.NameAttribute(
                        ObjectIdentifier('2.23.133.2.1'), 'id:00001014')]))]), critical=True)
                .sign(ca_key, hashes.SHA256()))
        der = cert.public_bytes(serialization.Encoding.DER)
        with open(self.p('ek.der'), 'wb') as f:
            f.write(der)
        tpm2(t, 'nvdefine', '-C', 'p', '-s', str(len(der)), '-a',
             'ppwrite|ppread|ownerread|authread|no_da|platformcreate', '0x01c0000a')
        tpm2(t, 'nvwrite', '-C', 'p', '-i', self.p('ek.der'), '0x01c0000a')
        tpm2(t, 'evictcontrol', '-C', 'o', '-c', '0x81010002')
        node, _, response, approval = self.join(t, 'node-a')
        self.assertEqual(pem_blocks(node, 'CERTIFICATE')[0], der)
        self.assertIn('attested', read(approval))

    def test_every_ek_in_the_node_file_must_check(self):
        # One EK of another maker beside a genuine one: refused, and the
        # refusal names which EK.
        ta = self.tpm('node-a')
        other_ca = os.path.join(self.root, 'ca-b')
        make_ca_config(other_ca)
        tb = self.tpm('node-b', ca=other_ca)
        a, b = self.node_key(ta, 'node-a'), self.node_key(tb, 'node-b')
        text_a, text_b = read(a), read(b)
        ecc_b = text_b[text_b.rindex('-----BEGIN TPM2-KMS EK-----'):]
        with open(self.p('mixed.node'), 'w') as f:
            f.write(text_a[:text_a.rindex('-----BEGIN TPM2-KMS EK-----')] + ecc_b)
        r = self.approve(self.p('mixed.node'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('the ECC 384 EK\'s certificate does not chain', r.stderr)
        self.assertFalse(os.path.exists(self.p('out')))

    def test_without_ek_ca_nothing_is_attested(self):
        t = self.tpm('node-a')
        node = self.node_key(t, 'node-a')
        r = run_cli('approve', '--admin-key', self.admin, node, '-o', self.p('a.approval'))
        self.assertIn('nothing was attested', r.stderr)
        self.assertNotIn('attest', read(self.p('a.approval')))

    def approval_field(self, path, key):
        for line in read(path).splitlines():
            if line.startswith(key + ' '):
                return bytes.fromhex(line.split(' ', 1)[1])
        return None

    def test_the_attestation_is_signed_recorded_and_shown(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        admin_pub = self.admin + '.pub'
        subprocess.run(['openssl', 'pkey', '-in', self.admin, '-pubout', '-out', admin_pub],
                       check=True, capture_output=True)
        ta, tb = self.tpm('node-a'), self.tpm('node-b')
        _, _, _, approval_a = self.join(ta, 'node-a')
        node_b, _, _, approval_b = self.join(tb, 'node-b')

        # python3-cryptography checks the admin's signature of the record:
        # "tpm2-kms attested v1\n" || node Name || signing Name || root.
        root = self.approval_field(approval_a, 'attested-root')
        self.assertEqual(root, b'/CN=swtpm-localca-rootca')
        msg = b'tpm2-kms attested v1\n'
        for v in (self.approval_field(approval_a, 'node'),
                  self.approval_field(approval_a, 'node-signing-key'), root):
            msg += len(v).to_bytes(2, 'big') + v
        with open(admin_pub, 'rb') as f:
            key = serialization.load_pem_public_key(f.read())
        key.verify(self.approval_field(approval_a, 'attestation'), msg,
                   ec.ECDSA(hashes.SHA256()))

        state_a = self.p('node-a-state')
        run_cli('init', '--tcti', ta.tcti, '--state-dir', state_a, '--admin-key', admin_pub,
                '--approval', approval_a)
        out = run_cli('keys', '--state-dir', state_a).stdout
        self.assertIn('attested:     yes: the EK certificate chains to /CN=swtpm-localca-rootca',
                      out)

        # A record whose root was changed is not the admin's: refused.
        text = read(approval_a)
        forged = text.replace('attested-root ' + root.hex(),
                              'attested-root ' + b'/CN=Some Other Root'.hex())
        self.assertNotEqual(forged, text)
        with open(self.p('forged.approval'), 'w') as f:
            f.write(forged)
        r = run_cli('certify', '--tcti', ta.tcti, '--state-dir', state_a, '--approval',
                    self.p('forged.approval'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('its attestation record is not signed by the admin key', r.stderr)

        # Exports say whether the node they go to was attested; keys lists it.
        r = run_cli('export', '--tcti', ta.tcti, '--state-dir', state_a, '--to', node_b,
                    '--approval', approval_b, '-o', self.p('b.bundle'))
        self.assertIn('attested, its EK certificate chains to /CN=swtpm-localca-rootca',
                      r.stderr)
        # The bundle says who made each generation, and import checks and
        # says it too: generation 1 was made by node A after its attested
        # join, so its certificate carries A's attestation record.
        fp_a = self.approval_field(approval_a, 'node').hex()
        made_by = ('was made by node %s, attested (its EK certificate chains to '
                   '/CN=swtpm-localca-rootca)' % fp_a)
        self.assertIn('# generation 1 ' + made_by, read(self.p('b.bundle')))
        r = run_cli('import', '--tcti', tb.tcti, '--state-dir', self.p('node-b-state'),
                    '--admin-key', admin_pub, self.p('b.bundle'))
        self.assertIn('generation 1 ' + made_by, r.stderr)
        # A certificate whose attestation record was altered is refused.
        cert = os.path.join(state_a, 'gen-000001.cert')
        text = read(cert)
        with open(cert, 'w') as f:
            f.write(text.replace(root.hex(), b'/CN=Some Other Root'.hex()))
        r = run_cli('export', '--tcti', ta.tcti, '--state-dir', state_a, '--to', node_b,
                    '--approval', approval_b, '-o', self.p('b2.bundle'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('attestation record is not signed by the admin key', r.stderr)
        with open(cert, 'w') as f:
            f.write(text)
        tc = self.tpm('node-c')
        node_c = self.node_key(tc, 'node-c')
        run_cli('approve', '--admin-key', self.admin, node_c, '-o', self.p('c.approval'))
        r = run_cli('export', '--tcti', ta.tcti, '--state-dir', state_a, '--to', node_c,
                    '--approval', self.p('c.approval'), '-o', self.p('c.bundle'))
        self.assertIn('was approved without attestation', r.stderr)
        out = run_cli('keys', '--state-dir', state_a).stdout
        fp_b = self.approval_field(approval_b, 'node').hex()
        fp_c = self.approval_field(self.p('c.approval'), 'node').hex()
        self.assertIn('node %s (attested), generation 1' % fp_b, out)
        self.assertIn('node %s (not attested), generation 1' % fp_c, out)

    def test_an_ek_of_another_manufacturer_is_refused(self):
        self.tpm('node-a')                  # makes manufacturer A's CA
        other_ca = os.path.join(self.root, 'ca-b')
        make_ca_config(other_ca)
        t = self.tpm('node-b', ca=other_ca)
        node = self.node_key(t, 'node-b')
        r = self.approve(node, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('EK\'s certificate does not chain to a root in', r.stderr)
        self.assertFalse(os.path.exists(self.p('out')))

    def test_an_ek_that_is_not_the_certificates_is_refused(self):
        a = self.node_key(self.tpm('node-a'), 'node-a')
        b = self.node_key(self.tpm('node-b'), 'node-b')
        # A's keys and certificate, B's EK public area.
        text_a, text_b = read(a), read(b)
        ek_b = text_b[text_b.index('-----BEGIN TPM2-KMS EK-----'):
                      text_b.index('-----BEGIN CERTIFICATE-----')]
        mixed = (text_a[:text_a.index('-----BEGIN TPM2-KMS EK-----')] + ek_b +
                 text_a[text_a.index('-----BEGIN CERTIFICATE-----'):])
        with open(self.p('mixed.node'), 'w') as f:
            f.write(mixed)
        r = self.approve(self.p('mixed.node'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('EK public area does not match its certificate', r.stderr)
        self.assertFalse(os.path.exists(self.p('out')))

    def test_keys_of_another_tpm_beside_a_genuine_ek_are_refused(self):
        ta, tb = self.tpm('node-a'), self.tpm('node-b')
        a = self.node_key(ta, 'node-a')
        b = self.node_key(tb, 'node-b')
        # B's storage and signing keys with A's genuine EK and certificate:
        # the challenge goes to A's EK, which B's TPM cannot open.
        text_a, text_b = read(a), read(b)
        cut = '-----BEGIN TPM2-KMS EK-----'
        with open(self.p('planted.node'), 'w') as f:
            f.write(text_b[:text_b.index(cut)] + text_a[text_a.index(cut):])
        challenge = self.p('planted.challenge')
        self.approve(self.p('planted.node'), out=challenge)
        r = self.answer(tb, 'node-b', challenge, self.p('b.response'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('it was made for another TPM', r.stderr)
        # And A's TPM will not answer for keys that are not its own.
        r = self.answer(ta, 'node-a', challenge, self.p('a.response'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('this challenge is for another node', r.stderr)

    def test_a_software_key_in_the_node_file_is_refused(self):
        t = self.tpm('node-a')
        node = self.node_key(t, 'node-a')
        # An openssl-made storage key, with the TPM's genuine EK material.
        soft = self.p('soft.pem')
        subprocess.run('openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s'
                       ' && openssl pkey -in %s -pubout -out %s.pub' % (soft, soft, soft),
                       shell=True, check=True, capture_output=True)
        run_cli('node-key', '--public', soft + '.pub', '-o', self.p('soft.node'))
        text = read(node)
        with open(self.p('soft.node'), 'a') as f:
            f.write(text[text.index('-----BEGIN TPM2-KMS EK-----'):])
        challenge = self.p('soft.challenge')
        self.approve(self.p('soft.node'), out=challenge)
        r = self.answer(t, 'node-a', challenge, self.p('soft.response'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('this challenge is for another node', r.stderr)
        # Whatever response comes back, the software key is not certified.
        genuine = self.p('a.challenge')
        self.approve(node, out=genuine)
        self.answer(t, 'node-a', genuine, self.p('a.response'))
        r = self.approve(self.p('soft.node'), '--response', self.p('a.response'),
                         out=self.p('soft.approval'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('another node', r.stderr)
        self.assertFalse(os.path.exists(self.p('soft.approval')))

    def write_response(self, path, resp):
        data = b''.join(len(f).to_bytes(2, 'big') + f for f in resp)
        with open(path, 'w') as f:
            f.write('-----BEGIN TPM2-KMS RESPONSE-----\n%s\n-----END TPM2-KMS RESPONSE-----\n'
                    % base64.encodebytes(data).decode().strip())

    def test_a_certification_not_made_with_the_challenges_key_is_refused(self):
        # What a host without the EK's TPM could send: genuine-looking
        # certifications (here the TPM's own, for this nonce and these keys)
        # whose HMAC is not the challenge key's.
        t = self.tpm('node-a')
        node = self.node_key(t, 'node-a')
        self.approve(node, out=self.p('a.challenge'))
        self.answer(t, 'node-a', self.p('a.challenge'), self.p('a.response'))
        resp = fields(pem_blocks(self.p('a.response'), 'TPM2-KMS RESPONSE')[0])
        for i in (2, 4):
            forged = list(resp)
            forged[i] = bytes([forged[i][0] ^ 1]) + forged[i][1:]
            self.write_response(self.p('forged.response'), forged)
            r = self.approve(node, '--response', self.p('forged.response'), check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn('was not made with the challenge\'s key', r.stderr)
            self.assertFalse(os.path.exists(self.p('out')))
        # The genuine one still approves: the refusals spent nothing.
        self.approve(node, '--response', self.p('a.response'))

    def test_a_wrong_nonce_is_refused(self):
        t = self.tpm('node-a')
        node = self.node_key(t, 'node-a')
        first, second = self.p('1.challenge'), self.p('2.challenge')
        self.approve(node, out=first)
        self.approve(node, out=second)
        self.answer(t, 'node-a', first, self.p('1.response'))
        # The answer to the first, presented under the second's nonce.
        nonce2 = fields(pem_blocks(second, 'TPM2-KMS CHALLENGE')[0])[0]
        resp = fields(pem_blocks(self.p('1.response'), 'TPM2-KMS RESPONSE')[0])
        resp[0] = nonce2
        self.write_response(self.p('forged.response'), resp)
        r = self.approve(node, '--response', self.p('forged.response'), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('wrong nonce', r.stderr)
        self.assertFalse(os.path.exists(self.p('out')))


if __name__ == '__main__':
    unittest.main(verbosity=2)
