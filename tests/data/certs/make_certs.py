"""Make the throwaway test certificates in this folder (committed, so the tests need no
openssl): a CA, and two server certificates it signed, valid for a hundred years.

    python3 tests/data/certs/make_certs.py

`good` is for 127.0.0.1, localhost and api.example.test; `localhost_only` for localhost alone.
The keys are test keys: they protect nothing.
"""

import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
DAYS = "36500"
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = streamlite throwaway test CA
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[good]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:api.example.test
[localhost_only]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost
"""


def _openssl(*args):
    subprocess.run(["openssl", *args], cwd=HERE, check=True, capture_output=True, timeout=60)


def main():
    with open(os.path.join(HERE, "openssl.cnf"), "w") as out:
        out.write(_OPENSSL_CONFIG)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", "-config", "openssl.cnf", "-extensions", "ca", *ec,
             "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS)
    for serial, name in enumerate(("good", "localhost_only"), start=2):
        _openssl("req", "-new", "-config", "openssl.cnf", *ec, "-subj", "/CN=streamlite test " + name,
                 "-keyout", name + ".key", "-out", name + ".csr")
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", str(serial), "-days", DAYS, "-extfile", "openssl.cnf", "-extensions", name,
                 "-out", name + ".pem")
        os.remove(os.path.join(HERE, name + ".csr"))
    os.remove(os.path.join(HERE, "openssl.cnf"))


if __name__ == "__main__":
    main()
