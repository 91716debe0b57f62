"""Service identification on open TCP ports: banners first, then short probes.

For each open port: connect and wait briefly for a server-first banner (SSH,
SMTP, FTP, MySQL, POP3, IMAP); if none comes, send probes on fresh
connections in an order chosen from the port number (TLS on 443, Redis on
6379, ...): HTTP ``GET``, a TLS handshake (then HTTP inside), Redis ``PING``,
PostgreSQL ``SSLRequest``.  The first recognised answer wins; otherwise the
name is guessed from our own small port table (``method="port"``).

Written by us from the protocols' specifications; nmap's service-probe
database (NPSL) is not used.  Limits: each endpoint has a total deadline; work
runs on a small thread pool (I/O bound, a handful of sockets per endpoint).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Sequence

from portolan.models import results

_PORT_NAMES = {
    21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "domain", 80: "http", 110: "pop3",
    143: "imap", 443: "https", 465: "smtps", 587: "submission", 993: "imaps", 995: "pop3s",
    1433: "ms-sql", 2379: "etcd", 3306: "mysql", 3389: "rdp", 5432: "postgresql",
    5672: "amqp", 6379: "redis", 6443: "kubernetes-api", 8080: "http-alt", 8443: "https-alt",
    9090: "prometheus", 9200: "elasticsearch", 10250: "kubelet", 11211: "memcached",
    27017: "mongodb",
}
_TLS_PORTS = frozenset({443, 465, 636, 993, 995, 2376, 6443, 8443, 9443, 10250})
_SSH = re.compile(rb"^SSH-([\d.]+)-([^\s\r\n]+)")
_HTTP_SERVER = re.compile(rb"^server:\s*([^\r\n]+)", re.I | re.M)


def guess_service(port: int, protocol: str = "tcp") -> str | None:
    """A name from the port number alone (our own table, not nmap-services)."""
    return _PORT_NAMES.get(port)


def _clean(data: bytes) -> str:
    return data[:200].decode("latin-1").strip().replace("\r", "")[:200]


def match_banner(port: int, data: bytes) -> results.ServiceInfo | None:
    """Recognise a server-first banner."""
    found = _SSH.match(data)
    if found:
        software = found.group(2).decode("latin-1")
        product, _, version = software.partition("_")
        return results.ServiceInfo(
            name="ssh", product=product, version=version or None, banner=_clean(data)
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
            return results.ServiceInfo(name="ftp", banner=_clean(data))
        if b"SMTP" in upper or port in (25, 465, 587):
            return results.ServiceInfo(name="smtp", banner=_clean(data))
    if text.startswith(b"+OK"):
        return results.ServiceInfo(name="pop3", banner=_clean(data))
    if text.startswith(b"* OK"):
        return results.ServiceInfo(name="imap", banner=_clean(data))
    return None


def match_http(data: bytes, *, tls: bool = False) -> results.ServiceInfo | None:
    if not data.startswith(b"HTTP/"):
        return None
    server = _HTTP_SERVER.search(data)
    product = server.group(1).decode("latin-1").strip()[:100] if server else None
    return results.ServiceInfo(
        name="https" if tls else "http", product=product, tls=tls, method="probe",
        banner=_clean(data.split(b"\r\n", 1)[0]),
    )


def match_redis(data: bytes) -> results.ServiceInfo | None:
    if data.startswith((b"+PONG", b"-NOAUTH", b"-ERR")):
        return results.ServiceInfo(name="redis", method="probe", banner=_clean(data))
    return None


def match_postgres(data: bytes) -> results.ServiceInfo | None:
    if data in (b"S", b"N"):
        return results.ServiceInfo(name="postgresql", method="probe")
    return None


Probe = Callable[[str, int, float], results.ServiceInfo | None]


def _exchange(address: str, port: int, timeout: float, payload: bytes) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as sock:
        if payload:
            sock.sendall(payload)
        return _read(sock, timeout)


def _read(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096)
    except (TimeoutError, OSError):
        return b""


def _probe_http(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    host = f"[{address}]" if ":" in address else address
    request = f"GET / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: portolan\r\n\r\n".encode()
    return match_http(_exchange(address, port, timeout, request))


def _probe_tls(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    import ssl  # only scans that meet a TLS port pay for loading OpenSSL

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=timeout) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                version = tls.version()
                host = f"[{address}]" if ":" in address else address
                tls.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                inner = match_http(_read(tls, timeout), tls=True)
                if inner is not None:
                    return inner
                return results.ServiceInfo(
                    name=guess_service(port) or "ssl", tls=True, version=version, method="probe"
                )
        except (ssl.SSLError, OSError):
            return None


def _probe_redis(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    return match_redis(_exchange(address, port, timeout, b"PING\r\n"))


def _probe_postgres(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    return match_postgres(_exchange(address, port, timeout, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"))


def _order(port: int) -> list[Probe]:
    probes: list[Probe] = [_probe_http, _probe_tls, _probe_redis, _probe_postgres]
    first: Probe | None = {6379: _probe_redis, 5432: _probe_postgres}.get(port)
    if port in _TLS_PORTS:
        first = _probe_tls
    if first is not None:
        probes.remove(first)
        probes.insert(0, first)
    return probes


def identify_one(
    address: str, port: int, timeout: float = 2.0, banner_wait: float = 0.6
) -> results.ServiceInfo:
    """Identify one endpoint; never raises for network errors."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            banner = _read(sock, min(banner_wait, timeout))
        if banner:
            found = match_banner(port, banner)
            if found is not None:
                return found
        for probe in _order(port):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            found = probe(address, port, min(left, 1.0))
            if found is not None:
                return found
        if banner:
            return results.ServiceInfo(
                name=guess_service(port) or "unknown", banner=_clean(banner), method="banner"
            )
    except OSError:
        pass
    return results.ServiceInfo(name=guess_service(port) or "unknown", method="port")


def identify_services(
    endpoints: Sequence[tuple[str, int]], timeout: float = 2.0, concurrency: int = 32
) -> dict[tuple[str, int], results.ServiceInfo]:
    """Identify many endpoints concurrently, each within its own deadline."""
    if not endpoints:
        return {}
    import concurrent.futures

    found: dict[tuple[str, int], results.ServiceInfo] = {}
    workers = min(concurrency, len(endpoints))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(identify_one, a, p, timeout): (a, p) for a, p in endpoints}
        for future in concurrent.futures.as_completed(futures):
            found[futures[future]] = future.result()
    return found
