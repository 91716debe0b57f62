"""A throwaway PKI for the test control plane, made with ``cryptography``.

One CA signs the API server's serving certificate (SANs for 127.0.0.1, localhost
and the in-cluster service names) and client certificates for the admin
(``system:masters``), the controller manager, the scheduler and kube-proxy (their
default RBAC identities); a separate key signs service-account tokens.  Keys are
ECDSA P-256: quick to generate, accepted by every component.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


@dataclasses.dataclass(frozen=True)
class Pair:
    cert: pathlib.Path
    key: pathlib.Path


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Pair
    serving: Pair
    admin: Pair
    controller_manager: Pair
    scheduler: Pair
    service_account_key: pathlib.Path
    service_account_pub: pathlib.Path
    kube_proxy: Pair


def make(folder: pathlib.Path, service_ip: str) -> Pki:
    """Write a CA, serving and client certificates and the service-account keys into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key = _key()
    ca_name = _name("portolan-test-ca")
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
        pair = Pair(folder / f"{name}.crt", folder / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(_pem_key(key))
        pair.key.chmod(0o600)
        return pair

    def issue(name: str, subject: x509.Name, *, server: bool = False,
              sans: list[x509.GeneralName] | None = None) -> Pair:
        key = _key()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return write(name, builder.sign(ca_key, hashes.SHA256()), key)

    ca = write("ca", ca_cert, ca_key)
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"]
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", service_ip)]
    serving = issue("apiserver", _name("kube-apiserver"), server=True, sans=sans)
    admin = issue("admin", _name("portolan-test-admin", "system:masters"))
    controller_manager = issue("controller-manager", _name("system:kube-controller-manager"))
    scheduler = issue("scheduler", _name("system:kube-scheduler"))
    kube_proxy = issue("kube-proxy", _name("system:kube-proxy"))
    sa_key = _key()
    sa_private = folder / "sa.key"
    sa_public = folder / "sa.pub"
    sa_private.write_bytes(_pem_key(sa_key))
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(ca, serving, admin, controller_manager, scheduler, sa_private, sa_public, kube_proxy)


def kubeconfig(path: pathlib.Path, server: str, ca: pathlib.Path, *, client: Pair | None = None,
               token_file: pathlib.Path | None = None, user: str = "user") -> pathlib.Path:
    """Write a kubeconfig (YAML is JSON) for a client certificate or a token file."""
    import json

    credentials: dict[str, str] = {}
    if client is not None:
        credentials = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    if token_file is not None:
        credentials = {"tokenFile": str(token_file)}
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
    }
    path.write_text(json.dumps(config, indent=2))
    return path
