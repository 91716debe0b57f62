"""Pods for the network tests: servers that name themselves, placed on chosen nodes, and probes from them.

A pod here runs :mod:`harness.netprobe` (``serve``) through the node agent; probing runs
``netprobe probe`` inside a source pod's own network namespace, which is a real connection
from that pod (the test-bed equivalent of ``kubectl exec``).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import kubernetes

from harness import clusters

TESTS = pathlib.Path(__file__).resolve().parents[1]


def server_pod(name: str, labels: dict[str, str], node: str, serve: list[tuple[str, int]], *,
               named: dict[str, tuple[str, int]] | None = None, readiness: dict[str, Any] | None = None,
               host_network: bool = False) -> dict[str, Any]:
    """A pod on ``node`` serving every (protocol, port); ``named`` declares named container ports."""
    container: dict[str, Any] = {
        "name": "main", "image": "portolan",
        "command": [sys.executable, "-m", "harness.netprobe", "serve", json.dumps(serve)],
        "env": [{"name": "PYTHONPATH", "value": str(TESTS)}],
        "ports": [{"name": port_name, "protocol": proto.upper(), "containerPort": number}
                  for port_name, (proto, number) in (named or {}).items()],
    }
    if readiness is not None:
        container["readinessProbe"] = readiness
    spec: dict[str, Any] = {"restartPolicy": "Never", "nodeName": node, "containers": [container],
                            "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def create(cluster: clusters.Cluster, namespace: str, pods: list[dict[str, Any]], timeout: float = 60.0) -> dict[str, str]:
    """Create the pods and wait until each runs with an address; returns name -> pod IP."""
    core = cluster.core()
    for pod in pods:
        core.create_namespaced_pod(namespace, pod)
    addresses: dict[str, str] = {}

    def running() -> bool:
        for pod in pods:
            name = pod["metadata"]["name"]
            if name in addresses:
                continue
            status = core.read_namespaced_pod(name, namespace).status
            if status.phase in ("Failed", "Succeeded"):
                raise AssertionError(f"pod {namespace}/{name} ended: {status.container_statuses}")
            if status.phase == "Running" and status.pod_ip:
                addresses[name] = status.pod_ip
        return len(addresses) == len(pods)

    cluster.wait(f"pods in {namespace} to run", running, timeout)
    return addresses


def ensure_namespace(cluster: clusters.Cluster, name: str, labels: dict[str, str] | None = None) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    try:
        cluster.core().create_namespace(body)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise


def delete_namespace(cluster: clusters.Cluster, name: str, timeout: float = 60.0) -> None:
    core = cluster.core()
    try:
        core.delete_namespace(name)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return
        raise

    def gone() -> bool:
        try:
            core.read_namespace(name)
            return False
        except kubernetes.client.ApiException as exc:
            return bool(exc.status == 404)

    cluster.wait(f"namespace {name} to go", gone, timeout)


def probe_from(cluster: clusters.Cluster, namespace: str, pod: str, targets: list[tuple[str, str, int]],
               timeout: float = 1.0) -> list[str]:
    """Outcomes ("ok <name>", "refused", "timeout") of connections from that pod to each target."""
    return _probe(cluster.agent.pod_namespace(namespace, pod), targets, timeout)


def probe_from_node(cluster: clusters.Cluster, node: str, targets: list[tuple[str, str, int]],
                    timeout: float = 1.0) -> list[str]:
    """The same from a node's own namespace (as a hostNetwork pod would)."""
    return _probe(cluster.agent.ns(node), targets, timeout)


def _probe(network: str, targets: list[tuple[str, str, int]], timeout: float) -> list[str]:
    done = subprocess.run(
        ["ip", "netns", "exec", network, sys.executable, "-m", "harness.netprobe", "probe", str(timeout),
         json.dumps(targets)],
        capture_output=True, text=True, check=True, timeout=timeout + 30, env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"})
    return list(json.loads(done.stdout))


def wait_ready_endpoints(cluster: clusters.Cluster, namespace: str, service: str, count: int,
                         timeout: float = 30.0) -> list[str]:
    """Wait until the Service's EndpointSlices list exactly ``count`` ready addresses; returns them."""
    discovery = kubernetes.client.DiscoveryV1Api(cluster.api)
    found: list[str] = []

    def ready() -> bool:
        found.clear()
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}").items
        for item in slices:
            for endpoint in item.endpoints or []:
                if endpoint.conditions is not None and endpoint.conditions.ready:
                    found.extend(endpoint.addresses)
        return len(found) == count

    cluster.wait(f"{count} ready endpoints of {namespace}/{service}", ready, timeout)
    return sorted(found)
