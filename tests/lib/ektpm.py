"""TPMs with endorsement key certificates, for the attested join's tests:
swtpm_setup --create-ek-cert with swtpm_localca (swtpm-tools) as a test
manufacturer CA (a root and an intermediate, made on first use)."""

import os
import shutil
import subprocess

from kmsclient import Swtpm

HAVE_SETUP = bool(shutil.which('swtpm_setup')) and os.path.exists('/usr/bin/swtpm_localca')


def make_ca_config(d):
    """swtpm_localca's configuration: it makes its root and intermediate on
    first use, in d."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'localca.conf'), 'w') as f:
        f.write('statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\n'
                'certserial = %s/certserial\n' % (d, d, d, d))
    with open(os.path.join(d, 'localca.options'), 'w') as f:
        f.write('--platform-manufacturer Test\n--platform-version 2.1\n--platform-model QEMU\n')
    with open(os.path.join(d, 'setup.conf'), 'w') as f:
        f.write('create_certs_tool = /usr/bin/swtpm_localca\n'
                'create_certs_tool_config = %s/localca.conf\n'
                'create_certs_tool_options = %s/localca.options\n' % (d, d))
    return os.path.join(d, 'setup.conf')


def ek_setup(t, ca):
    """Manufactures swtpm t's state (before it starts): EKs (RSA 2048 and
    ECC P-384) with certificates from ca."""
    subprocess.run(['swtpm_setup', '--tpm2', '--tpmstate', t.state, '--create-ek-cert',
                    '--config', os.path.join(ca, 'setup.conf'), '--overwrite'],
                   check=True, capture_output=True)


def ek_tpm(root, name, ca):
    """A started swtpm in root/name whose EKs have certificates from ca."""
    t = Swtpm(os.path.join(root, name))
    ek_setup(t, ca)
    t.start()
    return t


def roots_dir(ca, out):
    """What an admin gets from the manufacturer: its root and intermediate
    certificates (not the CA's keys)."""
    os.makedirs(out, exist_ok=True)
    shutil.copy(os.path.join(ca, 'swtpm-localca-rootca-cert.pem'), out)
    shutil.copy(os.path.join(ca, 'issuercert.pem'), out)
    return out


def tpm2(t, *args):
    """A tpm2-tools command on swtpm t."""
    return subprocess.run(['tpm2_' + args[0], '-T', t.tcti] + list(args[1:]), check=True,
                          capture_output=True, text=True).stdout


def drop_ek(t, cert_index, handle):
    """Takes an EK and its certificate out of t (the platform hierarchy
    owns EK certificate indices; swtpm leaves its authValue empty), as a
    TPM made with other EKs would be."""
    tpm2(t, 'nvundefine', '-C', 'p', hex(cert_index))
    tpm2(t, 'evictcontrol', '-C', 'o', '-c', hex(handle))
