"""Live capture on an AF_PACKET socket: filter in the kernel, decode, summarise, write files.

The libpcap-compiled filter is attached before the socket is bound, so no unfiltered packet
slips in.  On loopback the kernel delivers every packet twice (outgoing and incoming); like
libpcap, the outgoing copy is skipped there.  Drops come from PACKET_STATISTICS.  The loop ends
on ``stop`` (set by SIGINT/SIGTERM in the CLI), a packet count or a duration; the writer is
closed in every case, so the last file is complete up to the last packet.

Limits: files are Ethernet (DLT_EN10MB); frames from interfaces without Ethernet framing
(tun, WireGuard, IPIP — seen with the ``any`` pseudo-interface) are counted as skipped.
"""

from __future__ import annotations

import collections
import dataclasses
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from portolan.capture import decoding, filters, pcapfiles

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ANY = "any"  # capture on every interface of the network namespace, as tcpdump -i any


@dataclasses.dataclass
class CaptureStats:
    """Counts of one capture: packets, bytes, kernel counters, top talkers and protocols."""

    packets: int = 0
    bytes: int = 0
    kernel_packets: int = 0
    kernel_drops: int = 0
    skipped: int = 0  # frames from interfaces without Ethernet framing (see _drain)
    talkers: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    protocols: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def summary(self, top: int = 5) -> str:
        """Two or three lines for humans: totals, kernel drops, top talkers and protocols."""
        talkers = ", ".join(f"{address} ({count})" for address, count in self.talkers.most_common(top))
        protocols = ", ".join(f"{name} {count}" for name, count in self.protocols.most_common(top))
        return (f"{self.packets} packets, {self.bytes} bytes captured; kernel saw {self.kernel_packets}, "
                f"dropped {self.kernel_drops}\ntop talkers: {talkers or '-'}\nprotocols: {protocols or '-'}")


class Capture:
    """A live capture on one interface (AF_PACKET, libpcap-compiled filter), decoding and optionally writing packets."""

    def __init__(
        self,
        interface: str,
        *,
        expression: str = "",
        snaplen: int = 262144,
        promiscuous: bool = False,
        writer: pcapfiles.RotatingWriter | None = None,
        on_packet: Callable[[decoding.Decoded], None] | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interface = interface
        self.snaplen = snaplen
        self.promiscuous = promiscuous
        self.writer = writer
        self.on_packet = on_packet
        self.stop = stop or threading.Event()
        self.clock = clock
        self.program = filters.compile_filter(expression, snaplen) if expression else None
        self.stats = CaptureStats()
        self.sock = self._open()

    def _open(self) -> socket.socket:
        if self.interface == ANY:
            return self._open_any()
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            if self.program is not None:
                filters.attach(sock, self.program)
            sock.bind((self.interface, ETH_P_ALL))
            if self.promiscuous:
                index = socket.if_nametoindex(self.interface)
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b""))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_any(self) -> socket.socket:
        # Every interface: the protocol is given at creation (an unbound socket), so packets may
        # queue before the filter is attached; like libpcap, drain them once it is.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            if self.program is not None:
                filters.attach(sock, self.program)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setblocking(False)
            if self.program is not None:
                while True:
                    try:
                        sock.recv(65535)
                    except BlockingIOError:
                        break
                sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reading resets the counters
        except BaseException:
            sock.close()
            raise
        return sock

    def _kernel_stats(self) -> None:
        packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.stats.kernel_packets += packets
        self.stats.kernel_drops += drops

    def run(self, *, count: int | None = None, seconds: float | None = None) -> CaptureStats:
        """Capture until ``count`` packets, ``seconds`` or ``stop``; returns the counts."""
        deadline = None if seconds is None else self.clock() + seconds
        poller = select.epoll()
        poller.register(self.sock.fileno(), select.EPOLLIN)
        try:
            while not self.stop.is_set():
                if count is not None and self.stats.packets >= count:
                    break
                if deadline is not None and self.clock() >= deadline:
                    break
                if poller.poll(0.1):
                    self._drain(count)
            self._drain(count)
        finally:
            poller.close()
            self._kernel_stats()
            self.sock.close()
            if self.writer is not None:
                self.writer.close()
        return self.stats

    def _drain(self, count: int | None) -> None:
        while count is None or self.stats.packets < count:
            try:
                frame, meta = self.sock.recvfrom(65535)
            except BlockingIOError:
                return
            if meta[2] == PACKET_OUTGOING and meta[3] == ARPHRD_LOOPBACK:
                continue
            if meta[3] not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
                # No Ethernet header (tun, WireGuard, IPIP): the filter and the file's link type
                # assume one, so such frames are counted, not written.
                self.stats.skipped += 1
                continue
            stamp = time.time_ns()
            self.stats.packets += 1
            self.stats.bytes += len(frame)
            if self.writer is not None:
                self.writer.write(pcapfiles.Record(stamp, frame, len(frame)))
            decoded = decoding.decode_ethernet(frame[: self.snaplen])
            if decoded.source:
                self.stats.talkers[decoded.source] += 1
            label = decoded.application or decoded.transport or (decoded.layers[-1] if decoded.layers else "?")
            self.stats.protocols[label] += 1
            if self.on_packet is not None:
                self.on_packet(decoded)
