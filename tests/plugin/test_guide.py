#!/usr/bin/python3
"""docs/operations.md §9.1 and §9.2 (the first node and a joining node, with
provenance and the operator's admin key) run as written: each command line
of those sections' examples is read from the guide itself and run by sh, on
the machine the guide says (the admin's, node A's, node B's), with the
files the guide has the operator carry copied between them. Each machine
is a directory whose `tpm2-kms` on PATH is the built binary with that
machine's configuration file (its swtpm and state directory: the guide's
defaults are /dev/tpmrm0 and /var/lib/tpm2-kms). Passphrases are typed on a
terminal, as the guide's openssl commands ask for them. systemctl and
status lines are left to tests/systemd (they need systemd and /run)."""

import os
import pty
import re
import shutil
import sys
import unittest

from clusterlib import read_text
from ektpm import HAVE_SETUP, ek_setup, make_ca_config, roots_dir
from etcdlib import Apiserver, Etcd, have_etcd
from kmsclient import Daemon, Swtpm, tempdir, tpm2_kms, wait_until

SRC = os.environ.get('TOP_SRCDIR', os.getcwd())
PASSPHRASE = b'correct horse battery staple'


def guide_blocks(heading):
    """The indented example blocks of one section of the guide, as lists of
    (prompt, command) in order; output lines are left out."""
    text = read_text(os.path.join(SRC, 'docs', 'operations.md'))
    start = text.index('\n' + heading)
    end = min(i for i in (text.find('\n### ', start + 1), text.find('\n## ', start + 1),
                          len(text)) if i >= 0)
    blocks, current = [], []
    lines = text[start:end].splitlines()
    # A command continued with a backslash is one command.
    for i in range(len(lines) - 1, 0, -1):
        if lines[i - 1].endswith('\\') and lines[i].startswith('    '):
            lines[i - 1] = lines[i - 1][:-1] + lines[i].strip()
            del lines[i]
    for line in lines:
        if line.startswith('    '):
            m = re.match(r'^ {4,}(?:([a-z0-9-]+)[#$] +)?((?:tpm2-kms|openssl|systemctl) .*)$',
                         line)
            if m:
                current.append((m.group(1), m.group(2)))
        elif line.strip() and current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


class Machine:
    def __init__(self, root, name, tpm=None):
        self.name = name
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.bin = os.path.join(self.dir, 'bin')
        os.makedirs(self.bin)
        conf = os.path.join(self.dir, 'tpm2-kms.conf')
        self.tpm = tpm
        self.state = os.path.join(self.dir, 'state')
        with open(conf, 'w') as f:
            if tpm:
                f.write('tcti %s\nstate-dir %s\npcr-signatures %s\n' %
                        (tpm.tcti, self.state, os.path.join(self.dir, 'sigs')))
        # The offline admin tools read no configuration file.
        with open(os.path.join(self.bin, 'tpm2-kms'), 'w') as f:
            f.write('#!/bin/sh\ncmd=$1\nshift\ncase $cmd in approve|pcr-sign|recover) '
                    'exec %s "$cmd" "$@";; esac\nexec %s "$cmd" --config %s "$@"\n' %
                    (tpm2_kms(), tpm2_kms(), conf))
        os.chmod(os.path.join(self.bin, 'tpm2-kms'), 0o755)

    def run(self, command):
        """command, as written, by sh on a terminal: passphrase prompts are
        answered. Returns (exit status, output)."""
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(self.dir)
            env = dict(os.environ, PATH=self.bin + ':' + os.environ['PATH'])
            os.execve('/bin/sh', ['sh', '-c', command], env)
        out = b''
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if re.search(rb'pass ?phrase[^\n]*:\s*$', out, re.I):
                os.write(fd, PASSPHRASE + b'\n')
                out += b'\n'
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        return os.waitstatus_to_exitcode(status), out.decode(errors='replace')


class Guide(unittest.TestCase):
    def setUp(self):
        self.root = tempdir('kmsg-')
        self.tpms = []

    def tearDown(self):
        for t in self.tpms:
            t.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def machine(self, name, with_tpm=True, ek_ca=None):
        tpm = None
        if with_tpm:
            tpm = Swtpm(os.path.join(self.root, name + '-tpm'))
            if ek_ca:                          # a TPM with EK certificates from ek_ca
                ek_setup(tpm, ek_ca)
            tpm.start()
            self.tpms.append(tpm)
        return Machine(self.root, name, tpm)

    def carry(self, name, src, dst):
        shutil.copy(os.path.join(src.dir, name), os.path.join(dst.dir, name))

    def run_block(self, machines, default, block, ran):
        for prompt, command in block:
            if command.startswith('systemctl') or ' status ' in command + ' ':
                continue
            m = machines[prompt or default]
            code, out = m.run(command)
            self.assertEqual(code, 0, '%s$ %s\n%s' % (m.name, command, out))
            ran.append('%s: %s' % (m.name, command))
        return ran

    @unittest.skipUnless(HAVE_SETUP, 'swtpm_setup and swtpm_localca (swtpm-tools) are needed')
    def test_first_node_and_a_joining_node_as_written(self):
        # Node B's TPM has EK certificates from a test manufacturer CA,
        # whose root and intermediate the admin keeps in tpm-roots/: the
        # attested join of §9.2, then its fallback for a TPM without them.
        ca = os.path.join(self.root, 'manufacturer-ca')
        make_ca_config(ca)
        admin = self.machine('admin', with_tpm=False)
        a = self.machine('node-a')
        b = self.machine('node-b', ek_ca=ca)
        roots_dir(ca, os.path.join(admin.dir, 'tpm-roots'))
        machines = {'admin': admin, 'node-a': a, 'node-b': b}
        ran = []
        # §9.1: the admin makes the key; node A's node file goes to the
        # admin, the approval and the public key come back.
        first = guide_blocks('### 9.1 The first node')
        self.assertEqual(len(first), 2, first)
        self.run_block(machines, 'admin', first[0], ran)
        self.carry('admin.pub.pem', admin, a)
        for prompt, command in first[1]:
            self.run_block(machines, None, [(prompt, command)], ran)
            if 'node-key' in command:
                self.carry('node-a.node', a, admin)
            if 'approve' in command:
                self.carry('node-a.approval', admin, a)
        self.assertIn(' policy dup\n', read_text(os.path.join(a.state, 'state')))
        self.assertTrue(os.path.exists(os.path.join(a.state, 'gen-000001.cert')))
        # §9.2, block by block, on the machine the guide names.
        join = guide_blocks('### 9.2 Joining a node')
        self.assertEqual(len(join), 7, join)
        self.run_block(machines, 'node-b', join[0], ran)          # node-key
        self.carry('node-b.node', b, admin)
        self.run_block(machines, 'admin', join[1], ran)           # approve --ek-ca: challenge
        self.carry('node-b.challenge', admin, b)
        self.run_block(machines, 'node-b', join[2], ran)          # node-key --answer
        self.carry('node-b.response', b, admin)
        self.run_block(machines, 'admin', join[3], ran)           # approve --response
        approval = os.path.join(admin.dir, 'node-b.approval')
        attested = read_text(approval)
        self.assertIn('# attested: EK certificate chains to', attested)
        # join[4] is the fallback for a TPM without an EK certificate: the
        # same approval, unattested; run as written, it warns. The attested
        # one is put back for the rest of the join.
        code, out = admin.run(join[4][0][1])
        self.assertEqual(code, 0, out)
        self.assertIn('nothing was attested', out)
        with open(approval, 'w') as f:
            f.write(attested)
        self.carry('node-b.node', admin, a)
        self.carry('node-b.approval', admin, a)
        self.carry('node-b.approval', admin, b)
        self.carry('admin.pub.pem', admin, b)
        self.run_block(machines, 'node-a', join[5], ran)          # export
        self.carry('node-b.bundle', a, b)
        self.run_block(machines, 'node-b', join[6], ran)          # import, certify
        self.assertTrue(os.path.exists(os.path.join(b.state, 'node-approval')))
        # Both nodes serve the same write key_id, and B's next generation is
        # certified by B.
        ids = []
        for m in (a, b):
            d = Daemon(m.dir, m.tpm, '--pcr-signatures', os.path.join(m.dir, 'sigs'),
                       state_dir=m.state)
            d.start()
            c = d.client()
            ids.append(c.status().key_id)
            c.close()
            d.stop()
        self.assertEqual(ids[0], ids[1])
        # §9.5: what to compare out of band. `keys` names the admin key the
        # node trusts (its TPM Name, as approvals name their signer) and the
        # node's own keys, as node-key printed them.
        signer = re.search(r'^signer (\S+)$', read_text(os.path.join(b.dir, 'node-b.approval')),
                           re.M).group(1)
        for m, node_file in ((a, 'node-a.node'), (b, 'node-b.node')):
            code, out = m.run('tpm2-kms keys')
            self.assertEqual(code, 0, out)
            self.assertRegex(out, r'(?m)^admin key: +%s\s*$' % signer)
            code, fps = m.run('tpm2-kms node-key -o /dev/null')
            storage = re.search(r'node fingerprint: (\S+)', fps).group(1)
            signing = re.search(r'node signing key: (\S+)', fps).group(1)
            self.assertRegex(out, r'(?m)^this node: +%s\s*$' % storage)
            self.assertRegex(out, r'(?m)^signing key: +%s \(approval recorded' % signing)
            self.assertRegex(out, r'(?m)^uncertified: +none\s*$')  # generation 1 certified
        print('ran as written:\n  ' + '\n  '.join(ran))

    def test_recommended_first_start_as_written(self):
        # §2 as an operator new to the project reads it from the top: the
        # admin and recovery keys first, then a first start whose generation
        # 1 is duplicable and escrowed (the guide's order used to end with
        # a `none` generation that no drill could bring back).
        admin = self.machine('admin', with_tpm=False)
        a = self.machine('node-a')
        machines = {'admin': admin, 'node-a': a}
        ran = []
        blocks = guide_blocks('## 2. First start')
        first = blocks[0]
        self.assertIn('init --admin-key admin.pub.pem --approval node-a.approval '
                      '--escrow-to recovery.node --escrow-approval recovery.approval',
                      ' '.join(c for _, c in first))
        for prompt, command in first:
            if command.startswith('tpm2-kms init'):
                for f in ('admin.pub.pem', 'recovery.node', 'recovery.approval',
                          'node-a.approval'):
                    self.carry(f, admin, a)
            self.run_block(machines, None, [(prompt, command)], ran)
            if 'node-key -o node-a.node' in command:
                self.carry('node-a.node', a, admin)
        code, out = a.run('tpm2-kms keys')
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r'\n1 +tpm2-kms-g1-\S+ +\S+ +write +dup +yes ')
        self.assertTrue(os.path.exists(os.path.join(a.state, 'escrow', 'gen-000001.pem')))
        print('ran as written:\n  ' + '\n  '.join(ran))

    def test_encryption_configuration_as_written(self):
        # §3's commands, with /etc/kubernetes/enc mapped to the machine's
        # directory; what they write is parsed and its provider order checked.
        # Then doctor, as written, reads the last one and asks the daemon.
        import yaml
        a = self.machine('node-a')
        d = Daemon(a.dir, a.tpm, state_dir=a.state)
        with open(os.path.join(a.dir, 'tpm2-kms.conf'), 'a') as f:
            f.write('listen %s\n' % d.sock)
        d.start()
        blocks = guide_blocks('## 3. Point kube-apiserver at it')
        commands = [c for b in blocks for _, c in b if 'tpm2-kms encryption-config' in c]
        self.assertEqual(len(commands), 3, commands)
        [doctor] = [c for b in blocks for _, c in b if c.startswith('tpm2-kms doctor')]
        orders = []
        try:
            for command in commands:
                code, out = a.run(command.replace('/etc/kubernetes/enc/', a.dir + '/'))
                self.assertEqual(code, 0, out)
                with open(os.path.join(a.dir, 'encryption-configuration.yaml')) as f:
                    cfg = yaml.safe_load(f)
                orders.append([next(iter(p)) for p in cfg['resources'][0]['providers']])
            code, out = a.run(doctor.replace('/etc/kubernetes/enc/', a.dir + '/'))
        finally:
            d.stop()
        self.assertEqual(orders, [['kms', 'identity'], ['identity', 'kms'],
                                  ['kms', 'identity']])
        # The state is root's here (a warning); nothing is wrong.
        self.assertEqual(code, 3, out)
        self.assertNotRegex(out, r'(?m)^error')
        for fid in ('encconfig.endpoint', 'encconfig.order', 'encconfig.kms', 'daemon.roundtrip'):
            self.assertRegex(out, r'(?m)^ok +%s ' % re.escape(fid))

    @unittest.skipUnless(have_etcd(), 'etcd-server and etcd-client are not installed')
    def test_rotation_loop_and_a_backup_audit_as_written(self):
        # §5 and §6 against a real etcd (TLS, client certificates), with the
        # guide's kubeadm paths mapped to the test's PKI and /var/backups to
        # the machine's directory; kube-apiserver's part (writing, and
        # re-encrypting with the new key) is played by etcdlib.Apiserver.
        a = self.machine('node-a')
        d = Daemon(a.dir, a.tpm, state_dir=a.state)
        d.start()
        etcd = Etcd(a.dir)
        etcd.start()
        kms = d.client()
        try:
            mapped = {'https://127.0.0.1:2379': etcd.url,
                      '/etc/kubernetes/pki/etcd/ca.crt': etcd.pki['ca.crt'],
                      '/etc/kubernetes/pki/apiserver-etcd-client.crt': etcd.pki['client.crt'],
                      '/etc/kubernetes/pki/apiserver-etcd-client.key': etcd.pki['client.key'],
                      '/var/backups/': a.dir + '/'}
            text = read_text(os.path.join(SRC, 'docs', 'operations.md'))
            section = text[text.index('\n## 5. '):text.index('\n## 6. ')]
            conf = re.findall(r'^    ((?:endpoints|cacert|cert|key) \S+)$', section, re.M)
            self.assertEqual(len(conf), 4, conf)
            with open(os.path.join(a.dir, 'tpm2-kms.conf'), 'a') as f:
                for line in conf:
                    for k, v in mapped.items():
                        line = line.replace(k, v)
                    f.write(line + '\n')
                f.write('listen %s\n' % d.sock)
            old = Apiserver(kms)
            keys = [b'/registry/secrets/default/s%d' % i for i in range(3)]
            for k in keys:
                etcd.put(k, old.value(k, b'v'))

            ran = []
            loop = guide_blocks('## 5. Rotation and retirement: the closed loop')
            self.assertEqual([[c.split()[1] for _, c in b] for b in loop],
                             [['rotate', 'status'], ['audit'], ['retire']])
            self.run_block({'node-a': a}, 'node-a', loop[0], ran)        # rotate (status: skipped)
            wait_until(lambda: kms.status().key_id.startswith('tpm2-kms-g2-'), 'rotation seen')
            new = Apiserver(kms)
            for k in keys:                                               # re-encrypt
                etcd.put(k, new.value(k, b'v'))
            # The rotation "long ago" (retire wants the audit 120 s after it):
            # the record is rewound rather than waited for.
            with open(os.path.join(a.state, 'write-since'), 'w') as f:
                f.write('generation 2 since 1\n')
            code, out = a.run(loop[1][0][1])                             # audit
            self.assertEqual(code, 0, out)
            self.assertIn('Generation 1 protects nothing in etcd: tpm2-kms retire 1', out)
            ran.append(loop[1][0][1])
            code, out = a.run(loop[2][0][1])                             # retire 1
            self.assertEqual(code, 0, out)
            self.assertIn('found no object under generation 1', out)
            ran.append(loop[2][0][1])

            backup = guide_blocks('## 6. Backup')
            self.assertEqual(len(backup), 1, backup)
            [(_, audit_snapshot)] = backup[0]
            etcd.etcdctl('snapshot', 'save', os.path.join(a.dir, 'etcd-snapshot.db'))
            for k, v in mapped.items():
                audit_snapshot = audit_snapshot.replace(k, v)
            code, out = a.run(audit_snapshot)
            self.assertEqual(code, 0, out)
            self.assertIn('restorable with this node\'s keys now: yes', out)
            ran.append(audit_snapshot)
            print('ran as written:\n  ' + '\n  '.join(ran))
        finally:
            kms.close()
            etcd.stop()
            d.stop()

    def test_escrow_and_recovery_as_written(self):
        # §9.1 for the admin key and the first node, then §7.1, §7.2 and the
        # disaster of §7.4 on a replacement, every command from the guide.
        admin = self.machine('admin', with_tpm=False)
        a = self.machine('node-a')
        new = self.machine('new')
        offline = admin                       # the admin's offline machine
        machines = {'admin': admin, 'node-a': a, 'new': new, 'offline': offline}
        ran = []
        first = guide_blocks('### 9.1 The first node')
        self.run_block(machines, 'admin', first[0], ran)
        self.carry('admin.pub.pem', admin, a)
        for prompt, command in first[1]:
            self.run_block(machines, None, [(prompt, command)], ran)
            if 'node-key' in command:
                self.carry('node-a.node', a, admin)
            if 'approve' in command:
                self.carry('node-a.approval', admin, a)
        # §7.1 on the offline machine; §7.2 on the node.
        making = guide_blocks('### 7.1 Making and keeping the recovery key')
        self.assertEqual(len(making), 2, making)
        for block in making:
            self.run_block(machines, 'admin', block, ran)
        for f in ('recovery.node', 'recovery.approval'):
            self.carry(f, admin, a)
        self.run_block(machines, 'node-a', guide_blocks('### 7.2 Turning escrow on')[0], ran)
        d = Daemon(a.dir, a.tpm, state_dir=a.state)
        d.start()
        c = d.client()
        before = c.encrypt(b'a Secret before the disaster')
        c.close()
        d.stop()
        # The backup: the state directory, as section 6 copies it.
        shutil.copytree(a.state, os.path.join(offline.dir, 'backup', 'var', 'lib', 'tpm2-kms'))
        a.tpm.kill()                          # the TPM is gone
        steps = guide_blocks('### 7.4 Recovery on a replacement machine')
        self.assertEqual(len(steps), 3, steps)
        self.run_block(machines, 'new', steps[0], ran)             # node-key
        self.carry('new.node', new, offline)
        self.run_block(machines, 'offline', steps[1], ran)         # recover
        self.carry('new.bundle', offline, new)
        for f in ('admin.pub.pem', 'recovery.node', 'recovery.approval'):
            self.carry(f, admin, new)
        for prompt, command in steps[2]:                           # import ... init
            self.run_block(machines, None, [(prompt, command)], ran)
            if 'approve' in command:
                self.carry('new.approval', admin, new)
        d = Daemon(new.dir, new.tpm, state_dir=new.state)
        d.start()
        c = d.client()
        self.assertEqual(c.decrypt(before.ciphertext, before.key_id).plaintext,
                         b'a Secret before the disaster')
        self.assertEqual(c.status().key_id, before.key_id)
        c.close()
        d.stop()
        self.assertTrue(os.path.exists(os.path.join(new.state, 'escrow', 'gen-000001.pem')))
        print('ran as written:\n  ' + '\n  '.join(ran))


if __name__ == '__main__':
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
