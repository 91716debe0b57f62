"""Scan results: port states with reasons, services, hosts, summaries.

These models are streamed by the engine (one :class:`PortResult` at a time),
written by the CLI in several formats, and reused by the operator in the
ScanJob status.  States and reason names follow nmap's vocabulary so users can
compare outputs line by line.
"""

from __future__ import annotations

import enum

import pydantic


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


class ServiceInfo(pydantic.BaseModel):
    """What answered on an open port, as far as the engine could tell."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: str
    product: str | None = None
    version: str | None = None
    tls: bool = False
    banner: str | None = pydantic.Field(default=None, max_length=256)
    method: str = "banner"  # banner | probe | payload | port (guessed from the port number)


class PortResult(pydantic.BaseModel):
    """One probed (host, port, protocol) and its verdict."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = pydantic.Field(ge=0, le=65535)
    protocol: Protocol
    state: PortState
    reason: Reason
    reason_ttl: int | None = None
    rtt_ms: float | None = None
    tries: int = 1
    service: ServiceInfo | None = None


class ExtraPorts(pydantic.BaseModel):
    """A group of ports with the same uninteresting verdict, counted instead of listed.

    As in nmap's ``extraports``: a 65,535-port scan lists its few open ports and
    says "65,530 closed tcp ports (conn-refused)" instead of listing them.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    protocol: Protocol
    state: PortState
    reason: Reason
    count: int = pydantic.Field(ge=1)


class HostResult(pydantic.BaseModel):
    """All probed ports of one address: listed ones, plus counted groups."""

    model_config = pydantic.ConfigDict(extra="forbid")

    address: str
    hostname: str | None = None
    ports: list[PortResult] = pydantic.Field(default_factory=list)
    extraports: list[ExtraPorts] = pydantic.Field(default_factory=list)


class ScanNote(pydantic.BaseModel):
    """A remark about the scan as a whole (for instance ICMP rate limiting)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    code: str  # CamelCase, e.g. IcmpRateLimited
    host: str | None = None
    message: str


class ScanSummary(pydantic.BaseModel):
    """Counts over a whole scan."""

    model_config = pydantic.ConfigDict(extra="forbid")

    hosts: int = 0
    probes: int = 0
    packets_sent: int = 0
    states: dict[str, int] = pydantic.Field(default_factory=dict)
    duration_seconds: float = 0.0


class ScanReport(pydantic.BaseModel):
    """A finished (or interrupted) scan: what the CLI prints and the operator aggregates."""

    model_config = pydantic.ConfigDict(extra="forbid")

    scanner: str = "portolan"
    version: str
    args: str = ""
    started: float
    finished: float
    complete: bool = True
    hosts: list[HostResult] = pydantic.Field(default_factory=list)
    summary: ScanSummary = pydantic.Field(default_factory=ScanSummary)
    notes: list[ScanNote] = pydantic.Field(default_factory=list)
    allowed_open_ports: str | None = None  # spec.expect / --allow-open, when given
    unexpected_open: list[PortResult] = pydantic.Field(default_factory=list)  # open ports outside it


class Progress(pydantic.BaseModel):
    """A progress tick for callbacks: how many probes are decided out of how many."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    done: int
    total: int
    open: int = 0
