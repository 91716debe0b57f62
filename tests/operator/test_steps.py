"""The step functions and the shard runtime against the in-memory client: observe, decide, act — no API server.

The real path (the same functions on the control plane) is in tests/cluster; these
check the I/O around the pure decisions: what is written, in which order, what a
failing write does, and which metrics move.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

import prometheus_client
import pytest

from portolan import errors
from portolan.controller import metrics
from portolan.controller.scanjobs import reconciling
from portolan.controller.scanschedules import scheduling
from portolan.engine import plans
from portolan.kube import builders, fakes
from portolan.models import results, settings
from portolan.shard import running

T0 = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)
CONFIG = settings.OperatorSettings()


def _job(name: str = "audit", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"targets": {"addresses": ["198.18.0.0/30"]}, "ports": "22,80", "sharding": {"shards": 2},
                 "retries": 1, "backoffSeconds": 10, **spec},
    }


def _gauges() -> metrics.Metrics:
    return metrics.Metrics(prometheus_client.CollectorRegistry())


def _value(gauges: metrics.Metrics, name: str) -> float:
    return gauges.registry.get_sample_value(name) or 0.0


def test_a_new_job_gets_its_plan_written_as_scanshards_before_one_pod_per_shard_is_created() -> None:
    kube = fakes.FakeKube()
    kube.add(_job())
    gauges = _gauges()
    reconciling.step(kube, CONFIG, gauges, "team", "audit", T0)
    writes = [(c.verb, c.kind) for c in kube.calls if c.verb != "event"]
    assert writes == [("create", "ScanShard"), ("create", "ScanShard"), ("patch-status", "ScanJob"),
                      ("patch-status", "ScanShard"), ("patch-status", "ScanShard"), ("create", "Pod"), ("create", "Pod")]
    stored = kube.get_job("team", "audit")["status"]
    assert stored["shardCount"] == 2 and "plan" not in stored and "shards" not in stored
    status = kube.view("team", "audit")["status"]
    assert [s["id"] for s in status["plan"]] == [p["metadata"]["labels"][builders.LABEL_SHARD]
                                                 for p in kube.pods("team")]
    assert _value(gauges, "portolan_shards_started_total") == 2
    assert [e["reason"] for e in kube.events] == ["Accepted", "ShardsStarted"]


def test_a_failed_shard_pod_counts_one_retry_in_the_metrics_and_the_status() -> None:
    kube = fakes.FakeKube()
    kube.add(_job())
    gauges = _gauges()
    reconciling.step(kube, CONFIG, gauges, "team", "audit", T0)
    first = kube.pods("team")[0]["metadata"]["name"]
    kube.set_pod_phase("team", first, "Failed", node="cloud-1", exit_code=3)
    reconciling.step(kube, CONFIG, gauges, "team", "audit", T0 + datetime.timedelta(seconds=5))
    shards = kube.view("team", "audit")["status"]["shards"]
    retrying = [shard for shard in shards.values() if shard["phase"] == "Retrying"]
    assert len(retrying) == 1 and "exit code 3" in retrying[0]["lastError"]
    assert _value(gauges, "portolan_shard_retries_total") == 1
    assert _value(gauges, "portolan_shard_failures_total") == 0


def test_a_failing_event_write_never_fails_the_step() -> None:
    kube = fakes.FakeKube()
    kube.add(_job())
    kube.failing["event"] = errors.KubeError("creating an Event: 403 Forbidden", 403)
    actions = reconciling.step(kube, CONFIG, _gauges(), "team", "audit", T0)
    assert len(actions.create) == 2 and len(kube.pods("team")) == 2
    assert kube.events == []


def test_a_failing_status_write_is_counted_raised_and_creates_no_pod() -> None:
    kube = fakes.FakeKube()
    kube.add(_job())
    kube.failing["patch-status"] = errors.KubeError("patching: 500 Internal Server Error", 500)
    gauges = _gauges()
    with pytest.raises(errors.KubeError):
        reconciling.step(kube, CONFIG, gauges, "team", "audit", T0)
    assert kube.pods("team") == []
    assert _value(gauges, "portolan_status_write_failures_total") == 1


def test_a_pod_on_a_lost_node_is_force_deleted_through_the_client() -> None:
    kube = fakes.FakeKube()
    kube.add(_job())
    reconciling.step(kube, CONFIG, _gauges(), "team", "audit", T0)
    pod = kube.pods("team")[0]["metadata"]["name"]
    kube.set_pod_phase("team", pod, "Running", node="edge-2")
    kube.node_problems["edge-2"] = "is not Ready (NodeStatusUnknown)"
    reconciling.step(kube, CONFIG, _gauges(), "team", "audit", T0 + datetime.timedelta(seconds=5))
    assert fakes.Call("force-delete", "Pod", pod) in kube.calls
    assert ("Pod", "team", pod) not in kube.objects
    entry = next(e for e in kube.view("team", "audit")["status"]["shards"].values() if e.get("avoidNodes"))
    assert entry["avoidNodes"] == ["edge-2"] and entry["phase"] == "Retrying"
    assert entry["lastError"] == "NodeLost: node edge-2 is not Ready (NodeStatusUnknown)"


def test_spilled_results_are_written_to_an_owned_configmap_and_read_back_through_the_codec() -> None:
    kube = fakes.FakeKube()
    kube.add(_job(sharding={"shards": 1}))
    tight = settings.OperatorSettings(status_byte_budget=16 * 1024, shard_open_ports_cap=400)
    reconciling.step(kube, tight, _gauges(), "team", "audit", T0)
    shard = next(iter(kube.view("team", "audit")["status"]["shards"]))
    opened = [{"host": f"198.18.{i // 250}.{i % 250}", "port": 443, "protocol": "tcp"} for i in range(400)]
    kube.report("team", "audit", shard, {
        "phase": "Succeeded", "finishedAttempt": 1, "open": opened, "states": {"open": 400}})
    pod = kube.pods("team")[0]["metadata"]["name"]
    kube.set_pod_phase("team", pod, "Succeeded", exit_code=0)
    reconciling.step(kube, tight, _gauges(), "team", "audit", T0 + datetime.timedelta(seconds=5))
    job = kube.view("team", "audit")
    assert job["status"]["phase"] == "Complete" and job["status"]["resultsRef"] == "configmap/audit-results"
    configmap = kube.objects[("ConfigMap", "team", "audit-results")]
    assert configmap["metadata"]["ownerReferences"][0] | {"uid": None} == {
        "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "name": "audit", "uid": None,
        "controller": True, "blockOwnerDeletion": True}
    spilled = kube.job_results(job)
    assert len(spilled[0]["open"]) == 400


def test_a_schedule_step_creates_its_first_run_owned_by_the_schedule_even_when_events_fail() -> None:
    kube = fakes.FakeKube()
    schedule = kube.add({
        "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanSchedule",
        "metadata": {"name": "nightly", "namespace": "team", "creationTimestamp": "2026-11-22T11:00:00Z"},
        "spec": {"schedule": "@every 1h", "jobTemplate": {"spec": _job()["spec"]}},
    })
    kube.failing["event"] = errors.KubeError("creating an Event: 403 Forbidden", 403)
    decision = scheduling.step(kube, "team", "nightly", T0)
    assert decision.create is not None
    created = kube.list_jobs("team", "portolan.dev/schedule=nightly")
    assert [j["metadata"]["ownerReferences"][0]["uid"] for j in created] == [schedule["metadata"]["uid"]]
    status = kube.get_schedule("team", "nightly")["status"]
    assert status["active"] == [created[0]["metadata"]["name"]] and status["lastScheduleTime"] == "2026-11-22T12:00:00Z"
    attempted = [c for c in kube.calls if c.verb == "event"]
    assert attempted and kube.events == []  # the Event was tried, failed, and cost nothing


class _Shard:
    """A job planned by the operator, and a shard runtime for its first shard on the fake client."""

    def __init__(self, scan: Any = None, **spec: Any) -> None:
        self.kube = fakes.FakeKube()
        self.kube.add(_job(**{"sharding": {"shards": 1}, "ports": "22,80,443", **spec}))
        reconciling.step(self.kube, CONFIG, _gauges(), "team", "audit", T0)
        self.shard = next(iter(self.kube.view("team", "audit")["status"]["shards"]))
        env = running.ShardEnv(namespace="team", job="audit", shard=self.shard, attempt=1, open_cap=200,
                               heartbeat_seconds=60.0, pod="audit-s0-1", node="cloud-1")
        self.runner = running.ShardRunner(self.kube, env, stop=threading.Event(), now=lambda: T0,
                                          scan=scan or self.scan)
        self.plans: list[plans.Plan] = []

    def scan(self, plan: plans.Plan, **options: Any) -> results.ScanReport:
        """Stands in for the engine: every target's port 443 is open, the rest closed."""
        self.plans.append(plan)
        self.options = options
        hosts = [results.HostResult(address=t.address, ports=[results.PortResult(
            host=t.address, port=443, protocol=results.Protocol.TCP, state=results.PortState.OPEN,
            reason=results.Reason.SYN_ACK)]) for t in plan.targets]
        states = {"open": len(plan.targets), "closed": len(plan.targets) * 2}
        return results.ScanReport(version="test", started=0.0, finished=1.0, hosts=hosts,
                                  summary=results.ScanSummary(probes=plan.probe_count, states=states))

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.kube.view("team", "audit")["status"]["shards"][self.shard]
        return entry


def test_a_shard_scans_its_slice_of_the_plan_and_writes_only_its_own_entry() -> None:
    shard = _Shard()
    before = shard.kube.view("team", "audit")["status"]
    assert shard.runner.run() == running.EXIT_OK
    assert [t.address for t in shard.plans[0].targets] == ["198.18.0.0", "198.18.0.1", "198.18.0.2", "198.18.0.3"]
    entry = shard.entry()
    assert entry["phase"] == "Succeeded" and entry["finishedAttempt"] == 1
    assert sorted(p["host"] for p in entry["open"]) == ["198.18.0.0", "198.18.0.1", "198.18.0.2", "198.18.0.3"]
    after = shard.kube.view("team", "audit")["status"]
    assert {k: v for k, v in after.items() if k != "shards"} == {k: v for k, v in before.items() if k != "shards"}
    assert {k: v for k, v in after["shards"].items() if k != shard.shard} == \
        {k: v for k, v in before["shards"].items() if k != shard.shard}  # no other key of the status was touched


def test_a_shards_udp_re_probe_gets_the_time_its_slice_needs_at_one_closed_port_per_second() -> None:
    shard = _Shard(protocols=["udp"], udpPorts="1-200", targets={"addresses": ["198.18.0.1"]})
    assert shard.runner.run() == running.EXIT_OK
    assert len(shard.plans[0].udp_ports) == 200
    assert shard.options["rate_limit_budget"] >= 200  # the CLI's 60 s would leave ~140 closed ports open|filtered


def test_a_superseded_shard_attempt_writes_nothing_and_exits_cleanly() -> None:
    shard = _Shard()
    shard.kube.report("team", "audit", shard.shard, {"attempt": 2})
    writes = len(shard.kube.calls)
    assert shard.runner.run() == running.EXIT_SUPERSEDED
    assert len(shard.kube.calls) == writes and shard.plans == []


def test_a_shard_pointed_at_another_shards_object_reports_a_spec_error_and_scans_nothing() -> None:
    shard = _Shard()
    name = builders.scan_shard_name("audit", shard.shard)
    shard.runner.env = running.ShardEnv(namespace="team", job="audit", shard="nope", attempt=1, open_cap=200,
                                        heartbeat_seconds=60.0, pod=None, node=None, shard_object=name)
    assert shard.runner.run() == running.EXIT_SPEC
    error = shard.kube.get_scan_shard("team", name)["status"]["lastError"]
    assert error == f"InvalidSpec: ScanShard {name} plans shard {shard.shard}, not nope"
    assert shard.plans == []


def test_a_shard_whose_scanshard_is_gone_fails_with_a_not_found_error_and_writes_nothing() -> None:
    shard = _Shard()
    shard.runner.env = running.ShardEnv(namespace="team", job="audit", shard="nope", attempt=1, open_cap=200,
                                        heartbeat_seconds=60.0, pod=None, node=None)
    writes = len(shard.kube.calls)
    with pytest.raises(errors.KubeError) as caught:
        shard.runner.run()
    assert caught.value.status == 404 and len(shard.kube.calls) == writes and shard.plans == []


def test_a_job_whose_scanshards_were_deleted_fails_and_says_their_results_are_lost() -> None:
    kube = fakes.FakeKube()
    kube.add(_job())
    gauges = _gauges()
    reconciling.step(kube, CONFIG, gauges, "team", "audit", T0)
    first, second = kube.list_scan_shards("team", "audit")
    del kube.objects[("ScanShard", "team", second["metadata"]["name"])]
    kube.report("team", "audit", first["spec"]["id"], {"phase": "Succeeded", "finishedAttempt": 1, "done": 4})
    for pod in kube.pods("team"):
        kube.set_pod_phase("team", pod["metadata"]["name"], "Succeeded", exit_code=0)
    reconciling.step(kube, CONFIG, gauges, "team", "audit", T0 + datetime.timedelta(seconds=5))
    status = kube.get_job("team", "audit")["status"]
    assert status["phase"] == "Failed" and status["summary"] == "1/2"
    missing = next(c for c in status["conditions"] if c["type"] == "ShardsMissing")
    assert missing["reason"] == "ScanShardDeleted" and "1 of the job's 2 ScanShard objects were deleted" in missing["message"]


def _finish_every_shard(kube: fakes.FakeKube, open_: list[dict[str, Any]]) -> None:
    shards = kube.view("team", "audit")["status"]["shards"]
    for shard, entry in shards.items():
        kube.report("team", "audit", shard, {
            "phase": "Succeeded", "finishedAttempt": entry["attempt"], "states": {"open": 1, "closed": 1},
            "open": open_, "done": 2})
    for pod in kube.pods("team"):
        kube.set_pod_phase("team", pod["metadata"]["name"], "Succeeded", node="edge-1", exit_code=0)


def test_per_job_gauges_name_the_job_and_vantage_and_go_away_with_the_job() -> None:
    kube = fakes.FakeKube()
    pools = [{"name": "edge"}, {"name": "cloud"}]
    kube.add(_job(pools=pools, sharding={"shards": 1}, expect={"allowedOpenPorts": "22"}))
    gauges = _gauges()
    reconciling.step(kube, CONFIG, gauges, "team", "audit", T0)
    _finish_every_shard(kube, [{"host": "198.18.0.1", "port": 8080, "protocol": "tcp"}])
    reconciling.step(kube, CONFIG, gauges, "team", "audit", T0 + datetime.timedelta(seconds=5))
    for vantage in ("edge", "cloud"):
        assert gauges.registry.get_sample_value(
            "portolan_scanjob_open_ports", {"namespace": "team", "scanjob": "audit", "vantage": vantage}) == 1
    assert gauges.registry.get_sample_value(
        "portolan_scanjob_expectation_violations", {"namespace": "team", "scanjob": "audit"}) == 2
    gauges.forget_job("team", "audit")
    text = prometheus_client.generate_latest(gauges.registry).decode()
    assert 'scanjob="audit"' not in text


def test_a_port_seen_by_two_pools_is_named_once_with_both_pools_in_the_violation_message() -> None:
    kube = fakes.FakeKube()
    kube.add(_job(pools=[{"name": "edge"}, {"name": "cloud"}], sharding={"shards": 1},
                  expect={"allowedOpenPorts": "22"}))
    reconciling.step(kube, CONFIG, _gauges(), "team", "audit", T0)
    _finish_every_shard(kube, [{"host": "198.18.0.1", "port": 8080, "protocol": "tcp"}])
    actions = reconciling.step(kube, CONFIG, _gauges(), "team", "audit", T0 + datetime.timedelta(seconds=5))
    message = next(m for _, reason, m in actions.events if reason == "ExpectationsViolated")
    assert message.count("198.18.0.1:8080/tcp") == 1
    assert "198.18.0.1:8080/tcp (pools cloud, edge)" in message


def test_a_schedule_drift_gauge_names_the_schedule_and_goes_away_with_it() -> None:
    gauges = _gauges()
    gauges.observe_schedule("team", "nightly", {"drift": {"opened": [{"port": 1}], "closed": [], "truncated": 2}})
    labels = {"namespace": "team", "scanschedule": "nightly"}
    assert gauges.registry.get_sample_value("portolan_scanschedule_drift_ports", labels) == 3
    gauges.forget_schedule("team", "nightly")
    assert gauges.registry.get_sample_value("portolan_scanschedule_drift_ports", labels) is None


def _silent_job(kube: fakes.FakeKube, config: settings.OperatorSettings) -> dict[str, Any]:
    """A one-shard job whose every probe came back filtered, stepped to its end."""
    kube.add(_job(sharding={"shards": 1}))
    reconciling.step(kube, config, _gauges(), "team", "audit", T0)
    shard = next(iter(kube.view("team", "audit")["status"]["shards"]))
    kube.report("team", "audit", shard, {
        "phase": "Succeeded", "finishedAttempt": 1, "states": {"filtered": 8}})
    kube.set_pod_phase("team", kube.pods("team")[0]["metadata"]["name"], "Succeeded", exit_code=0)
    reconciling.step(kube, config, _gauges(), "team", "audit", T0 + datetime.timedelta(seconds=5))
    return kube.view("team", "audit")


def test_a_job_whose_every_probe_was_silent_names_the_policies_that_deny_its_shards_egress() -> None:
    kube = fakes.FakeKube()
    kube.add({"kind": "NetworkPolicy", "metadata": {"name": "default-deny-egress", "namespace": "team"},
              "spec": {"podSelector": {}, "policyTypes": ["Egress"]}})
    kube.add({"kind": "NetworkPolicy", "metadata": {"name": "web-only", "namespace": "team"},
              "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]}})
    job = _silent_job(kube, CONFIG)
    reached = next(c for c in job["status"]["conditions"] if c["type"] == "TargetsReached")
    assert (reached["status"], reached["reason"]) == ("False", "EgressBlockedByNetworkPolicy")
    assert "default-deny-egress" in reached["message"] and "web-only" not in reached["message"]
    assert "scannerEgressPolicy" in reached["message"]
    assert "EgressBlockedByNetworkPolicy" in [e["reason"] for e in kube.events]
    assert job["status"]["phase"] == "Complete"  # a finding, not a failure


def test_silence_without_an_egress_policy_or_with_the_scanner_policy_blames_no_policy() -> None:
    kube = fakes.FakeKube()
    job = _silent_job(kube, CONFIG)
    reached = next(c for c in job["status"]["conditions"] if c["type"] == "TargetsReached")
    assert (reached["status"], reached["reason"]) == ("True", "NoEgressPolicy")
    allowed = fakes.FakeKube()
    allowed.add({"kind": "NetworkPolicy", "metadata": {"name": "default-deny-egress", "namespace": "team"},
                 "spec": {"podSelector": {}, "policyTypes": ["Egress"]}})
    job = _silent_job(allowed, settings.OperatorSettings(scanner_egress_policy=True))
    assert all(c["type"] != "TargetsReached" for c in job["status"]["conditions"])


def test_an_egress_policy_that_lets_the_probes_through_is_not_blamed_for_the_silence() -> None:
    kube = fakes.FakeKube()
    kube.add({"kind": "NetworkPolicy", "metadata": {"name": "egress-anywhere", "namespace": "team"},
              "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}})
    job = _silent_job(kube, CONFIG)
    reached = next(c for c in job["status"]["conditions"] if c["type"] == "TargetsReached")
    assert (reached["status"], reached["reason"]) == ("True", "NoEgressPolicy")


class _CountingKube(fakes.FakeKube):
    """Records which shard-pod lists a step asks for: the job's own, or the whole namespace's."""

    def __init__(self) -> None:
        super().__init__()
        self.lists: list[str | None] = []

    def shard_pods(self, namespace: str, job: str | None = None) -> list[dict[str, Any]]:
        self.lists.append(job)
        return super().shard_pods(namespace, job)


def test_a_step_lists_only_its_own_jobs_pods_unless_a_shard_is_due_to_start() -> None:
    kube = _CountingKube()
    kube.add(_job())
    gauges = _gauges()
    reconciling.step(kube, CONFIG, gauges, "team", "audit", T0)  # plans and starts both shards
    assert kube.lists == ["audit", None]
    kube.lists.clear()
    for pod in kube.pods("team"):
        kube.set_pod_phase("team", pod["metadata"]["name"], "Running", node="edge-1")
    reconciling.step(kube, CONFIG, gauges, "team", "audit", T0 + datetime.timedelta(seconds=2))
    assert kube.lists == ["audit"]  # nothing to start: the namespace's other pods are not read


def test_the_namespace_limit_counts_other_jobs_pods_and_the_running_gauge_sums_the_jobs() -> None:
    kube = fakes.FakeKube()
    config = CONFIG.model_copy(update={"max_concurrent_shards_per_namespace": 3})
    gauges = _gauges()
    kube.add(_job("first"))
    kube.add(_job("second"))
    reconciling.step(kube, config, gauges, "team", "first", T0)
    reconciling.step(kube, config, gauges, "team", "second", T0)
    assert len(kube.pods("team")) == 3  # two of the first job, one slot left for the second
    reconciling.step(kube, config, gauges, "team", "first", T0 + datetime.timedelta(seconds=1))
    reconciling.step(kube, config, gauges, "team", "second", T0 + datetime.timedelta(seconds=1))
    assert _value(gauges, "portolan_shards_running") == 3
    gauges.forget_job("team", "first")
    assert _value(gauges, "portolan_shards_running") == 1


def _node(name: str, *, ready: bool = True, taint: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"taints": [{"key": taint, "value": "true", "effect": "NoSchedule"}] if taint else []},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_a_udp_job_on_a_pool_of_several_nodes_pins_one_slice_of_ports_per_node_and_says_so() -> None:
    kube = fakes.FakeKube()
    for node in (_node("edge-1", taint="portolan.dev/edge"), _node("cloud-1"), _node("cloud-2"),
                 _node("cloud-3", ready=False)):
        kube.add(node)
    kube.add(_job(targets={"addresses": ["198.18.0.1"]}, protocols=["udp"], udpPorts="1-200", sharding={},
                  pools=[{"name": "all", "tolerations": [{"key": "portolan.dev/edge", "operator": "Exists"}]}]))
    reconciling.step(kube, CONFIG, _gauges(), "team", "audit", T0)
    status = kube.view("team", "audit")["status"]
    assert [(s["udpPorts"], s["node"]) for s in status["plan"]] == [
        ("1-67", "cloud-1"), ("68-134", "cloud-2"), ("135-200", "edge-1")]
    pinned = [p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
              ["nodeSelectorTerms"][0]["matchFields"] for p in kube.pods("team")]
    assert pinned == [[{"key": "metadata.name", "operator": "In", "values": [n]}] for n in ("cloud-1", "cloud-2", "edge-1")]
    spread = next(c for c in status["conditions"] if c["type"] == "UdpSpread")
    assert (spread["status"], spread["reason"]) == ("True", "UdpSpreadAcrossNodes")
    assert "pool all over nodes cloud-1, cloud-2, edge-1" in spread["message"]
    assert "UdpSpreadAcrossNodes" in [e["reason"] for e in kube.events]
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert accepted["message"].startswith("planned 3 shards, 200 probes; each target's UDP ports split across nodes")


def test_a_udp_job_whose_nodes_cannot_be_read_is_planned_from_one_source_and_says_why() -> None:
    kube = fakes.FakeKube()
    kube.add(_node("cloud-1"))
    kube.add(_node("cloud-2"))
    kube.failing["list-nodes"] = errors.KubeError("listing nodes: forbidden")
    kube.add(_job(targets={"addresses": ["198.18.0.1"]}, protocols=["udp"], udpPorts="1-200", sharding={}))
    reconciling.step(kube, CONFIG, _gauges(), "team", "audit", T0)
    status = kube.view("team", "audit")["status"]
    assert [(s["udpPorts"], s.get("node")) for s in status["plan"]] == [("1-200", None)]
    spread = next(c for c in status["conditions"] if c["type"] == "UdpSpread")
    assert (spread["status"], spread["reason"]) == ("False", "OneNodeInPool")
    assert "affinity" not in kube.pods("team")[0]["spec"]
