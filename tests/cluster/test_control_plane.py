"""Smoke tests of the real control plane and the node agent: what operators depend on."""

from __future__ import annotations

import ipaddress
import json
import pathlib
import uuid

import kubernetes
import pytest

from harness import clusters

pytestmark = pytest.mark.cluster

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.portolan.dev}
spec:
  group: smoke.portolan.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
"""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _pod(name: str, command: list[str], **spec: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "portolan", "command": command}], **spec}}


def _phase(cluster: clusters.Cluster, name: str, namespace: str = "default") -> str | None:
    try:
        return cluster.core().read_namespaced_pod(name, namespace).status.phase  # type: ignore[no-any-return]
    except kubernetes.client.ApiException:
        return None


def test_a_crd_and_a_custom_resource_apply_with_kubectl_and_the_schema_rejects_a_bad_one(cluster: clusters.Cluster) -> None:
    plane = cluster.plane
    plane.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    plane.kubectl("wait", "--for=condition=Established", "crd/widgets.smoke.portolan.dev", "--timeout=30s")
    good = plane.kubectl("apply", "-f", "-", input="apiVersion: smoke.portolan.dev/v1\nkind: Widget\nmetadata: {name: good}\nspec: {size: 3}\n")
    assert "widget.smoke.portolan.dev/good created" in good.stdout
    bad = plane.kubectl("apply", "-f", "-", check=False, input="apiVersion: smoke.portolan.dev/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 70000}\n")
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr and "less than or equal to 10" in bad.stderr


@pytest.mark.parametrize("host_network", [False, True])
def test_an_edge_pod_is_scheduled_onto_an_edge_node_and_runs_with_its_own_address_or_the_nodes(
        cluster: clusters.Cluster, tmp_path: pathlib.Path, host_network: bool) -> None:
    name = _name("edge")
    out = tmp_path / "where.txt"
    pod = _pod(name, ["sh", "-c", f"ip -o -4 addr show dev eth0 > {out}; echo $NODE >> {out}"],
               nodeSelector={"portolan.dev/pool": "edge"}, hostNetwork=host_network,
               tolerations=[{"key": "portolan.dev/edge", "operator": "Exists", "effect": "NoSchedule"}])
    pod["spec"]["containers"][0]["env"] = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]  # type: ignore[index]
    cluster.core().create_namespaced_pod("default", pod)
    cluster.wait("the edge pod to succeed", lambda: _phase(cluster, name) == "Succeeded")
    read = cluster.core().read_namespaced_pod(name, "default")
    node = read.spec.node_name
    assert node.startswith("edge-")
    text = out.read_text()
    assert text.strip().endswith(node)
    if host_network:  # the node's own namespace and address
        assert f"inet {cluster.agent.nodes[node].address}/24" in text
        assert read.status.pod_ip == cluster.agent.nodes[node].address
    else:  # its own namespace, an address from the node's podCIDR, reported in status.podIP
        pod_cidr = cluster.core().read_node(node).spec.pod_cidr
        assert f"inet {read.status.pod_ip}/32" in text
        assert ipaddress.ip_address(read.status.pod_ip) in ipaddress.ip_network(pod_cidr)


def test_a_pod_without_a_role_is_denied_by_rbac(cluster: clusters.Cluster) -> None:
    core = cluster.core()
    account = _name("norole")
    core.create_namespaced_service_account("default", {"metadata": {"name": account}})
    name = _name("denied")
    kubectl = str(clusters.BIN / "kubectl")
    core.create_namespaced_pod("default", _pod(name, [kubectl, "get", "secrets"], serviceAccountName=account))
    cluster.wait("the pod to fail", lambda: _phase(cluster, name) == "Failed")
    status = core.read_namespaced_pod(name, "default").status
    assert status.container_statuses[0].state.terminated.exit_code != 0
    pod_dirs = list((cluster.plane.folder / "pods").glob(f"default_{name}_*"))
    log = (pod_dirs[0] / "log").read_text()
    assert "Forbidden" in log and f"system:serviceaccount:default:{account}" in log


def test_a_pod_with_a_role_may_do_what_the_role_allows(cluster: clusters.Cluster) -> None:
    core = cluster.core()
    account = _name("reader")
    core.create_namespaced_service_account("default", {"metadata": {"name": account}})
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role("default", {"metadata": {"name": account}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding("default", {"metadata": {"name": account}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account}, "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "default"}]})
    name = _name("allowed")
    kubectl = str(clusters.BIN / "kubectl")
    core.create_namespaced_pod("default", _pod(name, [kubectl, "get", "configmaps", "-o", "name"], serviceAccountName=account))
    cluster.wait("the pod to succeed", lambda: _phase(cluster, name) == "Succeeded")


def test_deleting_an_owner_garbage_collects_its_pods(cluster: clusters.Cluster) -> None:
    core = cluster.core()
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": _name("owner")}})
    name = _name("owned")
    pod = _pod(name, ["sleep", "300"])
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid}]  # type: ignore[index]
    core.create_namespaced_pod("default", pod)
    cluster.wait("the owned pod to run", lambda: _phase(cluster, name) == "Running")
    core.delete_namespaced_config_map(owner.metadata.name, "default", propagation_policy="Background")
    cluster.wait("the owned pod to be garbage-collected", lambda: _phase(cluster, name) is None, timeout=90)


def test_the_control_plane_reports_the_versions_it_was_built_as(cluster: clusters.Cluster) -> None:
    version = json.loads(cluster.plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"
    assert version["clientVersion"]["gitVersion"] == "v1.37.2"
