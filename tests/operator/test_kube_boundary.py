"""The Kubernetes boundary without an API server: error mapping, pods as dicts, the fake's finalizers.

The real calls run against the control plane in tests/cluster; these check the seam
itself: one mapping of the client's errors, and the dict shape the controllers read.
"""

from __future__ import annotations

import json
import types
from typing import Any

import kubernetes
import pytest
import urllib3

from portolan import errors
from portolan.controller.scanjobs import reconciling, runs
from portolan.kube import builders, clients, fakes


def test_an_api_error_becomes_a_kube_error_with_its_status_and_what_was_being_done() -> None:
    with pytest.raises(errors.KubeError) as raised, clients._mapped("reading ScanJob team/audit"):
        raise kubernetes.client.ApiException(status=403, reason="Forbidden")
    assert raised.value.status == 403 and str(raised.value) == "reading ScanJob team/audit: 403 Forbidden"


def test_a_tolerated_status_is_not_an_error() -> None:
    with clients._mapped("creating pod p", tolerate=(409,)):
        raise kubernetes.client.ApiException(status=409, reason="Conflict")


def test_an_unreachable_api_server_is_a_kube_error_without_a_status() -> None:
    with pytest.raises(errors.KubeError) as raised, clients._mapped("reading ScanJob team/audit"):
        raise urllib3.exceptions.MaxRetryError(None, "/apis", reason=ConnectionRefusedError(111, "refused"))
    assert raised.value.status is None and "cannot be reached (MaxRetryError)" in str(raised.value)


def test_a_listed_pod_crosses_the_boundary_as_the_apis_json_that_pod_view_reads() -> None:
    pod = {"metadata": {"name": "audit-default-0-2", "namespace": "team", "deletionTimestamp": "2026-11-22T00:00:00Z",
                        "labels": {builders.LABEL_JOB: "audit", builders.LABEL_SHARD: "default-0",
                                   builders.LABEL_ATTEMPT: "2"}},
           "spec": {"nodeName": "edge-1", "containers": [{"name": "shard"}]},
           "status": {"phase": "Failed", "containerStatuses": [
               {"name": "shard", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}}
    asked: dict[str, Any] = {}

    def list_call(namespace: str, **options: Any) -> Any:  # the client's list method, raw reply asked for
        asked.update(options, namespace=namespace)
        return types.SimpleNamespace(data=json.dumps({"kind": "PodList", "items": [pod]}).encode())

    [plain] = clients.Kube._items(list_call, "team", label_selector="portolan.dev/job=audit")
    assert asked == {"namespace": "team", "label_selector": "portolan.dev/job=audit", "_preload_content": False}
    assert reconciling.pod_view(plain) == runs.PodView(
        name="audit-default-0-2", shard="default-0", attempt=2, phase="Failed", exit_code=3, reason="Error",
        node="edge-1", deleting=True, job="audit")


def test_the_fake_releases_only_the_finalizers_of_the_kind_and_namespaces_asked() -> None:
    kube = fakes.FakeKube()
    marker = "kopf.zalando.org/KopfFinalizerMarker"
    kube.add({"kind": "ScanJob", "metadata": {"name": "a", "namespace": "team", "finalizers": [marker]}})
    kube.add({"kind": "ScanJob", "metadata": {"name": "b", "namespace": "other", "finalizers": [marker]}})
    kube.add({"kind": "ScanSchedule", "metadata": {"name": "c", "namespace": "team", "finalizers": [marker]}})
    assert kube.release_finalizer(["team"], marker, "scanjobs") == 1
    assert kube.objects[("ScanJob", "other", "b")]["metadata"]["finalizers"] == [marker]
    assert kube.objects[("ScanSchedule", "team", "c")]["metadata"]["finalizers"] == [marker]
    assert fakes.Call("release-finalizer", "ScanJob", "a") in kube.calls


class _ConfigMaps:
    """The two calls of CoreV1Api that write_configmap makes, over one stored ConfigMap."""

    def __init__(self, owner_uid: str | None) -> None:
        owners = [kubernetes.client.V1OwnerReference(api_version="v1", kind="X", name="x", uid=owner_uid)] \
            if owner_uid else None
        self.stored = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(
            name="audit-matrix", namespace="team", owner_references=owners))
        self.replaced: list[dict[str, Any]] = []

    def create_namespaced_config_map(self, namespace: str, body: dict[str, Any]) -> None:
        raise kubernetes.client.ApiException(status=409, reason="AlreadyExists")

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        return self.stored

    def replace_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        self.replaced.append(body)


@pytest.mark.parametrize(("owner", "replaced"), [("uid-audit", True), ("uid-other", False), (None, False)])
def test_a_configmap_of_that_name_is_replaced_only_when_the_same_object_owns_it(owner: str | None, replaced: bool) -> None:
    kube = clients.Kube(kubernetes.client.ApiClient())
    core = _ConfigMaps(owner)
    kube.core = core  # type: ignore[assignment]
    manifest = {"metadata": {"name": "audit-matrix", "namespace": "team",
                             "ownerReferences": [{"uid": "uid-audit", "kind": "ReachabilityAudit", "name": "a"}]}}
    if replaced:
        kube.write_configmap(manifest)
    else:
        with pytest.raises(errors.KubeError, match="already exists and is not this object's to replace"):
            kube.write_configmap(manifest)
    assert core.replaced == ([manifest] if replaced else [])
