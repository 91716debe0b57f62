"""NetworkPolicy semantics, case by case: isolation, peers, ports, selectors, both directions.

Each case is one policy set and one connection with the verdict the API's
documented semantics give; cyclonus judges the same evaluator on whole scenarios
elsewhere (tests/netpol).
"""

from __future__ import annotations

from typing import Any

import pytest

from portolan import errors
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


NULL_KEYS = [
    ("a null namespaceSelector is absent: the policy's own namespace only",
     {"namespaceSelector": None, "podSelector": {"matchLabels": {"app": "web"}}}, OPS, False),
    ("a null podSelector beside a namespaceSelector is absent: every pod there",
     {"namespaceSelector": {"matchLabels": {"team": "ops"}}, "podSelector": None}, OPS, True),
    ("a null ipBlock beside a podSelector is absent", {"ipBlock": None, "podSelector": {}}, OTHER, False),
]


@pytest.mark.parametrize(("name", "peer", "source", "allowed"), NULL_KEYS, ids=[case[0] for case in NULL_KEYS])
def test_a_null_peer_field_counts_as_absent(name: str, peer: dict[str, Any], source: evaluating.Endpoint,
                                            allowed: bool) -> None:
    policy = _policy("db", "x", ingress=[{"from": [peer]}])
    assert evaluating.evaluate([policy], NAMESPACES, source, PG, 5432).allowed is allowed


def _pod(namespace: str, labels: dict[str, str], ip: str, *, host_network: bool = False,
         ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": "p", "labels": labels},
            "spec": {"hostNetwork": host_network, "containers": [{"name": "c", "ports": ports or []}]},
            "status": {"podIP": ip}}


def test_a_pod_from_the_api_keeps_its_namespace_labels_ip_and_named_ports_with_tcp_by_default() -> None:
    endpoint = evaluating.endpoint_from_pod(_pod("db", {"app": "pg"}, "198.18.201.10", ports=[
        {"name": "pg", "containerPort": 5432}, {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        {"containerPort": 9000}]))
    assert endpoint == evaluating.Endpoint("198.18.201.10", "db", {"app": "pg"},
                                           {("pg", "TCP"): 5432, ("dns", "UDP"): 53})
    named = _policy("db", "x", ingress=[{"ports": [{"port": "dns", "protocol": "UDP"}]}])
    assert evaluating.evaluate([named], NAMESPACES, WEB, endpoint, 53, "UDP").allowed is True
    assert evaluating.evaluate([named], NAMESPACES, WEB, endpoint, 5432, "TCP").allowed is False


def test_a_host_network_source_is_its_node_address_matched_by_ip_blocks_only() -> None:
    node = evaluating.endpoint_from_pod(_pod("shop", {"app": "web"}, "198.18.100.2", host_network=True))
    assert not node.is_pod and node.ip == "198.18.100.2"
    from_web_pods = _policy("db", "x", ingress=[{"from": [{"namespaceSelector": {}, "podSelector": {}}]}])
    from_nodes = _policy("db", "y", ingress=[{"from": [{"ipBlock": {"cidr": "198.18.100.0/24"}}]}])
    assert evaluating.evaluate([from_web_pods], NAMESPACES, node, PG, 5432).allowed is False
    verdict = evaluating.evaluate([from_web_pods, from_nodes], NAMESPACES, node, PG, 5432)
    assert verdict == evaluating.Verdict(True, "the source is not a pod; ingress allowed by db/y", ("db/y",))
    # an egress default deny in its namespace does not apply to a pod that is not on the pod network
    assert evaluating.evaluate([DENY_EGRESS], NAMESPACES, node, PG, 5432).allowed is True


BAD = [
    ("an unknown selector operator", _policy("db", "x", ingress=[{"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "app", "operator": "Near", "values": ["web"]}]}}]}]), "operator must be one of"),
    ("an ipBlock that is no network", _policy("db", "x", ingress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]),
     "ipBlock"),
]


@pytest.mark.parametrize(("name", "policy", "message"), BAD, ids=[case[0] for case in BAD])
def test_a_malformed_policy_is_refused_rather_than_guessed(name: str, policy: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.SpecError, match=message):
        evaluating.evaluate([policy], NAMESPACES, OTHER, PG, 5432)


def test_the_matrix_covers_every_pair_but_outside_to_outside_and_itself_unless_asked() -> None:
    endpoints = {"shop/web": WEB, "db/pg": PG, "outside": OUTSIDE, "elsewhere": evaluating.Endpoint("198.18.64.21")}
    table = evaluating.matrix([FROM_WEB], NAMESPACES, endpoints, [(5432, "TCP"), (53, "UDP")])
    pairs = {(s, d) for s, d, _, _ in table}
    assert ("outside", "elsewhere") not in pairs and ("db/pg", "db/pg") not in pairs
    assert len(table) == 2 * (4 * 3 - 2)
    assert table[("shop/web", "db/pg", 5432, "TCP")].allowed is True
    assert table[("outside", "db/pg", 5432, "TCP")].allowed is False
    assert table[("db/pg", "outside", 53, "UDP")].allowed is True
    with_itself = evaluating.matrix([FROM_WEB], NAMESPACES, endpoints, [(5432, "TCP")], itself=True)
    assert with_itself[("db/pg", "db/pg", 5432, "TCP")].allowed is False  # pg is not a web pod of shop


def test_each_verdict_lists_the_policies_behind_it() -> None:
    shop_out = _policy("shop", "web-out", policyTypes=["Egress"], egress=[{"to": [{"namespaceSelector": {}}]}])
    assert evaluating.evaluate([FROM_WEB, shop_out], NAMESPACES, WEB, PG, 5432).policies == ("shop/web-out", "db/from-web")
    assert evaluating.evaluate([FROM_WEB, DENY_INGRESS], NAMESPACES, OTHER, PG, 5432).policies == (
        "db/deny-in", "db/from-web")
    assert evaluating.evaluate([], NAMESPACES, OTHER, PG, 5432).policies == ()
