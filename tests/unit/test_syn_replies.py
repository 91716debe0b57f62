"""Stateless reply matching of the SYN engine: cookies, TCP flags, quoted ICMP, and garbage."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from portolan.engine import syn_scanning
from portolan.models import results

COOKIES = syn_scanning.Cookies()
TARGET = socket.inet_aton("198.18.0.10")
ME = socket.inet_aton("198.18.0.1")
SPORT = 45000


def _ip(protocol: int, source: bytes, destination: bytes, payload: bytes, ttl: int = 63) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, ttl, protocol, 0, source, destination) + payload


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 1024, 0, 0)


def test_a_syn_ack_acknowledging_our_cookie_is_open_with_its_ttl() -> None:
    cookie = COOKIES(TARGET, 22)
    packet = _ip(6, TARGET, ME, _tcp(22, SPORT, 7, cookie + 1, 0x12), ttl=61)
    assert syn_scanning.parse_reply(packet, SPORT, COOKIES) == (TARGET, 22, results.PortState.OPEN, results.Reason.SYN_ACK, 61)


def test_a_rst_is_closed_and_a_wrong_cookie_or_port_is_ignored() -> None:
    cookie = COOKIES(TARGET, 23)
    assert syn_scanning.parse_reply(_ip(6, TARGET, ME, _tcp(23, SPORT, 0, cookie + 1, 0x14)), SPORT, COOKIES)[2] == results.PortState.CLOSED  # type: ignore[index]
    assert syn_scanning.parse_reply(_ip(6, TARGET, ME, _tcp(23, SPORT, 0, cookie + 2, 0x14)), SPORT, COOKIES) is None
    assert syn_scanning.parse_reply(_ip(6, TARGET, ME, _tcp(23, SPORT + 1, 0, cookie + 1, 0x14)), SPORT, COOKIES) is None


def test_an_icmp_error_quoting_our_syn_is_filtered_with_its_code() -> None:
    quoted = _ip(6, ME, TARGET, _tcp(SPORT, 1001, COOKIES(TARGET, 1001), 0, 0x02))[:28]
    icmp = struct.pack("!BBHI", 3, 13, 0, 0) + quoted
    found = syn_scanning.parse_reply(_ip(1, TARGET, ME, icmp), SPORT, COOKIES)
    assert found == (TARGET, 1001, results.PortState.FILTERED, results.Reason.ADMIN_PROHIBITED, 63)


def test_the_bpf_program_has_ten_well_formed_instructions() -> None:
    program = syn_scanning._bpf(SPORT)
    assert len(program) == 10 * 8
    codes = [struct.unpack_from("HBBI", program, i * 8) for i in range(10)]
    assert codes[6] == (0x15, 2, 1, SPORT) and codes[-1] == (0x06, 0, 0, 0xFFFF)


@given(st.binary(max_size=200))
def test_reply_parsing_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    syn_scanning.parse_reply(data, SPORT, COOKIES)


TARGET6 = socket.inet_pton(socket.AF_INET6, "2001:db8::10")
ME6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")


def _ip6(next_header: int, source: bytes, destination: bytes, payload: bytes, hops: int = 62) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hops, source, destination) + payload


def test_ipv6_syn_ack_and_rst_are_open_and_closed_with_the_hop_limit() -> None:
    cookie = COOKIES(TARGET6, 443)
    assert syn_scanning.parse_reply(_ip6(6, TARGET6, ME6, _tcp(443, SPORT, 1, cookie + 1, 0x12)), SPORT, COOKIES) == (
        TARGET6, 443, results.PortState.OPEN, results.Reason.SYN_ACK, 62)
    assert syn_scanning.parse_reply(_ip6(6, TARGET6, ME6, _tcp(443, SPORT, 0, cookie + 1, 0x14)), SPORT, COOKIES) == (
        TARGET6, 443, results.PortState.CLOSED, results.Reason.RESET, 62)
    assert syn_scanning.parse_reply(_ip6(6, TARGET6, ME6, _tcp(443, SPORT, 0, cookie, 0x14)), SPORT, COOKIES) is None


def test_an_icmpv6_unreachable_quoting_our_syn_is_filtered_with_its_code() -> None:
    quoted = _ip6(6, ME6, TARGET6, _tcp(SPORT, 1001, COOKIES(TARGET6, 1001), 0, 0x02))[:48]
    for code, reason in ((1, results.Reason.ADMIN_PROHIBITED), (4, results.Reason.PORT_UNREACH),
                         (3, results.Reason.HOST_UNREACH)):
        icmp = struct.pack("!BBHI", 1, code, 0, 0) + quoted
        found = syn_scanning.parse_reply(_ip6(58, ME6, ME6, icmp, hops=64), SPORT, COOKIES)
        assert found == (TARGET6, 1001, results.PortState.FILTERED, reason, 64)


def test_the_ipv6_bpf_program_drops_our_outgoing_packets_and_checks_the_tcp_port_after_the_fixed_header() -> None:
    program = syn_scanning._bpf6(SPORT)
    codes = [struct.unpack_from("HBBI", program, i * 8) for i in range(len(program) // 8)]
    assert codes[0] == (0x20, 0, 0, 0xFFFFF004)  # ld pkttype (SKF_AD_OFF + SKF_AD_PKTTYPE)
    assert codes[1] == (0x15, 5, 0, syn_scanning.PACKET_OUTGOING) and codes[1 + 1 + 5] == (0x06, 0, 0, 0)
    assert codes[4] == (0x28, 0, 0, 42) and codes[5] == (0x15, 2, 1, SPORT) and codes[-1] == (0x06, 0, 0, 0xFFFF)


@given(st.binary(max_size=200))
def test_ipv6_reply_parsing_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    syn_scanning.parse_reply(bytes([0x60]) + data, SPORT, COOKIES)


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, address: object) -> int:
        self.sent.append(data)
        return len(data)


@given(st.integers(min_value=1, max_value=65535))
def test_every_ipv4_syn_carries_a_checksum_that_verifies_over_the_pseudo_header(port: int) -> None:
    from portolan.engine import plans, targets

    scanner = syn_scanning.SynScanner(targets.parse_targets(["127.0.0.1"], []), [port], plans.Timing(),
                                      lambda *args: None, cookies=COOKIES)
    scanner._prepare()
    sink = _Recorder()
    scanner._send(sink, 0, port)  # type: ignore[arg-type]
    (segment,) = sink.sent
    loopback = socket.inet_aton("127.0.0.1")
    pseudo = loopback + loopback + struct.pack("!BBH", 0, 6, len(segment))
    assert syn_scanning._checksum(pseudo + segment) == 0
    sport, dport, seq, _, _, flags, _, _, _ = struct.unpack("!HHIIBBHHH", segment)
    assert (sport, dport, seq, flags) == (scanner.source_port, port, COOKIES(loopback, port), 0x02)
