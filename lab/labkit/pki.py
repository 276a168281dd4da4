"""The lab CA, the registry's TLS certificate, and trusting the CA on the machine and in every Docker Engine."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from .core import Journal, LabPaths, Log, run
from .spec import GATEWAY, REGISTRY

SYSTEM_CA = Path("/usr/local/share/ca-certificates/nodefleet-lab.crt")
DOCKER_CERTS_D = Path("/etc/docker/certs.d")
ENGINE_CA = DOCKER_CERTS_D / REGISTRY / "ca.crt"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def ca_cert(paths: LabPaths) -> Path:
    return paths.state / "ca.crt"


def registry_cert(paths: LabPaths) -> tuple[Path, Path]:
    pki = paths.state / "pki"
    return pki / "registry.crt", pki / "registry.key"


def make_ca_and_registry_cert(paths: LabPaths, log: Log) -> None:
    """A fresh CA per `up` (its key never leaves the state dir) and a certificate for 10.231.0.1."""
    pki = paths.state / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = pki / "ca.key"
    crt, key = registry_cert(paths)
    csr = pki / "registry.csr"
    ext = pki / "registry.ext"
    run(["openssl", "req", "-x509", *EC_KEY, "-keyout", str(ca_key), "-out", str(ca_cert(paths)), "-days", "30",
         "-subj", "/CN=nodefleet lab CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"], log)  # fmt: skip
    run(["openssl", "req", *EC_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={GATEWAY}"], log)
    ext.write_text(
        f"subjectAltName=IP:{GATEWAY}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    serial = "0x" + secrets.token_hex(8)
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert(paths)), "-CAkey", str(ca_key),
         "-set_serial", serial, "-days", "30", "-extfile", str(ext), "-out", str(crt)], log)  # fmt: skip
    ca_key.chmod(0o600)
    key.chmod(0o600)


def trust_ca(paths: LabPaths, journal: Journal, log: Log) -> None:
    """Machine store (for imagetools and other Go clients) and /etc/docker/certs.d (for every lab engine)."""
    for directory in (DOCKER_CERTS_D.parent, DOCKER_CERTS_D, ENGINE_CA.parent):
        if not directory.exists():
            directory.mkdir()
            journal.record("created_dir", path=str(directory))
    shutil.copyfile(ca_cert(paths), ENGINE_CA)
    SYSTEM_CA.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_cert(paths), SYSTEM_CA)
    run(["update-ca-certificates"], log)


def untrust_ca(log: Log) -> None:
    """Remove the lab CA by its fixed names (also after a crashed `up` that left no journal)."""
    if ENGINE_CA.exists():
        ENGINE_CA.unlink()
    if ENGINE_CA.parent.is_dir() and not any(ENGINE_CA.parent.iterdir()):
        ENGINE_CA.parent.rmdir()
    if SYSTEM_CA.exists():
        SYSTEM_CA.unlink()
        run(["update-ca-certificates"], log, check=False)
