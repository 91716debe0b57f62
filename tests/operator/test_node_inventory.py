"""Node inventories without an API server: planning, the guardrail, the inventory shard, the judged result.

The inventory shard runs here with an injected listing (the real listing is tested in
tests/inventory, the whole path on the control plane in tests/cluster/test_node_inventory.py).
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

import prometheus_client
import pytest

from portolan import errors
from portolan.controller import metrics
from portolan.controller.scanjobs import planning, reconciling
from portolan.inventory import exposure, listening
from portolan.kube import builders, fakes
from portolan.models import scanjobs, settings, statuses
from portolan.shard import listing, running

T0 = datetime.datetime(2026, 12, 5, 8, 0, 0, tzinfo=datetime.UTC)
ALLOWING = settings.OperatorSettings(allow_node_inventory=True)
EDGE = {"name": "edge", "nodeSelector": {"portolan.dev/pool": "edge"}}
CLOUD = {"name": "cloud", "nodeSelector": {"portolan.dev/pool": "cloud"}}


def _node(name: str, pool: str, address: str, ready: bool = True) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name, "labels": {"portolan.dev/pool": pool}},
            "status": {"addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


NODES = [_node("edge-1", "edge", "198.18.64.11"), _node("edge-2", "edge", "198.18.64.12"),
         _node("edge-3", "edge", "198.18.64.13", ready=False), _node("cloud-1", "cloud", "198.18.64.21")]


def _spec(**extra: Any) -> scanjobs.ScanJobSpec:
    return scanjobs.ScanJobSpec.model_validate({
        "targets": {"addresses": ["198.18.64.11"]}, "ports": "18080-18082", "pools": [EDGE, CLOUD],
        "inventory": {"pools": ["edge"]}, **extra})


def _job(**extra: Any) -> dict[str, Any]:
    return {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": "inv", "namespace": "team"},
            "spec": _spec(**extra).model_dump(by_alias=True, exclude_none=True, mode="json")}


def test_each_ready_node_of_an_inventoried_pool_gets_one_inventory_shard_with_its_addresses() -> None:
    spec = _spec()
    nodes = planning.inventory_nodes(spec, NODES)
    assert nodes == {"edge": [("edge-1", ["198.18.64.11"]), ("edge-2", ["198.18.64.12"])]}
    plan = planning.plan(spec, ALLOWING, ["198.18.64.11"], inventory_nodes=nodes)
    assert [(s.id, s.kind.value, s.node, s.targets, s.probes) for s in plan] == [
        ("edge-0", "scan", None, ["198.18.64.11"], 3), ("cloud-0", "scan", None, ["198.18.64.11"], 3),
        ("edge-n0", "inventory", "edge-1", ["198.18.64.11"], 0), ("edge-n1", "inventory", "edge-2", ["198.18.64.12"], 0)]


def test_an_inventory_skips_nodes_its_pod_could_never_be_placed_on() -> None:
    cordoned = _node("edge-4", "edge", "198.18.64.14")
    cordoned["spec"] = {"unschedulable": True}
    tainted = _node("edge-5", "edge", "198.18.64.15")
    tainted["spec"] = {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}
    tolerated = _node("edge-6", "edge", "198.18.64.16")
    tolerated["spec"] = {"taints": [{"key": "portolan.dev/edge", "value": "true", "effect": "NoSchedule"}]}
    spec = _spec(pools=[{**EDGE, "tolerations": [{"key": "portolan.dev/edge", "operator": "Exists"}]}, CLOUD])
    nodes = planning.inventory_nodes(spec, [*NODES, cordoned, tainted, tolerated])
    assert [name for name, _ in nodes["edge"]] == ["edge-1", "edge-2", "edge-6"]


def test_inventory_shards_are_not_counted_as_a_udp_spread() -> None:
    spec = _spec()
    plan = planning.plan(spec, ALLOWING, ["198.18.64.11"], inventory_nodes=planning.inventory_nodes(spec, NODES))
    assert planning.udp_spread(plan) == {}


@pytest.mark.parametrize(("config", "nodes", "reason", "words"), [
    (settings.OperatorSettings(), {"edge": [("edge-1", ["198.18.64.11"])]}, "GuardrailViolated", "allowNodeInventory"),
    (ALLOWING, {"edge": []}, "NoInventoryNodes", "inventory pool edge has no Ready node"),
])
def test_an_inventory_is_refused_without_the_setting_or_without_nodes(
        config: settings.OperatorSettings, nodes: dict[str, Any], reason: str, words: str) -> None:
    with pytest.raises(errors.SpecError) as caught:
        planning.plan(_spec(), config, ["198.18.64.11"], inventory_nodes=nodes)
    assert caught.value.reason == reason and words in str(caught.value)


def test_an_inventory_of_a_pool_the_job_does_not_have_is_an_invalid_spec() -> None:
    with pytest.raises(ValueError, match=r"inventory\.pools: core not among the job.s pools"):
        _spec(inventory={"pools": ["core"]})


def test_the_default_operator_rejects_an_inventory_job_with_guardrail_violated_and_creates_no_pod() -> None:
    kube = fakes.FakeKube()
    kube.add(_job())
    reconciling.step(kube, settings.OperatorSettings(), metrics.Metrics(prometheus_client.CollectorRegistry()),
                     "team", "inv", T0)
    status = kube.view("team", "inv")["status"]
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert (status["phase"], accepted["reason"]) == ("Rejected", "GuardrailViolated")
    assert [e["reason"] for e in kube.events] == ["GuardrailViolated"] and kube.pods("team") == []


def _listener(address: str, port: int, pid: int = 4242, protocol: str = "tcp") -> listening.Listener:
    owner = listening.Owner(pid, "python3", "root", listening.Containment(pod_uid="uid-1" if pid == 7 else None))
    return listening.Listener(protocol, address, port, 1000 + port, "root", (owner,))


def test_an_inventory_entry_lists_non_loopback_listeners_first_up_to_the_cap_and_counts_the_rest() -> None:
    found = listening.Inventory([_listener("127.0.0.1", 1), _listener("0.0.0.0", 9), _listener("198.18.64.11", 5, pid=7)],
                                "netlink", "net:[1]", notes=("1 sockets closed during the listing",))
    entry = listing.entry(found, cap=2)
    assert entry == {
        "listeners": [{"protocol": "tcp", "address": "198.18.64.11", "port": 5, "user": "root", "pid": 7,
                       "command": "python3", "podUid": "uid-1"},
                      {"protocol": "tcp", "address": "0.0.0.0", "port": 9, "user": "root", "pid": 4242,
                       "command": "python3"}],
        "listenersTruncated": 1, "listenerNotes": ["1 sockets closed during the listing"]}


def _vantage(name: str, open_: set[tuple[str, int, str]], complete: bool = True) -> exposure.Vantage:
    return exposure.Vantage(name, lambda address, port, protocol: address == "198.18.64.11" and 18080 <= port <= 18082,
                            frozenset(open_), complete)


@pytest.mark.parametrize(("address", "port", "protocol", "vantages", "expected"), [
    ("198.18.64.11", 18080, "tcp", [_vantage("cloud", {("198.18.64.11", 18080, "tcp")}), _vantage("edge", set())],
     exposure.Judged("exposed", ("cloud",), ("edge",))),
    ("0.0.0.0", 18082, "tcp", [_vantage("cloud", set())], exposure.Judged("shielded", (), ("cloud",))),
    ("::", 18082, "tcp", [_vantage("cloud", set())], exposure.Judged("shielded", (), ("cloud",))),
    ("127.0.0.1", 18081, "tcp", [_vantage("cloud", set())], exposure.Judged("local-only")),
    ("198.18.64.11", 18081, "udp", [_vantage("cloud", set())], exposure.Judged("unknown")),
    ("198.18.64.11", 18081, "tcp", [_vantage("cloud", set(), complete=False)], exposure.Judged("unknown")),
    ("198.18.64.11", 9999, "tcp", [_vantage("cloud", set())], exposure.Judged("not-scanned")),
    ("10.0.0.1", 18080, "tcp", [_vantage("cloud", set())], exposure.Judged("not-scanned")),  # not a node address
])
def test_a_node_listener_is_judged_from_every_vantage_that_probed_an_address_it_listens_on(
        address: str, port: int, protocol: str, vantages: list[exposure.Vantage], expected: exposure.Judged) -> None:
    assert exposure.judge_from_vantages(address, port, protocol, ["198.18.64.11"], vantages) == expected


def test_an_inventory_job_runs_its_shards_then_judges_each_listener_and_names_the_exposed_ones() -> None:
    kube = fakes.FakeKube()
    for node in NODES:
        kube.add(node)
    kube.add(_job(expect={"allowedOpenPorts": "18082"}))
    gauges = metrics.Metrics(prometheus_client.CollectorRegistry())
    reconciling.step(kube, ALLOWING, gauges, "team", "inv", T0)
    pods = {p["metadata"]["labels"][builders.LABEL_SHARD]: p for p in kube.pods("team")}
    assert sorted(pods) == ["cloud-0", "edge-0", "edge-n0", "edge-n1"]
    assert pods["edge-n0"]["spec"]["hostNetwork"] and pods["edge-n0"]["spec"]["hostPID"]
    assert "hostNetwork" not in pods["edge-0"]["spec"]
    listened = {"edge-1": [_listener("198.18.64.11", 18080), _listener("0.0.0.0", 18082), _listener("127.0.0.1", 18081)],
                "edge-2": [_listener("0.0.0.0", 18080)]}
    for shard, node in (("edge-n0", "edge-1"), ("edge-n1", "edge-2")):
        env = running.ShardEnv(namespace="team", job="inv", shard=shard, attempt=1, open_cap=200,
                               heartbeat_seconds=60.0, pod=pods[shard]["metadata"]["name"], node=node, listener_cap=10)
        found = listening.Inventory(listened[node], "netlink", "net:[1]")
        assert running.ShardRunner(kube, env, stop=threading.Event(), now=lambda: T0, take=lambda f=found: f).run() == 0
    for shard in ("edge-0", "cloud-0"):  # both vantages found 18080 open and 18082 filtered
        kube.report("team", "inv", shard, {
            "phase": "Succeeded", "finishedAttempt": 1, "done": 3, "states": {"open": 1, "closed": 1, "filtered": 1},
            "open": [{"host": "198.18.64.11", "port": 18080, "protocol": "tcp"}]})
    for pod in kube.pods("team"):
        kube.set_pod_phase("team", pod["metadata"]["name"], "Succeeded", exit_code=0)
    actions = reconciling.step(kube, ALLOWING, gauges, "team", "inv", T0 + datetime.timedelta(seconds=5))
    status = kube.view("team", "inv")["status"]
    assert status["phase"] == "Complete"
    judged = [(i["node"], i["address"], i["port"], i["exposure"], i.get("exposedFrom", []), i.get("shieldedFrom", []),
               i.get("allowed")) for i in status["inventory"]["listed"]]
    assert judged == [
        ("edge-1", "198.18.64.11", 18080, "exposed", ["edge", "cloud"], [], False),
        ("edge-1", "0.0.0.0", 18082, "shielded", [], ["edge", "cloud"], True),
        ("edge-2", "0.0.0.0", 18080, "not-scanned", [], [], False),  # edge-2's address was not a target
        ("edge-1", "127.0.0.1", 18081, "local-only", [], [], None),
    ]
    assert (status["inventory"]["nodes"], status["inventory"]["listeners"]) == (2, 4)
    condition = next(c for c in status["conditions"] if c["type"] == "ListenersExposed")
    assert condition["status"] == "True"
    assert condition["message"] == "1 node listener(s) reachable: python3 on edge-1 198.18.64.11:18080/tcp from edge, cloud"
    assert {(v["pool"], v["port"], v["listener"]) for v in status["expectations"]["violations"]} == {
        ("edge", 18080, "python3 on edge-1"), ("cloud", 18080, "python3 on edge-1")}
    assert "node listeners among them: python3 on edge-1 (198.18.64.11:18080/tcp)" in next(
        m for _, reason, m in actions.events if reason == "ExpectationsViolated")
    assert "ListenersExposed" in [reason for _, reason, _ in actions.events]
    sample = {kind: gauges.registry.get_sample_value("portolan_scanjob_node_listeners", {
        "namespace": "team", "scanjob": "inv", "exposure": kind}) for kind in ("exposed", "shielded", "local-only")}
    assert sample == {"exposed": 1, "shielded": 1, "local-only": 1}
    assert builders.status_size(statuses.ScanJobStatus.model_validate(status)) < \
        ALLOWING.status_byte_budget


def test_an_inventory_pod_waiting_for_a_node_that_is_gone_is_retried_and_then_fails_the_shard() -> None:
    kube = fakes.FakeKube()
    for node in NODES:
        kube.add(node)
    kube.add(_job(retries=1, backoffSeconds=0))
    gauges = metrics.Metrics(prometheus_client.CollectorRegistry())
    reconciling.step(kube, ALLOWING, gauges, "team", "inv", T0)
    kube.node_problems["edge-2"] = "is gone"
    for second in range(1, 6):  # the pod stays Pending with no node: the scheduler cannot place it
        reconciling.step(kube, ALLOWING, gauges, "team", "inv", T0 + datetime.timedelta(seconds=second))
    entry = kube.view("team", "inv")["status"]["shards"]["edge-n1"]
    assert (entry["phase"], entry["attempt"]) == ("Failed", 2)
    assert "NodeLost: node edge-2 is gone" in (entry["lastError"] or "")
    assert [c.verb for c in kube.calls if c.verb == "force-delete"] == ["force-delete", "force-delete"]
    assert kube.view("team", "inv")["status"]["shards"]["edge-n0"]["phase"] == "Pending"  # edge-1 is fine
    pod = next(p for p in kube.pods("team") if p["metadata"]["labels"][builders.LABEL_SHARD] == "edge-n0")
    env = running.ShardEnv(namespace="team", job="inv", shard="edge-n0", attempt=1, open_cap=200,
                           heartbeat_seconds=60.0, pod=pod["metadata"]["name"], node="edge-1")
    found = listening.Inventory([_listener("0.0.0.0", 18080)], "netlink", "net:[1]")
    assert running.ShardRunner(kube, env, stop=threading.Event(), now=lambda: T0, take=lambda: found).run() == 0
    for shard in ("edge-0", "cloud-0"):
        kube.report("team", "inv", shard, {"phase": "Succeeded", "finishedAttempt": 1, "done": 3,
                                                                  "open": [], "states": {"closed": 3}})
    for item in kube.pods("team"):
        kube.set_pod_phase("team", item["metadata"]["name"], "Succeeded", exit_code=0)
    reconciling.step(kube, ALLOWING, gauges, "team", "inv", T0 + datetime.timedelta(seconds=10))
    status = kube.view("team", "inv")["status"]
    assert status["phase"] == "Failed"  # partial results kept: edge-1's listener is judged, edge-2 is named missing
    assert status["inventory"]["missing"] == ["edge-2"]
    assert [(i["node"], i["exposure"], i["shieldedFrom"]) for i in status["inventory"]["listed"]] == [
        ("edge-1", "shielded", ["edge", "cloud"])]
    condition = next(c for c in status["conditions"] if c["type"] == "ListenersExposed")
    assert condition["message"].endswith("; not inventoried (shard failed): edge-2")


def test_a_vantage_whose_scan_shard_failed_judges_nothing_shielded() -> None:
    kube = fakes.FakeKube()
    for node in NODES:
        kube.add(node)
    kube.add(_job(retries=0))
    gauges = metrics.Metrics(prometheus_client.CollectorRegistry())
    reconciling.step(kube, ALLOWING, gauges, "team", "inv", T0)
    pods = {p["metadata"]["labels"][builders.LABEL_SHARD]: p for p in kube.pods("team")}
    for shard, node in (("edge-n0", "edge-1"), ("edge-n1", "edge-2")):
        env = running.ShardEnv(namespace="team", job="inv", shard=shard, attempt=1, open_cap=200,
                               heartbeat_seconds=60.0, pod=pods[shard]["metadata"]["name"], node=node, listener_cap=10)
        found = listening.Inventory([_listener("198.18.64.11", 18082)] if node == "edge-1" else [], "netlink", "net:[1]")
        assert running.ShardRunner(kube, env, stop=threading.Event(), now=lambda: T0, take=lambda f=found: f).run() == 0
    kube.report("team", "inv", "edge-0", {  # edge saw 18082 filtered; cloud's shard died
        "phase": "Succeeded", "finishedAttempt": 1, "done": 3, "states": {"closed": 2, "filtered": 1}})
    for pod in kube.pods("team"):
        failed = pod["metadata"]["labels"][builders.LABEL_SHARD] == "cloud-0"
        kube.set_pod_phase("team", pod["metadata"]["name"], "Failed" if failed else "Succeeded", exit_code=1 if failed else 0)
    reconciling.step(kube, ALLOWING, gauges, "team", "inv", T0 + datetime.timedelta(seconds=5))
    status = kube.view("team", "inv")["status"]
    assert status["shards"]["cloud-0"]["phase"] == "Failed"
    [item] = status["inventory"]["listed"]
    assert (item["exposure"], item.get("shieldedFrom", [])) == ("shielded", ["edge"])  # not from cloud: it never probed


def test_a_node_list_that_fails_leaves_an_inventory_job_to_be_retried_not_rejected() -> None:
    kube = fakes.FakeKube()
    kube.add(_job())
    kube.failing["list-nodes"] = errors.KubeError("listing nodes: 503 Service Unavailable", 503)
    gauges = metrics.Metrics(prometheus_client.CollectorRegistry())
    with pytest.raises(errors.KubeError):
        reconciling.step(kube, ALLOWING, gauges, "team", "inv", T0)
    assert "phase" not in (kube.view("team", "inv").get("status") or {})
    del kube.failing["list-nodes"]
    for node in NODES:
        kube.add(node)
    reconciling.step(kube, ALLOWING, gauges, "team", "inv", T0 + datetime.timedelta(seconds=5))
    assert kube.view("team", "inv")["status"]["phase"] == "Running"


def test_a_udp_slice_waiting_for_its_lost_node_is_retried_elsewhere_in_its_pool() -> None:
    kube = fakes.FakeKube()
    for node in NODES:
        kube.add(node)
    kube.add({"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": "udp", "namespace": "team"},
              "spec": {"targets": {"addresses": ["198.18.64.11"]}, "protocols": ["udp"], "udpPorts": "1-10",
                       "pools": [EDGE], "retries": 1, "backoffSeconds": 0}})
    gauges = metrics.Metrics(prometheus_client.CollectorRegistry())
    reconciling.step(kube, ALLOWING, gauges, "team", "udp", T0)
    plan = kube.view("team", "udp")["status"]["plan"]
    assert [s["node"] for s in plan] == ["edge-1", "edge-2"]
    kube.node_problems["edge-2"] = "is gone"
    for second in range(1, 4):  # edge-2's slice stays Pending with no node
        reconciling.step(kube, ALLOWING, gauges, "team", "udp", T0 + datetime.timedelta(seconds=second))
    entry = kube.view("team", "udp")["status"]["shards"]["edge-1"]
    assert (entry["attempt"], entry["avoidNodes"]) == (2, ["edge-2"])
    retry = next(p for p in kube.pods("team") if p["metadata"]["labels"][builders.LABEL_SHARD] == "edge-1"
                 and p["metadata"]["labels"][builders.LABEL_ATTEMPT] == "2")
    terms = retry["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert all({"key": "metadata.name", "operator": "NotIn", "values": ["edge-2"]} in t["matchFields"] for t in terms)
    assert not any(f.get("operator") == "In" for t in terms for f in t["matchFields"])


@pytest.mark.parametrize(("allowed", "phase"), [(["team"], "Running"), (["ops"], "Rejected"), ([], "Running")])
def test_inventory_namespaces_narrow_where_inventories_may_run(allowed: list[str], phase: str) -> None:
    kube = fakes.FakeKube()
    for node in NODES:
        kube.add(node)
    kube.add(_job())
    config = ALLOWING.model_copy(update={"inventory_namespaces": allowed})
    reconciling.step(kube, config, metrics.Metrics(prometheus_client.CollectorRegistry()), "team", "inv", T0)
    status = kube.view("team", "inv")["status"]
    assert status["phase"] == phase
    if phase == "Rejected":
        accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
        assert accepted["reason"] == "GuardrailViolated" and "inventoryNamespaces: ops" in accepted["message"]
        assert kube.pods("team") == []
