"""Service identification on open TCP ports: banners first, then short probes.

For each open port: connect and wait briefly for a server-first banner (SSH,
SMTP, FTP, MySQL, POP3, IMAP); if none comes, send probes, each on its own
fresh connection, all at once: HTTP ``GET``, a TLS handshake (then HTTP
inside), Redis ``PING``, PostgreSQL ``SSLRequest``.  Their answers are taken in
an order chosen from the port number (TLS first on 443, Redis on 6379, ...):
the first recognised answer in that order wins; otherwise the name is guessed
from our own small port table (``method="port"``).

Every endpoint runs at once on one non-blocking event loop (asyncio, in one
thread), so identifying many open ports costs about one endpoint's deadline,
whatever their number.  A :class:`Session` can take endpoints while a scan is
still running (the scanner submits each port as soon as it is found open) and
hands back what it found when asked.  Endpoints in flight are bounded by a
share of the open-file budget (each holds at most four sockets).

Written by us from the protocols' specifications; nmap's service-probe
database (NPSL) is not used.  Limits: each endpoint has a total deadline (the
banner wait, then every probe within at most one second); asyncio (and ssl for
TLS) are imported only when a first endpoint is submitted.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import typing
from collections.abc import Callable, Coroutine, Sequence

from portolan.engine import tcp_scanning
from portolan.models import results
from portolan.wire import banners

if typing.TYPE_CHECKING:
    import asyncio
    import concurrent.futures
    import ssl

Endpoint = tuple[str, int]
Probe = Callable[[str, int, float], Coroutine[None, None, "results.ServiceInfo | None"]]
_SOCKETS_PER_ENDPOINT = 4  # the probes of one endpoint, all open at once
_PROBE_WAIT = 1.0  # seconds any one probe may take


async def _connect(
    address: str, port: int, timeout: float, context: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    import asyncio

    return await asyncio.wait_for(
        asyncio.open_connection(address, port, ssl=context, server_hostname="" if context else None),
        timeout,
    )


async def _read(reader: asyncio.StreamReader, timeout: float) -> bytes:
    import asyncio

    try:
        return await asyncio.wait_for(reader.read(4096), timeout)
    except (TimeoutError, OSError):
        return b""


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):  # a peer's reset or a TLS shutdown error changes nothing here
        await writer.wait_closed()


async def _exchange(address: str, port: int, timeout: float, payload: bytes) -> bytes:
    reader, writer = await _connect(address, port, timeout)
    try:
        if payload:
            writer.write(payload)
            await writer.drain()
        return await _read(reader, timeout)
    finally:
        await _close(writer)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


async def _probe_http(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    request = f"GET / HTTP/1.0\r\nHost: {_host(address)}\r\nUser-Agent: portolan\r\n\r\n".encode()
    return banners.match_http(await _exchange(address, port, timeout, request))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One client context for every TLS probe (making one costs milliseconds of CPU)."""
    import ssl  # only scans that meet an open port pay for loading OpenSSL

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _probe_tls(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    import ssl

    try:
        reader, writer = await _connect(address, port, timeout, _tls_context())
    except ssl.SSLError:
        return None
    try:
        tls = writer.get_extra_info("ssl_object")
        version = tls.version() if tls is not None else None
        writer.write(f"GET / HTTP/1.0\r\nHost: {_host(address)}\r\n\r\n".encode())
        await writer.drain()
        inner = banners.match_http(await _read(reader, timeout), tls=True)
        if inner is not None:
            return inner
        return results.ServiceInfo(
            name=banners.guess_service(port) or "ssl", tls=True, version=version, method="probe"
        )
    except (ssl.SSLError, OSError):
        return None
    finally:
        await _close(writer)


async def _probe_redis(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    return banners.match_redis(await _exchange(address, port, timeout, b"PING\r\n"))


async def _probe_postgres(address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    return banners.match_postgres(await _exchange(address, port, timeout, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"))


def _order(port: int) -> list[Probe]:
    probes: list[Probe] = [_probe_http, _probe_tls, _probe_redis, _probe_postgres]
    first: Probe | None = {6379: _probe_redis, 5432: _probe_postgres}.get(port)
    if port in banners.TLS_PORTS:
        first = _probe_tls
    if first is not None:
        probes.remove(first)
        probes.insert(0, first)
    return probes


async def _guarded(probe: Probe, address: str, port: int, timeout: float) -> results.ServiceInfo | None:
    import asyncio

    try:
        return await asyncio.wait_for(probe(address, port, timeout), timeout)
    except (TimeoutError, OSError):
        return None


async def _identify(address: str, port: int, timeout: float, banner_wait: float) -> results.ServiceInfo:
    """Identify one endpoint within ``timeout`` seconds; never raises for network errors."""
    import asyncio

    deadline = time.monotonic() + timeout
    banner = b""
    try:
        reader, writer = await _connect(address, port, timeout)
    except (TimeoutError, OSError):
        return results.ServiceInfo(name=banners.guess_service(port) or "unknown", method="port")
    try:
        banner = await _read(reader, min(banner_wait, timeout))
    finally:
        await _close(writer)
    if banner:
        found = banners.match_banner(port, banner)
        if found is not None:
            return found
    left = deadline - time.monotonic()
    if left > 0:
        wait = min(left, _PROBE_WAIT)
        tasks = [asyncio.ensure_future(_guarded(probe, address, port, wait)) for probe in _order(port)]
        try:
            for task in tasks:  # in the port's order: the first recognised answer wins
                found = await task
                if found is not None:
                    return found
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    if banner:
        return results.ServiceInfo(
            name=banners.guess_service(port) or "unknown", banner=banners.clean(banner), method="banner"
        )
    return results.ServiceInfo(name=banners.guess_service(port) or "unknown", method="port")


async def _cancel_all() -> None:
    """Cancel every other task of the running loop and let each close its sockets."""
    import asyncio

    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Session:
    """Endpoints identified all at once on one event loop, submitted while a scan runs.

    ``submit`` may be called from any thread; the loop's thread starts with the
    first endpoint.  ``collect`` waits for every submitted endpoint (or, once
    ``stop`` is set, cancels what is left) and returns what was found.
    """

    def __init__(self, timeout: float = 2.0, *, limit: int | None = None, banner_wait: float = 0.6) -> None:
        self.timeout = timeout
        self.banner_wait = banner_wait
        budget = limit if limit is not None else tcp_scanning.raise_fd_limit() // 8
        self.in_flight = max(1, budget // _SOCKETS_PER_ENDPOINT)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._gate: asyncio.Semaphore | None = None
        self._futures: dict[Endpoint, concurrent.futures.Future[results.ServiceInfo]] = {}

    def _started(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            import asyncio

            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="portolan-services", daemon=True)
            self._thread.start()
            self._loop = loop
        return self._loop

    async def _one(self, address: str, port: int) -> results.ServiceInfo:
        import asyncio

        if self._gate is None:  # made on the loop's own thread
            self._gate = asyncio.Semaphore(self.in_flight)
        async with self._gate:
            return await _identify(address, port, self.timeout, self.banner_wait)

    def submit(self, address: str, port: int) -> None:
        """Start identifying one endpoint now (again for the same endpoint: nothing)."""
        import asyncio

        with self._lock:
            if (address, port) in self._futures:
                return
            loop = self._started()
            self._futures[(address, port)] = asyncio.run_coroutine_threadsafe(self._one(address, port), loop)

    def collect(self, stop: threading.Event | None = None) -> dict[Endpoint, results.ServiceInfo]:
        """Wait for every submitted endpoint and stop the loop; the found services by endpoint."""
        with self._lock:
            futures = dict(self._futures)
        if not futures:
            return {}
        import concurrent.futures

        pending = set(futures.values())
        while pending:
            _done, pending = concurrent.futures.wait(pending, timeout=0.1)
            if pending and stop is not None and stop.is_set():
                for future in pending:
                    future.cancel()
                concurrent.futures.wait(pending, timeout=self.timeout)
                break
        self.close()
        return {
            endpoint: future.result()
            for endpoint, future in futures.items()
            if future.done() and not future.cancelled() and future.exception() is None
        }

    def close(self) -> None:
        """Stop the loop's thread (what is still running is abandoned)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        import asyncio
        import concurrent.futures

        drained = asyncio.run_coroutine_threadsafe(_cancel_all(), loop)
        concurrent.futures.wait([drained], timeout=self.timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def identify_services(
    endpoints: Sequence[Endpoint], timeout: float = 2.0, *, limit: int | None = None
) -> dict[Endpoint, results.ServiceInfo]:
    """Identify many endpoints at once, each within its own deadline."""
    session = Session(timeout, limit=limit)
    for address, port in endpoints:
        session.submit(address, port)
    return session.collect()


def identify_one(
    address: str, port: int, timeout: float = 2.0, banner_wait: float = 0.6
) -> results.ServiceInfo:
    """Identify one endpoint; never raises for network errors."""
    session = Session(timeout, limit=_SOCKETS_PER_ENDPOINT, banner_wait=banner_wait)
    session.submit(address, port)
    found = session.collect()
    return found.get((address, port)) or results.ServiceInfo(
        name=banners.guess_service(port) or "unknown", method="port"
    )
