"""SYN scanning over raw sockets (needs CAP_NET_RAW), stateless replies like ZMap/masscan.

Probes are one prebuilt 20-byte TCP SYN template, patched per probe (destination port,
sequence number, checksum) and sent on a raw socket (the kernel adds the IP header; for IPv6
it also fills in the checksum, IPV6_CHECKSUM); IPv4 SYNs leave in batches (``sendmmsg``).
IPv4 answers are read on the sending raw socket itself and on a raw ICMP socket, IPv6 ones on
an AF_PACKET socket; a classic BPF program on each passes only TCP segments to our source port
and ICMP errors, so Python sees almost nothing else.  Replies are matched without per-probe
hashing: the sequence number is a random per-address base plus the port (:class:`Cookies`),
so a SYN-ACK or RST whose acknowledgement is that + 1 — or an ICMP error quoting our SYN with
that sequence — belongs to our probe.  Only retry bookkeeping is kept per probe.

Verdicts are the connect engine's, with raw-mode reasons: SYN-ACK → open/syn-ack (with the
reply's TTL), RST → closed/reset, ICMP unreachable → filtered/<reason>, silence after the
retries → filtered/no-response.  The kernel answers each SYN-ACK with a RST because no socket
owns the connection; that is harmless here.

Limits: one address family per scanner (the caller runs one per family); IPv6 replies with
extension headers before TCP are not recognised; one fixed source port per run.  IPv4 answers
are seen after this host's own firewall (raw sockets get what is delivered locally, where
nmap's packet capture sees the wire): a stateful INPUT policy passes them as replies to our
SYNs, but a stateless default-deny one would turn them into filtered/no-response.
"""

from __future__ import annotations

import errno
import heapq
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

from portolan import errors
from portolan.engine import batching, collecting, icmp, pacing, plans, targets, tcp_scanning
from portolan.models import results
from portolan.wire import bpf

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IPV6_CHECKSUM = 7
PACKET_OUTGOING = 4
_SKF_AD_PKTTYPE = (-0x1000 + 4) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_PKTTYPE: a classic BPF ancillary load
_TCP = struct.Struct("!HHIIBBHHH")  # sport dport seq ack offset flags window checksum urgent
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
# The version/length byte (0), ttl (8), protocol (9), source address (12), ports (20, 22), ack (28) and
# flags (33) of an answer, read as if it were IPv4 without options carrying TCP (checked after).
_REPLY4 = struct.Struct("!B7xBB2x4s4xHH4xIxB")
_CLOSED, _RESET = results.PortState.CLOSED, results.Reason.RESET
_OPEN, _SYN_ACK = results.PortState.OPEN, results.Reason.SYN_ACK


def _bpf(source_port: int) -> bytes:
    """Accept IPv4 TCP to ``source_port`` (unfragmented) and ICMP; drop everything else."""
    program = [
        (0x30, 0, 0, 9),  # ldb [9]           protocol
        (0x15, 0, 5, 6),  # jeq #6 (tcp)      else -> icmp check
        (0x28, 0, 0, 6),  # ldh [6]           flags + fragment offset
        (0x45, 4, 0, 0x1FFF),  # jset #0x1fff  -> drop
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)  IP header length
        (0x48, 0, 0, 2),  # ldh [x+2]         TCP destination port
        (0x15, 2, 1, source_port),  # jeq #sport -> accept, else drop
        (0x15, 1, 0, 1),  # icmp check: jeq #1 -> accept
        (0x06, 0, 0, 0),  # drop
        (0x06, 0, 0, 0xFFFF),  # accept
    ]
    # Jump offsets count from the next instruction.
    return b"".join(struct.pack("HBBI", code, jt, jf, k) for code, jt, jf, k in program)


def _bpf6(source_port: int) -> bytes:
    """Accept incoming IPv6 TCP to ``source_port`` right after the fixed header, and ICMPv6; drop the rest."""
    program = [
        (0x20, 0, 0, _SKF_AD_PKTTYPE),  # ld pkttype    (ancillary: the packet socket's direction)
        (0x15, 5, 0, PACKET_OUTGOING),  # jeq #outgoing -> drop (what we send, seen on its way out)
        (0x30, 0, 0, 6),  # ldb [6]           next header
        (0x15, 0, 2, 6),  # jeq #6 (tcp)      else -> icmpv6 check
        (0x28, 0, 0, 42),  # ldh [40+2]       TCP destination port
        (0x15, 2, 1, source_port),  # jeq #sport -> accept, else drop
        (0x15, 1, 0, 58),  # icmpv6 check: jeq #58 -> accept
        (0x06, 0, 0, 0),  # drop
        (0x06, 0, 0, 0xFFFF),  # accept
    ]
    return b"".join(struct.pack("HBBI", code, jt, jf, k) for code, jt, jf, k in program)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def source_address(destination: str) -> str:
    """The local address the kernel would use towards ``destination`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((destination, 9))
        return str(probe.getsockname()[0])


CookieOf = Callable[[bytes, int], int]  # (address, port) -> the sequence number of our SYN to it
_MASK = 0xFFFFFFFF


class Cookies:
    """Sequence numbers for (address, port) pairs: a random 32-bit base per address, plus the port.

    An answer's acknowledgement minus one, minus its sender's base, gives back the port it
    answers, so matching needs neither a hash nor per-probe state; an off-path sender cannot
    guess a base (32 random bits per address and scan), and one on the path sees the probes anyway.
    """

    def __init__(self) -> None:
        self._bases: dict[bytes, int] = {}

    def base(self, address: bytes) -> int:
        found = self._bases.get(address)
        if found is None:
            found = self._bases[address] = int.from_bytes(os.urandom(4), "big")
        return found

    def __call__(self, address: bytes, port: int) -> int:
        return (self.base(address) + port) & _MASK


def syn_available(family: socket.AddressFamily = socket.AF_INET) -> str | None:
    """None if the sockets a SYN pass of this family needs can be opened here, else why not.

    IPv4 sends and receives on one raw TCP socket and hears ICMP errors on a raw ICMP socket.
    IPv6 also needs a packet socket (an IPv6 raw socket does not hand over the header with the
    hop limit); a policy or kernel may refuse packet sockets alone, so it is tried too.
    """
    try:
        socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP).close()
        if family == socket.AF_INET6:
            # Closing a packet socket waits an RCU grace period (~10 ms): only IPv6 pays it.
            socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6)).close()
        else:
            socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return "SYN scanning needs CAP_NET_RAW"
    except OSError as exc:
        return f"raw sockets unavailable: {exc}"
    return None


_TAKE_MOST = 4096  # answers taken per wake-up before the loop looks at its deadlines again
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)  # ret #0: a socket that only sends hears nothing


class SynScanner:
    """One SYN pass over targets x ports of one address family, with the connect engine's verdict callback.

    Probes are keyed ``host << 16 | port``.  SYNs leave in rounds: each round fills the window
    (retries first), and a host's probes of a round share one deadline (that host's current
    timeout) instead of one heap entry each.  RTT samples are taken once per host per batch of
    answers (the first answer read, the one that waited longest: timeouts lean long, never short),
    not from every answer.
    """

    def __init__(
        self,
        targets_: Sequence[targets.Target],
        ports: Sequence[int],
        timing: plans.Timing,
        on_verdict: tcp_scanning.Verdict,
        *,
        clock: pacing.Clock = time.monotonic,
        stop: threading.Event | None = None,
        cookies: Cookies | None = None,
        ttl_sink: Callable[[int, int, int], None] | None = None,
        count_closed: Callable[[int, int], None] | None = None,
        in_full: int = collecting.COLLAPSE_ABOVE + 1,
    ) -> None:
        families = {t.family for t in targets_}
        if len(families) > 1:
            raise errors.SpecError("one SYN scanner per address family: split IPv4 and IPv6 targets")
        self.family = families.pop() if families else socket.AF_INET
        self.targets = list(targets_)
        self.ports = list(ports)
        self.timing = timing
        self.on_verdict = on_verdict
        self.clock = clock
        self.stop = stop
        self.cookies = cookies or Cookies()
        # With ``count_closed``, a host's RST answers past its first ``in_full`` are counted and handed
        # over as (host, count) after each batch of answers, not one verdict each (the collector has
        # collapsed the group by then); their TTLs are not kept either.
        self.count_closed = count_closed
        self.in_full = in_full
        self.ttl_sink = ttl_sink
        self.source_port = 40000 + int.from_bytes(os.urandom(2), "big") % 20000
        self.packets = 0
        self._addressing: list[tuple[str, bytes, int | None]] = []
        self._bases: list[int] = []
        self._partials: list[int] = []  # IPv4: each host's precomputed part of the TCP checksum
        self._index_of: dict[bytes, int] = {}
        self._pending: dict[int, tuple[int, float]] = {}  # host << 16 | port -> (tries, sent)
        self._rtt: list[pacing.RttEstimator] = []
        self._closed_seen: list[int] = []

    def run(self) -> int:
        """Send every SYN and take every answer; returns the packets sent."""
        v6 = self.family == socket.AF_INET6
        try:
            sender = socket.socket(self.family, socket.SOCK_RAW, socket.IPPROTO_TCP)
        except PermissionError as exc:
            raise errors.ScanError("SYN scanning needs CAP_NET_RAW") from exc
        except OSError as exc:
            raise errors.ScanError(f"raw sockets unavailable: {exc}") from exc
        receivers: list[socket.socket] = []
        try:
            if v6:
                # An IPv6 raw socket hands over TCP without the IPv6 header (no hop limit): answers
                # are read on a packet socket, and the sender hears nothing.
                receivers.append(socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6)))
                bpf.attach(sender, _DROP_ALL)
                bpf.attach(receivers[0], _bpf6(self.source_port))
                sender.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 16)  # the kernel sums the TCP header
            else:
                # IPv4 raw sockets hand over the IP header: the sender reads the TCP answers itself
                # (no packet socket, whose close waits an RCU grace period), a raw ICMP socket the errors.
                receivers += [sender, socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)]
                for receiver in receivers:
                    bpf.attach(receiver, _bpf(self.source_port))
        except OSError as exc:
            for sock in (sender, *receivers):
                sock.close()
            if isinstance(exc, PermissionError):
                raise errors.ScanError("SYN scanning needs CAP_NET_RAW") from exc
            kind = "packet sockets" if v6 else "raw sockets"
            raise errors.ScanError(f"{kind} unavailable: {exc}") from exc
        try:
            for receiver in receivers:
                # Answers arrive in bursts as fast as SYNs leave; the default ~200 KiB overflows.
                _large_receive_buffer(receiver, 8 << 20)
                receiver.setblocking(False)
                while True:  # drop what arrived before the filter was attached
                    try:
                        receiver.recv(256)
                    except BlockingIOError:
                        break
            sender.setblocking(False)
            self._loop(sender, receivers)
        finally:
            for sock in {sender, *receivers}:
                sock.close()
        return self.packets

    def _prepare(self) -> None:
        """Per-host state of a pass: addresses, sequence bases and the checksums' precomputed parts."""
        self._index_of = {socket.inet_pton(self.family, t.address): i for i, t in enumerate(self.targets)}
        self._addressing = [self._address_parts(t.address) for t in self.targets]
        self._bases = [self.cookies.base(packed) for _, packed, _ in self._addressing]
        self._partials = [partial or 0 for _, _, partial in self._addressing]

    def _loop(self, sender: socket.socket, receivers: list[socket.socket]) -> None:
        family = self.family
        self._prepare()
        self._closed_seen = [0] * len(self.targets)  # RST answers per host, for count_closed
        rtt = self._rtt = [pacing.estimator(self.timing) for _ in self.targets]
        bucket = pacing.TokenBucket(self.timing.max_rate, self.clock) if self.timing.max_rate else None
        pending = self._pending = {}
        # Each host's SYNs of a round, sent together: (deadline, entry number, sent, keys).
        deadlines: list[tuple[float, int, float, list[int]]] = []
        rounds = 0
        queue = [h << 16 | p for p in reversed(self.ports) for h in reversed(range(len(self.targets)))]
        retry: list[tuple[int, int]] = []  # (key, tries so far)
        epoll = select.epoll()
        readers: dict[int, socket.socket] = {}
        for receiver in receivers:
            epoll.register(receiver.fileno(), select.EPOLLIN)
            readers[receiver.fileno()] = receiver
        window = max(1, self.timing.concurrency)
        batch: batching.Batch | None = None
        if family == socket.AF_INET and batching.available():  # IPv4: many SYNs per system call
            batch = batching.Batch(sender, [t.address for t in self.targets], size=max(1, min(256, window)))
        one_host = len(self.targets) == 1
        retries = self.timing.retries
        try:
            while (queue or retry or pending) and not (self.stop and self.stop.is_set()):
                now = self.clock()
                room = window - len(pending)
                if room > 0 and (queue or retry):
                    sent_keys = self._send_round(sender, batch, queue, retry, room, now, bucket)
                    if sent_keys and one_host:
                        rounds += 1
                        heapq.heappush(deadlines, (now + rtt[0].current, rounds, now, sent_keys))
                    elif sent_keys:  # each host's probes of the round wait that host's timeout
                        by_host: dict[int, list[int]] = {}
                        for key in sent_keys:
                            by_host.setdefault(key >> 16, []).append(key)
                        for host, keys in by_host.items():
                            rounds += 1
                            heapq.heappush(deadlines, (now + rtt[host].current, rounds, now, keys))
                wait = deadlines[0][0] - now if deadlines else 0.01
                if bucket is not None and (queue or retry) and len(pending) < window:
                    wait = min(wait, bucket.batch_wait())
                # While probes wait to be sent, take only the answers that make room for them (the rest
                # wait in the socket's buffer): SYNs leave as early as the window allows.
                waiting = len(queue) + len(retry)
                limit = max(256, min(_TAKE_MOST, waiting)) if waiting else _TAKE_MOST
                for fd, _ in epoll.poll(max(0.0, min(wait, 0.02))):
                    self._receive(readers[fd], limit)
                now = self.clock()
                while deadlines and deadlines[0][0] <= now:
                    _, _, sent, keys = heapq.heappop(deadlines)
                    for key in keys:
                        entry = pending.get(key)
                        if entry is None or entry[1] != sent:
                            continue  # answered, or sent again in a later round
                        del pending[key]
                        tries = entry[0]
                        if tries <= retries:
                            retry.append((key, tries))
                        else:
                            self.on_verdict(key >> 16, key & 0xFFFF, results.PortState.FILTERED,
                                            results.Reason.NO_RESPONSE, None, tries)
        finally:
            epoll.close()

    def _send_round(
        self,
        sender: socket.socket,
        batch: batching.Batch | None,
        queue: list[int],
        retry: list[tuple[int, int]],
        room: int,
        now: float,
        bucket: pacing.TokenBucket | None,
    ) -> list[int]:
        """Send up to ``room`` SYNs, retries first; returns the keys sent (refused ones already have a verdict)."""
        pending = self._pending
        sent_keys: list[int] = []
        if batch is None:
            while (queue or retry) and room > 0:
                if bucket is not None and not bucket.take():
                    break
                key, tries = retry.pop() if retry else (queue.pop(), 0)
                room -= 1
                if self._send(sender, key >> 16, key & 0xFFFF):
                    pending[key] = (tries + 1, now)
                    sent_keys.append(key)
            return sent_keys
        source_port, pack_into, buffer, size = self.source_port, _TCP.pack_into, batch.buffer, batch.size
        queued: list[int] = []
        # Retries, and every probe of a rate-capped scan, one at a time; then fresh probes in bulk.
        while (retry or (bucket is not None and queue)) and room > 0:
            if bucket is not None and not bucket.take():
                break
            key, tries = retry.pop() if retry else (queue.pop(), 0)
            room -= 1
            host, port = key >> 16, key & 0xFFFF
            seq, checksum = self._seq_and_checksum(host, port)
            pack_into(buffer, batch.queue(host), source_port, port, seq, 0, 0x50, _SYN, 64240, checksum, 0)
            pending[key] = (tries + 1, now)
            queued.append(key)
            if batch.count >= size:
                sent_keys += self._flush(batch, queued)
        if batch.count:
            sent_keys += self._flush(batch, queued)
        if bucket is None and queue and room > 0:
            sent_keys += self._send_fresh(batch, queue, room, now)
        return sent_keys

    def _send_fresh(self, batch: batching.Batch, queue: list[int], room: int, now: float) -> list[int]:
        """Send the next ``room`` fresh probes from the end of ``queue`` in full batches (a SYN scan's hot path).

        What :meth:`_send_round` does per probe, with the bookkeeping done in bulk: the probes
        enter ``pending`` in one update, and each SYN is a sum, a ``pack_into`` and a slot.
        """
        take = min(room, len(queue))
        keys = queue[-take:]
        del queue[-take:]
        keys.reverse()
        self._pending.update(dict.fromkeys(keys, (1, now)))
        bases, partials, source_port = self._bases, self._partials, self.source_port
        pack_into, buffer, size, slot = _TCP.pack_into, batch.buffer, batch.size, batch.slot
        aimed, aim = batch.aimed, batch.aim
        sent_keys: list[int] = []
        count = start = 0
        for key in keys:  # _seq_and_checksum inlined: a call per SYN is a tenth of this loop
            host = key >> 16
            port = key & 0xFFFF
            seq = (bases[host] + port) & _MASK
            total = partials[host] + port + (seq >> 16) + (seq & 0xFFFF)
            total = (total & 0xFFFF) + (total >> 16)
            total += total >> 16  # the last carry (the mask below drops the bit it came from)
            if aimed[count] != host:
                aim(count, host)
            pack_into(buffer, count * slot, source_port, port, seq, 0, 0x50, _SYN, 64240, ~total & 0xFFFF, 0)
            count += 1
            if count == size:
                batch.count = count
                sent_keys += self._flush(batch, keys[start:start + count])
                start += count
                count = 0
        if count:
            batch.count = count
            sent_keys += self._flush(batch, keys[start:])
        return sent_keys

    def _seq_and_checksum(self, host: int, port: int) -> tuple[int, int]:
        """Our SYN to (host, port): its sequence number and its IPv4 TCP checksum (0 for IPv6, the kernel's).

        An incremental ones'-complement sum: the host's part (pseudo-header and fixed TCP fields)
        is precomputed, only the port and sequence number vary.
        """
        seq = (self._bases[host] + port) & _MASK
        if self.family == socket.AF_INET6:
            return seq, 0
        total = self._partials[host] + port + (seq >> 16) + (seq & 0xFFFF)
        total = (total & 0xFFFF) + (total >> 16)
        total += total >> 16  # the last carry (the mask below drops the bit it came from)
        return seq, ~total & 0xFFFF

    def _cookie_of(self, address: bytes, port: int) -> int:
        """The sequence number our SYN to (address, port) carried, or -1 (matches nothing) for an address not scanned."""
        host = self._index_of.get(address)
        return -1 if host is None else (self._bases[host] + port) & _MASK

    def _address_parts(self, address: str) -> tuple[str, bytes, int | None]:
        """(address, packed, partial checksum of the pseudo-header and fixed TCP fields or None for IPv6)."""
        destination = socket.inet_pton(self.family, address)
        if self.family == socket.AF_INET6:
            return address, destination, None
        source = socket.inet_aton(source_address(address))
        fixed = _TCP.pack(self.source_port, 0, 0, 0, 5 << 4, _SYN, 64240, 0, 0)
        pseudo = source + destination + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(fixed))
        return address, destination, (~_checksum(pseudo + fixed)) & 0xFFFF

    def _flush(self, batch: batching.Batch, queued: list[int]) -> list[int]:
        """Send the queued SYNs; returns the keys that left or were lost (those refused get a verdict)."""
        start = 0
        refused: list[int] = []
        while start < batch.count:
            sent, err = batch.flush(start)
            self.packets += sent
            start += sent
            if err in (errno.EAGAIN, errno.ENOBUFS, errno.EINTR):
                break  # counted as sent and lost: the retry logic covers them
            if err:
                key = queued[start]
                del self._pending[key]
                refused.append(key)
                self.on_verdict(key >> 16, key & 0xFFFF, results.PortState.FILTERED,
                                tcp_scanning.local_reason(err), None, 1)
                start += 1
            elif sent == 0:
                break
        keys = [key for key in queued if key not in refused] if refused else list(queued)
        batch.clear()
        queued.clear()
        return keys

    def _send(self, sender: socket.socket, host: int, port: int) -> bool:
        """Send one SYN; False if it was refused here (the verdict is given), True if it left or was lost."""
        address = self._addressing[host][0]
        seq, checksum = self._seq_and_checksum(host, port)
        header = _TCP.pack(self.source_port, port, seq, 0, 5 << 4, _SYN, 64240, checksum, 0)
        try:
            sender.sendto(header, (address, 0, 0, 0) if self.family == socket.AF_INET6 else (address, 0))
            self.packets += 1
        except (BlockingIOError, InterruptedError):
            pass  # counted as sent and lost: the retry logic covers it
        except OSError as exc:
            reason = tcp_scanning.local_reason(exc.errno or 0)
            self.on_verdict(host, port, results.PortState.FILTERED, reason, None, 1)
            return False
        return True

    def _receive(self, receiver: socket.socket, limit: int) -> None:
        now = self.clock()
        counted: dict[int, int] = {}
        try:
            self._take(receiver, now, None if self.count_closed is None else counted, limit)
        finally:
            if self.count_closed is not None:
                for host, count in counted.items():
                    self.count_closed(host, count)

    def _take(self, receiver: socket.socket, now: float, counted: dict[int, int] | None, limit: int) -> None:
        """Read up to ``limit`` answers waiting on ``receiver`` and give their verdicts."""
        recv = receiver.recv
        source_port = self.source_port
        bases = self._bases
        index_of = self._index_of
        pending = self._pending
        rtt = self._rtt
        unpack = _REPLY4.unpack_from
        closed_seen = self._closed_seen
        in_full = self.in_full
        ttl_sink = self.ttl_sink
        on_verdict = self.on_verdict
        sampled: set[int] = set()
        for _ in range(limit):
            try:
                packet = recv(256)  # enough for any answer we read: IP + ICMP + quoted IP + 8 bytes
            except BlockingIOError:
                return
            try:
                version, ttl, protocol, address, port, dport, ack, flags = unpack(packet)
            except struct.error:
                continue  # shorter than an IPv4 header and TCP ports
            if version == 0x45 and protocol == 6:
                # The common answer, IPv4 without options carrying TCP: decoded here in one unpack
                # (parse_reply's result for such a packet, without its slices and calls).
                host = index_of.get(address)
                if dport != source_port or host is None or (ack - 1 - bases[host]) & _MASK != port:
                    continue
                if flags & _RST:
                    state, reason = _CLOSED, _RESET
                elif flags & _SYN and flags & _ACK:
                    state, reason = _OPEN, _SYN_ACK
                else:
                    continue
            else:
                found = parse_reply(packet, source_port, self._cookie_of)
                if found is None:
                    continue
                address, port, state, reason, ttl = found
                host = index_of.get(address)
                if host is None:
                    continue
            entry = pending.pop(host << 16 | port, None)
            if entry is None:
                continue  # decided already (a duplicate, or an answer after the timeout)
            tries, sent = entry
            if host not in sampled:  # one RTT sample per host per batch of answers
                sampled.add(host)
                rtt[host].observe(now - sent)
            if counted is not None and reason is _RESET:
                seen = closed_seen[host] = closed_seen[host] + 1
                if seen > in_full:
                    counted[host] = counted.get(host, 0) + 1
                    continue
            if ttl_sink is not None:
                ttl_sink(host, port, ttl)
            on_verdict(host, port, state, reason, now - sent, tries)


def parse_reply(
    packet: bytes, source_port: int, cookies: CookieOf
) -> tuple[bytes, int, results.PortState, results.Reason, int] | None:
    """Decode an IP packet into (target address, port, state, reason, ttl) if it answers one of our SYNs.

    The TTL is the IPv4 TTL or IPv6 hop limit of the answer, as nmap's reason_ttl.
    """
    if packet and packet[0] >> 4 == 6:
        return _parse_reply6(packet, source_port, cookies)
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    ttl, protocol = packet[8], packet[9]
    sender = packet[12:16]
    if protocol == socket.IPPROTO_TCP and len(packet) >= ihl + 20:
        return _tcp_verdict(packet[ihl : ihl + 20], sender, source_port, cookies, ttl)
    if protocol == 1 and len(packet) >= ihl + 8 + 20 + 8:
        icmp_type, code = packet[ihl], packet[ihl + 1]
        inner = packet[ihl + 8 :]
        if icmp_type != 3 or inner[0] >> 4 != 4 or inner[9] != socket.IPPROTO_TCP:
            return None
        inner_ihl = (inner[0] & 0x0F) * 4
        if len(inner) < inner_ihl + 8:
            return None
        target = inner[16:20]
        sport, dport, seq = struct.unpack_from("!HHI", inner, inner_ihl)
        if sport != source_port or seq != cookies(target, dport):
            return None
        reason = icmp.ICMP4_UNREACH.get(code, results.Reason.ICMP_OTHER)
        return target, dport, results.PortState.FILTERED, reason, ttl
    return None


def _tcp_verdict(
    segment: bytes, sender: bytes, source_port: int, cookies: CookieOf, ttl: int
) -> tuple[bytes, int, results.PortState, results.Reason, int] | None:
    sport, dport, _, ack, _, flags, _, _, _ = _TCP.unpack_from(segment)
    if dport != source_port or (ack - 1) & 0xFFFFFFFF != cookies(sender, sport):
        return None
    if flags & _RST:
        return sender, sport, results.PortState.CLOSED, results.Reason.RESET, ttl
    if flags & _SYN and flags & _ACK:
        return sender, sport, results.PortState.OPEN, results.Reason.SYN_ACK, ttl
    return None


def _parse_reply6(
    packet: bytes, source_port: int, cookies: CookieOf
) -> tuple[bytes, int, results.PortState, results.Reason, int] | None:
    if len(packet) < 40:
        return None
    next_header, hop_limit, sender = packet[6], packet[7], packet[8:24]
    if next_header == socket.IPPROTO_TCP and len(packet) >= 60:
        return _tcp_verdict(packet[40:60], sender, source_port, cookies, hop_limit)
    if next_header == 58 and len(packet) >= 40 + 8 + 40 + 8:
        icmp_type, code = packet[40], packet[41]
        inner = packet[48:]
        if icmp_type != 1 or inner[0] >> 4 != 6 or inner[6] != socket.IPPROTO_TCP:
            return None
        target = inner[24:40]
        sport, dport, seq = struct.unpack_from("!HHI", inner, 40)
        if sport != source_port or seq != cookies(target, dport):
            return None
        reason = icmp.ICMP6_UNREACH.get(code, results.Reason.ICMP_OTHER)
        return target, dport, results.PortState.FILTERED, reason, hop_limit
    return None


SO_RCVBUFFORCE = 33


def _large_receive_buffer(sock: socket.socket, size: int) -> None:
    """SO_RCVBUFFORCE past net.core.rmem_max when privileged (we have CAP_NET_RAW, maybe not NET_ADMIN)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


