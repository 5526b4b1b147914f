#!/usr/bin/python3
"""Interop: Debian's python3-grpcio (an independent gRPC implementation)
against the real transport of tpm2-kms (socket server, HTTP/2, gRPC, KMS
routing) with the test-only fake backend behind it (tests/fakes/). The TPM
backed plugin is tested end to end in tests/plugin/."""

import os
import shutil
import socket
import stat
import sys
import threading
import time
import unittest
import urllib.parse

import grpc

from kmsclient import Kms, Process, builddir, can_connect, tempdir, wait_until

FAKE_SERVER = os.path.join(builddir(), 'tests', 'fake-server')


class Server:
    def __init__(self, *extra, abstract=None, env=None):
        self.dir = tempdir('kmsi-')
        self.path = os.path.join(self.dir, 'kms.sock')
        listen = ('unix:///@' + abstract) if abstract else self.path
        self.proc = Process([FAKE_SERVER, '--listen', listen] + list(extra),
                            os.path.join(self.dir, 'server.log'), env=env)
        probe = ('@' + abstract) if abstract else self.path
        wait_until(lambda: can_connect(probe) or not self.proc.alive(), 'server socket')
        assert self.proc.alive(), self.proc.output()

    def client(self, authority=None):
        return Kms('unix:' + self.path, authority=authority)

    def stop(self):
        rc = self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


class Transport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def good_call(self):
        c = self.server.client()
        try:
            self.assertEqual(c.status().healthz, 'ok')
        finally:
            c.close()

    def test_socket_mode_is_0600(self):
        mode = stat.S_IMODE(os.lstat(self.server.path).st_mode)
        self.assertEqual(mode, 0o600)

    def test_authorities(self):
        # kube-apiserver 1.27-1.31 (raw path), grpc-go >= 1.57 (percent-
        # encoded path), 1.32+ (localhost).
        for authority in (self.server.path, urllib.parse.quote(self.server.path, safe=''),
                          'localhost'):
            c = self.server.client(authority=authority)
            try:
                r = c.status()
                self.assertEqual((r.version, r.healthz, r.key_id), ('v2', 'ok', 'fake-key-1'))
            finally:
                c.close()

    def test_all_three_apis(self):
        c = self.server.client(authority=self.server.path)
        try:
            for pkg in ('v2', 'v2beta1'):
                self.assertEqual(c.status(pkg=pkg).version, pkg)
                e = c.encrypt(b'seed' * 8, pkg=pkg)
                self.assertEqual(e.key_id, 'fake-key-1')
                d = c.decrypt(e.ciphertext, e.key_id, pkg=pkg,
                              annotations={'kms.example.com/x': b'1'})
                self.assertEqual(d.plaintext, b'seed' * 8)
            v = c.v1_version()
            self.assertEqual((v.version, v.runtime_name), ('v1beta1', 'tpm2-kms'))
            self.assertEqual(c.v1_decrypt(c.v1_encrypt(b'abc').cipher).plain, b'abc')
        finally:
            c.close()

    def test_errors(self):
        c = self.server.client()
        try:
            with self.assertRaises(grpc.RpcError) as e:
                c.raw('/v2.KeyManagementService/Rotate', b'')
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            with self.assertRaises(grpc.RpcError) as e:
                c.encrypt(b'')
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            with self.assertRaises(grpc.RpcError) as e:
                c.decrypt(b'FAKEx', 'another-key')
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            with self.assertRaises(grpc.RpcError) as e:
                c.raw('/v2.KeyManagementService/Encrypt', b'\x0a\x09')
            self.assertEqual(e.exception.code(), grpc.StatusCode.INTERNAL)
            with self.assertRaises(grpc.RpcError) as e:
                c.encrypt(b'x' * 70000)
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            with self.assertRaises(grpc.RpcError) as e:
                c.encrypt(b'fail')
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(e.exception.details(), 'fake backend unavailable')
        finally:
            c.close()
        self.good_call()

    def test_client_deadline(self):
        c = self.server.client()
        try:
            with self.assertRaises(grpc.RpcError) as e:
                c.encrypt(b'slow:3000', timeout=0.3)
            self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        finally:
            c.close()
        self.good_call()

    def test_garbage_instead_of_preface(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.server.path)
        s.sendall(b'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n' + os.urandom(256))
        s.settimeout(10)
        data = b''
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.good_call()

    def test_half_closed_and_silent_clients(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.server.path)
        s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
        s.shutdown(socket.SHUT_WR)
        s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s2.connect(self.server.path)
        self.good_call()
        s.close()
        s2.close()

    def test_100_streams_reset(self):
        c = self.server.client()
        try:
            futures = [c.encrypt(b'slow:5000', future=True, timeout=10) for _ in range(100)]
            # Streams on one connection are processed in order: once this
            # answer is back, the server holds all 100 open.
            self.assertEqual(c.status().healthz, 'ok')
            for f in futures:
                f.cancel()
            for f in futures:
                self.assertTrue(f.cancelled())
            self.assertEqual(c.status().healthz, 'ok')
        finally:
            c.close()
        self.good_call()

    def test_200_concurrent_connections(self):
        clients = [self.server.client() for _ in range(200)]
        results = [None] * 200

        def call(i):
            try:
                results[i] = clients[i].status().healthz
            except grpc.RpcError as e:
                results[i] = e.code()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in clients:
            c.close()
        self.assertEqual(results, ['ok'] * 200)


class Limits(unittest.TestCase):
    def test_connection_limit(self):
        srv = Server('--max-connections', '3')
        try:
            held = []
            while len(held) < 3:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(srv.path)
                s.settimeout(10)
                # Taken when the server's SETTINGS arrive. The readiness
                # probe's connection may still count for a moment; then
                # this one is closed and we connect again.
                if s.recv(9):
                    held.append(s)
                else:
                    s.close()
            extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            extra.connect(srv.path)
            extra.settimeout(10)
            self.assertEqual(extra.recv(100), b'')   # closed at once
            extra.close()
            for s in held:
                s.close()
            c = srv.client()
            wait_until(lambda: self._status_ok(c), 'a slot after the others closed')
            c.close()
        finally:
            self.assertEqual(srv.stop(), 0)

    @staticmethod
    def _status_ok(c):
        try:
            return c.status(timeout=1).healthz == 'ok'
        except grpc.RpcError:
            return False

    def test_idle_timeout(self):
        srv = Server('--idle-timeout-ms', '300')
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(srv.path)
            s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00')
            s.settimeout(20)
            while s.recv(4096):
                pass                     # until the server closes it
            s.close()
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_allow_uid(self):
        me = os.getuid()
        srv = Server('--allow-uid', str(me + 4242))
        try:
            c = srv.client()
            with self.assertRaises(grpc.RpcError) as e:
                c.status(timeout=2)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            c.close()
            self.assertIn('refused connection from uid %d' % me, srv.proc.output())
        finally:
            srv.stop()
        srv = Server('--allow-uid', str(me))
        try:
            c = srv.client()
            self.assertEqual(c.status().healthz, 'ok')
            c.close()
        finally:
            srv.stop()

    def test_deadline_is_enforced_by_the_server(self):
        # The server clamps deadlines to 200 ms, so its DEADLINE_EXCEEDED
        # arrives long before the client's own 10 s deadline.
        srv = Server('--max-timeout-ms', '200')
        try:
            c = srv.client()
            with self.assertRaises(grpc.RpcError) as e:
                c.encrypt(b'slow:5000', timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
            self.assertEqual(e.exception.details(), 'deadline exceeded')
            self.assertEqual(c.status().healthz, 'ok')
            c.close()
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_abstract_socket(self):
        name = 'tpm2-kms-test-%d' % os.getpid()
        srv = Server(abstract=name)
        try:
            c = Kms('unix-abstract:' + name)
            self.assertEqual(c.status().healthz, 'ok')
            c.close()
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_stale_socket_replaced_and_sigterm_cleans_up(self):
        d = tempdir('kmsi-')
        path = os.path.join(d, 'kms.sock')
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()                    # a socket file nobody listens on
        proc = Process([FAKE_SERVER, '--listen', path], os.path.join(d, 'log'))
        wait_until(lambda: can_connect(path) or not proc.alive(), 'server socket')
        self.assertTrue(proc.alive(), proc.output())
        # A second server must not steal a live socket.
        second = Process([FAKE_SERVER, '--listen', path], os.path.join(d, 'log2'))
        self.assertEqual(second.proc.wait(10), 1)
        self.assertIn('another process is listening', second.output())
        c = Kms('unix:' + path)
        slow = c.encrypt(b'slow:300', future=True, timeout=10)
        c.status()                       # the slow call has reached the server
        self.assertEqual(proc.stop(), 0)
        # The in-flight call finished before exit.
        self.assertEqual(slow.result().ciphertext[:4], b'FAKE')
        c.close()
        self.assertFalse(os.path.exists(path))
        shutil.rmtree(d)

    def test_symlinked_socket_path_refused(self):
        d = tempdir('kmsi-')
        path = os.path.join(d, 'kms.sock')
        os.symlink(os.path.join(d, 'elsewhere'), path)
        proc = Process([FAKE_SERVER, '--listen', path], os.path.join(d, 'log'))
        self.assertEqual(proc.proc.wait(10), 1)
        self.assertIn('symbolic link', proc.output())
        shutil.rmtree(d)


    def test_symlink_planted_after_bind_is_not_followed(self):
        # tests/bind-race.so replaces the socket by a symlink to a file
        # right after bind(), as another user writing to the directory
        # could: the server must not change that file's mode (it did, with
        # a chmod of the path after bind).
        d = tempdir('kmsi-')
        path = os.path.join(d, 'kms.sock')
        victim = os.path.join(d, 'victim')
        with open(victim, 'w') as f:
            f.write('not yours')
        os.chmod(victim, 0o600)
        env = dict(os.environ, LD_PRELOAD=os.path.join(builddir(), 'tests', 'bind-race.so'),
                   BIND_RACE_PATH=path, BIND_RACE_TARGET=victim)
        env['ASAN_OPTIONS'] = ':'.join(filter(None, [env.get('ASAN_OPTIONS'),
                                                     'verify_asan_link_order=0']))
        proc = Process([FAKE_SERVER, '--listen', path, '--socket-mode', '0666'],
                       os.path.join(d, 'log'), env=env)
        wait_until(lambda: can_connect(path + '.aside') or not proc.alive(), 'server socket')
        self.assertTrue(os.path.islink(path), 'the shim did not run')
        self.assertEqual(stat.S_IMODE(os.stat(victim).st_mode), 0o600)
        # The socket itself got its mode at bind.
        self.assertEqual(stat.S_IMODE(os.lstat(path + '.aside').st_mode), 0o666)
        proc.stop()
        shutil.rmtree(d)


class SlowReader(unittest.TestCase):
    """The server's writes when the socket does not take a response at once
    (a slow reader): tests/short-writes.so makes every socket write short and
    every third one fail with EAGAIN, so each response goes out in pieces
    through the partial-write path. Every byte must still arrive, in order,
    on every stream."""

    def test_short_writes_deliver_every_response_intact(self):
        env = dict(os.environ)
        env['LD_PRELOAD'] = os.path.join(builddir(), 'tests', 'short-writes.so')
        # A sanitized server's runtime would insist on coming first.
        env['ASAN_OPTIONS'] = ':'.join(filter(None, [env.get('ASAN_OPTIONS'),
                                                     'verify_asan_link_order=0']))
        server = Server(env=env)
        try:
            c = server.client()
            calls = []
            for i in range(30):
                plaintext = bytes((i * 7 + j) % 251 for j in range(1000 + i * 1500))
                calls.append((plaintext, c.encrypt(plaintext, future=True, timeout=30)))
            # Small answers among the big ones, while those are in flight.
            for _ in range(20):
                self.assertEqual(c.status(timeout=30).healthz, 'ok')
            for plaintext, call in calls:
                # The fake backend answers "FAKE" + the plaintext reversed.
                self.assertEqual(call.result().ciphertext, b'FAKE' + plaintext[::-1])
            c.close()
            self.assertTrue(server.proc.alive(), server.proc.output())
        finally:
            self.assertEqual(server.stop(), 0)

if __name__ == '__main__':
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
