"""The bed's NetworkPolicy enforcement agrees with cyclonus, pair by pair, on every scenario.

Each scenario of ``tests/netpol/scenarios`` is applied to the real control plane, every
(source pod, destination pod, probe) is tried with a real connection from the source pod, and
the outcome is compared with cyclonus's simulated matrix (see :mod:`harness.netpoldiff`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import clusters, netpoldiff
from portolan.policies import evaluating

pytestmark = pytest.mark.cluster

SCENARIOS = netpoldiff.scenario_names()


@pytest.fixture(scope="module")
def world(cluster: clusters.Cluster) -> Iterator[netpoldiff.World]:
    models = {json_model for json_model in (str(netpoldiff.load_model(n)["Resources"]) for n in SCENARIOS)}
    assert len(models) == 1, "the scenarios share one model of namespaces and pods"
    built = netpoldiff.World(cluster, netpoldiff.load_model(SCENARIOS[0]))
    built.start()
    try:
        yield built
    finally:
        built.stop()


def test_the_scenarios_cover_the_semantics_the_issue_lists() -> None:
    assert {"default-deny-ingress", "default-deny-egress", "policytypes-defaulting", "empty-and-absent-selectors",
            "namespace-and-pod-selector", "ipblock-except", "named-ports", "endport", "tcp-and-udp",
            "several-policies-one-pod", "dns-egress"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_enforce_mode_agrees_with_cyclonus_on_every_pair(world: netpoldiff.World, scenario: str) -> None:
    compared = netpoldiff.compare(world, scenario)
    assert not all(compared.expected.values()), "a scenario that blocks nothing checks nothing"
    assert compared.disagreements == [], "\n".join(map(str, compared.disagreements))
    # The product's evaluator, on the same policies and addresses, agrees with cyclonus too (issue 12).
    assert _portolan_disagreements(compared) == []


def test_ignore_mode_disagrees_exactly_on_the_pairs_cyclonus_blocks(world: netpoldiff.World) -> None:
    enforcer = world.cluster.agent.enforcer
    for node in world.cluster.agent.nodes:
        enforcer.set_mode(node, "ignore")
    try:
        compared = netpoldiff.compare(world, "several-policies-one-pod")
        expected, disagreements = compared.expected, compared.disagreements
    finally:
        for node in world.cluster.agent.nodes:
            enforcer.set_mode(node, "enforce")
    blocked = {key for key, allowed in expected.items() if not allowed and key[0] != key[1]}
    assert blocked
    assert {(d.source, d.destination, d.probe) for d in disagreements} == blocked
    assert all(d.observed and not d.expected for d in disagreements)


def _portolan_disagreements(compared: netpoldiff.Comparison) -> list[str]:
    """Where Portolan's evaluator and cyclonus differ on this scenario's pairs (named ports resolved per pod)."""
    resources = compared.model["Resources"]
    namespaces = {name: dict(labels) for name, labels in resources["Namespaces"].items()}
    pods = {f"{p['Namespace']}/{p['Name']}": p for p in resources["Pods"]}

    def endpoint(key: str) -> evaluating.Endpoint:
        pod = pods[key]
        named = {(c["PortName"], c["Protocol"]): int(c["Port"]) for c in pod["Containers"] if c.get("PortName")}
        return evaluating.Endpoint(pod["IP"], pod["Namespace"], dict(pod.get("Labels") or {}), named)

    found = []
    for (source, destination, probe), theirs in sorted(compared.expected.items()):
        if source == destination:
            continue
        protocol, _, port = probe.partition("/")
        target = endpoint(destination)
        number = int(port) if port.isdigit() else target.named_ports.get((port, protocol.upper()))
        if number is None:
            continue  # the destination declares no such named port: nothing to probe
        mine = evaluating.evaluate(compared.policies, namespaces, endpoint(source), target, number, protocol.upper())
        if mine.allowed != theirs:
            found.append(f"{source} -> {destination} {probe}: cyclonus {theirs}, portolan {mine.allowed}")
    return found
