#!/usr/bin/python3
"""Talks KMS v2 to a running tpm2-kms the way kube-apiserver does: Status,
Encrypt of a random 32-byte seed, Decrypt with the returned key_id.
Usage: scripts/roundtrip.py SOCKET"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'lib'))
from kmsclient import Kms  # noqa: E402


def main():
    sock = sys.argv[1]
    c = Kms('unix:' + sock, authority=sock)
    st = c.status()
    print('Status:  version=%s healthz=%s key_id=%s' % (st.version, st.healthz, st.key_id))
    seed = os.urandom(32)
    e = c.encrypt(seed, uid='roundtrip-demo')
    print('Encrypt: %d-byte seed -> %d-byte envelope, key_id=%s, nonce counter=%d' % (
        len(seed), len(e.ciphertext), e.key_id, int.from_bytes(e.ciphertext[37:45], 'big')))
    d = c.decrypt(e.ciphertext, e.key_id, uid='roundtrip-demo')
    print('Decrypt: %s' % ('seed recovered' if d.plaintext == seed else 'MISMATCH'))
    c.close()
    return 0 if d.plaintext == seed else 1


if __name__ == '__main__':
    sys.exit(main())
