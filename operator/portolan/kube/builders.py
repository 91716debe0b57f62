"""Pure builders of Kubernetes objects and status pieces: shard pods, the scanner egress
NetworkPolicy, results ConfigMaps, Events, owner references, conditions, aggregated results.

No I/O and no clock reads: everything a builder needs (the job, the time, the
settings) is passed in, so each is covered by table and golden-file tests
(``tests/golden/test_golden_files.py``, ``tests/operator/test_reconcile.py``).
"""

from __future__ import annotations

import collections
import copy
import datetime
import hashlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

from portolan.kube import names
from portolan.models import scanjobs, settings, statuses

GROUP = scanjobs.API_GROUP
LABEL_JOB = f"{GROUP}/job"
LABEL_SHARD = f"{GROUP}/shard"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_POOL = f"{GROUP}/pool"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_ROLE = f"{GROUP}/role"  # probe | canary | inventory; a workload's own labels are kept as they are
CAPTURE_MOUNT = "/var/run/portolan/capture"  # where a shard pod sees the evidence claim


def owner_reference(owner: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The controller owner reference to ``owner`` (a ScanJob or ScanSchedule body): garbage collected with it."""
    meta = owner["metadata"]
    return {"apiVersion": f"{GROUP}/{scanjobs.API_VERSION}", "kind": kind, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def results_configmap(job: Mapping[str, Any], name: str, binary_data: Mapping[str, str]) -> dict[str, Any]:
    """The ConfigMap holding a ScanJob's spilled results, owned by the job."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": {LABEL_JOB: meta["name"]},
                     "ownerReferences": [owner_reference(job, scanjobs.KIND)]},
        "binaryData": dict(binary_data),
    }


def audit_configmap(audit: Mapping[str, Any], namespace: str, name: str,
                    binary_data: Mapping[str, str]) -> dict[str, Any]:
    """The ConfigMap holding what of a (cluster-scoped) ReachabilityAudit's results outgrew its status, owned by it."""
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {LABEL_AUDIT: bounded_name(audit["metadata"]["name"])},
                     "ownerReferences": [owner_reference(audit, "ReachabilityAudit")]},
        "binaryData": dict(binary_data),
    }


def event(involved: Mapping[str, Any], kind: str, reason: str, message: str, now: datetime.datetime) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (a Portolan object); the message is cut at 1 KiB."""
    meta = involved["metadata"]
    stamp = timestamp(now)
    where = meta.get("namespace") or "default"  # Events about cluster-scoped objects live in default
    subject = {"apiVersion": f"{GROUP}/{scanjobs.API_VERSION}", "kind": involved.get("kind") or scanjobs.KIND,
               "name": meta["name"], "uid": meta["uid"]}
    if meta.get("namespace"):
        subject["namespace"] = meta["namespace"]
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": where},
        "involvedObject": subject,
        "type": kind, "reason": reason, "message": message[:1024],
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "source": {"component": "portolan-operator"}, "reportingComponent": "portolan-operator",
    }


timestamp = names.timestamp


def parse_timestamp(text: str | None) -> datetime.datetime | None:
    """The inverse of :func:`timestamp`; None for a missing value."""
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def pod_name(job: str, shard_id: str, attempt: int) -> str:
    """A DNS-1123 name, unique per job, shard and attempt (hashed when too long)."""
    name = f"{job}-{shard_id}-{attempt}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:50].rstrip('-')}-{digest}-{attempt}"[:63]


ANNOTATION_ORDINAL = f"{GROUP}/ordinal"  # a ScanShard's place in its job's plan (shards start in that order)


scan_shard_name = names.scan_shard_name


def scan_shard(job: Mapping[str, Any], shard: statuses.ShardPlan, ordinal: int) -> dict[str, Any]:
    """The ScanShard object of one shard of a job: its slice of the plan as spec, owned by the job.

    Its status starts empty (a shard not yet started); the operator and the shard's pod
    write it through the status subresource.
    """
    meta = job["metadata"]
    return {
        "apiVersion": f"{GROUP}/{scanjobs.API_VERSION}", "kind": statuses.KIND_SHARD,
        "metadata": {
            "name": scan_shard_name(meta["name"], shard.id), "namespace": meta["namespace"],
            "labels": {LABEL_JOB: meta["name"], LABEL_SHARD: shard.id, LABEL_POOL: shard.pool,
                       "app.kubernetes.io/name": "portolan", "app.kubernetes.io/managed-by": "portolan"},
            "annotations": {ANNOTATION_ORDINAL: str(ordinal)},
            "ownerReferences": [owner_reference(job, scanjobs.KIND)],
        },
        "spec": shard.model_dump(by_alias=True, mode="json", exclude_none=True),
    }


def job_view(job: Mapping[str, Any], shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The job as reconciliation reads it: ``status.plan`` and ``status.shards`` from its ScanShard objects.

    Plan order is the ordinal each object was created with.  Objects of another job (a
    label that does not match the job's uid) are ignored.
    """
    uid = job["metadata"].get("uid")

    def ordinal(body: Mapping[str, Any]) -> int:
        try:
            return int(((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ORDINAL, "0"))
        except ValueError:
            return 0

    def owned(body: Mapping[str, Any]) -> bool:
        refs = (body.get("metadata") or {}).get("ownerReferences") or []
        return uid is None or any(ref.get("uid") == uid for ref in refs)

    mine = [body for body in shards if owned(body)]
    mine.sort(key=ordinal)
    status = {key: value for key, value in (job.get("status") or {}).items() if key not in statuses.VIEW_ONLY}
    status["plan"] = [dict(body.get("spec") or {}) for body in mine]
    status["shards"] = {str((body.get("spec") or {}).get("id")): dict(body.get("status") or {})
                        for body in mine if body.get("status")}
    return {**job, "status": status}


bounded_name = names.bounded_name


def open_ports_cap(config: settings.OperatorSettings, shard_count: int) -> int:
    """How many open ports each shard may list so that all shards fit in half the byte budget."""
    per_port = 80  # bytes of JSON per listed open port, generously
    return max(1, min(config.shard_open_ports_cap, config.status_byte_budget // (2 * per_port * max(1, shard_count))))


def listener_caps(config: settings.OperatorSettings, inventory_shards: int) -> tuple[int, int]:
    """Listeners each inventory shard may list, and listeners the job's inventory result may list.

    Each gets an eighth of the byte budget (the shards' open ports take half), at about 200 bytes per listener.
    """
    per_listener = 200
    share = config.status_byte_budget // 8 // per_listener
    return max(1, min(500, share // max(1, inventory_shards))), max(1, share)


def inventory_pod_spec(pod_spec: dict[str, Any], node: str) -> None:
    """Turn a shard pod's spec into an inventory pod's: the node's network and PID namespaces, on ``node`` only.

    Listing another user's sockets' owners needs root with CAP_SYS_PTRACE (``/proc/PID/fd``) and
    CAP_DAC_READ_SEARCH; with the host namespaces that makes the pod Pod Security "privileged".
    """
    pod_spec["hostNetwork"] = True
    pod_spec["hostPID"] = True
    pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    pod_spec["securityContext"] = {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0,
                                   "seccompProfile": {"type": "RuntimeDefault"}}
    pod_spec["containers"][0]["securityContext"]["capabilities"] = {
        "drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}
    # As a DaemonSet pins its pods: a required node affinity on the node's name (the scheduler still runs).
    pod_spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}


def _require_node_field(pod_spec: dict[str, Any], requirement: dict[str, Any]) -> None:
    """Add a required node field selector to every term of the pod's node affinity (terms are ORed)."""
    affinity = copy.deepcopy(pod_spec.get("affinity") or {})
    required = affinity.setdefault("nodeAffinity", {}).setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": [{}]})
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({})
    for term in terms:
        term.setdefault("matchFields", []).append(requirement)
    pod_spec["affinity"] = affinity


def shard_pod(
    job: Mapping[str, Any],
    spec: scanjobs.ScanJobSpec,
    shard: statuses.ShardPlan,
    attempt: int,
    config: settings.OperatorSettings,
    shard_count: int,
    avoid_nodes: Sequence[str] = (),
    inventory_shards: int | None = None,
) -> dict[str, Any]:
    """The pod that runs one attempt of one shard, owned by its ScanJob (never on ``avoid_nodes``).

    An inventory shard's pod runs on its planned node with the host's namespaces (:func:`inventory_pod_spec`).
    """
    meta = job["metadata"]
    pool = next((p for p in spec.pools if p.name == shard.pool), None)
    env = [
        {"name": "PORTOLAN_JOB_NAMESPACE", "value": meta["namespace"]},
        {"name": "PORTOLAN_JOB_NAME", "value": meta["name"]},
        {"name": "PORTOLAN_SHARD_ID", "value": shard.id},
        {"name": "PORTOLAN_SHARD_OBJECT", "value": scan_shard_name(meta["name"], shard.id)},
        {"name": "PORTOLAN_ATTEMPT", "value": str(attempt)},
        {"name": "PORTOLAN_OPEN_CAP", "value": str(open_ports_cap(config, shard_count))},
        {"name": "PORTOLAN_HEARTBEAT_SECONDS", "value": str(config.shard_heartbeat_seconds)},
        {"name": "PORTOLAN_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PORTOLAN_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": config.shard_service_account,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "shard",
                "image": config.shard_image,
                "command": list(config.shard_command),
                "env": env,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"memory": "512Mi"}},
                "securityContext": {
                    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    inventory = shard.kind == statuses.ShardKind.INVENTORY
    if inventory:
        cap = listener_caps(config, shard_count if inventory_shards is None else inventory_shards)[0]
        env.append({"name": "PORTOLAN_LISTENER_CAP", "value": str(cap)})
    elif spec.technique == scanjobs.Technique.SYN or spec.capture is not None:
        # Raw sockets: CAP_NET_RAW is only effective for root in a container (no ambient
        # capabilities), so such pods need a namespace that allows Pod Security "privileged".
        pod_spec["securityContext"] = {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
        pod_spec["containers"][0]["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["NET_RAW"]}
    if spec.capture is not None and not inventory:
        pod_spec["volumes"] = [{"name": "capture",
                                "persistentVolumeClaim": {"claimName": spec.capture.persistent_volume_claim}}]
        pod_spec["containers"][0]["volumeMounts"] = [{"name": "capture", "mountPath": CAPTURE_MOUNT}]
        env.append({"name": "PORTOLAN_CAPTURE_DIR", "value": CAPTURE_MOUNT})
    if inventory:
        inventory_pod_spec(pod_spec, shard.node or "")
    if pool is not None:
        if pool.node_selector and not inventory:
            pod_spec["nodeSelector"] = dict(pool.node_selector)
        if pool.affinity and not inventory:
            pod_spec["affinity"] = pool.affinity
        if pool.tolerations:
            pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations]
    if shard.node is not None and shard.node not in avoid_nodes and not inventory:
        # One slice of a UDP spread: on its own node, so from its own source address. A shard
        # whose node was lost runs anywhere else in its pool instead (slower, still correct).
        _require_node_field(pod_spec, {"key": "metadata.name", "operator": "In", "values": [shard.node]})
    if avoid_nodes and not inventory:
        # Nodes an earlier attempt was lost on.
        _require_node_field(pod_spec, {"key": "metadata.name", "operator": "NotIn", "values": sorted(set(avoid_nodes))})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(meta["name"], shard.id, attempt),
            "namespace": meta["namespace"],
            "labels": {
                LABEL_JOB: meta["name"], LABEL_SHARD: shard.id, LABEL_ATTEMPT: str(attempt),
                LABEL_POOL: shard.pool, LABEL_COMPONENT: "shard",
                "app.kubernetes.io/name": "portolan", **({LABEL_ROLE: "inventory"} if inventory else {}),
            },
            "ownerReferences": [owner_reference(job, scanjobs.KIND)],
        },
        "spec": pod_spec,
    }


def set_condition(
    conditions: Sequence[statuses.Condition],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime.datetime,
) -> list[statuses.Condition]:
    """Replace one condition, keeping lastTransitionTime when its status did not change."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == kind), None)
    transition = timestamp(now)
    if previous is not None and previous.status == value and previous.last_transition_time:
        transition = previous.last_transition_time
    updated = statuses.Condition(
        type=kind, status=value, reason=reason, message=message,
        observed_generation=generation, last_transition_time=transition,
    )
    return [c for c in conditions if c.type != kind] + [updated]


def aggregate(
    plan: Sequence[statuses.ShardPlan],
    shards: Mapping[str, statuses.ShardStatus],
    open_cap: int,
) -> list[statuses.VantageResult]:
    """Sum shard results per pool; open ports listed once per (host, port, protocol)."""
    by_pool: dict[str, list[statuses.ShardStatus]] = collections.defaultdict(list)
    for shard in plan:
        if shard.kind == statuses.ShardKind.INVENTORY:
            continue
        entry = shards.get(shard.id)
        by_pool[shard.pool].append(entry or statuses.ShardStatus())
    results = []
    for pool, entries in by_pool.items():
        states: collections.Counter[str] = collections.Counter()
        seen: dict[tuple[str, int, str], statuses.OpenPort] = {}
        truncated = 0
        for entry in entries:
            states.update(entry.states)
            truncated += entry.open_truncated
            for port in entry.open:
                seen.setdefault((port.host, port.port, port.protocol), port)
        ordered = sorted(seen.values(), key=lambda p: (p.host, p.protocol, p.port))
        results.append(
            statuses.VantageResult(
                pool=pool, states=dict(sorted(states.items())), open=ordered[:open_cap],
                open_truncated=truncated + max(0, len(ordered) - open_cap),
            )
        )
    return results


def status_size(status: statuses.ScanJobStatus) -> int:
    """Bytes of the status as stored in the ScanJob, as JSON (the plan and shard entries live in ScanShards)."""
    return len(json.dumps(status.model_dump(by_alias=True, exclude_none=True, mode="json",
                                            exclude=set(statuses.VIEW_ONLY))))


def _cidrs(ranges: Sequence[str]) -> list[str]:
    """The smallest CIDR list covering compact address ranges (``a`` or ``a-b``)."""
    found: list[str] = []
    for text in ranges:
        first, _, last = text.partition("-")
        start = ipaddress.ip_address(first)
        end = ipaddress.ip_address(last) if last else start
        found += [str(net) for net in ipaddress.summarize_address_range(start, end)]
    return found


def _port_ranges(expression: str) -> list[tuple[int, int]]:
    spans = []
    for item in filter(None, expression.split(",")):
        first, _, last = item.partition("-")
        spans.append((int(first), int(last or first)))
    return spans


def scanner_egress_policy(job: Mapping[str, Any], plan: Sequence[statuses.ShardPlan]) -> dict[str, Any]:
    """A NetworkPolicy letting this job's shard pods reach exactly its targets and the API server.

    Owned by the ScanJob, so it goes away with it.  Egress to TCP 443/6443 (the API server,
    where shards write their status) and to DNS stays open; everything else is the targets'
    addresses on the planned ports.
    """
    meta = job["metadata"]
    plan = [shard for shard in plan if shard.kind == statuses.ShardKind.SCAN]  # inventory pods use the host's network
    networks = [ipaddress.ip_network(cidr) for shard in plan for cidr in _cidrs(shard.targets)]
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    targets = [str(n) for n in ipaddress.collapse_addresses(v4)] + [str(n) for n in ipaddress.collapse_addresses(v6)]
    ports: list[dict[str, Any]] = []
    for protocol, attribute in (("TCP", "ports"), ("UDP", "udp_ports")):
        spans = sorted({span for shard in plan for span in _port_ranges(getattr(shard, attribute) or "")})
        for first, last in spans:
            entry: dict[str, Any] = {"protocol": protocol, "port": first}
            if last > first:
                entry["endPort"] = last
            ports.append(entry)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{meta['name']}-scanner-egress"[:63],
            "namespace": meta["namespace"],
            "labels": {LABEL_JOB: meta["name"], "app.kubernetes.io/name": "portolan"},
            "ownerReferences": [owner_reference(job, scanjobs.KIND)],
        },
        "spec": {
            "podSelector": {"matchLabels": {LABEL_JOB: meta["name"], LABEL_COMPONENT: "shard"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": cidr}} for cidr in targets], "ports": ports},
                {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]},
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            ],
        },
    }


LABEL_AUDIT = f"{GROUP}/audit"
LABEL_SOURCE = f"{GROUP}/source"
LABEL_DESTINATION = f"{GROUP}/destination"
LABEL_RUN = f"{GROUP}/run"  # the run of a (scheduled) audit a probe or canary pod belongs to
NO_SIDECAR = {"sidecar.istio.io/inject": "false", "linkerd.io/inject": "disabled"}  # probe what the CNI does
ANNOTATION_LEGEND = f"{GROUP}/legend"  # per pair: destination, endpoint, what decided it (codecs.encode_legend)


def _restricted_container(name: str, image: str, command: list[str], env: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name, "image": image, "command": command, "env": env,
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }


_RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                   "seccompProfile": {"type": "RuntimeDefault"}}


def _command(config: settings.OperatorSettings, verb: str) -> list[str]:
    """The shard command with its ``shard`` verb swapped for another one (probe, canary)."""
    command = list(config.shard_command)
    return [*command[:-1], verb] if command and command[-1] == "shard" else [*command, verb]


def probe_pod(audit: Mapping[str, Any], source: str, namespace: str, labels: Mapping[str, str], pairs: str,
              config: settings.OperatorSettings, *, convergence_seconds: int, timeout_ms: int,
              legend: str = "", run: int = 1) -> dict[str, Any]:
    """The probe pod of one audit source: the source's labels (so policies select it), Pod Security "restricted".

    Owned by the (cluster-scoped) audit, so it goes with it.  The pairs ride in its
    environment; it writes its verdicts into the audit's status.  It is never Ready,
    so a Service selecting the workload's labels never routes to it.
    """
    meta = audit["metadata"]
    env = [{"name": "PORTOLAN_AUDIT", "value": meta["name"]}, {"name": "PORTOLAN_SOURCE", "value": source},
           {"name": "PORTOLAN_PAIRS", "value": pairs}, {"name": "PORTOLAN_RUN", "value": str(run)},
           {"name": "PORTOLAN_CONVERGENCE_SECONDS", "value": str(convergence_seconds)},
           {"name": "PORTOLAN_PROBE_TIMEOUT_MS", "value": str(timeout_ms)}]
    spec: dict[str, Any] = {
        "restartPolicy": "Never", "serviceAccountName": config.probe_service_account, "enableServiceLinks": False,
        "automountServiceAccountToken": True, "securityContext": dict(_RESTRICTED_POD),
        "containers": [_restricted_container("probe", config.shard_image, _command(config, "probe"), env)],
    }
    # Never Ready: a probe carries a workload's labels, so a Service selecting them must not send it traffic.
    spec["containers"][0]["readinessProbe"] = {"exec": {"command": ["/bin/false"]}, "periodSeconds": 10}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": bounded_name(f"{meta['name']}-{source}-r{run}"),
            "namespace": namespace,
            "labels": {**labels, LABEL_AUDIT: bounded_name(meta["name"]), LABEL_SOURCE: source, LABEL_ROLE: "probe",
                       LABEL_RUN: str(run)},
            "annotations": {ANNOTATION_LEGEND: legend, **NO_SIDECAR},
            "ownerReferences": [owner_reference(audit, "ReachabilityAudit")],
        },
        "spec": spec,
    }


def canary_pod(audit: Mapping[str, Any], destination: str, namespace: str, labels: Mapping[str, str],
               tcp: str, udp: str, config: settings.OperatorSettings,
               container_ports: Sequence[Mapping[str, Any]] = (), run: int = 1) -> dict[str, Any]:
    """A canary listener with a destination's labels: echoes on the audited ports and is never Ready.

    Its readiness probe always fails, so no Service's EndpointSlice ever lists it and
    it never takes real traffic; NetworkPolicies select it exactly as the destination.
    """
    meta = audit["metadata"]
    command = _command(config, "canary")
    if tcp:
        command += ["--tcp", tcp]
    if udp:
        command += ["--udp", udp]
    container = _restricted_container("canary", config.shard_image, command, [])
    container["readinessProbe"] = {"exec": {"command": ["/bin/false"]}, "periodSeconds": 10}
    if container_ports:  # the destination's declared ports (names included): named ports resolve the same
        container["ports"] = [dict(port) for port in container_ports]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": bounded_name(f"{meta['name']}-{destination}-canary-r{run}"),
            "namespace": namespace,
            "labels": {**labels, LABEL_AUDIT: bounded_name(meta["name"]), LABEL_DESTINATION: destination,
                       LABEL_ROLE: "canary", LABEL_RUN: str(run)},
            "annotations": dict(NO_SIDECAR),
            "ownerReferences": [owner_reference(audit, "ReachabilityAudit")],
        },
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
                 "securityContext": dict(_RESTRICTED_POD), "containers": [container]},
    }
