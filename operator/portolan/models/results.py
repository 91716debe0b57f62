"""Scan results: port states with reasons, services, hosts, summaries.

These records are streamed by the engine (one :class:`PortResult` at a time),
written by the CLI in several formats, and summarised by shards into their
ScanShard status.  States and reason names follow nmap's vocabulary so users can
compare outputs line by line.

Plain records, not pydantic models or dataclasses: the engine builds them (it
never parses them from outside), and a local scan must not pay pydantic's import
and model building (~60 ms), nor dataclasses' (~25 ms with inspect), before its
first probe.  Immutable records are NamedTuples; the engine's groups, hosts,
summary and report are small slotted classes (``ExtraPorts`` too: its ``count``
field would shadow ``tuple.count``).  Floats are written as pydantic wrote them:
always with a fraction, ``null`` when not finite.  :func:`as_json` is their one JSON form
(fields in declaration order, ``None`` left out, enums as their values).
Limits: nothing is validated on construction; the engine is the only producer.
"""

from __future__ import annotations

import enum
import typing
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


class ServiceInfo(typing.NamedTuple):
    """What answered on an open port, as far as the engine could tell."""

    name: str
    product: str | None = None
    version: str | None = None
    tls: bool = False
    banner: str | None = None
    method: str = "banner"  # banner | probe | payload | port (guessed from the port number)


class PortResult(typing.NamedTuple):
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


class ScanNote(typing.NamedTuple):
    """A remark about the scan as a whole (for instance ICMP rate limiting)."""

    code: str  # CamelCase, e.g. IcmpRateLimited
    message: str
    host: str | None = None


class Progress(typing.NamedTuple):
    """A progress tick for callbacks: how many probes are decided out of how many."""

    done: int
    total: int
    open: int = 0


class _Mutable:
    """Equality, repr and field order for the mutable records: their ``__slots__``, in the JSON order."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class ExtraPorts(_Mutable):
    """A group of ports with the same uninteresting verdict, counted instead of listed.

    As in nmap's ``extraports``: a 65,535-port scan lists its few open ports and
    says "65,530 closed tcp ports (conn-refused)" instead of listing them.
    """

    __slots__ = ("protocol", "state", "reason", "count")  # noqa: RUF023 (the order is the JSON field order)

    def __init__(self, *, protocol: Protocol, state: PortState, reason: Reason, count: int) -> None:
        self.protocol = protocol
        self.state = state
        self.reason = reason
        self.count = count


class HostResult(_Mutable):
    """All probed ports of one address: listed ones, plus counted groups."""

    __slots__ = ("address", "hostname", "ports", "extraports")  # noqa: RUF023 (the order is the JSON field order)

    def __init__(self, *, address: str, hostname: str | None = None, ports: list[PortResult] | None = None,
                 extraports: list[ExtraPorts] | None = None) -> None:
        self.address = address
        self.hostname = hostname
        self.ports: list[PortResult] = [] if ports is None else ports
        self.extraports: list[ExtraPorts] = [] if extraports is None else extraports


class ScanSummary(_Mutable):
    """Counts over a whole scan."""

    __slots__ = ("hosts", "probes", "packets_sent", "states", "duration_seconds")  # noqa: RUF023 (the order is the JSON field order)

    def __init__(self, *, hosts: int = 0, probes: int = 0, packets_sent: int = 0,
                 states: dict[str, int] | None = None, duration_seconds: float = 0.0) -> None:
        self.hosts = hosts
        self.probes = probes
        self.packets_sent = packets_sent
        self.states: dict[str, int] = {} if states is None else states
        self.duration_seconds = float(duration_seconds)


class ScanReport(_Mutable):
    """A finished (or interrupted) scan: what the CLI prints and the operator aggregates.

    ``allowed_open_ports`` is spec.expect / --allow-open when given; ``unexpected_open`` the open
    ports outside it.
    """

    __slots__ = ("scanner", "version", "args", "started", "finished", "complete", "hosts",  # noqa: RUF023 (JSON order)
                 "summary", "notes", "allowed_open_ports", "unexpected_open")

    def __init__(self, *, version: str, started: float, finished: float, scanner: str = "portolan",
                 args: str = "", complete: bool = True, hosts: list[HostResult] | None = None,
                 summary: ScanSummary | None = None, notes: list[ScanNote] | None = None,
                 allowed_open_ports: str | None = None, unexpected_open: list[PortResult] | None = None) -> None:
        self.scanner = scanner
        self.version = version
        self.args = args
        self.started = float(started)
        self.finished = float(finished)
        self.complete = complete
        self.hosts: list[HostResult] = [] if hosts is None else hosts
        self.summary = ScanSummary() if summary is None else summary
        self.notes: list[ScanNote] = [] if notes is None else notes
        self.allowed_open_ports = allowed_open_ports
        self.unexpected_open: list[PortResult] = [] if unexpected_open is None else unexpected_open


Record = ServiceInfo | PortResult | ExtraPorts | HostResult | ScanNote | ScanSummary | ScanReport | Progress

# Field order of each record in its JSON form (ScanNote keeps the order it always had: code, host, message).
_JSON_FIELDS: dict[type, tuple[str, ...]] = {
    ScanNote: ("code", "host", "message"),
}


def as_data(record: Record) -> dict[str, Any]:
    """A record as JSON-ready data: fields in declaration order, ``None`` fields left out, enums as values."""
    data = _data(record)
    assert isinstance(data, dict)
    return data


def _fields(value: object) -> tuple[str, ...] | None:
    kind = type(value)
    found = _JSON_FIELDS.get(kind)
    if found is not None:
        return found
    if isinstance(value, _Mutable):
        return value.__slots__
    return getattr(kind, "_fields", None)


def _data(value: object) -> object:
    if isinstance(value, float):
        return value if value - value == 0 else None  # inf and nan are not JSON: null, as pydantic wrote them
    if isinstance(value, enum.Enum):
        return value.value
    names = _fields(value)
    if names is not None:
        out: dict[str, object] = {}
        for name in names:
            item = getattr(value, name)
            if item is not None:
                out[name] = _data(item)
        return out
    if isinstance(value, list | tuple):
        return [_data(item) for item in value]
    if isinstance(value, dict):
        return {key: _data(item) for key, item in value.items()}
    return value


def as_json(record: Record, *, indent: int | None = None) -> str:
    """A record's one JSON form (UTF-8 text kept as is; compact unless ``indent``)."""
    import json  # only JSON output loads it

    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(as_data(record), indent=indent, ensure_ascii=False, separators=separators)
