"""Scheduling ScanJobs: the cron grammar, and what a ScanSchedule should do now.

:func:`parse` reads five-field cron (UTC; lists, ranges, steps, names of months and
days), the ``@hourly``-style macros and ``@every <n>s|m|h``; :meth:`Schedule.next_after`
is the first run time strictly after a moment.  :func:`decide` is pure: from the
schedule object, the ScanJobs it owns and the time, it returns which job to create,
which to delete (Replace policy, history limits) and the status patch, including
the drift between the two latest completed runs.  :func:`step` does the I/O.

Limits: minute resolution for cron (``@every`` goes down to 10 s); day-of-month and
day-of-week combine like Vixie cron (either matches when both are restricted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pydantic

from portolan import errors, evaluation
from portolan.kube import builders, clients
from portolan.models import problems, scanjobs, schedules, statuses

MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
_MONTHS = {name: i for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS),
)
_EVERY = re.compile(r"^@every\s+(\d+)([smh])$")
LABEL_SCHEDULE = f"{scanjobs.API_GROUP}/schedule"
ANNOTATION_SCHEDULED = f"{scanjobs.API_GROUP}/scheduled-time"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A parsed schedule: either cron field sets or a fixed interval."""

    text: str
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    any_day: bool = True
    any_weekday: bool = True
    interval: datetime.timedelta | None = None

    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        """The first run time strictly after ``moment`` (UTC)."""
        moment = moment.astimezone(datetime.UTC)
        if self.interval is not None:
            return moment + self.interval
        candidate = moment.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
        horizon = candidate + datetime.timedelta(days=366 * 5)  # covers leap days; whole days/hours are skipped
        while candidate < horizon:
            if candidate.month not in self.months or not self._day_matches(candidate):
                candidate = (candidate + datetime.timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if candidate.hour not in self.hours:
                candidate = (candidate + datetime.timedelta(hours=1)).replace(minute=0)
                continue
            if candidate.minute not in self.minutes:
                candidate += datetime.timedelta(minutes=1)
                continue
            return candidate
        raise ValueError(f"schedule {self.text!r} never fires")

    def _day_matches(self, moment: datetime.datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # cron: Sunday is 0
        day_ok = moment.day in self.days
        weekday_ok = weekday in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday_ok
        if self.any_weekday:
            return day_ok
        return day_ok or weekday_ok


def parse(text: str) -> Schedule:
    """Parse a schedule; raises ValueError naming the bad part."""
    stripped = text.strip().lower()
    every = _EVERY.match(stripped)
    if every:
        amount = int(every.group(1)) * {"s": 1, "m": 60, "h": 3600}[every.group(2)]
        if amount < 10:
            raise ValueError(f"schedule {text!r}: @every needs at least 10s")
        return Schedule(text=text, interval=datetime.timedelta(seconds=amount))
    expression = MACROS.get(stripped, stripped)
    if expression.startswith("@"):
        raise ValueError(f"schedule {text!r}: unknown macro (use {', '.join(MACROS)} or @every <n>s|m|h)")
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"schedule {text!r}: cron needs 5 fields (minute hour day-of-month month day-of-week)")
    sets = [_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])  # 7 is Sunday too
    return Schedule(text=text, minutes=sets[0], hours=sets[1], days=sets[2], months=sets[3], weekdays=weekdays,
                    any_day=parts[2] == "*", any_weekday=parts[4] == "*")


def _field(part: str, name: str, low: int, high: int, names: Mapping[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
        except ValueError:
            raise ValueError(f"{name}: bad step {step_text!r}") from None
        if step < 1:
            raise ValueError(f"{name}: step must be at least 1")
        if body == "*":
            first, last = low, high
        else:
            first_text, _, last_text = body.partition("-")
            first = _value(first_text, name, low, high, names)
            last = _value(last_text, name, low, high, names) if last_text else (high if step_text else first)
            if last < first:
                raise ValueError(f"{name}: range {body!r} runs backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str, name: str, low: int, high: int, names: Mapping[str, int]) -> int:
    if text in names:
        return names[text]
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a number{' or a name' if names else ''}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is outside {low}-{high}")
    return value


@dataclasses.dataclass(frozen=True)
class JobView:
    """What scheduling needs to know about one ScanJob the schedule owns."""

    name: str
    scheduled: datetime.datetime
    phase: str
    results: Sequence[Mapping[str, Any]] = ()  # status.results, or the spilled ConfigMap's content
    partial: bool = False

    @property
    def finished(self) -> bool:
        """Complete, Failed or Rejected: the run no longer counts as active."""
        return self.phase in (statuses.Phase.COMPLETE, statuses.Phase.FAILED, statuses.Phase.REJECTED)


@dataclasses.dataclass
class Decision:
    """What the schedule decided: a status patch, a ScanJob to create, old runs to delete, Events."""

    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    create: dict[str, Any] | None = None
    delete: list[str] = dataclasses.field(default_factory=list)
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    drift_opened: int = 0  # ports of newly detected drift (a metric); 0 when nothing new was detected
    drift_closed: int = 0


def job_name(schedule_name: str, when: datetime.datetime) -> str:
    """Deterministic per run time (like CronJob's), so a retried create never makes two jobs."""
    return f"{schedule_name[:40]}-{int(when.timestamp()) // 10}"


def decide(body: Mapping[str, Any], jobs: Sequence[JobView], now: datetime.datetime) -> Decision:
    """What the schedule should do at ``now``, given the ScanJobs it owns."""
    meta = body["metadata"]
    generation = meta.get("generation")
    status = schedules.ScanScheduleStatus.model_validate(body.get("status") or {})
    decision = Decision()
    try:
        spec = schedules.ScanScheduleSpec.model_validate(body.get("spec") or {})
        schedule = parse(spec.schedule)
    except (ValueError, TypeError) as exc:  # pydantic.ValidationError is a ValueError
        message = str(exc).splitlines()[0] if isinstance(exc, TypeError) else _first_error(exc)
        conditions = builders.set_condition(status.conditions, "Accepted", False, "InvalidSpec", message,
                                            generation, now)
        if status.observed_generation != generation:
            decision.events.append(("Warning", "InvalidSpec", message))
        decision.status = {"observedGeneration": generation,
                           "conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions]}
        return decision
    conditions = builders.set_condition(status.conditions, "Accepted", True, "Valid",
                                        f"runs on {spec.schedule!r} (UTC)", generation, now)
    ordered = sorted(jobs, key=lambda j: j.scheduled)
    active = [j for j in ordered if not j.finished]
    created = builders.parse_timestamp(meta.get("creationTimestamp")) or now
    last = builders.parse_timestamp(status.last_schedule_time) or created
    due = schedule.next_after(last)
    patch: dict[str, Any] = {}
    if spec.suspend:
        patch["nextScheduleTime"] = None
    elif due <= now:
        latest_due = due
        while (following := schedule.next_after(latest_due)) <= now:  # only the newest missed run counts
            latest_due = following
        patch["lastScheduleTime"] = builders.timestamp(latest_due)
        late = (now - latest_due).total_seconds()
        if spec.starting_deadline_seconds is not None and late > spec.starting_deadline_seconds:
            decision.events.append(("Warning", "MissedSchedule",
                                    f"run due at {builders.timestamp(latest_due)} skipped: {late:.0f} s late, "
                                    f"startingDeadlineSeconds={spec.starting_deadline_seconds}"))
        elif active and spec.concurrency_policy == schedules.ConcurrencyPolicy.FORBID:
            decision.events.append(("Normal", "RunSkipped",
                                    f"run due at {builders.timestamp(latest_due)} skipped: "
                                    f"{active[-1].name} is still running (concurrencyPolicy Forbid)"))
        else:
            if active and spec.concurrency_policy == schedules.ConcurrencyPolicy.REPLACE:
                decision.delete.extend(j.name for j in active)
                active = []
            name = job_name(meta["name"], latest_due)
            decision.create = _job_manifest(body, spec, name, latest_due)
            decision.events.append(("Normal", "RunStarted", f"created ScanJob {name}"))
            patch["lastJob"] = name
            patch["runs"] = status.runs + 1
            active = [*active, JobView(name, latest_due, statuses.Phase.PENDING)]
        patch["nextScheduleTime"] = builders.timestamp(schedule.next_after(latest_due))
    else:
        patch["nextScheduleTime"] = builders.timestamp(due)
    patch["active"] = [j.name for j in active]
    finished = [j for j in ordered if j.finished and j.name not in decision.delete]
    succeeded = [j for j in finished if j.phase == statuses.Phase.COMPLETE]
    failed = [j for j in finished if j.phase != statuses.Phase.COMPLETE]
    drop = succeeded[: max(0, len(succeeded) - spec.successful_jobs_history_limit)]
    drop += failed[: max(0, len(failed) - spec.failed_jobs_history_limit)]
    decision.delete.extend(j.name for j in drop)
    if succeeded:
        patch["lastSuccessfulTime"] = builders.timestamp(succeeded[-1].scheduled)
    if len(succeeded) >= 2:
        drift = evaluation.drift(succeeded[-2].name, succeeded[-2].results, succeeded[-1].name,
                                 succeeded[-1].results, partial=succeeded[-2].partial or succeeded[-1].partial)
        patch["drift"] = drift.model_dump(by_alias=True, mode="json", exclude_none=True)
        changed = len(drift.opened) + len(drift.closed) + drift.truncated
        previous = status.drift
        if (previous is None or previous.latest != drift.latest) and changed:
            decision.drift_opened, decision.drift_closed = len(drift.opened), len(drift.closed)
            decision.events.append(("Warning", "DriftDetected",
                                    f"{succeeded[-1].name} vs {succeeded[-2].name}: {len(drift.opened)} port(s) "
                                    f"opened, {len(drift.closed)} closed"))
        conditions = builders.set_condition(
            conditions, "Drifted", bool(changed), "PortsChanged" if changed else "NoChange",
            f"{len(drift.opened)} opened, {len(drift.closed)} closed between {drift.previous} and {drift.latest}",
            generation, now)
    patch["observedGeneration"] = generation
    patch["conditions"] = [c.model_dump(by_alias=True, exclude_none=True) for c in conditions]
    decision.status = patch
    return decision


def _first_error(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        return problems.describe(exc, prefix="spec.", first_only=True)
    return str(exc)


def _job_manifest(body: Mapping[str, Any], spec: schedules.ScanScheduleSpec, name: str,
                  when: datetime.datetime) -> dict[str, Any]:
    meta = body["metadata"]
    template = spec.job_template
    return {
        "apiVersion": f"{scanjobs.API_GROUP}/{scanjobs.API_VERSION}",
        "kind": scanjobs.KIND,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**template.metadata.labels, LABEL_SCHEDULE: meta["name"]},
            "annotations": {**template.metadata.annotations, ANNOTATION_SCHEDULED: builders.timestamp(when)},
            "ownerReferences": [builders.owner_reference(body, schedules.KIND)],
        },
        "spec": template.spec.model_dump(by_alias=True, mode="json", exclude_none=True),
    }


def job_view(job: Mapping[str, Any], results: Callable[[Mapping[str, Any]], list[dict[str, Any]]]) -> JobView:
    """Reduce a ScanJob body to what scheduling reads; ``results`` fetches spilled results."""
    meta = job["metadata"]
    status = job.get("status") or {}
    scheduled = builders.parse_timestamp((meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED)) or \
        builders.parse_timestamp(meta.get("creationTimestamp")) or datetime.datetime.min.replace(tzinfo=datetime.UTC)
    phase = status.get("phase") or statuses.Phase.PENDING
    found: list[dict[str, Any]] = []
    if phase == statuses.Phase.COMPLETE:
        found = results(job) if status.get("resultsRef") else list(status.get("results") or [])
    partial = any(r.get("openTruncated") for r in found)
    return JobView(meta["name"], scheduled, phase, found, partial)


def step(client: clients.Client, namespace: str, name: str, now: datetime.datetime) -> Decision:
    """One reconciliation of one ScanSchedule against the API: observe, decide, act."""
    body = client.get_schedule(namespace, name)
    owned = client.list_jobs(namespace, f"{LABEL_SCHEDULE}={name}")
    uid = body["metadata"]["uid"]
    mine = [j for j in owned if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])]
    decision = decide(body, [job_view(j, client.job_results) for j in mine], now)
    for job_name_ in decision.delete:
        client.delete_job(namespace, job_name_)
    if decision.create is not None:
        client.create_job(decision.create)
    client.patch_schedule_status(namespace, name, decision.status)
    for kind, reason, message in decision.events:
        with contextlib.suppress(errors.KubeError):  # an Event is a courtesy, as for ScanJobs: never worth a retry
            client.event(body, kind, reason, message, now)
    return decision
