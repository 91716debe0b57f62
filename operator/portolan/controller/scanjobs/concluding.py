"""Concluding a pass: aggregate results, set the phase and conditions, judge expectations, expire after the TTL.

Pure: functions of a :class:`~.runs.Run`; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from portolan import errors, evaluation
from portolan.controller.scanjobs import runs
from portolan.engine import ports as ports_
from portolan.kube import builders
from portolan.models import scanjobs, statuses


def conclude(run: runs.Run, spec: scanjobs.ScanJobSpec) -> runs.Actions:
    """Aggregate results and set phase, conditions and progress from the shards' phases."""
    plan = run.status.plan
    entries = [run.status.shards.get(s.id) or statuses.ShardStatus() for s in plan]
    phases = [e.phase for e in entries]
    succeeded = phases.count(statuses.ShardPhase.SUCCEEDED)
    failed = phases.count(statuses.ShardPhase.FAILED)
    retrying = phases.count(statuses.ShardPhase.RETRYING)
    total_probes = sum(s.probes for s in plan) or 1
    done = sum(min(e.done, s.probes) if e.phase != statuses.ShardPhase.SUCCEEDED else s.probes
               for e, s in zip(entries, plan, strict=True))
    cap = builders.open_ports_cap(run.config, len(plan)) * 4
    run.status.results = builders.aggregate(plan, run.status.shards, cap)
    run.status.open_ports = sum(len(r.open) + r.open_truncated for r in run.status.results)
    run.status.summary = f"{succeeded}/{len(plan)}"
    progress = f"{100 * done // total_probes}%"
    if failed or retrying:
        reason = "ShardsFailed" if failed else "ShardRetrying"
        run.condition("Degraded", True, reason, f"{failed} failed, {retrying} retrying")
    else:
        run.condition("Degraded", False, "AllShardsHealthy", "")
    if succeeded == len(plan):
        run.status.phase = statuses.Phase.COMPLETE
        run.status.completion_time = builders.timestamp(run.now)
        run.condition("Progressing", False, "Completed", f"all {len(plan)} shards succeeded")
        run.condition("Complete", True, "Completed", f"{run.status.open_ports} open ports found")
        run.condition("Failed", False, "Completed", "")
        run.event("Normal", "Completed", f"all {len(plan)} shards succeeded; {run.status.open_ports} open ports")
        check_expectations(run, spec)
        check_egress(run)
    elif succeeded + failed == len(plan):
        deadline = any("DeadlineExceeded" in (e.last_error or "") for e in entries)
        reason = "DeadlineExceeded" if deadline else "ShardsFailed"
        message = f"{failed} of {len(plan)} shards failed; partial results kept"
        run.status.phase = statuses.Phase.FAILED
        run.status.completion_time = builders.timestamp(run.now)
        run.condition("Progressing", False, reason, message)
        run.condition("Complete", False, reason, message)
        run.condition("Failed", True, reason, message)
        run.event("Warning", "Failed", message)
        check_expectations(run, spec)  # partial results can still break them
    else:
        run.status.phase = statuses.Phase.RUNNING
        current = next((c for c in run.status.conditions if c.type == "Progressing"), None)
        if current is None or current.reason != "ConcurrencyLimited" or current.observed_generation != run.generation:
            run.condition("Progressing", True, "ShardsRunning", f"{succeeded}/{len(plan)} shards done, {progress}")
        run.condition("Complete", False, "InProgress", progress)
        run.condition("Failed", False, "InProgress", "")
    return run.finish(progress=progress)


def check_egress(run: runs.Run) -> None:
    """When every probe came back silent, say whether NetworkPolicies isolating the shard pods' egress are why.

    A finding for the user, not a failure: without ``scannerEgressPolicy`` a namespace that denies
    egress by default drops every probe, which looks exactly like a target behind a firewall.
    """
    states = {state for result in run.status.results for state, count in result.states.items() if count}
    if not states or states - {"filtered", "open|filtered"} or run.config.scanner_egress_policy:
        return
    policies = run.observed.egress_policies
    if policies is None:
        run.actions.needs_egress_check = True  # the step looks them up and decides again
        return
    if not policies:
        run.condition("TargetsReached", True, "NoEgressPolicy", "every probe was silent; no NetworkPolicy denies the "
                      "shard pods' egress to the targets (the targets, or the network before them, dropped the probes)")
        return
    message = (f"every probe came back filtered, and NetworkPolicies {', '.join(policies)} restrict the shard pods' "
               "egress: set the operator setting scannerEgressPolicy (chart: operator.settings.scannerEgressPolicy) "
               "so each job gets a NetworkPolicy that lets its shards reach exactly its targets")
    run.condition("TargetsReached", False, "EgressBlockedByNetworkPolicy", message)
    run.event("Warning", "EgressBlockedByNetworkPolicy", message)


def check_expectations(run: runs.Run, spec: scanjobs.ScanJobSpec) -> None:
    """Compare the open ports found with spec.expect (a finding, never a job failure)."""
    if spec.expect is None:
        return
    try:
        allowed = set(ports_.parse_ports(spec.expect.allowed_open_ports)) if spec.expect.allowed_open_ports else set()
    except errors.PortolanError as exc:  # normally refused at acceptance; the spec may have changed since
        run.condition("ExpectationsMet", False, exc.reason, str(exc))
        return
    found = [(r.pool, o.host, o.port, o.protocol, o.service) for r in run.status.results for o in r.open]
    count, listed = evaluation.unexpected_open(allowed, found)
    partial = any(r.open_truncated for r in run.status.results)
    run.status.expectations = statuses.ExpectationResult(
        allowed_open_ports=spec.expect.allowed_open_ports, violated=count, partial=partial,
        violations=[statuses.Violation(pool=v[0], host=v[1], port=v[2], protocol=v[3], service=v[4])
                    for v in listed])
    if count:
        message = f"{count} open port(s) not in allowedOpenPorts {spec.expect.allowed_open_ports!r}: {_sample(listed)}"
        run.condition("ExpectationsMet", False, "UnexpectedOpenPorts", message)
        run.event("Warning", "ExpectationsViolated", message)
    else:
        note = " (some open ports were only counted; see openTruncated)" if partial else ""
        run.condition("ExpectationsMet", True, "AsExpected", f"no open port outside the allowed ones{note}")


def _sample(listed: Sequence[tuple[str, str, int, str, str | None]], limit: int = 5) -> str:
    """The first ``limit`` distinct ports, each once, with the pools that saw it when there are pools."""
    pools: dict[tuple[str, int, str], list[str]] = {}
    for pool, host, port, protocol, _ in listed:
        seen = pools.setdefault((host, port, protocol), [])
        if pool and pool not in seen:
            seen.append(pool)
    parts = []
    for (host, port, protocol), names in list(pools.items())[:limit]:
        via = f" (pool {', '.join(names)})" if len(names) == 1 else f" (pools {', '.join(names)})" if names else ""
        parts.append(f"{host}:{port}/{protocol}{via}")
    more = len(pools) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def expire(run: runs.Run) -> runs.Actions:
    """Delete a finished job once ttlSecondsAfterFinished has passed."""
    spec_ttl = (run.observed.body.get("spec") or {}).get("ttlSecondsAfterFinished")
    finished = builders.parse_timestamp(run.status.completion_time)
    if spec_ttl is not None and finished is not None and (run.now - finished).total_seconds() >= int(spec_ttl):
        run.actions.delete_job = True
        run.event("Normal", "Expired", f"ttlSecondsAfterFinished={spec_ttl} passed; deleting")
    return run.actions
