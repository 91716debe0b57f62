"""The test bed enforces NetworkPolicies on pod traffic, in three modes per node (enforce, ignore, reject)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from harness import clusters, podworld

pytestmark = pytest.mark.cluster


@pytest.fixture
def world(cluster: clusters.Cluster) -> Iterator[dict[str, Any]]:
    """Namespace n with server pods a (cloud-1) and b (cloud-2), namespace m with c (cloud-1)."""
    suffix = uuid.uuid4().hex[:6]
    n, m = f"pol-n-{suffix}", f"pol-m-{suffix}"
    podworld.ensure_namespace(cluster, n, {"team": "n"})
    podworld.ensure_namespace(cluster, m, {"team": "m"})
    serve = [("tcp", 80), ("tcp", 81), ("udp", 53)]
    addresses = podworld.create(cluster, n, [podworld.server_pod("a", {"app": "a"}, "cloud-1", serve),
                                             podworld.server_pod("b", {"app": "b"}, "cloud-2", serve)])
    addresses |= podworld.create(cluster, m, [podworld.server_pod("c", {"app": "c"}, "cloud-1", serve)])
    try:
        yield {"n": n, "m": m, "ip": addresses}
    finally:
        for node in cluster.agent.nodes:
            cluster.agent.enforcer.set_mode(node, "enforce")
        podworld.delete_namespace(cluster, n)
        podworld.delete_namespace(cluster, m)


def _apply(cluster: clusters.Cluster, namespace: str, policy: dict[str, Any]) -> None:
    kubernetes.client.NetworkingV1Api(cluster.api).create_namespaced_network_policy(namespace, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **policy})
    cluster.agent.enforcer.sync()


def _matrix(cluster: clusters.Cluster, world: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    """Outcome of every (source pod, destination pod, port) among a, b and c."""
    where = {"a": world["n"], "b": world["n"], "c": world["m"]}
    ports = [("tcp", 80), ("tcp", 81), ("udp", 53)]
    found = {}
    for source in where:
        targets = [(world["ip"][d], proto, port) for d in where if d != source for proto, port in ports]
        outcomes = podworld.probe_from(cluster, where[source], source, targets, timeout=0.8)
        labels = [(d, f"{proto}/{port}") for d in where if d != source for proto, port in ports]
        for (destination, port), outcome in zip(labels, outcomes, strict=True):
            found[(source, destination, port)] = outcome.split()[0]
    return found


def test_ingress_to_a_selected_pod_is_limited_to_its_allowed_peers_and_ports_while_replies_flow(
        cluster: clusters.Cluster, world: dict[str, Any]) -> None:
    _apply(cluster, world["n"], {"metadata": {"name": "a-from-c"}, "spec": {
        "podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "m"}}}],
                     "ports": [{"port": 80}]}]}})
    found = _matrix(cluster, world)
    assert {k: v for k, v in found.items() if k[1] == "a"} == {
        ("b", "a", "tcp/80"): "timeout", ("b", "a", "tcp/81"): "timeout", ("b", "a", "udp/53"): "timeout",
        ("c", "a", "tcp/80"): "ok", ("c", "a", "tcp/81"): "timeout", ("c", "a", "udp/53"): "timeout"}
    assert all(v == "ok" for k, v in found.items() if k[1] != "a")  # a's own egress and other pods untouched


def test_default_deny_egress_in_reject_mode_refuses_instead_of_dropping(
        cluster: clusters.Cluster, world: dict[str, Any]) -> None:
    cluster.agent.enforcer.set_mode("cloud-1", "reject")
    _apply(cluster, world["n"], {"metadata": {"name": "deny-egress"},
                                 "spec": {"podSelector": {}, "policyTypes": ["Egress"]}})
    found = _matrix(cluster, world)
    assert {v for k, v in found.items() if k[0] == "a"} == {"refused"}  # a is on cloud-1: TCP reset, ICMP prohibited
    assert {v for k, v in found.items() if k[0] == "b"} == {"timeout"}  # b is on cloud-2: enforce drops
    assert {v for k, v in found.items() if k[0] == "c"} == {"ok"}


def test_ignore_mode_lets_everything_through_as_a_cni_without_policy_support_would(
        cluster: clusters.Cluster, world: dict[str, Any]) -> None:
    for node in cluster.agent.nodes:
        cluster.agent.enforcer.set_mode(node, "ignore")
    _apply(cluster, world["n"], {"metadata": {"name": "deny-all"},
                                 "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})
    assert set(_matrix(cluster, world).values()) == {"ok"}
