"""Target expressions: addresses, CIDRs, ranges and hostnames, minus exclusions.

Grammar of one expression (IPv4 and IPv6 alike):

* an address: ``198.18.0.1``, ``::1``
* a CIDR: ``198.18.0.0/28`` (host bits are allowed and ignored, as nmap does)
* a range: ``198.18.0.1-198.18.0.9`` or, for IPv4, the last-octet short form ``198.18.0.1-9``
* a hostname: resolved with the system resolver; every address it has is a target

Expansion is bounded by ``limit`` so a mistyped ``/0`` is an error, not an
out-of-memory kill.  Order is preserved and duplicates are dropped.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from collections.abc import Callable, Iterator, Sequence

from portolan import errors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[str]]

DEFAULT_LIMIT = 1 << 20
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$"
)


@dataclasses.dataclass(frozen=True)
class Target:
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


def _expand(expression: str, resolve: Resolver) -> Iterator[tuple[IPAddress, str | None]]:
    text = expression.strip()
    if not text:
        raise errors.TargetError("empty target expression")
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise errors.TargetError(f"malformed CIDR {text!r}: {exc}") from exc
        if network.num_addresses == 1:
            yield network.network_address, None
        else:
            yield from ((address, None) for address in network)
        return
    if "-" in text and (_looks_numeric(text) or not _HOSTNAME.match(text)):
        first_text, _, last_text = text.partition("-")
        first = _address(first_text, text)
        if isinstance(first, ipaddress.IPv4Address) and last_text.isdigit():
            octets = first_text.split(".")
            last = _address(".".join([*octets[:3], last_text]), text)
        else:
            last = _address(last_text, text)
        if first.version != last.version:
            raise errors.TargetError(f"range {text!r} mixes IPv4 and IPv6")
        if int(last) < int(first):
            raise errors.TargetError(f"range {text!r} ends before it starts")
        cls = type(first)
        yield from ((cls(value), None) for value in range(int(first), int(last) + 1))
        return
    try:
        yield ipaddress.ip_address(text.strip("[]")), None
        return
    except ValueError:
        pass
    if not _HOSTNAME.match(text) or _looks_numeric(text):
        raise errors.TargetError(f"malformed target {text!r}: not an address, CIDR, range or name")
    for address in resolve(text):
        yield ipaddress.ip_address(address), text.rstrip(".")


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9.\-]+", text))


def parse_targets(
    expressions: Sequence[str],
    exclude: Sequence[str] = (),
    *,
    resolve: Resolver = resolve_host,
    limit: int = DEFAULT_LIMIT,
) -> list[Target]:
    """Expand target expressions into a de-duplicated, ordered list of targets."""
    if not expressions:
        raise errors.TargetError("no targets given")
    excluded: set[IPAddress] = set()
    excluded_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for expression in exclude:
        if "/" in expression:
            try:
                excluded_networks.append(ipaddress.ip_network(expression.strip(), strict=False))
            except ValueError as exc:
                raise errors.TargetError(f"malformed exclusion {expression!r}: {exc}") from exc
        else:
            excluded.update(address for address, _ in _expand(expression, resolve))
    seen: set[IPAddress] = set()
    targets: list[Target] = []
    for expression in expressions:
        for address, hostname in _expand(expression, resolve):
            if address in seen or address in excluded:
                continue
            if any(address in network for network in excluded_networks):
                continue
            seen.add(address)
            targets.append(Target(address=str(address), hostname=hostname))
            if len(targets) > limit:
                raise errors.TargetError(
                    f"targets expand to more than {limit} addresses; split the scan or narrow "
                    "the CIDRs"
                )
    if not targets:
        raise errors.TargetError("every target is excluded: nothing to scan")
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
