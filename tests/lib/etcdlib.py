"""A real etcd for the audit's tests and benchmark: Debian's etcd-server on
loopback, with TLS and client certificates made here by openssl, and objects
written into it the way kube-apiserver's KMS v2 layer writes them (brief
section 10), with python3-cryptography and python3-grpcio: nothing of
tpm2-kms's own code makes or reads them."""

import os
import shutil
import socket
import subprocess

import grpc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from kmsclient import Daemon, Process, Swtpm, wait_until

ETCD = shutil.which('etcd') or '/usr/bin/etcd'
ETCDCTL = shutil.which('etcdctl') or '/usr/bin/etcdctl'


def have_etcd():
    return os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK)


# --- protobuf wire format, from the encoding rules -----------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7f
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, n):
    return varint(num << 3) + varint(n) if n else b''


def encrypted_object(data, key_id, source, dek_type, annotations=None):
    """k8s.io/apiserver kmsv2 EncryptedObject."""
    out = field_bytes(1, data) + field_bytes(2, key_id.encode()) + field_bytes(3, source)
    for k, v in sorted((annotations or {}).items()):
        out += field_bytes(4, field_bytes(1, k.encode()) + field_bytes(2, v))
    return out + field_varint(5, dek_type)


# --- certificates -----------------------------------------------------------

def openssl(*args):
    subprocess.run(['openssl'] + list(args), check=True, capture_output=True)


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 and a client pair."""
    os.makedirs(d, exist_ok=True)
    p = lambda n: os.path.join(d, n)
    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
    openssl('req', '-x509', *ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2',
            '-subj', '/CN=test etcd CA')
    for name, ext in (('server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\n'
                                 'extendedKeyUsage=serverAuth,clientAuth'),
                      ('client', 'extendedKeyUsage=clientAuth')):
        with open(p(name + '.ext'), 'w') as f:
            f.write(ext + '\n')
        openssl('req', *ec, '-keyout', p(name + '.key'), '-out', p(name + '.csr'),
                '-subj', '/CN=' + name)
        openssl('x509', '-req', '-in', p(name + '.csr'), '-CA', p('ca.crt'), '-CAkey',
                p('ca.key'), '-CAcreateserial', '-out', p(name + '.crt'), '-days', '2',
                '-extfile', p(name + '.ext'))
    return {n: p(n) for n in ('ca.crt', 'server.crt', 'server.key', 'client.crt',
                              'client.key')}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Etcd:
    """One etcd member on loopback: https with client certificates, or
    plain http (tls=False); extra: more etcd flags."""

    # Large values for the tests that need them (etcd's own limit is its
    # --max-request-bytes).
    OPTIONS = [('grpc.max_send_message_length', 64 << 20),
               ('grpc.max_receive_message_length', 64 << 20)]

    def __init__(self, root, tls=True, extra=()):
        self.dir = os.path.join(root, 'etcd')
        os.makedirs(self.dir, exist_ok=True)
        self.tls = tls
        self.extra = list(extra)
        self.pki = make_pki(os.path.join(self.dir, 'pki')) if tls else None
        self.proc = None
        self.channel = None

    def start(self):
        # A port another process takes between our probe and etcd's bind
        # makes etcd exit: try again with new ports.
        for _ in range(3):
            self.port, peer = free_port(), free_port()
            scheme = 'https' if self.tls else 'http'
            self.url = '%s://127.0.0.1:%d' % (scheme, self.port)
            args = [ETCD, '--name', 'test', '--data-dir', os.path.join(self.dir, 'data'),
                    '--listen-client-urls', self.url, '--advertise-client-urls', self.url,
                    '--listen-peer-urls', 'http://127.0.0.1:%d' % peer,
                    '--initial-advertise-peer-urls', 'http://127.0.0.1:%d' % peer,
                    '--initial-cluster', 'test=http://127.0.0.1:%d' % peer]
            args += self.extra
            if self.tls:
                args += ['--client-cert-auth', '--trusted-ca-file', self.pki['ca.crt'],
                         '--cert-file', self.pki['server.crt'],
                         '--key-file', self.pki['server.key']]
            self.proc = Process(args, os.path.join(self.dir, 'etcd.log'))
            if self._ready():
                return
            self.proc.stop()
        raise AssertionError('etcd did not start: ' + self.proc.output()[-3000:])

    def _connect(self):
        target = '127.0.0.1:%d' % self.port
        if self.tls:
            pem = {}
            for n in ('ca.crt', 'client.key', 'client.crt'):
                with open(self.pki[n], 'rb') as f:
                    pem[n] = f.read()
            creds = grpc.ssl_channel_credentials(pem['ca.crt'], pem['client.key'],
                                                 pem['client.crt'])
            self.channel = grpc.secure_channel(target, creds, options=self.OPTIONS)
        else:
            self.channel = grpc.insecure_channel(target, options=self.OPTIONS)
        self._put = self.channel.unary_unary('/etcdserverpb.KV/Put')
        self._txn = self.channel.unary_unary('/etcdserverpb.KV/Txn')

    def _ready(self):
        # The port first (a channel that found it closed would back off
        # for seconds), then one write that etcd has committed.
        def listening():
            if not self.proc.alive():
                return True
            with socket.socket() as s:
                return s.connect_ex(('127.0.0.1', self.port)) == 0
        wait_until(listening, 'etcd listens', timeout=30)
        if not self.proc.alive():
            return False
        self._connect()
        self._put(field_bytes(1, b'/ready') + field_bytes(2, b'1'), timeout=30,
                  wait_for_ready=True)
        self.channel.unary_unary('/etcdserverpb.KV/DeleteRange')(field_bytes(1, b'/ready'),
                                                                   timeout=10)
        return True

    def put(self, key, value):
        self._put(field_bytes(1, key) + field_bytes(2, value), timeout=10)

    def put_many(self, items):
        """Puts (key, value) pairs, in transactions of at most 128 operations
        (etcd's default --max-txn-ops) and about 1 MiB (its default request
        size limit is 1.5 MiB)."""
        txn, ops, size = b'', 0, 0
        for k, v in items:
            if ops == 128 or (ops and size + len(k) + len(v) > 1 << 20):
                self._txn(txn, timeout=30)
                txn, ops, size = b'', 0, 0
            txn += field_bytes(2, field_bytes(2, field_bytes(1, k) + field_bytes(2, v)))
            ops += 1
            size += len(k) + len(v)
        if ops:
            self._txn(txn, timeout=30)

    def cli_args(self, with_client_cert=True):
        """The audit's connection options, etcdctl-style."""
        if not self.tls:
            return ['--endpoints', self.url]
        args = ['--endpoints', self.url, '--cacert', self.pki['ca.crt']]
        if with_client_cert:
            args += ['--cert', self.pki['client.crt'], '--key', self.pki['client.key']]
        return args

    def etcdctl(self, *args):
        cmd = [ETCDCTL, '--endpoints', self.url]
        if self.tls:
            cmd += ['--cacert', self.pki['ca.crt'], '--cert', self.pki['client.crt'],
                    '--key', self.pki['client.key']]
        return subprocess.run(cmd + list(args), capture_output=True, check=True,
                              env=dict(os.environ, ETCDCTL_API='3'), timeout=300)

    def stop(self):
        if self.channel:
            self.channel.close()
        if self.proc:
            self.proc.stop()


class Apiserver:
    """Writes values the way kube-apiserver's KMS v2 envelope does: one DEK
    seed, encrypted once by the plugin's Encrypt (its ciphertext is the
    encryptedDEKSource), then per object a fresh HKDF info and nonce
    (type 1) or the seed as the DEK (type 0), with the etcd key as AAD."""

    def __init__(self, kms, provider='tpm2-kms', dek_type=1, seed=None):
        self.provider = provider
        self.dek_type = dek_type
        self.seed = seed or os.urandom(32)
        resp = kms.encrypt(self.seed, uid='apiserver-seed')
        self.source, self.key_id = resp.ciphertext, resp.key_id
        self.annotations = dict(resp.annotations)

    def value(self, etcd_key, plaintext, annotations=None, tamper=False):
        nonce = os.urandom(12)
        if self.dek_type == 1:
            info = os.urandom(32)
            dek = HKDFExpand(hashes.SHA256(), 32, info).derive(self.seed)
            data = info + nonce + AESGCM(dek).encrypt(nonce, plaintext, etcd_key)
        else:
            data = nonce + AESGCM(self.seed).encrypt(nonce, plaintext, etcd_key)
        if tamper:
            # One bit of the ciphertext: the tag no longer holds.
            data = bytearray(data)
            data[-17] ^= 1
            data = bytes(data)
        ann = dict(self.annotations)
        ann.update(annotations or {})
        return (b'k8s:enc:kms:v2:' + self.provider.encode() + b':' +
                encrypted_object(data, self.key_id, self.source, self.dek_type, ann))


class AuditStack:
    """What an audit needs, started in root: a swtpm, a daemon on it (with
    daemon_args) and an etcd (TLS unless tls=False)."""

    def __init__(self, root, *daemon_args, tls=True):
        self.tpm = Swtpm(root)
        self.tpm.start()
        self.daemon = Daemon(root, self.tpm, *daemon_args)
        self.daemon.start()
        self.etcd = Etcd(root, tls=tls)
        self.etcd.start()

    def audit_args(self):
        """The audit's options for this etcd and daemon."""
        return self.etcd.cli_args() + ['--listen', self.daemon.sock,
                                       '--state-dir', self.daemon.state_dir]

    def stop(self):
        self.etcd.stop()
        self.daemon.stop()
        self.tpm.kill()
