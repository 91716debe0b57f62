"""Evaluating NetworkPolicies: may this source reach this destination on this port?

Pure, over policies as the API server returns them (``networking.k8s.io/v1``
dicts).  Expected reachability is the destination's ingress AND the source's
egress, each computed the way the API defines it:

* a pod is isolated in a direction when any policy of its namespace selects it
  (``podSelector``, empty = every pod) and lists that direction in
  ``policyTypes`` (absent: Ingress, plus Egress when the policy has egress rules);
* an isolated pod admits what at least one rule of those policies allows (the
  union); a rule allows when one of its peers matches (absent or empty peers:
  everything) and one of its ports matches (absent or empty: every port);
* peers: ``podSelector`` (pods of the policy's namespace), ``namespaceSelector``
  (every pod of the matching namespaces), both (the pods that match both), and
  ``ipBlock`` (an address in ``cidr`` and in no ``except``), matched against pod
  IPs too, as the reference implementations and cyclonus do;
* ports: a number, a range up to ``endPort``, or a name resolved against the
  destination pod's declared container ports (a name never matches an address
  outside the cluster); ``protocol`` defaults to TCP;
* label selectors: ``matchLabels`` and ``matchExpressions`` (In, NotIn, Exists,
  DoesNotExist; any other operator is refused with :class:`~portolan.errors.SpecError`,
  never guessed); a key whose value is ``null`` counts as absent, as it does for
  the API server.

Pods come in as the API server returns them (:func:`endpoint_from_pod`): the IP
from ``status.podIP``, named ports from the containers' ``ports`` (protocol
defaulting to TCP).  A ``hostNetwork`` pod is not on the pod network: policies
do not select it and pod or namespace selectors do not match it, so it is an
address like any outside the cluster (the node's), matched only by ``ipBlock``
— what the iptables/nftables enforcers do.

Outside the cluster there is no ingress policy: only the source's egress
decides.  Each answer names what decided it (the allowing policy, or the
policies that isolate the pod without allowing the traffic).  AdminNetworkPolicy
tiers are not evaluated.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from portolan import errors

Policy = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (namespace, labels, IP, named ports), or just an address outside the cluster."""

    ip: str | None
    namespace: str | None = None  # None: not a pod (an address outside the cluster)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    named_ports: Mapping[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # (name, protocol) -> port

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether the connection is allowed, and what decided it.

    ``policies`` names (``namespace/name``) the policies behind the answer: the
    allowing one of each isolated direction, or, when denied, every policy that
    isolates the pod in the denying direction; empty when no policy selects.
    """

    allowed: bool
    decided_by: str
    policies: tuple[str, ...] = ()


_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions) against labels; an empty selector selects everything."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator not in _OPERATORS or not isinstance(key, str):
            raise errors.SpecError(f"label selector expression {dict(expression)!r}: operator must be one of "
                                   f"{', '.join(_OPERATORS)}, with a key")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def endpoint_from_pod(pod: Mapping[str, Any]) -> Endpoint:
    """A pod as the API server returns it; a ``hostNetwork`` pod is only its (node's) address."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    ip = status.get("podIP") or None
    if spec.get("hostNetwork"):
        return Endpoint(ip)
    named = {(str(port["name"]), str(port.get("protocol") or "TCP")): int(port["containerPort"])
             for container in spec.get("containers") or [] for port in container.get("ports") or []
             if port.get("name") and port.get("containerPort") is not None}
    return Endpoint(ip, str(meta.get("namespace") or "default"), dict(meta.get("labels") or {}), named)


def policy_types(policy: Policy) -> list[str]:
    """``policyTypes``, defaulted as the API server does when absent."""
    spec = policy.get("spec") or {}
    given = spec.get("policyTypes")
    if given:
        return list(given)
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _name(policy: Policy) -> str:
    meta = policy.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _in_block(ip: str | None, block: Mapping[str, Any]) -> bool:
    if ip is None:
        return False
    try:
        address = ipaddress.ip_address(ip)
        network = ipaddress.ip_network(str(block.get("cidr")), strict=False)
        excepted = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or []]
    except (TypeError, ValueError) as exc:
        raise errors.SpecError(f"ipBlock {dict(block)!r} or address {ip!r}: {exc}") from exc
    if address.version != network.version or address not in network:
        return False
    return not any(address in e for e in excepted if e.version == address.version)


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, other: Endpoint,
                  namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    if peer.get("ipBlock") is not None:
        return _in_block(other.ip, peer["ipBlock"])
    if not other.is_pod:
        return False  # pod and namespace selectors select pods only
    assert other.namespace is not None
    if peer.get("namespaceSelector") is not None:
        if not selects(peer["namespaceSelector"], namespaces.get(other.namespace, {})):
            return False
    elif other.namespace != policy_namespace:
        return False  # a podSelector alone selects within the policy's namespace
    return peer.get("podSelector") is None or selects(peer["podSelector"], other.labels)


def _port_matches(entry: Mapping[str, Any], port: int, protocol: str, destination: Endpoint) -> bool:
    if (entry.get("protocol") or "TCP") != protocol:
        return False
    wanted = entry.get("port")
    if wanted is None:
        return True  # every port of the protocol
    if isinstance(wanted, str):
        return destination.named_ports.get((wanted, protocol)) == port
    end = entry.get("endPort")
    return int(wanted) <= port <= int(end if end is not None else wanted)


def _rule_allows(rule: Mapping[str, Any], peers_key: str, policy_namespace: str, other: Endpoint, port: int,
                 protocol: str, destination: Endpoint, namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    peers = rule.get(peers_key) or []
    if peers and not any(_peer_matches(peer, policy_namespace, other, namespaces) for peer in peers):
        return False
    ports = rule.get("ports") or []
    return not ports or any(_port_matches(entry, port, protocol, destination) for entry in ports)


def _direction(kind: str, pod: Endpoint, other: Endpoint, port: int, protocol: str, destination: Endpoint,
               policies: Iterable[Policy], namespaces: Mapping[str, Mapping[str, str]]) -> Verdict:
    """Whether ``pod``'s policies of this direction (Ingress: other -> pod; Egress: pod -> other) allow it."""
    isolating = [p for p in policies if (p.get("metadata") or {}).get("namespace") == pod.namespace
                 and selects((p.get("spec") or {}).get("podSelector"), pod.labels) and kind in policy_types(p)]
    if not isolating:
        return Verdict(True, f"no {kind.lower()} policy selects {pod.namespace} pod")
    rules_key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    for policy in isolating:
        namespace = str((policy.get("metadata") or {}).get("namespace", ""))
        for rule in (policy.get("spec") or {}).get(rules_key) or []:
            if _rule_allows(rule, peers_key, namespace, other, port, protocol, destination, namespaces):
                return Verdict(True, f"{kind.lower()} allowed by {_name(policy)}", (_name(policy),))
    names = tuple(sorted(_name(p) for p in isolating))
    return Verdict(False, f"{kind.lower()} denied: isolated by {', '.join(names)}", names)


def evaluate(policies: Sequence[Policy], namespaces: Mapping[str, Mapping[str, str]], source: Endpoint,
             destination: Endpoint, port: int, protocol: str = "TCP") -> Verdict:
    """May ``source`` reach ``destination`` on ``port``/``protocol``? The source's egress AND the destination's ingress."""
    egress = _direction("Egress", source, destination, port, protocol, destination, policies, namespaces) \
        if source.is_pod else Verdict(True, "the source is not a pod")
    ingress = _direction("Ingress", destination, source, port, protocol, destination, policies, namespaces) \
        if destination.is_pod else Verdict(True, "the destination is outside the cluster")
    if not egress.allowed:
        return egress
    if not ingress.allowed:
        return ingress
    return Verdict(True, f"{egress.decided_by}; {ingress.decided_by}", egress.policies + ingress.policies)


Cell = tuple[str, str, int, str]  # (source name, destination name, port, protocol)


def matrix(policies: Sequence[Policy], namespaces: Mapping[str, Mapping[str, str]],
           endpoints: Mapping[str, Endpoint], ports: Sequence[tuple[int, str]], *,
           itself: bool = False) -> dict[Cell, Verdict]:
    """The verdict for every (source, destination, port, protocol) of named endpoints, in order.

    Pairs of two addresses outside the cluster are nobody's policy and are left
    out; so is an endpoint to itself unless ``itself``.
    """
    table: dict[Cell, Verdict] = {}
    for port, protocol in ports:
        for source_name, source in endpoints.items():
            for destination_name, destination in endpoints.items():
                if (source_name == destination_name and not itself) or not (source.is_pod or destination.is_pod):
                    continue
                table[(source_name, destination_name, port, protocol)] = evaluate(
                    policies, namespaces, source, destination, port, protocol)
    return table
