"""ScanSchedule: ScanJobs on a schedule, and what changed between runs (drift).

The spec carries a cron expression (UTC) or ``@every <duration>``, a concurrency
policy like a CronJob's, history limits, and the ScanJob spec each run gets.  The
status says when the last and next runs are, which jobs are active, and the drift
between the two latest completed runs: open ports that appeared and disappeared,
per vantage (pool).
"""

from __future__ import annotations

import enum

import pydantic
import pydantic.alias_generators

from portolan.models import scanjobs, statuses

KIND = "ScanSchedule"
PLURAL = "scanschedules"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=pydantic.alias_generators.to_camel, populate_by_name=True, extra="forbid"
    )


class ConcurrencyPolicy(enum.StrEnum):
    FORBID = "Forbid"  # skip a run while the previous one is still going
    ALLOW = "Allow"
    REPLACE = "Replace"  # delete the running one, start the new one


class JobTemplateMeta(_Model):
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    annotations: dict[str, str] = pydantic.Field(default_factory=dict)


class JobTemplate(_Model):
    metadata: JobTemplateMeta = pydantic.Field(default_factory=JobTemplateMeta)
    spec: scanjobs.ScanJobSpec


class ScanScheduleSpec(_Model):
    """What a ScanSchedule asks for."""

    schedule: str = pydantic.Field(
        description="Five-field cron expression in UTC (minute hour day-of-month month day-of-week), "
        "@hourly/@daily/@weekly/@monthly, or @every <n>s|m|h."
    )
    suspend: bool = False
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    starting_deadline_seconds: int | None = pydantic.Field(
        default=None, ge=1, description="Skip a run missed by more than this (e.g. while the operator was down)."
    )
    successful_jobs_history_limit: int = pydantic.Field(default=3, ge=1, le=100)
    failed_jobs_history_limit: int = pydantic.Field(default=1, ge=0, le=100)
    job_template: JobTemplate


class _Status(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=pydantic.alias_generators.to_camel, populate_by_name=True, extra="ignore"
    )


class PortChange(_Status):
    pool: str
    host: str
    port: int
    protocol: str
    service: str | None = None


class Drift(_Status):
    """Open ports that differ between two completed runs (``previous`` -> ``latest``)."""

    previous: str
    latest: str
    opened: list[PortChange] = pydantic.Field(default_factory=list)
    closed: list[PortChange] = pydantic.Field(default_factory=list)
    truncated: int = 0  # changes not listed (byte budget)
    partial: bool = False  # a run listed only part of its open ports, so changes may be missing


class ScanScheduleStatus(_Status):
    observed_generation: int | None = None
    conditions: list[statuses.Condition] = pydantic.Field(default_factory=list)
    last_schedule_time: str | None = None
    next_schedule_time: str | None = None
    last_successful_time: str | None = None
    active: list[str] = pydantic.Field(default_factory=list)
    last_job: str | None = None
    runs: int = 0
    drift: Drift | None = None
