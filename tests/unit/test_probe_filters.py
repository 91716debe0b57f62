"""The evidence filter: short tcpdump expressions that cover exactly a scan's targets, plus ICMP."""

from __future__ import annotations

import ipaddress

import pytest

from portolan.capture import filters


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        (["198.18.0.10"], "host 198.18.0.10 or icmp or icmp6"),
        (["198.18.0.10", "198.18.0.11"], "net 198.18.0.10/31 or icmp or icmp6"),
        (["198.18.0.9", "198.18.0.10", "198.18.0.11"], "host 198.18.0.9 or net 198.18.0.10/31 or icmp or icmp6"),
        ([str(a) for a in ipaddress.ip_network("198.18.4.0/22")], "net 198.18.4.0/22 or icmp or icmp6"),
        (["::1", "198.18.0.1"], "host 198.18.0.1 or host ::1 or icmp or icmp6"),
        ([], "icmp or icmp6"),
    ],
)
def test_targets_collapse_into_the_fewest_host_and_net_terms(addresses: list[str], expected: str) -> None:
    assert filters.probe_filter(addresses) == expected


def test_scattered_targets_widen_to_slash_24_then_slash_16_until_the_term_limit_holds() -> None:
    scattered = [f"198.18.{block}.{host}" for block in range(40) for host in (1, 100)]
    expression = filters.probe_filter(scattered, limit=32)
    terms = expression.split(" or ")
    assert terms[-2:] == ["icmp", "icmp6"] and len(terms) - 2 <= 32
    covered = [ipaddress.ip_network(t.split()[1]) for t in terms[:-2]]
    assert all(any(ipaddress.ip_address(a) in net for net in covered) for a in scattered)
    assert all(net.prefixlen >= 16 for net in covered)


def test_every_evidence_filter_compiles_with_libpcap_within_the_kernels_limit() -> None:
    scattered = [f"198.18.{block}.{host}" for block in range(200) for host in range(0, 250, 7)]
    program = filters.compile_filter(filters.probe_filter(scattered))
    assert 0 < len(program) < 4096
