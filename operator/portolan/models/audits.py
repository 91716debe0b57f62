"""ReachabilityAudit: does the cluster enforce what its NetworkPolicies say, and do they say what the team means?

A cluster-scoped kind (it places probe pods in several namespaces; a namespaced
ScanJob never creates pods outside its own).  The spec names where probes come
from (a probe pod carrying a workload's labels in its namespace is selected by
every policy exactly as the workload is), where they go (pods, Services,
addresses outside the cluster), on which ports, and what to expect: the
reachability computed from the live NetworkPolicies and/or declared rules.  The
status lists every mismatch first, totals, a compact matrix per port, and
conditions (``Complete``, ``ReachabilityAsExpected``).
"""

from __future__ import annotations

import enum
import re

import pydantic
import pydantic.alias_generators

from portolan.models import kinds, statuses

KIND = kinds.AUDIT
PLURAL = kinds.AUDITS
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=pydantic.alias_generators.to_camel, populate_by_name=True, extra="forbid"
    )


class Protocol(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"


class PortRange(_Model):
    """A port (number, or a named container port resolved per destination pod), or a range with endPort."""

    port: int | str
    end_port: int | None = pydantic.Field(default=None, ge=1, le=65535)
    protocol: Protocol = Protocol.TCP

    @pydantic.field_validator("port")
    @classmethod
    def _port(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 65535:
            raise ValueError(f"port {value} is outside 1-65535")
        if isinstance(value, str) and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value):
            raise ValueError(f"{value!r} is not a port name (IANA_SVC_NAME)")
        return value


class Source(_Model):
    """Where probes come from: a probe pod with these labels (or a matching pod's) in that namespace."""

    name: str = pydantic.Field(pattern=_NAME.pattern, max_length=63,
                               description="Names this source in rules, the matrix and mismatches (a DNS label).")
    namespace: str | None = pydantic.Field(default=None, description="Where the probe pod runs (pod sources).")
    pod_labels: dict[str, str] | None = pydantic.Field(
        default=None, description="Labels of the probe pod: every NetworkPolicy selects it as it selects them.")
    from_pods_matching: dict[str, str] | None = pydantic.Field(
        default=None, description="Copy the labels of the first pod (by name) these labels match in the namespace.")

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> Source:
        if self.namespace is None or (self.pod_labels is None) == (self.from_pods_matching is None):
            raise ValueError(f"source {self.name}: give a namespace and exactly one of podLabels, fromPodsMatching")
        return self


class Destination(_Model):
    """Where probes go: pods by selector, a Service, or addresses outside the cluster."""

    name: str = pydantic.Field(pattern=_NAME.pattern, max_length=63, description="A DNS label.")
    namespace: str | None = None
    pod_selector: dict[str, str] | None = pydantic.Field(
        default=None, description="Pods (their IPs) matching these labels in the namespace.")
    service: str | None = pydantic.Field(
        default=None, description="A Service of the namespace: its ClusterIP, judged by its pods' policies.")
    cidrs: list[str] = pydantic.Field(
        default_factory=list, description="Addresses outside the cluster (egress to ipBlocks); within allowedCidrs.")

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> Destination:
        kinds = [self.pod_selector is not None, self.service is not None, bool(self.cidrs)]
        if sum(kinds) != 1:
            raise ValueError(f"destination {self.name}: give exactly one of podSelector, service, cidrs")
        if (self.pod_selector is not None or self.service is not None) and self.namespace is None:
            raise ValueError(f"destination {self.name}: pods and Services need a namespace")
        return self


class Rule(_Model):
    """A declared expectation, like netassert's: from a source to a destination on ports, reachable or not."""

    from_: str = pydantic.Field(alias="from")
    to: str
    ports: list[PortRange]
    reachable: bool


class Expect(_Model):
    """What the audit expects."""

    from_network_policies: bool = pydantic.Field(
        default=True, description="Expected = the destination's ingress AND the source's egress, from the live policies.")
    rules: list[Rule] = pydantic.Field(default_factory=list)


class ReachabilityAuditSpec(_Model):
    """What a ReachabilityAudit asks for."""

    sources: list[Source] = pydantic.Field(min_length=1)
    destinations: list[Destination] = pydantic.Field(min_length=1)
    ports: list[PortRange] | None = pydantic.Field(
        default=None, description="Ports to probe; absent: every port the policies name plus the "
        "destination pods' declared containerPorts.")
    expect: Expect = pydantic.Field(default_factory=Expect)
    canaries: bool = pydantic.Field(
        default=False, description="Start never-Ready canary listeners with each pod destination's labels.")
    active_deadline_seconds: int = pydantic.Field(default=600, ge=30, le=86_400, description="Per run.")
    schedule: str | None = pydantic.Field(
        default=None, description="Run again on this schedule (the ScanSchedule grammar: five-field cron in UTC, "
        "@hourly/@daily/..., or @every <n>s|m|h); each run's totals are kept in history and the verdicts that "
        "changed between the last two runs in drift.")
    history_limit: int = pydantic.Field(default=5, ge=1, le=50)
    convergence_seconds: int = pydantic.Field(
        default=10, ge=0, le=600, description="Re-probe each mismatch until this deadline before declaring it.")
    probe_timeout_ms: int = pydantic.Field(default=1000, ge=50, le=30_000)

    @pydantic.model_validator(mode="after")
    def _names(self) -> ReachabilityAuditSpec:
        for what, names in (("source", [s.name for s in self.sources]),
                            ("destination", [d.name for d in self.destinations])):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{what} names must be unique: {', '.join(duplicated)}")
        sources = {s.name for s in self.sources}
        destinations = {d.name for d in self.destinations}
        for rule in self.expect.rules:
            if rule.from_ not in sources:
                raise ValueError(f"rule from {rule.from_!r}: no such source")
            if rule.to not in destinations:
                raise ValueError(f"rule to {rule.to!r}: no such destination")
        return self


class Verdict(enum.StrEnum):
    REACHABLE = "Reachable"
    BLOCKED = "Blocked"


class Mismatch(_Model):
    """One pair where what was observed is not what was expected."""

    source: str
    destination: str  # destination name / pod (or address)
    address: str
    port: int
    protocol: Protocol
    expected: Verdict
    observed: Verdict
    decided_by: str = pydantic.Field(description="The policy or rule that decided the expectation.")
    evidence: str = pydantic.Field(description="What the probe saw: connected, reset, canary echo, silence, ...")
    kind: str = pydantic.Field(description="UnexpectedlyReachable (a security finding), UnexpectedlyBlocked, "
                               "or PolicyDisagreesWithRule (a declared rule the policies contradict).")


class Totals(_Model):
    """Counts over every probed pair."""

    pairs: int = 0
    agreeing: int = 0
    unexpectedly_reachable: int = 0
    unexpectedly_blocked: int = 0
    inconclusive: int = 0  # UDP silence without a canary: proves nothing
    unjudged: int = 0  # no expectation (only declared rules, none covering the pair)
    rule_disagreements: int = 0
    by_canary: int = 0  # verdicts that relied on a canary listener


class SourceStatus(_Model):
    """Where one source's probe pod runs, and how many pairs it probes (written by the operator)."""

    namespace: str
    pod: str
    pairs: int = 0


class ProbeResult(_Model):
    """What one probe pod reported: a verdict character per pair (o open, r refused, p prohibited, s silent)."""

    run: int = 1
    phase: str = "Done"
    verdicts: str = ""
    rounds: int = 1
    finished: str | None = None


class RunSummary(_Model):
    """One finished run of a scheduled audit."""

    run: int
    started: str | None = None
    completed: str | None = None
    phase: statuses.Phase
    pairs: int = 0
    unexpectedly_reachable: int = 0
    unexpectedly_blocked: int = 0


class AuditDrift(_Model):
    """Pairs whose observed verdict changed between the two latest completed runs."""

    previous: int
    latest: int
    became_reachable: list[str] = pydantic.Field(default_factory=list)  # "source -> destination port/proto"
    became_blocked: list[str] = pydantic.Field(default_factory=list)
    truncated: int = 0


class ReachabilityAuditStatus(_Model):
    """What the operator reports about an audit."""

    run: int = 1
    next_run_time: str | None = None
    history: list[RunSummary] = pydantic.Field(default_factory=list)
    drift: AuditDrift | None = None

    phase: statuses.Phase | None = None
    observed_generation: int | None = None
    conditions: list[statuses.Condition] = pydantic.Field(default_factory=list)
    start_time: str | None = None
    completion_time: str | None = None
    totals: Totals = pydantic.Field(default_factory=Totals)
    mismatches: list[Mismatch] = pydantic.Field(default_factory=list)
    mismatches_truncated: int = 0
    matrix: dict[str, list[str]] = pydantic.Field(
        default_factory=dict, description="Per port/protocol, one row per source: a character per destination "
        "(. agrees reachable, x agrees blocked, R unexpectedly reachable, B unexpectedly blocked).")
    matrix_columns: list[str] = pydantic.Field(default_factory=list, description="The matrix's destinations, in order.")
    matrix_omitted: int = pydantic.Field(
        default=0, description="Port tables left out of status.matrix to keep the status within its byte budget; "
        "the full matrix is in matrixConfigMap.")
    matrix_config_map: str | None = pydantic.Field(
        default=None, description="NAMESPACE/NAME of the ConfigMap (owned by the audit) holding the full matrix of "
        "the latest run, when it did not fit the status (`portolan audit show` reads it).")
    sources: dict[str, SourceStatus] = pydantic.Field(default_factory=dict)
    probes: dict[str, ProbeResult] = pydantic.Field(
        default_factory=dict, description="Written by the probe pods: one verdict character per pair.")


def observed(char: str, protocol: str, listener: bool) -> Verdict | None:
    """What a probe's answer says about the path (None: it proves nothing).

    A connection or a reply proves the path open.  A reset (ICMP port-unreachable for
    UDP) proves it open too — unless a listener is known to be there (a canary): then
    only an enforcer that rejects can have answered, and the path is blocked.  An ICMP
    prohibition is an enforcer's answer: blocked.  Silence blocks TCP; for UDP it
    proves something only where a canary would have echoed.
    """
    if char == "o":
        return Verdict.REACHABLE
    if char == "r":
        return Verdict.BLOCKED if listener else Verdict.REACHABLE
    if char == "p":
        return Verdict.BLOCKED
    if char == "s":
        return Verdict.BLOCKED if protocol == "TCP" or listener else None
    return None
