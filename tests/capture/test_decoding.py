"""Decoding: every protocol the engine knows is recognised from a captured payload, in either direction."""

from __future__ import annotations

import socket
import struct

import pytest

from portolan.capture import decoding

CLIENT, SERVER = "198.18.0.1", "198.18.0.10"


def _frame(transport: int, sport: int, dport: int, payload: bytes, *, reply: bool = False) -> bytes:
    source, destination = (SERVER, CLIENT) if reply else (CLIENT, SERVER)
    if transport == socket.IPPROTO_TCP:
        segment = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 1024, 0, 0) + payload
    else:
        segment = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0, 64, transport, 0,
                     socket.inet_aton(source), socket.inet_aton(destination))
    return bytes(12) + b"\x08\x00" + ip + segment


TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP


@pytest.mark.parametrize(
    ("frame", "application", "detail"),
    [
        (_frame(TCP, 25, 40000, b"220 mail.lab ESMTP Postfix\r\n", reply=True), "smtp", "220 mail.lab ESMTP Postfix"),
        (_frame(TCP, 21, 40000, b"220 (vsFTPd 3.0.5)\r\n", reply=True), "ftp", "220 (vsFTPd 3.0.5)"),
        (_frame(TCP, 22, 40000, b"SSH-2.0-OpenSSH_9.6\r\n", reply=True), "ssh", "SSH-2.0-OpenSSH_9.6"),
        (_frame(TCP, 3306, 40000, b"\x4a\x00\x00\x00\x0a8.0.36\x00" + bytes(40), reply=True), "mysql", "8.0.36"),
        (_frame(TCP, 6379, 40000, b"+PONG\r\n", reply=True), "redis", "+PONG"),
        (_frame(TCP, 40000, 6379, b"*1\r\n$4\r\nPING\r\n"), "redis", "*1"),
        (_frame(TCP, 40000, 5432, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), "postgresql", "ssl-request"),
        (_frame(TCP, 40000, 5432, b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00pg\x00"), "postgresql", "startup"),
        (_frame(TCP, 40000, 110, b"+OK POP3 ready\r\n"), "pop3", "+OK POP3 ready"),
        (_frame(UDP, 40000, 123, b"\x23" + bytes(47)), "ntp", "client"),
        (_frame(UDP, 123, 40000, b"\x24" + bytes(47), reply=True), "ntp", "server"),
        (_frame(UDP, 40000, 161, b"\x30\x26\x02\x01\x01\x04\x06public"), "snmp", None),
        (_frame(TCP, 40000, 6379, b"\x00garbage"), "redis", None),  # unknown payload: named by the port only
    ],
)
def test_engine_protocols_are_recognised_from_payloads(frame: bytes, application: str, detail: str | None) -> None:
    decoded = decoding.decode_ethernet(frame)
    assert decoded.layers[:3] == ["eth", "ipv4", "tcp" if frame[23] == TCP else "udp"]
    assert (decoded.application, decoded.detail) == (application, detail)
