#!/usr/bin/python3
"""Writes the seed corpora of tests/fuzz/corpus/ (run from tests/fuzz).
Seeds are built from the protocol facts here, not captured; libFuzzer grows
them, and inputs that once crashed are added by hand as regressions."""

import base64
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))
from h2wire import PREFACE, frame, hpack  # noqa: E402


def write(target, name, data):
    d = os.path.join(HERE, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def pb(field, data):
    out = bytes([field << 3 | 2])
    n = len(data)
    while n >= 0x80:
        out += bytes([n & 0x7f | 0x80])
        n >>= 7
    return out + bytes([n]) + data


def grpc_msg(msg, flag=0):
    return bytes([flag]) + struct.pack('>I', len(msg)) + msg


def request(path, body, extra=(), method='POST', ctype='application/grpc', split=False):
    h = [(':method', method), (':scheme', 'http'), (':path', path),
         (':authority', '/run/tpm2-kms/kms.sock'), ('content-type', ctype),
         ('te', 'trailers')] + list(extra)
    out = PREFACE + frame(4, 0, 0) + frame(1, 4, 1, hpack(h))
    if split and len(body) > 3:
        out += frame(0, 0, 1, body[:3]) + frame(0, 1, 1, body[3:])
    else:
        out += frame(0, 1, 1, body)
    return out


def h2():
    seed = b'0123456789abcdef0123456789abcdef'
    write('h2', 'status-v2', request('/v2.KeyManagementService/Status', grpc_msg(b'')))
    write('h2', 'status-v2beta1', request('/v2beta1.KeyManagementService/Status', grpc_msg(b'')))
    write('h2', 'version-v1', request('/v1beta1.KeyManagementService/Version',
                                      grpc_msg(pb(1, b'v1beta1'))))
    write('h2', 'encrypt-v2', request('/v2.KeyManagementService/Encrypt',
                                      grpc_msg(pb(1, seed) + pb(2, b'uid')), split=True))
    write('h2', 'encrypt-slow', request('/v2.KeyManagementService/Encrypt',
                                        grpc_msg(pb(1, b'slow:5'))))
    write('h2', 'decrypt-v2', request('/v2.KeyManagementService/Decrypt',
                                      grpc_msg(pb(1, b'FAKE' + seed) + pb(3, b'fake-key-1') +
                                               pb(4, pb(1, b'a.example.com') + pb(2, b'x')))))
    write('h2', 'encrypt-v1', request('/v1beta1.KeyManagementService/Encrypt',
                                      grpc_msg(pb(1, b'v1beta1') + pb(2, seed))))
    write('h2', 'unknown-path', request('/v2.KeyManagementService/Nope', grpc_msg(b'')))
    write('h2', 'get', request('/v2.KeyManagementService/Status', b'', method='GET'))
    write('h2', 'json', request('/v2.KeyManagementService/Status', grpc_msg(b''),
                                ctype='application/json'))
    write('h2', 'compressed', request('/v2.KeyManagementService/Encrypt',
                                      grpc_msg(pb(1, seed), flag=1), extra=[('grpc-encoding', 'gzip')]))
    write('h2', 'timeout', request('/v2.KeyManagementService/Encrypt', grpc_msg(pb(1, seed)),
                                   extra=[('grpc-timeout', '1m')]))
    write('h2', 'oversized', request('/v2.KeyManagementService/Encrypt',
                                     b'\x00\x00\x01\x00\x01' + b'x' * 64))
    write('h2', 'two-messages', request('/v2.KeyManagementService/Status',
                                        grpc_msg(b'') + grpc_msg(b'')))
    write('h2', 'control-frames', PREFACE + frame(4, 0, 0, struct.pack('>HI', 3, 100)) +
          frame(6, 0, 0, b'\0' * 8) + frame(8, 0, 0, struct.pack('>I', 1000)) +
          frame(4, 1, 0) + frame(7, 0, 0, struct.pack('>II', 0, 0)))
    write('h2', 'reset', PREFACE + frame(4, 0, 0) +
          frame(1, 4, 1, hpack([(':method', 'POST'), (':scheme', 'http'),
                                (':path', '/v2.KeyManagementService/Status')])) +
          frame(3, 0, 1, struct.pack('>I', 8)))
    write('h2', 'garbage', b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')


def proto():
    write('proto', 'v2-status', b'\x00')
    write('proto', 'v2-encrypt', b'\x01' + pb(1, b'x' * 32) + pb(2, b'uid'))
    write('proto', 'v2-decrypt', b'\x02' + pb(1, b'c' * 97) + pb(2, b'u') + pb(3, b'k') +
          pb(4, pb(1, b'a.example.com') + pb(2, b'v')))
    write('proto', 'v1-version', b'\x03' + pb(1, b'v1beta1'))
    write('proto', 'v1-encrypt', b'\x04' + pb(1, b'v1beta1') + pb(2, b'p'))
    write('proto', 'v1-decrypt', b'\x05' + pb(1, b'v1beta1') + pb(2, b'c'))
    write('proto', 'status-response', b'\xff' + pb(1, b'v2') + pb(2, b'ok') + pb(3, b'k'))
    write('proto', 'truncated', b'\x01\x0a\x20abc')


def envelope():
    kat = bytes.fromhex(
        '0100000007a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf'
        '0102030405060708deadbeef1e97ed9cfcd8342891df05cff2ff0d0c942b49f967bb51c4d3'
        'e3b63af95014e708651e92a061253d0ac20624dd9fca35')
    write('envelope', 'known-answer', kat)
    write('envelope', 'short', kat[:60])
    write('envelope', 'version2', b'\x02' + kat[1:])


def sealfile():
    der = bytes([0x30, 0x1a, 0x06, 0x06, 0x67, 0x81, 0x05, 0x0a, 0x01, 0x05, 0xa0, 0x03, 0x01,
                 0x01, 0xff, 0x02, 0x05, 0x00, 0x81, 0x00, 0x00, 0x01, 0x04, 0x02, 0x00, 0x00,
                 0x04, 0x02, 0x00, 0x00])
    pem = b'-----BEGIN TSS2 PRIVATE KEY-----\n' + base64.encodebytes(der) + \
        b'-----END TSS2 PRIVATE KEY-----\n'
    write('sealfile', 'minimal', pem)
    write('sealfile', 'policy', b'-----BEGIN TSS2 PRIVATE KEY-----\n'
          b'MBoGBmeBBQoBBaADAQH/oQACBQCBAAABBAAEAA==\n-----END TSS2 PRIVATE KEY-----\n')


def state():
    key1 = 'tpm2-kms-g1-0123456789abcdef0123456789abcdef'
    key2 = 'tpm2-kms-g2-fedcba9876543210fedcba9876543210'
    text = ('# comment\nformat 1\nsrk-name 000b' + 'ab' * 32 + '\nnv-index 0x01800101\n'
            'write-generation 2\n'
            'generation 1 created 1700000000 key-id %s file gen-000001.pem policy none\n'
            'generation 2 created 1700000100 key-id %s file gen-000002.pem policy none\n'
            % (key1, key2))
    write('state', 'two-generations', text.encode())
    write('state', 'future-format', b'format 2\n')


def config():
    write('config', 'all', b'# c\nlisten /run/x.sock\ntcti device:/dev/tpmrm0\n'
          b'state-dir /var/lib/tpm2-kms\nnv-index 0x01800101\nsocket-mode 0660\n'
          b'socket-group tss\nallow-uid 0\nmetrics-listen 127.0.0.1:9464\n'
          b'max-connections 10\nmax-streams 10\nmax-inflight 10\nidle-timeout 10\n'
          b'probe-interval 1000\ntimeout 100\nlog-format json\nlog-level debug\nforce yes\n')
    write('config', 'unknown', b'listne /x\n')


def stored():
    from etcdlib import encrypted_object
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
    seed = bytes(range(32))
    key = b'/registry/secrets/default/x'
    info, nonce = bytes(32), bytes(12)
    dek = HKDFExpand(hashes.SHA256(), 32, info).derive(seed)
    data = info + nonce + AESGCM(dek).encrypt(nonce, b'{"kind":"Secret"}', key)
    obj = encrypted_object(data, 'tpm2-kms-g1-' + '00' * 16, b'\x01' * 90, 1, {'a': b'b'})
    write('stored', 'kms-v2-hkdf', bytes([len(key)]) + key + b'k8s:enc:kms:v2:tpm2-kms:' + obj)
    data0 = nonce + AESGCM(seed).encrypt(nonce, b'x', key)
    obj0 = encrypted_object(data0, 'tpm2-kms-g1-' + '00' * 16, b'\x01' * 90, 0)
    write('stored', 'kms-v2-key', bytes([len(key)]) + key + b'k8s:enc:kms:v2:tpm2-kms:' + obj0)
    crd = b'/registry/example.com/widgets/ns/w'
    write('stored', 'aescbc-crd', bytes([len(crd)]) + crd + b'k8s:enc:aescbc:v1:key1:' + bytes(48))
    write('stored', 'identity', bytes([len(key)]) + key + b'{"kind":"Secret"}')


if __name__ == '__main__':
    for f in (h2, proto, envelope, sealfile, state, config, stored):
        f()
