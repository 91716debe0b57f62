"""The operator's scanner egress NetworkPolicy, enforced by the test bed, in a namespace that denies egress.

Without ``scannerEgressPolicy`` the shards' probes are dropped by the namespace's default-deny
egress policy: every port comes back filtered, for want of any answer.  With it, the operator's
policy lets the shards reach exactly their targets and the scan finds the open ports.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harness import clusters, operators

pytestmark = pytest.mark.cluster

NAMESPACE = "scans-deny-egress"
TARGET = "198.18.64.101"  # ports 22 and 80 open, built by the targets fixture
DENY_EGRESS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-egress}
spec: {podSelector: {}, policyTypes: [Egress]}
"""


@pytest.fixture(scope="module")
def denying_namespace(cluster: clusters.Cluster, targets: dict[str, Any]) -> Iterator[str]:
    operators.prepare(cluster, NAMESPACE)
    cluster.plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=DENY_EGRESS)
    yield NAMESPACE
    cluster.plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _scan(cluster: clusters.Cluster, folder: pathlib.Path, name: str, *, egress_policy: bool) -> dict[str, Any]:
    operator = operators.Operator(cluster, folder, NAMESPACE, image=operators.pod_image())
    settings = yaml.safe_load(operator.settings.read_text())
    operator.settings.write_text(yaml.safe_dump(settings | {"scannerEgressPolicy": egress_policy,
                                                            "allowedCidrs": ["198.18.64.0/24"]}))
    operator.start()
    try:
        job = {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": name, "namespace": NAMESPACE},
               "spec": {"targets": {"addresses": [TARGET]}, "ports": "22,80,81", "sharding": {"shards": 1},
                        "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300}, "backoffSeconds": 1}}
        cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
        done = cluster.plane.kubectl("wait", "--for=condition=Complete", f"scanjob/{name}", "-n", NAMESPACE,
                                     "--timeout=120s", check=False, timeout=150)
        body: dict[str, Any] = cluster.plane.scanjob(NAMESPACE, name)
        assert done.returncode == 0, (done.stderr, body.get("status"))
        return body
    finally:
        operator.stop()


def test_without_the_scanner_egress_policy_a_default_deny_namespace_leaves_every_probe_filtered(
        cluster: clusters.Cluster, denying_namespace: str, tmp_path: pathlib.Path) -> None:
    job = _scan(cluster, tmp_path, "no-egress-policy", egress_policy=False)
    results = job["status"]["results"]
    assert [r.get("open", []) for r in results] == [[]]
    assert results[0]["states"] == {"filtered": 3}
    reached = next(c for c in job["status"]["conditions"] if c["type"] == "TargetsReached")  # and it says why
    assert (reached["status"], reached["reason"]) == ("False", "EgressBlockedByNetworkPolicy")
    assert "default-deny-egress" in reached["message"] and "scannerEgressPolicy" in reached["message"]
    assert cluster.plane.kubectl("get", "networkpolicy", "-n", NAMESPACE, "-o", "name").stdout.split() == [
        "networkpolicy.networking.k8s.io/default-deny-egress"]


def test_with_the_scanner_egress_policy_the_same_scan_finds_the_open_ports(
        cluster: clusters.Cluster, denying_namespace: str, tmp_path: pathlib.Path) -> None:
    job = _scan(cluster, tmp_path, "with-egress-policy", egress_policy=True)
    results = job["status"]["results"]
    assert {(p["host"], p["port"]) for r in results for p in r.get("open", [])} == {(TARGET, 22), (TARGET, 80)}
    assert results[0]["states"] == {"open": 2, "closed": 1}
    assert "networkpolicy.networking.k8s.io/with-egress-policy-scanner-egress" in cluster.plane.kubectl(
        "get", "networkpolicy", "-n", NAMESPACE, "-o", "name").stdout.split()
