"""Reconciliation: from a ScanJob and its observed pods to the actions that move it forward.

:func:`reconcile` is pure — the job body, the observed shard pods, the resolved
selector addresses and the time go in; a status merge patch, pods to create or
delete, Events and an optional results ConfigMap come out.  The handlers do
the I/O around it, so an operator restart simply reconciles again from the
status and the live pods.

Ownership of status fields: the operator writes phase, conditions, the plan,
aggregated results and, per shard, ``pool``/``attempt``/``pod``/``lastError``/
``retryAfter`` and the phases Pending, Retrying and Failed; each shard pod writes
its own progress, counts, open ports and the phases Running and Succeeded.
Merge patches touch only the keys they name, so the two never overwrite each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
import pydantic.alias_generators

from portolan import errors, evaluation
from portolan.controller import metrics
from portolan.controller.scanjobs import planning
from portolan.engine import ports as ports_
from portolan.kube import builders, clients, codecs
from portolan.models import problems, scanjobs, settings, statuses

TERMINAL = (statuses.Phase.COMPLETE, statuses.Phase.FAILED)
SHARD_DONE = (statuses.ShardPhase.SUCCEEDED, statuses.ShardPhase.FAILED)


@dataclasses.dataclass(frozen=True)
class PodView:
    """What reconciliation needs to know about one shard pod."""

    name: str
    shard: str
    attempt: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    exit_code: int | None = None
    reason: str | None = None
    node: str | None = None
    deleting: bool = False
    job: str = ""

    @property
    def active(self) -> bool:
        """Pending or Running and not being deleted: it holds a concurrency slot."""
        return self.phase in ("Pending", "Running") and not self.deleting


@dataclasses.dataclass(frozen=True)
class Observed:
    """Everything reconcile reads: the job body, its shard pods, the namespace's active shards, the time."""

    body: Mapping[str, Any]
    pods: Sequence[PodView]
    namespace_active_shards: int
    now: datetime.datetime
    selector_addresses: Sequence[str] = ()
    selector_error: str | None = None
    lost_nodes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # node -> what is wrong with it


@dataclasses.dataclass
class Actions:
    """What reconcile decided: a status merge patch, pods to create or delete, Events, objects to write."""

    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    create: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    delete: list[str] = dataclasses.field(default_factory=list)
    force_delete: list[str] = dataclasses.field(default_factory=list)  # pods on lost nodes: no kubelet will confirm
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    results_configmap: dict[str, Any] | None = None  # a ConfigMap manifest (spilled results)
    network_policy: dict[str, Any] | None = None
    delete_job: bool = False
    shard_retries: int = 0  # attempts that failed and will be retried (a metric)
    shard_failures: int = 0  # shards that failed for good (a metric)



class _Run:
    def __init__(self, observed: Observed, config: settings.OperatorSettings) -> None:
        self.observed = observed
        self.config = config
        self.now = observed.now
        self.meta = observed.body["metadata"]
        self.generation = self.meta.get("generation")
        self.status = statuses.ScanJobStatus.model_validate(observed.body.get("status") or {})
        self.actions = Actions()
        self.shard_patch: dict[str, dict[str, Any]] = {}
        self.new_plan = False

    # -- helpers ----------------------------------------------------------------------------

    def condition(self, kind: str, value: bool, reason: str, message: str = "") -> None:
        self.status.conditions = builders.set_condition(
            self.status.conditions, kind, value, reason, message, self.generation, self.now
        )

    def event(self, kind: str, reason: str, message: str) -> None:
        self.actions.events.append((kind, reason, message))

    def touch(self, shard_id: str, **fields: Any) -> None:
        entry = self.status.shards.setdefault(shard_id, statuses.ShardStatus())
        for key, value in fields.items():
            setattr(entry, key, value)
        self.shard_patch.setdefault(shard_id, {}).update(fields)

    # -- phases -----------------------------------------------------------------------------

    def reject(self, reason: str, message: str) -> Actions:
        already = (
            self.status.phase == statuses.Phase.REJECTED
            and self.status.observed_generation == self.generation
        )
        self.status.phase = statuses.Phase.REJECTED
        self.condition("Accepted", False, reason, message)
        self.condition("Progressing", False, reason, "the spec was not accepted")
        self.condition("Failed", True, reason, message)
        if not already:
            self.event("Warning", reason, message)
        return self.finish()

    def run(self) -> Actions:
        if self.status.phase in TERMINAL:
            return self.expire()
        if (
            self.status.phase == statuses.Phase.REJECTED
            and self.status.observed_generation == self.generation
        ):
            return Actions()
        try:
            spec = scanjobs.ScanJobSpec.model_validate(self.observed.body.get("spec") or {})
        except pydantic.ValidationError as exc:
            return self.reject(errors.SpecError.reason, problems.describe(exc, prefix="spec."))
        if not self.status.plan:
            if self.observed.selector_error:
                return self.reject("SelectorFailed", self.observed.selector_error)
            addresses = [*spec.targets.addresses, *self.observed.selector_addresses]
            if not addresses:
                return self.reject("NoTargets", "the selectors matched no object with an address")
            try:
                plan = planning.plan(spec, self.config, addresses)
            except errors.SpecError as exc:
                return self.reject(exc.reason, str(exc))
            self.status.plan = plan
            self.new_plan = True
            self.status.start_time = builders.timestamp(self.now)
            for shard in plan:
                self.touch(shard.id, pool=shard.pool, attempt=0, phase=statuses.ShardPhase.PENDING)
            probes = sum(s.probes for s in plan)
            message = f"planned {len(plan)} shards, {probes} probes"
            self.condition("Accepted", True, "Planned", message)
            self.event("Normal", "Accepted", message)
            if self.config.scanner_egress_policy:
                self.actions.network_policy = builders.scanner_egress_policy(self.observed.body, plan)
        if spec.suspend:
            return self.suspend()
        if self.past_deadline(spec):
            self.stop_at_deadline(spec)
            return self.conclude(spec)
        self.drive_shards(spec)
        return self.conclude(spec)

    def suspend(self) -> Actions:
        for pod in self.observed.pods:
            if pod.active:
                self.actions.delete.append(pod.name)
        if self.status.phase != statuses.Phase.SUSPENDED:
            self.event("Normal", "Suspended", "the job is suspended; shard pods were stopped")
        self.status.phase = statuses.Phase.SUSPENDED
        self.condition("Progressing", False, "Suspended", "spec.suspend is true")
        for shard in self.status.plan:
            entry = self.status.shards.get(shard.id)
            if entry is not None and entry.phase not in SHARD_DONE and entry.attempt > 0:
                # The next attempt starts when the job resumes; no retry is spent on suspension.
                self.touch(shard.id, phase=statuses.ShardPhase.RETRYING, retry_after=None,
                           attempt=entry.attempt - 1 if entry.attempt > 0 else 0)
        return self.finish()

    def past_deadline(self, spec: scanjobs.ScanJobSpec) -> bool:
        """Whether spec.activeDeadlineSeconds has passed since the job started (a question: no actions)."""
        started = builders.parse_timestamp(self.status.start_time)
        if spec.active_deadline_seconds is None or started is None:
            return False
        return (self.now - started).total_seconds() >= spec.active_deadline_seconds

    def stop_at_deadline(self, spec: scanjobs.ScanJobSpec) -> None:
        """Stop every running shard pod and fail every unfinished shard: the deadline passed."""
        for pod in self.observed.pods:
            if pod.active:
                self.actions.delete.append(pod.name)
        for shard in self.status.plan:
            entry = self.status.shards.get(shard.id)
            if entry is None or entry.phase not in SHARD_DONE:
                self.touch(shard.id, phase=statuses.ShardPhase.FAILED,
                           last_error=f"DeadlineExceeded: the job ran past {spec.active_deadline_seconds} s")
        self.event("Warning", "DeadlineExceeded", f"activeDeadlineSeconds={spec.active_deadline_seconds} passed")

    def drive_shards(self, spec: scanjobs.ScanJobSpec) -> None:
        pods: dict[str, list[PodView]] = {}
        for pod in self.observed.pods:
            pods.setdefault(pod.shard, []).append(pod)
        active = self.observed.namespace_active_shards
        created = 0
        waiting = 0
        for shard in self.status.plan:
            entry = self.status.shards.get(shard.id) or statuses.ShardStatus(pool=shard.pool)
            if entry.phase in SHARD_DONE:
                continue
            mine = sorted(pods.get(shard.id, []), key=lambda p: p.attempt)
            if mine and mine[-1].attempt > entry.attempt:
                # A pod from an attempt whose status write was lost: adopt it.
                self.touch(shard.id, attempt=mine[-1].attempt, pod=mine[-1].name,
                           phase=statuses.ShardPhase.PENDING)
                entry = self.status.shards[shard.id]
            due = builders.parse_timestamp(entry.retry_after)
            if entry.attempt == 0 or (
                entry.phase == statuses.ShardPhase.RETRYING and (due is None or due <= self.now)
            ):
                if active >= self.config.max_concurrent_shards_per_namespace:
                    waiting += 1
                    continue
                attempt = entry.attempt + 1
                manifest = builders.shard_pod(
                    self.observed.body, spec, shard, attempt, self.config, len(self.status.plan),
                    avoid_nodes=entry.avoid_nodes,
                )
                self.actions.create.append(manifest)
                self.touch(shard.id, pool=shard.pool, attempt=attempt, pod=manifest["metadata"]["name"],
                           phase=statuses.ShardPhase.PENDING, retry_after=None)
                active += 1
                created += 1
                continue
            if entry.phase == statuses.ShardPhase.RETRYING:
                continue
            current = next((p for p in mine if p.attempt == entry.attempt), None)
            if current is None:
                self.fail(spec, shard.id, entry, f"PodMissing: pod {entry.pod} is gone (deleted, or its node left)")
            elif current.phase == "Succeeded":
                if entry.finished_attempt != entry.attempt:
                    self.fail(spec, shard.id, entry, "NoResults: the shard pod exited 0 without reporting results")
            elif current.phase == "Failed":
                detail = f"exit code {current.exit_code}" if current.exit_code is not None else "failed"
                reason = f" ({current.reason})" if current.reason else ""
                error = entry.last_error if entry.finished_attempt == entry.attempt and entry.last_error else ""
                message = f"ShardPodFailed: pod {current.name} on {current.node or 'no node'}: {detail}{reason}"
                self.fail(spec, shard.id, entry, f"{message}; {error}" if error else message)
            elif current.active and current.node is not None and current.node in self.observed.lost_nodes:
                # A stale attempt that still runs somewhere cannot write results (shards check
                # their attempt), so giving up on it now is safe.
                self.actions.force_delete.append(current.name)
                self.touch(shard.id, avoid_nodes=sorted({*entry.avoid_nodes, current.node}))
                self.fail(spec, shard.id, entry,
                          f"NodeLost: node {current.node} {self.observed.lost_nodes[current.node]}")
            elif current.phase == "Running" and entry.phase == statuses.ShardPhase.PENDING:
                self.touch(shard.id, node=current.node)
        if created:
            self.event("Normal", "ShardsStarted", f"created {created} shard pod(s)")
        if waiting:
            self.condition("Progressing", True, "ConcurrencyLimited",
                           f"{waiting} shard(s) wait for a slot (maxConcurrentShardsPerNamespace)")

    def fail(self, spec: scanjobs.ScanJobSpec, shard_id: str, entry: statuses.ShardStatus, message: str) -> None:
        if entry.attempt <= spec.retries:
            delay = spec.backoff_seconds * (2 ** max(0, entry.attempt - 1))
            due = self.now + datetime.timedelta(seconds=delay)
            self.touch(shard_id, phase=statuses.ShardPhase.RETRYING, last_error=message,
                       retry_after=builders.timestamp(due))
            self.actions.shard_retries += 1
            self.event("Warning", "ShardRetrying",
                       f"shard {shard_id} attempt {entry.attempt} failed ({message}); retrying in {delay} s")
        else:
            self.touch(shard_id, phase=statuses.ShardPhase.FAILED, last_error=message)
            self.actions.shard_failures += 1
            self.event("Warning", "ShardFailed",
                       f"shard {shard_id} failed after {entry.attempt} attempt(s): {message}")

    def conclude(self, spec: scanjobs.ScanJobSpec) -> Actions:
        plan = self.status.plan
        entries = [self.status.shards.get(s.id) or statuses.ShardStatus() for s in plan]
        phases = [e.phase for e in entries]
        succeeded = phases.count(statuses.ShardPhase.SUCCEEDED)
        failed = phases.count(statuses.ShardPhase.FAILED)
        retrying = phases.count(statuses.ShardPhase.RETRYING)
        total_probes = sum(s.probes for s in plan) or 1
        done = sum(min(e.done, s.probes) if e.phase != statuses.ShardPhase.SUCCEEDED else s.probes
                   for e, s in zip(entries, plan, strict=True))
        cap = builders.open_ports_cap(self.config, len(plan)) * 4
        self.status.results = builders.aggregate(plan, self.status.shards, cap)
        self.status.open_ports = sum(len(r.open) + r.open_truncated for r in self.status.results)
        self.status.summary = f"{succeeded}/{len(plan)}"
        progress = f"{100 * done // total_probes}%"
        if failed or retrying:
            reason = "ShardsFailed" if failed else "ShardRetrying"
            self.condition("Degraded", True, reason, f"{failed} failed, {retrying} retrying")
        else:
            self.condition("Degraded", False, "AllShardsHealthy", "")
        if succeeded == len(plan):
            self.status.phase = statuses.Phase.COMPLETE
            self.status.completion_time = builders.timestamp(self.now)
            self.condition("Progressing", False, "Completed", f"all {len(plan)} shards succeeded")
            self.condition("Complete", True, "Completed", f"{self.status.open_ports} open ports found")
            self.condition("Failed", False, "Completed", "")
            self.event("Normal", "Completed", f"all {len(plan)} shards succeeded; {self.status.open_ports} open ports")
            self.expectations(spec)
        elif succeeded + failed == len(plan):
            deadline = any("DeadlineExceeded" in (e.last_error or "") for e in entries)
            reason = "DeadlineExceeded" if deadline else "ShardsFailed"
            message = f"{failed} of {len(plan)} shards failed; partial results kept"
            self.status.phase = statuses.Phase.FAILED
            self.status.completion_time = builders.timestamp(self.now)
            self.condition("Progressing", False, reason, message)
            self.condition("Complete", False, reason, message)
            self.condition("Failed", True, reason, message)
            self.event("Warning", "Failed", message)
            self.expectations(spec)  # partial results can still break them
        else:
            self.status.phase = statuses.Phase.RUNNING
            current = next((c for c in self.status.conditions if c.type == "Progressing"), None)
            if current is None or current.reason != "ConcurrencyLimited" or current.observed_generation != self.generation:
                self.condition("Progressing", True, "ShardsRunning", f"{succeeded}/{len(plan)} shards done, {progress}")
            self.condition("Complete", False, "InProgress", progress)
            self.condition("Failed", False, "InProgress", "")
        return self.finish(progress=progress)

    def expectations(self, spec: scanjobs.ScanJobSpec) -> None:
        """Compare the open ports found with spec.expect (a finding, never a job failure)."""
        if spec.expect is None:
            return
        try:
            allowed = set(ports_.parse_ports(spec.expect.allowed_open_ports)) if spec.expect.allowed_open_ports else set()
        except errors.PortolanError as exc:  # normally refused at acceptance; the spec may have changed since
            self.condition("ExpectationsMet", False, exc.reason, str(exc))
            return
        found = [(r.pool, o.host, o.port, o.protocol, o.service) for r in self.status.results for o in r.open]
        count, listed = evaluation.unexpected_open(allowed, found)
        partial = any(r.open_truncated for r in self.status.results)
        self.status.expectations = statuses.ExpectationResult(
            allowed_open_ports=spec.expect.allowed_open_ports, violated=count, partial=partial,
            violations=[statuses.Violation(pool=v[0], host=v[1], port=v[2], protocol=v[3], service=v[4])
                        for v in listed])
        if count:
            sample = ", ".join(f"{v[1]}:{v[2]}/{v[3]}" for v in listed[:5])
            message = f"{count} open port(s) not in allowedOpenPorts {spec.expect.allowed_open_ports!r}: {sample}"
            self.condition("ExpectationsMet", False, "UnexpectedOpenPorts", message)
            self.event("Warning", "ExpectationsViolated", message)
        else:
            note = " (some open ports were only counted; see openTruncated)" if partial else ""
            self.condition("ExpectationsMet", True, "AsExpected", f"no open port outside the allowed ones{note}")

    def expire(self) -> Actions:
        spec_ttl = (self.observed.body.get("spec") or {}).get("ttlSecondsAfterFinished")
        finished = builders.parse_timestamp(self.status.completion_time)
        if spec_ttl is not None and finished is not None and (self.now - finished).total_seconds() >= int(spec_ttl):
            self.actions.delete_job = True
            self.event("Normal", "Expired", f"ttlSecondsAfterFinished={spec_ttl} passed; deleting")
        return self.actions

    def finish(self, progress: str | None = None) -> Actions:
        self.status.observed_generation = self.generation
        budget = self.config.status_byte_budget
        if builders.status_size(self.status) > budget * 3 // 4 and self.status.results:
            name = f"{self.meta['name']}-results"
            full = [r.model_dump(by_alias=True, mode="json") for r in self.status.results]
            self.actions.results_configmap = builders.results_configmap(
                self.observed.body, name, codecs.encode_results(full))
            self.status.results_ref = f"configmap/{name}"
            for result in self.status.results:
                result.open_truncated += len(result.open)
                result.open = []
        dumped = self.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        patch: dict[str, Any] = {
            key: dumped.get(key)
            for key in ("phase", "observedGeneration", "conditions", "results", "resultsRef", "expectations",
                        "summary", "openPorts", "startTime", "completionTime")
        }
        if progress is not None:
            patch["progress"] = progress
        if self.new_plan:
            patch["plan"] = dumped["plan"]
        if self.shard_patch:
            patch["shards"] = {
                shard_id: {
                    pydantic.alias_generators.to_camel(key): (value.value if hasattr(value, "value") else value)
                    for key, value in fields.items()
                }
                for shard_id, fields in self.shard_patch.items()
            }
        self.actions.status = {key: value for key, value in patch.items() if value is not None}
        return self.actions


def reconcile(observed: Observed, config: settings.OperatorSettings) -> Actions:
    """Decide what to do next for one ScanJob."""
    return _Run(observed, config).run()


def _already(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """True if a merge patch would change nothing: many writers share this object, so skip no-ops."""
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(current.get(key), Mapping):
            if not _already(current[key], value):
                return False
        elif current.get(key) != value:
            return False
    return True


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """Reduce a Pod (a dict in the API's JSON shape) to what reconciliation reads."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    exit_code = reason = None
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated is not None:
            exit_code, reason = terminated.get("exitCode"), terminated.get("reason")
    try:
        attempt = int(labels.get(builders.LABEL_ATTEMPT, "0"))
    except ValueError:
        attempt = 0
    return PodView(
        name=meta.get("name", ""), shard=labels.get(builders.LABEL_SHARD, ""), attempt=attempt,
        phase=status.get("phase") or "Pending", exit_code=exit_code, reason=reason,
        node=(pod.get("spec") or {}).get("nodeName"), deleting=meta.get("deletionTimestamp") is not None,
        job=labels.get(builders.LABEL_JOB, ""),
    )


def step(
    client: clients.Client,
    config: settings.OperatorSettings,
    gauges: metrics.Metrics,
    namespace: str,
    name: str,
    now: datetime.datetime,
) -> Actions:
    """One reconciliation of one ScanJob against the API: observe, decide, act."""
    everyone = [pod_view(p) for p in client.shard_pods(namespace)]  # the job's pods and the namespace's concurrency
    pods = [p for p in everyone if p.job == name]
    active = sum(1 for p in everyone if p.active)
    gauges.shards_running.set(active)
    job = client.get_job(namespace, name)  # read after the pods: a finished pod's report is visible
    selector_addresses: list[str] = []
    selector_error = None
    status = job.get("status") or {}
    if not status.get("plan"):
        try:
            spec = scanjobs.ScanJobSpec.model_validate(job.get("spec") or {})
            if spec.targets.selectors:
                selector_addresses = client.resolve_selectors(namespace, spec.targets.selectors)
        except pydantic.ValidationError:
            pass  # reconcile reports it
        except errors.KubeError as exc:
            selector_error = str(exc)
    lost: dict[str, str] = {}
    for node in sorted({p.node for p in pods if p.active and p.node}):
        problem = client.node_problem(node)
        if problem is not None:
            lost[node] = problem
    observed = Observed(job, pods, active, now, selector_addresses, selector_error, lost)
    actions = reconcile(observed, config)
    if actions.results_configmap is not None:
        client.write_configmap(actions.results_configmap)
    if actions.network_policy is not None:
        client.create_network_policy(actions.network_policy)
    if actions.status and not _already(status, actions.status):
        # Status first: a new pod must find its shard in the plan. If a create below fails, the
        # next pass sees the attempt's pod missing and retries it.
        try:
            client.patch_job_status(namespace, name, actions.status)
        except errors.KubeError:
            gauges.status_write_failures.inc()
            raise
    for manifest in actions.create:
        client.create_pod(manifest)
        gauges.shards_started.inc()
    for pod_name in actions.delete:
        client.delete_pod(namespace, pod_name)
    for pod_name in actions.force_delete:
        client.delete_pod(namespace, pod_name, grace_seconds=0)
    gauges.shard_retries.inc(actions.shard_retries)
    gauges.shard_failures.inc(actions.shard_failures)
    for kind, reason, message in actions.events:
        with contextlib.suppress(errors.KubeError):  # an Event is a courtesy: never worth a retry of the step
            client.event(job, kind, reason, message, now)
    new_phase = actions.status.get("phase")
    if new_phase in (statuses.Phase.COMPLETE.value, statuses.Phase.FAILED.value) and status.get("phase") != new_phase:
        final = statuses.ScanJobStatus.model_validate({**status, **actions.status})
        started = builders.parse_timestamp(final.start_time)
        gauges.finished(final, (now - started).total_seconds() if started else 0.0)
    if actions.delete_job:
        client.delete_job(namespace, name)
    return actions
