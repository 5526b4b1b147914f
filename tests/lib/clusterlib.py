"""Helpers for the tests of several nodes, escrow and recovery: nodes made
of a swtpm, a state directory and a daemon; keys made with openssl; DER and
PEM read here, independently of the plugin; a duplication done by
tpm2-tools alone."""

import base64
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys
import unittest

from kmsclient import Daemon, Swtpm, run_cli, tempdir


def openssl(*args, stdin=None):
    return subprocess.run(['openssl'] + list(args), check=True, capture_output=True,
                          input=stdin).stdout


def make_key(path, kind='ec'):
    """A signing key made with openssl, as an admin makes one; its public
    half beside it as PATH.pub.pem."""
    if kind == 'ec':
        openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
                '-out', path)
    else:
        openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:%d' % kind,
                '-out', path)
    pub = path.replace('.pem', '.pub.pem')
    openssl('pkey', '-in', path, '-pubout', '-out', pub)
    return pub


def snapshot(d):
    """Every file of a state directory and its subdirectories, byte for
    byte (the daemon's own decrypt-counts excepted: it describes the running
    daemon)."""
    out = {}
    for top, dirs, files in os.walk(d):
        dirs.sort()
        for name in sorted(files):
            if name == 'decrypt-counts' and top == d:
                continue
            path = os.path.join(top, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, d)] = f.read()
    return out


def key_id_of(kek, generation):
    """Brief §4, computed here independently of the plugin."""
    mac = hmac.new(kek, b'tpm2-kms key id v1', hashlib.sha256).hexdigest()
    return 'tpm2-kms-g%d-%s' % (generation, mac[:32])


def der_items(der):
    """The top-level elements of a DER SEQUENCE, as (tag, contents)."""
    def tl(i):
        tag, length = der[i], der[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7f
            length = int.from_bytes(der[i:i + n], 'big')
            i += n
        return tag, length, i
    _, _, i = tl(0)
    items = []
    while i < len(der):
        tag, length, j = tl(i)
        items.append((tag, der[j:j + length]))
        i = j + length
    return items


def read_text(path):
    with open(path) as f:
        return f.read()


def pem_blocks(text, label):
    return [base64.b64decode(b) for b in
            re.findall(r'-----BEGIN %s-----\n(.*?)-----END %s-----' % (label, label), text,
                       re.S)]


def der(tag, body):
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82, n >> 8, n & 0xff])
    return bytes([tag]) + length + body


def importable_pem(pub, dup, seed):
    """A TSS2 id-importablekey, DER written here from the key-file draft."""
    body = (der(0x06, bytes.fromhex('6781050a0104')) + der(0xa0, der(0x01, b'\xff')) +
            der(0xa2, der(0x04, seed)) + der(0x02, bytes.fromhex('0081000001')) +
            der(0x04, pub) + der(0x04, dup))
    b64 = base64.b64encode(der(0x30, body)).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ('-----BEGIN TSS2 PRIVATE KEY-----\n' + '\n'.join(lines) +
            '\n-----END TSS2 PRIVATE KEY-----\n')


def bundle_text(node_name, admin_der, gens):
    """A bundle written by the test (brief §9, bundle.h): gens are
    (number, created, key_id, write, pem, kek[, certificate line])."""
    body = ('# made by the test\nformat 1\nnode %s\nadmin-key %s\n' %
            (node_name.hex(), admin_der.hex()))
    for number, created, key_id, write, pem, _, *cert in gens:
        body += 'generation %d created %d key-id %s policy dup%s\n%s' % (
            number, created, key_id, ' write' if write else '', pem)
        body += ''.join(line + '\n' for line in cert)
    macs = ''.join('mac %d %s\n' % (g[0], hmac.new(g[5], b'tpm2-kms bundle v1\n' +
                                                   body.encode(), hashlib.sha256).hexdigest())
                   for g in gens)
    return body + macs


class Node:
    def __init__(self, root, name):
        self.name = name
        self.root = os.path.join(root, name)
        os.makedirs(self.root)
        self.tpm = Swtpm(self.root)
        self.tpm.start()
        self.daemon = Daemon(self.root, self.tpm)
        self.state = self.daemon.state_dir

    def cli(self, *args, check=True):
        return run_cli(*args, '--tcti', self.tpm.tcti, '--state-dir', self.state, check=check)

    def offline(self, *args, check=True):
        return run_cli(*args, '--state-dir', self.state, check=check)

    def node_file(self):
        path = os.path.join(self.root, 'node.pem')
        r = self.cli('node-key', '-o', path)
        fp = re.search(r'node fingerprint: ([0-9a-f]+)', r.stderr).group(1)
        return path, fp

    def tools(self, *args, check=True):
        env = dict(os.environ, TPM2TOOLS_TCTI=self.tpm.tcti)
        return subprocess.run(list(args), env=env, capture_output=True, check=check,
                              cwd=self.root)

    def key_id(self):
        c = self.daemon.client()
        try:
            return c.status().key_id
        finally:
            c.close()

    def stop(self):
        if self.daemon.proc:
            self.daemon.stop()
        self.tpm.kill()


class ClusterTest(unittest.TestCase):
    def setUp(self):
        self.root = tempdir('kmsc-')
        self.nodes = []
        self.admin = os.path.join(self.root, 'admin.pem')
        self.admin_pub = make_key(self.admin)

    def tearDown(self):
        for n in self.nodes:
            n.stop()
        result = self._outcome.result
        if any(t is self for t, _ in result.failures + result.errors):
            for n in self.nodes:
                sys.stderr.write('--- %s daemon log ---\n%s\n' % (n.name, n.daemon.output()[-4000:]
                                                                  if n.daemon.proc else ''))
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def node(self, name):
        n = Node(self.root, name)
        self.nodes.append(n)
        return n

    def approve(self, node_file, admin=None, out=None):
        out = out or node_file.replace('node.pem', 'approval')
        r = run_cli('approve', '--admin-key', admin or self.admin, node_file, '-o', out)
        return out, r

    def join(self, source, target, generations=()):
        """node-key -> approve -> export -> import (trusting the admin key
        the operator gives) -> certify, as the guide says."""
        node_file, fp = target.node_file()
        approval, r = self.approve(node_file)
        self.assertIn('approved node fingerprint: ' + fp, r.stderr)
        bundle = os.path.join(target.root, 'bundle')
        extra = []
        for g in generations:
            extra += ['--generation', str(g)]
        source.cli('export', '--to', node_file, '--approval', approval, '-o', bundle, *extra)
        target.cli('import', '--admin-key', self.admin_pub, bundle)
        target.cli('certify', '--approval', approval)
        return bundle

    def certify(self, node):
        """The node's own approval recorded, and what it holds certified."""
        node_file, _ = node.node_file()
        approval, _ = self.approve(node_file)
        return node.cli('certify', '--approval', approval)

    def recovery_key(self):
        """An offline recovery key as §7.1 makes it, and the admin's
        approval of it: (key, node file, fingerprint, approval)."""
        key = os.path.join(self.root, 'recovery.pem')
        pub = make_key(key)
        node_file = os.path.join(self.root, 'recovery.node')
        r = run_cli('node-key', '--public', pub, '-o', node_file)
        fp = re.search(r'node fingerprint: (\S+)', r.stderr).group(1)
        approval, r = self.approve(node_file, out=os.path.join(self.root, 'recovery.approval'))
        self.assertIn(fp, r.stderr)
        return key, node_file, fp, approval

    def node_with_escrow(self, name, recovery_node, recovery_approval):
        """The guide's first start with escrow: the node's own approval
        first, so that every generation it makes is certified (recover takes
        no other)."""
        n = self.node(name)
        node_file, _ = n.node_file()
        approval, _ = self.approve(node_file)
        n.cli('init', '--admin-key', self.admin_pub, '--approval', approval, '--escrow-to',
              recovery_node, '--escrow-approval', recovery_approval)
        return n

    def first_node(self, name='a'):
        """The recommended first start: node-key, the admin's approval, then
        init with the admin key and that approval (generation 1 certified)."""
        a = self.node(name)
        node_file, _ = a.node_file()
        approval, _ = self.approve(node_file)
        a.cli('init', '--admin-key', self.admin_pub, '--approval', approval)
        return a


def write_file(node, name, data):
    path = os.path.join(node.root, name)
    with open(path, 'wb') as f:
        f.write(data)
    return name


def duplicate_with_tools(a, sealed_file, target_file, approval, admin_pub):
    """TPM2_Duplicate of a sealed generation file of node a, run by
    tpm2-tools alone, with the policy P_dup satisfied from our approval
    file; tools.dpriv and tools.seed land in a.root."""
    with open(sealed_file) as f:
        gen = pem_blocks(f.read(), 'TSS2 PRIVATE KEY')[0]
    items = der_items(gen)
    assert items[0][1] == bytes.fromhex('6781050a0105')   # id-sealedkey
    write_file(a, 'g.pub', items[3][1])
    write_file(a, 'g.priv', items[4][1])
    node = pem_blocks(read_text(target_file), 'TPM2-KMS NODE')[0]
    # The storage key's TPM2B_PUBLIC (a TPM node's signing key follows it).
    write_file(a, 'parent.tpub', node[:2 + int.from_bytes(node[:2], 'big')])
    fields = dict(l.split(' ', 1) for l in read_text(approval).splitlines()
                  if not l.startswith('#'))
    approved = bytes.fromhex(fields['approved-policy'])
    ref = fields['policy-ref'].encode()
    write_file(a, 'approved.pol', approved)
    write_file(a, 'ref.bin', ref)
    write_file(a, 'msg.bin', approved + ref)
    write_file(a, 'sig.der', bytes.fromhex(fields['signature']))
    # openssl checks the approval's signature by itself.
    openssl('dgst', '-sha256', '-verify', admin_pub, '-signature',
            os.path.join(a.root, 'sig.der'), os.path.join(a.root, 'msg.bin'))
    t = a.tools
    # swtpm holds three objects: each is saved to a context file and
    # flushed, and loaded again by the command that uses it.
    t('tpm2_load', '-C', '0x81000001', '-u', 'g.pub', '-r', 'g.priv', '-c', 'g.ctx',
      '-n', 'g.name')
    t('tpm2_flushcontext', '-t')
    t('tpm2_loadexternal', '-C', 'n', '-u', 'parent.tpub', '-c', 'parent.ctx',
      '-n', 'parent.name')
    t('tpm2_flushcontext', '-t')
    t('tpm2_loadexternal', '-C', 'o', '-G', 'ecc', '-u', admin_pub, '-c', 'admin.ctx',
      '-n', 'admin.name')
    t('tpm2_flushcontext', '-t')
    # Our approval names the admin key the way tpm2-tools does.
    with open(os.path.join(a.root, 'admin.name'), 'rb') as f:
        assert f.read().hex() == fields['signer'], 'the approval names another signer'
    t('tpm2_verifysignature', '-c', 'admin.ctx', '-g', 'sha256', '-m', 'msg.bin',
      '-s', 'sig.der', '-f', 'ecdsa', '-t', 'ticket')
    t('tpm2_startauthsession', '--policy-session', '-S', 'session.ctx')
    try:
        t('tpm2_policyduplicationselect', '-S', 'session.ctx', '-n', 'g.name',
          '-N', 'parent.name')
        r = t('tpm2_policyauthorize', '-S', 'session.ctx', '-i', 'approved.pol',
              '-q', 'ref.bin', '-n', 'admin.name', '-t', 'ticket', check=False)
        if r.returncode != 0:
            return r
        t('tpm2_policycommandcode', '-S', 'session.ctx', 'TPM2_CC_Duplicate')
        return t('tpm2_duplicate', '-C', 'parent.ctx', '-c', 'g.ctx', '-G', 'null',
                 '-p', 'session:session.ctx', '-r', 'tools.dpriv', '-s', 'tools.seed',
                 check=False)
    finally:
        t('tpm2_flushcontext', 'session.ctx', check=False)
        t('tpm2_flushcontext', '-t', check=False)
