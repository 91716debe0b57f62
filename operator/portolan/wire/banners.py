"""Service names and banner matchers: what a port number or the first bytes of a reply say.

Pure functions over bytes, shared by the engine's service identification
(:mod:`portolan.engine.services`) and capture's decoder
(:mod:`portolan.capture.decoding`).  No sockets here.
"""

from __future__ import annotations

import re

from portolan.models import results

_PORT_NAMES = {
    21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "domain", 80: "http", 110: "pop3",
    143: "imap", 443: "https", 465: "smtps", 587: "submission", 993: "imaps", 995: "pop3s",
    1433: "ms-sql", 2379: "etcd", 3306: "mysql", 3389: "rdp", 5432: "postgresql",
    5672: "amqp", 6379: "redis", 6443: "kubernetes-api", 8080: "http-alt", 8443: "https-alt",
    9090: "prometheus", 9200: "elasticsearch", 10250: "kubelet", 11211: "memcached",
    27017: "mongodb",
}
TLS_PORTS = frozenset({443, 465, 636, 993, 995, 2376, 6443, 8443, 9443, 10250})
_SSH = re.compile(rb"^SSH-([\d.]+)-([^\s\r\n]+)")
_HTTP_SERVER = re.compile(rb"^server:\s*([^\r\n]+)", re.I | re.M)


def guess_service(port: int, protocol: str = "tcp") -> str | None:
    """A name from the port number alone (our own table, not nmap-services)."""
    return _PORT_NAMES.get(port)


def clean(data: bytes) -> str:
    """A banner as printable text, cut to the model's limit."""
    return data[:200].decode("latin-1").strip().replace("\r", "")[:200]


def match_banner(port: int, data: bytes) -> results.ServiceInfo | None:
    """Recognise a server-first banner."""
    found = _SSH.match(data)
    if found:
        software = found.group(2).decode("latin-1")
        product, _, version = software.partition("_")
        return results.ServiceInfo(
            name="ssh", product=product, version=version or None, banner=clean(data)
        )
    if len(data) > 5 and data[4] == 0x0A and b"\x00" in data[5:64]:
        version = data[5 : data.index(b"\x00", 5)].decode("latin-1")
        if re.match(r"^\d+\.\d+", version):
            product = "MariaDB" if "mariadb" in version.lower() else "MySQL"
            return results.ServiceInfo(name="mysql", product=product, version=version)
    text = data[:512]
    if text.startswith(b"220"):
        upper = text.upper()
        if b"FTP" in upper or port in (21, 2121):
            return results.ServiceInfo(name="ftp", banner=clean(data))
        if b"SMTP" in upper or port in (25, 465, 587):
            return results.ServiceInfo(name="smtp", banner=clean(data))
    if text.startswith(b"+OK"):
        return results.ServiceInfo(name="pop3", banner=clean(data))
    if text.startswith(b"* OK"):
        return results.ServiceInfo(name="imap", banner=clean(data))
    return None


def match_http(data: bytes, *, tls: bool = False) -> results.ServiceInfo | None:
    """Server and status of an HTTP response."""
    if not data.startswith(b"HTTP/"):
        return None
    server = _HTTP_SERVER.search(data)
    product = server.group(1).decode("latin-1").strip()[:100] if server else None
    return results.ServiceInfo(
        name="https" if tls else "http", product=product, tls=tls, method="probe",
        banner=clean(data.split(b"\r\n", 1)[0]),
    )


def match_redis(data: bytes) -> results.ServiceInfo | None:
    """A Redis answer to PING or INFO."""
    if data.startswith((b"+PONG", b"-NOAUTH", b"-ERR")):
        return results.ServiceInfo(name="redis", method="probe", banner=clean(data))
    return None


def match_postgres(data: bytes) -> results.ServiceInfo | None:
    """A PostgreSQL answer to an SSL request or startup message."""
    if data in (b"S", b"N"):
        return results.ServiceInfo(name="postgresql", method="probe")
    return None
