"""Test helpers: KMS messages for an independent gRPC client (Debian's
python3-grpcio and python3-protobuf, messages built from descriptors written
here from the API facts), and process helpers that poll instead of sleeping."""

import os
import socket
import subprocess
import tempfile
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _msg(fd, name, fields, maps=()):
    m = fd.message_type.add(name=name)
    for fname, num, ftype in fields:
        m.field.add(name=fname, number=num, type=ftype, label=_F.LABEL_OPTIONAL)
    for fname, num in maps:
        entry = m.nested_type.add(name=''.join(p.title() for p in fname.split('_')) + 'Entry')
        entry.options.map_entry = True
        entry.field.add(name='key', number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
        entry.field.add(name='value', number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
        m.field.add(name=fname, number=num, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                    type_name='.%s.%s.%s' % (fd.package, name, entry.name))


def _build():
    pool = descriptor_pool.DescriptorPool()
    S, B = _F.TYPE_STRING, _F.TYPE_BYTES
    for pkg in ('v2', 'v2beta1'):
        fd = descriptor_pb2.FileDescriptorProto(name=pkg + '/api.proto', package=pkg,
                                                syntax='proto3')
        _msg(fd, 'StatusRequest', [])
        _msg(fd, 'StatusResponse', [('version', 1, S), ('healthz', 2, S), ('key_id', 3, S)])
        _msg(fd, 'DecryptRequest', [('ciphertext', 1, B), ('uid', 2, S), ('key_id', 3, S)],
             maps=[('annotations', 4)])
        _msg(fd, 'DecryptResponse', [('plaintext', 1, B)])
        _msg(fd, 'EncryptRequest', [('plaintext', 1, B), ('uid', 2, S)])
        _msg(fd, 'EncryptResponse', [('ciphertext', 1, B), ('key_id', 2, S)],
             maps=[('annotations', 3)])
        pool.Add(fd)
    fd = descriptor_pb2.FileDescriptorProto(name='v1beta1/api.proto', package='v1beta1',
                                            syntax='proto3')
    _msg(fd, 'VersionRequest', [('version', 1, S)])
    _msg(fd, 'VersionResponse', [('version', 1, S), ('runtime_name', 2, S),
                                 ('runtime_version', 3, S)])
    _msg(fd, 'EncryptRequest', [('version', 1, S), ('plain', 2, B)])
    _msg(fd, 'EncryptResponse', [('cipher', 1, B)])
    _msg(fd, 'DecryptRequest', [('version', 1, S), ('cipher', 2, B)])
    _msg(fd, 'DecryptResponse', [('plain', 1, B)])
    pool.Add(fd)
    out = {}
    for pkg, names in (('v2', ('StatusRequest', 'StatusResponse', 'DecryptRequest',
                               'DecryptResponse', 'EncryptRequest', 'EncryptResponse')),
                       ('v2beta1', ('StatusRequest', 'StatusResponse', 'DecryptRequest',
                                    'DecryptResponse', 'EncryptRequest', 'EncryptResponse')),
                       ('v1beta1', ('VersionRequest', 'VersionResponse', 'EncryptRequest',
                                    'EncryptResponse', 'DecryptRequest', 'DecryptResponse'))):
        for n in names:
            d = pool.FindMessageTypeByName(pkg + '.' + n)
            out[pkg + '.' + n] = message_factory.MessageFactory(pool).GetPrototype(d)
    return out


MESSAGES = _build()


class Kms:
    """A KMS client on one channel (one HTTP/2 connection)."""

    def __init__(self, target, authority=None, options=()):
        opts = [('grpc.use_local_subchannel_pool', 1)] + list(options)
        if authority is not None:
            opts.append(('grpc.default_authority', authority))
        self.channel = grpc.insecure_channel(target, options=opts)

    def close(self):
        self.channel.close()

    def _call(self, pkg, method, req_name, resp_name):
        return self.channel.unary_unary(
            '/%s.KeyManagementService/%s' % (pkg, method),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=MESSAGES[pkg + '.' + resp_name].FromString)

    def status(self, pkg='v2', timeout=3, future=False):
        fn = self._call(pkg, 'Status', 'StatusRequest', 'StatusResponse')
        req = MESSAGES[pkg + '.StatusRequest']()
        return fn.future(req, timeout=timeout) if future else fn(req, timeout=timeout)

    def encrypt(self, plaintext, uid='uid-1', pkg='v2', timeout=3, future=False):
        fn = self._call(pkg, 'Encrypt', 'EncryptRequest', 'EncryptResponse')
        req = MESSAGES[pkg + '.EncryptRequest'](plaintext=plaintext, uid=uid)
        return fn.future(req, timeout=timeout) if future else fn(req, timeout=timeout)

    def decrypt(self, ciphertext, key_id, uid='uid-2', pkg='v2', timeout=3, annotations=None,
                future=False):
        req = MESSAGES[pkg + '.DecryptRequest'](ciphertext=ciphertext, uid=uid, key_id=key_id)
        for k, v in (annotations or {}).items():
            req.annotations[k] = v
        fn = self._call(pkg, 'Decrypt', 'DecryptRequest', 'DecryptResponse')
        return fn.future(req, timeout=timeout) if future else fn(req, timeout=timeout)

    def v1_version(self, timeout=3):
        return self._call('v1beta1', 'Version', 'VersionRequest', 'VersionResponse')(
            MESSAGES['v1beta1.VersionRequest'](version='v1beta1'), timeout=timeout)

    def v1_encrypt(self, plain, timeout=3):
        return self._call('v1beta1', 'Encrypt', 'EncryptRequest', 'EncryptResponse')(
            MESSAGES['v1beta1.EncryptRequest'](version='v1beta1', plain=plain), timeout=timeout)

    def v1_decrypt(self, cipher, timeout=3):
        return self._call('v1beta1', 'Decrypt', 'DecryptRequest', 'DecryptResponse')(
            MESSAGES['v1beta1.DecryptRequest'](version='v1beta1', cipher=cipher),
            timeout=timeout)

    def raw(self, path, payload, timeout=3):
        """Unary call with raw request bytes; returns raw response bytes."""
        return self.channel.unary_unary(path)(payload, timeout=timeout)


def scrape_metrics(path):
    """GET /metrics on the daemon's metrics socket; the response, whole."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    data = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode()


def wait_until(pred, what, timeout=20.0):
    """Polls pred() until it is true; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError('timed out waiting for ' + what)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def can_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path if not path.startswith('@') else '\0' + path[1:])
        return True
    except OSError:
        return False
    finally:
        s.close()


class Process:
    """A child process with its stderr in a file, for log assertions."""

    def __init__(self, argv, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, 'ab')
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, env=env)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=15, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.close()

    def output(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')


def builddir():
    return os.environ.get('TOP_BUILDDIR', os.getcwd())


def tempdir(prefix):
    # Short paths: a Unix socket path must fit in 108 bytes.
    return tempfile.mkdtemp(prefix=prefix, dir='/tmp')


class Swtpm:
    """A private swtpm over Unix sockets in its own directory."""

    def __init__(self, root, setup_spk=False):
        self.dir = os.path.join(root, 'swtpm')
        self.state = os.path.join(self.dir, 'state')
        os.makedirs(self.state, exist_ok=True)
        self.sock = os.path.join(self.dir, 'tpm.sock')
        self.tcti = 'swtpm:path=' + self.sock
        self.proc = None
        if setup_spk:
            subprocess.run(['swtpm_setup', '--tpm2', '--tpmstate', self.state,
                            '--create-spk', '--overwrite'], check=True,
                           stdout=subprocess.DEVNULL)

    def start(self):
        self.proc = subprocess.Popen(
            ['swtpm', 'socket', '--tpm2', '--tpmstate', 'dir=' + self.state,
             '--server', 'type=unixio,path=' + self.sock,
             '--ctrl', 'type=unixio,path=' + self.sock + '.ctrl',
             '--flags', 'not-need-init,startup-clear'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: can_connect(self.sock) or self.proc.poll() is not None, 'swtpm')
        assert self.proc.poll() is None, 'swtpm exited'

    def kill(self, sig=9):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait()
        for p in (self.sock, self.sock + '.ctrl'):
            if os.path.exists(p):
                os.unlink(p)


def tpm2_kms():
    return os.path.join(builddir(), 'tpm2-kms')


def run_cli(*args, check=True, env=None):
    r = subprocess.run([tpm2_kms()] + list(args), capture_output=True, text=True, env=env,
                       timeout=120)
    if check and r.returncode != 0:
        raise AssertionError('tpm2-kms %s: exit %d: %s' % (' '.join(args), r.returncode,
                                                           r.stderr))
    return r


class Daemon:
    """tpm2-kms serve on a swtpm, with its own state directory and socket."""

    def __init__(self, root, swtpm, *extra, state_dir=None):
        self.root = root
        self.swtpm = swtpm
        self.state_dir = state_dir or os.path.join(root, 'state')
        self.sock = os.path.join(root, 'kms.sock')
        self.extra = list(extra)
        self.env = {}               # added to the daemon's environment
        self.proc = None
        self.n = 0

    def start(self, wait_healthy=True):
        self.n += 1
        argv = [tpm2_kms(), 'serve', '--listen', self.sock, '--tcti', self.swtpm.tcti,
                '--state-dir', self.state_dir] + self.extra
        if os.environ.get('TPM2KMS_VALGRIND'):
            # make check-valgrind: any memory error or definite leak makes the
            # daemon exit 99, which the tests' clean-stop checks catch.
            argv = ['valgrind', '--quiet', '--error-exitcode=99', '--leak-check=full',
                    '--errors-for-leak-kinds=definite', '--show-leak-kinds=definite'] + argv
        self.proc = Process(argv, os.path.join(self.root, 'serve-%d.log' % self.n),
                            env=dict(os.environ, **self.env) if self.env else None)
        wait_until(lambda: can_connect(self.sock) or not self.proc.alive(), 'daemon socket')
        assert self.proc.alive(), self.proc.output()
        if wait_healthy:
            c = self.client()
            wait_until(lambda: self._healthz(c) == 'ok', 'healthy daemon')
            c.close()

    @staticmethod
    def _healthz(c):
        try:
            return c.status(timeout=2).healthz
        except grpc.RpcError:
            return None

    def healthz(self):
        c = self.client()
        try:
            return self._healthz(c)
        finally:
            c.close()

    def client(self, authority=None):
        return Kms('unix:' + self.sock, authority=authority)

    def stop(self, sig=15):
        rc = self.proc.stop(sig)
        return rc

    def output(self):
        text = []
        for i in range(1, self.n + 1):
            with open(os.path.join(self.root, 'serve-%d.log' % i), errors='replace') as f:
                text.append(f.read())
        return ''.join(text)


class DelayProxy:
    """Stands between tpm2-kms and swtpm (data and control sockets) and holds
    every command for `delay` seconds: a slow TPM on demand."""

    def __init__(self, target_sock, listen_sock):
        import threading
        self.delay = 0.0
        # TPM command code -> how many of those commands to lose: the
        # connection is cut instead of forwarding them (a TCTI I/O error
        # while the TPM itself stays fine).
        self.drop = {}
        self.threads = []
        self.stopping = False
        self.servers = []
        for suffix in ('', '.ctrl'):
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(listen_sock + suffix)
            srv.listen(64)
            self.servers.append(srv)
            t = threading.Thread(target=self._accept, args=(srv, target_sock + suffix,
                                                            suffix == ''), daemon=True)
            t.start()

    def _accept(self, srv, target, slow):
        import threading
        while not self.stopping:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(target)
            except OSError:
                client.close()
                continue
            for a, b, delayed in ((client, upstream, slow), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, delayed), daemon=True).start()

    def _pump(self, src, dst, delayed):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delayed and len(data) >= 10:
                    cc = int.from_bytes(data[6:10], 'big')
                    if self.drop.get(cc, 0) > 0:
                        self.drop[cc] -= 1
                        break
                if delayed and self.delay:
                    time.sleep(self.delay)     # the injected TPM latency
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stopping = True
        for s in self.servers:
            s.close()
