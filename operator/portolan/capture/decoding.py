"""Decoding captured frames: Ethernet (and 802.1Q), ARP, IPv4, IPv6, TCP, UDP, ICMP, ICMPv6,
and the application protocol carried (HTTP, TLS with the ClientHello's SNI, DNS, SSH, and the
engine's port names as a fallback).

Pure functions of bytes; malformed or truncated input never raises — decoding stops at the
first layer that does not fit and says so in ``Decoded.error``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Callable

from portolan.wire import banners

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100


@dataclasses.dataclass
class Decoded:
    """What the decoder understood of one packet, layer by layer (``error`` when it was malformed)."""

    layers: list[str] = dataclasses.field(default_factory=list)
    source: str | None = None
    destination: str | None = None
    sport: int | None = None
    dport: int | None = None
    transport: str | None = None
    application: str | None = None
    detail: str | None = None  # e.g. the SNI, an HTTP request line, a DNS name
    length: int = 0
    error: str | None = None

    def summary(self) -> str:
        """One line per packet, tcpdump-like: layers, endpoints, application and detail."""
        where = f"{self.source}:{self.sport} > {self.destination}:{self.dport}" if self.sport is not None else \
            f"{self.source} > {self.destination}"
        parts = ["/".join(self.layers), where]
        if self.application:
            parts.append(self.application + (f" {self.detail}" if self.detail else ""))
        if self.error:
            parts.append(f"[{self.error}]")
        return " ".join(parts)


def _guarded(layer: Callable[[bytes, Decoded], None], data: bytes) -> Decoded:
    out = Decoded(length=len(data))
    try:
        layer(data, out)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        out.error = f"malformed: {exc}"
    return out


def decode_ethernet(frame: bytes) -> Decoded:
    """Decode an Ethernet frame (VLAN tags, ARP, IPv4/IPv6 and what they carry); never raises."""
    return _guarded(_ethernet, frame)


def decode_ip(packet: bytes) -> Decoded:
    """For captures without a link layer (raw IP)."""
    return _guarded(_ip, packet)


def _ethernet(frame: bytes, out: Decoded) -> None:
    if len(frame) < 14:
        out.error = "truncated ethernet"
        return
    out.layers.append("eth")
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    offset = 14
    while ethertype == ETHERTYPE_VLAN and len(frame) >= offset + 4:
        out.layers.append("vlan")
        ethertype = struct.unpack_from("!H", frame, offset + 2)[0]
        offset += 4
    payload = frame[offset:]
    if ethertype == ETHERTYPE_ARP:
        out.layers.append("arp")
        if len(payload) >= 28:
            out.source = str(ipaddress.IPv4Address(payload[14:18]))
            out.destination = str(ipaddress.IPv4Address(payload[24:28]))
        else:
            out.error = "truncated arp"
    elif ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        _ip(payload, out)
    else:
        out.layers.append(f"ethertype-0x{ethertype:04x}")


def _ip(packet: bytes, out: Decoded) -> None:
    if not packet:
        out.error = "empty ip"
        return
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20:
            out.error = "truncated ipv4"
            return
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl:
            out.error = "bad ipv4 header length"
            return
        out.layers.append("ipv4")
        total = struct.unpack_from("!H", packet, 2)[0]
        out.source = str(ipaddress.IPv4Address(packet[12:16]))
        out.destination = str(ipaddress.IPv4Address(packet[16:20]))
        fragment = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF
        if fragment:
            out.layers.append("fragment")
            return
        _transport(packet[9], packet[ihl:max(ihl, min(total, len(packet)))], out, icmp_number=1)
    elif version == 6:
        if len(packet) < 40:
            out.error = "truncated ipv6"
            return
        out.layers.append("ipv6")
        out.source = str(ipaddress.IPv6Address(packet[8:24]))
        out.destination = str(ipaddress.IPv6Address(packet[24:40]))
        next_header, offset = packet[6], 40
        for _ in range(8):  # hop-by-hop, routing, destination options
            if next_header not in (0, 43, 60) or len(packet) < offset + 8:
                break
            next_header, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        _transport(next_header, packet[offset:], out, icmp_number=58)
    else:
        out.error = f"ip version {version}"


def _transport(number: int, data: bytes, out: Decoded, *, icmp_number: int) -> None:
    if number == 6:
        if len(data) < 20:
            out.error = "truncated tcp"
            return
        out.layers.append("tcp")
        out.transport = "tcp"
        out.sport, out.dport = struct.unpack_from("!HH", data)
        offset = (data[12] >> 4) * 4
        _application(data[offset:] if offset >= 20 else b"", out)
    elif number == 17:
        if len(data) < 8:
            out.error = "truncated udp"
            return
        out.layers.append("udp")
        out.transport = "udp"
        out.sport, out.dport = struct.unpack_from("!HH", data)
        _application(data[8:], out)
    elif number == icmp_number:
        if len(data) < 4:
            out.error = "truncated icmp"
            return
        out.layers.append("icmp" if icmp_number == 1 else "icmpv6")
        out.transport = out.layers[-1]
        out.detail = f"type {data[0]} code {data[1]}"
    else:
        out.layers.append(f"ip-proto-{number}")


def _application(payload: bytes, out: Decoded) -> None:
    ports = (out.sport or 0, out.dport or 0)
    http_starts = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"HTTP/1.")
    if payload.startswith(http_starts):
        out.application, out.detail = "http", payload.split(b"\r\n", 1)[0].decode("latin-1")[:120]
    elif payload.startswith(b"SSH-"):
        out.application, out.detail = "ssh", payload.split(b"\r\n", 1)[0].decode("latin-1")[:80]
    elif len(payload) > 5 and payload[0] == 0x16 and payload[1] == 3:
        out.application = "tls"
        sni = tls_sni(payload)
        out.detail = f"sni={sni}" if sni else ("client-hello" if len(payload) > 5 and payload[5] == 1 else None)
    elif out.transport == "udp" and 53 in ports and len(payload) >= 12:
        out.application = "dns"
        out.detail = dns_name(payload)
    elif payload:
        out.application, out.detail = _known_payload(payload, out.transport, ports)
        if out.application is None:
            out.application = next((banners.guess_service(p) for p in ports if banners.guess_service(p)), None)


_POSTGRES_SSL = b"\x04\xd2\x16\x2f"
_POSTGRES_V3 = b"\x00\x03\x00\x00"


def _known_payload(payload: bytes, transport: str | None, ports: tuple[int, int]) -> tuple[str | None, str | None]:
    """The protocols the engine identifies, recognised from a payload (either direction)."""
    if transport == "tcp":
        banner = banners.match_banner(ports[0], payload)  # server-first: SSH, MySQL, FTP, SMTP, POP3, IMAP
        if banner is not None:
            return banner.name, (banner.banner or banner.version)
        redis = banners.match_redis(payload)
        if redis is not None or (payload[:1] == b"*" and b"\r\n$" in payload[:16] and 6379 in ports):
            return "redis", payload.split(b"\r\n", 1)[0].decode("latin-1")[:80]
        if len(payload) >= 8 and payload[4:8] in (_POSTGRES_SSL, _POSTGRES_V3):
            return "postgresql", "ssl-request" if payload[4:8] == _POSTGRES_SSL else "startup"
    if transport == "udp":
        if len(payload) >= 48 and payload[0] & 0x07 in (3, 4) and 123 in ports:
            return "ntp", "client" if payload[0] & 0x07 == 3 else "server"
        if payload[:1] == b"\x30" and (161 in ports or 162 in ports):
            return "snmp", None
    return None, None


def tls_sni(record: bytes) -> str | None:
    """The server name of a TLS ClientHello record, if present."""
    if len(record) < 9 or record[5] != 1:
        return None
    at = 9 + 2 + 32  # handshake header, client version, random
    if len(record) < at + 1:
        return None
    at += 1 + record[at]  # session id
    if len(record) < at + 2:
        return None
    at += 2 + struct.unpack_from("!H", record, at)[0]  # cipher suites
    if len(record) < at + 1:
        return None
    at += 1 + record[at]  # compression methods
    if len(record) < at + 2:
        return None
    end = min(len(record), at + 2 + struct.unpack_from("!H", record, at)[0])
    at += 2
    while at + 4 <= end:
        kind, size = struct.unpack_from("!HH", record, at)
        at += 4
        if kind == 0 and at + 5 <= end:
            name_length = struct.unpack_from("!H", record, at + 3)[0]
            return record[at + 5 : at + 5 + name_length].decode("ascii", "replace") or None
        at += size
    return None


def dns_name(message: bytes) -> str | None:
    """The first question's name of a DNS message."""
    labels: list[str] = []
    at = 12
    for _ in range(64):
        if at >= len(message):
            return None
        size = message[at]
        if size == 0:
            return ".".join(labels) or "."
        if size & 0xC0:
            return ".".join(labels) or None
        labels.append(message[at + 1 : at + 1 + size].decode("ascii", "replace"))
        at += 1 + size
    return None
