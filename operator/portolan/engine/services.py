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

import socket
import time
from collections.abc import Callable, Sequence

from portolan.models import results
from portolan.wire import banners

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
    return banners.match_http(_exchange(address, port, timeout, request))


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
                inner = banners.match_http(_read(tls, timeout), tls=True)
                if inner is not None:
                    return inner
                return results.ServiceInfo(
                    name=banners.guess_service(port) or "ssl", tls=True, version=version, method="probe"
                )
        except (ssl.SSLError, OSError):
            return None


def _probe_redis(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    return banners.match_redis(_exchange(address, port, timeout, b"PING\r\n"))


def _probe_postgres(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    return banners.match_postgres(_exchange(address, port, timeout, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"))


def _order(port: int) -> list[Probe]:
    probes: list[Probe] = [_probe_http, _probe_tls, _probe_redis, _probe_postgres]
    first: Probe | None = {6379: _probe_redis, 5432: _probe_postgres}.get(port)
    if port in banners.TLS_PORTS:
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
            found = banners.match_banner(port, banner)
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
                name=banners.guess_service(port) or "unknown", banner=banners.clean(banner), method="banner"
            )
    except OSError:
        pass
    return results.ServiceInfo(name=banners.guess_service(port) or "unknown", method="port")


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
