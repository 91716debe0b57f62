"""The operator's scanner egress NetworkPolicy, enforced by the test bed, in a namespace that denies egress.

Without ``scannerEgressPolicy`` the shards' probes are dropped by the namespace's default-deny
egress policy: every port comes back filtered, for want of any answer.  With it, the operator's
policy lets the shards reach exactly their targets and the scan finds the open ports.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harness import clusters

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "scans-deny-egress"
TARGET = "198.18.64.101"  # ports 22 and 80 open, built by the targets fixture
SHARD_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: portolan-shard}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: portolan-shard}
rules:
- {apiGroups: [portolan.dev], resources: [scanjobs], verbs: [get]}
- {apiGroups: [portolan.dev], resources: [scanjobs/status], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: portolan-shard}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: portolan-shard}
subjects: [{kind: ServiceAccount, name: portolan-shard}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-egress}
spec: {podSelector: {}, policyTypes: [Egress]}
"""


@pytest.fixture(scope="module")
def denying_namespace(cluster: clusters.Cluster, targets: dict[str, Any]) -> Iterator[str]:
    plane = cluster.plane
    plane.kubectl("apply", "-f", str(ROOT / "crds"))
    plane.kubectl("wait", "--for=condition=Established", "crd/scanjobs.portolan.dev", "--timeout=30s")
    plane.kubectl("create", "namespace", NAMESPACE, check=False)
    plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=SHARD_RBAC)
    yield NAMESPACE
    plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _run_operator(cluster: clusters.Cluster, folder: pathlib.Path, *, egress_policy: bool) -> subprocess.Popen[bytes]:
    settings = folder / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "shardCommand": [sys.executable, "-m", "portolan", "shard"],
        "shardHeartbeatSeconds": 0.5, "reconcileIntervalSeconds": 1.0,
        "metricsPort": clusters.free_port(), "peering": None,
        "allowedCidrs": ["198.18.64.0/24"], "scannerEgressPolicy": egress_policy,
    }))
    env = dict(os.environ, KUBECONFIG=str(cluster.plane.admin_kubeconfig))
    with open(folder / "operator.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "portolan", "operator", "--standalone", "--namespace", NAMESPACE,
                                 "--settings", str(settings), "--verbose"], env=env, stdout=log, stderr=subprocess.STDOUT)


def _scan(cluster: clusters.Cluster, folder: pathlib.Path, name: str, *, egress_policy: bool) -> dict[str, Any]:
    operator = _run_operator(cluster, folder, egress_policy=egress_policy)
    try:
        job = {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": name, "namespace": NAMESPACE},
               "spec": {"targets": {"addresses": [TARGET]}, "ports": "22,80,81", "sharding": {"shards": 1},
                        "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300}, "backoffSeconds": 1}}
        cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
        done = cluster.plane.kubectl("wait", "--for=condition=Complete", f"scanjob/{name}", "-n", NAMESPACE,
                                     "--timeout=120s", check=False, timeout=150)
        body: dict[str, Any] = json.loads(cluster.plane.kubectl("get", "scanjob", name, "-n", NAMESPACE, "-o", "json").stdout)
        assert done.returncode == 0, (done.stderr, body.get("status"))
        return body
    finally:
        operator.terminate()
        operator.wait(timeout=20)


def test_without_the_scanner_egress_policy_a_default_deny_namespace_leaves_every_probe_filtered(
        cluster: clusters.Cluster, denying_namespace: str, tmp_path: pathlib.Path) -> None:
    job = _scan(cluster, tmp_path, "no-egress-policy", egress_policy=False)
    results = job["status"]["results"]
    assert [r.get("open", []) for r in results] == [[]]
    assert results[0]["states"] == {"filtered": 3}
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
