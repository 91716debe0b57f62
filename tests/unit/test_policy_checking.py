"""NetworkPolicies the API server would refuse are refused up front, each with where and why; valid ones pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from netpol import scenarios
from portolan import errors
from portolan.policies import checking


def _policy(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "db", "name": "p"}, "spec": {"podSelector": {}, **spec}}


def _from(*peers: Any, ports: list[Any] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"from": list(peers)}
    if ports is not None:
        rule["ports"] = ports
    return _policy(ingress=[rule])


BAD = [
    ("a peer with nothing in it", _from({}), "ingress[0].from[0]: a peer needs"),
    ("a peer with only null fields", _from({"podSelector": None, "namespaceSelector": None}), "a peer needs"),
    ("an ipBlock beside a selector", _from({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
     "cannot have selectors too"),
    ("a CIDR that does not parse", _from({"ipBlock": {"cidr": "10.0.0.0/33"}}), "ipBlock.cidr"),
    ("an except outside its cidr", _from({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/24"]}}),
     "except[0]: 11.0.0.0/24 is not inside 10.0.0.0/8"),
    ("an except of the other family", _from({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}),
     "is not inside"),
    ("an unknown operator", _from({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
     "operator must be one of"),
    ("In without values", _from({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
     "In needs values"),
    ("Exists with values", _from({"namespaceSelector": {"matchExpressions": [
        {"key": "a", "operator": "Exists", "values": ["x"]}]}}), "Exists takes no values"),
    ("port zero", _from({"podSelector": {}}, ports=[{"port": 0}]), "ports[0].port: 1-65535"),
    ("a numeric string as a port name", _from({"podSelector": {}}, ports=[{"port": "80"}]), "has a letter"),
    ("an unknown protocol", _from({"podSelector": {}}, ports=[{"port": 80, "protocol": "ICMP"}]), "protocol"),
    ("endPort below port", _from({"podSelector": {}}, ports=[{"port": 90, "endPort": 80}]), "endPort: from port (90)"),
    ("endPort with a named port", _from({"podSelector": {}}, ports=[{"port": "web", "endPort": 80}]),
     "endPort: needs a numeric port"),
    ("an unknown policy type", _policy(policyTypes=["Sideways"]), "policyTypes"),
    ("matchLabels with a number", _policy(podSelector={"matchLabels": {"app": 1}}), "spec.podSelector.matchLabels"),
    ("no spec", {"metadata": {"namespace": "db", "name": "p"}}, "no spec"),
]


@pytest.mark.parametrize(("name", "policy", "message"), BAD, ids=[case[0] for case in BAD])
def test_a_policy_the_api_would_refuse_is_refused_with_where_and_why(name: str, policy: dict[str, Any],
                                                                      message: str) -> None:
    with pytest.raises(errors.SpecError, match="NetworkPolicy db/p") as raised:
        checking.check(policy)
    assert message in str(raised.value)


def test_every_scenario_policy_passes_and_is_left_unchanged() -> None:
    checked = 0
    for name in scenarios.names():
        for policy in scenarios.load(name).policies:
            before = copy.deepcopy(policy)
            checking.check(policy)
            assert policy == before
            checked += 1
    assert checked >= 40
