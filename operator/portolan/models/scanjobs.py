"""The ScanJob manifest: what users apply to a cluster and run locally with ``portolan scan -f``.

Only the shape and field-level validation live here; turning targets and port
expressions into concrete probes is the engine's job (``portolan.engine.targets``
and ``portolan.engine.ports``), and cluster-only fields (pools, sharding,
retries, TTL) are ignored by a local run.  Field names are camelCase on the
wire (``populate_by_name`` lets Python use snake_case).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pydantic
import pydantic.alias_generators

from portolan.models import defaults, kinds, rules

API_GROUP = kinds.API_GROUP
API_VERSION = kinds.API_VERSION
KIND = kinds.SCANJOB
PLURAL = kinds.SCANJOBS


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=pydantic.alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
    )


Technique = defaults.Technique


class SelectorKind(enum.StrEnum):
    SERVICE = "Service"
    POD = "Pod"
    NODE = "Node"


class TargetSelector(_Model):
    """Kubernetes objects whose addresses become targets (cluster runs only)."""

    kind: SelectorKind
    namespace: str | None = None
    match_labels: dict[str, str] = pydantic.Field(default_factory=dict)


TargetExpression = Annotated[str, pydantic.Field(
    max_length=rules.TARGET_MAX_LENGTH, json_schema_extra=rules.target_schema())]


class Targets(_Model):
    """What to scan: addresses, CIDRs, ranges and hostnames, minus exclusions."""

    addresses: list[TargetExpression] = pydantic.Field(
        default_factory=list, max_length=rules.TARGETS_MAX_ITEMS,
        description="IPv4/IPv6 addresses, CIDRs (198.18.0.0/24), ranges (198.18.0.1-198.18.0.9) "
        "and hostnames.",
    )
    exclude: list[TargetExpression] = pydantic.Field(
        default_factory=list, max_length=rules.TARGETS_MAX_ITEMS, description="Addresses, CIDRs or ranges never to probe."
    )
    selectors: list[TargetSelector] = pydantic.Field(
        default_factory=list, description="Kubernetes Services, Pods or Nodes to scan."
    )

    @pydantic.model_validator(mode="after")
    def _not_empty(self) -> Targets:
        if not self.addresses and not self.selectors:
            raise ValueError("targets: give at least one address or selector")
        return self


class Timing(_Model):
    """Rate caps, timeouts and retransmissions."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minRttTimeoutMs) || !has(self.maxRttTimeoutMs) || "
                    "self.minRttTimeoutMs <= self.maxRttTimeoutMs",
                    "message": "minRttTimeoutMs must not exceed maxRttTimeoutMs",
                }
            ]
        }
    )

    max_rate: int | None = pydantic.Field(
        default=None, ge=defaults.TIMING_BOUNDS["max_rate"][0], description="Global cap on probes (packets) per second."
    )
    max_host_rate: int | None = pydantic.Field(
        default=None, ge=defaults.TIMING_BOUNDS["max_host_rate"][0], description="Cap on probes per second to any one host."
    )
    concurrency: int = pydantic.Field(
        default=defaults.CONCURRENCY, ge=defaults.TIMING_BOUNDS["concurrency"][0],
        le=defaults.TIMING_BOUNDS["concurrency"][1], description="Probes in flight at once (also bounded by "
        "the open-file limit)."
    )
    retries: int = pydantic.Field(
        default=defaults.RETRIES, ge=defaults.TIMING_BOUNDS["retries"][0], le=defaults.TIMING_BOUNDS["retries"][1],
        description="Retransmissions for a port that stays silent."
    )
    initial_rtt_timeout_ms: int = pydantic.Field(
        default=defaults.INITIAL_RTT_TIMEOUT_MS, ge=defaults.TIMING_BOUNDS["initial_rtt_timeout_ms"][0],
        le=defaults.TIMING_BOUNDS["initial_rtt_timeout_ms"][1])
    min_rtt_timeout_ms: int = pydantic.Field(
        default=defaults.MIN_RTT_TIMEOUT_MS, ge=defaults.TIMING_BOUNDS["min_rtt_timeout_ms"][0],
        le=defaults.TIMING_BOUNDS["min_rtt_timeout_ms"][1])
    max_rtt_timeout_ms: int = pydantic.Field(
        default=defaults.MAX_RTT_TIMEOUT_MS, ge=defaults.TIMING_BOUNDS["max_rtt_timeout_ms"][0],
        le=defaults.TIMING_BOUNDS["max_rtt_timeout_ms"][1])

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Timing:
        if not self.min_rtt_timeout_ms <= self.max_rtt_timeout_ms:
            raise ValueError(
                f"timing: minRttTimeoutMs ({self.min_rtt_timeout_ms}) must not exceed maxRttTimeoutMs "
                f"({self.max_rtt_timeout_ms})"
            )
        return self


class Sharding(_Model):
    """How to split one job into shard pods (cluster runs only)."""

    shards: int | None = pydantic.Field(default=None, ge=1, le=1024)
    targets_per_shard: int | None = pydantic.Field(default=None, ge=1)


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Pool(_Model):
    """A vantage point: a set of nodes that scans every target from its own network position."""

    name: str = pydantic.Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
    node_selector: dict[str, str] = pydantic.Field(default_factory=dict)
    affinity: dict[str, Any] | None = None
    tolerations: list[Toleration] = pydantic.Field(default_factory=list)


def _default_protocols() -> list[Literal["tcp", "udp"]]:
    return list(defaults.PROTOCOLS)


class Capture(_Model):
    """Evidence: each shard records its own probe traffic into a volume the user names.

    Needs CAP_NET_RAW, so shard pods of such a job run as root with NET_RAW added: the
    namespace must allow it (Pod Security "privileged").  The claim should be ReadWriteMany
    when pools span nodes.
    """

    persistent_volume_claim: str = pydantic.Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="PersistentVolumeClaim in the job's namespace that receives the files.",
    )
    format: Literal["pcap", "pcapng"] = "pcapng"
    snap_length: int = pydantic.Field(default=65535, ge=64, le=262144, description="Bytes kept per packet.")
    compress: bool = pydantic.Field(default=False, description="gzip each file.")
    rotate_megabytes: int | None = pydantic.Field(
        default=None, ge=1, le=4096, description="Start a new file after this many MiB."
    )


class Expectations(_Model):
    """What the scan should find.  A difference is a finding (ExpectationsMet=False), not a failure."""

    allowed_open_ports: str = pydantic.Field(
        pattern=r"^[0-9a-z, -]*$", max_length=rules.PORTS_MAX_LENGTH,
        json_schema_extra=rules.ports_schema(empty_allowed=True),
        description="Ports that may be open (numbers, ranges, named sets; empty: none); "
        "any other open port is a violation.",
    )


class Inventory(_Model):
    """A listener inventory of the nodes of some pools (cluster runs only).

    One pod per node of each named pool lists the node's listening sockets and their
    processes; it runs with ``hostNetwork`` and ``hostPID`` as root with CAP_SYS_PTRACE and
    CAP_DAC_READ_SEARCH, so the namespace must allow Pod Security "privileged" and the
    operator setting ``allowNodeInventory`` must be true.  Where the job also scans those
    nodes' addresses, each listener is judged exposed, shielded or local-only per vantage.
    """

    pools: list[str] = pydantic.Field(
        min_length=1, max_length=16,
        description="Pools (names from spec.pools, or default without pools) whose nodes are inventoried.",
    )


class ScanJobSpec(_Model):
    """What a ScanJob asks for."""

    targets: Targets
    ports: str = pydantic.Field(
        default=defaults.PORTS,
        pattern=defaults.PORTS_PATTERN, max_length=rules.PORTS_MAX_LENGTH,
        json_schema_extra=rules.ports_schema(empty_allowed=False),
        description="Ports as a comma list of numbers, ranges (1000-2000) and named sets "
        "(common, well-known, web, databases, all).",
    )
    udp_ports: str | None = pydantic.Field(
        default=None, pattern=defaults.PORTS_PATTERN, max_length=rules.PORTS_MAX_LENGTH,
        json_schema_extra=rules.ports_schema(empty_allowed=False),
        description="Ports for UDP if different from `ports`."
    )
    protocols: list[Literal["tcp", "udp"]] = pydantic.Field(default_factory=_default_protocols)
    technique: Technique = Technique.CONNECT
    timing: Timing = pydantic.Field(default_factory=Timing)
    service_detection: bool = defaults.SERVICE_DETECTION
    verify_open: bool = defaults.VERIFY_OPEN
    sharding: Sharding = pydantic.Field(default_factory=Sharding)
    pools: list[Pool] = pydantic.Field(default_factory=list)
    retries: int = pydantic.Field(default=2, ge=0, le=20, description="Shard retries.")
    backoff_seconds: int = pydantic.Field(default=10, ge=0, le=3600)
    active_deadline_seconds: int | None = pydantic.Field(default=None, ge=1)
    ttl_seconds_after_finished: int | None = pydantic.Field(default=None, ge=0)
    suspend: bool = False
    capture: Capture | None = pydantic.Field(
        default=None, description="Record each shard's probe traffic as pcap evidence (needs CAP_NET_RAW)."
    )
    expect: Expectations | None = pydantic.Field(
        default=None, description="Expected results; violations are reported in status and metrics."
    )
    inventory: Inventory | None = pydantic.Field(
        default=None, description="List the listeners of these pools' nodes (host namespaces: needs the operator "
        "setting allowNodeInventory and a namespace that allows Pod Security privileged)."
    )

    @pydantic.field_validator("protocols")
    @classmethod
    def _protocols_unique(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("protocols: give tcp, udp or both")
        if len(set(value)) != len(value):
            raise ValueError("protocols: each protocol at most once")
        return value

    @pydantic.field_validator("pools")
    @classmethod
    def _pool_names_unique(cls, value: list[Pool]) -> list[Pool]:
        names = [pool.name for pool in value]
        if len(set(names)) != len(names):
            raise ValueError("pools: names must be unique")
        return value

    @pydantic.model_validator(mode="after")
    def _inventory_pools_known(self) -> ScanJobSpec:
        if self.inventory is None:
            return self
        known = [pool.name for pool in self.pools] or ["default"]
        unknown = [name for name in self.inventory.pools if name not in known]
        if unknown:
            raise ValueError(f"inventory.pools: {', '.join(unknown)} not among the job's pools ({', '.join(known)})")
        if len(set(self.inventory.pools)) != len(self.inventory.pools):
            raise ValueError("inventory.pools: each pool at most once")
        return self


class ObjectMeta(pydantic.BaseModel):
    """The few metadata fields a local run reads; everything else passes through."""

    model_config = pydantic.ConfigDict(extra="allow")

    name: str = "local"
    namespace: str | None = None
    labels: dict[str, str] = pydantic.Field(default_factory=dict)


class ScanJob(pydantic.BaseModel):
    """A whole ScanJob manifest."""

    model_config = pydantic.ConfigDict(extra="allow", populate_by_name=True)

    api_version: Literal["portolan.dev/v1alpha1"] = pydantic.Field(alias="apiVersion")
    kind: Literal["ScanJob"]
    metadata: ObjectMeta = pydantic.Field(default_factory=ObjectMeta)
    spec: ScanJobSpec
