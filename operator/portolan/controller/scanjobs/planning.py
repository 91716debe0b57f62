"""Shard planning: a deterministic split of a ScanJob into shards, balanced by probe count.

Every pool (vantage) scans every target, so the plan is the same split repeated
per pool.  With at least as many targets as shards, targets are split into
contiguous runs; with fewer, ports are split instead.  Shard sizes differ by at
most one target's (or one port's) worth of probes.  Targets are recorded as
compact address ranges, so a 65,536-address job plans in a few hundred bytes.

Guardrails (allowed/denied CIDRs, probe and target limits, node inventories) are
checked here, before any expansion that could be huge.

A job with ``spec.inventory`` also gets one inventory shard per Ready node of each
named pool (``<pool>-n<index>``: never a scan shard's id, whose last part is a
number), pinned to that node, with the node's addresses as its targets.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from typing import Any

from portolan import errors
from portolan.engine import ports as ports_
from portolan.engine import targets as targets_
from portolan.models import scanjobs, settings, statuses

DEFAULT_POOL = "default"


def pools(spec: scanjobs.ScanJobSpec) -> list[scanjobs.Pool]:
    """The pools a job runs from: its own, or one default pool with no placement."""
    return spec.pools or [scanjobs.Pool(name=DEFAULT_POOL)]


def compact(addresses: Sequence[str]) -> list[str]:
    """Collapse consecutive addresses into ``first-last`` ranges (order kept)."""
    runs: list[str] = []
    start = previous = None
    for text in addresses:
        current = ipaddress.ip_address(text)
        if previous is not None and current.version == previous.version and int(current) == int(previous) + 1:
            previous = current
            continue
        if start is not None and previous is not None:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = current
    if start is not None and previous is not None:
        runs.append(str(start) if start == previous else f"{start}-{previous}")
    return runs


def port_expression(values: Sequence[int]) -> str:
    """The shortest comma list of numbers and ranges for sorted ports."""
    parts: list[str] = []
    index = 0
    while index < len(values):
        end = index
        while end + 1 < len(values) and values[end + 1] == values[end] + 1:
            end += 1
        parts.append(str(values[index]) if end == index else f"{values[index]}-{values[end]}")
        index = end + 1
    return ",".join(parts)


def _chunks(count: int, parts: int) -> list[tuple[int, int]]:
    """Split range(count) into ``parts`` contiguous slices whose sizes differ by at most one."""
    size, extra = divmod(count, parts)
    slices = []
    start = 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        slices.append((start, end))
        start = end
    return slices


def check_guardrails(
    spec: scanjobs.ScanJobSpec, config: settings.OperatorSettings, addresses: Sequence[str]
) -> None:
    """Reject specs that break the operator's limits, before expanding anything big."""
    if spec.inventory is not None and not config.allow_node_inventory:
        raise errors.GuardrailError(
            "this operator does not allow node inventories (allowNodeInventory: false): their pods use the "
            "nodes' network and PID namespaces (Pod Security privileged)"
        )
    if not config.allow_raw_sockets and (spec.technique == scanjobs.Technique.SYN or spec.capture is not None):
        raise errors.GuardrailError(
            "this operator does not allow raw sockets (allowRawSockets: false): "
            "use technique: connect and no capture"
        )
    estimated = targets_.count_addresses(addresses)
    if estimated > config.max_targets_per_job:
        raise errors.GuardrailError(
            f"targets expand to {estimated} addresses, above the limit of {config.max_targets_per_job}"
        )
    tcp = len(ports_.parse_ports(spec.ports)) if "tcp" in spec.protocols else 0
    udp = len(ports_.parse_ports(spec.udp_ports or spec.ports)) if "udp" in spec.protocols else 0
    probes = estimated * (tcp + udp) * len(pools(spec))
    if probes > config.max_probes_per_job:
        raise errors.GuardrailError(
            f"the job asks for {probes} probes, above the limit of {config.max_probes_per_job}"
        )


def _check_cidrs(found: Sequence[targets_.Target], config: settings.OperatorSettings) -> None:
    allowed = [ipaddress.ip_network(c, strict=False) for c in config.allowed_cidrs]
    denied = [ipaddress.ip_network(c, strict=False) for c in config.denied_cidrs]
    for target in found:
        address = ipaddress.ip_address(target.address)
        if allowed and not any(address in network for network in allowed):
            raise errors.GuardrailError(
                f"target {target.address} is outside the allowed CIDRs ({', '.join(config.allowed_cidrs)})"
            )
        for network in denied:
            if address in network:
                raise errors.GuardrailError(f"target {target.address} lies in denied CIDR {network}")


NodeAddresses = Mapping[str, Sequence[tuple[str, Sequence[str]]]]  # pool -> [(node, its addresses)]


def _ready(node: Mapping[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def inventory_nodes(spec: scanjobs.ScanJobSpec,
                    nodes: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, list[str]]]]:
    """The Ready nodes of each pool in ``spec.inventory`` (by the pool's nodeSelector), with their addresses.

    A node's addresses are its InternalIPs and ExternalIPs.  A pool's ``affinity`` is not
    evaluated here: its nodeSelector alone decides (an empty one selects every node).
    """
    if spec.inventory is None:
        return {}
    by_name = {pool.name: pool for pool in pools(spec)}
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for name in spec.inventory.pools:
        wanted = by_name[name].node_selector
        chosen = []
        for node in sorted(nodes, key=lambda n: str((n.get("metadata") or {}).get("name"))):
            meta = node.get("metadata") or {}
            labels = meta.get("labels") or {}
            if not _ready(node) or any(labels.get(key) != value for key, value in wanted.items()):
                continue
            addresses = [a["address"] for a in (node.get("status") or {}).get("addresses") or []
                         if a.get("type") in ("InternalIP", "ExternalIP") and a.get("address")]
            chosen.append((str(meta.get("name")), addresses))
        found[name] = chosen
    return found


def inventory_plan(spec: scanjobs.ScanJobSpec, nodes: NodeAddresses) -> list[statuses.ShardPlan]:
    """One inventory shard per node of each inventoried pool; a pool without Ready nodes is refused."""
    if spec.inventory is None:
        return []
    shard_plans = []
    for pool in spec.inventory.pools:
        members = nodes.get(pool) or []
        if not members:
            raise errors.NoInventoryNodesError(f"inventory pool {pool} has no Ready node to inventory")
        for index, (node, addresses) in enumerate(members):
            shard_plans.append(statuses.ShardPlan(
                id=f"{pool}-n{index}", pool=pool, index=index, targets=list(addresses), ports="", probes=0,
                kind=statuses.ShardKind.INVENTORY, node=node))
    return shard_plans


def plan(
    spec: scanjobs.ScanJobSpec,
    config: settings.OperatorSettings,
    addresses: Sequence[str],
    *,
    resolve: targets_.Resolver = targets_.resolve_host,
    nodes: NodeAddresses | None = None,
) -> list[statuses.ShardPlan]:
    """Plan the shards of a job whose selector targets are already resolved into ``addresses``.

    ``nodes``: the Ready nodes of the job's inventory pools (:func:`inventory_nodes`), when it asks for one.
    """
    if spec.expect is not None and spec.expect.allowed_open_ports:
        ports_.parse_ports(spec.expect.allowed_open_ports)  # a bad expression is refused now, not at the end
    check_guardrails(spec, config, addresses)
    inventories = inventory_plan(spec, nodes or {})
    found = targets_.parse_targets(
        addresses, spec.targets.exclude, resolve=resolve, limit=config.max_targets_per_job
    )
    _check_cidrs(found, config)
    tcp = ports_.parse_ports(spec.ports) if "tcp" in spec.protocols else []
    udp = ports_.parse_ports(spec.udp_ports or spec.ports) if "udp" in spec.protocols else []
    port_list = sorted(set(tcp) | set(udp))
    wanted = spec.sharding.shards
    if wanted is None and spec.sharding.targets_per_shard:
        wanted = math.ceil(len(found) / spec.sharding.targets_per_shard)
    count = max(1, min(wanted or 1, len(found) * len(port_list)))
    slices: list[tuple[list[str], list[int]]] = []
    if len(found) >= count:
        for start, end in _chunks(len(found), count):
            slices.append(([t.address for t in found[start:end]], port_list))
    else:
        addresses_all = [t.address for t in found]
        for start, end in _chunks(len(port_list), count):
            slices.append((addresses_all, port_list[start:end]))
    shard_plans = []
    for pool in pools(spec):
        for index, (shard_targets, shard_ports) in enumerate(slices):
            tcp_part = [p for p in shard_ports if p in set(tcp)] if tcp else []
            udp_part = [p for p in shard_ports if p in set(udp)] if udp else []
            shard_plans.append(
                statuses.ShardPlan(
                    id=f"{pool.name}-{index}",
                    pool=pool.name,
                    index=index,
                    targets=compact(shard_targets),
                    ports=port_expression(tcp_part) if tcp_part else "",
                    udp_ports=port_expression(udp_part) if udp_part else None,
                    probes=len(shard_targets) * (len(tcp_part) + len(udp_part)),
                )
            )
    return shard_plans + inventories
