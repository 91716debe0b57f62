"""The Helm chart's values: ``charts/portolan/values.schema.json`` is generated from :class:`ChartValues`."""

from __future__ import annotations

import pydantic

from portolan.models import settings as operator_settings


class Image(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    repository: str = "ghcr.io/portolan/portolan"
    tag: str = "0.1.0"
    pull_policy: str = pydantic.Field(default="IfNotPresent", alias="pullPolicy")


class OperatorValues(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    replicas: int = pydantic.Field(
        default=2, ge=1, description="More than one elects a leader on a Lease (HA); the others stand by.")
    command: list[str] = pydantic.Field(default_factory=lambda: ["portolan", "operator"])
    resources: dict[str, dict[str, str]] = pydantic.Field(
        default_factory=lambda: {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    )
    watch_namespaces: list[str] = pydantic.Field(
        default_factory=list, alias="watchNamespaces", description="Empty: every namespace."
    )
    settings: operator_settings.OperatorSettings = pydantic.Field(default_factory=operator_settings.OperatorSettings)


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
