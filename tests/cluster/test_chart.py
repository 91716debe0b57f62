"""The Helm chart: lint, schema-valid rendering, and an install that runs the operator as its own identity."""

from __future__ import annotations

import json
import pathlib
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
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
                 "settings": {"scannerEgressPolicy": True, "allowedCidrs": ["198.18.0.0/15"], "livenessPort": 8081,
                              "auditNamespaces": ["team-a"]}},
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
        assert {"ServiceMonitor", "PrometheusRule", "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"} <= kinds  # the audit namespaces' probe policy too
        rules = next(o for o in objects if o["kind"] == "ClusterRole"
                     and o["metadata"]["name"] == f"{RELEASE}-operator")["rules"]
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
        ("get", "scanshards", "yes"),
        ("patch", "scanshards/status", "yes"),
        ("patch", "scanshards", "no"),
        ("patch", "scanjobs/status", "no"),
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


# -- ReachabilityAudits: the operator's verbs for them, and what a probe pod may write ----------------------

OPERATOR_RULES = {  # the operator's ClusterRole, rule by rule: growing it must change this table
    ("portolan.dev", "scanjobs"): ["get", "list", "watch", "patch", "create", "delete"],
    ("portolan.dev", "scanjobs/status"): ["get", "patch"],
    ("portolan.dev", "scanshards"): ["get", "list", "create", "patch"],
    ("portolan.dev", "scanshards/status"): ["get", "patch"],
    ("portolan.dev", "scanschedules"): ["get", "list", "watch", "patch"],
    ("portolan.dev", "scanschedules/status"): ["get", "patch"],
    ("portolan.dev", "reachabilityaudits"): ["get", "list", "watch", "patch"],
    ("portolan.dev", "reachabilityaudits/status"): ["get", "patch"],
    ("", "pods"): ["get", "list", "create", "delete"],
    ("networking.k8s.io", "networkpolicies"): ["list"],
    ("", "configmaps"): ["get", "create", "update"],
    ("", "events"): ["create"],
    ("events.k8s.io", "events"): ["create"],
    ("", "services"): ["list"],
    ("", "nodes"): ["get", "list"],
    ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
    ("", "namespaces"): ["list", "watch"],
}


def _rules(rendered: str, kind: str, name: str) -> dict[tuple[str, str], list[str]]:
    role = next(o for o in yaml.safe_load_all(rendered) if o and o["kind"] == kind and o["metadata"]["name"] == name)
    found: dict[tuple[str, str], list[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), []).extend(rule["verbs"])
    return found


def test_the_operator_role_is_exactly_the_verbs_its_kinds_need_and_the_probe_role_one_patch(
        tmp_path: pathlib.Path) -> None:
    values = {"operator": {"replicas": 1, "settings": {"auditNamespaces": ["shop"]}}}
    rendered = _helm("template", RELEASE, str(CHART), "-f", _values_file(tmp_path, values)).stdout
    assert _rules(rendered, "ClusterRole", f"{RELEASE}-operator") == OPERATOR_RULES
    assert _rules(rendered, "ClusterRole", f"{RELEASE}-probe") == {
        ("portolan.dev", "reachabilityaudits/status"): ["patch"]}
    binding = next(o for o in yaml.safe_load_all(rendered) if o and o["kind"] == "ClusterRoleBinding"
                   and o["metadata"]["name"] == f"{RELEASE}-probe")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "portolan-probe", "namespace": "shop"}]
    without = _helm("template", RELEASE, str(CHART), "-f", _values_file(tmp_path, {"operator": {"replicas": 1}})).stdout
    kinds = {(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(without) if o}
    assert not {k for k in kinds if k[1].endswith("-probe") or k[0].startswith("ValidatingAdmission")}  # no audits


def test_the_probe_policy_guards_every_status_field_but_probes() -> None:
    from portolan.models import audits

    fields = {f.alias or name for name, f in audits.ReachabilityAuditStatus.model_fields.items()}
    template = (CHART / "templates/probe-rbac.yaml").read_text()
    guarded = set(template.split('list "run"', 1)[1].split("}}", 1)[0].replace('"', " ").split()) | {"run"}
    assert guarded == fields - {"probes"}  # a status field added later must be added there too


CHECK = "audit-rbac"
AUDIT = "rbac-probe-check"


@pytest.fixture(scope="module")
def audit_rbac(cluster: clusters.Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The chart's operator and probe RBAC for one audit namespace, an audit placed two probe pods, their tokens."""
    plane = cluster.plane
    folder = tmp_path_factory.mktemp("audit-rbac")
    plane.kubectl("apply", "-f", str(ROOT / "crds"))
    plane.kubectl("wait", "--for=condition=Established", "crd/reachabilityaudits.portolan.dev", "--timeout=30s")
    plane.kubectl("create", "namespace", CHECK, check=False)
    values = {"operator": {"replicas": 1, "settings": {"auditNamespaces": [CHECK]}}, "shard": {"namespaces": [CHECK]}}
    for template in ("serviceaccounts.yaml", "rbac.yaml", "probe-rbac.yaml"):
        rendered = _helm("template", "auditrbac", str(CHART), "-n", CHECK, "-f", _values_file(folder, values),
                         "--show-only", f"templates/{template}").stdout
        applied = plane.kubectl("apply", "-n", CHECK, "-f", "-", input=rendered, check=False)
        assert applied.returncode == 0, applied.stderr
    for pod in ("probe-a", "probe-b", "bystander"):  # never scheduled: a token needs the pod object only
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": CHECK},
            "spec": {"serviceAccountName": "portolan-probe", "automountServiceAccountToken": False,
                     "nodeSelector": {"portolan.dev/nowhere": "true"},
                     "containers": [{"name": "c", "image": "portolan-none:0"}]}}))
    audit = {"apiVersion": "portolan.dev/v1alpha1", "kind": "ReachabilityAudit", "metadata": {"name": AUDIT},
             "spec": {"sources": [{"name": "a", "namespace": CHECK, "podLabels": {"app": "a"}},
                                  {"name": "b", "namespace": CHECK, "podLabels": {"app": "b"}}],
                      "destinations": [{"name": "d", "cidrs": ["198.18.64.1/32"]}], "ports": [{"port": 80}]}}
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(audit))
    status = {"status": {"phase": "Running", "sources": {"a": {"namespace": CHECK, "pod": "probe-a", "pairs": 1},
                                                         "b": {"namespace": CHECK, "pod": "probe-b", "pairs": 1}}}}
    plane.kubectl("patch", "reachabilityaudit", AUDIT, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    tokens = {pod: plane.kubectl("create", "token", "portolan-probe", "-n", CHECK, "--bound-object-kind=Pod",
                                 f"--bound-object-name={pod}").stdout.strip() for pod in ("probe-a", "bystander")}
    tokens["unbound"] = plane.kubectl("create", "token", "portolan-probe", "-n", CHECK).stdout.strip()
    # the admission policy is live once it refuses a foreign write (until then every write would pass)
    cluster.wait("the probe admission policy to be enforced", lambda: _as_probe(
        cluster, tokens["probe-a"], "patch", {"probes": {"b": {"verdicts": "o"}}})[0] == 403, 60)
    return tokens


def _as_probe(cluster: clusters.Cluster, token: str, verb: str,
              status: dict[str, Any] | None = None) -> tuple[int, str]:
    """(HTTP status, body) of a GET or a merge PATCH of the audit's status, as a probe pod sends it (no GET first)."""
    plane = cluster.plane
    path = f"/apis/portolan.dev/v1alpha1/reachabilityaudits/{AUDIT}" + ("/status" if verb == "patch" else "")
    request = urllib.request.Request(
        plane.server + path, method=verb.upper(),
        data=json.dumps({"status": status}).encode() if verb == "patch" else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"})
    context = ssl.create_default_context(cafile=str(plane.pki.ca.cert))
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("who", "status", "refusal"),
    [
        ("probe-a", {"probes": {"a": {"run": 1, "phase": "Done", "verdicts": "o"}}}, None),
        ("probe-a", {"probes": {"b": {"run": 1, "phase": "Done", "verdicts": "s"}}}, "of its own source only"),
        ("probe-a", {"phase": "Complete"}, "may write status.probes only"),
        ("probe-a", {"sources": {"a": {"namespace": CHECK, "pod": "bystander"}}}, "may write status.probes only"),
        ("probe-a", {"probes": {"a": {"verdicts": "o"}}, "totals": {"pairs": 9}}, "may write status.probes only"),
        ("bystander", {"probes": {"a": {"run": 1, "phase": "Done", "verdicts": "s"}}}, "bystander is none of them"),
        ("unbound", {"probes": {"a": {"run": 1, "phase": "Done", "verdicts": "s"}}}, "bound to no pod"),
    ],
    ids=["own-source", "other-source", "phase", "sources", "totals", "pod-not-placed", "unbound-token"],
)
def test_a_probe_pod_may_write_its_own_sources_verdicts_and_nothing_else(
        cluster: clusters.Cluster, audit_rbac: dict[str, str], who: str, status: dict[str, Any],
        refusal: str | None) -> None:
    code, body = _as_probe(cluster, audit_rbac[who], "patch", status)
    if refusal is None:
        assert code == 200, body
        assert json.loads(body)["status"]["probes"]["a"]["verdicts"] == "o"
    else:
        assert code == 403 and refusal in body, body
    code, body = _as_probe(cluster, audit_rbac[who], "get")  # not even its own audit: its results are not the pod's
    assert code == 403, body


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("account", "verb", "resource", "allowed"),
    [
        ("operator", "watch", "reachabilityaudits.portolan.dev", "yes"),
        ("operator", "patch", "reachabilityaudits.portolan.dev/status", "yes"),
        ("operator", "create", "pods", "yes"),
        ("operator", "delete", "pods", "yes"),
        ("operator", "list", "networkpolicies.networking.k8s.io", "yes"),
        ("operator", "create", "configmaps", "yes"),
        ("operator", "update", "configmaps", "yes"),
        ("operator", "create", "reachabilityaudits.portolan.dev", "no"),
        ("operator", "delete", "reachabilityaudits.portolan.dev", "no"),
        ("operator", "update", "reachabilityaudits.portolan.dev/status", "no"),
        ("operator", "delete", "configmaps", "no"),
        ("operator", "update", "pods", "no"),
        ("operator", "create", "pods/exec", "no"),
        ("operator", "get", "pods/log", "no"),
        ("operator", "create", "networkpolicies.networking.k8s.io", "no"),
        ("operator", "create", "rolebindings.rbac.authorization.k8s.io", "no"),
        ("probe", "patch", "reachabilityaudits.portolan.dev/status", "yes"),
        ("probe", "get", "reachabilityaudits.portolan.dev/status", "no"),
        ("probe", "get", "reachabilityaudits.portolan.dev", "no"),
        ("probe", "patch", "reachabilityaudits.portolan.dev", "no"),
        ("probe", "list", "pods", "no"),
        ("probe", "get", "configmaps", "no"),
        ("probe", "patch", "scanjobs.portolan.dev/status", "no"),
        ("probe", "get", "secrets", "no"),
    ],
)
def test_the_operator_and_probe_accounts_may_do_what_audits_need_and_no_more(
        cluster: clusters.Cluster, audit_rbac: dict[str, str], account: str, verb: str, resource: str,
        allowed: str) -> None:
    subject = f"system:serviceaccount:{CHECK}:" + ("auditrbac-operator" if account == "operator" else "portolan-probe")
    kind, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []  # pods/exec alone would read as a pod named exec
    answer = cluster.plane.kubectl("auth", "can-i", verb, kind, *extra, "-n", CHECK, f"--as={subject}", check=False)
    assert answer.stdout.strip() == allowed, answer.stderr
