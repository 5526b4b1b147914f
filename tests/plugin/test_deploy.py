#!/usr/bin/python3
"""deploy/encryption-configuration.yaml: checked the way kube-apiserver
reads it, and its endpoint served by tpm2-kms for real."""

import os
import re
import shutil
import sys
import unittest

import yaml

from kmsclient import Daemon, Kms, Swtpm, run_cli, tempdir

SRC = os.environ.get('TOP_SRCDIR', os.getcwd())


class EncryptionConfiguration(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(SRC, 'deploy', 'encryption-configuration.yaml')) as f:
            self.cfg = yaml.safe_load(f)

    def kms(self):
        return self.cfg['resources'][0]['providers'][0]['kms']

    def test_shape(self):
        self.assertEqual(self.cfg['apiVersion'], 'apiserver.config.k8s.io/v1')
        self.assertEqual(self.cfg['kind'], 'EncryptionConfiguration')
        res = self.cfg['resources'][0]
        self.assertIn('secrets', res['resources'])
        kms = self.kms()
        self.assertEqual(kms['apiVersion'], 'v2')
        # KMS v2 provider names must be unique and may not contain ':'.
        self.assertRegex(kms['name'], r'^[^:]+$')
        m = re.fullmatch(r'(\d+)s', kms['timeout'])
        self.assertTrue(m and 0 < int(m.group(1)) <= 10)
        # identity last: reads old plaintext data, never used to write.
        self.assertEqual(res['providers'][-1], {'identity': {}})

    def test_endpoint_is_the_default_socket_and_serves(self):
        endpoint = self.kms()['endpoint']
        self.assertTrue(endpoint.startswith('unix:///'))
        path = endpoint[len('unix://'):]
        printed = run_cli('serve', '--print-config', '--config', '/dev/null').stdout
        self.assertIn('listen %s\n' % path, printed)

        # Serve the same endpoint form, relocated into a temp dir.
        root = tempdir('kmsd-')
        tpm = Swtpm(root)
        tpm.start()
        d = Daemon(root, tpm)
        d.sock = os.path.join(root, os.path.basename(path))
        d.extra = []
        d.start()
        try:
            c = Kms('unix://' + d.sock)
            self.assertEqual(c.status(timeout=3).healthz, 'ok')
            c.close()
        finally:
            d.stop()
            tpm.kill()
            shutil.rmtree(root, ignore_errors=True)


class EncryptionConfigCommand(unittest.TestCase):
    """`tpm2-kms encryption-config`: each phase parsed by a YAML parser and
    checked against the rules kube-apiserver applies to the file."""

    def config(self, *args):
        return yaml.safe_load(run_cli('encryption-config', '--config', '/dev/null', *args).stdout)

    def check(self, cfg, name, socket):
        self.assertEqual(cfg['apiVersion'], 'apiserver.config.k8s.io/v1')
        self.assertEqual(cfg['kind'], 'EncryptionConfiguration')
        [res] = cfg['resources']
        self.assertEqual(res['resources'], ['secrets'])
        [kms] = [p['kms'] for p in res['providers'] if 'kms' in p]
        self.assertEqual(set(kms), {'apiVersion', 'name', 'endpoint', 'timeout'})
        self.assertEqual(kms['apiVersion'], 'v2')
        self.assertEqual(kms['name'], name)
        self.assertNotIn(':', kms['name'])
        self.assertEqual(kms['endpoint'], 'unix://' + socket)
        m = re.fullmatch(r'(\d+)s', kms['timeout'])
        self.assertTrue(m and 0 < int(m.group(1)) <= 10)
        self.assertEqual(len(res['providers']), 2)
        self.assertIn({'identity': {}}, res['providers'])
        return [next(iter(p)) for p in res['providers']]

    def test_the_phases(self):
        default = self.config()
        self.assertEqual(self.check(default, 'tpm2-kms', '/run/tpm2-kms/kms.sock'),
                         ['kms', 'identity'])
        # The shipped file is phase 2 with the defaults.
        with open(os.path.join(SRC, 'deploy', 'encryption-configuration.yaml')) as f:
            self.assertEqual(default, yaml.safe_load(f))
        self.assertEqual(self.config('--phase', '2'), default)
        for phase in ('1', 'off'):
            self.assertEqual(self.check(self.config('--phase', phase), 'tpm2-kms',
                                        '/run/tpm2-kms/kms.sock'), ['identity', 'kms'])
        self.assertEqual(self.check(self.config('--listen', 'unix:///var/run/k.sock', '--name',
                                                'node-a'), 'node-a', '/var/run/k.sock'),
                         ['kms', 'identity'])

    def test_refusals(self):
        for args, why in ((['--name', 'a:b'], "without ':'"), (['--name', ''], 'is empty'),
                          (['--phase', '3'], '1, 2 or off')):
            r = run_cli('encryption-config', '--config', '/dev/null', *args, check=False)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(why, r.stderr)
            self.assertEqual(r.stdout, '')
        r = run_cli('encryption-config', '--config', '/dev/null', '--listen', '@kms',
                    check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('as a path', r.stderr)


if __name__ == '__main__':
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
