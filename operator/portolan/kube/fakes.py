"""An in-memory :class:`portolan.kube.clients.Client`: the seam for unit tests of the step functions.

It keeps objects as dicts, applies status merge patches as the API server
does (RFC 7386: ``null`` deletes a key), and records what was created,
deleted and reported, so a test can drive ``reconciling.step``,
``scheduling.step`` and the shard runtime without an API server.  It does not
schedule pods, run controllers, validate against CRDs or garbage-collect
owned objects: tests move pods through their phases themselves
(:meth:`FakeKube.set_pod_phase`).  The real path is tested on the control
plane; this is for fast, root-free tests of the logic around the calls.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from portolan import errors
from portolan.kube import builders, codecs
from portolan.models import audits, scanjobs, schedules, statuses


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a JSON merge patch (RFC 7386) to ``target`` in place and return it."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


@dataclasses.dataclass
class Call:
    """One recorded write: the verb, the kind and the object's name."""

    verb: str
    kind: str
    name: str


class FakeKube:
    """Objects in dicts keyed by (kind, namespace, name); every write is also recorded in :attr:`calls`."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        self.node_problems: dict[str, str] = {}
        self.selector_addresses: list[str] = []
        self.failing: dict[str, errors.KubeError] = {}  # verb (or "list-nodes") -> the error it raises
        self._uids = itertools.count(1)

    # -- helpers for tests ------------------------------------------------------------------------

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store an object as created by a user (a uid and generation 1 are filled in)."""
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta.setdefault("generation", 1)
        self.objects[(body["kind"], meta.get("namespace", ""), meta["name"])] = body
        return body

    def view(self, namespace: str, name: str) -> dict[str, Any]:
        """The job as reconciliation reads it: plan and shard entries from its ScanShard objects."""
        return builders.job_view(self.get_job(namespace, name), self.list_scan_shards(namespace, name))

    def report(self, namespace: str, job: str, shard_id: str, fields: dict[str, Any]) -> None:
        """Write into one shard's ScanShard status, as its pod would."""
        self.patch_scan_shard_status(namespace, builders.scan_shard_name(job, shard_id), fields)

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        """Every pod stored in a namespace."""
        return [body for (kind, ns, _), body in sorted(self.objects.items()) if kind == "Pod" and ns == namespace]

    def set_pod_phase(self, namespace: str, name: str, phase: str, *, node: str | None = None,
                      exit_code: int | None = None) -> None:
        """Move a pod to ``phase`` as a kubelet would report it (a terminated state for exit codes)."""
        pod = self._object("Pod", namespace, name, "reading")
        pod.setdefault("status", {})["phase"] = phase
        if node is not None:
            pod["spec"]["nodeName"] = node
        if exit_code is not None:
            pod["status"]["containerStatuses"] = [{"name": "shard", "state": {"terminated": {"exitCode": exit_code}}}]

    def _object(self, kind: str, namespace: str, name: str, verb: str) -> dict[str, Any]:
        try:
            return self.objects[(kind, namespace, name)]
        except KeyError:
            raise errors.KubeError(f"{verb} {kind} {namespace}/{name}: 404 Not Found", 404) from None

    def _write(self, verb: str, kind: str, name: str) -> None:
        self.calls.append(Call(verb, kind, name))  # attempts are recorded, failed ones too
        if verb in self.failing:
            raise self.failing[verb]

    # -- the Client protocol ----------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._object(scanjobs.KIND, namespace, name, "reading"))

    def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        body = self._object(scanjobs.KIND, namespace, name, "patching")
        self._write("patch-status", scanjobs.KIND, name)
        merge_patch(body.setdefault("status", {}), status)
        for field in statuses.VIEW_ONLY:  # not in the CRD's schema: the API server prunes them
            body["status"].pop(field, None)

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        wanted = dict(item.split("=", 1) for item in label_selector.split(",") if item)
        return [copy.deepcopy(body) for (kind, ns, _), body in sorted(self.objects.items())
                if kind == scanjobs.KIND and ns == namespace
                and all((body["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]

    def list_scan_shards(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(body) for (kind, ns, _), body in sorted(self.objects.items())
                if kind == statuses.KIND_SHARD and ns == namespace
                and (body["metadata"].get("labels") or {}).get(builders.LABEL_JOB) == job]

    def create_scan_shard(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        self._write("create", statuses.KIND_SHARD, meta["name"])
        key = (statuses.KIND_SHARD, meta["namespace"], meta["name"])
        if key in self.objects:
            self.objects[key]["spec"] = copy.deepcopy(manifest["spec"])
        else:
            body = self.add({k: v for k, v in manifest.items() if k != "status"})  # the status subresource
            body.pop("status", None)

    def get_scan_shard(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._object(statuses.KIND_SHARD, namespace, name, "reading"))

    def patch_scan_shard_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        body = self._object(statuses.KIND_SHARD, namespace, name, "patching")
        self._write("patch-status", statuses.KIND_SHARD, name)
        merge_patch(body.setdefault("status", {}), status)

    def create_job(self, manifest: dict[str, Any]) -> None:
        self._write("create", scanjobs.KIND, manifest["metadata"]["name"])
        key = (scanjobs.KIND, manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if key not in self.objects:
            self.add(manifest)

    def delete_job(self, namespace: str, name: str) -> None:
        self._write("delete", scanjobs.KIND, name)
        self.objects.pop((scanjobs.KIND, namespace, name), None)

    def job_results(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        name = codecs.configmap_name((job.get("status") or {}).get("resultsRef"))
        if name is None:
            return list((job.get("status") or {}).get("results") or [])
        configmap = self._object("ConfigMap", job["metadata"]["namespace"], name, "reading")
        return codecs.decode_results(configmap.get("binaryData"))

    def get_schedule(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._object(schedules.KIND, namespace, name, "reading"))

    def patch_schedule_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        body = self._object(schedules.KIND, namespace, name, "patching")
        self._write("patch-status", schedules.KIND, name)
        merge_patch(body.setdefault("status", {}), status)

    def shard_pods(self, namespace: str, job: str | None = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(pod) for pod in self.pods(namespace)
                if (pod["metadata"].get("labels") or {}).get(builders.LABEL_COMPONENT) == "shard"
                and (job is None or pod["metadata"]["labels"].get(builders.LABEL_JOB) == job)]

    def create_pod(self, manifest: dict[str, Any]) -> None:
        self._write("create", "Pod", manifest["metadata"]["name"])
        body = copy.deepcopy(manifest)
        body.setdefault("status", {"phase": "Pending"})
        self.objects.setdefault(("Pod", manifest["metadata"]["namespace"], manifest["metadata"]["name"]), body)

    def delete_pod(self, namespace: str, name: str, *, grace_seconds: int | None = None) -> None:
        self._write("force-delete" if grace_seconds == 0 else "delete", "Pod", name)
        self.objects.pop(("Pod", namespace, name), None)

    def create_network_policy(self, manifest: dict[str, Any]) -> None:
        self._write("create", "NetworkPolicy", manifest["metadata"]["name"])
        self.objects.setdefault(("NetworkPolicy", manifest["metadata"]["namespace"], manifest["metadata"]["name"]),
                                copy.deepcopy(manifest))

    def write_configmap(self, manifest: dict[str, Any]) -> None:
        self._write("write", "ConfigMap", manifest["metadata"]["name"])
        key = ("ConfigMap", manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        existing = self.objects.get(key)
        if existing is not None:  # as the real client: only the same owner's is replaced
            owners = {o.get("uid") for o in existing["metadata"].get("ownerReferences") or []}
            if not owners & {o.get("uid") for o in manifest["metadata"].get("ownerReferences") or []}:
                raise errors.KubeError(f"ConfigMap {key[1]}/{key[2]} already exists and is not this object's "
                                       "to replace (another owner, or none): rename or remove it", 409)
        self.objects[key] = copy.deepcopy(manifest)

    def node_problem(self, name: str) -> str | None:
        return self.node_problems.get(name)

    def list_nodes(self) -> list[dict[str, Any]]:
        """See :meth:`portolan.kube.clients.Client.list_nodes`."""
        if "list-nodes" in self.failing:  # a read, so not recorded in calls
            raise self.failing["list-nodes"]
        return [copy.deepcopy(body) for (kind, _, _), body in sorted(self.objects.items()) if kind == "Node"]

    def resolve_selectors(self, namespace: str, selectors: Sequence[scanjobs.TargetSelector]) -> list[str]:
        return list(self.selector_addresses) if selectors else []

    def event(self, involved: Mapping[str, Any], kind: str, reason: str, message: str,
              now: datetime.datetime) -> None:
        self._write("event", "Event", reason)
        self.events.append(builders.event(involved, kind, reason, message, now))

    def release_finalizer(self, namespaces: Sequence[str], finalizer: str, plural: str = scanjobs.PLURAL) -> int:
        """See :meth:`portolan.kube.clients.Client.release_finalizer`."""
        kinds = {scanjobs.PLURAL: scanjobs.KIND, schedules.PLURAL: schedules.KIND}
        released = 0
        for (kind, namespace, name), body in sorted(self.objects.items()):
            finalizers = body["metadata"].get("finalizers") or []
            if kind != kinds.get(plural) or (namespaces and namespace not in namespaces) or finalizer not in finalizers:
                continue
            self._write("release-finalizer", kind, name)
            finalizers.remove(finalizer)
            released += 1
        return released

    def get_audit(self, name: str) -> dict[str, Any]:
        """See :meth:`portolan.kube.clients.Client.get_audit`."""
        return copy.deepcopy(self._object(audits.KIND, "", name, "reading"))

    def audit_matrix(self, audit: Mapping[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
        """See :meth:`portolan.kube.clients.Client.audit_matrix`."""
        status = audit.get("status") or {}
        ref = status.get("matrixConfigMap")
        if not ref:
            return list(status.get("matrixColumns") or []), dict(status.get("matrix") or {})
        namespace, _, name = str(ref).partition("/")
        found = codecs.decode_matrix(self._object("ConfigMap", namespace, name, "reading").get("binaryData"))
        if found is None:
            raise ValueError(f"ConfigMap {ref} holds no audit matrix")
        return found[1], found[2]

    def patch_audit_status(self, name: str, status: dict[str, Any]) -> None:
        """See :meth:`portolan.kube.clients.Client.patch_audit_status`."""
        body = self._object(audits.KIND, "", name, "patching")
        self._write("patch-status", audits.KIND, name)
        merge_patch(body.setdefault("status", {}), status)

    def list_namespaces(self) -> list[dict[str, Any]]:
        """See :meth:`portolan.kube.clients.Client.list_namespaces`."""
        return [copy.deepcopy(b) for (kind, _, _), b in sorted(self.objects.items()) if kind == "Namespace"]

    def list_pods(self, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
        """See :meth:`portolan.kube.clients.Client.list_pods`."""
        wanted = dict(item.split("=", 1) for item in label_selector.split(",") if item)
        return [copy.deepcopy(b) for (kind, ns, _), b in sorted(self.objects.items())
                if kind == "Pod" and (namespace is None or ns == namespace)
                and all((b["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]

    def list_services(self, namespace: str) -> list[dict[str, Any]]:
        """See :meth:`portolan.kube.clients.Client.list_services`."""
        return [copy.deepcopy(b) for (kind, ns, _), b in sorted(self.objects.items())
                if kind == "Service" and ns == namespace]

    def list_network_policies(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`portolan.kube.clients.Client.list_network_policies`."""
        return [copy.deepcopy(b) for (kind, ns, _), b in sorted(self.objects.items())
                if kind == "NetworkPolicy" and (namespace is None or ns == namespace)]
