"""The evidence filter: short tcpdump expressions that cover exactly a scan's targets, plus ICMP."""

from __future__ import annotations

import ipaddress

import pytest

from portolan.capture import filters

V4 = "icmp[icmptype] == icmp-unreach or icmp[icmptype] == icmp-timxceed"
V6 = "icmp6[icmp6type] == icmp6-destinationunreach or icmp6[icmp6type] == icmp6-timeexceeded"


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        (["198.18.0.10"], f"host 198.18.0.10 or {V4}"),
        (["198.18.0.10", "198.18.0.11"], f"net 198.18.0.10/31 or {V4}"),
        (["198.18.0.9", "198.18.0.10", "198.18.0.11"], f"host 198.18.0.9 or net 198.18.0.10/31 or {V4}"),
        ([str(a) for a in ipaddress.ip_network("198.18.4.0/22")], f"net 198.18.4.0/22 or {V4}"),
        (["::1"], f"host ::1 or {V6}"),
        (["::1", "198.18.0.1"], f"host 198.18.0.1 or host ::1 or {V4} or {V6}"),
        ([], f"{V4} or {V6}"),
    ],
)
def test_targets_collapse_into_the_fewest_host_and_net_terms(addresses: list[str], expected: str) -> None:
    assert filters.probe_filter(addresses) == expected


def test_scattered_targets_widen_to_slash_24_then_slash_16_until_the_term_limit_holds() -> None:
    scattered = [f"198.18.{block}.{host}" for block in range(40) for host in (1, 100)]
    expression = filters.probe_filter(scattered, limit=32)
    assert expression.endswith(f" or {V4}")
    terms = expression.removesuffix(f" or {V4}").split(" or ")
    assert len(terms) <= 32
    covered = [ipaddress.ip_network(t.split()[1]) for t in terms]
    assert all(any(ipaddress.ip_address(a) in net for net in covered) for a in scattered)
    assert all(net.prefixlen >= 16 for net in covered)


def test_every_evidence_filter_compiles_with_libpcap_within_the_kernels_limit() -> None:
    scattered = [f"198.18.{block}.{host}" for block in range(200) for host in range(0, 250, 7)]
    program = filters.compile_filter(filters.probe_filter(scattered))
    assert 0 < len(program) < 4096
