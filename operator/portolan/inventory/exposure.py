"""Joining the inside view with the outside view: is each local listener exposed, shielded or local-only?

Pure: a list of :class:`~portolan.inventory.listening.Listener` and the scan's
verdicts in, one :class:`Exposure` per listener out.

* ``local-only`` — bound to a loopback address: nothing outside this host reaches it;
* ``exposed`` — the scan reached it (``open``) on at least one address it listens on;
* ``shielded`` — it listens, but the scan found the port filtered, or refused by
  something in between (``closed`` although a socket listens: a reject rule);
* ``unknown`` — UDP ``open|filtered``: a listener that does not answer the
  probe looks exactly like a dropped port;
* ``not-scanned`` — the scan probed none of the addresses and ports it listens on.

:func:`judge_from_vantages` judges a node's listener in a cluster job the same way,
per vantage (pool): from the node's addresses each vantage probed and the open
ports it found; there only open ports are listed, so a TCP port probed and not
found open is ``shielded`` (filtered or refused although it listens), a UDP one
``unknown``, and so is any port of a vantage whose open ports were only counted.

A wildcard listener (``0.0.0.0``, ``::``) covers every scanned address of its
family; ``::`` also covers IPv4 addresses (Linux's default dual-stack sockets;
an ``IPV6_V6ONLY`` listener would be judged on IPv4 verdicts it never saw).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence

from portolan.inventory import listening
from portolan.models import results

EXPOSED = "exposed"
SHIELDED = "shielded"
LOCAL_ONLY = "local-only"
UNKNOWN = "unknown"
NOT_SCANNED = "not-scanned"

Verdicts = Mapping[tuple[str, int, str], results.PortResult]  # (address, port, protocol) -> verdict


@dataclasses.dataclass(frozen=True)
class Exposure:
    """One listener and what the scan says about it."""

    listener: listening.Listener
    exposure: str
    reached_on: tuple[str, ...] = ()  # scanned addresses where it was open
    seen: tuple[str, ...] = ()  # "address: state (reason)" for every scanned address it covers


def covers(listener_address: str, scanned: str) -> bool:
    """Whether a listener bound to ``listener_address`` receives what is sent to ``scanned``."""
    bound = ipaddress.ip_address(listener_address)
    target = ipaddress.ip_address(scanned)
    if bound == target:
        return True
    if not bound.is_unspecified:
        return False
    return bound.version == target.version or bound.version == 6


def classify(listeners: Iterable[listening.Listener], verdicts: Verdicts) -> list[Exposure]:
    """The exposure of every listener against the scan's verdicts."""
    by_port: dict[tuple[int, str], list[results.PortResult]] = {}
    for (_address, port, protocol), verdict in verdicts.items():
        by_port.setdefault((port, protocol), []).append(verdict)
    judged: list[Exposure] = []
    for listener in listeners:
        if listener.loopback:
            judged.append(Exposure(listener, LOCAL_ONLY))
            continue
        covered = sorted((v for v in by_port.get((listener.port, listener.protocol), ())
                          if covers(listener.address, v.host)), key=lambda v: v.host)
        judged.append(_judge(listener, covered))
    return judged


def _judge(listener: listening.Listener, covered: Sequence[results.PortResult]) -> Exposure:
    seen = tuple(f"{v.host}: {v.state.value} ({v.reason.value})" for v in covered)
    if not covered:
        return Exposure(listener, NOT_SCANNED)
    reached = tuple(v.host for v in covered if v.state == results.PortState.OPEN)
    if reached:
        return Exposure(listener, EXPOSED, reached, seen)
    if all(v.state == results.PortState.OPEN_FILTERED for v in covered):
        return Exposure(listener, UNKNOWN, (), seen)
    return Exposure(listener, SHIELDED, (), seen)


@dataclasses.dataclass(frozen=True)
class Vantage:
    """What one vantage (pool) of a cluster job probed and found open."""

    name: str
    scanned: Callable[[str, int, str], bool]  # was (address, port, protocol) probed from here?
    open: frozenset[tuple[str, int, str]]  # (address, port, protocol) found open
    complete: bool = True  # every open port is listed (none was only counted)


@dataclasses.dataclass(frozen=True)
class Judged:
    """A node listener's exposure across vantages."""

    exposure: str
    exposed_from: tuple[str, ...] = ()
    shielded_from: tuple[str, ...] = ()


def judge_from_vantages(address: str, port: int, protocol: str, node_addresses: Sequence[str],
                        vantages: Sequence[Vantage]) -> Judged:
    """The exposure of a listener bound to ``address`` on a node with ``node_addresses``, from each vantage.

    ``exposed`` when some vantage found it open on an address it listens on; else ``shielded``
    when some vantage probed it (TCP, every open port listed) and did not; else ``unknown``
    (UDP silence, or open ports only counted); ``not-scanned`` when no vantage probed it;
    ``local-only`` when bound to loopback.
    """
    if ipaddress.ip_address(address).is_loopback:
        return Judged(LOCAL_ONLY)
    covered = [a for a in node_addresses if covers(address, a)]
    exposed: list[str] = []
    shielded: list[str] = []
    unknown = False
    for vantage in vantages:
        probed = [a for a in covered if vantage.scanned(a, port, protocol)]
        if not probed:
            continue
        if any((a, port, protocol) in vantage.open for a in probed):
            exposed.append(vantage.name)
        elif protocol == "udp" or not vantage.complete:
            unknown = True
        else:
            shielded.append(vantage.name)
    if exposed:
        return Judged(EXPOSED, tuple(exposed), tuple(shielded))
    if shielded:
        return Judged(SHIELDED, (), tuple(shielded))
    return Judged(UNKNOWN if unknown else NOT_SCANNED)
