"""TCP connect scanning on non-blocking sockets driven by one epoll loop.

The hot path is deliberately not one coroutine per port: a fixed set of
non-blocking sockets is kept in flight, each registered once with epoll.  A
socket whose connect was refused (RST) is reused for the next probe: Linux lets
a TCP socket in the CLOSE state connect again, which saves the socket/close/
epoll_ctl calls that dominate a loopback scan.

Verdicts, as nmap's connect scan gives them (plus precise ICMP reasons):

* handshake completed -> open / syn-ack (unless the socket met itself, below)
* RST -> closed / conn-refused
* ICMP unreachable (read exactly from the error queue) -> filtered / <icmp reason>
* silence after ``retries + 1`` tries -> filtered / no-response

A loopback connect to a free ephemeral port can meet itself (TCP simultaneous
open); such a socket has equal local and peer addresses and is reported as
closed / self-connect, never as open.

Limits: concurrency is bounded by the open-file limit (the soft limit is raised
to the hard one), by the optional global and per-host packet rates, and by the
configured concurrency.  Connect scans cannot see TTLs, so ``reason_ttl`` is
left empty.
"""

from __future__ import annotations

import collections
import errno
import heapq
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

from portolan import errors
from portolan.engine import icmp, pacing, plans, targets
from portolan.models import results

# (target index, port, state, reason, rtt seconds or None, tries)
Verdict = Callable[[int, int, results.PortState, results.Reason, float | None, int], None]

_LINGER_RESET = struct.pack("ii", 1, 0)
_FD_RESERVE = 64
_MAX_EVENTS = 4096
_RETRYABLE_LOCAL = frozenset(
    {errno.EADDRNOTAVAIL, errno.ECONNABORTED, errno.EALREADY, errno.EISCONN, errno.EAGAIN,
     errno.ENOBUFS, errno.EINTR}
)
_OPEN = results.PortState.OPEN
_CLOSED = results.PortState.CLOSED
_FILTERED = results.PortState.FILTERED


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the usable probe budget."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - _FD_RESERVE)


class TcpStats:
    """What a TCP pass did, for summaries and benchmarks."""

    __slots__ = ("local_retries", "packets", "probes", "retries")

    def __init__(self, probes: int = 0, packets: int = 0, retries: int = 0, local_retries: int = 0) -> None:
        self.probes = probes
        self.packets = packets
        self.retries = retries
        self.local_retries = local_retries

    def __repr__(self) -> str:
        return (f"TcpStats(probes={self.probes}, packets={self.packets}, retries={self.retries}, "
                f"local_retries={self.local_retries})")


class _Host:
    __slots__ = ("bucket", "family", "next_slot", "rtt", "sockaddr")

    def __init__(
        self,
        target: targets.Target,
        timing: plans.Timing,
        clock: pacing.Clock,
        paced_start: bool,
    ) -> None:
        self.family = target.family
        self.sockaddr: tuple[str, int] | tuple[str, int, int, int] = (
            (target.address, 0, 0, 0) if self.family == socket.AF_INET6 else (target.address, 0)
        )
        self.rtt = pacing.estimator(timing)
        self.bucket = (
            pacing.TokenBucket(timing.max_host_rate, clock, start_empty=paced_start)
            if timing.max_host_rate is not None
            else None
        )
        self.next_slot = 0.0  # when the next probe deferred by the host's cap is due


class _Slot:
    __slots__ = ("family", "host", "port", "sent", "seq", "sock", "tries")

    def __init__(self, sock: socket.socket, family: socket.AddressFamily) -> None:
        self.sock = sock
        self.family = family
        self.host = 0
        self.port = 0
        self.tries = 0
        self.sent = 0.0
        self.seq = 0


class TcpConnectScanner:
    """One TCP connect pass over targets x ports, reporting each verdict to a callback."""

    def __init__(
        self,
        targets_: Sequence[targets.Target],
        ports: Sequence[int],
        timing: plans.Timing,
        on_verdict: Verdict,
        *,
        clock: pacing.Clock = time.monotonic,
        stop: threading.Event | None = None,
        paced_start: bool = False,
    ) -> None:
        self.targets = list(targets_)
        self.ports = list(ports)
        self.timing = timing
        self.on_verdict = on_verdict
        self.clock = clock
        self.stop = stop
        self.hosts = [_Host(t, timing, clock, paced_start) for t in self.targets]
        self.bucket = (
            pacing.TokenBucket(timing.max_rate, clock) if timing.max_rate is not None else None
        )
        self.concurrency = max(1, min(timing.concurrency, raise_fd_limit()))
        self.stats = TcpStats()

    # -- probe supply -----------------------------------------------------------------------

    def _fresh(self) -> collections.abc.Iterator[tuple[int, int, int]]:
        # Port-major order spreads the load over hosts, so one slow host never stalls a run.
        count = len(self.targets)
        for port in self.ports:
            for index in range(count):
                yield index, port, 0

    def run(self) -> TcpStats:
        """Probe every (target, port) and report each verdict once; returns counters."""
        if not self.targets or not self.ports:
            return self.stats
        epoll = select.epoll()
        try:
            _Loop(self, epoll).run()
        finally:
            epoll.close()
        return self.stats


# Outcomes of driving a socket.
# _SPENT: a verdict was given but the socket cannot be reused.
_STARTED, _NONE_LEFT, _WAITING, _BROKEN, _OTHER_FAMILY, _SPENT = range(6)


class _Loop:
    """The state of one pass: probe supply, sockets in flight, timeouts."""

    def __init__(self, scanner: TcpConnectScanner, epoll: select.epoll) -> None:
        self.scanner = scanner
        self.epoll = epoll
        self.clock = scanner.clock
        self.hosts = scanner.hosts
        self.on_verdict = scanner.on_verdict
        self.stats = scanner.stats
        self.concurrency = scanner.concurrency
        self.fresh = scanner._fresh()
        self.exhausted = False
        self.retry_queue: collections.deque[tuple[int, int, int]] = collections.deque()
        self.deferred: list[tuple[float, int, int, int]] = []  # (ready, host, port, tries)
        self.slots: dict[int, _Slot] = {}
        self.timeouts: list[tuple[float, int, int]] = []  # (deadline, seq, fd)
        self.seq = 0
        self.rate_limited = scanner.bucket is not None or any(
            h.bucket is not None for h in self.hosts
        )
        self.paused_until = 0.0  # the global cap ran dry: no new probe before this

    def next_probe(self, now: float) -> tuple[int, int, int] | None:
        deferred = self.deferred
        if deferred and deferred[0][0] <= now:
            _, index, port, tries = heapq.heappop(deferred)
            return index, port, tries
        if self.retry_queue:
            return self.retry_queue.popleft()
        if self.exhausted:
            return None
        probe = next(self.fresh, None)
        if probe is None:
            self.exhausted = True
        return probe

    def pending(self) -> bool:
        return bool(self.retry_queue or self.deferred or not self.exhausted)

    def admit(self, probe: tuple[int, int, int], now: float) -> bool:
        """Check the rate caps: False puts the probe back (global cap) or defers it to its host's next slot."""
        host = self.hosts[probe[0]]
        bucket = self.scanner.bucket
        if bucket is not None and bucket.wait_time() > 0:
            # Sleep until a burst's worth of tokens is back, rather than wake once per token.
            self.retry_queue.appendleft(probe)
            self.paused_until = now + bucket.batch_wait()
            return False
        if host.bucket is not None:
            wait = host.bucket.wait_time()
            if wait > 0:
                # Each deferred probe of this host gets its own slot, one token apart, so a
                # refill wakes only the probe whose token it is.
                ready = max(now + wait, host.next_slot)
                host.next_slot = ready + 1.0 / host.bucket.rate
                heapq.heappush(self.deferred, (ready, probe[0], probe[1], probe[2]))
                return False
            host.bucket.take()
        if bucket is not None:
            bucket.take()
        return True

    def drive(self, slot: _Slot, registered: bool) -> int:
        """Start the next admissible probe on this slot's socket."""
        sock = slot.sock
        family = slot.family
        hosts = self.hosts
        stats = self.stats
        on_verdict = self.on_verdict
        clock = self.clock
        refused = False
        fresh = self.fresh
        rate_limited = self.rate_limited
        now = 0.0
        while True:
            # The common case (no rate caps, nothing deferred or to retry) reads the next probe
            # straight from the supply and the clock only when a probe stays in flight.
            if rate_limited or self.deferred or self.retry_queue or self.exhausted:
                now = clock()
                if self.paused_until > now:
                    return _WAITING
                probe = self.next_probe(now)
                if probe is None:
                    return _NONE_LEFT
            else:
                probe = next(fresh, None)
                if probe is None:
                    self.exhausted = True
                    return _NONE_LEFT
            index, port, tries = probe
            host = hosts[index]
            if host.family != family:
                self.retry_queue.appendleft(probe)
                return _OTHER_FAMILY
            if self.rate_limited and not self.admit(probe, now):
                if self.paused_until > now or len(self.deferred) >= self.concurrency:
                    return _WAITING
                continue
            address = (
                (host.sockaddr[0], port, 0, 0)
                if family == socket.AF_INET6
                else (host.sockaddr[0], port)
            )
            err = sock.connect_ex(address)
            if err == errno.ECONNABORTED and (registered or refused):
                # A reused socket: the first connect after a refusal resets it, the next one goes.
                err = sock.connect_ex(address)
            stats.packets += 1
            if tries == 0:
                stats.probes += 1
            tries += 1
            if err == errno.EINPROGRESS:
                # A RST from a local stack (loopback, a veth peer) is often processed before
                # connect() returns: asking again saves an epoll round trip per closed port.  A
                # second connect() reports what is known (EALREADY: still in progress, 0:
                # connected, else the pending error) and, after a refusal, leaves the socket
                # ready for the next port (getsockopt(SO_ERROR) here would cost a third call,
                # an ECONNABORTED connect, before the socket could be reused).
                early = sock.connect_ex(address)
                if early == errno.ECONNREFUSED:
                    refused = True
                    on_verdict(index, port, _CLOSED, results.Reason.CONN_REFUSED, 0.0, tries)
                    continue
                if early == errno.EALREADY:
                    early = 0
                elif early == 0:
                    err = 0
                else:
                    self._failed(sock, host, index, port, early, None, tries)
                    return _SPENT
            if err == errno.EINPROGRESS or err == 0:
                if not rate_limited:
                    now = clock()
                self.seq += 1
                slot.host = index
                slot.port = port
                slot.tries = tries
                slot.sent = now
                slot.seq = self.seq
                fd = sock.fileno()
                heapq.heappush(self.timeouts, (now + host.rtt.current, self.seq, fd))
                if not registered:
                    self.epoll.register(fd, select.EPOLLOUT)
                return _STARTED
            if err == errno.ECONNREFUSED:
                refused = True
                on_verdict(index, port, _CLOSED, results.Reason.CONN_REFUSED, 0.0, tries)
                continue
            if err in _RETRYABLE_LOCAL:
                stats.local_retries += 1
                self.retry_queue.appendleft((index, port, tries - 1))
                return _BROKEN
            check_error(err)
            # ENETUNREACH and friends straight from the local stack.
            on_verdict(index, port, _FILTERED, local_reason(err), None, tries)

    def retire(self, slot: _Slot) -> None:
        self.slots.pop(slot.sock.fileno(), None)
        slot.sock.close()

    def fill(self) -> None:
        """Open sockets until the concurrency bound or the probe supply is reached."""
        while len(self.slots) < self.concurrency and self.pending():
            if self.paused_until > self.clock():
                return
            probe = self.next_probe(self.clock())
            if probe is None:
                return
            self.retry_queue.appendleft(probe)
            family = self.hosts[probe[0]].family
            try:
                sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self.slots:
                    self.concurrency = max(1, len(self.slots))
                    return
                raise errors.ScanError(f"cannot open a socket: {exc}") from exc
            icmp.enable(sock, family)
            slot = _Slot(sock, family)
            outcome = self.drive(slot, registered=False)
            if outcome == _STARTED:
                self.slots[sock.fileno()] = slot
                continue
            sock.close()
            if outcome not in (_OTHER_FAMILY, _SPENT):
                return

    def run(self) -> None:
        stop = self.scanner.stop
        while True:
            if stop is not None and stop.is_set():
                break
            self.fill()
            if not self.slots:
                if not self.pending():
                    break
                now = self.clock()
                due = [self.paused_until] if self.paused_until > now else []
                if self.deferred:
                    due.append(self.deferred[0][0])
                pause = min(due) - now if due else 0.001
                self.epoll.poll(max(0.0, min(pause, 0.05)))
                continue
            now = self.clock()
            wait = self.timeouts[0][0] - now if self.timeouts else 0.05
            if self.deferred:
                wait = min(wait, self.deferred[0][0] - now)
            if self.paused_until > now:
                wait = min(wait, self.paused_until - now)
            events = self.epoll.poll(max(0.0, min(wait, 0.05)), _MAX_EVENTS)
            polled = self.clock()
            for fd, event in events:
                slot = self.slots.get(fd)
                if slot is not None:
                    self.complete(slot, event, polled)
            if len(events) < _MAX_EVENTS:
                # Only when the poll drained every ready socket is silence really silence.
                self.expire(polled)
        for slot in list(self.slots.values()):
            self.retire(slot)

    def complete(self, slot: _Slot, event: int, now: float) -> None:
        """Turn a socket event into a verdict."""
        sock = slot.sock
        if event & select.EPOLLERR:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                icmp.drain(sock)  # a stale queued error from an earlier probe on this socket
                return
        else:
            err = 0
        index = slot.host
        host = self.hosts[index]
        rtt = now - slot.sent
        slot.seq = 0
        if err == errno.ECONNREFUSED:
            host.rtt.observe(rtt)
            self.on_verdict(index, slot.port, _CLOSED, results.Reason.CONN_REFUSED, rtt, slot.tries)
            if self.drive(slot, registered=True) != _STARTED:
                self.retire(slot)
            return
        if err == 0:
            try:
                met_itself = sock.getsockname() == sock.getpeername()
            except OSError:
                met_itself = False
            if met_itself:
                reason = results.Reason.SELF_CONNECT
                self.on_verdict(index, slot.port, _CLOSED, reason, rtt, slot.tries)
            else:
                host.rtt.observe(rtt)
                self.on_verdict(index, slot.port, _OPEN, results.Reason.SYN_ACK, rtt, slot.tries)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self.retire(slot)
            return
        self._failed(sock, host, index, slot.port, err, rtt, slot.tries)
        self.retire(slot)

    def _failed(self, sock: socket.socket, host: _Host, index: int, port: int, err: int, rtt: float | None,
                tries: int) -> None:
        """A connect that failed other than by refusal: an ICMP error if one is queued, else the local error."""
        queued = [q for q in icmp.drain(sock) if q.is_icmp]
        if queued:
            if rtt is not None:  # an answer known before connect() returned says nothing about the path's RTT
                host.rtt.observe(rtt)
            self.on_verdict(index, port, _FILTERED, queued[0].reason(), rtt if rtt is not None else 0.0, tries)
        else:
            self.on_verdict(index, port, _FILTERED, local_reason(err), None, tries)

    def expire(self, now: float) -> None:
        """Retry or give up on probes whose timeout passed in silence."""
        timeouts = self.timeouts
        retries = self.scanner.timing.retries
        while timeouts and timeouts[0][0] <= now:
            _, probe_seq, fd = heapq.heappop(timeouts)
            slot = self.slots.get(fd)
            if slot is None or slot.seq != probe_seq:
                continue
            slot.seq = 0
            self.retire(slot)
            if slot.tries <= retries:
                self.stats.retries += 1
                self.retry_queue.append((slot.host, slot.port, slot.tries))
            else:
                self.on_verdict(
                    slot.host, slot.port, _FILTERED, results.Reason.NO_RESPONSE, None, slot.tries
                )


def local_reason(err: int) -> results.Reason:
    """The reason for a probe the local stack refused (errno of connect or send)."""
    if err == errno.ENETUNREACH:
        return results.Reason.NET_UNREACH
    if err in (errno.EHOSTUNREACH, errno.EHOSTDOWN):
        return results.Reason.HOST_UNREACH
    if err in (errno.EACCES, errno.EPERM):
        return results.Reason.ADMIN_PROHIBITED
    return results.Reason.LOCAL_ERROR


def check_error(err: int) -> None:
    """Raise ScanError for errors that mean the scan itself cannot go on."""
    if err in (errno.EMFILE, errno.ENFILE):
        raise errors.ScanError("out of file descriptors; lower timing.concurrency")
