"""The test bed's pod network: pod addresses, routes, masquerade, readiness and kube-proxy Services."""

from __future__ import annotations

import ipaddress
import os
import uuid
from typing import Any

import pytest

from harness import clusters, podworld

pytestmark = pytest.mark.cluster


@pytest.fixture
def namespace(cluster: clusters.Cluster) -> Any:
    name = f"net-{uuid.uuid4().hex[:6]}"
    podworld.ensure_namespace(cluster, name)
    yield name
    podworld.delete_namespace(cluster, name)


def test_pods_get_addresses_from_their_nodes_pod_cidr_and_reach_each_other_across_nodes(
        cluster: clusters.Cluster, namespace: str) -> None:
    addresses = podworld.create(cluster, namespace, [
        podworld.server_pod("a", {"app": "a"}, "cloud-1", [("tcp", 8080), ("udp", 5353)]),
        podworld.server_pod("b", {"app": "b"}, "cloud-2", [("tcp", 8080), ("udp", 5353)]),
        podworld.server_pod("h", {"app": "h"}, "cloud-2", [("tcp", 8081)], host_network=True),
    ])
    nodes = {n.metadata.name: n.spec.pod_cidr for n in cluster.core().list_node().items}
    assert ipaddress.ip_address(addresses["a"]) in ipaddress.ip_network(nodes["cloud-1"])
    assert ipaddress.ip_address(addresses["b"]) in ipaddress.ip_network(nodes["cloud-2"])
    assert addresses["h"] == cluster.agent.nodes["cloud-2"].address  # hostNetwork: the node's address
    assert all(ipaddress.ip_address(addresses[p]) in ipaddress.ip_network(clusters.CLUSTER_CIDR) for p in "ab")
    outcomes = podworld.probe_from(cluster, namespace, "a", [
        (addresses["b"], "tcp", 8080), (addresses["b"], "udp", 5353), (addresses["b"], "tcp", 9),
        (addresses["h"], "tcp", 8081)])
    assert outcomes == ["ok b", "ok b", "refused", "ok h"]


def test_a_pod_reaches_a_host_outside_the_cluster_through_its_nodes_masquerade(
        cluster: clusters.Cluster, targets: dict[str, Any], namespace: str) -> None:
    podworld.create(cluster, namespace, [podworld.server_pod("c", {"app": "c"}, "edge-1", [("tcp", 8080)])])
    # 198.18.64.101 has no route to the cluster CIDR: only a masqueraded connection gets its answer back
    outcomes = podworld.probe_from(cluster, namespace, "c", [("198.18.64.101", "tcp", 80)])
    assert outcomes[0].startswith("ok ")


def test_a_pod_reaches_a_service_by_cluster_ip_and_only_ready_endpoints_answer(
        cluster: clusters.Cluster, namespace: str) -> None:
    ready = {"tcpSocket": {"port": "web"}, "periodSeconds": 1}
    never = {"exec": {"command": ["false"]}, "periodSeconds": 1}
    podworld.create(cluster, namespace, [
        podworld.server_pod("ready-1", {"app": "web"}, "cloud-1", [("tcp", 8080)], named={"web": ("tcp", 8080)}, readiness=ready),
        podworld.server_pod("ready-2", {"app": "web"}, "cloud-2", [("tcp", 8080)], named={"web": ("tcp", 8080)}, readiness=ready),
        podworld.server_pod("unready", {"app": "web"}, "cloud-1", [("tcp", 8080)], named={"web": ("tcp", 8080)}, readiness=never),
        podworld.server_pod("client", {"app": "client"}, "cloud-2", [("tcp", 1)]),
    ])
    cluster.core().create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "web", "protocol": "TCP"}]}})
    service = cluster.core().read_namespaced_service("web", namespace)
    endpoints = podworld.wait_ready_endpoints(cluster, namespace, "web", 2)
    unready = cluster.core().read_namespaced_pod("unready", namespace)
    assert unready.status.pod_ip not in endpoints
    assert [c.status for c in unready.status.conditions if c.type == "Ready"] == ["False"]

    wanted = {"ok ready-1", "ok ready-2"}
    target = [(service.spec.cluster_ip, "tcp", 80)] * 12

    def both_answer() -> bool:  # kube-proxy applies the slices within a second or two
        return set(podworld.probe_from(cluster, namespace, "client", target)) == wanted

    cluster.wait("both ready pods, and only they, to answer on the ClusterIP", both_answer, timeout=30)
    for _ in range(3):
        assert set(podworld.probe_from(cluster, namespace, "client", target)) <= wanted
    # and from a node (hostNetwork), through the same kube-proxy rules
    node_outcomes = podworld.probe_from_node(cluster, "cloud-1", [(service.spec.cluster_ip, "tcp", 80)] * 6)
    assert set(node_outcomes) <= {"ok ready-1", "ok ready-2"} and len(node_outcomes) == 6


def test_a_nodeport_service_answers_on_every_nodes_address(cluster: clusters.Cluster, namespace: str) -> None:
    podworld.create(cluster, namespace, [
        podworld.server_pod("np", {"app": "np"}, "cloud-1", [("tcp", 8080)]),
        podworld.server_pod("client", {"app": "client"}, "edge-2", [("tcp", 1)]),
    ])
    cluster.core().create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
        "spec": {"type": "NodePort", "selector": {"app": "np"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    port = cluster.core().read_namespaced_service("np", namespace).spec.ports[0].node_port
    podworld.wait_ready_endpoints(cluster, namespace, "np", 1)
    targets = [(node.address, "tcp", port) for node in cluster.agent.nodes.values()]

    def all_answer() -> bool:
        return set(podworld.probe_from(cluster, namespace, "client", targets)) == {"ok np"}

    cluster.wait("the NodePort on every node", all_answer, timeout=30)


def test_a_pod_that_stops_passing_its_probe_leaves_the_services_endpoints(cluster: clusters.Cluster, namespace: str) -> None:
    flag = f"/tmp/portolan-ready-{uuid.uuid4().hex[:6]}"
    open(flag, "w").close()
    probe = {"exec": {"command": ["test", "-e", flag]}, "periodSeconds": 1, "failureThreshold": 1}
    addresses = podworld.create(cluster, namespace, [
        podworld.server_pod("flaky", {"app": "flaky"}, "cloud-2", [("tcp", 8080)], readiness=probe)])
    cluster.core().create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "flaky"},
        "spec": {"selector": {"app": "flaky"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    assert podworld.wait_ready_endpoints(cluster, namespace, "flaky", 1) == [addresses["flaky"]]
    os.unlink(flag)
    assert podworld.wait_ready_endpoints(cluster, namespace, "flaky", 0) == []
    ready = cluster.core().read_namespaced_pod("flaky", namespace).status.conditions
    assert [c.status for c in ready if c.type == "Ready"] == ["False"]
