#!/usr/bin/python3
"""The source tree's rules, read from the include lines: a folder includes
only itself and the folders below it (docs/architecture.md, "The source
tree"), and each foreign library has its one includer."""

import os
import re
import sys
import unittest

SRC = os.path.join(os.environ.get('TOP_SRCDIR', os.getcwd()), 'src')

# Each folder and the folders it may include (its own is always allowed).
MAY = {
    'cli': {'audit', 'admin', 'kms', 'transport', 'keys', 'tpm', 'base'},
    'audit': {'kms', 'transport', 'keys', 'tpm', 'base'},
    'admin': {'keys', 'tpm', 'base'},
    'kms': {'transport', 'keys', 'tpm', 'base'},
    'transport': {'base'},
    'keys': {'tpm', 'base'},
    'tpm': {'base'},
    'base': set(),
}

# System headers and who alone may include them.
ONLY = {
    r'tss2/': ('tpm/',),
    r'nghttp2/': ('transport/h2.c',),
    r'protobuf-c/|(v2|v1beta1)/api\.pb-c\.h': ('kms/kms_proto.c',),
    r'etcd/kv\.pb-c\.h': ('audit/etcd.c',),
    r'kubestore/kmsv2\.pb-c\.h': ('audit/storedobj.c',),
    r'openssl/ssl\.h': ('transport/dial.c',),
    # The crypto boundary (base/crypto.h): .c files only, no header.
    r'openssl/': ('base/crypto.c', 'base/secmem.c', 'base/armor.c', 'keys/signer.c',
                  'keys/envelope.c', 'keys/sealfile.c', 'keys/attest.c', 'tpm/tpm.c',
                  'tpm/tpmobj.c', 'tpm/dupcodec.c', 'transport/dial.c'),
}


def sources():
    for folder in sorted(os.listdir(SRC)):
        path = os.path.join(SRC, folder)
        if not os.path.isdir(path):
            yield '', folder
            continue
        for name in sorted(os.listdir(path)):
            if name.endswith(('.c', '.h')):
                yield folder, name


def includes(folder, name):
    with open(os.path.join(SRC, folder, name)) as f:
        return re.findall(r'^#include ([<"])([^>"]+)[>"]', f.read(), re.M)


class Layers(unittest.TestCase):
    def test_every_file_is_in_a_layer_folder(self):
        stray = ['%s/%s' % (d, n) if d else n for d, n in sources() if d not in MAY]
        self.assertEqual(stray, [])

    def test_includes_only_go_down(self):
        up = []
        for folder, name in sources():
            for kind, inc in includes(folder, name):
                if kind != '"' or inc == 'config.h':
                    continue
                target = inc.split('/')[0] if '/' in inc else None
                if target is None or target not in MAY:
                    if not inc.startswith(('v2/', 'v1beta1/', 'etcd/', 'kubestore/')):
                        up.append('%s/%s: "%s" names no folder' % (folder, name, inc))
                    continue
                if target != folder and target not in MAY[folder]:
                    up.append('%s/%s -> %s' % (folder, name, inc))
        self.assertEqual(up, [])

    def test_foreign_libraries_have_one_includer(self):
        wrong = []
        for folder, name in sources():
            rel = '%s/%s' % (folder, name)
            for _, inc in includes(folder, name):
                for pattern, owners in ONLY.items():
                    if re.search(pattern, inc) and not rel.startswith(owners):
                        wrong.append('%s includes %s' % (rel, inc))
        self.assertEqual(wrong, [])


if __name__ == '__main__':
    unittest.main(verbosity=2)
