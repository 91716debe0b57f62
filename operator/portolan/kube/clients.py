"""The Kubernetes client: every API call Portolan makes goes through here.

:class:`Client` is the protocol the programs program against; :class:`Kube`
implements it with the official ``kubernetes`` client on an injected
``ApiClient``, and :class:`portolan.kube.fakes.FakeKube` in memory for unit
tests.  The client's errors (``ApiException``, and urllib3/socket errors when
the API server cannot be reached) are mapped once, in :func:`_mapped`, to
:class:`portolan.errors.KubeError` with the HTTP status kept, so nothing above
this module knows the client's error types.  Objects cross this boundary as
plain dicts in the API's JSON shape (camelCase), whatever the client returns.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

import kubernetes
import urllib3

from portolan import errors
from portolan.kube import builders, codecs
from portolan.models import audits, scanjobs, schedules, statuses

GROUP = scanjobs.API_GROUP
VERSION = scanjobs.API_VERSION


class Client(Protocol):
    """The API operations of the operator and the shard runtime; objects are dicts in the API's JSON shape."""

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        """The ScanJob body."""

    def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of the ScanJob's status: only the keys given change."""

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """ScanJobs in a namespace matching a label selector."""

    def list_scan_shards(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The ScanShard objects of one job (label-selected)."""

    def create_scan_shard(self, manifest: dict[str, Any]) -> None:
        """Create a ScanShard; if one of that name exists (a plan written again), its spec is replaced."""

    def get_scan_shard(self, namespace: str, name: str) -> dict[str, Any]:
        """One ScanShard body."""

    def patch_scan_shard_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of a ScanShard's status: only the keys given change."""

    def create_job(self, manifest: dict[str, Any]) -> None:
        """Create a ScanJob (one that already exists is fine: a retried create)."""

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a ScanJob (a missing one is fine)."""

    def job_results(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A job's full results, from status or from the ConfigMap they were spilled into."""

    def get_schedule(self, namespace: str, name: str) -> dict[str, Any]:
        """The ScanSchedule body."""

    def patch_schedule_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of the ScanSchedule's status."""

    def shard_pods(self, namespace: str, job: str | None = None) -> list[dict[str, Any]]:
        """Shard pods of a namespace (of one job if named)."""

    def create_pod(self, manifest: dict[str, Any]) -> None:
        """Create a pod (one created by an earlier, interrupted reconcile is fine)."""

    def delete_pod(self, namespace: str, name: str, *, grace_seconds: int | None = None) -> None:
        """Delete a pod (a missing one is fine); ``grace_seconds=0`` force-deletes."""

    def create_network_policy(self, manifest: dict[str, Any]) -> None:
        """Create a NetworkPolicy (an existing one is fine)."""

    def write_configmap(self, manifest: dict[str, Any]) -> None:
        """Create the ConfigMap, or replace the one of that name if the same object owns it."""

    def node_problem(self, name: str) -> str | None:
        """None if the Node exists and is Ready, else what is wrong with it."""

    def resolve_selectors(self, namespace: str, selectors: Sequence[scanjobs.TargetSelector]) -> list[str]:
        """Addresses of the Services (cluster IPs), Pods (pod IPs) and Nodes (InternalIPs) selected."""

    def list_nodes(self) -> list[dict[str, Any]]:
        """Every Node (the API's JSON shape): where a job's pools can place shard pods, which nodes an inventory lists."""

    def event(self, involved: Mapping[str, Any], kind: str, reason: str, message: str,
              now: datetime.datetime) -> None:
        """Report an Event about a ScanJob or ScanSchedule."""

    def release_finalizer(self, namespaces: Sequence[str], finalizer: str, plural: str = ...) -> int:
        """Remove ``finalizer`` from every object of a kind that carries it; returns how many were released."""

    def get_audit(self, name: str) -> dict[str, Any]:
        """The ReachabilityAudit body (cluster-scoped)."""

    def patch_audit_status(self, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of the ReachabilityAudit's status."""

    def audit_matrix(self, audit: Mapping[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
        """An audit's full matrix (columns, tables): from status.matrixConfigMap when it was spilled, else the status."""

    def list_namespaces(self) -> list[dict[str, Any]]:
        """Every namespace (names and labels matter to policies)."""

    def list_pods(self, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
        """Pods of a namespace, or of every namespace."""

    def list_services(self, namespace: str) -> list[dict[str, Any]]:
        """Services of a namespace."""

    def list_network_policies(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """NetworkPolicies of a namespace (or of every one), as the API server returns them (defaults filled)."""


@contextlib.contextmanager
def _mapped(what: str, tolerate: Collection[int] = ()) -> Iterator[None]:
    """Map the client's errors to :class:`KubeError`; statuses in ``tolerate`` are not errors (swallowed)."""
    try:
        yield
    except kubernetes.client.ApiException as exc:
        if exc.status in tolerate:
            return
        raise errors.KubeError(f"{what}: {exc.status} {exc.reason}", exc.status) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise errors.KubeError(f"{what}: the API server cannot be reached ({exc.__class__.__name__})") from exc


def client_from_environment() -> kubernetes.client.ApiClient:
    """In-cluster config, or KUBECONFIG / ~/.kube/config outside a cluster."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config()
        except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
            raise errors.KubeError(f"no usable Kubernetes configuration: {exc}") from exc
        except Exception as exc:  # a malformed kubeconfig surfaces as YAML errors of any type
            raise errors.KubeError(f"no usable Kubernetes configuration: {exc.__class__.__name__}: {exc}") from exc
    return kubernetes.client.ApiClient()


def check_reachable(api: kubernetes.client.ApiClient, timeout: float = 5.0) -> None:
    """One quick call (the server's version), so a program fails at start with one line, not after retries."""
    pool_log = logging.getLogger("urllib3.connectionpool")
    level = pool_log.level
    pool_log.setLevel(logging.ERROR)  # its retry warnings would bury the one line that says why
    try:
        with _mapped("contacting the API server"):
            kubernetes.client.VersionApi(api).get_code(_request_timeout=timeout)
    finally:
        pool_log.setLevel(level)


class Kube:
    """:class:`Client` on the official client: ScanJobs, ScanSchedules, shard pods, ConfigMaps, Events."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    @staticmethod
    def _items(call: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """A list call's items as the API's JSON, never through the client's models.

        Building the client's model objects and turning them back into dicts cost about a
        millisecond per pod; every step lists its job's pods, so that was most of the
        operator's CPU per shard.  Raw JSON also keeps fields the models drop.
        """
        reply = call(*args, _preload_content=False, **kwargs)
        items: list[dict[str, Any]] = json.loads(reply.data)["items"]
        return items

    # -- custom resources -------------------------------------------------------------------------

    def _get(self, plural: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        with _mapped(f"reading {kind} {namespace}/{name}"):
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _patch_status(self, plural: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of the status subresource: only the keys given change."""
        with _mapped(f"patching {kind} {namespace}/{name} status"):
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status},
                _content_type="application/merge-patch+json",
            )

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        """See :meth:`Client.get_job`."""
        return self._get(scanjobs.PLURAL, scanjobs.KIND, namespace, name)

    def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """See :meth:`Client.patch_job_status`."""
        self._patch_status(scanjobs.PLURAL, scanjobs.KIND, namespace, name, status)

    def get_schedule(self, namespace: str, name: str) -> dict[str, Any]:
        """See :meth:`Client.get_schedule`."""
        return self._get(schedules.PLURAL, schedules.KIND, namespace, name)

    def list_scan_shards(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """See :meth:`Client.list_scan_shards`."""
        with _mapped(f"listing ScanShards of {namespace}/{job}"):
            return self._items(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                               statuses.PLURAL_SHARDS, label_selector=f"{builders.LABEL_JOB}={job}")
        raise AssertionError("unreachable")  # pragma: no cover

    def create_scan_shard(self, manifest: dict[str, Any]) -> None:
        """See :meth:`Client.create_scan_shard`."""
        meta = manifest["metadata"]
        what = f"creating ScanShard {meta['namespace']}/{meta['name']}"
        try:
            with _mapped(what):
                self.custom.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], statuses.PLURAL_SHARDS,
                                                            manifest)
        except errors.KubeError as exc:
            if exc.status != 409:
                raise
            with _mapped(what.replace("creating", "replacing the spec of")):
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], statuses.PLURAL_SHARDS, meta["name"],
                    [{"op": "replace", "path": "/spec", "value": manifest["spec"]}],
                    _content_type="application/json-patch+json")

    def get_scan_shard(self, namespace: str, name: str) -> dict[str, Any]:
        """See :meth:`Client.get_scan_shard`."""
        return self._get(statuses.PLURAL_SHARDS, statuses.KIND_SHARD, namespace, name)

    def patch_scan_shard_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """See :meth:`Client.patch_scan_shard_status`."""
        self._patch_status(statuses.PLURAL_SHARDS, statuses.KIND_SHARD, namespace, name, status)

    def patch_schedule_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """See :meth:`Client.patch_schedule_status`."""
        self._patch_status(schedules.PLURAL, schedules.KIND, namespace, name, status)

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """See :meth:`Client.list_jobs`."""
        with _mapped(f"listing ScanJobs in {namespace}"):
            listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, scanjobs.PLURAL,
                                                               label_selector=label_selector)
            items: list[dict[str, Any]] = listed["items"]
            return items
        raise AssertionError("unreachable")  # pragma: no cover

    def create_job(self, manifest: dict[str, Any]) -> None:
        """Create a ScanJob; one that already exists (a retried create) is fine."""
        meta = manifest["metadata"]
        with _mapped(f"creating ScanJob {meta['namespace']}/{meta['name']}", tolerate=(409,)):
            self.custom.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], scanjobs.PLURAL, manifest)

    def delete_job(self, namespace: str, name: str) -> None:
        """See :meth:`Client.delete_job`."""
        with _mapped(f"deleting ScanJob {namespace}/{name}", tolerate=(404,)):
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, scanjobs.PLURAL, name,
                                                        propagation_policy="Background")

    def job_results(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A job's full results: from the ConfigMap named in status.resultsRef when they were spilled."""
        ref = (job.get("status") or {}).get("resultsRef")
        name = codecs.configmap_name(ref)
        if name is None:
            return list((job.get("status") or {}).get("results") or [])
        with _mapped(f"reading {ref}"):
            configmap = self.core.read_namespaced_config_map(name, job["metadata"]["namespace"])
            return codecs.decode_results(configmap.binary_data)
        raise AssertionError("unreachable")  # pragma: no cover

    def release_finalizer(self, namespaces: Sequence[str], finalizer: str, plural: str = scanjobs.PLURAL) -> int:
        """Remove ``finalizer`` from every object of this kind that carries it; returns how many were released.

        Each removal is a JSON patch that first tests the list entry, so a concurrent change
        to the finalizers is never overwritten (that object is skipped instead).
        """
        with _mapped(f"listing {plural}"):
            if namespaces and plural != audits.PLURAL:
                items = [item for namespace in namespaces for item in
                         self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]]
            else:
                items = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        released = 0
        for item in items:
            meta = item["metadata"]
            finalizers = meta.get("finalizers") or []
            if finalizer not in finalizers:
                continue
            at = finalizers.index(finalizer)
            patch = [{"op": "test", "path": f"/metadata/finalizers/{at}", "value": finalizer},
                     {"op": "remove", "path": f"/metadata/finalizers/{at}"}]
            where = meta.get("namespace")
            with _mapped(f"releasing {plural} {where or ''}/{meta['name']}", tolerate=(404, 409, 422)):
                if where:
                    self.custom.patch_namespaced_custom_object(GROUP, VERSION, where, plural, meta["name"], patch,
                                                               _content_type="application/json-patch+json")
                else:  # a cluster-scoped kind
                    self.custom.patch_cluster_custom_object(GROUP, VERSION, plural, meta["name"], patch,
                                                            _content_type="application/json-patch+json")
                released += 1
        return released

    # -- core objects -----------------------------------------------------------------------------

    def shard_pods(self, namespace: str, job: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`Client.shard_pods`."""
        selector = f"{builders.LABEL_COMPONENT}=shard"
        if job is not None:
            selector += f",{builders.LABEL_JOB}={job}"
        with _mapped(f"listing shard pods in {namespace}"):
            return self._items(self.core.list_namespaced_pod, namespace, label_selector=selector)
        raise AssertionError("unreachable")  # pragma: no cover

    def create_pod(self, manifest: dict[str, Any]) -> None:
        """Create a pod; one already created by an earlier, interrupted reconcile is fine."""
        with _mapped(f"creating pod {manifest['metadata']['name']}", tolerate=(409,)):
            self.core.create_namespaced_pod(manifest["metadata"]["namespace"], manifest)

    def delete_pod(self, namespace: str, name: str, *, grace_seconds: int | None = None) -> None:
        """See :meth:`Client.delete_pod`."""
        with _mapped(f"deleting pod {name}", tolerate=(404,)):
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds)

    def create_network_policy(self, manifest: dict[str, Any]) -> None:
        """See :meth:`Client.create_network_policy`."""
        with _mapped(f"creating NetworkPolicy {manifest['metadata']['name']}", tolerate=(409,)):
            kubernetes.client.NetworkingV1Api(self.api).create_namespaced_network_policy(
                manifest["metadata"]["namespace"], manifest)

    def write_configmap(self, manifest: dict[str, Any]) -> None:
        """Create the ConfigMap, or replace the one of that name if it has the same owner (never a user's)."""
        meta = manifest["metadata"]
        with _mapped(f"writing ConfigMap {meta['namespace']}/{meta['name']}"):
            try:
                self.core.create_namespaced_config_map(meta["namespace"], manifest)
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:
                    raise
                existing = self.core.read_namespaced_config_map(meta["name"], meta["namespace"])
                owners = {o.uid for o in existing.metadata.owner_references or []}
                wanted = {o["uid"] for o in meta.get("ownerReferences") or []}
                if not wanted or not owners & wanted:
                    raise errors.KubeError(
                        f"ConfigMap {meta['namespace']}/{meta['name']} already exists and is not this object's "
                        "to replace (another owner, or none): rename or remove it", 409) from exc
                self.core.replace_namespaced_config_map(meta["name"], meta["namespace"], manifest)

    def node_problem(self, name: str) -> str | None:
        """None if the Node exists and is Ready, else what is wrong with it."""
        with _mapped(f"reading node {name}", tolerate=(404,)):
            node = self.core.read_node(name)
            ready = next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
            if ready is None or ready.status != "True":
                why = f"{ready.reason}" if ready is not None and ready.reason else "no Ready condition"
                return f"is not Ready ({why})"
            return None
        return "is gone"

    def list_nodes(self) -> list[dict[str, Any]]:
        """See :meth:`Client.list_nodes`."""
        with _mapped("listing nodes"):
            return self._items(self.core.list_node)
        raise AssertionError("unreachable")  # pragma: no cover

    def resolve_selectors(self, namespace: str, selectors: Sequence[scanjobs.TargetSelector]) -> list[str]:
        """Addresses of the Services (cluster IPs), Pods (pod IPs) and Nodes (InternalIPs) selected."""
        found: list[str] = []
        for selector in selectors:
            labels = ",".join(f"{k}={v}" for k, v in selector.match_labels.items())
            where = selector.namespace or namespace
            with _mapped(f"resolving {selector.kind.value} selector"):
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
        return found

    def event(self, involved: Mapping[str, Any], kind: str, reason: str, message: str,
              now: datetime.datetime) -> None:
        """See :meth:`Client.event`."""
        with _mapped("creating an Event"):
            body = builders.event(involved, kind, reason, message, now)
            self.core.create_namespaced_event(body["metadata"]["namespace"], body)

    # -- reachability audits ----------------------------------------------------------------------

    def get_audit(self, name: str) -> dict[str, Any]:
        """See :meth:`Client.get_audit`."""
        with _mapped(f"reading {audits.KIND} {name}"):
            body: dict[str, Any] = self.custom.get_cluster_custom_object(GROUP, VERSION, audits.PLURAL, name)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def audit_matrix(self, audit: Mapping[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
        """See :meth:`Client.audit_matrix`; a ConfigMap that holds no matrix raises ValueError."""
        status = audit.get("status") or {}
        ref = status.get("matrixConfigMap")
        if not ref:
            return list(status.get("matrixColumns") or []), dict(status.get("matrix") or {})
        namespace, _, name = str(ref).partition("/")
        with _mapped(f"reading ConfigMap {ref}"):
            configmap = self.core.read_namespaced_config_map(name, namespace)
        found = codecs.decode_matrix(configmap.binary_data)
        if found is None:
            raise ValueError(f"ConfigMap {ref} holds no audit matrix")
        return found[1], found[2]

    def patch_audit_status(self, name: str, status: dict[str, Any]) -> None:
        """See :meth:`Client.patch_audit_status`."""
        with _mapped(f"patching {audits.KIND} {name} status"):
            self.custom.patch_cluster_custom_object_status(GROUP, VERSION, audits.PLURAL, name, {"status": status},
                                                           _content_type="application/merge-patch+json")

    def list_namespaces(self) -> list[dict[str, Any]]:
        """See :meth:`Client.list_namespaces`."""
        with _mapped("listing namespaces"):
            return self._items(self.core.list_namespace)
        raise AssertionError("unreachable")  # pragma: no cover

    def list_pods(self, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
        """See :meth:`Client.list_pods`."""
        with _mapped(f"listing pods in {namespace or 'every namespace'}"):
            if namespace is None:
                return self._items(self.core.list_pod_for_all_namespaces, label_selector=label_selector)
            return self._items(self.core.list_namespaced_pod, namespace, label_selector=label_selector)
        raise AssertionError("unreachable")  # pragma: no cover

    def list_services(self, namespace: str) -> list[dict[str, Any]]:
        """See :meth:`Client.list_services`."""
        with _mapped(f"listing Services in {namespace}"):
            return self._items(self.core.list_namespaced_service, namespace)
        raise AssertionError("unreachable")  # pragma: no cover

    def list_network_policies(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`Client.list_network_policies`."""
        with _mapped(f"listing NetworkPolicies in {namespace or 'every namespace'}"):
            networking = kubernetes.client.NetworkingV1Api(self.api)
            # Raw JSON also matters here: the client's serializer drops fields named like Python
            # keywords ("from", "except").
            if namespace:
                return self._items(networking.list_namespaced_network_policy, namespace)
            return self._items(networking.list_network_policy_for_all_namespaces)
        raise AssertionError("unreachable")  # pragma: no cover
