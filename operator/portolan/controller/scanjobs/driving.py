"""Driving shards: create their pods, adopt, retry with backoff, fail, stop on suspension and at the deadline.

Pure: functions of a :class:`~.runs.Run` that record status changes, pods to
create or delete and Events in it; nothing here does I/O.
"""

from __future__ import annotations

import datetime

from portolan.controller.scanjobs import runs
from portolan.kube import builders
from portolan.models import scanjobs, statuses


def suspend(run: runs.Run) -> runs.Actions:
    """Stop the job's pods; unfinished shards wait as Retrying without spending an attempt."""
    for pod in run.observed.pods:
        if pod.active:
            run.actions.delete.append(pod.name)
    if run.status.phase != statuses.Phase.SUSPENDED:
        run.event("Normal", "Suspended", "the job is suspended; shard pods were stopped")
    run.status.phase = statuses.Phase.SUSPENDED
    run.condition("Progressing", False, "Suspended", "spec.suspend is true")
    for shard in run.status.plan:
        entry = run.status.shards.get(shard.id)
        if entry is not None and entry.phase not in runs.SHARD_DONE and entry.attempt > 0:
            # The next attempt starts when the job resumes; no retry is spent on suspension.
            run.touch(shard.id, phase=statuses.ShardPhase.RETRYING, retry_after=None,
                       attempt=entry.attempt - 1 if entry.attempt > 0 else 0)
    return run.finish()


def past_deadline(run: runs.Run, spec: scanjobs.ScanJobSpec) -> bool:
    """Whether spec.activeDeadlineSeconds has passed since the job started (a question: no actions)."""
    started = builders.parse_timestamp(run.status.start_time)
    if spec.active_deadline_seconds is None or started is None:
        return False
    return (run.now - started).total_seconds() >= spec.active_deadline_seconds


def stop_at_deadline(run: runs.Run, spec: scanjobs.ScanJobSpec) -> None:
    """Stop every running shard pod and fail every unfinished shard: the deadline passed."""
    for pod in run.observed.pods:
        if pod.active:
            run.actions.delete.append(pod.name)
    for shard in run.status.plan:
        entry = run.status.shards.get(shard.id)
        if entry is None or entry.phase not in runs.SHARD_DONE:
            run.touch(shard.id, phase=statuses.ShardPhase.FAILED,
                       last_error=f"DeadlineExceeded: the job ran past {spec.active_deadline_seconds} s")
    run.event("Warning", "DeadlineExceeded", f"activeDeadlineSeconds={spec.active_deadline_seconds} passed")


def drive(run: runs.Run, spec: scanjobs.ScanJobSpec) -> None:
    """Start due attempts within the namespace's slots, adopt orphans, and judge each running attempt's pod."""
    pods: dict[str, list[runs.PodView]] = {}
    for pod in run.observed.pods:
        pods.setdefault(pod.shard, []).append(pod)
    if run.observed.namespace_active_shards is None and any(
            _due(run, run.status.shards.get(shard.id) or statuses.ShardStatus(pool=shard.pool))
            for shard in run.status.plan):
        run.actions.needs_slots = True
        return
    active = run.observed.namespace_active_shards or 0
    inventories = sum(1 for s in run.status.plan if s.kind == statuses.ShardKind.INVENTORY)
    created = 0
    waiting = 0
    for shard in run.status.plan:
        entry = run.status.shards.get(shard.id) or statuses.ShardStatus(pool=shard.pool)
        if entry.phase in runs.SHARD_DONE:
            continue
        mine = sorted(pods.get(shard.id, []), key=lambda p: p.attempt)
        if mine and mine[-1].attempt > entry.attempt:
            # A pod from an attempt whose status write was lost: adopt it.
            run.touch(shard.id, attempt=mine[-1].attempt, pod=mine[-1].name,
                       phase=statuses.ShardPhase.PENDING)
            entry = run.status.shards[shard.id]
        if _due(run, entry):
            if active >= run.config.max_concurrent_shards_per_namespace:
                waiting += 1
                continue
            attempt = entry.attempt + 1
            manifest = builders.shard_pod(
                run.observed.body, spec, shard, attempt, run.config, len(run.status.plan),
                avoid_nodes=entry.avoid_nodes, inventory_shards=inventories,
            )
            run.actions.create.append(manifest)
            run.touch(shard.id, pool=shard.pool, attempt=attempt, pod=manifest["metadata"]["name"],
                       phase=statuses.ShardPhase.PENDING, retry_after=None)
            active += 1
            created += 1
            continue
        if entry.phase == statuses.ShardPhase.RETRYING:
            continue
        current = next((p for p in mine if p.attempt == entry.attempt), None)
        if current is None:
            fail(run, spec, shard.id, entry, f"PodMissing: pod {entry.pod} is gone (deleted, or its node left)")
        elif current.phase == "Succeeded":
            if entry.finished_attempt != entry.attempt:
                fail(run, spec, shard.id, entry, "NoResults: the shard pod exited 0 without reporting results")
        elif current.phase == "Failed":
            detail = f"exit code {current.exit_code}" if current.exit_code is not None else "failed"
            reason = f" ({current.reason})" if current.reason else ""
            error = entry.last_error if entry.finished_attempt == entry.attempt and entry.last_error else ""
            message = f"ShardPodFailed: pod {current.name} on {current.node or 'no node'}: {detail}{reason}"
            fail(run, spec, shard.id, entry, f"{message}; {error}" if error else message)
        elif current.active and current.node is not None and current.node in run.observed.lost_nodes:
            # A stale attempt that still runs somewhere cannot write results (shards check
            # their attempt), so giving up on it now is safe.
            run.actions.force_delete.append(current.name)
            run.touch(shard.id, avoid_nodes=sorted({*entry.avoid_nodes, current.node}))
            fail(run, spec, shard.id, entry,
                      f"NodeLost: node {current.node} {run.observed.lost_nodes[current.node]}")
        elif current.active and current.node is None and shard.node and shard.node in run.observed.lost_nodes:
            # A pod pinned to a node that is gone or not Ready would wait unscheduled for ever. A slice
            # of a UDP spread is retried elsewhere in its pool; an inventory belongs to its node.
            run.actions.force_delete.append(current.name)
            if shard.kind == statuses.ShardKind.SCAN:
                run.touch(shard.id, avoid_nodes=sorted({*entry.avoid_nodes, shard.node}))
            fail(run, spec, shard.id, entry, f"NodeLost: node {shard.node} {run.observed.lost_nodes[shard.node]}")
        elif current.phase == "Running" and entry.phase == statuses.ShardPhase.PENDING:
            run.touch(shard.id, node=current.node)
    if created:
        run.event("Normal", "ShardsStarted", f"created {created} shard pod(s)")
    if waiting:
        run.condition("Progressing", True, "ConcurrencyLimited",
                       f"{waiting} shard(s) wait for a slot (maxConcurrentShardsPerNamespace)")


def _due(run: runs.Run, entry: statuses.ShardStatus) -> bool:
    """Whether a shard's next attempt should start now (its first, or a retry whose back-off passed)."""
    if entry.phase in runs.SHARD_DONE:
        return False
    due = builders.parse_timestamp(entry.retry_after)
    return entry.attempt == 0 or (entry.phase == statuses.ShardPhase.RETRYING and (due is None or due <= run.now))


def fail(run: runs.Run, spec: scanjobs.ScanJobSpec, shard_id: str, entry: statuses.ShardStatus, message: str) -> None:
    """Fail one attempt: retry with exponential backoff while retries last, else fail the shard."""
    if entry.attempt <= spec.retries:
        delay = spec.backoff_seconds * (2 ** max(0, entry.attempt - 1))
        due = run.now + datetime.timedelta(seconds=delay)
        run.touch(shard_id, phase=statuses.ShardPhase.RETRYING, last_error=message,
                   retry_after=builders.timestamp(due))
        run.actions.shard_retries += 1
        run.event("Warning", "ShardRetrying",
                   f"shard {shard_id} attempt {entry.attempt} failed ({message}); retrying in {delay} s")
    else:
        run.touch(shard_id, phase=statuses.ShardPhase.FAILED, last_error=message)
        run.actions.shard_failures += 1
        run.event("Warning", "ShardFailed",
                   f"shard {shard_id} failed after {entry.attempt} attempt(s): {message}")
