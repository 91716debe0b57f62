"""ReachabilityAudits end to end: the real operator, probe pods in the pod network, the test bed's enforcer.

A shop/db-like pair of namespaces: web (shop) may reach pg (db) on its named port
``pg``; everything else into db is denied; shop's egress to the test hosts outside
the cluster is an ipBlock with an except.  The enforcer's mode per node plays a
CNI that enforces, ignores (the common real failure) or rejects with resets.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from harness import clusters, podworld

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "portolan.dev", "v1alpha1", "reachabilityaudits"
STATUS_BUDGET = 16 * 1024  # the smallest the settings allow: a few hundred ports' matrix outgrows it


def probe_rbac(release: str, namespaces: list[str]) -> str:
    """The chart's probe accounts, their role and the admission policy on what a probe pod may write."""
    values = json.dumps({"settings": {"auditNamespaces": namespaces}})
    rendered = [subprocess.run([str(clusters.BIN / "helm"), "template", release, str(ROOT / "charts/portolan"),
                                "--set-json", f"operator={values}",
                                "--show-only", f"templates/{template}"],
                               capture_output=True, text=True, check=True, timeout=120).stdout
                for template in ("serviceaccounts.yaml", "probe-rbac.yaml")]
    accounts = [o for o in yaml.safe_load_all(rendered[0]) if o and o["metadata"]["name"] == "portolan-probe"]
    return yaml.safe_dump_all(accounts) + "---\n" + rendered[1]


class Operator:
    """The operator as its own process, allowed to place audit pods in the given namespaces."""

    def __init__(self, cluster: clusters.Cluster, folder: pathlib.Path, namespaces: list[str]) -> None:
        settings = folder / "settings.yaml"
        settings.write_text(yaml.safe_dump({
            "shardCommand": [sys.executable, "-m", "portolan", "shard"], "reconcileIntervalSeconds": 1.0,
            "metricsPort": 0, "peering": None, "auditNamespaces": namespaces,
            "allowedCidrs": ["198.18.64.0/24"], "statusByteBudget": STATUS_BUDGET,
        }))
        env = dict(os.environ, KUBECONFIG=str(cluster.plane.admin_kubeconfig))
        with open(folder / "operator.log", "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "portolan", "operator", "--standalone",
                                             "--settings", str(settings)], env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        self.log = folder / "operator.log"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def shop(cluster: clusters.Cluster, targets: dict[str, Any],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """shop/web and db/pg (with its named port) on different nodes, their policies, probe RBAC and an operator."""
    plane = cluster.plane
    plane.kubectl("apply", "-f", str(ROOT / "crds"))
    plane.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=30s")
    suffix = uuid.uuid4().hex[:5]
    shop_ns, db_ns = f"shop-{suffix}", f"db-{suffix}"
    podworld.ensure_namespace(cluster, shop_ns, {"team": "shop"})
    podworld.ensure_namespace(cluster, db_ns, {"team": "db"})
    plane.kubectl("apply", "-f", "-", input=probe_rbac(f"audit-{suffix}", [shop_ns, db_ns]))
    ips = podworld.create(cluster, shop_ns, [podworld.server_pod("web", {"app": "web"}, "cloud-1", [("tcp", 8080)])])
    ips |= podworld.create(cluster, db_ns, [podworld.server_pod("pg", {"app": "pg"}, "cloud-2", [("tcp", 5432)],
                                                                named={"pg": ("tcp", 5432)})])
    networking = kubernetes.client.NetworkingV1Api(cluster.api)
    for namespace, policy in (
        (db_ns, {"metadata": {"name": "deny-all"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        (db_ns, {"metadata": {"name": "pg-from-web"}, "spec": {
            "podSelector": {"matchLabels": {"app": "pg"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "shop"}},
                                   "podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "pg"}]}]}}),
        (shop_ns, {"metadata": {"name": "egress-outside"}, "spec": {
            "podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "198.18.64.0/24", "except": ["198.18.64.101/32"]}}]},
                       {"to": [{"namespaceSelector": {}}]}]}}),
    ):
        networking.create_namespaced_network_policy(namespace, {"apiVersion": "networking.k8s.io/v1",
                                                                "kind": "NetworkPolicy", **policy})
    cluster.agent.enforcer.sync()
    operator = Operator(cluster, tmp_path_factory.mktemp("audit-operator"), [shop_ns, db_ns])
    try:
        yield {"shop": shop_ns, "db": db_ns, "ip": ips, "operator": operator}
    finally:
        custom = kubernetes.client.CustomObjectsApi(cluster.api)
        for audit in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:  # before the operator stops
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, audit["metadata"]["name"])
        cluster.wait("the audits to go", lambda: not custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL)["items"], 60)
        operator.stop()
        for node in cluster.agent.nodes:
            cluster.agent.enforcer.set_mode(node, "enforce")
        podworld.delete_namespace(cluster, shop_ns)
        podworld.delete_namespace(cluster, db_ns)


def _audit(cluster: clusters.Cluster, world: dict[str, Any], name: str, **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ReachabilityAudit", "metadata": {"name": name},
            "spec": {"sources": [{"name": "web", "namespace": world["shop"], "fromPodsMatching": {"app": "web"}},
                                 {"name": "stranger", "namespace": world["shop"], "podLabels": {"app": "stranger"}}],
                     "destinations": [{"name": "pg", "namespace": world["db"], "podSelector": {"app": "pg"}}],
                     "ports": [{"port": "pg"}, {"port": 22}], "convergenceSeconds": 2, "probeTimeoutMs": 400,
                     **spec}}
    custom = kubernetes.client.CustomObjectsApi(cluster.api)
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    finished: dict[str, Any] = {}

    def done() -> bool:
        current = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        finished.update(current)
        return (current.get("status") or {}).get("phase") in ("Complete", "Failed", "Rejected")

    try:
        cluster.wait(f"audit {name} to finish", done, 120)
    except AssertionError:
        print(world["operator"].log.read_text()[-4000:])
        raise
    if finished["status"]["phase"] == "Failed":  # say why in the test's output
        for log in sorted(pathlib.Path(cluster.agent.folder, "pods").glob(f"*_{name}-*/log")):
            print(f"--- {log.parent.name}\n{log.read_text()[-3000:]}")
    return finished


def _conditions(audit: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in audit["status"]["conditions"]}


def _mismatches(audit: dict[str, Any]) -> set[tuple[str, int, str]]:
    return {(m["source"], m["port"], m["kind"]) for m in audit["status"].get("mismatches", [])}


def test_an_enforcing_cluster_is_reachability_as_expected(cluster: clusters.Cluster, shop: dict[str, Any]) -> None:
    audit = _audit(cluster, shop, "enforced")
    assert audit["status"]["phase"] == "Complete", audit["status"]
    assert _conditions(audit)["ReachabilityAsExpected"] == ("True", "AsExpected")
    assert audit["status"]["totals"]["pairs"] == 4 and audit["status"]["totals"]["agreeing"] == 4
    assert audit["status"]["matrix"]["5432/TCP"] == ["web .", "stranger x"]
    cluster.wait("the audit's pods to go", lambda: not cluster.core().list_pod_for_all_namespaces(
        label_selector="portolan.dev/audit=enforced").items, 30)


def test_a_cni_that_ignores_policies_shows_exactly_the_denied_pairs_as_unexpectedly_reachable(
        cluster: clusters.Cluster, shop: dict[str, Any]) -> None:
    for node in cluster.agent.nodes:
        cluster.agent.enforcer.set_mode(node, "ignore")
    try:
        audit = _audit(cluster, shop, "ignored")
    finally:
        for node in cluster.agent.nodes:
            cluster.agent.enforcer.set_mode(node, "enforce")
    assert _conditions(audit)["ReachabilityAsExpected"] == ("False", "UnexpectedlyReachable")
    assert _mismatches(audit) == {("web", 22, "UnexpectedlyReachable"), ("stranger", 22, "UnexpectedlyReachable"),
                                  ("stranger", 5432, "UnexpectedlyReachable")}
    decided = {m["decidedBy"] for m in audit["status"]["mismatches"]}
    assert all(f"{shop['db']}/deny-all" in d for d in decided)


def test_canaries_give_correct_verdicts_where_an_enforcer_rejects_with_resets(
        cluster: clusters.Cluster, shop: dict[str, Any]) -> None:
    for node in cluster.agent.nodes:
        cluster.agent.enforcer.set_mode(node, "reject")
    try:
        audit = _audit(cluster, shop, "rejected", canaries=True)
    finally:
        for node in cluster.agent.nodes:
            cluster.agent.enforcer.set_mode(node, "enforce")
    assert audit["status"]["phase"] == "Complete", audit["status"]
    canary_column = audit["status"]["matrixColumns"].index(f"{shop['db']}/canary-pg")
    for rows in audit["status"]["matrix"].values():
        for row in rows:
            assert row.split(" ", 1)[1][canary_column] in ".x"  # every canary verdict agrees with the policies
    wrong = {(m["source"], m["address"], m["port"]) for m in audit["status"]["mismatches"]}
    pg = shop["ip"]["pg"]  # a reset from the real pod looks like an open path: only the canary tells
    assert wrong == {("web", pg, 22), ("stranger", pg, 22), ("stranger", pg, 5432)}
    assert audit["status"]["totals"]["byCanary"] == 4


def test_a_canary_is_never_ready_so_no_service_sends_it_traffic(cluster: clusters.Cluster, shop: dict[str, Any]) -> None:
    core = cluster.core()
    core.create_namespaced_service(shop["db"], {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pg"},
                                                "spec": {"selector": {"app": "pg"}, "ports": [{"port": 5432}]}})
    seen: list[list[str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(AssertionError):
                seen.append(podworld.wait_ready_endpoints(cluster, shop["db"], "pg", 1, timeout=1))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        audit = _audit(cluster, shop, "canary-ready", canaries=True)
    finally:
        stop.set()
        watcher.join(5)
    assert audit["status"]["phase"] == "Complete"
    assert seen and all(found == [shop["ip"]["pg"]] for found in seen)  # only pg itself, never the canary


def test_egress_to_an_ip_block_with_an_except_is_verified_both_ways(cluster: clusters.Cluster, shop: dict[str, Any]) -> None:
    audit = _audit(cluster, shop, "egress", sources=[{"name": "web", "namespace": shop["shop"],
                                                      "fromPodsMatching": {"app": "web"}}],
                   destinations=[{"name": "outside", "cidrs": ["198.18.64.101/32", "198.18.64.102/32"]}],
                   ports=[{"port": 80}])
    assert _conditions(audit)["ReachabilityAsExpected"] == ("True", "AsExpected"), audit["status"]
    assert audit["status"]["matrix"]["80/TCP"] == ["web x."]  # .101 is excepted (blocked), .102 reachable


def test_a_policy_the_cni_applies_late_converges_instead_of_being_reported(
        cluster: clusters.Cluster, shop: dict[str, Any]) -> None:
    for node in cluster.agent.nodes:
        cluster.agent.enforcer.set_mode(node, "ignore")
    def lag() -> None:  # the CNI catches up 2.5 s after the probes started
        probing = "portolan.dev/audit=converging,portolan.dev/role=probe"
        cluster.wait("the probe pods to run", lambda: any(
            p.status.phase == "Running" for p in cluster.core().list_pod_for_all_namespaces(label_selector=probing).items), 60)
        threading.Event().wait(2.5)
        for node in cluster.agent.nodes:
            cluster.agent.enforcer.set_mode(node, "enforce")

    catching_up = threading.Thread(target=lag, daemon=True)
    catching_up.start()
    try:
        audit = _audit(cluster, shop, "converging", convergenceSeconds=30)
    finally:
        catching_up.join(60)
        for node in cluster.agent.nodes:
            cluster.agent.enforcer.set_mode(node, "enforce")
    assert _conditions(audit)["ReachabilityAsExpected"] == ("True", "AsExpected"), audit["status"].get("mismatches")
    assert audit["status"]["probes"]["stranger"]["rounds"] >= 2  # it saw the lag, probed again, and agreed


def test_an_audit_outside_the_allowed_namespaces_is_rejected_with_an_event(cluster: clusters.Cluster,
                                                                          shop: dict[str, Any]) -> None:
    audit = _audit(cluster, shop, "outside", sources=[{"name": "x", "namespace": "kube-system", "podLabels": {"a": "b"}}])
    assert audit["status"]["phase"] == "Rejected"
    assert _conditions(audit)["Accepted"] == ("False", "GuardrailViolated")
    events = cluster.core().list_namespaced_event("default", field_selector="involvedObject.name=outside").items
    assert [e.reason for e in events] == ["GuardrailViolated"]


def test_a_matrix_too_big_for_the_status_spills_into_a_configmap_and_audit_show_renders_every_pair(
        cluster: clusters.Cluster, shop: dict[str, Any]) -> None:
    sources = [{"name": "web", "namespace": shop["shop"], "fromPodsMatching": {"app": "web"}},
               {"name": "stranger", "namespace": shop["shop"], "podLabels": {"app": "stranger"}},
               {"name": "third", "namespace": shop["shop"], "podLabels": {"app": "third"}}]
    destinations = [{"name": "pg", "namespace": shop["db"], "podSelector": {"app": "pg"}},
                    {"name": "web-pods", "namespace": shop["shop"], "podSelector": {"app": "web"}}]
    audit = _audit(cluster, shop, "spilled", sources=sources, destinations=destinations,
                   ports=[{"port": start, "endPort": start + 59} for start in range(8000, 8420, 60)])  # 64 a range at most
    status = audit["status"]
    assert status["phase"] == "Complete", status.get("conditions")
    assert status["totals"]["pairs"] == 3 * 2 * 420 == status["totals"]["agreeing"]  # 840 a source: packed pairs
    assert status["matrixConfigMap"] == f"{shop['shop']}/spilled-matrix"
    assert status["matrixOmitted"] == 420 - len(status["matrix"]) > 0
    assert len(json.dumps(status, separators=(",", ":"))) <= STATUS_BUDGET
    configmap = cluster.core().read_namespaced_config_map("spilled-matrix", shop["shop"])
    assert configmap.metadata.owner_references[0].uid == audit["metadata"]["uid"]
    env = dict(os.environ, KUBECONFIG=str(cluster.plane.admin_kubeconfig))
    shown = subprocess.run([sys.executable, "-m", "portolan", "audit", "show", "spilled"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    tables = re.findall(r"^(\d+)/TCP ", shown.stdout, re.MULTILINE)
    assert [int(port) for port in tables] == list(range(8000, 8420))
    rows = re.findall(r"^  (web|stranger|third) +(\S+)$", shown.stdout, re.MULTILINE)
    assert len(rows) == 3 * 420
    cells = "".join(found for _, found in rows)
    assert len(cells) == 2520 and set(cells) == {".", "x"}  # pg's ports denied, web's open: every pair as expected
    assert "more port table" not in shown.stdout
