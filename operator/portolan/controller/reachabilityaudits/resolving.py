"""Resolving an audit: from its spec and a snapshot of the cluster to the pairs each source will probe.

Pure.  A :class:`Snapshot` holds what the step read from the API server
(namespaces with labels, pods, Services, NetworkPolicies); :func:`pairs`
expands sources x destinations x ports into :class:`Pair` objects, resolving
named ports per destination pod and Services to their ClusterIP with the
backing pods' target ports.  The expected verdict of each pair is filled in
afterwards by :mod:`.expecting`.  Probe and canary pods (labelled
``portolan.dev/audit``) are never destinations of their own; canaries join as
endpoints of the destination whose labels they carry (``listener``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from portolan import errors
from portolan.models import audits

OWN = "portolan.dev/audit"  # the label of every probe and canary pod
CANARY_OF = "portolan.dev/destination"  # a canary's destination
MAX_CIDR_ADDRESSES = 256


@dataclasses.dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class Pod:
    """A pod as the audit sees it."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str | None
    ready: bool = True
    host_network: bool = False
    ports: tuple[ContainerPort, ...] = ()

    @property
    def own(self) -> bool:
        """A probe or canary pod of an audit: never a destination of its own."""
        return OWN in self.labels


@dataclasses.dataclass(frozen=True)
class ServicePort:
    port: int
    target: int | str
    protocol: str = "TCP"


@dataclasses.dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    cluster_ip: str | None
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...] = ()


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What an audit reads of the cluster."""

    namespaces: Mapping[str, Mapping[str, str]]  # name -> labels
    pods: Sequence[Pod]
    services: Sequence[Service] = ()
    policies: Sequence[Mapping[str, Any]] = ()  # NetworkPolicy bodies as the API server returns them


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A probed address: a pod (its identity matters to policies), a Service's ClusterIP, or an outside address."""

    destination: str
    address: str
    pod: Pod | None = None  # the pod behind the address (for Services: None; see backends)
    backends: tuple[Pod, ...] = ()  # a Service's ready pods
    label: str = ""  # namespace/pod, namespace/service or the address
    service_ports: tuple[ServicePort, ...] = ()  # a Service's ports (port -> targetPort)
    listener: bool = False  # a canary: something listens on every audited port


@dataclasses.dataclass(frozen=True)
class Pair:
    """One (source, endpoint, port) to probe; ``port`` is the number probed, ``target`` what policies see."""

    source: str
    endpoint: Endpoint
    port: int
    protocol: str
    target_port: int  # after Service translation: the pod's port
    port_name: str | None = None


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Equality-based matchLabels."""
    return all(labels.get(key) == value for key, value in selector.items())


def source_labels(source: audits.Source, snapshot: Snapshot) -> dict[str, str]:
    """The labels the probe pod of ``source`` carries (copied from a matching pod if asked)."""
    if source.pod_labels is not None:
        return dict(source.pod_labels)
    assert source.from_pods_matching is not None and source.namespace is not None
    found = sorted((p for p in snapshot.pods if p.namespace == source.namespace and not p.own
                    and matches(p.labels, source.from_pods_matching)), key=lambda p: p.name)
    if not found:
        raise errors.SpecError(f"source {source.name}: no pod in {source.namespace} matches {source.from_pods_matching}")
    return dict(found[0].labels)


def endpoints(destination: audits.Destination, snapshot: Snapshot, audit: str = "") -> list[Endpoint]:
    """The addresses a destination stands for (with this audit's canary for it, if one runs)."""
    if destination.pod_selector is not None:
        pods = sorted((p for p in snapshot.pods if p.namespace == destination.namespace and not p.own and p.ip
                       and not p.host_network and matches(p.labels, destination.pod_selector)), key=lambda p: p.name)
        canaries = sorted((p for p in snapshot.pods if p.own and p.ip and p.labels.get(OWN) == audit
                           and p.labels.get(CANARY_OF) == destination.name), key=lambda p: p.name)
        return [Endpoint(destination.name, str(p.ip), pod=p, label=f"{p.namespace}/{p.name}") for p in pods] + \
            [Endpoint(destination.name, str(p.ip), pod=p, label=f"{p.namespace}/canary-{destination.name}",
                      listener=True) for p in canaries]
    if destination.service is not None:
        service = next((s for s in snapshot.services if s.namespace == destination.namespace
                        and s.name == destination.service), None)
        if service is None or not service.cluster_ip or service.cluster_ip == "None":
            raise errors.SpecError(f"destination {destination.name}: Service {destination.namespace}/"
                                   f"{destination.service} has no ClusterIP")
        backends = tuple(sorted((p for p in snapshot.pods if p.namespace == service.namespace and p.ready and p.ip
                                 and not p.own and service.selector and matches(p.labels, service.selector)),
                                key=lambda p: p.name))
        return [Endpoint(destination.name, service.cluster_ip, backends=backends, service_ports=service.ports,
                         label=f"{service.namespace}/{service.name}")]
    found: list[Endpoint] = []
    for cidr in destination.cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        if network.num_addresses > MAX_CIDR_ADDRESSES:
            raise errors.SpecError(f"destination {destination.name}: {cidr} has more than {MAX_CIDR_ADDRESSES} addresses")
        hosts: Iterable[Any] = network if network.num_addresses <= 2 else network.hosts()
        found += [Endpoint(destination.name, str(a), label=str(a)) for a in hosts]
    return found


def _policy_ports(policies: Iterable[Mapping[str, Any]]) -> set[tuple[int | str, str, int | None]]:
    named: set[tuple[int | str, str, int | None]] = set()
    for policy in policies:
        spec = policy.get("spec") or {}
        for direction in ("ingress", "egress"):
            for rule in spec.get(direction) or []:
                for port in rule.get("ports") or []:
                    if port.get("port") is not None:
                        named.add((port["port"], port.get("protocol") or "TCP", port.get("endPort")))
    return named


def _resolve(port: int | str, pod: Pod | None, protocol: str) -> int | None:
    if isinstance(port, int):
        return port
    if pod is None:
        return None
    return next((p.port for p in pod.ports if p.name == port and p.protocol == protocol), None)


def pairs(spec: audits.ReachabilityAuditSpec, snapshot: Snapshot, *, max_pairs: int, audit: str = "") -> list[Pair]:
    """Every pair the audit probes, in a stable order; more than ``max_pairs`` is a SpecError."""
    wanted: list[tuple[int | str, str, int | None]]
    if spec.ports is not None:
        wanted = [(p.port, p.protocol.value, p.end_port) for p in spec.ports]
    else:
        wanted = sorted(_policy_ports(snapshot.policies), key=str)
    found: list[Pair] = []
    for destination in spec.destinations:
        for endpoint in endpoints(destination, snapshot, audit):
            # Without spec.ports: a canary listens, and a Service forwards, only on its own declared ports.
            ports = [] if spec.ports is None and (endpoint.listener or endpoint.service_ports) else list(wanted)
            if spec.ports is None and endpoint.pod is not None:
                ports += [(p.port, p.protocol, None) for p in endpoint.pod.ports]
            if spec.ports is None and endpoint.service_ports:
                ports += [(p.port, p.protocol, None) for p in endpoint.service_ports]
            seen: set[tuple[int, str]] = set()
            for port, protocol, end in ports:
                for number, name in _numbers(port, protocol, end, endpoint):
                    if (number, protocol) in seen:
                        continue
                    seen.add((number, protocol))
                    target = _target(endpoint, number, protocol)
                    if target is None:
                        continue  # a Service port whose named target no backend declares
                    for source in spec.sources:
                        found.append(Pair(source.name, endpoint, number, protocol, target, name))
                        if len(found) > max_pairs:
                            raise errors.GuardrailError(
                                f"the audit has more than {max_pairs} pairs (maxPairsPerAudit); narrow its ports")
    return found


def _numbers(port: int | str, protocol: str, end: int | None, endpoint: Endpoint) -> list[tuple[int, str | None]]:
    if isinstance(port, str):
        pod = endpoint.pod or (endpoint.backends[0] if endpoint.backends else None)
        number = _resolve(port, pod, protocol)
        return [] if number is None else [(number, port)]
    last = end if end is not None and end >= port else port
    return [(number, None) for number in range(port, min(last, port + 63) + 1)]  # endPort ranges: at most 64 probed


def _target(endpoint: Endpoint, number: int, protocol: str) -> int | None:
    """The port a policy sees: for a Service port, its targetPort on the backing pods (names resolved)."""
    if not endpoint.service_ports:
        return number
    port = next((p for p in endpoint.service_ports if p.port == number and p.protocol == protocol), None)
    if port is None:
        return number  # not a port of the Service: kube-proxy drops it; policies see it unchanged
    if isinstance(port.target, int):
        return port.target
    return _resolve(port.target, endpoint.backends[0] if endpoint.backends else None, protocol)
