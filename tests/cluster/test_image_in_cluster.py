"""The operator and its shard pods in the real image under runc, on the real control plane.

The operator runs as the chart's Deployment would (uid 65532, read-only root, no
capabilities) and names the image in its shard pods; the node agent runs those pods in the
image under runc, inside their node's network namespace, as the pod's securityContext says:
uid 65532 with no capabilities for a connect job, root with only NET_RAW for a syn job with
capture. The image is the one tests/packaging builds from the Dockerfile (cached).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harness import clusters, oci, operators, targethosts

pytestmark = pytest.mark.cluster

NAMESPACE = "scans-image"
HOSTS = ["198.18.64.101", "198.18.64.102"]
EXPECTED = {(address, port) for address in HOSTS for port in targethosts.HOSTS[address][0]}


@pytest.fixture(scope="module")
def operator(cluster: clusters.Cluster, targets: dict[str, Any],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[operators.Operator]:
    image = oci.built_image()
    operators.prepare(cluster, NAMESPACE)
    running = operators.Operator(cluster, tmp_path_factory.mktemp("operator"), NAMESPACE, image=image)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        cluster.plane.kubectl("delete", "scanjobs", "--all", "-n", NAMESPACE, "--wait=false", check=False)


def _job(name: str, **extra: Any) -> str:
    spec = {"targets": {"addresses": HOSTS}, "ports": "20-25,80,443", "sharding": {"shards": 2}, "retries": 0,
            "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300}, **extra}
    return yaml.safe_dump({"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
                           "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})


def _complete(cluster: clusters.Cluster, operator: operators.Operator, name: str) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        return cluster.plane.scanjob(NAMESPACE, name)

    def logs() -> str:
        return "\n".join(f"{p.name}: {(p.folder / 'log').read_text()[-2000:]}" for p in list(cluster.agent.pods.values())
                         if p.name.startswith(name) and (p.folder / "log").exists())

    try:
        cluster.wait(f"{name} to finish", lambda: (get().get("status") or {}).get("phase") in ("Complete", "Failed"),
                     timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {json.dumps(get().get('status'))[:3000]}\n{logs()}") from None
    job = get()
    if job["status"]["phase"] != "Complete":
        raise AssertionError(f"{name} failed: {json.dumps(job['status']['shards'])[:2000]}\n{logs()}")
    return job


def _containers(cluster: clusters.Cluster, job: str) -> dict[str, str | None]:
    pods = cluster.core().list_namespaced_pod(NAMESPACE, label_selector=f"portolan.dev/job={job}").items
    return {p.metadata.name: getattr(cluster.agent.pods.get(p.metadata.uid), "container", None) for p in pods}


def _opened(job: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p["host"], p["port"]) for r in job["status"]["results"] for p in r.get("open", [])}


def test_the_operator_in_the_image_runs_a_job_whose_shard_pods_run_in_the_image(
        cluster: clusters.Cluster, operator: operators.Operator) -> None:
    assert operator.container is not None
    container = operator.container

    def running() -> bool:
        state = subprocess.run(["runc", "state", container], capture_output=True, text=True)
        return state.returncode == 0 and json.loads(state.stdout)["status"] == "running"

    cluster.wait("the operator's container", running, timeout=30)
    cluster.plane.kubectl("apply", "-f", "-", input=_job("in-image", expect={"allowedOpenPorts": "22,80"}))
    job = _complete(cluster, operator, "in-image")
    assert job["status"]["summary"] == "2/2" and _opened(job) == EXPECTED
    containers = _containers(cluster, "in-image")
    assert len(containers) == 2 and all(containers.values()), containers


def test_a_syn_job_with_capture_runs_its_shards_as_root_with_net_raw_in_the_image(
        cluster: clusters.Cluster, operator: operators.Operator, tmp_path: pathlib.Path) -> None:
    from portolan.capture import pcapfiles

    store = tmp_path / "evidence"
    store.mkdir()
    cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "portolan-image-evidence"},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(store), "type": "Directory"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "evidence", "namespace": NAMESPACE},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": "portolan-image-evidence",
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]))
    cluster.wait("the claim to bind", lambda: cluster.core().read_namespaced_persistent_volume_claim(
        "evidence", NAMESPACE).status.phase == "Bound", timeout=60)
    cluster.plane.kubectl("apply", "-f", "-", input=_job("syn-in-image", technique="syn",
                                                         capture={"persistentVolumeClaim": "evidence"}))
    job = _complete(cluster, operator, "syn-in-image")
    assert _opened(job) == EXPECTED
    containers = _containers(cluster, "syn-in-image")
    assert len(containers) == 2 and all(containers.values()), containers
    for shard in job["status"]["shards"].values():
        capture = shard["capture"]
        assert capture.get("error") is None and capture["packets"] > 0, capture
        assert len(list(pcapfiles.read(store / capture["files"][0]))) == capture["packets"]
