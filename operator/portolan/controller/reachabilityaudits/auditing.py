"""Reconciling a ReachabilityAudit: canaries, probe pods, convergence, verdicts, cleanup.

:func:`reconcile` is pure (the audit, its pods, a snapshot of the cluster and the
time in; a status patch, pods to create and delete, Events out); :func:`step`
does the I/O.  The passes of one audit:

1. accepted or rejected (spec, guardrails: the namespaces it may place pods in,
   ``allowedCidrs`` for addresses outside the cluster, ``maxPairsPerAudit``);
2. with ``canaries``, one canary per pod destination, started first;
3. once canaries run, the pairs are resolved and their expectations computed
   (:mod:`.resolving`, :mod:`.expecting`), and one probe pod per source starts,
   carrying its pairs, their expected verdicts and a legend;
4. each probe pod writes its verdicts into ``status.probes``; when all have,
   mismatches, totals and a matrix per port are reported, with conditions
   ``Complete`` and ``ReachabilityAsExpected`` and a Warning Event on a
   mismatch, and every probe and canary pod is deleted.  The status keeps what
   of the matrix fits 3/4 of ``statusByteBudget`` (:mod:`.matrices`); when that
   is not all of it, the whole goes to a ConfigMap owned by the audit in the
   first source's namespace, named in ``status.matrixConfigMap``.

A probe pod that fails, or an audit past ``activeDeadlineSeconds``, ends the
audit ``Failed`` with the reason; what was reported so far is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from portolan import errors
from portolan.controller.reachabilityaudits import expecting, matrices, resolving
from portolan.controller.scanschedules import scheduling
from portolan.kube import builders, clients, codecs
from portolan.models import audits, problems, settings, statuses

Evaluator = expecting.Evaluator
MISMATCHES_LISTED = 200


@dataclasses.dataclass(frozen=True)
class PodView:
    """A probe or canary pod of the audit."""

    name: str
    namespace: str
    role: str  # probe | canary
    owner: str  # the source (probes) or destination (canaries) it serves
    phase: str
    ip: str | None = None
    pairs: str = ""
    legend: str = ""
    run: int = 1


@dataclasses.dataclass(frozen=True)
class Observed:
    body: Mapping[str, Any]
    pods: Sequence[PodView]
    now: datetime.datetime
    snapshot: resolving.Snapshot | None = None
    spilled: tuple[list[str], dict[str, list[str]]] | None = None  # the full matrix of status.matrixConfigMap



@dataclasses.dataclass
class Actions:
    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    create: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    delete: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (namespace, name)
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    needs_snapshot: bool = False  # the next pass must read the cluster (pods, policies) first
    mismatches: dict[str, int] = dataclasses.field(default_factory=dict)  # kind -> count, for the metrics
    configmap: dict[str, Any] | None = None  # the full matrix, when it outgrew the status (written before it)


class _Pass:
    """The state of one reconciliation of one audit."""

    def __init__(self, observed: Observed, config: settings.OperatorSettings, evaluate: Evaluator) -> None:
        self.observed = observed
        self.config = config
        self.evaluate = evaluate
        self.meta = observed.body["metadata"]
        self.generation = self.meta.get("generation")
        self.status = audits.ReachabilityAuditStatus.model_validate(observed.body.get("status") or {})
        self.actions = Actions()
        self.pods = [pod for pod in observed.pods if pod.run == self.status.run]  # this run's pods
        self.reset: list[str] = []  # status keys a new run clears (merge patch null)
        self.stale_matrix: set[str] = set()  # matrix keys of an earlier run that this one no longer has

    def condition(self, kind: str, value: bool, reason: str, message: str = "") -> None:
        self.status.conditions = builders.set_condition(self.status.conditions, kind, value, reason, message,
                                                        self.generation, self.observed.now)

    def finish(self) -> Actions:
        self.status.observed_generation = self.generation
        dumped = self.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        dumped.pop("probes", None)  # the probe pods' keys: never written by the operator (only cleared)
        if self.stale_matrix and "matrix" in dumped:
            dumped["matrix"] = {**{key: None for key in self.stale_matrix}, **dumped["matrix"]}
        self.actions.status = {**dumped, **{key: None for key in self.reset}}
        return self.actions

    def cleanup(self) -> None:
        self.actions.delete += [(pod.namespace, pod.name) for pod in self.observed.pods]

    def ended(self, spec: audits.ReachabilityAuditSpec | None) -> None:
        """A run ended (Complete or Failed): history, drift against the previous run, and the next run's time."""
        if spec is None or spec.schedule is None:
            return
        totals = self.status.totals
        summary = audits.RunSummary(run=self.status.run, started=self.status.start_time,
                                    completed=self.status.completion_time, phase=self.status.phase or statuses.Phase.FAILED,
                                    pairs=totals.pairs, unexpectedly_reachable=totals.unexpectedly_reachable,
                                    unexpectedly_blocked=totals.unexpectedly_blocked)
        self.status.history = [*self.status.history, summary][-spec.history_limit:]
        began = builders.parse_timestamp(self.status.start_time) or self.observed.now  # runs keep their cadence
        self.status.next_run_time = builders.timestamp(scheduling.parse(spec.schedule).next_after(began))

    def reject(self, reason: str, message: str) -> Actions:
        first = self.status.phase != statuses.Phase.REJECTED or self.status.observed_generation != self.generation
        self.status.phase = statuses.Phase.REJECTED
        self.condition("Accepted", False, reason, message)
        self.condition("Complete", False, reason, message)
        if first:
            self.actions.events.append(("Warning", reason, message))
        self.cleanup()
        return self.finish()

    def fail(self, reason: str, message: str, spec: audits.ReachabilityAuditSpec | None = None) -> Actions:
        self.status.phase = statuses.Phase.FAILED
        self.status.completion_time = builders.timestamp(self.observed.now)
        self.condition("Complete", False, reason, message)
        self.condition("Failed", True, reason, message)
        self.actions.events.append(("Warning", reason, message))
        self.cleanup()
        self.ended(spec)
        return self.finish()

    def run(self) -> Actions:
        if self.status.phase in (statuses.Phase.COMPLETE, statuses.Phase.FAILED):
            self.cleanup()  # pods a crashed pass left behind
            totals = self.status.totals  # the gauges again after an operator restart or failover
            self.actions.mismatches = {"UnexpectedlyReachable": totals.unexpectedly_reachable,
                                       "UnexpectedlyBlocked": totals.unexpectedly_blocked,
                                       "PolicyDisagreesWithRule": totals.rule_disagreements}
            due = builders.parse_timestamp(self.status.next_run_time)
            if due is None or self.observed.now < due:
                return self.actions
            return self.next_run()
        stale = [(pod.namespace, pod.name) for pod in self.observed.pods if pod.run != self.status.run]
        self.actions.delete += stale  # pods of an earlier run that outlived it
        if self.status.phase == statuses.Phase.REJECTED and self.status.observed_generation == self.generation:
            return self.actions
        try:
            spec = audits.ReachabilityAuditSpec.model_validate(self.observed.body.get("spec") or {})
        except pydantic.ValidationError as exc:
            return self.reject(errors.SpecError.reason, problems.describe(exc, prefix="spec."))
        if spec.schedule is not None:
            try:
                scheduling.parse(spec.schedule)
            except ValueError as exc:  # the cron grammar names the bad part
                return self.reject(errors.SpecError.reason, f"spec.schedule: {exc}")
        refused = guardrail(spec, self.config)
        if refused:
            return self.reject(errors.GuardrailError.reason, refused)
        if self.status.start_time is None:
            self.status.start_time = builders.timestamp(self.observed.now)
            self.status.phase = statuses.Phase.PENDING
            self.condition("Accepted", True, "Accepted", f"{len(spec.sources)} source(s), "
                           f"{len(spec.destinations)} destination(s)")
        started = builders.parse_timestamp(self.status.start_time)
        if started is not None and (self.observed.now - started).total_seconds() > spec.active_deadline_seconds:
            return self.fail("DeadlineExceeded", f"activeDeadlineSeconds={spec.active_deadline_seconds} passed", spec)
        if not self.status.sources:
            return self.start(spec)
        return self.collect(spec)

    def next_run(self) -> Actions:
        """Start the next run of a scheduled audit: what the last run found stays in history, matrix and drift."""
        self.status.run += 1
        self.status.phase = statuses.Phase.PENDING
        self.status.start_time = builders.timestamp(self.observed.now)
        self.status.completion_time = None
        self.status.next_run_time = None
        self.status.sources = {}
        self.reset = ["sources", "probes", "completionTime", "nextRunTime"]
        self.condition("Complete", False, "NextRun", f"run {self.status.run} started")
        self.condition("Progressing", True, "NextRun", f"run {self.status.run} started")
        self.actions.events.append(("Normal", "NextRun", f"run {self.status.run} started (schedule)"))
        return self.finish()

    def start(self, spec: audits.ReachabilityAuditSpec) -> Actions:
        snapshot = self.observed.snapshot
        if snapshot is None:
            self.actions.needs_snapshot = True
            return self.finish()
        if spec.canaries and not self.canaries_running(spec, snapshot):
            return self.finish()
        try:
            pairs = resolving.pairs(spec, snapshot, max_pairs=self.config.max_pairs_per_audit, audit=self.meta["name"])
            labels = {s.name: resolving.source_labels(s, snapshot) for s in spec.sources}
        except errors.SpecError as exc:
            return self.reject(exc.reason, str(exc))
        for source in spec.sources:
            mine = [p for p in pairs if p.source == source.name]
            judged = [expecting.expected(spec, snapshot, source, labels[source.name], pair, self.evaluate)
                      for pair in mine]
            encoded = codecs.encode_pairs([(p.endpoint.address, p.port, p.protocol, e.expected, p.endpoint.listener)
                                           for p, e in zip(mine, judged, strict=True)])
            legend = codecs.encode_legend([[p.endpoint.destination, p.endpoint.label, e.decided_by, e.rule]
                                           for p, e in zip(mine, judged, strict=True)])
            assert source.namespace is not None
            manifest = builders.probe_pod(self.observed.body, source.name, source.namespace, labels[source.name],
                                          encoded, self.config, convergence_seconds=spec.convergence_seconds,
                                          timeout_ms=spec.probe_timeout_ms, legend=legend, run=self.status.run)
            self.actions.create.append(manifest)
            self.status.sources[source.name] = audits.SourceStatus(
                namespace=source.namespace, pod=manifest["metadata"]["name"], pairs=len(mine))
        self.status.phase = statuses.Phase.RUNNING
        self.condition("Progressing", True, "Probing", f"{len(pairs)} pairs from {len(spec.sources)} source(s)")
        return self.finish()

    def canaries_running(self, spec: audits.ReachabilityAuditSpec, snapshot: resolving.Snapshot) -> bool:
        """Start the missing canaries; True once every one has an address to probe."""
        canaries = {pod.owner: pod for pod in self.pods if pod.role == "canary"}
        ready = True
        for destination in spec.destinations:
            if destination.pod_selector is None or destination.namespace is None:
                continue
            current = canaries.get(destination.name)
            if current is not None:
                if current.phase == "Failed":
                    self.fail("CanaryFailed", f"canary {current.namespace}/{current.name} failed", spec)
                    return False
                ready = ready and current.phase == "Running" and current.ip is not None
                continue
            real = [p for p in snapshot.pods if p.namespace == destination.namespace and not p.own
                    and resolving.matches(p.labels, destination.pod_selector)]
            labels = dict(real[0].labels) if real else dict(destination.pod_selector)
            ports = sorted({(p.port, p.protocol, p.name) for pod in real for p in pod.ports}, key=str)
            tcp, udp = _canary_ports(spec, ports)
            declared = [{"containerPort": number, "protocol": protocol, **({"name": name} if name else {})}
                        for number, protocol, name in ports]
            self.actions.create.append(builders.canary_pod(self.observed.body, destination.name,
                                                           destination.namespace, labels, tcp, udp, self.config,
                                                           declared, run=self.status.run))
            ready = False
        if not ready:
            self.condition("Progressing", True, "StartingCanaries", "waiting for canary listeners to run")
        return ready

    def collect(self, spec: audits.ReachabilityAuditSpec) -> Actions:
        probes = {pod.owner: pod for pod in self.pods if pod.role == "probe"}
        waiting = []
        for name, placed in self.status.sources.items():
            reported = self.status.probes.get(name)
            if reported is not None and reported.run != self.status.run:
                reported = None  # a report of an earlier run
            if reported is not None and reported.phase == "Done":
                continue
            pod = probes.get(name)
            if pod is None or pod.phase == "Failed" or (pod.phase == "Succeeded" and reported is None):
                what = "is gone" if pod is None else f"ended {pod.phase} without reporting"
                return self.fail("ProbeFailed", f"probe pod {placed.namespace}/{placed.pod} of source {name} {what}", spec)
            waiting.append(name)
        if waiting:
            self.condition("Progressing", True, "Probing", f"waiting for {len(waiting)} source(s)")
            return self.finish()
        return self.conclude(spec, probes)

    def conclude(self, spec: audits.ReachabilityAuditSpec, probes: Mapping[str, PodView]) -> Actions:
        totals = audits.Totals()
        found: list[audits.Mismatch] = []
        rows: dict[str, dict[str, dict[str, str]]] = {}  # "port/proto" -> source -> column -> char
        columns: list[str] = []
        for name in [source.name for source in spec.sources if source.name in self.status.sources]:  # spec order
            pod = probes.get(name)
            if pod is None:
                return self.fail("ProbeFailed", f"probe pod of source {name} is gone; its pairs are unknown", spec)
            try:
                pairs = codecs.decode_pairs(pod.pairs)
                legend = codecs.decode_legend(pod.legend)
            except ValueError as exc:
                return self.fail("ProbeFailed", f"probe pod {pod.namespace}/{pod.name}: {exc}", spec)
            verdicts = self.status.probes[name].verdicts
            if len(verdicts) != len(pairs) or len(legend) != len(pairs):
                return self.fail("ProbeFailed", f"source {name} reported {len(verdicts)} verdicts for {len(pairs)} pairs",
                                 spec)
            for (address, port, protocol, expected, listener), (destination, label, decided, rule), char in zip(
                    pairs, legend, verdicts, strict=True):
                totals.pairs += 1
                seen = audits.observed(char, protocol, listener)
                totals.by_canary += int(listener)
                cell = _cell(expected, seen)
                if label not in columns:
                    columns.append(label)
                rows.setdefault(f"{port}/{protocol}", {}).setdefault(name, {})[label] = cell
                if rule is not None and expected is not None and rule != expected:
                    totals.rule_disagreements += 1
                    found.append(audits.Mismatch(
                        source=name, destination=f"{destination} {label}", address=address, port=port,
                        protocol=audits.Protocol(protocol), expected=_verdict(rule), observed=_verdict(expected),
                        decided_by=decided, evidence="the declared rule contradicts the policies",
                        kind="PolicyDisagreesWithRule"))
                if expected is None:
                    totals.unjudged += 1
                elif seen is None:
                    totals.inconclusive += 1
                elif (seen == audits.Verdict.REACHABLE) == expected:
                    totals.agreeing += 1
                else:
                    kind = "UnexpectedlyReachable" if expected is False else "UnexpectedlyBlocked"
                    if expected is False:
                        totals.unexpectedly_reachable += 1
                    else:
                        totals.unexpectedly_blocked += 1
                    found.append(audits.Mismatch(
                        source=name, destination=f"{destination} {label}", address=address, port=port,
                        protocol=audits.Protocol(protocol), expected=_verdict(expected), observed=seen,
                        decided_by=decided, evidence=_evidence(char, listener), kind=kind))
        order = {"UnexpectedlyReachable": 0, "UnexpectedlyBlocked": 1, "PolicyDisagreesWithRule": 2}
        found.sort(key=lambda m: (order[m.kind], m.source, m.destination, m.port, m.protocol))
        self.status.totals = totals
        self.status.mismatches = found[:MISMATCHES_LISTED]
        self.status.mismatches_truncated = max(0, len(found) - MISMATCHES_LISTED)
        previous = self.observed.spilled or (self.status.matrix_columns, self.status.matrix)
        self.stale_matrix = set(self.status.matrix)
        matrix = matrices.build(rows, columns)
        self.status.matrix_columns, self.status.matrix = columns, matrix  # whole, for drift; fitted below
        self.status.phase = statuses.Phase.COMPLETE
        self.status.completion_time = builders.timestamp(self.observed.now)
        self.condition("Progressing", False, "Completed", f"{totals.pairs} pairs probed")
        self.condition("Complete", True, "Completed", f"{totals.pairs} pairs probed, {totals.agreeing} as expected")
        probed = totals.unexpectedly_reachable + totals.unexpectedly_blocked
        self.actions.mismatches = {"UnexpectedlyReachable": totals.unexpectedly_reachable,
                                   "UnexpectedlyBlocked": totals.unexpectedly_blocked,
                                   "PolicyDisagreesWithRule": totals.rule_disagreements}
        if probed:
            reason = "UnexpectedlyReachable" if totals.unexpectedly_reachable else "UnexpectedlyBlocked"
            sample = "; ".join(f"{m.source} -> {m.destination} {m.port}/{m.protocol.value} {m.observed.value.lower()}"
                               for m in found[:3] if m.kind != "PolicyDisagreesWithRule")
            message = (f"{totals.unexpectedly_reachable} pair(s) unexpectedly reachable, "
                       f"{totals.unexpectedly_blocked} unexpectedly blocked: {sample}")
            self.condition("ReachabilityAsExpected", False, reason, message)
            self.actions.events.append(("Warning", reason, message))
        elif totals.agreeing == 0:
            self.condition("ReachabilityAsExpected", False, "NothingJudged",
                           f"{totals.pairs} pair(s) probed, none with a conclusive verdict and an expectation")
        else:
            note = f"; {totals.inconclusive} inconclusive (UDP without a canary)" if totals.inconclusive else ""
            self.condition("ReachabilityAsExpected", True, "AsExpected", f"{totals.agreeing} pair(s) as expected{note}")
        if totals.rule_disagreements:
            self.condition("RulesMatchPolicies", False, "PolicyDisagreesWithRule",
                           f"{totals.rule_disagreements} declared rule verdict(s) contradict the policies")
        elif spec.expect.rules and spec.expect.from_network_policies:
            self.condition("RulesMatchPolicies", True, "AsDeclared", "every declared rule agrees with the policies")
        if spec.schedule is not None and any(h.phase == statuses.Phase.COMPLETE for h in self.status.history):
            self.drift(previous)
        self.fit_matrix(spec, columns, matrix)
        self.stale_matrix -= set(self.status.matrix)
        self.cleanup()
        self.ended(spec)
        return self.finish()

    def fit_matrix(self, spec: audits.ReachabilityAuditSpec, columns: list[str], matrix: dict[str, list[str]]) -> None:
        """Keep in the status what of the matrix fits 3/4 of the byte budget; spill the whole into a ConfigMap."""
        self.status.matrix_columns, self.status.matrix = [], {}
        self.status.matrix_config_map = None
        rest = self.status.model_dump(by_alias=True, mode="json", exclude_none=True)  # probes included: they are there
        room = self.config.status_byte_budget * 3 // 4 - len(json.dumps(rest, separators=(",", ":")).encode())
        fitted = matrices.fit(columns, matrix, room)
        self.status.matrix_columns, self.status.matrix, self.status.matrix_omitted = (
            fitted.columns, fitted.matrix, fitted.omitted)
        if fitted.spilled:
            namespace = str(spec.sources[0].namespace)  # within auditNamespaces: the guardrail saw to it
            name = matrices.configmap_name(self.meta["name"])
            self.actions.configmap = builders.audit_configmap(self.observed.body, namespace, name,
                                                              codecs.encode_matrix(self.status.run, columns, matrix))
            self.status.matrix_config_map = f"{namespace}/{name}"
        elif (self.observed.body.get("status") or {}).get("matrixConfigMap"):
            self.reset.append("matrixConfigMap")  # an earlier run spilled; this one fits

    def drift(self, previous: tuple[list[str], dict[str, list[str]]]) -> None:
        """The observed verdicts that changed since the last completed run, from the two matrices."""
        before = _observed_cells(*previous)
        after = _observed_cells(self.status.matrix_columns, self.status.matrix)
        opened = sorted(key for key, reachable in after.items() if reachable and before.get(key) is False)
        closed = sorted(key for key, reachable in after.items() if not reachable and before.get(key) is True)
        last = max(h.run for h in self.status.history if h.phase == statuses.Phase.COMPLETE)
        self.status.drift = audits.AuditDrift(previous=last, latest=self.status.run, became_reachable=opened[:100],
                                              became_blocked=closed[:100],
                                              truncated=max(0, len(opened) - 100) + max(0, len(closed) - 100))
        if opened or closed:
            message = (f"run {self.status.run} vs {last}: {len(opened)} pair(s) became reachable, "
                       f"{len(closed)} became blocked")
            self.condition("Drifted", True, "VerdictsChanged", message)
            self.actions.events.append(("Warning", "DriftDetected", message))
        else:
            self.condition("Drifted", False, "NoChange", f"run {self.status.run} observed what run {last} did")


def _observed_cells(columns: Sequence[str], matrix: Mapping[str, Sequence[str]]) -> dict[str, bool]:
    """``source -> destination port/proto`` -> observed reachable, for every judged cell of a matrix."""
    found: dict[str, bool] = {}
    for key, rows in matrix.items():
        for row in rows:
            source, _, cells = row.partition(" ")
            for column, cell in zip(columns, cells, strict=False):
                if cell in ".R":
                    found[f"{source} -> {column} {key}"] = True
                elif cell in "xB":
                    found[f"{source} -> {column} {key}"] = False
    return found


def _verdict(reachable: bool) -> audits.Verdict:
    return audits.Verdict.REACHABLE if reachable else audits.Verdict.BLOCKED


def _cell(expected: bool | None, seen: audits.Verdict | None) -> str:
    if expected is None or seen is None:
        return "?"
    reachable = seen == audits.Verdict.REACHABLE
    if reachable == expected:
        return "." if reachable else "x"
    return "R" if reachable else "B"


def _evidence(char: str, listener: bool) -> str:
    what = {"o": "connected (or replied)", "r": "refused (reset / port unreachable)", "p": "ICMP prohibited",
            "s": "silence", "e": "local error"}.get(char, char)
    return f"{what}, {'canary listener' if listener else 'real endpoint'}"


def _canary_ports(spec: audits.ReachabilityAuditSpec, declared: Sequence[tuple[int, str, str | None]]) -> tuple[str, str]:
    """The ports a canary listens on: the audit's numbered ports, or the destination's declared ones."""
    tcp: set[int] = set()
    udp: set[int] = set()
    wanted = [(p.port, p.protocol.value, p.end_port) for p in spec.ports] if spec.ports is not None else []
    for port, protocol, end in wanted:
        numbers: list[int]
        if isinstance(port, int):
            numbers = list(range(port, min(end or port, port + 63) + 1))
        else:
            numbers = [n for n, proto, name in declared if name == port and proto == protocol]
        (tcp if protocol == "TCP" else udp).update(numbers)
    if spec.ports is None:
        for number, protocol, _ in declared:
            (tcp if protocol == "TCP" else udp).add(number)
    return ",".join(map(str, sorted(tcp))), ",".join(map(str, sorted(udp)))


def guardrail(spec: audits.ReachabilityAuditSpec, config: settings.OperatorSettings) -> str | None:
    """Why the operator's settings refuse this audit, or None."""
    allowed = set(config.audit_namespaces)
    places = {s.namespace for s in spec.sources}
    if spec.canaries:
        places |= {d.namespace for d in spec.destinations if d.pod_selector is not None}
    outside = sorted(str(n) for n in places if n not in allowed)
    if outside:
        return (f"the audit would place pods in {', '.join(outside)}, outside auditNamespaces "
                f"({', '.join(sorted(allowed)) or 'none'})")
    networks = [ipaddress.ip_network(c, strict=False) for c in config.allowed_cidrs]
    for destination in spec.destinations:
        for cidr in destination.cidrs:
            try:
                wanted = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                return f"destination {destination.name}: {cidr!r} is not a CIDR"
            if networks and not any(wanted.version == n.version and wanted.subnet_of(n) for n in networks  # type: ignore[arg-type]
                                    ):
                return f"destination {destination.name}: {cidr} is outside allowedCidrs"
            if any(wanted.version == n.version and wanted.overlaps(n)
                   for n in (ipaddress.ip_network(d, strict=False) for d in config.denied_cidrs)):
                return f"destination {destination.name}: {cidr} overlaps deniedCidrs"
    return None


def reconcile(observed: Observed, config: settings.OperatorSettings, evaluate: Evaluator) -> Actions:
    """Decide what to do next for one audit."""
    return _Pass(observed, config, evaluate).run()


def all_reported(body: Mapping[str, Any]) -> bool:
    """Whether every probe pod of a running audit's current run has written its verdicts (time to conclude).

    The operator reacts to this at once instead of at its next tick: the watch event that
    carries the last report is enough.
    """
    status = body.get("status") or {}
    sources = status.get("sources") or {}
    probes = status.get("probes") or {}
    run = status.get("run", 1)
    return (status.get("phase") == statuses.Phase.RUNNING.value and bool(sources)
            and all((probes.get(name) or {}).get("phase", "Done") == "Done"
                    and (probes.get(name) or {}).get("run", 1) == run and name in probes for name in sources))


def pod_view(pod: Mapping[str, Any]) -> PodView | None:
    """A probe or canary pod of an audit (None for any other pod)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    role = labels.get(builders.LABEL_ROLE)
    if role not in ("probe", "canary"):
        return None
    env = {e.get("name"): e.get("value", "") for c in (pod.get("spec") or {}).get("containers") or []
           for e in c.get("env") or []}
    try:
        run = int(labels.get(builders.LABEL_RUN, "1"))
    except ValueError:
        run = 0
    return PodView(name=meta.get("name", ""), namespace=meta.get("namespace", ""), role=role, run=run,
                   owner=labels.get(builders.LABEL_SOURCE if role == "probe" else builders.LABEL_DESTINATION, ""),
                   phase=(pod.get("status") or {}).get("phase") or "Pending",
                   ip=(pod.get("status") or {}).get("podIP"), pairs=str(env.get("PORTOLAN_PAIRS") or ""),
                   legend=(meta.get("annotations") or {}).get(builders.ANNOTATION_LEGEND, ""))


def snapshot(client: clients.Client, namespaces: Sequence[str]) -> resolving.Snapshot:
    """Read what an audit needs of the cluster: namespaces, pods and Services of these namespaces, all policies."""
    names = {n["metadata"]["name"]: dict(n["metadata"].get("labels") or {}) for n in client.list_namespaces()}
    pods: list[resolving.Pod] = []
    services: list[resolving.Service] = []
    for namespace in sorted(set(namespaces)):
        for body in client.list_pods(namespace):
            if (body.get("status") or {}).get("phase") == "Running" and not body["metadata"].get("deletionTimestamp"):
                pods.append(_pod(body))  # finished or terminating pods are no endpoints
        for body in client.list_services(namespace):
            spec = body.get("spec") or {}
            services.append(resolving.Service(
                namespace, body["metadata"]["name"], spec.get("clusterIP"), dict(spec.get("selector") or {}),
                tuple(resolving.ServicePort(p["port"], p.get("targetPort", p["port"]), p.get("protocol") or "TCP")
                      for p in spec.get("ports") or [])))
    return resolving.Snapshot(names, pods, services, client.list_network_policies())


def _pod(body: Mapping[str, Any]) -> resolving.Pod:
    meta = body["metadata"]
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    ports = tuple(resolving.ContainerPort(p["containerPort"], p.get("protocol") or "TCP", p.get("name"))
                  for c in spec.get("containers") or [] for p in c.get("ports") or [])
    return resolving.Pod(meta["namespace"], meta["name"], dict(meta.get("labels") or {}), status.get("podIP"),
                         ready, bool(spec.get("hostNetwork")), ports)


def step(client: clients.Client, config: settings.OperatorSettings, name: str, now: datetime.datetime,
         evaluate: Evaluator) -> Actions:
    """One reconciliation of one audit against the API: observe, decide, act."""
    body = client.get_audit(name)
    selector = f"{builders.LABEL_AUDIT}={builders.bounded_name(name)}"  # label values stop at 63 characters
    pods = [view for view in (pod_view(p) for p in client.list_pods(None, selector)) if view is not None]
    status = body.get("status") or {}
    spilled = None
    scheduled = bool((body.get("spec") or {}).get("schedule"))
    if scheduled and status.get("matrixConfigMap") and status.get("phase") == statuses.Phase.RUNNING.value:
        with contextlib.suppress(errors.KubeError, ValueError):  # without it, drift compares what the status kept
            spilled = client.audit_matrix(body)  # the previous run's full matrix, for drift
    observed = Observed(body, pods, now, spilled=spilled)
    actions = reconcile(observed, config, evaluate)
    if actions.needs_snapshot:
        spec = audits.ReachabilityAuditSpec.model_validate(body["spec"])
        namespaces = {n for n in [*(s.namespace for s in spec.sources), *(d.namespace for d in spec.destinations)] if n}
        observed = Observed(body, pods, now, snapshot(client, sorted(namespaces)), spilled)
        actions = reconcile(observed, config, evaluate)
    if actions.configmap is not None:
        client.write_configmap(actions.configmap)  # before the status names it
    if actions.status:
        client.patch_audit_status(name, actions.status)
    for manifest in actions.create:
        client.create_pod(manifest)
    for namespace, pod in actions.delete:
        client.delete_pod(namespace, pod)
    for kind, reason, message in actions.events:
        with contextlib.suppress(errors.KubeError):  # an Event is a courtesy: never worth a retry of the step
            client.event(body, kind, reason, message, now)
    return actions
