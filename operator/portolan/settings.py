"""Operator settings: guardrails, limits and how shard pods are built.

One pydantic model, the source of truth for the Helm chart's values schema.  It
is read once, at start-up, by the handlers (from ``PORTOLAN_SETTINGS`` JSON/YAML
file if given) and injected everywhere else: no module reads the environment
at import.
"""

from __future__ import annotations

import ipaddress
import pathlib

import pydantic
import pydantic.alias_generators
import yaml


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
    peering: str | None = pydantic.Field(
        default="portolan", description="kopf peering name for HA; null runs standalone."
    )

    @pydantic.field_validator("allowed_cidrs", "denied_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value


def load(path: str | None, text: str | None = None) -> OperatorSettings:
    """Read settings from a YAML/JSON file, else from YAML text, else the defaults."""
    if path:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) if text else None
    return OperatorSettings.model_validate(data or {})


class Image(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    repository: str = "ghcr.io/portolan/portolan"
    tag: str = "0.1.0"
    pull_policy: str = pydantic.Field(default="IfNotPresent", alias="pullPolicy")


class OperatorValues(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    replicas: int = pydantic.Field(default=2, ge=1, description="More than one uses kopf peering (HA).")
    command: list[str] = pydantic.Field(default_factory=lambda: ["portolan", "operator"])
    resources: dict[str, dict[str, str]] = pydantic.Field(
        default_factory=lambda: {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    )
    watch_namespaces: list[str] = pydantic.Field(
        default_factory=list, alias="watchNamespaces", description="Empty: every namespace."
    )
    settings: OperatorSettings = pydantic.Field(default_factory=OperatorSettings)


class ShardValues(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    namespaces: list[str] = pydantic.Field(
        default_factory=lambda: ["default"],
        description="Namespaces where ScanJobs run: each gets the shard ServiceAccount and its Role.",
    )


class MonitoringValues(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    service_monitor: bool = pydantic.Field(default=False, alias="serviceMonitor")
    prometheus_rule: bool = pydantic.Field(default=False, alias="prometheusRule")
    interval: str = "30s"


class ChartValues(pydantic.BaseModel):
    """The Helm chart's values; ``values.schema.json`` is generated from this model."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    image: Image = pydantic.Field(default_factory=Image)
    operator: OperatorValues = pydantic.Field(default_factory=OperatorValues)
    shard: ShardValues = pydantic.Field(default_factory=ShardValues)
    monitoring: MonitoringValues = pydantic.Field(default_factory=MonitoringValues)
