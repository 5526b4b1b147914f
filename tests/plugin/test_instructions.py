#!/usr/bin/python3
"""A regression guard on cost that does not drift with machine noise: the
instructions the daemon executes per Decrypt call, counted by valgrind's
callgrind. The daemon serves K1 and then, in a second run, K2 Decrypt calls
over one connection; (I2 - I1) / (K2 - K1) cancels start-up and shutdown.
The result must stay under the budget committed in
tests/plugin/decrypt-instructions.budget."""

import os
import re
import shutil
import signal
import subprocess
import sys
import unittest

from kmsclient import Kms, Process, Swtpm, builddir, run_cli, tempdir, tpm2_kms, wait_until

SRC = os.environ.get('TOP_SRCDIR', os.getcwd())
K1, K2 = 200, 1200


class Instructions(unittest.TestCase):
    def setUp(self):
        self.root = tempdir('kmsi-')
        self.tpm = Swtpm(self.root)
        self.tpm.start()
        self.state = os.path.join(self.root, 'state')
        run_cli('init', '--tcti', self.tpm.tcti, '--state-dir', self.state)

    def tearDown(self):
        self.tpm.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def run_daemon(self, calls, ciphertext=None):
        n = len(os.listdir(self.root))
        out = os.path.join(self.root, 'callgrind.%d' % n)
        sock = os.path.join(self.root, 'kms-%d.sock' % n)
        log = os.path.join(self.root, 'serve-%d.log' % n)
        p = Process(['valgrind', '--tool=callgrind', '--callgrind-out-file=' + out,
                     tpm2_kms(), 'serve', '--tcti', self.tpm.tcti, '--state-dir', self.state,
                     '--listen', sock, '--probe-interval', '3600000'], log)
        try:
            wait_until(lambda: 'ready: write key' in p.output() or not p.alive(),
                       'daemon under callgrind', timeout=120)
            self.assertTrue(p.alive(), p.output())
            if ciphertext is None:
                c = Kms('unix:' + sock)
                e = c.encrypt(bytes(range(32)), timeout=30)
                c.close()
                ciphertext = (e.ciphertext.hex(), e.key_id)
            r = subprocess.run([os.path.join(builddir(), 'bench', 'loadgen'), sock, 'decrypt',
                                '1', str(calls), ciphertext[0], ciphertext[1]],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        finally:
            self.assertEqual(p.stop(signal.SIGTERM, timeout=120), 0)
        with open(out) as f:
            total = int(re.search(r'^summary: (\d+)', f.read(), re.M).group(1))
        return total, ciphertext

    def test_decrypt_instruction_budget(self):
        with open(os.path.join(SRC, 'tests', 'plugin', 'decrypt-instructions.budget')) as f:
            budget = int(f.read().split()[0])
        i1, ct = self.run_daemon(K1)
        i2, _ = self.run_daemon(K2, ct)
        per_call = (i2 - i1) / (K2 - K1)
        print('instructions per Decrypt (server side, callgrind): %.0f; budget %d' % (
            per_call, budget))
        self.assertGreater(per_call, 0)
        self.assertLess(per_call, budget, 'Decrypt got slower: over the committed budget')


if __name__ == '__main__':
    if 'libasan' in subprocess.run(['ldd', tpm2_kms()], capture_output=True, text=True).stdout:
        # valgrind cannot run a sanitized binary, and the count would mean
        # nothing there: a skip, reported as such (exit 77).
        print('SKIP: instruction budget applies to the normal build only')
        sys.exit(77)
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
