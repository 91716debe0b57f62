"""Reconciliation on fake time: from observed job and pods to actions, scenario by scenario."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from portolan.controller.scanjobs import planning, reconciling, runs
from portolan.kube import fakes
from portolan.models import settings

T0 = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)
CONFIG = settings.OperatorSettings()


class Job:
    """A ScanJob body that actions are applied to, as the API server would."""

    def __init__(self, **spec: Any) -> None:
        base = {"targets": {"addresses": ["198.18.0.0/30"]}, "ports": "22,80", "sharding": {"shards": 2},
                "retries": 1, "backoffSeconds": 10}
        self.body: dict[str, Any] = {
            "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
            "metadata": {"name": "audit", "namespace": "team", "uid": "u-1", "generation": 1},
            "spec": {**base, **spec}, "status": {},
        }
        self.pods: dict[str, runs.PodView] = {}

    def step(self, now: datetime.datetime, active_elsewhere: int = 0) -> runs.Actions:
        observed = runs.Observed(self.body, list(self.pods.values()),
                                      active_elsewhere + sum(p.active for p in self.pods.values()), now)
        actions = reconciling.reconcile(observed, CONFIG)
        fakes.merge_patch(self.body.setdefault("status", {}), actions.status)
        for manifest in actions.create:
            labels = manifest["metadata"]["labels"]
            self.pods[manifest["metadata"]["name"]] = runs.PodView(
                manifest["metadata"]["name"], labels["portolan.dev/shard"], int(labels["portolan.dev/attempt"]), "Pending")
        for name in actions.delete:
            self.pods.pop(name, None)
        return actions

    def shard_reports(self, shard: str, **fields: Any) -> None:
        fakes.merge_patch(self.body["status"], {"shards": {shard: fields}})

    def pod(self, shard: str) -> runs.PodView:
        return max((p for p in self.pods.values() if p.shard == shard), key=lambda p: p.attempt)

    def set_pod(self, shard: str, phase: str, exit_code: int | None = None) -> None:
        pod = self.pod(shard)
        self.pods[pod.name] = runs.PodView(pod.name, shard, pod.attempt, phase, exit_code, node="edge-1")

    def succeed(self, shard: str, states: dict[str, int], open_: list[dict[str, Any]]) -> None:
        attempt = self.body["status"]["shards"][shard]["attempt"]
        self.shard_reports(shard, phase="Succeeded", finishedAttempt=attempt, states=states, open=open_,
                           done=sum(states.values()))
        self.set_pod(shard, "Succeeded", 0)

    def condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.body["status"]["conditions"] if c["type"] == kind)


def test_a_new_job_is_planned_accepted_and_gets_one_pod_per_shard() -> None:
    job = Job()
    actions = job.step(T0)
    assert [m["metadata"]["name"] for m in actions.create] == ["audit-default-0-1", "audit-default-1-1"]
    assert job.body["status"]["phase"] == "Running"
    assert job.condition("Accepted")["status"] == "True"
    assert job.condition("Accepted")["observedGeneration"] == 1
    assert ("Normal", "Accepted", "planned 2 shards, 8 probes") in actions.events


def test_a_bad_spec_is_rejected_once_with_a_message_and_no_pods() -> None:
    job = Job(ports="70000")
    first = job.step(T0)
    assert not first.create
    assert job.body["status"]["phase"] == "Rejected"
    accepted = job.condition("Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidPorts")
    assert "port 70000 is out of range" in accepted["message"]
    assert [e[:2] for e in first.events] == [("Warning", "InvalidPorts")]
    assert job.step(T0 + datetime.timedelta(seconds=5)).events == []


def test_a_failed_shard_is_retried_after_its_backoff_then_completes() -> None:
    job = Job()
    job.step(T0)
    job.set_pod("default-0", "Failed", 137)
    actions = job.step(T0 + datetime.timedelta(seconds=1))
    shard = job.body["status"]["shards"]["default-0"]
    assert shard["phase"] == "Retrying" and "exit code 137" in shard["lastError"]
    assert shard["retryAfter"] == "2026-11-22T12:00:11Z"
    assert any(e[1] == "ShardRetrying" for e in actions.events)
    assert not job.step(T0 + datetime.timedelta(seconds=5)).create
    retry = job.step(T0 + datetime.timedelta(seconds=12))
    assert [m["metadata"]["name"] for m in retry.create] == ["audit-default-0-2"]
    job.succeed("default-0", {"closed": 3, "open": 1}, [{"host": "198.18.0.1", "port": 22, "protocol": "tcp"}])
    job.succeed("default-1", {"closed": 4}, [])
    done = job.step(T0 + datetime.timedelta(seconds=20))
    assert job.body["status"]["phase"] == "Complete"
    assert job.condition("Complete")["status"] == "True"
    assert job.body["status"]["results"] == [{"pool": "default", "states": {"closed": 7, "open": 1},
                                              "open": [{"host": "198.18.0.1", "port": 22, "protocol": "tcp"}],
                                              "openTruncated": 0}]
    assert any(e[1] == "Completed" for e in done.events)


def test_exhausted_retries_fail_the_job_and_keep_partial_results() -> None:
    job = Job(retries=0)
    job.step(T0)
    job.succeed("default-1", {"closed": 3, "open": 1}, [{"host": "198.18.0.3", "port": 80, "protocol": "tcp"}])
    job.shard_reports("default-0", done=2, states={"closed": 2})
    job.set_pod("default-0", "Failed", 1)
    job.step(T0 + datetime.timedelta(seconds=1))
    status = job.body["status"]
    assert status["phase"] == "Failed"
    assert (job.condition("Failed")["status"], job.condition("Failed")["reason"]) == ("True", "ShardsFailed")
    assert status["shards"]["default-0"]["phase"] == "Failed"
    assert status["results"][0]["states"] == {"closed": 5, "open": 1}


def test_a_pod_that_disappears_counts_as_a_failed_attempt() -> None:
    job = Job()
    job.step(T0)
    job.pods.pop(job.pod("default-0").name)
    job.step(T0 + datetime.timedelta(seconds=1))
    assert "PodMissing" in job.body["status"]["shards"]["default-0"]["lastError"]


def test_a_pod_created_before_a_lost_status_write_is_adopted_not_duplicated() -> None:
    job = Job()
    job.step(T0)
    job.body["status"]["shards"]["default-0"]["attempt"] = 0  # the write after creating the pod was lost
    actions = job.step(T0 + datetime.timedelta(seconds=1))
    assert not actions.create
    assert job.body["status"]["shards"]["default-0"]["attempt"] == 1


def test_the_namespace_concurrency_limit_holds_shards_back() -> None:
    job = Job(sharding={"shards": 3})
    actions = job.step(T0, active_elsewhere=CONFIG.max_concurrent_shards_per_namespace - 1)
    assert len(actions.create) == 1
    assert job.condition("Progressing")["reason"] == "ConcurrencyLimited"


def test_the_active_deadline_fails_the_job_and_stops_its_pods() -> None:
    job = Job(activeDeadlineSeconds=60)
    job.step(T0)
    actions = job.step(T0 + datetime.timedelta(seconds=61))
    assert sorted(actions.delete) == ["audit-default-0-1", "audit-default-1-1"]
    assert job.condition("Failed")["reason"] == "DeadlineExceeded"


def test_a_finished_job_is_deleted_after_its_ttl() -> None:
    job = Job(ttlSecondsAfterFinished=30)
    job.step(T0)
    job.succeed("default-0", {"closed": 4}, [])
    job.succeed("default-1", {"closed": 4}, [])
    job.step(T0 + datetime.timedelta(seconds=1))
    assert not job.step(T0 + datetime.timedelta(seconds=20)).delete_job
    assert job.step(T0 + datetime.timedelta(seconds=31)).delete_job


def test_suspension_stops_pods_without_spending_a_retry() -> None:
    job = Job()
    job.step(T0)
    job.body["spec"]["suspend"] = True
    actions = job.step(T0 + datetime.timedelta(seconds=1))
    assert len(actions.delete) == 2 and job.body["status"]["phase"] == "Suspended"
    job.body["spec"]["suspend"] = False
    resumed = job.step(T0 + datetime.timedelta(seconds=2))
    assert [m["metadata"]["name"] for m in resumed.create] == ["audit-default-0-1", "audit-default-1-1"]


def test_edge_pool_pods_carry_the_pools_placement_and_a_restricted_security_context() -> None:
    job = Job(pools=[{"name": "edge", "nodeSelector": {"portolan.dev/pool": "edge"},
                      "tolerations": [{"key": "portolan.dev/edge", "operator": "Exists", "effect": "NoSchedule"}]}])
    pod = job.step(T0).create[0]
    assert pod["spec"]["nodeSelector"] == {"portolan.dev/pool": "edge"}
    assert pod["spec"]["tolerations"] == [{"key": "portolan.dev/edge", "operator": "Exists", "effect": "NoSchedule"}]
    container = pod["spec"]["containers"][0]["securityContext"]
    assert container == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                         "capabilities": {"drop": ["ALL"]}}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_with_egress_policies_on_a_new_job_gets_a_networkpolicy_for_exactly_its_targets_and_ports() -> None:
    config = settings.OperatorSettings(scannerEgressPolicy=True)
    job = Job(targets={"addresses": ["198.18.0.0/30", "198.18.0.9"]}, ports="22,80-82", protocols=["tcp", "udp"])
    observed = runs.Observed(job.body, [], 0, T0)
    policy = reconciling.reconcile(observed, config).network_policy
    assert policy is not None
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert policy["spec"]["podSelector"]["matchLabels"] == {"portolan.dev/job": "audit", "app.kubernetes.io/component": "shard"}
    targets, api, _dns = policy["spec"]["egress"]
    assert [b["ipBlock"]["cidr"] for b in targets["to"]] == ["198.18.0.0/30", "198.18.0.9/32"]
    assert targets["ports"] == [{"protocol": "TCP", "port": 22}, {"protocol": "TCP", "port": 80, "endPort": 82},
                                {"protocol": "UDP", "port": 22}, {"protocol": "UDP", "port": 80, "endPort": 82}]
    assert api["ports"][0] == {"protocol": "TCP", "port": 443}
    assert reconciling.reconcile(observed, CONFIG).network_policy is None


def test_results_over_the_byte_budget_move_to_a_gzipped_configmap_named_in_status() -> None:
    import base64
    import gzip
    import json

    config = settings.OperatorSettings(statusByteBudget=16 * 1024)
    job = Job(targets={"addresses": ["198.18.0.0/24"]}, ports="1-200", sharding={"shards": 2})
    observed = runs.Observed(job.body, [], 0, T0)
    fakes.merge_patch(job.body["status"], reconciling.reconcile(observed, config).status)
    many = [{"host": f"198.18.0.{h}", "port": p, "protocol": "tcp"} for h in range(128) for p in range(1, 3)]
    for shard in ("default-0", "default-1"):
        job.shard_reports(shard, phase="Succeeded", finishedAttempt=1, attempt=1, states={"open": 256}, open=many)
    actions = reconciling.reconcile(runs.Observed(job.body, [], 0, T0), config)
    assert actions.results_configmap is not None and actions.status["resultsRef"] == "configmap/audit-results"
    assert len(json.dumps(actions.status)) < 16 * 1024
    stored = json.loads(gzip.decompress(base64.b64decode(actions.results_configmap["binaryData"]["results.json.gz"])))
    assert len(stored[0]["open"]) > 0 and actions.status["results"][0]["open"] == []


def test_a_patch_that_changes_nothing_is_recognised_so_it_is_not_sent() -> None:
    current = {"phase": "Running", "shards": {"a-0": {"attempt": 1, "done": 5}}, "conditions": [{"type": "X"}]}
    assert reconciling._already(current, {"phase": "Running", "shards": {"a-0": {"attempt": 1}}})
    assert not reconciling._already(current, {"shards": {"a-0": {"attempt": 2}}})
    assert not reconciling._already(current, {"conditions": [{"type": "Y"}]})


def test_a_capture_job_mounts_the_named_claim_and_adds_only_net_raw() -> None:
    job = Job(capture={"persistentVolumeClaim": "evidence"})
    pod = job.step(T0).create[0]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["volumes"] == [{"name": "capture", "persistentVolumeClaim": {"claimName": "evidence"}}]
    assert container["volumeMounts"] == [{"name": "capture", "mountPath": "/var/run/portolan/capture"}]
    assert {"name": "PORTOLAN_CAPTURE_DIR", "value": "/var/run/portolan/capture"} in container["env"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}
    assert spec["securityContext"]["runAsUser"] == 0


def test_a_syn_job_without_capture_gets_net_raw_but_no_volume() -> None:
    pod = Job(technique="syn").step(T0).create[0]
    assert pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == ["NET_RAW"]
    assert "volumes" not in pod["spec"]


def test_with_raw_sockets_disallowed_a_syn_or_capture_job_is_refused_with_no_pods() -> None:
    strict = settings.OperatorSettings(allow_raw_sockets=False)
    for spec in ({"technique": "syn"}, {"capture": {"persistentVolumeClaim": "evidence"}}):
        job = Job(**spec)
        observed = runs.Observed(job.body, [], 0, T0)
        actions = reconciling.reconcile(observed, strict)
        assert actions.create == []
        accepted = next(c for c in actions.status["conditions"] if c["type"] == "Accepted")
        assert (accepted["status"], accepted["reason"]) == ("False", "GuardrailViolated")
        assert "allowRawSockets: false" in accepted["message"]


def test_a_shard_on_a_lost_node_is_force_deleted_and_retried_with_the_nodes_problem() -> None:
    job = Job()
    job.step(T0)
    job.set_pod("default-0", "Running")
    observed = runs.Observed(job.body, list(job.pods.values()), 2, T0 + datetime.timedelta(seconds=5),
                                  lost_nodes={"edge-1": "is not Ready (NodeStatusUnknown)"})
    actions = reconciling.reconcile(observed, CONFIG)
    lost = job.pod("default-0").name
    assert actions.force_delete == [lost] and actions.delete == []
    assert set(actions.status["shards"]) == {"default-0"}  # the shard on a healthy node is left alone
    entry = actions.status["shards"]["default-0"]
    assert entry["phase"] == "Retrying"
    assert entry["lastError"] == "NodeLost: node edge-1 is not Ready (NodeStatusUnknown)"
    assert entry["avoidNodes"] == ["edge-1"]
    fakes.merge_patch(job.body["status"], actions.status)
    job.pods.pop(lost)
    retry = job.step(T0 + datetime.timedelta(seconds=60)).create
    assert [p["metadata"]["labels"]["portolan.dev/attempt"] for p in retry] == ["2"]
    terms = retry[0]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["edge-1"]}]}]


@pytest.mark.parametrize(
    ("allowed", "met", "violations"),
    [
        ("22", False, [{"pool": "default", "host": "198.18.0.2", "port": 80, "protocol": "tcp", "service": "http"}]),
        ("22,80", True, []),
        ("web,22", True, []),
        ("", False, [{"pool": "default", "host": "198.18.0.1", "port": 22, "protocol": "tcp"},
                     {"pool": "default", "host": "198.18.0.2", "port": 80, "protocol": "tcp", "service": "http"}]),
    ],
)
def test_open_ports_outside_the_expected_ones_are_a_finding_not_a_failure(
        allowed: str, met: bool, violations: list[dict[str, Any]]) -> None:
    job = Job(expect={"allowedOpenPorts": allowed})
    job.step(T0)
    job.succeed("default-0", {"closed": 3, "open": 1}, [{"host": "198.18.0.1", "port": 22, "protocol": "tcp"}])
    job.succeed("default-1", {"closed": 3, "open": 1},
                [{"host": "198.18.0.2", "port": 80, "protocol": "tcp", "service": "http"}])
    done = job.step(T0 + datetime.timedelta(seconds=5))
    status = job.body["status"]
    assert status["phase"] == "Complete"
    assert status["expectations"]["violated"] == len(violations)
    assert status["expectations"].get("violations", []) == violations
    condition = job.condition("ExpectationsMet")
    assert condition["status"] == ("True" if met else "False")
    assert any(e[1] == "ExpectationsViolated" for e in done.events) is not met


def test_a_bad_allowed_open_ports_expression_is_refused_before_any_pod() -> None:
    job = Job(expect={"allowedOpenPorts": "22,ssh"})
    actions = job.step(T0)
    assert actions.create == []
    accepted = job.condition("Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidPorts")
    assert "unknown port item 'ssh'" in accepted["message"]


@pytest.mark.parametrize(("spec", "status", "ticks"), [
    ({}, {}, True),  # new
    ({}, {"phase": "Running", "observedGeneration": 1}, True),
    ({}, {"phase": "Complete", "observedGeneration": 1}, False),
    ({"ttlSecondsAfterFinished": 60}, {"phase": "Complete", "observedGeneration": 1}, True),  # to expire
    ({"ttlSecondsAfterFinished": 0}, {"phase": "Failed", "observedGeneration": 1}, True),
    ({}, {"phase": "Rejected", "observedGeneration": 1}, False),
    ({}, {"phase": "Rejected", "observedGeneration": 0}, True),  # its spec changed since
    ({"suspend": True}, {"phase": "Suspended", "observedGeneration": 1}, False),
    ({"suspend": True}, {}, False),  # created suspended: its create step plans and suspends it
    ({"suspend": True}, {"phase": "Running", "observedGeneration": 0}, False),  # its update step stops it
    ({"suspend": False}, {"phase": "Suspended", "observedGeneration": 1}, True),  # resuming
])
def test_only_jobs_with_something_to_wait_for_tick(spec: dict[str, Any], status: dict[str, Any], ticks: bool) -> None:
    body = {"metadata": {"generation": 1}, "spec": spec, "status": status}
    assert reconciling.ticks_needed(body) is ticks


def test_a_pinned_udp_slice_whose_node_was_lost_is_retried_anywhere_else_in_its_pool() -> None:
    job = Job(targets={"addresses": ["198.18.0.1"]}, protocols=["udp"], udpPorts="1-10", sharding={})
    nodes = (planning.NodeView("cloud-1"), planning.NodeView("cloud-2"))
    first = reconciling.reconcile(runs.Observed(job.body, [], 0, T0, nodes=nodes), CONFIG)
    fakes.merge_patch(job.body["status"], first.status)
    assert [(s["udpPorts"], s["node"]) for s in job.body["status"]["plan"]] == [("1-5", "cloud-1"), ("6-10", "cloud-2")]
    pod = first.create[0]
    job.pods[pod["metadata"]["name"]] = runs.PodView(pod["metadata"]["name"], "default-0", 1, "Running", node="cloud-1")
    lost = reconciling.reconcile(runs.Observed(job.body, list(job.pods.values()), 2, T0 + datetime.timedelta(seconds=5),
                                               lost_nodes={"cloud-1": "is gone"}), CONFIG)
    fakes.merge_patch(job.body["status"], lost.status)
    job.pods.clear()
    retry = job.step(T0 + datetime.timedelta(seconds=60)).create
    terms = retry[0]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["cloud-1"]}]}]


def test_a_udp_job_on_a_one_node_pool_says_each_target_gets_one_source_address() -> None:
    job = Job(targets={"addresses": ["198.18.0.1"]}, protocols=["udp"], udpPorts="1-10", sharding={})
    actions = reconciling.reconcile(runs.Observed(job.body, [], 0, T0, nodes=(planning.NodeView("cloud-1"),)), CONFIG)
    fakes.merge_patch(job.body["status"], actions.status)
    assert (job.condition("UdpSpread")["status"], job.condition("UdpSpread")["reason"]) == ("False", "OneNodeInPool")
    assert not any(reason == "UdpSpreadAcrossNodes" for _, reason, _ in actions.events)
