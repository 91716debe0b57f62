"""Reconciliation: from a ScanJob and its observed pods to the actions that move it forward.

:func:`reconcile` is pure — the job body, the observed shard pods, the resolved
selector addresses, the time and (before a UDP job is planned) the nodes go in; a status merge patch, pods to create or
delete, Events and an optional results ConfigMap come out; :func:`step` does
the I/O around it (through a :class:`portolan.kube.clients.Client`), so an
operator restart simply reconciles again from the status and the live pods.

Ownership of status fields: the operator writes the job's phase, conditions,
shard count and aggregated results, each ScanShard's spec (its slice of the plan) and,
in its status, ``pool``/``attempt``/``pod``/``lastError``/``retryAfter`` and the phases
Pending, Retrying and Failed; each shard pod writes its own ScanShard's progress,
counts, open ports and the phases Running and Succeeded.  Merge patches touch only
the keys they name, so the two never overwrite each other.  Reconciliation reads the
job through :func:`portolan.kube.builders.job_view` (plan and entries from the
ScanShards), so its pure part is the same whether shards live in objects or not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from portolan import errors
from portolan.controller import metrics
from portolan.controller.scanjobs import concluding, driving, planning, runs
from portolan.engine import ports as ports_
from portolan.kube import builders, clients
from portolan.models import problems, scanjobs, settings, statuses
from portolan.policies import evaluating


def reject(run: runs.Run, reason: str, message: str) -> runs.Actions:
    """Refuse the spec: Accepted=False with the reason, a Warning Event once per generation, no pods."""
    already = (
        run.status.phase == statuses.Phase.REJECTED
        and run.status.observed_generation == run.generation
    )
    run.status.phase = statuses.Phase.REJECTED
    run.condition("Accepted", False, reason, message)
    run.condition("Progressing", False, reason, "the spec was not accepted")
    run.condition("Failed", True, reason, message)
    if not already:
        run.event("Warning", reason, message)
    return run.finish()


def _decide(run: runs.Run) -> runs.Actions:
    """The top of reconciliation: expire, reject, plan, suspend, stop at the deadline, or drive and conclude."""
    if run.status.phase in runs.TERMINAL:
        return concluding.expire(run)
    if (
        run.status.phase == statuses.Phase.REJECTED
        and run.status.observed_generation == run.generation
    ):
        return runs.Actions()
    try:
        spec = scanjobs.ScanJobSpec.model_validate(run.observed.body.get("spec") or {})
    except pydantic.ValidationError as exc:
        return reject(run, errors.SpecError.reason, problems.describe(exc, prefix="spec."))
    if not run.status.plan and not run.status.shard_count:
        namespace = str((run.observed.body.get("metadata") or {}).get("namespace") or "")
        if spec.inventory is not None and run.config.inventory_namespaces \
                and namespace not in run.config.inventory_namespaces:
            return reject(run, errors.GuardrailError.reason,
                          f"node inventories are not allowed in namespace {namespace} (inventoryNamespaces: "
                          f"{', '.join(run.config.inventory_namespaces)})")
        if run.observed.selector_error:
            return reject(run, "SelectorFailed", run.observed.selector_error)
        addresses = [*spec.targets.addresses, *run.observed.selector_addresses]
        if not addresses:
            return reject(run, "NoTargets", "the selectors matched no object with an address")
        try:
            plan = planning.plan(spec, run.config, addresses, nodes=run.observed.nodes,
                                 inventory_nodes=run.observed.inventory_nodes)
        except errors.SpecError as exc:
            return reject(run, exc.reason, str(exc))
        run.status.plan = plan
        run.status.shard_count = len(plan)
        run.new_plan = True
        run.status.start_time = builders.timestamp(run.now)
        for shard in plan:
            run.touch(shard.id, pool=shard.pool, attempt=0, phase=statuses.ShardPhase.PENDING)
        probes = sum(s.probes for s in plan)
        message = f"planned {len(plan)} shards, {probes} probes"
        spread = planning.udp_spread(plan)
        if spread:
            message += f"; {spread_message(spread)}"
        run.condition("Accepted", True, "Planned", message)
        run.event("Normal", "Accepted", message)
        if "udp" in spec.protocols:
            say_udp_spread(run, spec, spread)
        if run.config.scanner_egress_policy:
            run.actions.network_policy = builders.scanner_egress_policy(run.observed.body, plan)
    if spec.suspend:
        return driving.suspend(run)
    if driving.past_deadline(run, spec):
        driving.stop_at_deadline(run, spec)
        return concluding.conclude(run, spec)
    driving.drive(run, spec)
    return concluding.conclude(run, spec)


def ticks_needed(body: Mapping[str, Any]) -> bool:
    """Whether a ScanJob needs periodic steps, or only steps on its own changes.

    A finished job needs them only to expire (``ttlSecondsAfterFinished``); a rejected one,
    until its spec changes, and a suspended one, until it resumes, need none: a spec change
    steps the job at once (and kopf retries that step if it fails).  With a thousand idle jobs,
    their ticks alone kept the operator busy.  A job without ticks holds no kopf finalizer.
    """
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase in (statuses.Phase.COMPLETE.value, statuses.Phase.FAILED.value):
        return spec.get("ttlSecondsAfterFinished") is not None
    generation = (body.get("metadata") or {}).get("generation")
    if phase == statuses.Phase.REJECTED.value and status.get("observedGeneration") == generation:
        return False
    return spec.get("suspend") is not True


def spread_message(spread: Mapping[str, Sequence[str]]) -> str:
    """How the UDP ports are spread, pool by pool, in a sentence."""
    parts = [f"pool {pool} over nodes {', '.join(nodes)}" for pool, nodes in spread.items()]
    return (f"each target's UDP ports split across nodes ({'; '.join(parts)}), "
            "so each slice has its own source address and ICMP rate-limit budget at the target")


def say_udp_spread(run: runs.Run, spec: scanjobs.ScanJobSpec, spread: Mapping[str, Sequence[str]]) -> None:
    """The UdpSpread condition (and an Event when spread): how the plan meets the targets' ICMP rate limits."""
    if spread:
        message = spread_message(spread)
        run.condition("UdpSpread", True, "UdpSpreadAcrossNodes", message)
        run.event("Normal", "UdpSpreadAcrossNodes", message)
        return
    if len(ports_.parse_ports(spec.udp_ports or spec.ports)) <= 1:
        run.condition("UdpSpread", False, "NothingToSpread", "one UDP port per target: nothing to spread")
        return
    names = ", ".join(pool.name for pool in planning.pools(spec))
    run.condition("UdpSpread", False, "OneNodeInPool",
                  f"pool(s) {names} have at most one usable node (or the nodes could not be read), so each target's "
                  "UDP ports are probed from one source address: a Linux target answers about one closed UDP port "
                  "per second to it")


def reconcile(observed: runs.Observed, config: settings.OperatorSettings) -> runs.Actions:
    """Decide what to do next for one ScanJob."""
    return _decide(runs.Run(observed, config))


def _already(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """True if a merge patch would change nothing: many writers share this object, so skip no-ops."""
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(current.get(key), Mapping):
            if not _already(current[key], value):
                return False
        elif current.get(key) != value:
            return False
    return True


def egress_policies(policies: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> list[str]:
    """The policies that isolate this job's shard pods for egress, if they deny its first planned probe; else none.

    Judged with the product's evaluator on the shard pods' labels and the plan's first target and port:
    a policy that isolates the pods but lets that probe through is not the reason for the silence.
    """
    meta = job["metadata"]
    shard = {builders.LABEL_JOB: meta["name"], builders.LABEL_COMPONENT: "shard", "app.kubernetes.io/name": "portolan"}
    isolating = [p for p in policies if "Egress" in evaluating.policy_types(p)
                 and evaluating.selects((p.get("spec") or {}).get("podSelector"), shard)]
    plan = ((job.get("status") or {}).get("plan") or [{}])[0]
    targets, tcp, udp = plan.get("targets") or [], plan.get("ports") or "", plan.get("udpPorts") or ""
    if not isolating or not targets or not (tcp or udp):
        return []
    address = str(targets[0]).partition("-")[0]
    port = int((tcp or udp).split(",")[0].partition("-")[0])
    verdict = evaluating.evaluate(isolating, {}, evaluating.Endpoint(None, meta["namespace"], shard),
                                  evaluating.Endpoint(address), port, "TCP" if tcp else "UDP")
    return [] if verdict.allowed else sorted(str((p.get("metadata") or {}).get("name")) for p in isolating)


def pod_view(pod: Mapping[str, Any]) -> runs.PodView:
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
    return runs.PodView(
        name=meta.get("name", ""), shard=labels.get(builders.LABEL_SHARD, ""), attempt=attempt,
        phase=status.get("phase") or "Pending", exit_code=exit_code, reason=reason,
        node=(pod.get("spec") or {}).get("nodeName"), deleting=meta.get("deletionTimestamp") is not None,
        job=labels.get(builders.LABEL_JOB, ""),
    )


def _planned(job: Mapping[str, Any]) -> bool:
    """Whether the job was planned: its status counts shards (each a ScanShard object)."""
    return bool((job.get("status") or {}).get("shardCount"))


def _unstarted(plan_entry: Mapping[str, Any]) -> dict[str, Any]:
    """The status a ScanShard without one stands for: its pool's first attempt, not yet started."""
    return {"pool": plan_entry.get("pool"), "attempt": 0, "phase": statuses.ShardPhase.PENDING.value}


def write_status(client: clients.Client, gauges: metrics.Metrics, job: Mapping[str, Any],
                 patch: Mapping[str, Any]) -> None:
    """Write a pass's status patch: a new plan as ScanShard objects, shard entries into them, the rest into the job.

    Order matters.  The plan's objects come first and the job's ``shardCount`` after them, so
    a job that counts shards has them all.  Shard entries come before any pod is created, so a
    new pod finds its attempt.  Each write touches one small object; nothing that grows with the
    shard count is written into the job.  A no-op is skipped (many writers share these objects).
    """
    meta = job["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    status = job.get("status") or {}
    patch = dict(patch)
    plan = patch.pop("plan", None)
    entries = patch.pop("shards", None) or {}
    try:
        if plan is not None:
            for ordinal, entry in enumerate(plan):
                client.create_scan_shard(builders.scan_shard(job, statuses.ShardPlan.model_validate(entry), ordinal))
        if patch and not _already(status, patch):
            client.patch_job_status(namespace, name, patch)
        planned = {str(entry.get("id")): entry for entry in (plan if plan is not None else status.get("plan") or [])}
        current = status.get("shards") or {}
        for shard_id, fields in entries.items():
            before = current.get(shard_id) or _unstarted(planned.get(shard_id) or {})
            if not _already(before, fields):
                client.patch_scan_shard_status(namespace, builders.scan_shard_name(name, shard_id), fields)
    except errors.KubeError:
        gauges.status_write_failures.inc()
        raise


def step(
    client: clients.Client,
    config: settings.OperatorSettings,
    gauges: metrics.Metrics,
    namespace: str,
    name: str,
    now: datetime.datetime,
) -> runs.Actions:
    """One reconciliation of one ScanJob against the API: observe, decide, act."""
    # Only the job's own pods (a label-selected list): listing the namespace's every shard pod on
    # each step made a round of steps O(jobs²). The namespace's count is read when a shard is due.
    pods = [pod_view(p) for p in client.shard_pods(namespace, job=name)]
    gauges.job_shards_running(namespace, name, sum(1 for p in pods if p.active))
    stored = client.get_job(namespace, name)
    # The shards' objects are read after the pods: a finished pod's report is visible.
    job = builders.job_view(stored, client.list_scan_shards(namespace, name) if _planned(stored) else [])
    selector_addresses: list[str] = []
    selector_error = None
    inventory_nodes: dict[str, list[tuple[str, list[str]]]] = {}
    nodes: list[planning.NodeView] = []
    status = job["status"]
    if not _planned(stored):
        spec: scanjobs.ScanJobSpec | None = None
        try:
            spec = scanjobs.ScanJobSpec.model_validate(job.get("spec") or {})
            if spec.targets.selectors:
                selector_addresses = client.resolve_selectors(namespace, spec.targets.selectors)
        except pydantic.ValidationError:
            pass  # reconcile reports it
        except errors.KubeError as exc:
            selector_error = str(exc)
        inventory = spec is not None and spec.inventory is not None and config.allow_node_inventory
        if spec is not None and (inventory or "udp" in spec.protocols):  # both depend on the nodes
            try:
                listed = client.list_nodes()
            except errors.KubeError:
                if inventory:
                    raise  # out of the step: retried later, never a rejection for a passing API error
                listed = []  # unread nodes: no spread, and UdpSpread says so
            nodes = [planning.node_view(n) for n in listed]
            if inventory:
                inventory_nodes = planning.inventory_nodes(spec, listed)
    lost: dict[str, str] = {}
    # A pinned pod (an inventory, a slice of a UDP spread) whose node is gone stays Pending, unscheduled, for ever.
    entries = status.get("shards") or {}
    pinned = {s.get("id"): s.get("node") for s in status.get("plan") or []  # a retry avoiding it is not pinned
              if s.get("node") and s.get("node") not in ((entries.get(s.get("id")) or {}).get("avoidNodes") or [])}
    waiting = {pinned[p.shard] for p in pods if p.active and not p.node and pinned.get(p.shard)}
    for node in sorted({p.node for p in pods if p.active and p.node} | waiting):
        problem = client.node_problem(node)
        if problem is not None:
            lost[node] = problem
    observed = runs.Observed(job, pods, None, now, selector_addresses, selector_error, lost,
                             inventory_nodes=inventory_nodes, nodes=nodes)
    actions = reconcile(observed, config)
    if actions.needs_slots:  # a shard is due: how many slots of the namespace are taken?
        active = sum(1 for p in map(pod_view, client.shard_pods(namespace)) if p.active)
        observed = dataclasses.replace(observed, namespace_active_shards=active)
        actions = reconcile(observed, config)
    if actions.needs_egress_check:  # every probe silent: are the namespace's policies the reason?
        isolating = egress_policies(client.list_network_policies(namespace), job)
        actions = reconcile(dataclasses.replace(observed, egress_policies=isolating), config)
    if actions.results_configmap is not None:
        client.write_configmap(actions.results_configmap)
    if actions.network_policy is not None:
        client.create_network_policy(actions.network_policy)
    write_status(client, gauges, job, actions.status)
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
    if {"results", "expectations", "inventory"} & actions.status.keys() or not gauges.knows_job(namespace, name):
        gauges.observe_job(namespace, name, statuses.ScanJobStatus.model_validate({**status, **actions.status}))
    new_phase = actions.status.get("phase")
    if new_phase in (statuses.Phase.COMPLETE.value, statuses.Phase.FAILED.value) and status.get("phase") != new_phase:
        final = statuses.ScanJobStatus.model_validate({**status, **actions.status})
        started = builders.parse_timestamp(final.start_time)
        gauges.finished(final, (now - started).total_seconds() if started else 0.0)
    if actions.delete_job:
        client.delete_job(namespace, name)
        gauges.forget_job(namespace, name)
    return actions
