"""Checking NetworkPolicies before evaluating them: refuse what the API server would refuse.

The evaluator (:mod:`.evaluating`) reads policies lazily and would only trip on a
malformed part when some connection reaches it; a file that a user hands the CLI
deserves one message up front instead.  These are the rules of
``networking.k8s.io/v1`` validation that change a verdict if ignored: a peer is
exactly an ``ipBlock`` or selectors (at least one), CIDRs parse and ``except``
lies inside ``cidr``, ``endPort`` needs a numeric ``port`` no greater than it,
ports are 1-65535, protocols TCP/UDP/SCTP, ``policyTypes`` Ingress/Egress, and
selector operators are the four the API knows.  Not a full validator: names,
label syntax and the like are left to the API server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from portolan import errors

_PROTOCOLS = ("TCP", "UDP", "SCTP")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _selector(selector: Any, where: str) -> None:
    if selector is None:
        return
    if not isinstance(selector, Mapping):
        raise errors.SpecError(f"{where}: a label selector is a mapping")
    labels = selector.get("matchLabels")
    if labels is not None and (not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items())):
        raise errors.SpecError(f"{where}.matchLabels: string keys and values")
    for index, expression in enumerate(selector.get("matchExpressions") or []):
        here = f"{where}.matchExpressions[{index}]"
        if not isinstance(expression, Mapping) or not isinstance(expression.get("key"), str):
            raise errors.SpecError(f"{here}: needs a key")
        operator, values = expression.get("operator"), expression.get("values") or []
        if operator not in _OPERATORS:
            raise errors.SpecError(f"{here}: operator must be one of {', '.join(_OPERATORS)}, not {operator!r}")
        if operator in ("In", "NotIn") and not values:
            raise errors.SpecError(f"{here}: {operator} needs values")
        if operator in ("Exists", "DoesNotExist") and values:
            raise errors.SpecError(f"{here}: {operator} takes no values")


def _network(text: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError as exc:
        raise errors.SpecError(f"{where}: {exc}") from exc


def _peer(peer: Any, where: str) -> None:
    if not isinstance(peer, Mapping):
        raise errors.SpecError(f"{where}: a peer is a mapping")
    block = peer.get("ipBlock")
    selectors = [peer.get(key) for key in ("namespaceSelector", "podSelector") if peer.get(key) is not None]
    if block is None and not selectors:
        raise errors.SpecError(f"{where}: a peer needs an ipBlock, a namespaceSelector or a podSelector")
    if block is not None and selectors:
        raise errors.SpecError(f"{where}: an ipBlock peer cannot have selectors too")
    if block is not None:
        if not isinstance(block, Mapping):
            raise errors.SpecError(f"{where}.ipBlock: a mapping with cidr")
        cidr = _network(block.get("cidr"), f"{where}.ipBlock.cidr")
        for index, text in enumerate(block.get("except") or []):
            carved = _network(text, f"{where}.ipBlock.except[{index}]")
            if carved.version != cidr.version or not carved.subnet_of(cidr):  # type: ignore[arg-type]
                raise errors.SpecError(f"{where}.ipBlock.except[{index}]: {carved} is not inside {cidr}")
    _selector(peer.get("namespaceSelector"), f"{where}.namespaceSelector")
    _selector(peer.get("podSelector"), f"{where}.podSelector")


def _port(entry: Any, where: str) -> None:
    if not isinstance(entry, Mapping):
        raise errors.SpecError(f"{where}: a port is a mapping")
    if (entry.get("protocol") or "TCP") not in _PROTOCOLS:
        raise errors.SpecError(f"{where}.protocol: one of {', '.join(_PROTOCOLS)}")
    port, end = entry.get("port"), entry.get("endPort")
    if isinstance(port, bool) or (port is not None and not isinstance(port, int | str)):
        raise errors.SpecError(f"{where}.port: a number or a name")
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise errors.SpecError(f"{where}.port: 1-65535")
    if isinstance(port, str) and (not port or port.isdigit()):
        raise errors.SpecError(f"{where}.port: a port name has a letter ({port!r})")
    if end is not None:
        if not isinstance(port, int) or isinstance(end, bool) or not isinstance(end, int):
            raise errors.SpecError(f"{where}.endPort: needs a numeric port")
        if not port <= end <= 65535:
            raise errors.SpecError(f"{where}.endPort: from port ({port}) to 65535")


def check(policy: Mapping[str, Any]) -> None:
    """Raise :class:`~portolan.errors.SpecError` naming the first part of ``policy`` the API would refuse."""
    meta = policy.get("metadata") or {}
    name = f"NetworkPolicy {meta.get('namespace', '')}/{meta.get('name', '')}"
    spec = policy.get("spec")
    if not isinstance(spec, Mapping):
        raise errors.SpecError(f"{name}: no spec")
    for kind in spec.get("policyTypes") or []:
        if kind not in ("Ingress", "Egress"):
            raise errors.SpecError(f"{name}: policyTypes are Ingress and Egress, not {kind!r}")
    _selector(spec.get("podSelector"), f"{name}: spec.podSelector")
    for rules_key, peers_key in (("ingress", "from"), ("egress", "to")):
        for index, rule in enumerate(spec.get(rules_key) or []):
            where = f"{name}: spec.{rules_key}[{index}]"
            if not isinstance(rule, Mapping):
                raise errors.SpecError(f"{where}: a rule is a mapping")
            for number, peer in enumerate(rule.get(peers_key) or []):
                _peer(peer, f"{where}.{peers_key}[{number}]")
            for number, entry in enumerate(rule.get("ports") or []):
                _port(entry, f"{where}.ports[{number}]")
