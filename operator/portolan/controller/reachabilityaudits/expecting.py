"""Expectations of an audit's pairs: from the live NetworkPolicies, from declared rules, or both.

The policies' verdict comes from an injected evaluator (the product's
NetworkPolicy evaluator, :mod:`portolan.policies`, in the operator); a declared
rule matches a pair by source and destination name and port (a number or range,
or the name of the destination pod's port).  With both, the policies decide the
expectation and a rule that says otherwise is reported apart: a policy bug, not
a CNI bug.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from portolan.controller.reachabilityaudits import resolving
from portolan.models import audits
from portolan.policies import evaluating

Evaluator = Callable[[resolving.Snapshot, Mapping[str, str], str, resolving.Pair], tuple[bool | None, str]]


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What a pair should do, what decided it, and the declared rule's verdict if one covers the pair."""

    expected: bool | None
    decided_by: str
    rule: bool | None = None


def _covers(port: audits.PortRange, pair: resolving.Pair) -> bool:
    if port.protocol.value != pair.protocol:
        return False
    if isinstance(port.port, str):
        return port.port == pair.port_name
    return port.port <= pair.port <= (port.end_port or port.port)


def declared(rules: Sequence[audits.Rule], pair: resolving.Pair) -> tuple[bool | None, str]:
    """The last declared rule covering the pair (later rules override earlier ones), or (None, '')."""
    found: tuple[bool | None, str] = (None, "")
    for index, rule in enumerate(rules):
        if rule.from_ == pair.source and rule.to == pair.endpoint.destination and \
                any(_covers(port, pair) for port in rule.ports):
            found = (rule.reachable, f"rule {index} ({rule.from_} -> {rule.to})")
    return found


def expected(spec: audits.ReachabilityAuditSpec, snapshot: resolving.Snapshot, source: audits.Source,
             labels: Mapping[str, str], pair: resolving.Pair, evaluate: Evaluator) -> Expectation:
    """The expectation of one pair."""
    rule, why = declared(spec.expect.rules, pair)
    if spec.expect.from_network_policies:
        assert source.namespace is not None
        value, decided = evaluate(snapshot, labels, source.namespace, pair)
        return Expectation(value, decided, rule)
    return Expectation(rule, why or "no declared rule covers it", rule)


def _endpoint(pod: resolving.Pod) -> evaluating.Endpoint:
    return evaluating.Endpoint(ip=pod.ip, namespace=pod.namespace, labels=pod.labels,
                               named_ports={(p.name, p.protocol): p.port for p in pod.ports if p.name})


def from_policies(snapshot: resolving.Snapshot, labels: Mapping[str, str], namespace: str,
                  pair: resolving.Pair) -> tuple[bool | None, str]:
    """The policies' verdict on one pair, after Service translation (each ready backend, on its target port).

    The probe pod's own address is not known when expectations are computed, so an
    ingress ``ipBlock`` never matches the source (use selectors for in-cluster sources).
    """
    source = evaluating.Endpoint(ip=None, namespace=namespace, labels=labels)
    endpoint = pair.endpoint
    if endpoint.pod is not None:
        verdict = evaluating.evaluate(snapshot.policies, snapshot.namespaces, source, _endpoint(endpoint.pod),
                                      pair.target_port, pair.protocol)
        return verdict.allowed, verdict.decided_by
    if endpoint.service_ports or endpoint.backends:
        if not endpoint.backends:
            return None, f"Service {endpoint.label} has no ready endpoints"
        verdicts = {evaluating.evaluate(snapshot.policies, snapshot.namespaces, source, _endpoint(pod),
                                        pair.target_port, pair.protocol) for pod in endpoint.backends}
        if len({v.allowed for v in verdicts}) > 1:
            return None, f"the backends of {endpoint.label} disagree: " + "; ".join(sorted(v.decided_by for v in verdicts))
        first = sorted(verdicts, key=lambda v: v.decided_by)[0]
        return first.allowed, f"{first.decided_by} (via Service {endpoint.label})"
    verdict = evaluating.evaluate(snapshot.policies, snapshot.namespaces, source,
                                  evaluating.Endpoint(ip=endpoint.address), pair.port, pair.protocol)
    return verdict.allowed, verdict.decided_by
