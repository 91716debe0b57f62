"""Concluding a pass: aggregate results, set the phase and conditions, judge expectations, expire after the TTL.

Pure: functions of a :class:`~.runs.Run`; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from portolan import errors, evaluation
from portolan.controller.scanjobs import runs
from portolan.engine import ports as ports_
from portolan.inventory import exposure
from portolan.kube import builders
from portolan.models import scanjobs, statuses

_ORDER = {exposure.EXPOSED: 0, exposure.SHIELDED: 1, exposure.UNKNOWN: 2, exposure.NOT_SCANNED: 3,
          exposure.LOCAL_ONLY: 4}


def conclude(run: runs.Run, spec: scanjobs.ScanJobSpec) -> runs.Actions:
    """Aggregate results and set phase, conditions and progress from the shards' phases."""
    plan = run.status.plan
    entries = [run.status.shards.get(s.id) or statuses.ShardStatus() for s in plan]
    phases = [e.phase for e in entries]
    succeeded = phases.count(statuses.ShardPhase.SUCCEEDED)
    # ScanShard objects deleted by hand: their shards can never report, so they count as failed.
    missing = max(0, (run.status.shard_count or len(plan)) - len(plan))
    failed = phases.count(statuses.ShardPhase.FAILED) + missing
    total = len(plan) + missing
    if missing:
        run.condition("ShardsMissing", True, "ScanShardDeleted",
                      f"{missing} of the job's {total} ScanShard objects were deleted; their results are lost")
    retrying = phases.count(statuses.ShardPhase.RETRYING)
    total_probes = sum(s.probes for s in plan) or 1
    done = sum(min(e.done, s.probes) if e.phase != statuses.ShardPhase.SUCCEEDED else s.probes
               for e, s in zip(entries, plan, strict=True))
    cap = builders.open_ports_cap(run.config, total) * 4
    run.status.results = builders.aggregate(plan, run.status.shards, cap)
    run.status.open_ports = sum(len(r.open) + r.open_truncated for r in run.status.results)
    run.status.summary = f"{succeeded}/{total}"
    progress = f"{100 * done // total_probes}%"
    if failed or retrying:
        reason = "ShardsFailed" if failed else "ShardRetrying"
        run.condition("Degraded", True, reason, f"{failed} failed, {retrying} retrying")
    else:
        run.condition("Degraded", False, "AllShardsHealthy", "")
    if succeeded == total:
        run.status.phase = statuses.Phase.COMPLETE
        run.status.completion_time = builders.timestamp(run.now)
        run.condition("Progressing", False, "Completed", f"all {total} shards succeeded")
        run.condition("Complete", True, "Completed", f"{run.status.open_ports} open ports found")
        run.condition("Failed", False, "Completed", "")
        run.event("Normal", "Completed", f"all {total} shards succeeded; {run.status.open_ports} open ports")
        check_inventory(run, spec)
        check_expectations(run, spec)
        check_egress(run)
    elif succeeded + failed == total:
        deadline = any("DeadlineExceeded" in (e.last_error or "") for e in entries)
        reason = "DeadlineExceeded" if deadline else "ShardsFailed"
        message = f"{failed} of {total} shards failed; partial results kept"
        run.status.phase = statuses.Phase.FAILED
        run.status.completion_time = builders.timestamp(run.now)
        run.condition("Progressing", False, reason, message)
        run.condition("Complete", False, reason, message)
        run.condition("Failed", True, reason, message)
        run.event("Warning", "Failed", message)
        check_inventory(run, spec)
        check_expectations(run, spec)  # partial results can still break them
    else:
        run.status.phase = statuses.Phase.RUNNING
        current = next((c for c in run.status.conditions if c.type == "Progressing"), None)
        if current is None or current.reason != "ConcurrencyLimited" or current.observed_generation != run.generation:
            run.condition("Progressing", True, "ShardsRunning", f"{succeeded}/{total} shards done, {progress}")
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
    holders = _listener_holders(run)
    run.status.expectations = statuses.ExpectationResult(
        allowed_open_ports=spec.expect.allowed_open_ports, violated=count, partial=partial,
        violations=[statuses.Violation(pool=v[0], host=v[1], port=v[2], protocol=v[3], service=v[4],
                                       listener=holders.get((v[1], v[2], v[3]))) for v in listed])
    if run.status.inventory is not None:
        for item in run.status.inventory.listed:
            if item.exposure != exposure.LOCAL_ONLY:
                item.allowed = item.port in allowed
    if count:
        message = f"{count} open port(s) not in allowedOpenPorts {spec.expect.allowed_open_ports!r}: {_sample(listed)}"
        exposed = sorted({holders[(v[1], v[2], v[3])] + f" ({v[1]}:{v[2]}/{v[3]})" for v in listed
                          if (v[1], v[2], v[3]) in holders})
        if exposed:
            message += f"; node listeners among them: {', '.join(exposed[:5])}" + (
                f" and {len(exposed) - 5} more" if len(exposed) > 5 else "")
        run.condition("ExpectationsMet", False, "UnexpectedOpenPorts", message)
        run.event("Warning", "ExpectationsViolated", message)
    else:
        note = " (some open ports were only counted; see openTruncated)" if partial else ""
        run.condition("ExpectationsMet", True, "AsExpected", f"no open port outside the allowed ones{note}")


def _listener_holders(run: runs.Run) -> dict[tuple[str, int, str], str]:
    """(node address, port, protocol) -> "command on node" for every exposed node listener listed."""
    found: dict[tuple[str, int, str], str] = {}
    if run.status.inventory is None:
        return found
    addresses = {s.node: s.targets for s in run.status.plan if s.kind == statuses.ShardKind.INVENTORY}
    for item in run.status.inventory.listed:
        if item.exposure != exposure.EXPOSED:
            continue
        for address in addresses.get(item.node, []):
            if exposure.covers(item.address, address):
                found.setdefault((address, item.port, item.protocol), f"{item.command or 'unknown process'} on {item.node}")
    return found


def _scanned(shards: Sequence[statuses.ShardPlan]) -> Callable[[str, int, str], bool]:
    """Whether one of these scan shards probed (address, port, protocol), from their compact plans."""
    covered: list[tuple[list[tuple[int, int, int]], set[int], set[int]]] = []
    for shard in shards:
        spans: list[tuple[int, int, int]] = []
        for text in shard.targets:
            first, _, last = text.partition("-")
            start = ipaddress.ip_address(first)
            end = ipaddress.ip_address(last) if last else start
            spans.append((start.version, int(start), int(end)))
        tcp = set(ports_.parse_ports(shard.ports)) if shard.ports else set()
        udp = set(ports_.parse_ports(shard.udp_ports)) if shard.udp_ports else set()
        covered.append((spans, tcp, udp))

    def scanned(address: str, port: int, protocol: str) -> bool:
        where = ipaddress.ip_address(address)
        for spans, tcp, udp in covered:
            if port in (tcp if protocol == "tcp" else udp) and any(
                    version == where.version and start <= int(where) <= end for version, start, end in spans):
                return True
        return False

    return scanned


def check_inventory(run: runs.Run, spec: scanjobs.ScanJobSpec) -> None:
    """Judge every node listener the inventory shards reported against the scans of every vantage.

    The result lists exposed listeners first, up to the budget's share; the condition
    ``ListenersExposed`` and an Event name the first exposed ones (a finding, never a failure).
    """
    inventories = [s for s in run.status.plan if s.kind == statuses.ShardKind.INVENTORY]
    if spec.inventory is None or not inventories:
        return
    vantages = []
    for result in run.status.results:
        # Only shards that finished probed what they planned: a failed or unfinished shard's ports
        # are not-scanned, never "shielded" (silence it never listened for is no verdict).
        shards = [s for s in run.status.plan if s.kind == statuses.ShardKind.SCAN and s.pool == result.pool
                  and (run.status.shards.get(s.id) or statuses.ShardStatus()).phase == statuses.ShardPhase.SUCCEEDED]
        vantages.append(exposure.Vantage(
            result.pool, _scanned(shards), frozenset((o.host, o.port, o.protocol) for o in result.open),
            complete=result.open_truncated == 0))
    judged: list[statuses.ListenerExposure] = []
    total = truncated = 0
    missing: list[str] = []
    for shard in inventories:
        entry = run.status.shards.get(shard.id) or statuses.ShardStatus()
        if entry.phase != statuses.ShardPhase.SUCCEEDED:
            missing.append(shard.node or shard.id)
        total += len(entry.listeners) + entry.listeners_truncated
        truncated += entry.listeners_truncated
        for item in entry.listeners:
            verdict = exposure.judge_from_vantages(item.address, item.port, item.protocol, shard.targets, vantages)
            judged.append(statuses.ListenerExposure(
                node=shard.node or "", protocol=item.protocol, address=item.address, port=item.port,
                command=item.command, exposure=verdict.exposure, exposed_from=list(verdict.exposed_from),
                shielded_from=list(verdict.shielded_from)))
    judged.sort(key=lambda j: (_ORDER.get(j.exposure, 9), j.node, j.protocol, j.port, j.address))
    counts: dict[str, int] = {}
    for verdict_ in judged:
        counts[verdict_.exposure] = counts.get(verdict_.exposure, 0) + 1
    cap = builders.listener_caps(run.config, len(inventories))[1]
    run.status.inventory = statuses.InventoryResult(
        nodes=len(inventories), missing=missing, listeners=total, counts=dict(sorted(counts.items())), listed=judged[:cap],
        truncated=truncated + max(0, len(judged) - cap))
    exposed = [j for j in judged if j.exposure == exposure.EXPOSED]
    if exposed:
        sample = ", ".join(f"{j.command or 'unknown process'} on {j.node} {j.address}:{j.port}/{j.protocol} "
                           f"from {', '.join(j.exposed_from)}" for j in exposed[:5])
        more = f" and {len(exposed) - 5} more" if len(exposed) > 5 else ""
        message = f"{len(exposed)} node listener(s) reachable: {sample}{more}{_not_listed(missing)}"
        run.condition("ListenersExposed", True, "ExposedListeners", message)
        run.event("Warning", "ListenersExposed", message)
    else:
        message = (f"{counts.get(exposure.SHIELDED, 0)} shielded, {counts.get(exposure.LOCAL_ONLY, 0)} local-only, "
                   f"{counts.get(exposure.NOT_SCANNED, 0)} not scanned of {total} listener(s) on {len(inventories)} "
                   f"node(s){_not_listed(missing)}")
        run.condition("ListenersExposed", False, "NoExposedListeners", message)


def _not_listed(missing: Sequence[str]) -> str:
    if not missing:
        return ""
    return f"; not inventoried (shard failed): {', '.join(missing[:5])}" + (
        f" and {len(missing) - 5} more" if len(missing) > 5 else "")


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
