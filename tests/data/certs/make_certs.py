"""Make the throwaway test certificates in this folder (committed, so the tests need no
openssl): a CA, and two server certificates it signed, valid for a hundred years, and one it
signed that expired in 2021.

    python3 tests/data/certs/make_certs.py

`good` is for 127.0.0.1, localhost and api.example.test; `localhost_only` for localhost alone;
`expired` is `good` with validity 2020-01-01 to 2021-01-01.
The keys are test keys: they protect nothing.
"""

import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DAYS = "36500"
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = streamlite throwaway test CA
[ca_ext]
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
    _openssl("req", "-x509", "-config", "openssl.cnf", "-extensions", "ca_ext", *ec,
             "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS)
    for serial, name in enumerate(("good", "localhost_only"), start=2):
        _openssl("req", "-new", "-config", "openssl.cnf", *ec, "-subj", "/CN=streamlite test " + name,
                 "-keyout", name + ".key", "-out", name + ".csr")
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", str(serial), "-days", DAYS, "-extfile", "openssl.cnf", "-extensions", name,
                 "-out", name + ".pem")
        os.remove(os.path.join(HERE, name + ".csr"))
    os.remove(os.path.join(HERE, "openssl.cnf"))
    make_expired()


def make_expired():
    """`openssl x509` cannot set dates in the past; `openssl ca` can, with a throwaway database."""
    with tempfile.TemporaryDirectory() as work:
        config = os.path.join(work, "ca.cnf")
        with open(config, "w") as out:
            out.write(_OPENSSL_CONFIG + _CA_DATABASE.format(work=work))
        open(os.path.join(work, "index.txt"), "w").close()
        with open(os.path.join(work, "serial"), "w") as out:
            out.write("10\n")
        _openssl("req", "-new", "-config", config, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-subj", "/CN=streamlite test expired", "-keyout", "expired.key",
                 "-out", os.path.join(work, "expired.csr"))
        _openssl("ca", "-batch", "-config", config, "-in", os.path.join(work, "expired.csr"), "-notext",
                 "-startdate", "20200101000000Z", "-enddate", "20210101000000Z", "-extensions", "good",
                 "-out", "expired.pem")


_CA_DATABASE = """\
[ca]
default_ca = throwaway
[throwaway]
dir = {work}
database = {work}/index.txt
new_certs_dir = {work}
serial = {work}/serial
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = anything
copy_extensions = none
[anything]
commonName = supplied
"""


if __name__ == "__main__":
    main()
