"""Operator settings: guardrails, limits and how shard pods are built.

One pydantic model, part of the source of truth for the Helm chart's values
schema (:mod:`portolan.models.charts`).  It is read once, at start-up, by
:mod:`portolan.controller.configuring` and injected everywhere else: this
module does no I/O and no module reads the environment at import.
"""

from __future__ import annotations

import ipaddress

import pydantic
import pydantic.alias_generators


class OperatorSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=pydantic.alias_generators.to_camel, populate_by_name=True, extra="forbid"
    )

    allowed_cidrs: list[str] = pydantic.Field(
        default_factory=list, description="If set, every target must lie inside one of these."
    )
    denied_cidrs: list[str] = pydantic.Field(
        default_factory=list, description="No target may lie inside any of these."
    )
    max_probes_per_job: int = pydantic.Field(default=50_000_000, ge=1)
    max_targets_per_job: int = pydantic.Field(default=1 << 20, ge=1)
    max_concurrent_shards_per_namespace: int = pydantic.Field(default=64, ge=1)
    allow_raw_sockets: bool = pydantic.Field(
        default=True,
        description="Allow jobs whose shard pods need CAP_NET_RAW (technique: syn, capture:); "
        "false refuses them with GuardrailViolated.",
    )
    allow_node_inventory: bool = pydantic.Field(
        default=False,
        description="Allow jobs with spec.inventory, whose pods use the node's network and PID namespaces "
        "(hostNetwork, hostPID, CAP_SYS_PTRACE: Pod Security privileged); false refuses them with GuardrailViolated.",
    )
    inventory_namespaces: list[str] = pydantic.Field(
        default_factory=list,
        description="With allowNodeInventory, the namespaces whose ScanJobs may ask for node inventories; a job "
        "elsewhere is Rejected with GuardrailViolated (empty: every namespace the operator watches).",
    )
    status_byte_budget: int = pydantic.Field(default=256 * 1024, ge=16 * 1024, le=1024 * 1024)
    shard_open_ports_cap: int = pydantic.Field(
        default=200, ge=1, description="Open ports a shard lists in status; more are counted."
    )
    shard_command: list[str] = pydantic.Field(default_factory=lambda: ["portolan", "shard"])
    shard_image: str = "ghcr.io/portolan/portolan:0.1.0"
    shard_service_account: str = "portolan-shard"
    shard_heartbeat_seconds: float = pydantic.Field(default=2.0, gt=0)
    reconcile_interval_seconds: float = pydantic.Field(default=2.0, gt=0)
    metrics_port: int = pydantic.Field(default=8080, ge=0, le=65535)
    liveness_port: int = pydantic.Field(default=0, ge=0, le=65535, description="kopf's /healthz; 0 is off")
    scanner_egress_policy: bool = pydantic.Field(
        default=False,
        description="Create, per ScanJob, a NetworkPolicy that lets its shard pods reach the targets "
        "(for namespaces that deny egress by default); it is owned by the job and goes with it.",
    )
    audit_namespaces: list[str] = pydantic.Field(
        default_factory=list,
        description="Namespaces ReachabilityAudits may place probe and canary pods in; an audit that needs any "
        "other is Rejected with GuardrailViolated (empty: audits are refused).",
    )
    max_pairs_per_audit: int = pydantic.Field(default=20_000, ge=1)
    probe_service_account: str = pydantic.Field(
        default="portolan-probe", description="ServiceAccount of probe pods (in each audit namespace).")
    peering: str | None = pydantic.Field(
        default="portolan",
        description="Name of the Lease replicas elect their leader on (operator's namespace); null: standalone."
    )

    @pydantic.field_validator("allowed_cidrs", "denied_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value
