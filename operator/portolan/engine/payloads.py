"""UDP protocol payloads and the recognition of their replies.

An empty datagram rarely gets an answer from a real UDP service, so the engine
sends, per port, a payload that the protocol must answer: a DNS query, an NTP
client request, an SNMP v2c GetRequest.  The bytes are built here from the
RFCs (1035, 5905, 3416/BER); none come from nmap's payload file.

Limits: one payload per protocol; SNMP uses the community ``public``; replies
are recognised from their header shape, not fully decoded.
"""

from __future__ import annotations

import struct
import typing

from portolan.models import results

_DNS_ID = 0x5054


class UdpPayload(typing.NamedTuple):
    """A protocol request that makes a listening service answer (DNS, NTP, SNMP, ...)."""

    name: str
    service: str
    data: bytes


def _dns_query() -> bytes:
    header = struct.pack("!HHHHHH", _DNS_ID, 0x0100, 1, 0, 0, 0)
    name = b"".join(bytes([len(label)]) + label for label in (b"version", b"bind")) + b"\x00"
    return header + name + struct.pack("!HH", 16, 3)  # TXT, CHAOS


def _ntp_request() -> bytes:
    return bytes([0x23]) + bytes(47)  # LI 0, version 4, mode 3 (client)


def _tlv(tag: int, body: bytes) -> bytes:
    if len(body) >= 0x80:
        raise ValueError("BER long lengths are not needed here")
    return bytes([tag, len(body)]) + body


SYSDESCR_OID = bytes([0x2B, 6, 1, 2, 1, 1, 1, 0])  # 1.3.6.1.2.1.1.1.0


def _snmp_get(community: bytes = b"public", request_id: int = 0x50544C4E) -> bytes:
    varbind = _tlv(0x30, _tlv(0x06, SYSDESCR_OID) + b"\x05\x00")
    pdu = _tlv(
        0xA0,
        _tlv(0x02, struct.pack("!I", request_id))
        + _tlv(0x02, b"\x00")
        + _tlv(0x02, b"\x00")
        + _tlv(0x30, varbind),
    )
    return _tlv(0x30, _tlv(0x02, b"\x01") + _tlv(0x04, community) + pdu)


DNS = UdpPayload("dns-version-bind", "dns", _dns_query())
NTP = UdpPayload("ntp-client", "ntp", _ntp_request())
SNMP = UdpPayload("snmp-v2c-sysdescr", "snmp", _snmp_get())
EMPTY = UdpPayload("empty", "unknown", b"")

_BY_PORT: dict[int, tuple[UdpPayload, ...]] = {
    53: (DNS,),
    5353: (DNS,),
    123: (NTP,),
    161: (SNMP,),
}


def payloads_for(port: int) -> list[UdpPayload]:
    """Payloads to try on a port, protocol payload first, then the empty probe."""
    return [*_BY_PORT.get(port, ()), EMPTY]


def payload_bytes(port: int) -> list[bytes]:
    """The engine's payload source: only the bytes, in the order to send them."""
    return [payload.data for payload in payloads_for(port)]


def identify_reply(port: int, reply: bytes) -> results.ServiceInfo | None:
    """Name the service behind a UDP reply; None if the reply matches nothing we sent."""
    if len(reply) >= 12:
        ident, flags = struct.unpack_from("!HH", reply)
        if ident == _DNS_ID and flags & 0x8000:
            return results.ServiceInfo(name="dns", method="payload")
    if len(reply) >= 48 and reply[0] & 0x07 == 4:
        version = (reply[0] >> 3) & 0x07
        return results.ServiceInfo(name="ntp", version=f"v{version}", method="payload")
    if reply[:1] == b"\x30" and b"\xa2" in reply[:32]:
        description = _snmp_string(reply)
        return results.ServiceInfo(
            name="snmp", product=description, banner=description, method="payload"
        )
    return None


def _snmp_string(reply: bytes) -> str | None:
    at = reply.find(SYSDESCR_OID)
    if at < 0:
        return None
    at += len(SYSDESCR_OID)
    if at + 2 > len(reply) or reply[at] != 0x04:
        return None
    length = reply[at + 1]
    if length & 0x80:
        return None
    return reply[at + 2 : at + 2 + length].decode("utf-8", "replace")[:200] or None
