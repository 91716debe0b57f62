"""The ScanJob status (phase and conditions for humans and tools, aggregated results) and the ScanShard kind.

Each shard of a job is its own ``ScanShard`` object (named by
:func:`portolan.kube.builders.scan_shard_name`, owned by the job): its spec is the
shard's slice of the plan (:class:`ShardPlan`), its status what the shard reports
(:class:`ShardStatus`: the shard pod writes progress, counts and open ports; the
operator attempts, errors and retries).  A shard's write touches only its own small
object, so the API and etcd write volume per shard does not grow with the number
of shards (it once rewrote the whole ScanJob, plan and every shard's entry, on every
write).  The ScanJob's status stays bounded: the shard count, the aggregated
results (capped; past the byte budget they go to a ConfigMap named in
``resultsRef``), conditions and summaries.

Inside the operator a job is reconciled on a *view*, :class:`ScanJobStatus` with
``plan`` and ``shards`` filled in from the job's ScanShard objects; those two fields
are never written to the ScanJob (the generated CRD leaves them out, so the API
server would prune them).  A retried shard overwrites its object's status, so
results are never duplicated.
"""

from __future__ import annotations

import enum

import pydantic
import pydantic.alias_generators

from portolan.models import kinds


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=pydantic.alias_generators.to_camel, populate_by_name=True, extra="ignore"
    )


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    REJECTED = "Rejected"


class ShardPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    RETRYING = "Retrying"
    FAILED = "Failed"


class Condition(_Model):
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None


class OpenPort(_Model):
    """One open port as seen from one vantage."""

    host: str
    port: int
    protocol: str
    service: str | None = None


class ShardKind(enum.StrEnum):
    SCAN = "scan"
    INVENTORY = "inventory"


class ShardPlan(_Model):
    """What one shard probes (compact target ranges and a port expression), or which node it inventories.

    An inventory shard (``kind: inventory``) lists the listeners of ``node``; its ``targets``
    are that node's addresses (what its listeners are judged on) and it sends no probe.  A scan
    shard with a ``node`` is one slice of a UDP spread, pinned to that node.
    """

    id: str
    pool: str
    index: int
    targets: list[str]
    ports: str
    udp_ports: str | None = None
    probes: int
    kind: ShardKind = ShardKind.SCAN
    node: str | None = pydantic.Field(
        default=None, description="The node this shard is pinned to: the node an inventory shard lists, or, "
        "for a scan shard, the node of its slice of a UDP spread (each slice from its own node: own source "
        "address, own ICMP budget at the targets).")


class ShardCapture(_Model):
    """Where one shard attempt's evidence went, relative to the claim's root."""

    persistent_volume_claim: str
    files: list[str] = pydantic.Field(default_factory=list)
    filter: str | None = None
    packets: int = 0
    dropped: int = 0
    error: str | None = None


class NodeListener(_Model):
    """One listening socket of a node, as its inventory pod saw it (the first owner only)."""

    protocol: str
    address: str
    port: int
    user: str | None = None
    pid: int | None = None
    command: str | None = None
    pod_uid: str | None = None
    note: str | None = None


class ShardStatus(_Model):
    """What one shard reports (its pod writes it) and what the operator adds (attempts, errors)."""

    pool: str | None = None
    node: str | None = None
    pod: str | None = None
    attempt: int = 0
    phase: ShardPhase = ShardPhase.PENDING
    done: int = 0
    total: int = 0
    states: dict[str, int] = pydantic.Field(default_factory=dict)
    open: list[OpenPort] = pydantic.Field(default_factory=list)
    open_truncated: int = 0
    last_error: str | None = None
    finished_attempt: int | None = None
    heartbeat: str | None = None
    retry_after: str | None = None
    capture: ShardCapture | None = None
    avoid_nodes: list[str] = pydantic.Field(default_factory=list)  # nodes earlier attempts were lost on
    listeners: list[NodeListener] = pydantic.Field(default_factory=list)  # inventory shards: capped
    listeners_truncated: int = 0  # listeners counted but not listed
    listener_notes: list[str] = pydantic.Field(default_factory=list)


class ListenerExposure(_Model):
    """A node's listener judged by the job's scans: exposed from which vantages, shielded, or local-only."""

    node: str
    protocol: str
    address: str
    port: int
    command: str | None = None
    exposure: str  # exposed | shielded | local-only | unknown | not-scanned
    exposed_from: list[str] = pydantic.Field(default_factory=list)
    shielded_from: list[str] = pydantic.Field(default_factory=list)
    allowed: bool | None = None  # within expect.allowedOpenPorts (None: no expectations)


class InventoryResult(_Model):
    """The listeners of the inventoried nodes, judged (listed up to a cap, exposed ones first; all counted)."""

    nodes: int = 0
    missing: list[str] = pydantic.Field(default_factory=list)  # nodes whose inventory shard did not succeed
    listeners: int = 0  # every listener reported, listed or not
    counts: dict[str, int] = pydantic.Field(default_factory=dict)  # exposure -> listeners (of those listed)
    listed: list[ListenerExposure] = pydantic.Field(default_factory=list)
    truncated: int = 0  # listeners not listed here (by the shards' caps or this list's)


class Violation(_Model):
    """An open port the job's expectations do not allow, from one vantage."""

    pool: str
    host: str
    port: int
    protocol: str
    service: str | None = None
    listener: str | None = None  # "command on node" when the port is a known node listener


class ExpectationResult(_Model):
    allowed_open_ports: str
    violated: int = 0
    violations: list[Violation] = pydantic.Field(default_factory=list)  # capped; ``violated`` counts all
    partial: bool = False  # some open ports were only counted, not listed, so violations may be missing


class VantageResult(_Model):
    """Aggregated results of one pool (vantage)."""

    pool: str
    states: dict[str, int] = pydantic.Field(default_factory=dict)
    open: list[OpenPort] = pydantic.Field(default_factory=list)
    open_truncated: int = 0


KIND_SHARD = kinds.SCANSHARD
PLURAL_SHARDS = kinds.SCANSHARDS
VIEW_ONLY = ("plan", "shards")  # ScanJobStatus fields filled from the ScanShard objects, never stored in the job


class ScanJobStatus(_Model):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    conditions: list[Condition] = pydantic.Field(default_factory=list)
    shard_count: int | None = pydantic.Field(
        default=None, description="How many shards the plan has; each is a ScanShard object owned by this job "
        "(kubectl get scanshards -l portolan.dev/job=NAME). Set once the job is planned.")
    plan: list[ShardPlan] = pydantic.Field(default_factory=list)  # view only: the ScanShards' specs
    shards: dict[str, ShardStatus] = pydantic.Field(default_factory=dict)  # view only: the ScanShards' statuses
    results: list[VantageResult] = pydantic.Field(default_factory=list)
    results_ref: str | None = None
    summary: str | None = None  # "succeeded/total" shards, for printer columns
    progress: str | None = None  # probes decided, as a percentage
    open_ports: int = 0
    expectations: ExpectationResult | None = None
    inventory: InventoryResult | None = None
    start_time: str | None = None
    completion_time: str | None = None
