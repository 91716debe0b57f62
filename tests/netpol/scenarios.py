"""NetworkPolicy scenarios: a small cluster of namespaces and pods, and policy sets over it.

Written from the API's documented semantics (and the kinds of cases cyclonus's
generator and the upstream e2e suite exercise), in our own words.  Each scenario
is data: the policies as the API server returns them (``policyTypes`` filled),
to be judged by cyclonus and evaluated by Portolan — and, on the control plane,
enforced by the test bed.  Ports: TCP 80, 5432 (named ``pg`` on the database
pods), 5433, 8080 (named ``http`` on web pods), UDP 53 (named ``dns`` on the
database pods) and 9053.
"""

from __future__ import annotations

import dataclasses
from typing import Any

NAMESPACES: dict[str, dict[str, str]] = {
    "shop": {"kubernetes.io/metadata.name": "shop", "team": "shop", "tier": "front"},
    "db": {"kubernetes.io/metadata.name": "db", "team": "db", "tier": "back"},
    "ops": {"kubernetes.io/metadata.name": "ops", "team": "ops"},
}


@dataclasses.dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: dict[str, str]
    ip: str
    ports: tuple[tuple[str, int, str], ...] = ()  # (name, port, protocol)


PODS = [
    Pod("shop", "web", {"app": "web", "tier": "front"}, "198.18.200.10", (("http", 8080, "TCP"),)),
    Pod("shop", "cart", {"app": "cart"}, "198.18.200.11"),
    Pod("db", "pg", {"app": "pg", "tier": "back"}, "198.18.201.10", (("pg", 5432, "TCP"), ("dns", 53, "UDP"))),
    Pod("db", "cache", {"app": "cache"}, "198.18.201.11"),
    Pod("ops", "web", {"app": "web"}, "198.18.202.10", (("http", 8080, "TCP"),)),
]
OUTSIDE = "198.18.64.20"  # a test host outside the cluster
PORTS = [(80, "TCP"), (5432, "TCP"), (5433, "TCP"), (8080, "TCP"), (53, "UDP"), (9053, "UDP")]


def policy(namespace: str, name: str, types: list[str], *, selector: dict[str, Any] | None = None,
           ingress: list[dict[str, Any]] | None = None, egress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": selector or {}, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


def labels(**values: str) -> dict[str, Any]:
    return {"matchLabels": dict(values)}


SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "no-policies": [],
    "default-deny-ingress": [policy("db", "deny-ingress", ["Ingress"])],
    "default-deny-egress": [policy("shop", "deny-egress", ["Egress"])],
    "deny-all-both-ways": [policy(ns, "deny-all", ["Ingress", "Egress"]) for ns in NAMESPACES],
    "allow-all-ingress-empty-rule": [policy("db", "deny", ["Ingress"]), policy("db", "allow-all", ["Ingress"], ingress=[{}])],
    "empty-pod-selector-peer-is-own-namespace": [
        policy("db", "same-ns", ["Ingress"], ingress=[{"from": [{"podSelector": {}}]}])],
    "empty-namespace-selector-peer-is-everywhere": [
        policy("db", "any-ns", ["Ingress"], ingress=[{"from": [{"namespaceSelector": {}}]}])],
    "namespace-and-pod-selector-in-one-peer": [
        policy("db", "web-of-shop", ["Ingress"], selector=labels(app="pg"),
               ingress=[{"from": [{"namespaceSelector": labels(team="shop"), "podSelector": labels(app="web")}]}])],
    "namespace-or-pod-selector-as-two-peers": [
        policy("db", "shop-or-web", ["Ingress"], selector=labels(app="pg"),
               ingress=[{"from": [{"namespaceSelector": labels(team="shop")}, {"podSelector": labels(app="web")}]}])],
    "match-expressions": [
        policy("db", "not-ops", ["Ingress"], ingress=[{"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "team", "operator": "NotIn", "values": ["ops"]}]}, "podSelector": {"matchExpressions": [
                {"key": "tier", "operator": "Exists"}]}}]}])],
    "ip-block-with-except-ingress": [
        policy("db", "from-block", ["Ingress"], ingress=[{"from": [{"ipBlock": {
            "cidr": "198.18.200.0/23", "except": ["198.18.200.10/32"]}}]}])],
    "ip-block-with-except-egress-outside": [
        policy("shop", "to-outside", ["Egress"], egress=[{"to": [{"ipBlock": {
            "cidr": "198.18.64.0/24", "except": ["198.18.64.16/28"]}}]}])],
    "named-port": [
        policy("db", "pg-port", ["Ingress"], selector=labels(app="pg"), ingress=[{"ports": [{"port": "pg", "protocol": "TCP"}]}])],
    "named-port-udp": [
        policy("db", "dns-port", ["Ingress"], ingress=[{"ports": [{"port": "dns", "protocol": "UDP"}]}])],
    "end-port-range": [
        policy("db", "range", ["Ingress"], ingress=[{"ports": [{"port": 5000, "endPort": 5432, "protocol": "TCP"}]}])],
    "tcp-only-rule-leaves-udp-blocked": [
        policy("db", "tcp-80", ["Ingress"], ingress=[{"ports": [{"port": 80, "protocol": "TCP"}]}])],
    "udp-rule": [
        policy("db", "udp-9053", ["Ingress"], ingress=[{"ports": [{"port": 9053, "protocol": "UDP"}]}])],
    "several-policies-union": [
        policy("db", "deny", ["Ingress"]),
        policy("db", "web-5432", ["Ingress"], selector=labels(app="pg"),
               ingress=[{"from": [{"namespaceSelector": {}, "podSelector": labels(app="web")}],
                         "ports": [{"port": 5432, "protocol": "TCP"}]}]),
        policy("db", "ops-anything", ["Ingress"], ingress=[{"from": [{"namespaceSelector": labels(team="ops")}]}])],
    "dns-egress-only": [
        policy("shop", "dns-only", ["Egress"], egress=[{"ports": [{"port": 53, "protocol": "UDP"},
                                                                   {"port": 53, "protocol": "TCP"}]}])],
    "egress-and-ingress-both-must-allow": [
        policy("shop", "web-out", ["Egress"], selector=labels(app="web"),
               egress=[{"to": [{"namespaceSelector": labels(team="db")}], "ports": [{"port": 5432, "protocol": "TCP"}]}]),
        policy("db", "pg-in", ["Ingress"], selector=labels(app="pg"),
               ingress=[{"from": [{"namespaceSelector": labels(team="shop")}]}])],
    "shop-and-db-like-application": [
        policy("shop", "deny-all", ["Ingress", "Egress"]),
        policy("shop", "web-egress", ["Egress"], selector=labels(app="web"), egress=[
            {"to": [{"namespaceSelector": labels(team="db"), "podSelector": labels(app="pg")}],
             "ports": [{"port": "pg", "protocol": "TCP"}]},
            {"ports": [{"port": 53, "protocol": "UDP"}]}]),
        policy("shop", "web-ingress", ["Ingress"], selector=labels(app="web"),
               ingress=[{"ports": [{"port": 8080, "protocol": "TCP"}]}]),
        policy("db", "deny-all", ["Ingress"]),
        policy("db", "pg-from-web", ["Ingress"], selector=labels(app="pg"), ingress=[
            {"from": [{"namespaceSelector": labels(team="shop"), "podSelector": labels(app="web")}],
             "ports": [{"port": 5432, "protocol": "TCP"}]}])],
}


def port_name(pod: Pod | None, port: int, protocol: str) -> str:
    """The destination's name for a port it declares ('' otherwise)."""
    if pod is None:
        return ""
    return next((name for name, number, proto in pod.ports if number == port and proto == protocol), "")
