"""The Helm chart: lint, schema-valid rendering, and an install that runs the operator as its own identity."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml

from harness import clusters

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/portolan"
HELM = clusters.BIN / "helm"
NAMESPACE = "scans-helm"
RELEASE = "portolan"

CUSTOM = {
    "operator": {"replicas": 1, "watchNamespaces": ["team-a"],
                 "settings": {"scannerEgressPolicy": True, "allowedCidrs": ["198.18.0.0/15"], "livenessPort": 8081}},
    "shard": {"namespaces": ["team-a", "team-b"]},
    "monitoring": {"serviceMonitor": True, "prometheusRule": True},
}


def _helm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        clusters.require_binaries()
        pytest.fail("helm is built by tools/k8s/build.sh")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=check, timeout=timeout)


def _values_file(tmp_path: pathlib.Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["defaults", "custom"])
def test_helm_lint_passes(values: dict[str, Any], tmp_path: pathlib.Path) -> None:
    done = _helm("lint", "--strict", str(CHART), "-f", _values_file(tmp_path, values))
    assert "0 chart(s) failed" in done.stdout


def test_values_that_break_the_schema_are_refused(tmp_path: pathlib.Path) -> None:
    bad = {"operator": {"replicas": 0, "settings": {"maxProbesPerJob": "lots"}}}
    done = _helm("template", "t", str(CHART), "-f", _values_file(tmp_path, bad), check=False)
    assert done.returncode != 0 and "replicas" in done.stderr and "maxProbesPerJob" in done.stderr


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["defaults", "custom"])
def test_every_rendered_object_validates_against_the_kubernetes_schemas(values: dict[str, Any], tmp_path: pathlib.Path) -> None:
    done = _helm("template", RELEASE, str(CHART), "-n", "portolan-system", "--include-crds",
                 "-f", _values_file(tmp_path, values))
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Role", "RoleBinding",
            "Service", "ConfigMap", "CustomResourceDefinition"} <= kinds
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith(("monitoring.coreos.com/", "kopf.dev/")):
            continue  # custom resources: their CRDs are not part of the Kubernetes schemas
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
        checked += 1
    assert checked >= 9
    if values:
        assert {"ServiceMonitor", "PrometheusRule"} <= kinds
        rules = next(o for o in objects if o["kind"] == "ClusterRole")["rules"]
        assert any("networkpolicies" in r["resources"] for r in rules)


def test_the_operator_role_grants_no_secrets_and_no_wildcards(tmp_path: pathlib.Path) -> None:
    done = _helm("template", RELEASE, str(CHART), "-f", _values_file(tmp_path, CUSTOM))
    for obj in yaml.safe_load_all(done.stdout):
        if obj and obj["kind"] in ("ClusterRole", "Role"):
            for rule in obj["rules"]:
                assert "secrets" not in rule["resources"] and "*" not in rule["resources"] and "*" not in rule["verbs"]


@pytest.mark.cluster
def test_helm_install_runs_the_operator_as_its_own_account_and_completes_a_scanjob(
    cluster: clusters.Cluster, targets: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    plane = cluster.plane
    plane.kubectl("create", "namespace", NAMESPACE, check=False)
    # Shard pods must pass Pod Security "restricted" to be admitted here.
    plane.kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    values = {
        "operator": {
            "replicas": 2, "watchNamespaces": [NAMESPACE],
            "command": [sys.executable, "-m", "portolan", "operator"],
            "settings": {"shardCommand": [sys.executable, "-m", "portolan", "shard"],
                         "reconcileIntervalSeconds": 1.0, "shardHeartbeatSeconds": 0.5,
                         "scannerEgressPolicy": True, "allowedCidrs": ["198.18.64.0/24"]},
        },
        "shard": {"namespaces": [NAMESPACE]},
    }
    kubeconfig = str(plane.admin_kubeconfig)
    _helm("install", RELEASE, str(CHART), "-n", "portolan-system", "--create-namespace", "--kubeconfig", kubeconfig,
          "-f", _values_file(tmp_path, values), "--wait", "--timeout", "180s")
    try:
        job = {
            "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": "via-helm", "namespace": NAMESPACE},
            "spec": {"targets": {"addresses": ["198.18.64.101", "198.18.64.102"]}, "ports": "22,80,81",
                     "sharding": {"shards": 2}, "timing": {"retries": 0}},
        }
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
        done = plane.kubectl("wait", "--for=condition=Complete", "scanjob/via-helm", "-n", NAMESPACE, "--timeout=180s",
                             check=False, timeout=210)
        got = json.loads(plane.kubectl("get", "scanjob", "via-helm", "-n", NAMESPACE, "-o", "json").stdout)
        logs = "".join((d / "log").read_text()[-2500:] for d in (plane.folder / "pods").glob("portolan-system_*")
                       if (d / "log").exists())
        assert done.returncode == 0, json.dumps(got.get("status"), indent=1)[:2000] + logs
        found = {(p["host"], p["port"]) for p in got["status"]["results"][0]["open"]}
        assert found == {("198.18.64.101", 22), ("198.18.64.101", 80), ("198.18.64.102", 80)}
        # The operator pods run with the chart's ServiceAccount, whose token is all they have.
        pods = cluster.core().list_namespaced_pod("portolan-system", label_selector="app.kubernetes.io/component=operator").items
        assert len(pods) == 2 and {p.spec.service_account_name for p in pods} == {f"{RELEASE}-operator"}
        for pod in pods:
            folder = next((plane.folder / "pods").glob(f"portolan-system_{pod.metadata.name}_*"))
            assert json.loads((folder / "kubeconfig").read_text())["users"][0]["name"] == f"{RELEASE}-operator"
        # The per-job egress NetworkPolicy exists and belongs to the job.
        policy = json.loads(plane.kubectl("get", "networkpolicy", "via-helm-scanner-egress", "-n", NAMESPACE, "-o", "json").stdout)
        assert policy["metadata"]["ownerReferences"][0]["name"] == "via-helm"
        assert [b["ipBlock"]["cidr"] for b in policy["spec"]["egress"][0]["to"]] == ["198.18.64.101/32", "198.18.64.102/32"]
        plane.kubectl("delete", "scanjob", "via-helm", "-n", NAMESPACE)
        cluster.wait("the egress policy to go with its job", lambda: plane.kubectl(
            "get", "networkpolicy", "via-helm-scanner-egress", "-n", NAMESPACE, check=False).returncode != 0, timeout=90)
    finally:
        _helm("uninstall", RELEASE, "-n", "portolan-system", "--kubeconfig", kubeconfig, "--wait", check=False)


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("get", "scanjobs", "yes"),
        ("patch", "scanjobs/status", "yes"),
        ("patch", "scanjobs", "no"),
        ("get", "secrets", "no"),
        ("list", "pods", "no"),
        ("create", "configmaps", "no"),
    ],
)
def test_the_shard_account_may_write_status_and_nothing_more(cluster: clusters.Cluster, tmp_path: pathlib.Path,
                                                             verb: str, resource: str, allowed: str) -> None:
    plane = cluster.plane
    plane.kubectl("create", "namespace", "rbac-check", check=False)
    values = {"operator": {"replicas": 1}, "shard": {"namespaces": ["rbac-check"]}}
    rendered = _helm("template", "rbac", str(CHART), "-f", _values_file(tmp_path, values), "--show-only",
                     "templates/serviceaccounts.yaml").stdout
    plane.kubectl("apply", "-f", "-", input=rendered)
    subject = "system:serviceaccount:rbac-check:portolan-shard"
    kind, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    answer = plane.kubectl("auth", "can-i", verb, kind, *extra, "-n", "rbac-check", f"--as={subject}", check=False)
    assert answer.stdout.strip() == allowed
    if resource == "secrets":
        token = plane.kubectl("create", "token", "portolan-shard", "-n", "rbac-check").stdout.strip()
        denied = subprocess.run([str(clusters.BIN / "kubectl"), "--server", plane.server, "--certificate-authority",
                                 str(plane.pki.ca.cert), "--token", token, "get", "secrets", "-n", "rbac-check"],
                                capture_output=True, text=True, timeout=60)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr


@pytest.mark.parametrize(
    ("verb", "namespace", "allowed"),
    [("get", "lease-home", "yes"), ("create", "lease-home", "yes"), ("update", "lease-home", "yes"),
     ("delete", "lease-home", "no"), ("list", "lease-home", "no"), ("get", "lease-elsewhere", "no")],
)
def test_replicas_may_hold_a_lease_in_their_own_namespace_only(cluster: clusters.Cluster, tmp_path: pathlib.Path,
                                                                verb: str, namespace: str, allowed: str) -> None:
    plane = cluster.plane
    for name in ("lease-home", "lease-elsewhere"):
        plane.kubectl("create", "namespace", name, check=False)
    rendered = _helm("template", "lease", str(CHART), "-n", "lease-home", "-f",
                     _values_file(tmp_path, {"operator": {"replicas": 2}}), "--show-only", "templates/rbac.yaml").stdout
    plane.kubectl("apply", "-n", "lease-home", "-f", "-", input=rendered)
    account = next(o for o in yaml.safe_load_all(rendered) if o and o["kind"] == "RoleBinding")["subjects"][0]["name"]
    subject = f"system:serviceaccount:lease-home:{account}"
    answer = plane.kubectl("auth", "can-i", verb, "leases.coordination.k8s.io", "-n", namespace, f"--as={subject}",
                           check=False)
    assert answer.stdout.strip() == allowed


def test_a_single_replica_gets_no_lease_role(tmp_path: pathlib.Path) -> None:
    done = _helm("template", RELEASE, str(CHART), "-f", _values_file(tmp_path, {"operator": {"replicas": 1}}),
                 "--show-only", "templates/rbac.yaml")
    assert "leases" not in done.stdout
