"""SYN scanning over raw sockets (needs CAP_NET_RAW), stateless replies like ZMap/masscan.

Probes are one prebuilt 20-byte TCP SYN template, patched per probe (destination port,
sequence number, checksum) and sent on a raw socket (the kernel adds the IP header; for IPv6
it also fills in the checksum, IPV6_CHECKSUM).
Replies are read from an AF_PACKET socket with a classic BPF program that passes only TCP
segments to our source port and ICMP errors, so Python sees almost nothing else.  Replies are
matched without per-probe state: the sequence number is a keyed hash of (address, port), so a
SYN-ACK or RST whose acknowledgement is that cookie + 1 — or an ICMP error quoting our SYN with
that sequence — belongs to our probe.  Only retry bookkeeping is kept per probe.

Verdicts are the connect engine's, with raw-mode reasons: SYN-ACK → open/syn-ack (with the
reply's TTL), RST → closed/reset, ICMP unreachable → filtered/<reason>, silence after the
retries → filtered/no-response.  The kernel answers each SYN-ACK with a RST because no socket
owns the connection; that is harmless here.

Limits: one address family per scanner (the caller runs one per family); IPv6 replies with
extension headers before TCP are not recognised; one fixed source port per run.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import ipaddress
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
_TCP = struct.Struct("!HHIIBBHHH")  # sport dport seq ack offset flags window checksum urgent
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
# An IPv4 header without options, then TCP: ttl (8), source address (12), ports (20, 22), ack (28), flags (33).
_REPLY4 = struct.Struct("!8xB3x4s4xHH4xIxB")
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
    """Accept IPv6 TCP to ``source_port`` right after the fixed header, and ICMPv6; drop the rest."""
    program = [
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


class Cookies:
    """Keyed 32-bit sequence numbers for (address, port) pairs."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or os.urandom(16)
        self._keyed = hashlib.blake2s(key=self.key, digest_size=4)  # copied per call: no key setup each time

    def __call__(self, address: bytes, port: int) -> int:
        state = self._keyed.copy()
        state.update(address + port.to_bytes(2, "big"))
        value: int = int.from_bytes(state.digest(), "big")
        return value


def syn_available(family: socket.AddressFamily = socket.AF_INET) -> str | None:
    """None if raw sockets of this family can be opened here, else why not.

    Both sockets a SYN pass needs are tried (a policy or kernel may refuse packet sockets
    alone), once per scan: :meth:`SynScanner.run` does not try again, as closing a packet
    socket waits an RCU grace period (~10 ms).
    """
    link = ETH_P_IP if family == socket.AF_INET else ETH_P_IPV6
    try:
        socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP).close()
        socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(link)).close()
    except PermissionError:
        return "SYN scanning needs CAP_NET_RAW"
    except OSError as exc:
        return f"raw sockets unavailable: {exc}"
    return None


class SynScanner:
    """One SYN pass over targets x ports of one address family, with the connect engine's verdict callback."""

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
        self._sent: dict[tuple[bytes, int], int] = {}
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
        try:
            receiver = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6 if v6 else ETH_P_IP))
        except OSError as exc:
            sender.close()
            raise errors.ScanError(f"packet sockets unavailable: {exc}") from exc
        try:
            if v6:
                sender.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 16)  # the kernel sums the TCP header
            bpf.attach(receiver, _bpf6(self.source_port) if v6 else _bpf(self.source_port))
            # Answers arrive in bursts as fast as SYNs leave; the default ~200 KiB overflows.
            _large_receive_buffer(receiver, 8 << 20)
            receiver.setblocking(False)
            while True:  # drop what arrived before the filter was attached
                try:
                    receiver.recv(65535)
                except BlockingIOError:
                    break
            sender.setblocking(False)
            self._loop(sender, receiver)
        finally:
            sender.close()
            receiver.close()
        return self.packets

    def _loop(self, sender: socket.socket, receiver: socket.socket) -> None:
        index_of = {ipaddress.ip_address(t.address).packed: i for i, t in enumerate(self.targets)}
        self._addressing = [self._address_parts(t.address) for t in self.targets]
        self._closed_seen = [0] * len(self.targets)  # RST answers per host, for count_closed
        rtt = [pacing.estimator(self.timing) for _ in self.targets]
        bucket = pacing.TokenBucket(self.timing.max_rate, self.clock) if self.timing.max_rate else None
        pending: dict[tuple[int, int], tuple[int, float]] = {}  # (host, port) -> (tries, sent)
        # (target address, port) -> the sequence number its SYN carried, while undecided: an answer
        # is checked against what was sent, a dict lookup instead of recomputing the keyed cookie.
        self._sent = {}
        deadlines: list[tuple[float, int, int, int]] = []
        queue = [(h, p, 0) for p in self.ports for h in range(len(self.targets))]
        queue.reverse()
        retry: list[tuple[int, int, int]] = []
        epoll = select.epoll()
        epoll.register(receiver.fileno(), select.EPOLLIN)
        window = max(1, self.timing.concurrency)
        batch: batching.Batch | None = None
        if self.family == socket.AF_INET and batching.available():  # IPv4: many SYNs per system call
            batch = batching.Batch(sender, [t.address for t in self.targets], size=max(1, min(256, window)))
        items: list[tuple[int, int]] = []  # (host, port) of each queued slot
        try:
            while (queue or retry or pending) and not (self.stop and self.stop.is_set()):
                now = self.clock()
                while (queue or retry) and len(pending) < window:
                    if bucket is not None and not bucket.take():
                        break
                    host, port, tries = retry.pop() if retry else queue.pop()
                    if batch is None:
                        self._send(sender, host, port)
                    else:
                        self._pack(batch.buffer, batch.queue(host), host, port)
                        items.append((host, port))
                    pending[(host, port)] = (tries + 1, now)
                    heapq.heappush(deadlines, (now + rtt[host].current, host, port, tries + 1))
                    if batch is not None and batch.full():
                        self._flush(batch, items)
                if batch is not None and batch.count:
                    self._flush(batch, items)
                wait = deadlines[0][0] - now if deadlines else 0.01
                for _ in epoll.poll(max(0.0, min(wait, 0.02))):
                    self._receive(receiver, index_of, pending, rtt)
                now = self.clock()
                while deadlines and deadlines[0][0] <= now:
                    _, host, port, tries = heapq.heappop(deadlines)
                    entry = pending.get((host, port))
                    if entry is None or entry[0] != tries:
                        continue
                    del pending[(host, port)]
                    if tries <= self.timing.retries:
                        retry.append((host, port, tries))
                    else:
                        self._sent.pop((self._addressing[host][1], port), None)
                        self.on_verdict(host, port, results.PortState.FILTERED, results.Reason.NO_RESPONSE, None, tries)
        finally:
            epoll.close()

    def _sent_cookie(self, address: bytes, port: int) -> int:
        """The sequence number the SYN to (address, port) carried, or -1 (matches no answer) if none is undecided."""
        return self._sent.get((address, port), -1)

    def _address_parts(self, address: str) -> tuple[str, bytes, int | None]:
        """(address, packed, partial checksum of the pseudo-header and fixed TCP fields or None for IPv6)."""
        destination = socket.inet_pton(self.family, address)
        if self.family == socket.AF_INET6:
            return address, destination, None
        source = socket.inet_aton(source_address(address))
        fixed = _TCP.pack(self.source_port, 0, 0, 0, 5 << 4, _SYN, 64240, 0, 0)
        pseudo = source + destination + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(fixed))
        return address, destination, (~_checksum(pseudo + fixed)) & 0xFFFF

    def _pack(self, buffer: bytearray, offset: int, host: int, port: int) -> None:
        """Write the IPv4 SYN for (host, port) into a batch slot (the checksum summed incrementally)."""
        _, destination, partial = self._addressing[host]
        seq = self.cookies(destination, port)
        self._sent[(destination, port)] = seq
        total = (partial or 0) + port + (seq >> 16) + (seq & 0xFFFF)
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        _TCP.pack_into(buffer, offset, self.source_port, port, seq, 0, 5 << 4, _SYN, 64240, ~total & 0xFFFF, 0)

    def _flush(self, batch: batching.Batch, items: list[tuple[int, int]]) -> None:
        """Send the queued SYNs; refusals as in :meth:`_send` (lost when the queue is full, else a verdict)."""
        start = 0
        while start < batch.count:
            sent, err = batch.flush(start)
            self.packets += sent
            start += sent
            if err in (errno.EAGAIN, errno.ENOBUFS, errno.EINTR):
                break  # counted as sent and lost: the retry logic covers them
            if err:
                host, port = items[start]
                self.on_verdict(host, port, results.PortState.FILTERED, tcp_scanning.local_reason(err), None, 1)
                start += 1
            elif sent == 0:
                break
        batch.clear()
        items.clear()

    def _send(self, sender: socket.socket, host: int, port: int) -> None:
        address, destination, partial = self._addressing[host]
        seq = self.cookies(destination, port)
        self._sent[(destination, port)] = seq
        if partial is None:  # IPv6: the kernel fills in the checksum (IPV6_CHECKSUM)
            header = _TCP.pack(self.source_port, port, seq, 0, 5 << 4, _SYN, 64240, 0, 0)
        else:
            # Incremental ones'-complement sum: the per-host part is precomputed, only port and sequence vary.
            total = partial + port + (seq >> 16) + (seq & 0xFFFF)
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            header = _TCP.pack(self.source_port, port, seq, 0, 5 << 4, _SYN, 64240, ~total & 0xFFFF, 0)
        try:
            sender.sendto(header, (address, 0, 0, 0) if partial is None else (address, 0))
            self.packets += 1
        except (BlockingIOError, InterruptedError):
            pass  # counted as sent and lost: the retry logic covers it
        except OSError as exc:
            reason = tcp_scanning.local_reason(exc.errno or 0)
            self.on_verdict(host, port, results.PortState.FILTERED, reason, None, 1)

    def _receive(
        self,
        receiver: socket.socket,
        index_of: dict[bytes, int],
        pending: dict[tuple[int, int], tuple[int, float]],
        rtt: list[pacing.RttEstimator],
    ) -> None:
        now = self.clock()
        counted: dict[int, int] = {}
        try:
            self._take(receiver, index_of, pending, rtt, now, None if self.count_closed is None else counted)
        finally:
            if self.count_closed is not None:
                for host, count in counted.items():
                    self.count_closed(host, count)

    def _take(
        self,
        receiver: socket.socket,
        index_of: dict[bytes, int],
        pending: dict[tuple[int, int], tuple[int, float]],
        rtt: list[pacing.RttEstimator],
        now: float,
        counted: dict[int, int] | None,
    ) -> None:
        recvfrom = receiver.recvfrom
        source_port = self.source_port
        sent_seq = self._sent
        unpack = _REPLY4.unpack_from
        closed_seen = self._closed_seen
        in_full = self.in_full
        for _ in range(4096):
            try:
                packet, meta = recvfrom(65535)
            except BlockingIOError:
                return
            if len(meta) > 2 and meta[2] == PACKET_OUTGOING:
                continue
            if len(packet) >= 40 and packet[0] == 0x45 and packet[9] == socket.IPPROTO_TCP:
                # The common answer, IPv4 without options carrying TCP: decoded here in one unpack
                # (parse_reply's result for such a packet, without its slices and calls).
                ttl, address, port, dport, ack, flags = unpack(packet)
                if dport != source_port or (ack - 1) & 0xFFFFFFFF != sent_seq.get((address, port), -1):
                    continue
                if flags & _RST:
                    state, reason = _CLOSED, _RESET
                elif flags & _SYN and flags & _ACK:
                    state, reason = _OPEN, _SYN_ACK
                else:
                    continue
            else:
                found = parse_reply(packet, source_port, self._sent_cookie)
                if found is None:
                    continue
                address, port, state, reason, ttl = found
            host = index_of.get(address)
            if host is None or (host, port) not in pending:
                continue
            tries, sent = pending.pop((host, port))
            del self._sent[(address, port)]
            if state != results.PortState.FILTERED or reason != results.Reason.NO_RESPONSE:
                rtt[host].observe(now - sent)
            if counted is not None and reason is _RESET:
                seen = closed_seen[host] = closed_seen[host] + 1
                if seen > in_full:
                    counted[host] = counted.get(host, 0) + 1
                    continue
            if self.ttl_sink is not None:
                self.ttl_sink(host, port, ttl)
            self.on_verdict(host, port, state, reason, now - sent, tries)


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


