"""The operator end to end on the real control plane: kubectl apply -> sharded results in status.

The operator and its shard pods run in the real image (built from the Dockerfile) under runc;
shard pods join the node agent's node namespaces. Their targets are test hosts on the same
bridge (198.18.64.0/24), built here.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harness import clusters, netns, operators, targethosts

pytestmark = pytest.mark.cluster

HOSTS = targethosts.HOSTS
KINDS = targethosts.KINDS

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "scans"


Operator = operators.Operator


@pytest.fixture(scope="module")
def operator(cluster: clusters.Cluster, targets: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator and its shard pods in the real image under runc (host processes: see operators.pod_image)."""
    operators.prepare(cluster, NAMESPACE)
    running = Operator(cluster, tmp_path_factory.mktemp("operator"), NAMESPACE, image=operators.pod_image())
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _job(name: str, *, addresses: list[str], ports: str, shards: int, pools: bool = True, **extra: Any) -> str:
    spec: dict[str, Any] = {
        "targets": {"addresses": addresses}, "ports": ports, "sharding": {"shards": shards},
        "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300},
        "backoffSeconds": 1, **extra,
    }
    if pools:
        spec["pools"] = [
            {"name": "edge", "nodeSelector": {"portolan.dev/pool": "edge"},
             "tolerations": [{"key": "portolan.dev/edge", "operator": "Exists", "effect": "NoSchedule"}]},
            {"name": "cloud", "nodeSelector": {"portolan.dev/pool": "cloud"}},
        ]
    return yaml.safe_dump({"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
                           "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})


def _get(cluster: clusters.Cluster, name: str) -> dict[str, Any]:
    return cluster.plane.scanjob(NAMESPACE, name)


def _wait_condition(cluster: clusters.Cluster, name: str, condition: str, timeout: int = 180) -> dict[str, Any]:
    done = cluster.plane.kubectl("wait", f"--for=condition={condition}", f"scanjob/{name}", "-n", NAMESPACE,
                                 f"--timeout={timeout}s", check=False, timeout=timeout + 30)
    job = _get(cluster, name)
    if done.returncode != 0:
        events = cluster.core().list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}").items
        story = "\n".join(f"{e.reason}: {e.message}" for e in events)
        shards = {k: (v.get("attempt"), v.get("phase"), v.get("lastError")) for k, v in
                  (job.get("status") or {}).get("shards", {}).items()}
        raise AssertionError(f"{name} never became {condition}: {done.stderr}\nshards: {shards}\nevents:\n{story}")
    return job


def _open_by_pool(job: dict[str, Any]) -> dict[str, set[tuple[str, int, str | None]]]:
    return {r["pool"]: {(p["host"], p["port"], p.get("service")) for p in r.get("open", [])}
            for r in job["status"]["results"]}


EXPECTED_OPEN = {(address, port, KINDS[port]) for address, (ports, _) in HOSTS.items() for port in ports}


def test_a_two_pool_three_shard_job_completes_with_the_hosts_construction(cluster: clusters.Cluster, operator: Operator) -> None:
    addresses = ["198.18.64.101", "198.18.64.102"]
    cluster.plane.kubectl("apply", "-f", "-", input=_job("two-pools", addresses=addresses, ports="20-25,80,443", shards=3,
                                                         expect={"allowedOpenPorts": "22"}))
    job = _wait_condition(cluster, "two-pools", "Complete")
    status = job["status"]
    assert status["phase"] == "Complete" and status["summary"] == "6/6"
    assert _open_by_pool(job) == {"edge": EXPECTED_OPEN - {(a, p, s) for a, p, s in EXPECTED_OPEN if a == "198.18.64.103"},
                                  "cloud": EXPECTED_OPEN - {(a, p, s) for a, p, s in EXPECTED_OPEN if a == "198.18.64.103"}}
    probes = len(addresses) * 8
    for result in status["results"]:
        assert sum(result["states"].values()) == probes
        assert result["states"] == {"closed": probes - 3, "open": 3}
    for shard_id, shard in status["shards"].items():
        assert shard["node"].startswith(shard_id.split("-")[0] + "-"), (shard_id, shard["node"])
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert accepted["observedGeneration"] == job["metadata"]["generation"]
    # Port 80 is open on both hosts but only 22 is allowed: a finding per vantage, the job still Complete.
    assert status["expectations"]["violated"] == 4
    assert {(v["pool"], v["host"], v["port"]) for v in status["expectations"]["violations"]} == {
        (pool, host, 80) for pool in ("edge", "cloud") for host in addresses}
    met = next(c for c in status["conditions"] if c["type"] == "ExpectationsMet")
    assert (met["status"], met["reason"]) == ("False", "UnexpectedOpenPorts")


def test_a_syn_job_with_capture_completes_and_each_shard_says_where_its_evidence_is(
        cluster: clusters.Cluster, operator: Operator, tmp_path: pathlib.Path) -> None:
    from portolan.capture import decoding, pcapfiles

    store = tmp_path / "evidence"
    store.mkdir()
    cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "portolan-evidence"},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(store), "type": "Directory"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "evidence", "namespace": NAMESPACE},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": "portolan-evidence",
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]))
    cluster.wait("the claim to bind", lambda: cluster.core().read_namespaced_persistent_volume_claim(
        "evidence", NAMESPACE).status.phase == "Bound", timeout=60)
    addresses = ["198.18.64.101", "198.18.64.102"]
    cluster.plane.kubectl("apply", "-f", "-", input=_job(
        "evidence", addresses=addresses, ports="20-25,80,443", shards=2, pools=False, technique="syn",
        capture={"persistentVolumeClaim": "evidence"}))
    job = _wait_condition(cluster, "evidence", "Complete")
    status = job["status"]
    assert _open_by_pool(job) == {"default": EXPECTED_OPEN - {e for e in EXPECTED_OPEN if e[0] == "198.18.64.103"}}
    targets = {shard["id"]: shard["targets"] for shard in status["plan"]}
    for shard_id, shard in status["shards"].items():
        capture = shard["capture"]
        assert capture["persistentVolumeClaim"] == "evidence" and capture.get("error") is None, capture
        assert capture["files"] == [f"{NAMESPACE}/evidence/{shard_id}-a{shard['attempt']}-0001.pcapng"]
        seen = [decoding.decode_ethernet(r.data) for r in pcapfiles.read(store / capture["files"][0])]
        assert len(seen) == capture["packets"] > 0
        mine = {str(a) for block in targets[shard_id] for a in _expand(block)}
        peers = {d.destination for d in seen if d.source not in mine} | {d.source for d in seen if d.source in mine}
        assert peers <= mine, (shard_id, peers, mine)
        syns = {(d.destination, d.dport) for d in seen if d.destination in mine and d.transport == "tcp"}
        assert {(a, p) for a in mine for p in (20, 21, 22, 23, 24, 25, 80, 443)} <= syns


def _expand(block: str) -> list[str]:
    import ipaddress

    if "-" in block:
        first, last = (ipaddress.ip_address(x) for x in block.split("-"))
        return [str(ipaddress.ip_address(n)) for n in range(int(first), int(last) + 1)]
    return [str(a) for a in ipaddress.ip_network(block, strict=False)] if "/" in block else [block]


def _shard_pod(cluster: clusters.Cluster, job: str, shard: str) -> str | None:
    pods = cluster.core().list_namespaced_pod(NAMESPACE, label_selector=f"portolan.dev/job={job},portolan.dev/shard={shard}").items
    running = [p for p in pods if p.status.phase == "Running"]
    return running[0].metadata.name if running else None


SLOW = {"addresses": ["198.18.64.101", "198.18.64.103"], "ports": "1-40,80",
        "timing": {"retries": 1, "initialRttTimeoutMs": 2000, "maxRttTimeoutMs": 2000, "concurrency": 20}}


def test_a_killed_shard_is_retried_and_the_job_completes_without_lost_or_duplicated_results(cluster: clusters.Cluster, operator: Operator) -> None:
    # 10 probes/s per host: each shard scans for ~4 s, whatever its host answers and however fast shards start.
    manifest = _job("retry", shards=2, pools=False, retries=2, addresses=SLOW["addresses"], ports=SLOW["ports"],
                    timing={"retries": 0, "initialRttTimeoutMs": 2000, "maxRttTimeoutMs": 2000, "maxHostRate": 10})
    cluster.plane.kubectl("apply", "-f", "-", input=manifest)
    cluster.wait("shard default-0 to run", lambda: _shard_pod(cluster, "retry", "default-0") is not None, timeout=60)
    victim = _shard_pod(cluster, "retry", "default-0")
    assert victim is not None
    time.sleep(1.0)  # let it heartbeat some progress first
    cluster.agent.kill_pod(NAMESPACE, victim)
    job = _wait_condition(cluster, "retry", "Complete", timeout=240)
    shard = job["status"]["shards"]["default-0"]
    assert shard["attempt"] == 2 and shard["phase"] == "Succeeded"
    result = job["status"]["results"][0]
    assert sum(result["states"].values()) == 2 * 41
    assert {(p["host"], p["port"]) for p in result["open"]} == {("198.18.64.101", 22), ("198.18.64.101", 80)}
    assert len(result["open"]) == 2


def test_exhausted_retries_fail_the_job_with_a_reason_and_keep_partial_results(cluster: clusters.Cluster, operator: Operator) -> None:
    manifest = _job("exhaust", shards=2, pools=False, retries=1, addresses=SLOW["addresses"], ports=SLOW["ports"])
    manifest = manifest.replace("maxRttTimeoutMs: 300", "maxRttTimeoutMs: 2000").replace("initialRttTimeoutMs: 300", "initialRttTimeoutMs: 2000")
    cluster.plane.kubectl("apply", "-f", "-", input=manifest)
    for attempt in (1, 2):
        cluster.wait(f"attempt {attempt} to run", lambda n=attempt: (_shard_pod(cluster, "exhaust", "default-1") or "").endswith(f"-{n}"), timeout=90)
        pod = _shard_pod(cluster, "exhaust", "default-1")
        assert pod is not None
        cluster.agent.kill_pod(NAMESPACE, pod)
    job = _wait_condition(cluster, "exhaust", "Failed", timeout=240)
    status = job["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ShardsFailed" and "partial results kept" in failed["message"]
    assert status["shards"]["default-1"]["phase"] == "Failed"
    assert "exit code" in status["shards"]["default-1"]["lastError"]
    assert status["shards"]["default-0"]["phase"] == "Succeeded"
    assert sum(status["results"][0]["states"].values()) >= 41  # shard 0's results survived


def test_the_operator_killed_mid_scan_resumes_after_restart(cluster: clusters.Cluster, operator: Operator) -> None:
    manifest = _job("restart", shards=2, pools=False, addresses=SLOW["addresses"], ports=SLOW["ports"])
    cluster.plane.kubectl("apply", "-f", "-", input=manifest)
    cluster.wait("a shard to run", lambda: _shard_pod(cluster, "restart", "default-0") is not None, timeout=60)
    operator.kill()
    time.sleep(2)
    operator.start()
    job = _wait_condition(cluster, "restart", "Complete", timeout=240)
    assert job["status"]["summary"] == "2/2"
    assert all(s["attempt"] == 1 for s in job["status"]["shards"].values())


def test_a_stopped_operator_releases_its_finalizers_so_scanjobs_can_still_be_deleted(
        cluster: clusters.Cluster, operator: Operator) -> None:
    # A finished job waiting for its TTL still ticks, so kopf holds a finalizer on it (jobs
    # without ticks — suspended, rejected, finished without a TTL — hold none).
    cluster.plane.kubectl("apply", "-f", "-", input=_job("orphan", shards=1, pools=False, ttlSecondsAfterFinished=3600,
                                                         addresses=["198.18.64.101"], ports="22"))
    finalizers = lambda: _get(cluster, "orphan")["metadata"].get("finalizers") or []  # noqa: E731
    cluster.wait("kopf's finalizer", lambda: _get(cluster, "orphan").get("status", {}).get("phase") == "Complete"
                 and bool(finalizers()), timeout=60)
    operator.stop()
    try:
        assert finalizers() == []
        deleted = cluster.plane.kubectl("delete", "scanjob", "orphan", "-n", NAMESPACE, "--timeout=20s", check=False)
        assert deleted.returncode == 0, deleted.stderr
    finally:
        operator.start()
    log = (operator.folder / "operator.log").read_text()
    assert "released the finalizer of" in log


@pytest.mark.parametrize(
    ("name", "change", "reason", "message"),
    [
        # Malformed syntax never gets here (the CRD's CEL rules refuse it, test_admission.py); these pass
        # the API server and are the operator's to refuse.
        ("bad-range", {"targets": {"addresses": ["198.18.64.9-198.18.64.1"]}}, "InvalidTarget", "ends before it starts"),
        ("bad-port", {"ports": "90-80"}, "InvalidPorts", "ends before it starts"),
        ("outside", {"targets": {"addresses": ["198.19.0.5"]}}, "GuardrailViolated", "outside the allowed CIDRs"),
        ("too-many", {"targets": {"addresses": ["198.18.0.0/16"]}, "ports": "all"}, "GuardrailViolated", "above the limit"),
    ],
)
def test_bad_specs_are_not_accepted_and_say_why(cluster: clusters.Cluster, operator: Operator,
                                                name: str, change: dict[str, Any], reason: str, message: str) -> None:
    body = yaml.safe_load(_job(name, addresses=["198.18.64.101"], ports="22", shards=1, pools=False))
    body["spec"].update(change)
    cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    job = _wait_condition(cluster, name, "Accepted=False", timeout=60)
    accepted = next(c for c in job["status"]["conditions"] if c["type"] == "Accepted")
    assert accepted["reason"] == reason and message in accepted["message"]
    pods = cluster.core().list_namespaced_pod(NAMESPACE, label_selector=f"portolan.dev/job={name}").items
    assert pods == []

    def announced() -> bool:  # the Event follows the status write by a moment
        events = cluster.core().list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}").items
        return any(e.reason == reason and message in e.message for e in events)

    cluster.wait(f"a {reason} Event", announced, timeout=15)


def test_a_65536_target_job_never_writes_an_object_over_the_budget(cluster: clusters.Cluster, operator: Operator) -> None:
    body = yaml.safe_load(_job("wide", addresses=["198.18.0.0/16"], ports="9", shards=8, pools=False))
    body["spec"]["timing"] = {"retries": 0, "initialRttTimeoutMs": 100, "maxRttTimeoutMs": 100, "concurrency": 4096}
    body["spec"]["serviceDetection"] = False
    cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    sizes = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = _get(cluster, "wide")
        sizes.append(len(json.dumps(job)))
        if job.get("status", {}).get("phase") in ("Complete", "Failed"):
            break
        time.sleep(1)
    assert job["status"]["phase"] == "Complete", json.dumps(job["status"])[:3000]
    assert max(sizes) < 256 * 1024
    logs = "".join(f"\n== {p}\n" + p.read_text()[-1500:] for p in sorted((cluster.agent.folder / "pods").glob("*wide*/log")))
    assert sum(job["status"]["results"][0]["states"].values()) == 65536, json.dumps(job["status"].get("shards"))[:3000] + logs


def test_metrics_cover_jobs_and_shards(cluster: clusters.Cluster, operator: Operator) -> None:
    port = yaml.safe_load(operator.settings.read_text())["metricsPort"]
    import urllib.request

    with contextlib.closing(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)) as reply:
        text = reply.read().decode()
    for name in ("portolan_scanjobs{phase=\"Complete\"}", "portolan_shards_started_total", "portolan_shard_retries_total",
                 "portolan_scanjob_duration_seconds_bucket", "portolan_status_write_failures_total", "portolan_probes_total"):
        assert name in text, name


def test_node_selectors_become_targets_and_a_finished_job_goes_away_after_its_ttl(cluster: clusters.Cluster, operator: Operator) -> None:
    body = yaml.safe_load(_job("by-node", addresses=[], ports="9", shards=1, pools=False))
    body["spec"]["targets"] = {"selectors": [{"kind": "Node", "matchLabels": {"portolan.dev/pool": "cloud"}}]}
    body["spec"]["ttlSecondsAfterFinished"] = 3
    body["spec"]["serviceDetection"] = False
    cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    job = _wait_condition(cluster, "by-node", "Complete", timeout=120)
    cloud = sorted(node.address for node in cluster.agent.nodes.values() if node.pool == "cloud")
    assert job["status"]["plan"][0]["targets"] == ["-".join(cloud)] or sorted(job["status"]["plan"][0]["targets"]) == cloud
    assert job["status"]["results"][0]["states"] == {"closed": 2}
    gone = lambda: cluster.plane.kubectl("get", "scanjob", "by-node", "-n", NAMESPACE, check=False).returncode != 0  # noqa: E731
    try:
        cluster.wait("the job to expire", gone, timeout=150)
    except AssertionError as exc:
        log = (operator.folder / "operator.log").read_text()
        lines = [line for line in log.splitlines() if "by-node" in line and "DEBUG" not in line][-40:]
        raise AssertionError("\n".join(lines) + json.dumps(_get(cluster, "by-node")["metadata"], indent=1)[:2000]) from exc
    cluster.wait("its pods to be collected", lambda: not cluster.core().list_namespaced_pod(NAMESPACE, label_selector="portolan.dev/job=by-node").items, timeout=90)


def _schedule(cluster: clusters.Cluster, name: str) -> dict[str, Any]:
    out = cluster.plane.kubectl("get", "scanschedule", name, "-n", NAMESPACE, "-o", "json").stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_a_schedule_runs_scanjobs_on_time_and_reports_a_newly_opened_port_as_drift(
        cluster: clusters.Cluster, operator: Operator) -> None:
    manifest = {
        "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanSchedule",
        "metadata": {"name": "drift", "namespace": NAMESPACE},
        "spec": {
            "schedule": "@every 15s", "successfulJobsHistoryLimit": 2,
            "jobTemplate": {"metadata": {"labels": {"team": "netsec"}}, "spec": {
                "targets": {"addresses": ["198.18.64.102"]}, "ports": "22,80,8080", "retries": 0,
                "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300}}},
        },
    }
    cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    cluster.wait("a first completed run", lambda: bool(_schedule(cluster, "drift").get("status", {})
                                                         .get("lastSuccessfulTime")), timeout=90)
    host_ns = f"{cluster.agent.prefix}-t1"  # 198.18.64.102, built by the targets fixture
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    server = netns.popen(host_ns, [sys.executable, "-m", "harness.servers",
                                   json.dumps([{"proto": "tcp", "port": 8080, "kind": "http"}])],
                         stdout=subprocess.PIPE, env=env)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"

        def drifted() -> bool:
            drift = _schedule(cluster, "drift").get("status", {}).get("drift") or {}
            return any(change["port"] == 8080 for change in drift.get("opened", []))

        cluster.wait("drift showing port 8080 opened", drifted, timeout=120)
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
    cluster.plane.kubectl("patch", "scanschedule", "drift", "-n", NAMESPACE, "--type=merge", "-p",
                          '{"spec": {"suspend": true}}')
    status = _schedule(cluster, "drift")["status"]
    drift = status["drift"]
    assert drift["opened"] == [{"pool": "default", "host": "198.18.64.102", "port": 8080, "protocol": "tcp",
                                "service": "http"}]
    assert drift["closed"] == []
    condition = next(c for c in status["conditions"] if c["type"] == "Drifted")
    assert (condition["status"], condition["reason"]) == ("True", "PortsChanged")
    jobs = json.loads(cluster.plane.kubectl("get", "scanjobs", "-n", NAMESPACE, "-l", "portolan.dev/schedule=drift",
                                            "-o", "json").stdout)["items"]
    assert all(j["metadata"]["ownerReferences"][0]["kind"] == "ScanSchedule" for j in jobs)
    assert all(j["metadata"]["labels"]["team"] == "netsec" for j in jobs)
    complete = [j for j in jobs if (j.get("status") or {}).get("phase") == "Complete"]
    assert {drift["previous"], drift["latest"]} <= {j["metadata"]["name"] for j in jobs}
    assert len(complete) <= 3  # two kept by the history limit, plus at most one finishing right now
    events = cluster.core().list_namespaced_event(NAMESPACE, field_selector="involvedObject.name=drift").items
    assert any(e.reason == "DriftDetected" and "1 port(s) opened" in e.message for e in events)
    assert any(e.reason == "RunStarted" for e in events)
    printed = cluster.plane.kubectl("get", "scanschedule", "drift", "-n", NAMESPACE).stdout
    assert "@every 15s" in printed and "True" in printed
    import urllib.request

    port = yaml.safe_load(operator.settings.read_text())["metricsPort"]
    with contextlib.closing(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)) as reply:
        metrics = reply.read().decode()
    assert 'portolan_drift_ports_total{change="opened"} 1.0' in metrics


def test_a_shard_whose_node_goes_silent_is_retried_on_another_node(cluster: clusters.Cluster, operator: Operator) -> None:
    manifest = _job("node-lost", shards=1, pools=False, retries=1, addresses=SLOW["addresses"], ports=SLOW["ports"],
                    timing=SLOW["timing"])
    cluster.plane.kubectl("apply", "-f", "-", input=manifest)
    cluster.wait("the shard to run", lambda: _shard_pod(cluster, "node-lost", "default-0") is not None, timeout=60)
    first = cluster.core().read_namespaced_pod(_shard_pod(cluster, "node-lost", "default-0"), NAMESPACE)
    lost = first.spec.node_name
    cluster.agent.drop_node(lost, delete=False)  # the process dies, heartbeats stop; the Node object stays
    try:
        job = _wait_condition(cluster, "node-lost", "Complete", timeout=240)
    finally:
        cluster.agent.revive_node(lost)
    shard = job["status"]["shards"]["default-0"]
    assert shard["attempt"] == 2 and shard["node"] != lost
    assert job["status"]["results"][0]["states"] == {"closed": 39, "filtered": 41, "open": 2}
    events = cluster.core().list_namespaced_event(NAMESPACE, field_selector="involvedObject.name=node-lost").items
    assert any(e.reason == "ShardRetrying" and f"NodeLost: node {lost} is not Ready" in e.message for e in events)
