"""A canary listener for reachability audits: accept TCP and echo UDP on the audited ports, until stopped.

A canary pod carries a destination's labels, so every NetworkPolicy treats it
as the destination; its listeners make verdicts certain (a reset can then only
come from an enforcer, and UDP gets an echo).  It is never Ready (its pod's
readiness probe always fails), so no Service ever sends it real traffic.
TCP connections are accepted and closed at once; UDP datagrams are echoed.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys
import threading
from collections.abc import Sequence

from portolan import errors
from portolan.engine import ports as ports_


def _bind(kind: socket.SocketKind, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 and IPv6 on one socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def serve(tcp: Sequence[int], udp: Sequence[int], stop: threading.Event, *, ready: threading.Event | None = None) -> int:
    """Listen on every port given until ``stop``; returns how many connections and datagrams were answered."""
    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    answered = 0
    try:
        for kind, numbers in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
            for port in numbers:
                try:
                    sock = _bind(kind, port)
                except OSError as exc:
                    raise errors.ScanError(f"cannot listen on {port}/{'tcp' if kind == socket.SOCK_STREAM else 'udp'}: "
                                           f"{exc.strerror}") from exc
                sockets.append(sock)
                selector.register(sock, selectors.EVENT_READ)
        if ready is not None:
            ready.set()
        while not stop.is_set():
            for key, _ in selector.select(0.2):
                ready_sock = key.fileobj
                assert isinstance(ready_sock, socket.socket)
                with contextlib.suppress(OSError):
                    if ready_sock.type == socket.SOCK_STREAM:
                        conn, _ = ready_sock.accept()
                        conn.close()
                    else:
                        data, peer = ready_sock.recvfrom(2048)
                        ready_sock.sendto(data or b"portolan-canary", peer)
                    answered += 1
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    return answered


def main(tcp: str | None, udp: str | None) -> int:
    """``portolan canary --tcp PORTS --udp PORTS``: listen until SIGTERM; returns the exit code."""
    from portolan.engine import stopping

    tcp_ports = ports_.parse_ports(tcp) if tcp else []
    udp_ports = ports_.parse_ports(udp) if udp else []
    if not tcp_ports and not udp_ports:
        raise errors.SpecError("a canary needs --tcp or --udp ports")
    with stopping.on_signals(threading.Event()) as stop:
        answered = serve(tcp_ports, udp_ports, stop)
    print(f"portolan canary: answered {answered} probe(s)", file=sys.stderr)
    return 0
