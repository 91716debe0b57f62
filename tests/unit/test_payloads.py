"""UDP payload bytes and reply recognition, built by hand from the RFCs."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from portolan.engine import payloads


def test_dns_payload_is_a_single_question_for_version_bind_in_chaos_class() -> None:
    data = payloads.DNS.data
    _ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data)
    assert (flags, qd, an, ns, ar) == (0x0100, 1, 0, 0, 0)
    assert data[12:] == b"\x07version\x04bind\x00" + struct.pack("!HH", 16, 3)


def test_ntp_payload_is_a_48_byte_version_4_client_request() -> None:
    data = payloads.NTP.data
    assert len(data) == 48 and data[0] >> 3 & 7 == 4 and data[0] & 7 == 3


def test_snmp_payload_is_a_v2c_get_request_for_sysdescr_with_consistent_lengths() -> None:
    data = payloads.SNMP.data
    assert data[0] == 0x30 and data[1] == len(data) - 2
    assert data[2:5] == b"\x02\x01\x01"  # version: v2c
    assert data[5:13] == b"\x04\x06public"
    assert data[13] == 0xA0 and data[14] == len(data) - 15
    assert data.endswith(payloads.SYSDESCR_OID + b"\x05\x00")


def test_known_ports_get_their_protocol_payload_before_the_empty_probe() -> None:
    assert [p.name for p in payloads.payloads_for(53)] == ["dns-version-bind", "empty"]
    assert [p.name for p in payloads.payloads_for(40000)] == ["empty"]


def test_replies_are_recognised_by_protocol() -> None:
    dns = struct.pack("!HHHHHH", 0x5054, 0x8180, 1, 0, 0, 0)
    ntp = bytes([0x24]) + bytes(47)
    body = payloads.SYSDESCR_OID
    snmp = b"\x30\x30\x02\x01\x01\x04\x06public\xa2\x23" + b"\x06\x08" + body + b"\x04\x05Linux"
    assert payloads.identify_reply(53, dns) is not None
    assert payloads.identify_reply(53, dns).name == "dns"  # type: ignore[union-attr]
    assert payloads.identify_reply(123, ntp).name == "ntp"  # type: ignore[union-attr]
    info = payloads.identify_reply(161, snmp)
    assert info is not None and (info.name, info.product) == ("snmp", "Linux")
    assert payloads.identify_reply(9, b"echo") is None


@given(st.integers(min_value=0, max_value=65535), st.binary(max_size=600))
def test_reply_recognition_never_raises_on_arbitrary_bytes(port: int, data: bytes) -> None:
    payloads.identify_reply(port, data)
