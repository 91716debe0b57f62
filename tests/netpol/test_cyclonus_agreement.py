"""Portolan's NetworkPolicy evaluator agrees with cyclonus on every scenario, pair by pair.

Two judgements per scenario folder (``tests/netpol/scenarios/``):

* cyclonus's probe matrix (``analyze --mode probe`` on the folder's model and
  policies): every (source pod, destination pod, probed port), pods to themselves
  included;
* cyclonus's traffic queries for the addresses outside the cluster: every pod to
  and from each ``External`` address, on every probed port.

Any disagreement is listed exactly.  cyclonus is built with the control plane;
the test skips only when the binary is absent (and never in CI, which builds it).
"""

from __future__ import annotations

import os

import pytest

from harness import cyclonus
from netpol import scenarios
from portolan.policies import evaluating

needs_cyclonus = pytest.mark.skipif(not cyclonus.available() and os.environ.get("CI") != "true",
                                    reason="cyclonus is built by tools/k8s/build.sh")


def _endpoint(pod: scenarios.Pod | None, ip: str) -> evaluating.Endpoint:
    if pod is None:
        return evaluating.Endpoint(ip)
    return evaluating.Endpoint(ip, pod.namespace, pod.labels,
                               named_ports={(name, proto): number for name, number, proto in pod.ports if name})


@needs_cyclonus
@pytest.mark.parametrize("name", scenarios.names())
def test_the_evaluator_agrees_with_cyclonus_probe_matrix_on_every_pod_pair(name: str) -> None:
    scenario = scenarios.load(name)
    judged = cyclonus.probe_matrix(scenario.policy_folder, scenario.model_file)
    assert len(judged) == len(scenario.pods) ** 2 * len(scenario.probes)
    pods = {pod.key: pod for pod in scenario.pods}
    disagreements = []
    for (source, destination, port, protocol), theirs in sorted(judged.items()):
        mine = evaluating.evaluate(scenario.policies, scenario.namespaces, _endpoint(pods[source], pods[source].ip),
                                   _endpoint(pods[destination], pods[destination].ip), port, protocol)
        if mine.allowed != theirs:
            disagreements.append(f"{source} -> {destination} {port}/{protocol}: cyclonus {theirs}, "
                                 f"portolan {mine.allowed} ({mine.decided_by})")
    assert disagreements == []


@needs_cyclonus
@pytest.mark.parametrize("name", scenarios.names())
def test_the_evaluator_agrees_with_cyclonus_on_traffic_to_and_from_outside_the_cluster(name: str) -> None:
    scenario = scenarios.load(name)
    assert scenario.external, "every scenario names an address outside the cluster"
    pairs: list[tuple[scenarios.Pod | None, str, scenarios.Pod | None, str]] = []
    for address in scenario.external:
        for pod in scenario.pods:
            pairs += [(pod, pod.ip, None, address), (None, address, pod, pod.ip)]

    def peer(pod: scenarios.Pod | None, ip: str) -> cyclonus.Peer:
        if pod is None:
            return cyclonus.Peer(ip)
        return cyclonus.Peer(ip, pod.namespace, scenario.namespaces[pod.namespace], pod.labels)

    queries = [(pair, port, protocol) for pair in pairs for port, protocol in scenario.probes]
    judged = cyclonus.allowed(scenario.policies, [
        cyclonus.Traffic(peer(s, s_ip), peer(d, d_ip), port, protocol, scenarios.port_name(d, port, protocol))
        for (s, s_ip, d, d_ip), port, protocol in queries])
    disagreements = []
    for ((s, s_ip, d, d_ip), port, protocol), theirs in zip(queries, judged, strict=True):
        mine = evaluating.evaluate(scenario.policies, scenario.namespaces, _endpoint(s, s_ip), _endpoint(d, d_ip),
                                   port, protocol)
        if mine.allowed != theirs:
            disagreements.append(f"{s.key if s else s_ip} -> {d.key if d else d_ip} {port}/{protocol}: "
                                 f"cyclonus {theirs}, portolan {mine.allowed} ({mine.decided_by})")
    assert disagreements == []
