"""The Kubernetes boundary: every API call Portolan makes goes through here.

Calls use the official ``kubernetes`` client with an injected ``ApiClient``;
``ApiException`` is mapped once, here, to :class:`KubeError` (with the HTTP
status kept), so nothing above this module knows the client's error types.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import json
from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes

from portolan import builders, errors
from portolan.models import scanjobs, schedules

GROUP = scanjobs.API_GROUP
VERSION = scanjobs.API_VERSION
PLURAL = "scanjobs"
SCHEDULES = schedules.PLURAL


class KubeError(errors.PortolanError):
    reason = "KubernetesApiError"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _mapped(exc: kubernetes.client.ApiException, what: str) -> KubeError:
    return KubeError(f"{what}: {exc.status} {exc.reason}", exc.status)


def client_from_environment() -> kubernetes.client.ApiClient:
    """In-cluster config, or KUBECONFIG / ~/.kube/config outside a cluster."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config()
        except kubernetes.config.ConfigException as exc:
            raise KubeError(f"no Kubernetes configuration found: {exc}") from exc
    return kubernetes.client.ApiClient()


class Kube:
    """Typed operations on ScanJobs, shard pods, ConfigMaps and Events."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    def _get(self, plural: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            return body
        except kubernetes.client.ApiException as exc:
            raise _mapped(exc, f"reading {kind} {namespace}/{name}") from exc

    def _patch_status(self, plural: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of the status subresource: only the keys given change."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status},
                _content_type="application/merge-patch+json",
            )
        except kubernetes.client.ApiException as exc:
            raise _mapped(exc, f"patching {kind} {namespace}/{name} status") from exc

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        return self._get(PLURAL, scanjobs.KIND, namespace, name)

    def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._patch_status(PLURAL, scanjobs.KIND, namespace, name, status)

    def get_schedule(self, namespace: str, name: str) -> dict[str, Any]:
        return self._get(SCHEDULES, schedules.KIND, namespace, name)

    def patch_schedule_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._patch_status(SCHEDULES, schedules.KIND, namespace, name, status)

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        try:
            listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                               label_selector=label_selector)
        except kubernetes.client.ApiException as exc:
            raise _mapped(exc, f"listing ScanJobs in {namespace}") from exc
        items: list[dict[str, Any]] = listed["items"]
        return items

    def create_job(self, manifest: dict[str, Any]) -> None:
        """Create a ScanJob; one that already exists (a retried create) is fine."""
        meta = manifest["metadata"]
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, manifest)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise _mapped(exc, f"creating ScanJob {meta['namespace']}/{meta['name']}") from exc

    def job_results(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A job's full results: from the ConfigMap named in status.resultsRef when they were spilled."""
        meta = job["metadata"]
        ref = str((job.get("status") or {}).get("resultsRef") or "")
        name = ref.removeprefix("configmap/")
        try:
            configmap = self.core.read_namespaced_config_map(name, meta["namespace"])
        except kubernetes.client.ApiException as exc:
            raise _mapped(exc, f"reading {ref}") from exc
        blob = (configmap.binary_data or {}).get("results.json.gz")
        if not blob:
            return []
        found: list[dict[str, Any]] = json.loads(gzip.decompress(base64.b64decode(blob)))
        return found

    def release_finalizer(self, namespaces: Sequence[str], finalizer: str, plural: str = PLURAL) -> int:
        """Remove ``finalizer`` from every object of this kind that carries it; returns how many were released.

        Each removal is a JSON patch that first tests the list entry, so a concurrent change
        to the finalizers is never overwritten (that object is skipped instead).
        """
        try:
            if namespaces:
                items = [item for namespace in namespaces for item in
                         self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]]
            else:
                items = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        except kubernetes.client.ApiException as exc:
            raise _mapped(exc, f"listing {plural}") from exc
        released = 0
        for item in items:
            meta = item["metadata"]
            finalizers = meta.get("finalizers") or []
            if finalizer not in finalizers:
                continue
            at = finalizers.index(finalizer)
            patch = [{"op": "test", "path": f"/metadata/finalizers/{at}", "value": finalizer},
                     {"op": "remove", "path": f"/metadata/finalizers/{at}"}]
            try:
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, meta["namespace"], plural, meta["name"], patch,
                                                           _content_type="application/json-patch+json")
                released += 1
            except kubernetes.client.ApiException as exc:
                if exc.status not in (404, 409, 422):
                    raise _mapped(exc, f"releasing {plural} {meta['namespace']}/{meta['name']}") from exc
        return released

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                        propagation_policy="Background")
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise _mapped(exc, f"deleting ScanJob {namespace}/{name}") from exc

    def shard_pods(self, namespace: str, job: str | None = None) -> list[Any]:
        selector = f"{builders.LABEL_COMPONENT}=shard"
        if job is not None:
            selector += f",{builders.LABEL_JOB}={job}"
        try:
            return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)
        except kubernetes.client.ApiException as exc:
            raise _mapped(exc, f"listing shard pods in {namespace}") from exc

    def create_pod(self, manifest: dict[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        try:
            self.core.create_namespaced_pod(namespace, manifest)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:  # already created by an earlier, interrupted reconcile
                raise _mapped(exc, f"creating pod {manifest['metadata']['name']}") from exc

    def create_network_policy(self, manifest: dict[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        try:
            kubernetes.client.NetworkingV1Api(self.api).create_namespaced_network_policy(namespace, manifest)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise _mapped(exc, f"creating NetworkPolicy {manifest['metadata']['name']}") from exc

    def node_problem(self, name: str) -> str | None:
        """None if the Node exists and is Ready, else what is wrong with it."""
        try:
            node = self.core.read_node(name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return "is gone"
            raise _mapped(exc, f"reading node {name}") from exc
        ready = next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
        if ready is None or ready.status != "True":
            why = f"{ready.reason}" if ready is not None and ready.reason else "no Ready condition"
            return f"is not Ready ({why})"
        return None

    def delete_pod(self, namespace: str, name: str, *, grace_seconds: int | None = None) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise _mapped(exc, f"deleting pod {name}") from exc

    def write_configmap(self, namespace: str, name: str, owner: dict[str, Any],
                        binary_data: dict[str, str]) -> None:
        meta = owner["metadata"]
        body = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {builders.LABEL_JOB: meta["name"]},
                         "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": scanjobs.KIND,
                                              "name": meta["name"], "uid": meta["uid"]}]},
            "binaryData": binary_data,
        }
        try:
            try:
                self.core.create_namespaced_config_map(namespace, body)
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.replace_namespaced_config_map(name, namespace, body)
        except kubernetes.client.ApiException as exc:
            raise _mapped(exc, f"writing ConfigMap {namespace}/{name}") from exc

    def resolve_selectors(self, namespace: str, selectors: Sequence[scanjobs.TargetSelector]) -> list[str]:
        """Addresses of the Services (cluster IPs), Pods (pod IPs) and Nodes (InternalIPs) selected."""
        found: list[str] = []
        for selector in selectors:
            labels = ",".join(f"{k}={v}" for k, v in selector.match_labels.items())
            where = selector.namespace or namespace
            try:
                if selector.kind == scanjobs.SelectorKind.SERVICE:
                    for item in self.core.list_namespaced_service(where, label_selector=labels).items:
                        found += [ip for ip in (item.spec.cluster_i_ps or [item.spec.cluster_ip]) if ip and ip != "None"]
                elif selector.kind == scanjobs.SelectorKind.POD:
                    for item in self.core.list_namespaced_pod(where, label_selector=labels).items:
                        if item.status.pod_ip:
                            found.append(item.status.pod_ip)
                else:
                    for item in self.core.list_node(label_selector=labels).items:
                        found += [a.address for a in (item.status.addresses or []) if a.type == "InternalIP"]
            except kubernetes.client.ApiException as exc:
                raise _mapped(exc, f"resolving {selector.kind.value} selector") from exc
        return found

    def event(self, job: dict[str, Any], kind: str, reason: str, message: str, now: datetime.datetime) -> None:
        meta = job["metadata"]
        stamp = builders.timestamp(now)
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": job.get("kind") or scanjobs.KIND,
                               "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": kind, "reason": reason, "message": message[:1024],
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "source": {"component": "portolan-operator"}, "reportingComponent": "portolan-operator",
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except kubernetes.client.ApiException as exc:
            raise _mapped(exc, "creating an Event") from exc
