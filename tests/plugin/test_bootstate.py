#!/usr/bin/python3
"""Boot-state binding (design brief §9): generations sealed to signed PCR
policies. A generation serves while the PCRs hold values a PCR signer
approved; after a "reboot into another OS" it does not unseal (nor with
stock tpm2-tools), Status says why, and a signature of the new values
dropped into the directory brings it back without a restart. Signatures
from pcr-sign and from Debian's systemd-measure (PCR 11, unified kernel
images) are both taken; anything else is ignored with a warning."""

import hashlib
import os
import re
import shutil
import subprocess
import unittest

import grpc

from clusterlib import (ClusterTest, der_items, make_key, openssl, pem_blocks, read_text,
                        write_file)
from kmsclient import Daemon, Swtpm, run_cli, scrape_metrics, wait_until

SYSTEMD_MEASURE = '/usr/lib/systemd/systemd-measure'


class BootTest(ClusterTest):
    def setUp(self):
        super().setUp()
        self.pcr_key = os.path.join(self.root, 'pcr.pem')
        self.pcr_pub = make_key(self.pcr_key)

    def boot(self, node, pcr, measurement):
        """A (re)boot: the TPM restarts (PCRs reset) and the firmware
        measures `measurement` into pcr."""
        node.tpm.kill()
        node.tpm.start()
        node.tools('tpm2_pcrextend', '%d:sha256=%s' % (pcr, hashlib.sha256(measurement)
                                                        .hexdigest()))

    def sigdir(self, node):
        d = os.path.join(node.root, 'pcr-signatures')
        os.makedirs(d, exist_ok=True)
        return d

    def sign_current(self, node, pcrs='7', name='boot.sig', key=None):
        values = run_cli('pcr-read', '--tcti', node.tpm.tcti, '--pcrs', pcrs).stdout.strip()
        path = os.path.join(self.sigdir(node), name)
        run_cli('pcr-sign', '--key', key or self.pcr_key, '--pcrs', values, '-o', path)
        return values, path

    def serve(self, node):
        node.daemon.extra = ['--pcr-signatures', self.sigdir(node),
                             '--metrics-listen', os.path.join(node.root, 'metrics.sock')]
        node.daemon.start(wait_healthy=False)

    def approval_missing(self, node):
        m = scrape_metrics(os.path.join(node.root, 'metrics.sock'))
        return int(re.search(r'^tpm2kms_pcr_approval_missing (\d+)$', m, re.M).group(1))

    def status(self, node):
        c = node.daemon.client()
        try:
            return c.status()
        finally:
            c.close()


class RebootIntoAnotherOs(BootTest):
    def test_bound_generation_follows_signed_values(self):
        a = self.node('a')
        self.boot(a, 7, b'secure boot: our keys')
        first = a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '7', '--pcr-signatures',
                      self.sigdir(a)).stdout.strip()
        self.assertRegex(a.offline('keys').stdout, r'\n1 +\S+ +\S+ +write +pcr ')
        values, _ = self.sign_current(a)
        self.assertRegex(values, r'^7=[0-9a-f]{64}$')
        self.serve(a)
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy with a signature')
        c = a.daemon.client()
        made = [(s, c.encrypt(s)) for s in (os.urandom(32) for _ in range(5))]
        c.close()
        a.daemon.stop()

        # Another OS boots: PCR 7 holds something nobody signed.
        self.boot(a, 7, b'secure boot: a stranger\'s keys')
        self.serve(a)
        wait_until(lambda: 'no PCR signature' in self.status(a).healthz, 'Status to say why')
        now = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stdout.strip()
        self.assertIn('pcr ' + now, self.status(a).healthz)
        self.assertEqual(self.status(a).key_id, first)
        self.assertEqual(self.approval_missing(a), 1)
        c = a.daemon.client()
        with self.assertRaises(grpc.RpcError) as cm:
            c.decrypt(made[0][1].ciphertext, first)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn('no PCR signature approves the boot state', cm.exception.details())
        # Stock tpm2-tools cannot unseal it with a password session either.
        items = der_items(pem_blocks(read_text(os.path.join(a.state, 'gen-000001.pem')),
                                     'TSS2 PRIVATE KEY')[0])
        write_file(a, 'g.pub', items[3][1])
        write_file(a, 'g.priv', items[4][1])
        a.tools('tpm2_load', '-C', '0x81000001', '-u', 'g.pub', '-r', 'g.priv', '-c', 'g.ctx')
        r = a.tools('tpm2_unseal', '-c', 'g.ctx', check=False)
        a.tools('tpm2_flushcontext', '-t')
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, b'')

        # The operator checks the new values and signs them: no restart.
        self.sign_current(a, name='after-update.sig')
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy with the new signature')
        self.assertEqual(self.approval_missing(a), 0)
        for seed, e in made:
            self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, seed)
        self.assertEqual(c.encrypt(b'after').key_id, first)
        c.close()


class Signatures(BootTest):
    def test_bad_signatures_are_ignored_with_a_warning(self):
        a = self.node('a')
        self.boot(a, 7, b'ours')
        a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '7', '--pcr-signatures',
              self.sigdir(a))
        d = self.sigdir(a)
        values = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stdout.strip()
        # By another key.
        other = os.path.join(self.root, 'other.pem')
        make_key(other)
        run_cli('pcr-sign', '--key', other, '--pcrs', values, '-o', os.path.join(d, 'other-key'))
        # For other values (the next boot's, say).
        run_cli('pcr-sign', '--key', self.pcr_key, '--pcrs', '7=' + '11' * 32,
                '-o', os.path.join(d, 'other-values'))
        # For another policyRef, genuinely signed by the PCR signer.
        good = os.path.join(self.root, 'good.sig')
        run_cli('pcr-sign', '--key', self.pcr_key, '--pcrs', values, '-o', good)
        fields = dict(l.split(' ', 1) for l in read_text(good).splitlines()
                      if not l.startswith('#'))
        msg = bytes.fromhex(fields['approved-policy']) + b'tpm2-kms/other'
        sig = openssl('dgst', '-sha256', '-sign', self.pcr_key, stdin=msg)
        with open(os.path.join(d, 'other-ref'), 'w') as f:
            f.write(read_text(good).replace('policy-ref tpm2-kms/unseal',
                                            'policy-ref tpm2-kms/other')
                    .replace(fields['signature'], sig.hex()))
        # Signed by the PCR signer's Name, but not by its key: the signature
        # bytes altered (only the software signature check refuses it here;
        # without it the TPM would, at unseal time, with no diagnostic).
        with open(os.path.join(d, 'bad-signature'), 'w') as f:
            sig = fields['signature']
            f.write(read_text(good).replace(sig, sig[:-4] + ('0000' if sig[-4:] != '0000'
                                                              else '1111')))
        # Not a signature at all, and broken JSON. The junk must not open
        # with '{' (after blanks), or it is taken for JSON: one run in a few
        # hundred did, when it was all random.
        with open(os.path.join(d, 'garbage'), 'wb') as f:
            f.write(b'\x80' + os.urandom(299))
        with open(os.path.join(d, 'broken.json'), 'w') as f:
            f.write('{"sha256":[{"pcrs":[7],"pol":')
        self.serve(a)
        wait_until(lambda: 'no PCR signature' in self.status(a).healthz, 'Status to say why')
        out = a.daemon.output()
        for name, why in (('other-key', 'signed by another key'),
                          ('other-ref', 'policy-ref is not tpm2-kms/unseal'),
                          ('garbage', 'not a PCR signature'),
                          ('other-values', 'approves other PCR values'),
                          ('bad-signature', "its signature is not the PCR signer's"),
                          ('broken.json', 'not a systemd-measure signature file')):
            self.assertRegex(out, r'warning pcr signature \S*/%s: ignored[ :].*%s' %
                             (re.escape(name), re.escape(why)))
        # A junk file's warning speaks of signatures, not of approvals.
        self.assertNotRegex(out, r'/garbage: ignored.*approval')
        self.assertTrue(a.daemon.proc.alive())
        # The good one, added now, is taken.
        shutil.copy(good, os.path.join(d, 'good.sig'))
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy with the good signature')

    def test_the_valid_signature_is_found_among_many(self):
        # 16 valid signatures were kept, in readdir order: a valid one for
        # the current boot among 40 for other boot states was dropped.
        a = self.node('a')
        self.boot(a, 7, b'ours')
        d = self.sigdir(a)
        a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '7', '--pcr-signatures', d)
        # The current one first: on tmpfs and ext4 alike, readdir does not
        # list it among the first 16.
        self.sign_current(a, name='zz-current.sig')
        for i in range(40):
            run_cli('pcr-sign', '--key', self.pcr_key, '--pcrs', '7=%064x' % i,
                    '-o', os.path.join(d, 'old-%02d.sig' % i))
        self.serve(a)
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy with the current signature')

    def test_links_and_fifos_are_not_followed(self):
        # A FIFO swapped in after the stat() hung the loop in open(); a
        # symbolic link (to a file anyone could have written) was followed.
        a = self.node('a')
        self.boot(a, 7, b'ours')
        d = self.sigdir(a)
        a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '7', '--pcr-signatures', d)
        elsewhere = os.path.join(self.root, 'elsewhere')
        os.makedirs(elsewhere)
        values, path = self.sign_current(a, name='current.sig')
        shutil.move(path, os.path.join(elsewhere, 'current.sig'))
        os.symlink(os.path.join(elsewhere, 'current.sig'), os.path.join(d, 'link.sig'))
        os.mkfifo(os.path.join(d, 'fifo'))
        self.serve(a)
        wait_until(lambda: 'no PCR signature' in self.status(a).healthz, 'Status to say why')
        out = a.daemon.output()
        self.assertTrue('link.sig is a symbolic link: not followed' in out, out[-2000:])
        self.assertTrue('fifo is not a regular file' in out, out[-2000:])
        # The loop answers while the FIFO sits there; a real file works.
        shutil.copy(os.path.join(elsewhere, 'current.sig'), os.path.join(d, 'real.sig'))
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy with the real file')

    def test_a_crowded_directory_is_capped_with_a_warning(self):
        a = self.node('a')
        self.boot(a, 7, b'ours')
        d = self.sigdir(a)
        a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '7', '--pcr-signatures', d)
        self.sign_current(a, name='a-current.sig')          # first in name order
        for i in range(1100):
            with open(os.path.join(d, 'junk-%04d' % i), 'wb') as f:
                f.write(b'not a signature')
        self.serve(a)
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy')
        out = a.daemon.output()
        self.assertTrue('more than 1024 files; 77 were not looked at' in out, out[-2000:])
        # Name order: the first 1024 are looked at, the last 77 are not.
        self.assertTrue('junk-1022: ignored' in out, 'junk-1022 not looked at')
        self.assertFalse('junk-1023: ignored' in out, 'junk-1023 looked at')

    def test_file_names_cannot_forge_log_lines(self):
        # A junk signature file is named in a warning; its name once went
        # into the log as it was, so a newline forged a line of our own
        # and, under journald, "<0>" an emergency-priority entry.
        a = self.node('a')
        self.boot(a, 7, b'ours')
        a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '7', '--pcr-signatures',
              self.sigdir(a))
        forged = ('x\n2026-01-01T00:00:00.000Z info generation 1 loaded\n<0>emergency\r'
                  '\x1b[2J')
        with open(os.path.join(self.sigdir(a), forged), 'w') as f:
            f.write('junk')
        self.serve(a)
        wait_until(lambda: 'no PCR signature' in self.status(a).healthz, 'Status to say why')
        out = a.daemon.output()
        self.assertIn('x\\x0a2026-01-01T00:00:00.000Z info generation 1 loaded\\x0a<0>'
                      'emergency\\x0d\\x1b[2J: ignored', out)
        self.assertNotRegex(out, r'(?m)^(2026-01-01T00:00:00.000Z info|<0>)')
        self.assertNotIn('\r', out)
        self.assertNotIn('\x1b', out)

    def test_a_systemd_measure_signature_that_does_not_verify_is_ignored(self):
        # A systemd-measure JSON made here: the signer's fingerprint and the
        # selection are right, the signature is not. It is ignored with a
        # warning (the TPM would refuse it later, with no diagnostic).
        a = self.node('a')
        self.boot(a, 7, b'ours')
        rsa_key = os.path.join(self.root, 'rsa-pcr.pem')
        rsa_pub = make_key(rsa_key, kind=2048)
        pkcs1 = openssl('rsa', '-pubin', '-in', rsa_pub, '-RSAPublicKey_out', '-outform', 'DER')
        d = self.sigdir(a)
        a.cli('init', '--pcr-key', rsa_pub, '--pcrs', '7', '--pcr-signatures', d)
        import base64
        import json
        pol = hashlib.sha256(b'some policy').hexdigest()
        sig = openssl('dgst', '-sha256', '-sign', rsa_key, stdin=bytes.fromhex(pol))
        bad = bytearray(sig)
        bad[-1] ^= 1
        for name, s in (('good.json', sig), ('bad.json', bytes(bad))):
            with open(os.path.join(d, name), 'w') as f:
                json.dump({'sha256': [{'pcrs': [7], 'pkfp': hashlib.sha256(pkcs1).hexdigest(),
                                       'pol': pol, 'sig': base64.b64encode(s).decode()}]}, f)
        self.serve(a)
        wait_until(lambda: 'no PCR signature' in self.status(a).healthz, 'Status to say why')
        out = a.daemon.output()
        self.assertRegex(out, r'pcr signature \S*/bad.json \(entry 0\): ignored: its signature '
                              r'does not check out')
        self.assertNotRegex(out, r'good.json \(entry 0\): ignored:')   # taken, unused

    @unittest.skipUnless(os.path.exists(SYSTEMD_MEASURE), 'systemd-measure not installed')
    def test_systemd_measure_signature_for_pcr_11(self):
        # A unified kernel image's sections, signed by systemd-measure with
        # an RSA key (systemd 252 takes RSA only); its public key PEM and
        # JSON are used as they are.
        a = self.node('a')
        sections = {}
        for name, content in (('linux', b'vmlinuz of the test'), ('osrel', b'ID=test\n'),
                              ('cmdline', b'console=ttyS0 quiet'),
                              ('initrd', b'initrd of the test')):
            sections[name] = os.path.join(self.root, name)
            with open(sections[name], 'wb') as f:
                f.write(content)
        sd_key = os.path.join(self.root, 'tpm2-pcr-private-key.pem')
        sd_pub = make_key(sd_key, kind=2048)
        args = ['--%s=%s' % (n, p) for n, p in sections.items()] + ['--bank=sha256']
        predicted = subprocess.run([SYSTEMD_MEASURE, 'calculate'] + args, check=True,
                                   capture_output=True, text=True).stdout
        first_phase = re.search(r'11:sha256=([0-9a-f]{64})', predicted).group(1)
        signature = subprocess.run([SYSTEMD_MEASURE, 'sign'] + args +
                                   ['--private-key=' + sd_key, '--public-key=' + sd_pub,
                                    '--tpm2-device=' + a.tpm.tcti],
                                   check=True, capture_output=True, text=True).stdout
        with open(os.path.join(self.sigdir(a), 'tpm2-pcr-signature.json'), 'w') as f:
            f.write(signature)

        # PCR 11 as systemd-stub leaves it on entering the initrd: each
        # section's name (with its NUL) then its content, then the phase.
        def extend(data):
            a.tools('tpm2_pcrextend', '11:sha256=' + hashlib.sha256(data).hexdigest())
        for name in ('linux', 'osrel', 'cmdline', 'initrd'):
            extend(b'.' + name.encode() + b'\0')
            with open(sections[name], 'rb') as f:
                extend(f.read())
        extend(b'enter-initrd')
        now = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '11').stdout.strip()
        self.assertEqual(now, '11=' + first_phase)       # what systemd predicted

        a.cli('init', '--pcr-key', sd_pub, '--pcrs', '11', '--pcr-signatures', self.sigdir(a))
        self.serve(a)
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy with systemd\'s signature')
        c = a.daemon.client()
        e = c.encrypt(b'under a UKI')
        c.close()
        a.daemon.stop()
        # Another kernel command line: PCR 11 differs, nothing unseals.
        a.tpm.kill()
        a.tpm.start()
        extend(b'.cmdline\0')
        extend(b'init=/bin/sh')
        self.serve(a)
        wait_until(lambda: 'no PCR signature' in self.status(a).healthz, 'Status to say why')
        c = a.daemon.client()
        with self.assertRaises(grpc.RpcError) as cm:
            c.decrypt(e.ciphertext, e.key_id)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        c.close()


def tools_unseal_with_signature(node, gen_file, sig_file, signer_pub, pcrs):
    """Stock tpm2-tools unseal a `pcr` generation whose policy is one
    branch (no PolicyOR): PolicyPCR, PolicyAuthorize with the signature
    file's approval, PolicyCommandCode(Unseal). Returns the result."""
    fields = dict(l.split(' ', 1) for l in read_text(sig_file).splitlines()
                  if not l.startswith('#'))
    approved = bytes.fromhex(fields['approved-policy'])
    ref = fields['policy-ref'].encode()
    items = der_items(pem_blocks(read_text(gen_file), 'TSS2 PRIVATE KEY')[0])
    write_file(node, 'g.pub', items[3][1])
    write_file(node, 'g.priv', items[4][1])
    write_file(node, 'approved.pol', approved)
    write_file(node, 'ref.bin', ref)
    write_file(node, 'msg.bin', approved + ref)
    write_file(node, 'sig.der', bytes.fromhex(fields['signature']))
    t = node.tools
    t('tpm2_loadexternal', '-C', 'o', '-G', 'ecc', '-u', signer_pub, '-c', 'signer.ctx',
      '-n', 'signer.name')
    t('tpm2_flushcontext', '-t')
    t('tpm2_verifysignature', '-c', 'signer.ctx', '-g', 'sha256', '-m', 'msg.bin',
      '-s', 'sig.der', '-f', 'ecdsa', '-t', 'ticket')
    t('tpm2_flushcontext', '-t')
    t('tpm2_load', '-C', '0x81000001', '-u', 'g.pub', '-r', 'g.priv', '-c', 'g.ctx')
    t('tpm2_flushcontext', '-t')
    t('tpm2_startauthsession', '--policy-session', '-S', 's.ctx')
    try:
        t('tpm2_policypcr', '-S', 's.ctx', '-l', 'sha256:' + pcrs)
        if 'epoch' in fields:
            # PolicyNV(epoch index <= 2^epoch - 1), as the signature approves.
            write_file(node, 'operand.bin', ((1 << int(fields['epoch'])) - 1).to_bytes(8, 'big'))
            r = t('tpm2_policynv', '-S', 's.ctx', '-C', '0x01800102', '-i', 'operand.bin',
                  '0x01800102', 'ule', check=False)
            if r.returncode != 0:
                return r                    # the TPM refused: revoked
        t('tpm2_policyauthorize', '-S', 's.ctx', '-i', 'approved.pol', '-q', 'ref.bin',
          '-n', 'signer.name', '-t', 'ticket')
        t('tpm2_policycommandcode', '-S', 's.ctx', 'TPM2_CC_Unseal')
        return t('tpm2_unseal', '-c', 'g.ctx', '-p', 'session:s.ctx', check=False)
    finally:
        t('tpm2_flushcontext', 's.ctx', check=False)
        t('tpm2_flushcontext', '-t', check=False)


class SelectionBound(BootTest):
    def test_a_signature_for_other_pcrs_unseals_nothing(self):
        # A generation bound to PCR 7; the same signer also signed a PCR 11
        # value. Booted into a stranger's PCR 7 state, PCR 11 replayed from
        # user space and the state edited from `pcrs 7` to `pcrs 11`: 0.2.0
        # unsealed (the selection was checked in software only). Now the
        # signature's policy-ref names its selection and the TPM compares it.
        a = self.node('a')
        self.boot(a, 7, b'ours')
        d = self.sigdir(a)
        a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '7', '--pcr-signatures', d)
        _, ours = self.sign_current(a, name='ours.sig')
        gen = os.path.join(a.state, 'gen-000001.pem')
        # The signer's PCR 11 signature (a UKI policy, or another machine's).
        uki = hashlib.sha256(b'\0' * 32 + hashlib.sha256(b'uki').digest()).hexdigest()
        eleven = os.path.join(d, 'eleven.sig')
        run_cli('pcr-sign', '--key', self.pcr_key, '--pcrs', '11=' + uki, '-o', eleven)
        self.boot(a, 7, b"a stranger's")
        a.tools('tpm2_pcrextend', '11:sha256=' + hashlib.sha256(b'uki').hexdigest())
        self.assertEqual(run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '11').stdout.strip(),
                         '11=' + uki)
        state = os.path.join(a.state, 'state')
        with open(state) as f:
            text = f.read()
        with open(state, 'w') as f:
            f.write(text.replace('\npcrs 7\n', '\npcrs 11\n'))
        # The daemon on the edited state unseals nothing.
        self.serve(a)
        wait_until(lambda: 'write key generation 1' in self.status(a).healthz,
                   'Status to say the write key is not there')
        self.assertNotEqual(self.status(a).healthz, 'ok')
        a.daemon.stop()
        # The TPM itself refuses: stock tools, PCR 11 policy, its signature.
        r = tools_unseal_with_signature(a, gen, eleven, self.pcr_pub, '11')
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, b'')
        # ... where the same flow with the genuine signature in the genuine
        # boot state unseals: the tools' flow is right.
        self.boot(a, 7, b'ours')
        r = tools_unseal_with_signature(a, gen, ours, self.pcr_pub, '7')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout), 32)

    def test_systemd_branch_only_for_exactly_pcr_11(self):
        # systemd-measure signs with an empty policy-ref. 0.2.0 gave every
        # pcr generation that branch: a systemd-measure signature of a PCR
        # 11 value, with PCR 11 replayed and the state edited to `pcrs 11`,
        # unsealed a generation bound to PCR 7. Now only a generation whose
        # selection is exactly PCR 11 has the branch.
        import base64
        import json
        a = self.node('a')
        self.boot(a, 7, b'ours')
        rsa_key = os.path.join(self.root, 'rsa-pcr.pem')
        rsa_pub = make_key(rsa_key, kind=2048)
        d = self.sigdir(a)
        a.cli('init', '--pcr-key', rsa_pub, '--pcrs', '7', '--pcr-signatures', d)
        uki = hashlib.sha256(b'\0' * 32 + hashlib.sha256(b'uki').digest()).hexdigest()
        ours = os.path.join(self.root, 'for-the-digest.sig')
        run_cli('pcr-sign', '--key', rsa_key, '--pcrs', '11=' + uki, '-o', ours)
        pol = dict(l.split(' ', 1) for l in read_text(ours).splitlines()
                   if not l.startswith('#'))['approved-policy']
        sig = openssl('dgst', '-sha256', '-sign', rsa_key, stdin=bytes.fromhex(pol))
        pkcs1 = openssl('rsa', '-pubin', '-in', rsa_pub, '-RSAPublicKey_out', '-outform', 'DER')
        with open(os.path.join(d, 'tpm2-pcr-signature.json'), 'w') as f:
            json.dump({'sha256': [{'pcrs': [11], 'pkfp': hashlib.sha256(pkcs1).hexdigest(),
                                   'pol': pol, 'sig': base64.b64encode(sig).decode()}]}, f)
        self.boot(a, 7, b"a stranger's")
        a.tools('tpm2_pcrextend', '11:sha256=' + hashlib.sha256(b'uki').hexdigest())
        state = os.path.join(a.state, 'state')
        with open(state) as f:
            text = f.read()
        with open(state, 'w') as f:
            f.write(text.replace('\npcrs 7\n', '\npcrs 11\n'))
        self.serve(a)
        wait_until(lambda: 'write key generation 1' in self.status(a).healthz,
                   'Status to say the write key is not there')
        self.assertNotEqual(self.status(a).healthz, 'ok')


class Literal(BootTest):
    def test_literal_pcrs_beside_the_signed_ones(self):
        # As systemd-cryptenroll offers (--tpm2-pcrs=7 with a signed policy
        # on 11): PCR 11 follows the signer, PCR 7 must keep the value it
        # had when the binding was recorded. A valid PCR 11 signature in a
        # stranger's PCR 7 state unseals nothing: the TPM checks PCR 7.
        a = self.node('a')
        uki = hashlib.sha256(b'uki').hexdigest()

        def boot(pcr7):
            self.boot(a, 7, pcr7)
            a.tools('tpm2_pcrextend', '11:sha256=' + uki)
        boot(b'ours')
        d = self.sigdir(a)
        a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '11', '--pcr-literal', '7',
              '--pcr-signatures', d)
        ours = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stdout.strip()
        self.assertIn('\npcr-literal %s\n' % ours, read_text(os.path.join(a.state, 'state')))
        self.sign_current(a, pcrs='11')
        self.serve(a)
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy')
        a.daemon.stop()
        boot(b"a stranger's")
        self.serve(a)
        stranger = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stdout.strip()
        wait_until(lambda: 'literal PCRs do not hold' in self.status(a).healthz,
                   'Status to say why')
        self.assertIn('pcr ' + stranger, self.status(a).healthz)
        a.daemon.stop()
        # Back in our own PCR 7 state: the same signature works again.
        boot(b'ours')
        self.serve(a)
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy again')


    def test_literal_pcrs_travel_in_a_bundle(self):
        # A dup+pcr generation with a literal PCR 7 goes to node B, booted
        # into the same PCR 7 and 11: the bundle carries the literal values
        # (its pcr-literal line), and B's state records them.
        uki = hashlib.sha256(b'uki').hexdigest()
        a, b = self.node('a'), self.node('b')
        for n in (a, b):
            self.boot(n, 7, b'ours')
            n.tools('tpm2_pcrextend', '11:sha256=' + uki)
        node_a, _ = a.node_file()
        approval_a, _ = self.approve(node_a)
        a.cli('init', '--admin-key', self.admin_pub, '--approval', approval_a, '--pcr-key',
              self.pcr_pub, '--pcrs', '11', '--pcr-literal', '7', '--pcr-signatures',
              self.sigdir(a))
        values, sig = self.sign_current(a, pcrs='11')
        ours = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stdout.strip()
        node_b, _ = b.node_file()
        approval_b, _ = self.approve(node_b)
        bundle = os.path.join(self.root, 'b.bundle')
        a.cli('export', '--to', node_b, '--approval', approval_b, '-o', bundle,
              '--pcr-signatures', self.sigdir(a))
        self.assertIn('\npcr-literal %s\n' % ours, read_text(bundle))
        shutil.copy(sig, self.sigdir(b))
        b.cli('import', '--admin-key', self.admin_pub, bundle, '--pcr-signatures',
              self.sigdir(b))
        self.assertIn('\npcr-literal %s\n' % ours, read_text(os.path.join(b.state, 'state')))
        self.assertRegex(b.offline('keys').stdout, r'\n1 +\S+ +\S+ +write +dup\+pcr ')


class Revocation(BootTest):
    def test_a_revoked_signature_unseals_nothing(self):
        # Boot state A signed; after an update B is signed and A's signature
        # deleted; back in state A with a kept copy of the old signature,
        # 0.2.0 unsealed. A signature names an epoch; pcr-revoke raises the
        # node's epoch (the TPM checks it: PolicyNV), without resealing.
        a = self.node('a')
        self.boot(a, 7, b'state A')
        d = self.sigdir(a)
        a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '7', '--pcr-signatures', d)
        r = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7')
        self.assertIn('epoch 0', r.stderr)
        _, sig_a = self.sign_current(a, name='a.sig')          # epoch 0
        kept = os.path.join(self.root, 'kept-a.sig')
        shutil.copy(sig_a, kept)
        self.assertIn('epoch 0\n', read_text(kept))
        gen = os.path.join(a.state, 'gen-000001.pem')
        self.serve(a)
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy in state A')
        a.daemon.stop()
        # The update: state B signed for epoch 1, A's signature removed, and
        # the epoch raised (as root, with the owner's authorization).
        self.boot(a, 7, b'state B')
        values = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stdout.strip()
        run_cli('pcr-sign', '--key', self.pcr_key, '--pcrs', values, '--epoch', '1',
                '-o', os.path.join(d, 'b.sig'))
        os.unlink(sig_a)
        self.assertEqual(run_cli('pcr-revoke', '--tcti', a.tpm.tcti).stdout, 'epoch 1\n')
        self.serve(a)
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy in state B')
        a.daemon.stop()
        # Back in state A with the kept signature: nothing unseals, not by
        # the daemon, not by stock tpm2-tools.
        self.boot(a, 7, b'state A')
        shutil.copy(kept, os.path.join(d, 'a-again.sig'))
        self.serve(a)
        wait_until(lambda: 'no PCR signature' in self.status(a).healthz, 'Status to say why')
        a.daemon.stop()
        r = tools_unseal_with_signature(a, gen, kept, self.pcr_pub, '7')
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, b'')
        # State A signed again for the current epoch works again: the
        # generation was never resealed.
        values = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stdout.strip()
        run_cli('pcr-sign', '--key', self.pcr_key, '--pcrs', values, '--epoch', '1',
                '-o', os.path.join(d, 'a-epoch1.sig'))
        self.serve(a)
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy with a current signature')
        a.daemon.stop()
        # The epoch never goes back, and only the owner raises it: the
        # index's own (empty) authorization cannot set bits.
        self.assertEqual(run_cli('pcr-revoke', '--tcti', a.tpm.tcti, '--epoch', '1').stdout,
                         'epoch 1\n')
        r = a.tools('tpm2_nvsetbits', '0x01800102', '-C', '0x01800102', '-i', '0x3',
                    check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('epoch 1', run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stderr)


class Legacy(BootTest):
    def test_a_0_2_0_generation_unseals_with_a_legacy_signature(self):
        # tests/fixtures/v0.2.0-pcr: a `pcr` generation with the first
        # policy. It keeps working with `pcr-sign --legacy`; a signature for
        # the new policy does not fit it.
        src = os.path.join(os.environ.get('TOP_SRCDIR', '..'), 'tests', 'fixtures',
                           'v0.2.0-pcr')
        a = self.node('a')
        a.tpm.kill()
        shutil.copy(os.path.join(src, 'swtpm', 'tpm2-00.permall'), a.tpm.state)
        shutil.copytree(os.path.join(src, 'state'), a.state)
        os.chmod(a.state, 0o700)
        self.boot(a, 7, b'fixture boot')
        key = os.path.join(self.root, 'fixture-pcr.pem')
        shutil.copy(os.path.join(src, 'pcr.pem'), key)
        values = run_cli('pcr-read', '--tcti', a.tpm.tcti, '--pcrs', '7').stdout.strip()
        d = self.sigdir(a)
        run_cli('pcr-sign', '--key', key, '--pcrs', values, '-o', os.path.join(d, 'new.sig'))
        self.serve(a)
        wait_until(lambda: 'no PCR signature' in self.status(a).healthz, 'Status to say why')
        run_cli('pcr-sign', '--key', key, '--pcrs', values, '--legacy',
                '-o', os.path.join(d, 'legacy.sig'))
        self.assertIn('policy-ref tpm2-kms/unseal\n', read_text(os.path.join(d, 'legacy.sig')))
        wait_until(lambda: self.status(a).healthz == 'ok', 'healthy with the legacy signature')
        self.assertRegex(self.status(a).key_id, r'^tpm2-kms-g1-82cf093c05dfa3aa3868ca449afdf9da$')


class KindsTogether(BootTest):
    def test_none_dup_and_dup_pcr_across_restarts_exports_and_imports(self):
        a = self.node('a')
        self.boot(a, 7, b'node a')
        sigs = ['--pcr-signatures', self.sigdir(a)]
        a.cli('init', *sigs)                                        # generation 1: none
        a.cli('init', '--admin-key', self.admin_pub, *sigs)
        self.certify(a)                                             # what it makes travels
        a.cli('rotate', *sigs)                                      # 2: dup
        a.cli('init', '--pcr-key', self.pcr_pub, '--pcrs', '7', *sigs)
        self.sign_current(a)
        third = a.cli('rotate', *sigs).stdout.strip()               # 3: dup+pcr
        keys = a.offline('keys').stdout
        for g, kind in ((1, 'none'), (2, 'dup'), (3, 'dup+pcr')):
            self.assertRegex(keys, r'\n%d +\S+ +\S+ +\S+ +%s ' % (g, re.escape(kind)))
        made = []
        for attempt in range(2):                                    # and after a restart
            self.serve(a)
            wait_until(lambda: self.status(a).healthz == 'ok', 'healthy')
            c = a.daemon.client()
            for g in (1, 2, 3):
                a.offline('promote', str(g))
                wait_until(lambda: self.status(a).key_id.startswith('tpm2-kms-g%d-' % g),
                           'write under generation %d' % g)
                made.append((g, os.urandom(32)))
                made[-1] = made[-1] + (c.encrypt(made[-1][1]),)
            for g, seed, e in made:
                self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, seed)
            c.close()
            a.daemon.stop()

        # Node B: its own boot state, signed by the same PCR signer only
        # once the import asks for it.
        b = self.node('b')
        self.boot(b, 7, b'node b')
        node_file, _ = b.node_file()
        approval, _ = self.approve(node_file)
        bundle = os.path.join(self.root, 'b.bundle')
        a.cli('export', '--to', node_file, '--approval', approval, '-o', bundle, *sigs)
        r = b.cli('import', '--admin-key', self.admin_pub, bundle, '--pcr-signatures', self.sigdir(b), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('no PCR signature approves the boot state', r.stderr)
        self.assertFalse(os.path.exists(os.path.join(b.state, 'state')))
        self.sign_current(b)
        b.cli('import', '--admin-key', self.admin_pub, bundle, '--pcr-signatures', self.sigdir(b))
        keys = b.offline('keys').stdout
        self.assertRegex(keys, r'\n2 +\S+ +\S+ +\S+ +dup ')
        self.assertRegex(keys, r'\n3 +\S+ +\S+ +write +dup\+pcr ')
        self.serve(b)
        wait_until(lambda: self.status(b).key_id == third and self.status(b).healthz == 'ok',
                   'B healthy on the dup+pcr write key')
        c = b.daemon.client()
        for g, seed, e in made:
            if g == 1:
                continue                    # `none` never left A
            self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, seed)
        c.close()


if __name__ == '__main__':
    unittest.main(verbosity=2)
