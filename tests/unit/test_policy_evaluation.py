"""NetworkPolicy semantics, case by case: isolation, peers, ports, selectors, both directions.

Each case is one policy set and one connection with the verdict the API's
documented semantics give; cyclonus judges the same evaluator on whole scenarios
elsewhere (tests/netpol).
"""

from __future__ import annotations

from typing import Any

import pytest

from portolan.policies import evaluating

NAMESPACES = {"shop": {"team": "shop", "kubernetes.io/metadata.name": "shop"},
              "db": {"team": "db", "kubernetes.io/metadata.name": "db"},
              "ops": {"team": "ops", "kubernetes.io/metadata.name": "ops"}}
WEB = evaluating.Endpoint("198.18.200.10", "shop", {"app": "web"})
OTHER = evaluating.Endpoint("198.18.200.11", "shop", {"app": "other"})
OPS = evaluating.Endpoint("198.18.202.10", "ops", {"app": "web"})
PG = evaluating.Endpoint("198.18.201.10", "db", {"app": "pg"}, named_ports={("pg", "TCP"): 5432, ("dns", "UDP"): 53})
OUTSIDE = evaluating.Endpoint("198.18.64.20")


def _policy(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"podSelector": {}, **spec}}


DENY_INGRESS = _policy("db", "deny-in", policyTypes=["Ingress"])
DENY_EGRESS = _policy("shop", "deny-out", policyTypes=["Egress"])
FROM_WEB = _policy("db", "from-web", podSelector={"matchLabels": {"app": "pg"}},
                   ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "shop"}},
                                       "podSelector": {"matchLabels": {"app": "web"}}}],
                             "ports": [{"port": "pg"}]}])

CASES = [
    # (name, policies, source, destination, port, protocol, allowed)
    ("no policy: everything is allowed", [], OTHER, PG, 5432, "TCP", True),
    ("default deny of ingress isolates the destination", [DENY_INGRESS], WEB, PG, 5432, "TCP", False),
    ("default deny of egress isolates the source", [DENY_EGRESS], WEB, PG, 5432, "TCP", False),
    ("egress deny does not touch traffic from elsewhere", [DENY_EGRESS], OPS, PG, 5432, "TCP", True),
    ("policyTypes default to Ingress without egress rules", [_policy("db", "x", ingress=[])], WEB, PG, 1, "TCP", False),
    ("policyTypes default adds Egress with egress rules",
     [_policy("shop", "x", egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}])], WEB, PG, 5432, "TCP", False),
    ("an egress rule for DNS lets DNS through",
     [_policy("shop", "x", egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}])], WEB, PG, 53, "UDP", True),
    ("namespaceSelector AND podSelector in one peer: both must match", [FROM_WEB], WEB, PG, 5432, "TCP", True),
    ("... a web pod of another namespace does not match", [FROM_WEB], OPS, PG, 5432, "TCP", False),
    ("... another pod of the right namespace does not match", [FROM_WEB], OTHER, PG, 5432, "TCP", False),
    ("separate peers OR", [_policy("db", "x", ingress=[{"from": [
        {"namespaceSelector": {"matchLabels": {"team": "ops"}}}, {"podSelector": {"matchLabels": {"app": "pg"}}}]}])],
     OPS, PG, 5432, "TCP", True),
    ("a podSelector alone selects in the policy's own namespace", [_policy("db", "x", ingress=[{"from": [
        {"podSelector": {"matchLabels": {"app": "web"}}}]}])], WEB, PG, 5432, "TCP", False),
    ("an empty namespaceSelector selects every namespace", [_policy("db", "x", ingress=[{"from": [
        {"namespaceSelector": {}}]}])], OPS, PG, 5432, "TCP", True),
    ("absent from: every source", [_policy("db", "x", ingress=[{"ports": [{"port": 5432}]}])], OTHER, PG, 5432, "TCP", True),
    ("absent ports: every port", [_policy("db", "x", ingress=[{"from": [{"namespaceSelector": {}}]}])], OTHER, PG, 9, "UDP", True),
    ("named port resolves on the destination pod", [FROM_WEB], WEB, PG, 5433, "TCP", False),
    ("named port needs the protocol of the declared port",
     [_policy("db", "x", ingress=[{"ports": [{"port": "dns", "protocol": "TCP"}]}])], WEB, PG, 53, "TCP", False),
    ("endPort makes a range", [_policy("db", "x", ingress=[{"ports": [{"port": 5000, "endPort": 5500}]}])],
     WEB, PG, 5432, "TCP", True),
    ("... and nothing past it", [_policy("db", "x", ingress=[{"ports": [{"port": 5000, "endPort": 5400}]}])],
     WEB, PG, 5432, "TCP", False),
    ("protocol defaults to TCP", [_policy("db", "x", ingress=[{"ports": [{"port": 5432}]}])], WEB, PG, 5432, "UDP", False),
    ("ipBlock matches a pod's address", [_policy("db", "x", ingress=[{"from": [{"ipBlock": {"cidr": "198.18.200.0/24"}}]}])],
     WEB, PG, 5432, "TCP", True),
    ("ipBlock except carves out", [_policy("db", "x", ingress=[{"from": [{"ipBlock": {
        "cidr": "198.18.200.0/24", "except": ["198.18.200.10/32"]}}]}])], WEB, PG, 5432, "TCP", False),
    ("egress to an ipBlock outside the cluster", [_policy("shop", "x", policyTypes=["Egress"], egress=[
        {"to": [{"ipBlock": {"cidr": "198.18.64.0/24", "except": ["198.18.64.128/25"]}}]}])], WEB, OUTSIDE, 443, "TCP", True),
    ("... except the excluded half", [_policy("shop", "x", policyTypes=["Egress"], egress=[
        {"to": [{"ipBlock": {"cidr": "198.18.64.0/24", "except": ["198.18.64.0/27"]}}]}])], WEB, OUTSIDE, 443, "TCP", False),
    ("selectors never match an address outside the cluster", [_policy("shop", "x", policyTypes=["Egress"], egress=[
        {"to": [{"namespaceSelector": {}}]}])], WEB, OUTSIDE, 443, "TCP", False),
    ("several policies on one pod: the union", [DENY_INGRESS, FROM_WEB], WEB, PG, 5432, "TCP", True),
    ("matchExpressions In", [_policy("db", "x", ingress=[{"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "team", "operator": "In", "values": ["shop", "ops"]}]}}]}])], OPS, PG, 1, "TCP", True),
    ("matchExpressions NotIn", [_policy("db", "x", ingress=[{"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "team", "operator": "NotIn", "values": ["shop"]}]}}]}])], WEB, PG, 1, "TCP", False),
    ("matchExpressions DoesNotExist", [_policy("db", "x", ingress=[{"from": [{"namespaceSelector": {}, "podSelector": {
        "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}}]}])], WEB, PG, 1, "TCP", True),
    ("a policy selecting other pods does not isolate", [_policy("db", "x", podSelector={"matchLabels": {"app": "x"}})],
     WEB, PG, 1, "TCP", True),
    ("both directions must allow", [FROM_WEB, DENY_EGRESS], WEB, PG, 5432, "TCP", False),
]


@pytest.mark.parametrize(("name", "policies", "source", "destination", "port", "protocol", "allowed"), CASES,
                         ids=[case[0] for case in CASES])
def test_the_verdict_follows_the_networkpolicy_semantics(name: str, policies: list[dict[str, Any]],
                                                         source: evaluating.Endpoint, destination: evaluating.Endpoint,
                                                         port: int, protocol: str, allowed: bool) -> None:
    assert evaluating.evaluate(policies, NAMESPACES, source, destination, port, protocol).allowed is allowed


def test_each_verdict_names_what_decided_it() -> None:
    assert evaluating.evaluate([FROM_WEB], NAMESPACES, WEB, PG, 5432).decided_by == \
        "no egress policy selects shop pod; ingress allowed by db/from-web"
    assert evaluating.evaluate([DENY_INGRESS, FROM_WEB], NAMESPACES, OTHER, PG, 5432).decided_by == \
        "ingress denied: isolated by db/deny-in, db/from-web"
    assert evaluating.evaluate([DENY_EGRESS], NAMESPACES, WEB, PG, 5432).decided_by == \
        "egress denied: isolated by shop/deny-out"
