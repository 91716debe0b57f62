"""Portolan's NetworkPolicy evaluator agrees with cyclonus on every scenario, pair by pair.

For each scenario, every (source pod or outside address, destination pod or outside
address, port) is asked of both; any disagreement is listed exactly.  cyclonus is
built with the control plane; outside CI the test skips without it.
"""

from __future__ import annotations

import os

import pytest

from harness import cyclonus
from netpol import scenarios
from portolan.policies import evaluating

Peer = tuple[scenarios.Pod | None, str]  # (pod, or None for the outside address; its IP)


def _peers() -> list[Peer]:
    return [(pod, pod.ip) for pod in scenarios.PODS] + [(None, scenarios.OUTSIDE)]


def _cyclonus_peer(peer: Peer) -> cyclonus.Peer:
    pod, ip = peer
    if pod is None:
        return cyclonus.Peer(ip)
    return cyclonus.Peer(ip, pod.namespace, scenarios.NAMESPACES[pod.namespace], pod.labels)


def _endpoint(peer: Peer) -> evaluating.Endpoint:
    pod, ip = peer
    if pod is None:
        return evaluating.Endpoint(ip)
    return evaluating.Endpoint(ip, pod.namespace, pod.labels,
                               named_ports={(name, proto): number for name, number, proto in pod.ports})


def _label(peer: Peer) -> str:
    pod, ip = peer
    return ip if pod is None else f"{pod.namespace}/{pod.name}"


@pytest.mark.skipif(not cyclonus.available() and os.environ.get("CI") != "true",
                    reason="cyclonus is built by tools/k8s/build.sh")
@pytest.mark.parametrize("scenario", sorted(scenarios.SCENARIOS))
def test_the_evaluator_agrees_with_cyclonus(scenario: str) -> None:
    policies = scenarios.SCENARIOS[scenario]
    queries = [(source, destination, port, protocol)
               for source in _peers() for destination in _peers() if source != destination
               and (source[0] is not None or destination[0] is not None)  # outside to outside is nobody's business
               for port, protocol in scenarios.PORTS]
    judged = cyclonus.allowed(policies, [
        cyclonus.Traffic(_cyclonus_peer(s), _cyclonus_peer(d), port, protocol, scenarios.port_name(d[0], port, protocol))
        for s, d, port, protocol in queries])
    ours = [evaluating.evaluate(policies, scenarios.NAMESPACES, _endpoint(s), _endpoint(d), port, protocol).allowed
            for s, d, port, protocol in queries]
    disagreements = [f"{_label(s)} -> {_label(d)} {port}/{protocol}: cyclonus {theirs}, portolan {mine}"
                     for (s, d, port, protocol), theirs, mine in zip(queries, judged, ours, strict=True) if theirs != mine]
    assert disagreements == []
