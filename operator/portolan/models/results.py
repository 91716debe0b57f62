"""Scan results: port states with reasons, services, hosts, summaries.

These records are streamed by the engine (one :class:`PortResult` at a time),
written by the CLI in several formats, and summarised by shards into their
ScanShard status.  States and reason names follow nmap's vocabulary so users can
compare outputs line by line.

Plain dataclasses, not pydantic models: the engine builds them (it never parses
them from outside), and a local scan must not pay pydantic's import and model
building (~60 ms) before its first probe.  :func:`as_json` is their one JSON form
(fields in declaration order, ``None`` left out, enums as their values).
Limits: nothing is validated on construction; the engine is the only producer.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any


class Protocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


class PortState(enum.StrEnum):
    """nmap's port states."""

    OPEN = "open"
    CLOSED = "closed"
    FILTERED = "filtered"
    UNFILTERED = "unfiltered"
    OPEN_FILTERED = "open|filtered"
    CLOSED_FILTERED = "closed|filtered"


class Reason(enum.StrEnum):
    """Why a port got its state (nmap's reason names where one exists)."""

    SYN_ACK = "syn-ack"  # TCP handshake completed (connect ok / SYN-ACK)
    CONN_REFUSED = "conn-refused"  # TCP RST answered a connect
    RESET = "reset"  # TCP RST (raw mode)
    NO_RESPONSE = "no-response"  # silence after every retry
    UDP_RESPONSE = "udp-response"  # a UDP datagram came back
    PORT_UNREACH = "port-unreach"  # ICMP type 3 code 3
    NET_UNREACH = "net-unreach"  # ICMP type 3 code 0
    HOST_UNREACH = "host-unreach"  # ICMP type 3 code 1
    PROTO_UNREACH = "proto-unreach"  # ICMP type 3 code 2
    NET_PROHIBITED = "net-prohibited"  # ICMP type 3 code 9
    HOST_PROHIBITED = "host-prohibited"  # ICMP type 3 code 10
    ADMIN_PROHIBITED = "admin-prohibited"  # ICMP type 3 code 13
    ICMP_OTHER = "icmp-other"  # any other ICMP error
    LOCAL_ERROR = "local-error"  # the local stack refused (no route, ARP failure)
    SELF_CONNECT = "self-connect"  # a loopback connect that met itself: nothing listens


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServiceInfo:
    """What answered on an open port, as far as the engine could tell."""

    name: str
    product: str | None = None
    version: str | None = None
    tls: bool = False
    banner: str | None = None
    method: str = "banner"  # banner | probe | payload | port (guessed from the port number)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PortResult:
    """One probed (host, port, protocol) and its verdict."""

    host: str
    port: int
    protocol: Protocol
    state: PortState
    reason: Reason
    reason_ttl: int | None = None
    rtt_ms: float | None = None
    tries: int = 1
    service: ServiceInfo | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExtraPorts:
    """A group of ports with the same uninteresting verdict, counted instead of listed.

    As in nmap's ``extraports``: a 65,535-port scan lists its few open ports and
    says "65,530 closed tcp ports (conn-refused)" instead of listing them.
    """

    protocol: Protocol
    state: PortState
    reason: Reason
    count: int


@dataclasses.dataclass(slots=True, kw_only=True)
class HostResult:
    """All probed ports of one address: listed ones, plus counted groups."""

    address: str
    hostname: str | None = None
    ports: list[PortResult] = dataclasses.field(default_factory=list)
    extraports: list[ExtraPorts] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScanNote:
    """A remark about the scan as a whole (for instance ICMP rate limiting)."""

    code: str  # CamelCase, e.g. IcmpRateLimited
    host: str | None = None
    message: str


@dataclasses.dataclass(slots=True, kw_only=True)
class ScanSummary:
    """Counts over a whole scan."""

    hosts: int = 0
    probes: int = 0
    packets_sent: int = 0
    states: dict[str, int] = dataclasses.field(default_factory=dict)
    duration_seconds: float = 0.0


@dataclasses.dataclass(slots=True, kw_only=True)
class ScanReport:
    """A finished (or interrupted) scan: what the CLI prints and the operator aggregates."""

    scanner: str = "portolan"
    version: str
    args: str = ""
    started: float
    finished: float
    complete: bool = True
    hosts: list[HostResult] = dataclasses.field(default_factory=list)
    summary: ScanSummary = dataclasses.field(default_factory=ScanSummary)
    notes: list[ScanNote] = dataclasses.field(default_factory=list)
    allowed_open_ports: str | None = None  # spec.expect / --allow-open, when given
    unexpected_open: list[PortResult] = dataclasses.field(default_factory=list)  # open ports outside it


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A progress tick for callbacks: how many probes are decided out of how many."""

    done: int
    total: int
    open: int = 0


Record = ServiceInfo | PortResult | ExtraPorts | HostResult | ScanNote | ScanSummary | ScanReport | Progress


def as_data(record: Record) -> dict[str, Any]:
    """A record as JSON-ready data: fields in declaration order, ``None`` fields left out, enums as values."""
    data = _data(record)
    assert isinstance(data, dict)
    return data


def _data(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, object] = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if item is not None:
                out[field.name] = _data(item)
        return out
    if isinstance(value, list | tuple):
        return [_data(item) for item in value]
    if isinstance(value, dict):
        return {key: _data(item) for key, item in value.items()}
    return value


def as_json(record: Record, *, indent: int | None = None) -> str:
    """A record's one JSON form (UTF-8 text kept as is; compact unless ``indent``)."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(as_data(record), indent=indent, ensure_ascii=False, separators=separators)
