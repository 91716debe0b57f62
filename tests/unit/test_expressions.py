"""Target and port expressions: what expands to what, and what is rejected with which message."""

from __future__ import annotations

import pytest

from portolan import errors
from portolan.engine import ports, targets


def _no_dns(name: str) -> list[str]:
    raise AssertionError(f"unexpected lookup of {name}")


@pytest.mark.parametrize(
    ("expressions", "exclude", "addresses"),
    [
        (["198.18.0.1"], [], ["198.18.0.1"]),
        (["198.18.0.0/30"], [], ["198.18.0.0", "198.18.0.1", "198.18.0.2", "198.18.0.3"]),
        (["198.18.0.5/31"], [], ["198.18.0.4", "198.18.0.5"]),
        (["198.18.0.1-3"], [], ["198.18.0.1", "198.18.0.2", "198.18.0.3"]),
        (["198.18.0.254-198.18.1.1"], [], ["198.18.0.254", "198.18.0.255", "198.18.1.0", "198.18.1.1"]),
        (["::1", "[::2]"], [], ["::1", "::2"]),
        (["198.18.0.0/30"], ["198.18.0.1", "198.18.0.2/31"], ["198.18.0.0"]),
        (["198.18.0.1", "198.18.0.1/32"], [], ["198.18.0.1"]),
    ],
)
def test_target_expressions_expand_in_order_without_duplicates(
    expressions: list[str], exclude: list[str], addresses: list[str]
) -> None:
    found = targets.parse_targets(expressions, exclude, resolve=_no_dns)
    assert [t.address for t in found] == addresses


def test_hostnames_resolve_to_every_address_and_keep_their_name() -> None:
    found = targets.parse_targets(["lab.test"], resolve=lambda name: ["198.18.0.7", "::1"])
    assert [(t.address, t.hostname) for t in found] == [("198.18.0.7", "lab.test"), ("::1", "lab.test")]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("198.18.0.0/33", "malformed CIDR"),
        ("198.18.0.300", "malformed target"),
        ("198.18.0.9-1", "ends before it starts"),
        ("198.18.0.1-::5", "mixes IPv4 and IPv6"),
        ("bad..name", "malformed target"),
        ("", "empty target"),
    ],
)
def test_malformed_targets_are_rejected_with_a_message_naming_them(expression: str, message: str) -> None:
    with pytest.raises(errors.TargetError, match=message):
        targets.parse_targets([expression], resolve=_no_dns)


def test_a_cidr_larger_than_the_limit_is_rejected_before_expansion_finishes() -> None:
    with pytest.raises(errors.TargetError, match="more than 1000 addresses"):
        targets.parse_targets(["198.18.0.0/15"], limit=1000)


def test_excluding_every_target_is_an_error() -> None:
    with pytest.raises(errors.TargetError, match="every target is excluded"):
        targets.parse_targets(["198.18.0.1"], ["198.18.0.0/24"])


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("22", [22]),
        ("22,80,22", [22, 80]),
        ("1-3,5", [1, 2, 3, 5]),
        ("-3", [1, 2, 3]),
        ("65534-", [65534, 65535]),
        ("0", [0]),
        ("mail", sorted(ports.MAIL)),
    ],
)
def test_port_expressions_expand_sorted_and_unique(expression: str, expected: list[int]) -> None:
    assert ports.parse_ports(expression) == expected


def test_named_sets_cover_what_their_names_promise() -> None:
    assert len(ports.parse_ports("all")) == 65535
    assert ports.parse_ports("well-known") == list(range(1, 1024))
    assert set(ports.WEB) <= set(ports.parse_ports("common"))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("70000", "out of range"),
        ("80-22", "ends before it starts"),
        ("", "empty port expression"),
        ("22,,80", "empty item"),
        ("http", "unknown port item"),
        ("1-99999", "out of range"),
    ],
)
def test_bad_port_expressions_are_rejected_with_a_clear_message(expression: str, message: str) -> None:
    with pytest.raises(errors.PortSpecError, match=message):
        ports.parse_ports(expression)


@pytest.mark.parametrize(
    ("expressions", "exclude", "count"),
    [
        (["0.0.0.0/0"], ["0.0.0.0/1"], 1 << 31),
        (["::/0"], ["::-::ffff:ffff:ffff"], (1 << 128) - (1 << 48)),
        (["198.18.0.0/15", "198.18.0.0/16"], ["198.19.0.0/17"], (1 << 16) + (1 << 15)),
    ],
)
def test_huge_targets_and_exclusions_are_counted_as_intervals_without_enumerating(
    expressions: list[str], exclude: list[str], count: int
) -> None:
    with pytest.raises(errors.TargetError, match=f"more than 1000 addresses \\({count:,}\\)"):
        targets.parse_targets(expressions, exclude, limit=1000)


def test_a_huge_exclusion_leaves_exactly_the_addresses_outside_it() -> None:
    found = targets.parse_targets(["::1", "::ffff:ffff:fffe-::1:0:0:1", "198.18.0.0/30"],
                                  ["::-::ffff:ffff:ffff", "198.18.0.1-2"], limit=10)
    assert [t.address for t in found] == ["::1:0:0:0", "::1:0:0:1", "198.18.0.0", "198.18.0.3"]
