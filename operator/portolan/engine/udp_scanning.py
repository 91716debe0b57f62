"""UDP scanning with protocol payloads and exact ICMP interpretation.

Each probe is a connected, non-blocking UDP socket with ``IP_RECVERR`` set, so
a reply datagram and the ICMP error for the probe's flow both land on that
socket; one epoll loop drives them all.

Verdicts (nmap's):

* a datagram comes back -> open / udp-response
* ICMP port unreachable -> closed / port-unreach
* other ICMP unreachable codes -> filtered / <icmp reason>
* silence after ``retries + 1`` tries -> open|filtered / no-response

Linux rate-limits ICMP errors per peer (``net.ipv4.icmp_ratelimit``: a burst
of about six, then one per second), so after a fast first pass a closed port
may look silent.  When a host answered some probes with port-unreachable but
left others silent, a second, paced pass re-probes the silent ports one at a
time: a closed port answers as soon as the host has a token again, and a port
that stays silent while a token was available is confirmed open|filtered — it
costs one round-trip timeout, not a second.  The pass is bounded by a time
budget; ports it could not reach keep open|filtered and the report carries an
``IcmpRateLimited`` note with the count, instead of a silent misclassification.

Our own datagrams are never taken for replies.  Scanning an address of this
machine, a probe socket can be given a source port equal to the port it
probes (it would receive its own datagram), or two probe sockets can be
connected to each other's ports (each receives the other's probe).  A socket
that met itself is replaced before it sends, and a datagram whose source is
one of our probe sockets connected to the receiver is discarded and the probe
sent again from a fresh socket, so neither shows up as ``open/udp-response``.
"""

from __future__ import annotations

import errno
import heapq
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from portolan.engine import icmp, pacing, plans, targets, tcp_scanning
from portolan.models import results

# (target index, port, state, reason, rtt, tries, reply bytes or None)
UdpVerdict = Callable[
    [int, int, results.PortState, results.Reason, float | None, int, bytes | None], None
]
PayloadSource = Callable[[int], Sequence[bytes]]

_MAX_EVENTS = 4096
_REPLY_KEEP = 512


def empty_payloads(port: int) -> Sequence[bytes]:
    """The fallback payload source: an empty datagram for every port."""
    return (b"",)


class UdpStats:
    """Counts of the UDP pass, and the hosts found to rate-limit ICMP with what was left unresolved."""

    __slots__ = ("own_datagrams", "paced_probes", "packets", "probes", "rate_limited_hosts", "retries", "unresolved")

    def __init__(self) -> None:
        self.probes = 0
        self.packets = 0
        self.retries = 0
        self.paced_probes = 0
        self.own_datagrams = 0  # our own probes received by another probe socket, and discarded
        self.rate_limited_hosts: dict[int, int] = {}
        self.unresolved: dict[int, int] = {}


# What reading an event decided.
_UNDECIDED, _DECIDED, _OWN_DATAGRAM = range(3)
_SELF_CONNECT_ATTEMPTS = 8


class _Probe:
    __slots__ = ("deadline", "host", "local", "port", "sent", "sock", "tries")

    def __init__(self, host: int, port: int, sock: socket.socket, local: tuple[str, int]) -> None:
        self.host = host
        self.port = port
        self.sock = sock
        self.local = local
        self.tries = 0
        self.sent = 0.0
        self.deadline = 0.0


class UdpScanner:
    """One UDP pass (plus the paced rate-limit pass) over targets x ports."""

    def __init__(
        self,
        targets_: Sequence[targets.Target],
        ports: Sequence[int],
        timing: plans.Timing,
        on_verdict: UdpVerdict,
        *,
        payloads: PayloadSource = empty_payloads,
        clock: pacing.Clock = time.monotonic,
        stop: threading.Event | None = None,
        icmp_interval: float = 1.0,
        rate_limit_budget: float = 60.0,
    ) -> None:
        self.targets = list(targets_)
        self.ports = list(ports)
        self.timing = timing
        self.on_verdict = on_verdict
        self.payloads = payloads
        self.clock = clock
        self.stop = stop
        self.icmp_interval = icmp_interval
        self.rate_limit_budget = rate_limit_budget
        self.concurrency = max(1, min(timing.concurrency, tcp_scanning.raise_fd_limit()))
        self.rtt = [pacing.estimator(timing) for _ in self.targets]
        self.bucket = (
            pacing.TokenBucket(timing.max_rate, clock) if timing.max_rate is not None else None
        )
        self.stats = UdpStats()
        # Local (address, port) of every probe socket -> the (address, port) it was connected to:
        # bounded by the ephemeral ports of this machine's source addresses, not by the probe count.
        self.own: dict[tuple[str, int], tuple[str, int]] = {}

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _open(self, host: int, port: int) -> _Probe | None:
        target = self.targets[host]
        family = target.family
        peer = (target.address, port)
        met_itself: list[socket.socket] = []  # held open so the kernel picks another source port
        try:
            for _ in range(_SELF_CONNECT_ATTEMPTS):
                sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
                icmp.enable(sock, family)
                try:
                    sock.connect(peer)
                    name = sock.getsockname()
                except OSError as exc:
                    sock.close()
                    reason = tcp_scanning.local_reason(exc.errno or 0)
                    self.on_verdict(host, port, results.PortState.FILTERED, reason, None, 0, None)
                    return None
                local = (str(name[0]), int(name[1]))
                if local != peer:
                    self.own[local] = peer
                    return _Probe(host, port, sock, local)
                met_itself.append(sock)
        finally:
            for sock_ in met_itself:
                sock_.close()
        self.on_verdict(host, port, results.PortState.FILTERED, results.Reason.LOCAL_ERROR, None, 0, None)
        return None

    def _reopen(self, probe: _Probe, now: float) -> _Probe | None:
        """A fresh socket (another source port) for a probe that received our own datagram."""
        self.stats.own_datagrams += 1
        again = self._open(probe.host, probe.port)  # before closing: the old port stays taken
        probe.sock.close()
        if again is not None:
            again.tries = probe.tries
            self._send(again, now, counted=False)
        return again

    def _send(self, probe: _Probe, now: float, *, counted: bool = True) -> None:
        options = self.payloads(probe.port) or (b"",)
        data = options[probe.tries % len(options)]
        try:
            probe.sock.send(data)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise
        if counted:
            probe.tries += 1
        probe.sent = now
        probe.deadline = now + self.rtt[probe.host].current
        self.stats.packets += 1
        if probe.tries == 1 and counted:
            self.stats.probes += 1

    def _read(self, probe: _Probe, event: int, now: float, verdict: UdpVerdict) -> int:
        """Turn an event into a verdict: _DECIDED, _UNDECIDED or _OWN_DATAGRAM (send again elsewhere)."""
        sock = probe.sock
        rtt = now - probe.sent
        if event & select.EPOLLIN:
            try:
                data = sock.recv(65535)
            except OSError:
                data = None
            if data is not None:
                if self.own.get((self.targets[probe.host].address, probe.port)) == probe.local:
                    return _OWN_DATAGRAM  # sent by our probe socket bound to the port we probe
                self.rtt[probe.host].observe(rtt)
                verdict(
                    probe.host, probe.port, results.PortState.OPEN,
                    results.Reason.UDP_RESPONSE, rtt, probe.tries, data[:_REPLY_KEEP],
                )
                return _DECIDED
        queued = [q for q in icmp.drain(sock) if q.is_icmp]
        if not queued:
            # Clear a pending socket error so the socket stops signalling.
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            return _UNDECIDED
        self.rtt[probe.host].observe(rtt)
        reason = queued[0].reason()
        state = (
            results.PortState.CLOSED
            if reason == results.Reason.PORT_UNREACH
            else results.PortState.FILTERED
        )
        verdict(probe.host, probe.port, state, reason, rtt, probe.tries, None)
        return _DECIDED

    def run(self) -> UdpStats:
        """Probe every (target, port); then pace the silent ports of rate-limiting hosts."""
        silent: dict[int, list[int]] = {}
        unreachable: set[int] = set()

        def first_pass_verdict(
            host: int, port: int, state: results.PortState, reason: results.Reason,
            rtt: float | None, tries: int, data: bytes | None,
        ) -> None:
            if reason not in (results.Reason.UDP_RESPONSE, results.Reason.NO_RESPONSE):
                unreachable.add(host)  # the host sends ICMP errors, so it may rate-limit them
            if state == results.PortState.OPEN_FILTERED:
                silent.setdefault(host, []).append(port)
                return
            self.on_verdict(host, port, state, reason, rtt, tries, data)

        probes = (
            (host, port) for port in self.ports for host in range(len(self.targets))
        )
        self._pass(probes, first_pass_verdict, self.timing.retries)
        limited = {host: ports for host, ports in silent.items() if host in unreachable}
        if limited and not self._stopped():
            self._paced_pass(limited)
        for host, ports in silent.items():
            if host in limited:
                continue
            for port in ports:
                self.on_verdict(
                    host, port, results.PortState.OPEN_FILTERED, results.Reason.NO_RESPONSE,
                    None, self.timing.retries + 1, None,
                )
        return self.stats

    def _pass(
        self,
        probes: Iterator[tuple[int, int]],
        verdict: UdpVerdict,
        retries: int,
    ) -> None:
        epoll = select.epoll()
        inflight: dict[int, _Probe] = {}
        timeouts: list[tuple[float, int, int]] = []
        exhausted = False

        def launch(probe: _Probe) -> None:
            fd = probe.sock.fileno()
            inflight[fd] = probe
            epoll.register(fd, select.EPOLLIN)
            heapq.heappush(timeouts, (probe.deadline, probe.tries, fd))

        try:
            while True:
                if self._stopped():
                    break
                now = self.clock()
                while not exhausted and len(inflight) < self.concurrency:
                    if self.bucket is not None and not self.bucket.take():
                        break
                    item = next(probes, None)
                    if item is None:
                        exhausted = True
                        break
                    probe = self._open(*item)
                    if probe is None:
                        continue
                    self._send(probe, now)
                    launch(probe)
                if exhausted and not inflight:
                    break
                wait = timeouts[0][0] - now if timeouts else 0.01
                if self.bucket is not None and not exhausted and len(inflight) < self.concurrency:
                    wait = min(wait, self.bucket.batch_wait())  # one wake-up per burst of tokens
                events = epoll.poll(max(0.0, min(wait, 0.05)), _MAX_EVENTS)
                now = self.clock()
                for fd, event in events:
                    probe = inflight.get(fd)
                    if probe is None:
                        continue
                    outcome = self._read(probe, event, now, verdict)
                    if outcome == _UNDECIDED:
                        continue
                    del inflight[fd]
                    if outcome == _DECIDED:
                        probe.sock.close()
                        continue
                    again = self._reopen(probe, now)
                    if again is not None:
                        launch(again)
                if len(events) >= _MAX_EVENTS:
                    continue
                while timeouts and timeouts[0][0] <= now:
                    _, tries, fd = heapq.heappop(timeouts)
                    probe = inflight.get(fd)
                    if probe is None or probe.tries != tries:
                        continue
                    if probe.tries <= retries:
                        self.stats.retries += 1
                        self._send(probe, now)
                        heapq.heappush(timeouts, (probe.deadline, probe.tries, fd))
                    else:
                        del inflight[fd]
                        probe.sock.close()
                        verdict(
                            probe.host, probe.port, results.PortState.OPEN_FILTERED,
                            results.Reason.NO_RESPONSE, None, probe.tries, None,
                        )
        finally:
            for probe in inflight.values():
                probe.sock.close()
            epoll.close()

    def _paced_pass(self, limited: dict[int, list[int]]) -> None:
        """Re-probe silent ports of rate-limiting hosts, one at a time per host."""
        epoll = select.epoll()
        start = self.clock()
        budget_end = start + self.rate_limit_budget
        queues = {host: list(ports) for host, ports in limited.items()}
        ready_at = {host: start + self.icmp_interval for host in queues}
        current: dict[int, _Probe] = {}
        by_fd: dict[int, _Probe] = {}
        confirmed_silent: dict[int, int] = {}
        for host, ports in queues.items():
            self.stats.rate_limited_hosts[host] = len(ports)

        try:
            while (queues or current) and not self._stopped():
                now = self.clock()
                if now >= budget_end:
                    break
                for host in list(queues):
                    if host in current or ready_at[host] > now:
                        continue
                    if not queues[host]:
                        del queues[host]
                        continue
                    port = queues[host].pop(0)
                    probe = self._open(host, port)
                    if probe is None:
                        continue
                    self._send(probe, now)
                    self.stats.paced_probes += 1
                    current[host] = probe
                    by_fd[probe.sock.fileno()] = probe
                    epoll.register(probe.sock.fileno(), select.EPOLLIN)
                deadlines = [p.deadline for p in current.values()] + [
                    ready_at[h] for h in queues if h not in current
                ]
                wait = (min(deadlines) - now) if deadlines else 0.0
                events = epoll.poll(max(0.0, min(wait, 0.05)))
                now = self.clock()
                for fd, event in events:
                    probe = by_fd.get(fd)
                    if probe is None:
                        continue
                    outcome = self._read(probe, event, now, self.on_verdict)
                    if outcome == _UNDECIDED:
                        continue
                    del by_fd[fd]
                    del current[probe.host]
                    if outcome == _OWN_DATAGRAM:
                        again = self._reopen(probe, now)
                        if again is not None:
                            current[probe.host] = by_fd[again.sock.fileno()] = again
                            epoll.register(again.sock.fileno(), select.EPOLLIN)
                        continue
                    probe.sock.close()
                    # The host spent a token on this answer: wait for the next one.
                    ready_at[probe.host] = now + self.icmp_interval
                for host, probe in list(current.items()):
                    if probe.deadline > now:
                        continue
                    # Silent while the host had a token: genuinely open|filtered.
                    del current[host]
                    del by_fd[probe.sock.fileno()]
                    probe.sock.close()
                    confirmed_silent[host] = confirmed_silent.get(host, 0) + 1
                    self.on_verdict(
                        host, probe.port, results.PortState.OPEN_FILTERED,
                        results.Reason.NO_RESPONSE, None, self.timing.retries + 2, None,
                    )
                    ready_at[host] = now
        finally:
            for probe in current.values():
                probe.sock.close()
            epoll.close()
        # Whatever the budget did not reach stays open|filtered, and the report says why.
        for host, ports in queues.items():
            left = list(ports)
            if host in current:
                left.append(current[host].port)
            for port in left:
                self.on_verdict(
                    host, port, results.PortState.OPEN_FILTERED, results.Reason.NO_RESPONSE,
                    None, self.timing.retries + 1, None,
                )
            if left:
                self.stats.unresolved[host] = len(left)

