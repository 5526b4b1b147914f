#!/usr/bin/python3
"""The static pod's image, checked the way a kubelet would use it, without
a registry or a container runtime: `make image` (umoci), the image unpacked
with umoci, and tpm2-kms run from that root (chroot in a private mount
namespace, the pod's hostPath mounts as bind mounts) against a swtpm."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

import yaml

from kmsclient import Kms, Swtpm, builddir, tempdir, tpm2_kms, wait_until

SRC = os.environ.get('TOP_SRCDIR', os.getcwd())
BUILD = builddir()
IMAGE_ROOT_USER = '65532:65532'
# What the image may hold besides the libraries (listed by soname in
# dist/image/files.txt, each with the file its link names).
SIZE_LIMIT = 15 * 1024 * 1024


def package_version():
    with open(os.path.join(BUILD, 'Makefile')) as f:
        return re.search(r'^PACKAGE_VERSION = (\S+)$', f.read(), re.M).group(1)


def blob(layout, digest):
    with open(os.path.join(layout, 'blobs', *digest.split(':')), 'rb') as f:
        return f.read()


def image_config(layout):
    with open(os.path.join(layout, 'index.json')) as f:
        index = json.load(f)
    manifest = json.loads(blob(layout, index['manifests'][0]['digest']))
    return index, manifest, json.loads(blob(layout, manifest['config']['digest']))


def run_in_image(root, argv, binds=(), user=IMAGE_ROOT_USER, **kw):
    """argv run from the image's root as the given user, in a mount namespace
    of its own with host directories bound in, as hostPath volumes are. The
    shell that mounts is the host's: the image has none."""
    script = ''.join('mkdir -p "%s%s" && mount --bind "%s" "%s%s" && ' % (root, inside, host, root,
                                                                          inside)
                     for host, inside in binds)
    script += 'exec chroot --userspec=%s "%s" "$@"' % (user, root)
    return subprocess.Popen(['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
                             script, 'sh'] + argv, **kw)


class Image(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if 'libasan' in subprocess.run(['ldd', tpm2_kms()], capture_output=True,
                                       text=True).stdout:
            raise unittest.SkipTest('the image is made from the normal build, not the '
                                    'sanitizer one')
        cls.version = package_version()
        r = subprocess.run(['make', '-C', BUILD, 'image'], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        cls.layout = os.path.join(BUILD, 'image', 'oci')
        cls.archive = os.path.join(BUILD, 'image', 'tpm2-kms-%s.oci.tar' % cls.version)
        cls.work = tempdir('kmsimg-')
        subprocess.run(['umoci', 'unpack', '--image', '%s:%s' % (cls.layout, cls.version),
                        os.path.join(cls.work, 'bundle')], check=True, capture_output=True)
        cls.root = os.path.join(cls.work, 'bundle', 'rootfs')

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def files(self):
        out = []
        for d, dirs, names in os.walk(self.root):
            for n in dirs + names:
                p = os.path.join(d, n)
                if not os.path.isdir(p) or os.path.islink(p):
                    out.append('/' + os.path.relpath(p, self.root))
        return sorted(out)

    def test_reproducible(self):
        # Built again from the same inputs: the same digest, the same archive.
        again = os.path.join(self.work, 'again')
        subprocess.run([os.path.join(SRC, 'dist', 'image', 'build.sh'), tpm2_kms(), again,
                        self.version, self.config()['config']['Labels'][
                            'org.opencontainers.image.revision']],
                       check=True, capture_output=True)
        self.assertEqual(image_config(os.path.join(again, 'oci'))[0],
                         image_config(self.layout)[0])
        with open(self.archive, 'rb') as a, \
                open(os.path.join(again, os.path.basename(self.archive)), 'rb') as b:
            self.assertEqual(hashlib.sha256(a.read()).digest(), hashlib.sha256(b.read()).digest())

    def config(self):
        return image_config(self.layout)[2]

    def test_containerd_imports_it_as_the_guide_says(self):
        # The operations guide's command on a node, against a containerd of
        # our own (its own root, state and socket): the image comes out
        # under the name the manifest uses, unpacked.
        d = tempdir('kmsctd-')
        self.addCleanup(shutil.rmtree, d, True)
        sock = os.path.join(d, 'containerd.sock')
        with open(os.path.join(d, 'config.toml'), 'w') as f:
            f.write('version = 2\nroot = "%s/root"\nstate = "%s/state"\n'
                    '[grpc]\n  address = "%s"\n' % (d, d, sock))
        log = open(os.path.join(d, 'log'), 'w')
        self.addCleanup(log.close)
        daemon = subprocess.Popen(['containerd', '--config', os.path.join(d, 'config.toml')],
                                  stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: daemon.poll() is None and (daemon.terminate(), daemon.wait()))
        wait_until(lambda: os.path.exists(sock) or daemon.poll() is not None, 'containerd')
        ctr = ['ctr', '--address', sock, '-n', 'k8s.io']
        r = subprocess.run(ctr + ['images', 'import', self.archive], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = subprocess.run(ctr + ['images', 'check'], capture_output=True, text=True, check=True)
        row = [l.split() for l in r.stdout.splitlines()
               if l.startswith('localhost/tpm2-kms:%s ' % self.version)]
        self.assertEqual(len(row), 1, r.stdout)
        self.assertEqual(row[0][2], image_config(self.layout)[0]['manifests'][0]['digest'])
        self.assertEqual(row[0][-1], 'true')       # unpacked

    def test_settings_and_labels(self):
        index, manifest, config = image_config(self.layout)
        self.assertEqual(index['manifests'][0]['annotations']['io.containerd.image.name'],
                         'localhost/tpm2-kms:%s' % self.version)
        c = config['config']
        self.assertEqual(c['User'], IMAGE_ROOT_USER)
        self.assertEqual(c['Entrypoint'], ['/usr/sbin/tpm2-kms'])
        self.assertEqual(c['Cmd'], ['serve'])
        self.assertEqual(c['Labels']['org.opencontainers.image.version'], self.version)
        rev = subprocess.run(['git', '-C', SRC, 'rev-parse', 'HEAD'], capture_output=True,
                             text=True).stdout.strip() or 'unknown'
        self.assertEqual(c['Labels']['org.opencontainers.image.revision'], rev)
        self.assertEqual(len(manifest['layers']), 1)
        # skopeo, an independent reader, takes the archive.
        r = subprocess.run(['skopeo', 'inspect', 'oci-archive:' + self.archive],
                           capture_output=True, text=True, check=True)
        self.assertEqual(json.loads(r.stdout)['Labels']['org.opencontainers.image.version'],
                         self.version)
        size = os.path.getsize(self.archive)
        print('image archive: %d bytes (%.1f MiB)' % (size, size / 1048576))
        self.assertLess(size, SIZE_LIMIT)

    def test_only_the_listed_files(self):
        with open(os.path.join(SRC, 'dist', 'image', 'files.txt')) as f:
            listed = [l.strip() for l in f if l.strip() and not l.startswith('#')]
        allowed = set(listed)
        for p in listed:
            # A library listed by soname may be a link; the file it names too.
            full = self.root + p
            if '.so' in p and os.path.islink(full):
                allowed.add(os.path.normpath(os.path.join(os.path.dirname(p),
                                                          os.readlink(full))))
        present = self.files()
        self.assertEqual(sorted(set(present) - allowed), [], 'files the list does not name')
        self.assertEqual(sorted(set(listed) - set(present)), [], 'listed files missing')
        for shell in ('/bin/sh', '/usr/bin/sh', '/bin/bash', '/usr/bin/busybox'):
            self.assertFalse(os.path.lexists(self.root + shell), shell)
        self.assertFalse([p for p in present if '/ssl/' in p or 'ca-certificates' in p])

    def test_every_library_is_inside(self):
        # The image's own loader resolves every library of the binary and of
        # each TCTI module from the image alone.
        elves = ['/usr/sbin/tpm2-kms'] + [p for p in self.files()
                                          if re.search(r'/libtss2-tcti-\w+\.so\.0$', p)]
        self.assertIn('/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0', elves)
        self.assertIn('/usr/lib/x86_64-linux-gnu/libtss2-tcti-swtpm.so.0', elves)
        for e in elves:
            p = run_in_image(self.root, ['/usr/lib64/ld-linux-x86-64.so.2', '--list', e],
                             user='0:0', stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
            out = p.communicate(timeout=60)[0]
            self.assertEqual(p.returncode, 0, out)
            self.assertNotIn('not found', out, e)

    def test_serves_from_the_image(self):
        host = tempdir('kmsimgrun-')
        self.addCleanup(shutil.rmtree, host, True)
        run, state = os.path.join(host, 'run'), os.path.join(host, 'state')
        for d in (run, state):
            os.mkdir(d)
            os.chown(d, 65532, 65532)
        tpm = Swtpm(host)
        tpm.start()
        self.addCleanup(tpm.kill)
        # The image's user (65532) reaches the swtpm's sockets.
        os.chmod(tpm.dir, 0o755)
        for sock in (tpm.sock, tpm.sock + '.ctrl'):
            os.chmod(sock, 0o666)
        binds = [(tpm.dir, '/run/swtpm'), (run, '/run/tpm2-kms'), (state, '/var/lib/tpm2-kms')]
        log = open(os.path.join(host, 'serve.log'), 'w+')
        self.addCleanup(log.close)
        # The image's default user; the pod's own flags.
        daemon = run_in_image(self.root, ['/usr/sbin/tpm2-kms', 'serve',
                                          '--tcti=swtpm:path=/run/swtpm/tpm.sock',
                                          '--listen=/run/tpm2-kms/kms.sock',
                                          '--state-dir=/var/lib/tpm2-kms'],
                              binds=binds, stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: daemon.poll() is None and (daemon.terminate(), daemon.wait()))
        sock = os.path.join(run, 'kms.sock')
        wait_until(lambda: os.path.exists(sock) or daemon.poll() is not None, 'socket')
        self.assertIsNone(daemon.poll(), log.read())
        status = run_in_image(self.root, ['/usr/sbin/tpm2-kms', 'status',
                                          '--listen=/run/tpm2-kms/kms.sock'],
                              binds=binds, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        out = status.communicate(timeout=60)[0]
        self.assertEqual(status.returncode, 0, out)
        self.assertIn('healthz: ok', out)
        c = Kms('unix:' + sock)
        e = c.encrypt(b'from the image')
        self.assertEqual(c.decrypt(e.ciphertext, e.key_id).plaintext, b'from the image')
        c.close()
        daemon.terminate()
        self.assertEqual(daemon.wait(30), 0)

    def test_missing_device_is_named(self):
        host = tempdir('kmsimgdev-')
        self.addCleanup(shutil.rmtree, host, True)
        os.chown(host, 65532, 65532)
        p = run_in_image(self.root, ['/usr/sbin/tpm2-kms', 'init', '--tcti=device:/dev/tpmrm0',
                                     '--state-dir=/var/lib/tpm2-kms'],
                         binds=[(host, '/var/lib/tpm2-kms')], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        out = p.communicate(timeout=60)[0]
        self.assertEqual(p.returncode, 1, out)
        self.assertIn('there is no /dev/tpmrm0', out)

    def test_manifest_matches_the_image_and_the_cli(self):
        with open(os.path.join(SRC, 'deploy', 'static-pod.yaml')) as f:
            pod = yaml.safe_load(f)
        self.assertEqual(pod['kind'], 'Pod')
        spec = pod['spec']
        self.assertEqual(spec['priorityClassName'], 'system-node-critical')
        ctr = spec['containers'][0]
        self.assertEqual(ctr['image'], 'localhost/tpm2-kms:%s' % self.version)
        self.assertEqual(ctr['imagePullPolicy'], 'Never')
        self.assertTrue(os.path.isfile(self.root + ctr['command'][0]))
        self.assertEqual(ctr['command'][1], 'serve')
        flags = dict(a.split('=', 1) for a in ctr['command'][2:])
        # The flags exist (serve takes them) and mean what the mounts say.
        r = subprocess.run([tpm2_kms(), 'serve', '--config', '/dev/null', '--print-config'] +
                           ctr['command'][2:], capture_output=True, text=True, check=True)
        self.assertIn('listen /run/tpm2-kms/kms.sock', r.stdout)
        mounts = {m['name']: m['mountPath'] for m in ctr['volumeMounts']}
        vols = {v['name']: v['hostPath'] for v in spec['volumes']}
        self.assertEqual(mounts['tpm'], flags['--tcti'].split(':', 1)[1])
        self.assertEqual(vols['tpm'], {'path': '/dev/tpmrm0', 'type': 'CharDevice'})
        self.assertEqual(mounts['state'], flags['--state-dir'])
        self.assertEqual(vols['state']['path'], flags['--state-dir'])
        self.assertEqual(mounts['socket'], os.path.dirname(flags['--listen']))
        self.assertEqual(vols['socket']['path'], os.path.dirname(flags['--listen']))
        for probe in ('livenessProbe', 'readinessProbe'):
            cmd = ctr[probe]['exec']['command']
            self.assertEqual(cmd[:2], [ctr['command'][0], 'status'])
            self.assertIn('--listen=' + flags['--listen'], cmd)
            timeout = int([a for a in cmd if a.startswith('--timeout=')][0].split('=')[1])
            self.assertLess(timeout, ctr[probe]['timeoutSeconds'] * 1000)
            # Flags status takes: it goes as far as connecting (exit 1),
            # not a usage error (exit 2).
            r = subprocess.run([tpm2_kms()] + cmd[1:], capture_output=True, text=True)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn('cannot connect', r.stderr)
        sc = ctr['securityContext']
        self.assertEqual((sc['privileged'], sc['runAsUser'], sc['readOnlyRootFilesystem']),
                         (True, 0, True))

    def test_containerfile_is_the_same_image(self):
        # Built by other tooling from a Debian 12 base: the same staging
        # script, and the settings make image gives.
        with open(os.path.join(SRC, 'dist', 'image', 'Containerfile')) as f:
            text = re.sub(r'\\\n', ' ', f.read())
        lines = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith('#')]
        stages = [i for i, l in enumerate(lines) if l.startswith('FROM ')]
        self.assertEqual(len(stages), 2)
        build, final = lines[stages[0]:stages[1]], lines[stages[1]:]
        self.assertTrue(lines[stages[0]].startswith('FROM debian:12'))
        self.assertIn('/src/dist/image/rootfs.sh /build/tpm2-kms /rootfs', ' '.join(build))
        self.assertIn('--prefix=/usr --sysconfdir=/etc', ' '.join(build))
        c = self.config()['config']
        self.assertEqual(final[0], 'FROM scratch')
        self.assertIn('COPY --from=build /rootfs/ /', final)
        self.assertIn('USER ' + c['User'], final)
        self.assertIn('ENTRYPOINT ' + json.dumps(c['Entrypoint']), final)
        self.assertIn('CMD ' + json.dumps(c['Cmd']), final)
        self.assertIn('org.opencontainers.image.version="%s"' % self.version, ' '.join(final))
        # Its packages provide every file the image takes from Debian.
        apt = re.search(r'apt-get install -y --no-install-recommends ([^&]+)', text).group(1)
        listed = apt.split()
        closure = set(subprocess.run(
            ['apt-cache', 'depends', '--recurse', '--no-recommends', '--no-suggests',
             '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances'] + listed,
            capture_output=True, text=True, check=True).stdout.split())
        for p in self.files():
            if not p.startswith('/usr/lib') or os.path.islink(self.root + p):
                continue
            owner = subprocess.run(['dpkg', '-S', '*' + os.path.basename(p)],
                                   capture_output=True, text=True).stdout
            pkgs = {l.split(':')[0] for l in owner.splitlines()
                    if l.split(': ', 1)[1] in (p, p.replace('/usr/lib/', '/lib/', 1))}
            self.assertTrue(pkgs & closure, '%s (%s) is not installed by the Containerfile' %
                            (p, pkgs))


if __name__ == '__main__':
    r = unittest.main(verbosity=2, exit=False).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures) - len(r.errors),
                                    len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
