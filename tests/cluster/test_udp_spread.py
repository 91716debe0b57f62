"""UDP past one source address: the planner spreads one host's UDP ports over a pool's nodes.

A Linux host answers closed UDP ports with ICMP port unreachable at about one per second per
source address. Pod traffic leaving the cluster is masqueraded to its node's address on this test
bed (harness/podnet.py), so only distinct nodes are distinct sources. The job here names no shard
count: the planner sees a pool of four nodes and UDP ports, and gives each node one slice of the
host's ports. Checked: the plan and the shards' nodes (disjoint slices, four nodes), what the plan
tells the user, and that every port's state matches the host's construction. Times belong in
bench/run_udp_spread.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harness import clusters, operators, targethosts
from portolan.engine import ports as ports_

pytestmark = pytest.mark.cluster

NAMESPACE = "udp-spread"
HOST = "198.18.64.110"
PORTS = list(range(1000, 1060))
ECHO = [1005, 1017, 1033, 1052]  # one answering port in each node's slice of 15


@pytest.fixture(scope="module")
def operator(cluster: clusters.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[operators.Operator]:
    operators.prepare(cluster, NAMESPACE)
    running = operators.Operator(cluster, tmp_path_factory.mktemp("operator"), NAMESPACE, image=operators.pod_image())
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def udp_host(cluster: clusters.Cluster) -> Iterator[str]:
    with targethosts.udp_host(cluster.agent, HOST, dict.fromkeys(ECHO, "echo")) as ns:
        yield ns


def _job(name: str) -> str:
    return yaml.safe_dump({"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
                           "metadata": {"name": name, "namespace": NAMESPACE},
                           "spec": {"targets": {"addresses": [HOST]}, "protocols": ["udp"],
                                    "udpPorts": f"{PORTS[0]}-{PORTS[-1]}", "serviceDetection": False,
                                    "backoffSeconds": 1,
                                    "pools": [{"name": "all", "tolerations": [
                                        {"key": "portolan.dev/edge", "operator": "Exists"}]}]}})


def _complete(cluster: clusters.Cluster, name: str, timeout: int = 300) -> dict[str, Any]:
    done = cluster.plane.kubectl("wait", "--for=condition=Complete", f"scanjob/{name}", "-n", NAMESPACE,
                                 f"--timeout={timeout}s", check=False, timeout=timeout + 30)
    job: dict[str, Any] = cluster.plane.scanjob(NAMESPACE, name)
    assert done.returncode == 0, (done.stderr, (job.get("status") or {}).get("shards"))
    return job


def test_a_udp_job_on_a_four_node_pool_spreads_the_hosts_ports_over_the_nodes_and_finds_every_state(
        cluster: clusters.Cluster, operator: operators.Operator, udp_host: str) -> None:
    cluster.plane.kubectl("apply", "-f", "-", input=_job("spread"))
    status = _complete(cluster, "spread")["status"]
    nodes = sorted(cluster.agent.nodes)
    plan = status["plan"]
    assert sorted(s["node"] for s in plan) == nodes
    slices = [ports_.parse_ports(s["udpPorts"]) for s in plan]
    assert sorted(p for ports in slices for p in ports) == PORTS  # disjoint and complete
    assert all(s["targets"] == [HOST] and not s["ports"] for s in plan)
    for shard in plan:  # each slice ran on the node it was pinned to
        assert status["shards"][shard["id"]]["node"] == shard["node"]
    spread = next(c for c in status["conditions"] if c["type"] == "UdpSpread")
    assert (spread["status"], spread["reason"]) == ("True", "UdpSpreadAcrossNodes")
    assert f"pool all over nodes {', '.join(nodes)}" in spread["message"]
    events = cluster.core().list_namespaced_event(NAMESPACE, field_selector="involvedObject.name=spread").items
    assert "UdpSpreadAcrossNodes" in {e.reason for e in events}
    (result,) = status["results"]
    assert result["states"] == {"open": len(ECHO), "closed": len(PORTS) - len(ECHO)}
    assert [(o["host"], o["port"], o["protocol"]) for o in result["open"]] == [(HOST, p, "udp") for p in ECHO]
