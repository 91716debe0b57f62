"""The node agent restarts containers as a kubelet does, and an operator that crashes comes back.

restartPolicy Always and OnFailure restart the container after a doubling back-off
(shortened here to 1 s, 2 s, 4 s... so the tests are quick), with ``restartCount`` and
``CrashLoopBackOff`` in the pod status; Never ends the pod.  An operator pod killed with
SIGKILL is restarted in place and finishes the next ScanJob; a Deployment whose operator
cannot start crash-loops in one pod instead of a storm of replacement pods.
"""

from __future__ import annotations

import itertools
import pathlib
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harness import clusters, nodeagent

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "restarts"


@pytest.fixture(scope="module")
def agent(cluster: clusters.Cluster) -> Iterator[nodeagent.NodeAgent]:
    before = cluster.agent.restart_backoff
    cluster.agent.restart_backoff = (1.0, 4.0)
    cluster.plane.kubectl("create", "namespace", NAMESPACE, check=False)
    try:
        yield cluster.agent
    finally:
        cluster.agent.restart_backoff = before


def _pod(name: str, policy: str, command: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"restartPolicy": policy, "containers": [{"name": "main", "image": "portolan", "command": command}]}}


def _container(cluster: clusters.Cluster, name: str) -> Any:
    pod = cluster.core().read_namespaced_pod(name, NAMESPACE)
    return pod, (pod.status.container_statuses or [None])[0]


def test_restart_policy_always_restarts_with_a_doubling_back_off_and_counts_restarts(
        cluster: clusters.Cluster, agent: nodeagent.NodeAgent, tmp_path: pathlib.Path) -> None:
    name = f"crash-{uuid.uuid4().hex[:6]}"
    starts = tmp_path / "starts"
    cluster.core().create_namespaced_pod(NAMESPACE, _pod(name, "Always", ["sh", "-c", f"date +%s.%N >> {starts}; exit 3"]))

    def restarted_three_times() -> bool:
        _, status = _container(cluster, name)
        return status is not None and status.restart_count >= 3

    cluster.wait("three restarts", restarted_three_times, timeout=30)
    pod, status = _container(cluster, name)
    assert pod.status.phase == "Running"
    times = [float(line) for line in starts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 4 and gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[2] >= 3.9, gaps

    def backing_off() -> bool:
        _, status = _container(cluster, name)
        return status is not None and status.state.waiting is not None

    cluster.wait("CrashLoopBackOff", backing_off, timeout=10)
    _, status = _container(cluster, name)
    assert status.state.waiting.reason == "CrashLoopBackOff"
    assert status.last_state.terminated.exit_code == 3
    cluster.core().delete_namespaced_pod(name, NAMESPACE)


def test_restart_policy_on_failure_restarts_a_failed_container_until_it_succeeds(
        cluster: clusters.Cluster, agent: nodeagent.NodeAgent, tmp_path: pathlib.Path) -> None:
    name = f"flaky-{uuid.uuid4().hex[:6]}"
    marker = tmp_path / "tried"
    command = ["sh", "-c", f"[ -f {marker} ] && exit 0; touch {marker}; exit 1"]
    cluster.core().create_namespaced_pod(NAMESPACE, _pod(name, "OnFailure", command))
    cluster.wait("success after one restart", lambda: _container(cluster, name)[0].status.phase == "Succeeded",
                 timeout=30)
    _, status = _container(cluster, name)
    assert status.restart_count == 1 and status.state.terminated.exit_code == 0


def test_restart_policy_never_ends_the_pod_on_the_first_exit(cluster: clusters.Cluster, agent: nodeagent.NodeAgent) -> None:
    name = f"once-{uuid.uuid4().hex[:6]}"
    cluster.core().create_namespaced_pod(NAMESPACE, _pod(name, "Never", ["sh", "-c", "exit 1"]))
    cluster.wait("the pod to fail", lambda: _container(cluster, name)[0].status.phase == "Failed", timeout=30)
    time.sleep(2)  # longer than the back-off: a restart would show by now
    _, status = _container(cluster, name)
    assert status.restart_count == 0 and status.state.terminated.exit_code == 1


RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: portolan-operator, namespace: restarts}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: portolan-shard, namespace: restarts}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: restarts-operator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: portolan-operator, namespace: restarts},
           {kind: ServiceAccount, name: portolan-shard, namespace: restarts}]
"""


def _operator_spec(settings: pathlib.Path) -> dict[str, Any]:
    return {"serviceAccountName": "portolan-operator", "restartPolicy": "Always", "containers": [{
        "name": "main", "image": "portolan",
        "command": [sys.executable, "-m", "portolan", "operator", "--standalone", "--namespace", NAMESPACE,
                    "--settings", str(settings)]}]}


def _scanjob(name: str) -> str:
    return yaml.safe_dump({"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
                           "metadata": {"name": name, "namespace": NAMESPACE},
                           "spec": {"targets": {"addresses": ["127.0.0.1"]}, "ports": "1-8", "serviceDetection": False,
                                    "sharding": {"shards": 1}, "backoffSeconds": 1,
                                    "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300}}})


def _complete(cluster: clusters.Cluster, name: str) -> bool:
    done = cluster.plane.kubectl("get", "scanjob", name, "-n", NAMESPACE, "-o",
                                 "jsonpath={.status.phase}", check=False)
    return done.stdout.strip() == "Complete"


def test_an_operator_killed_in_its_pod_is_restarted_in_place_and_finishes_the_next_scanjob(
        cluster: clusters.Cluster, agent: nodeagent.NodeAgent, tmp_path: pathlib.Path) -> None:
    plane = cluster.plane
    plane.kubectl("apply", "-f", str(ROOT / "crds"))
    plane.kubectl("wait", "--for=condition=Established", "crd/scanjobs.portolan.dev", "--timeout=30s")
    plane.kubectl("apply", "-f", "-", input=RBAC)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"shardCommand": [sys.executable, "-m", "portolan", "shard"],
                                        "reconcileIntervalSeconds": 1.0, "metricsPort": 0, "peering": None,
                                        "allowedCidrs": ["127.0.0.0/8"]}))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator", "namespace": NAMESPACE},
           "spec": _operator_spec(settings)}
    cluster.core().create_namespaced_pod(NAMESPACE, pod)
    try:
        plane.kubectl("apply", "-f", "-", input=_scanjob("before-crash"))
        cluster.wait("the first ScanJob to complete", lambda: _complete(cluster, "before-crash"), timeout=90)
        agent.kill_pod(NAMESPACE, "operator")
        plane.kubectl("apply", "-f", "-", input=_scanjob("after-crash"))
        cluster.wait("the operator's restart", lambda: (_container(cluster, "operator")[1].restart_count or 0) >= 1,
                     timeout=30)
        cluster.wait("the second ScanJob to complete", lambda: _complete(cluster, "after-crash"), timeout=90)
        restarted, status = _container(cluster, "operator")
        assert restarted.status.phase == "Running" and status.restart_count == 1
        assert status.last_state.terminated.exit_code == 137  # SIGKILL
    finally:
        cluster.core().delete_namespaced_pod("operator", NAMESPACE, grace_period_seconds=5)


def test_an_operator_that_cannot_start_crash_loops_in_one_pod_instead_of_a_pod_storm(
        cluster: clusters.Cluster, agent: nodeagent.NodeAgent, tmp_path: pathlib.Path) -> None:
    spec = _operator_spec(tmp_path / "missing-settings.yaml")
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "broken", "namespace": NAMESPACE},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "broken"}},
                           "template": {"metadata": {"labels": {"app": "broken"}}, "spec": spec}}}
    cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment))
    try:
        def crash_looping() -> bool:
            pods = cluster.core().list_namespaced_pod(NAMESPACE, label_selector="app=broken").items
            statuses = [p.status.container_statuses[0] for p in pods if p.status.container_statuses]
            return any(s.restart_count >= 2 for s in statuses)

        cluster.wait("the operator to crash-loop", crash_looping, timeout=60)
        pods = cluster.core().list_namespaced_pod(NAMESPACE, label_selector="app=broken").items
        assert len(pods) == 1
    finally:
        cluster.plane.kubectl("delete", "deployment", "broken", "-n", NAMESPACE, "--wait=false", check=False)
