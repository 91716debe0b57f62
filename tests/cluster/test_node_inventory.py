"""Node listener inventories on the real control plane: inventory pods, exposure per vantage, the guardrail.

A small server started here in the edge-1 node's network namespace listens on the node's
address (198.18.64.11) on three ports and on loopback on a fourth; nftables rules in that
namespace drop one port from the cloud nodes' addresses (cloud pods reach other nodes
masqueraded to them) and one from everyone.  A ScanJob scanning the node's address from the
edge and cloud pools, with ``inventory: {pools: [edge]}``, must find the server's sockets through
its inventory pods (hostNetwork, hostPID, run by the node agent in the node's namespaces) and
judge them: exposed from both pools, exposed from edge but shielded from cloud, shielded from
both, local-only.  An operator left at
``allowNodeInventory: false`` refuses the same job with GuardrailViolated.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harness import clusters, netns, operators

pytestmark = pytest.mark.cluster

ALLOWED = "inventory"
REFUSED = "inventory-refused"
NODE = "edge-1"
ADDRESS = "198.18.64.11"
EXPOSED, LOCAL, CLOUD_SHIELDED, SHIELDED = 18080, 18081, 18082, 18083
RULE_TABLE = "portolan_inventory_test"

SERVER = f"""
import os, socket, time
held = []
for address, port in (("{ADDRESS}", {EXPOSED}), ("127.0.0.1", {LOCAL}), ("{ADDRESS}", {CLOUD_SHIELDED}),
                      ("0.0.0.0", {SHIELDED})):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(16)
    held.append(sock)
print("ready", os.getpid(), flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def listener(cluster: clusters.Cluster) -> Iterator[int]:
    """The server's pid, in edge-1's namespace, with rules that drop CLOUD_SHIELDED from the cloud, SHIELDED from all."""
    ns = cluster.agent.ns(NODE)
    cloud = ", ".join(node.address for node in cluster.agent.nodes.values() if node.pool == "cloud")
    netns.run(ns, ["nft", "-f", "-"], input=(
        f"table inet {RULE_TABLE} {{\n chain input {{\n  type filter hook input priority 0;\n"
        f"  ip saddr {{ {cloud} }} tcp dport {CLOUD_SHIELDED} drop\n  tcp dport {SHIELDED} drop\n }}\n}}\n"))
    server = netns.popen(ns, [sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        word, pid = server.stdout.readline().split()
        assert word == b"ready"
        yield int(pid)
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", RULE_TABLE], capture_output=True)


@pytest.fixture(scope="module")
def operator(cluster: clusters.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[operators.Operator]:
    """An operator that allows node inventories, watching its own namespace."""
    operators.prepare(cluster, ALLOWED)
    running = operators.Operator(cluster, tmp_path_factory.mktemp("inventory-operator"), ALLOWED,
                                 image=operators.pod_image(), settings={"allowNodeInventory": True})
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def refusing(cluster: clusters.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[operators.Operator]:
    """An operator with the default settings (allowNodeInventory: false)."""
    operators.prepare(cluster, REFUSED)
    running = operators.Operator(cluster, tmp_path_factory.mktemp("refusing-operator"), REFUSED,
                                 image=operators.pod_image())
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _job(name: str, namespace: str) -> str:
    spec: dict[str, Any] = {
        "targets": {"addresses": [ADDRESS]}, "ports": f"{EXPOSED}-{SHIELDED}", "sharding": {"shards": 1},
        "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300}, "backoffSeconds": 1,
        "pools": [
            {"name": "edge", "nodeSelector": {"portolan.dev/pool": "edge"},
             "tolerations": [{"key": "portolan.dev/edge", "operator": "Exists", "effect": "NoSchedule"}]},
            {"name": "cloud", "nodeSelector": {"portolan.dev/pool": "cloud"}},
        ],
        "inventory": {"pools": ["edge"]},
        "expect": {"allowedOpenPorts": f"{CLOUD_SHIELDED},{SHIELDED}"},
    }
    return yaml.safe_dump({"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
                           "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def _wait(cluster: clusters.Cluster, namespace: str, name: str, condition: str, timeout: int = 180) -> dict[str, Any]:
    done = cluster.plane.kubectl("wait", f"--for=condition={condition}", f"scanjob/{name}", "-n", namespace,
                                 f"--timeout={timeout}s", check=False, timeout=timeout + 30)
    job: dict[str, Any] = cluster.plane.scanjob(namespace, name)
    if done.returncode != 0:
        events = cluster.core().list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        shards = {k: (v.get("phase"), v.get("lastError")) for k, v in (job.get("status") or {}).get("shards", {}).items()}
        raise AssertionError(f"{name} never became {condition}: shards {shards}; events "
                             f"{[(e.reason, e.message) for e in events]}")
    return job


def _events(cluster: clusters.Cluster, namespace: str, name: str) -> dict[str, str]:
    items = cluster.core().list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return {e.reason: e.message for e in items}


def test_an_edge_inventory_finds_the_nodes_listener_and_judges_it_exposed_shielded_or_local_only_from_the_cloud(
        cluster: clusters.Cluster, operator: operators.Operator, listener: int) -> None:
    cluster.plane.kubectl("apply", "-f", "-", input=_job("edge-listeners", ALLOWED))
    job = _wait(cluster, ALLOWED, "edge-listeners", "Complete")
    status = job["status"]
    inventories = [s for s in status["plan"] if s.get("kind") == "inventory"]
    assert sorted((s["pool"], s["node"]) for s in inventories) == [("edge", "edge-1"), ("edge", "edge-2")]
    shard = next(s for s in inventories if s["node"] == NODE)
    assert shard["targets"] == [ADDRESS]

    # The inventory pod ran on edge-1 with the node's namespaces and saw the server's sockets and its pid.
    entry = status["shards"][shard["id"]]
    assert entry["node"] == NODE and entry["phase"] == "Succeeded"
    seen = {(item["address"], item["port"]): item for item in entry["listeners"]}
    for address, port in ((ADDRESS, EXPOSED), ("127.0.0.1", LOCAL), (ADDRESS, CLOUD_SHIELDED), ("0.0.0.0", SHIELDED)):
        assert seen[(address, port)]["pid"] == listener, seen[(address, port)]
    pods = cluster.core().list_namespaced_pod(ALLOWED, label_selector="portolan.dev/role=inventory").items
    assert {p.spec.node_name for p in pods} == {"edge-1", "edge-2"}
    assert all(p.spec.host_network and p.spec.host_pid for p in pods)

    judged = {(item["node"], item["port"]): item for item in status["inventory"]["listed"]}
    exposed = judged[(NODE, EXPOSED)]
    assert (exposed["exposure"], sorted(exposed["exposedFrom"]), exposed["allowed"]) == ("exposed", ["cloud", "edge"], False)
    # The rule on edge-1 drops CLOUD_SHIELDED from the cloud nodes only: exposed from edge, shielded from cloud.
    partly = judged[(NODE, CLOUD_SHIELDED)]
    assert (partly["exposure"], partly["exposedFrom"], partly["shieldedFrom"], partly["allowed"]) == (
        "exposed", ["edge"], ["cloud"], True)
    shielded = judged[(NODE, SHIELDED)]
    assert (shielded["exposure"], sorted(shielded["shieldedFrom"])) == ("shielded", ["cloud", "edge"])
    assert judged[(NODE, LOCAL)]["exposure"] == "local-only"
    assert status["inventory"]["nodes"] == 2 and status["inventory"]["listeners"] >= 4

    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["ListenersExposed"]["status"], conditions["ListenersExposed"]["reason"]) == ("True", "ExposedListeners")
    assert f"on {NODE} {ADDRESS}:{EXPOSED}/tcp from" in conditions["ListenersExposed"]["message"]
    # The exposed listener's port is outside allowedOpenPorts: a violation per vantage, naming the node listener.
    violations = {(v["pool"], v["port"]): v for v in status["expectations"]["violations"]}
    assert set(violations) == {("edge", EXPOSED), ("cloud", EXPOSED)}
    assert all(v["listener"].endswith(f"on {NODE}") for v in violations.values())
    assert conditions["ExpectationsMet"]["status"] == "False"
    events = _events(cluster, ALLOWED, "edge-listeners")
    assert f"{ADDRESS}:{EXPOSED}/tcp" in events["ListenersExposed"]
    scraped = operator.metrics()
    assert (f'portolan_scanjob_node_listeners{{exposure="exposed",namespace="{ALLOWED}",scanjob="edge-listeners"}} 2.0'
            in scraped)


def test_an_operator_without_allow_node_inventory_refuses_an_inventory_job_with_guardrail_violated(
        cluster: clusters.Cluster, refusing: operators.Operator) -> None:
    cluster.plane.kubectl("apply", "-f", "-", input=_job("no-host-namespaces", REFUSED))
    job = _wait(cluster, REFUSED, "no-host-namespaces", "Failed", timeout=60)
    status = job["status"]
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert (status["phase"], accepted["status"], accepted["reason"]) == ("Rejected", "False", "GuardrailViolated")
    assert "allowNodeInventory" in accepted["message"]
    assert "allowNodeInventory" in _events(cluster, REFUSED, "no-host-namespaces")["GuardrailViolated"]
    assert cluster.core().list_namespaced_pod(REFUSED).items == []

