"""Target expressions: addresses, CIDRs, ranges and hostnames, minus exclusions.

Grammar of one expression (IPv4 and IPv6 alike):

* an address: ``198.18.0.1``, ``::1``
* a CIDR: ``198.18.0.0/28`` (host bits are allowed and ignored, as nmap does)
* a range: ``198.18.0.1-198.18.0.9`` or, for IPv4, the last-octet short form ``198.18.0.1-9``
* a hostname: resolved with the system resolver; every address it has is a target

Expansion is bounded by ``limit`` so a mistyped ``/0`` is an error, not an
out-of-memory kill.  Order is preserved and duplicates are dropped.
Targets and exclusions are handled as address intervals: the distinct
addresses that survive the exclusions are counted before any is enumerated,
so ``0.0.0.0/0`` minus ``0.0.0.0/1`` or an exclusion of 2^96 IPv6 addresses
costs a few interval operations, never a loop over addresses.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import socket
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence

from portolan import errors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[str]]

DEFAULT_LIMIT = 1 << 20
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class Target(typing.NamedTuple):
    """One address to probe, with the name it came from if any."""

    address: str
    hostname: str | None = None

    @property
    def family(self) -> socket.AddressFamily:
        """AF_INET6 for IPv6 addresses, else AF_INET."""
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET


def resolve_host(name: str) -> list[str]:
    """Resolve a hostname with the system resolver; raise TargetError if it has no address."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise errors.TargetError(f"cannot resolve target {name!r}: {exc}") from exc
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _address(text: str, expression: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError as exc:
        raise errors.TargetError(f"malformed address {text!r} in target {expression!r}") from exc


# One parsed expression: (first, last, hostname); first and last are of the same IP version.
Span = tuple[IPAddress, IPAddress, str | None]


def _spans(expression: str, resolve: Resolver) -> list[Span]:
    """An expression as address intervals, without enumerating them."""
    text = expression.strip()
    if not text:
        raise errors.TargetError("empty target expression")
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise errors.TargetError(f"malformed CIDR {text!r}: {exc}") from exc
        return [(network.network_address, network.broadcast_address, None)]
    if "-" in text and (_looks_numeric(text) or not _HOSTNAME.match(text)):
        first_text, _, last_text = text.partition("-")
        first = _address(first_text, text)
        if isinstance(first, ipaddress.IPv4Address) and last_text.isdigit() and last_text.isascii():
            octets = first_text.split(".")
            last = _address(".".join([*octets[:3], last_text]), text)
        else:
            last = _address(last_text, text)
        if first.version != last.version:
            raise errors.TargetError(f"range {text!r} mixes IPv4 and IPv6")
        if int(last) < int(first):
            raise errors.TargetError(f"range {text!r} ends before it starts")
        return [(first, last, None)]
    try:
        address = ipaddress.ip_address(text.strip("[]"))
        return [(address, address, None)]
    except ValueError:
        pass
    if not _HOSTNAME.match(text) or _looks_numeric(text):
        raise errors.TargetError(f"malformed target {text!r}: not an address, CIDR, range or name")
    found = [ipaddress.ip_address(address) for address in resolve(text)]
    return [(address, address, text.rstrip(".")) for address in found]


def _merged(spans: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """(version, first, last) intervals sorted and merged."""
    merged: list[tuple[int, int, int]] = []
    for version, first, last in sorted(spans):
        if merged and merged[-1][0] == version and first <= merged[-1][2] + 1:
            if last > merged[-1][2]:
                merged[-1] = (version, merged[-1][1], last)
        else:
            merged.append((version, first, last))
    return merged


def _minus(
    version: int, first: int, last: int, excluded: list[tuple[int, int, int]]
) -> Iterator[tuple[int, int]]:
    """The parts of [first, last] outside the merged exclusions (a bisect, then a walk over overlaps)."""
    index = bisect.bisect_left(excluded, (version, first, first)) - 1
    index = max(index, 0)
    start = first
    while index < len(excluded) and start <= last:
        e_version, e_first, e_last = excluded[index]
        index += 1
        if e_version != version or e_last < start:
            if e_version > version:
                break
            continue
        if e_first > last:
            break
        if e_first > start:
            yield start, e_first - 1
        start = max(start, e_last + 1)
    if start <= last:
        yield start, last


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9.\-]+", text))


def parse_targets(
    expressions: Sequence[str],
    exclude: Sequence[str] = (),
    *,
    resolve: Resolver = resolve_host,
    limit: int = DEFAULT_LIMIT,
    check_count: Callable[[int], None] | None = None,
) -> list[Target]:
    """Expand target expressions into a de-duplicated, ordered list of targets.

    ``check_count`` sees the number of distinct targets before any is enumerated (it may raise).
    """
    if not expressions:
        raise errors.TargetError("no targets given")
    excluded_spans: list[tuple[int, int, int]] = []
    for expression in exclude:
        try:
            spans = _spans(expression, resolve)
        except errors.TargetError as exc:
            raise errors.TargetError(f"malformed exclusion {expression!r}: {exc}") from exc
        excluded_spans += [(first.version, int(first), int(last)) for first, last, _ in spans]
    excluded = _merged(excluded_spans)
    wanted = [(expression, _spans(expression, resolve)) for expression in expressions]
    distinct = _merged((a.version, int(a), int(b)) for _, spans in wanted for a, b, _ in spans)
    count = sum(b - a + 1 for v, f, z in distinct for a, b in _minus(v, f, z, excluded))
    if count > limit:
        raise errors.TargetError(
            f"targets expand to more than {limit} addresses ({count:,}); split the scan or narrow the CIDRs"
        )
    if not count:
        raise errors.TargetError("every target is excluded: nothing to scan")
    if check_count is not None:
        check_count(count)
    seen: set[int] = set()
    targets: list[Target] = []
    for _, spans in wanted:
        for first, last, hostname in spans:
            cls = type(first)
            for a, b in _minus(first.version, int(first), int(last), excluded):
                for value in range(a, b + 1):
                    key = value if first.version == 4 else -value - 1
                    if key in seen:
                        continue
                    seen.add(key)
                    targets.append(Target(address=str(cls(value)), hostname=hostname))
    return targets


def count_addresses(expressions: Sequence[str]) -> int:
    """Count addresses without expanding (hostnames count as one); for guardrails on huge specs."""
    total = 0
    for expression in expressions:
        text = expression.strip()
        if "/" in text:
            try:
                total += ipaddress.ip_network(text, strict=False).num_addresses
            except ValueError as exc:
                raise errors.TargetError(f"malformed CIDR {text!r}: {exc}") from exc
        else:
            total += 1
    return total
