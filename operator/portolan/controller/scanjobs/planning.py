"""Shard planning: a deterministic split of a ScanJob into shards, balanced by probe count.

Every pool (vantage) scans every target, so the plan is the same split repeated
per pool.  With at least as many targets as shards, targets are split into
contiguous runs; with fewer, ports are split instead.  Shard sizes differ by at
most one target's (or one port's) worth of probes.  Targets are recorded as
compact address ranges, so a 65,536-address job plans in a few hundred bytes.

UDP spread.  A Linux target answers closed UDP ports with ICMP errors at about
one per second per source address, so one scanner needs about a second per
closed port per host whatever the split by targets.  When a job has UDP ports
and its pool has more than one node the planner can place on, the UDP ports of
every target are split into disjoint slices, one per node (more shards asked
for become more target runs), and each UDP shard is pinned to its node
(:attr:`~portolan.models.statuses.ShardPlan.node`): every node has its own
address, so its own ICMP budget at each target.  TCP ports are planned as in a
TCP-only job, in shards of their own.  Pod addresses do not count: traffic
leaving the cluster is commonly masqueraded to the node's address, so only
distinct nodes are sure to be distinct sources.  Which nodes a pool can use is
read from the nodes observed at planning time (Ready, schedulable, matching the
pool's nodeSelector and required node affinity, every NoSchedule/NoExecute
taint tolerated); the plan is then fixed, and a shard whose node is lost runs
elsewhere in its pool (correct, only slower).  Without a spread a target's UDP
ports are never split across shards: shards behind one address would share the
target's ICMP budget and take each other's answers for silence.

Guardrails (allowed/denied CIDRs, probe and target limits, node inventories) are
checked here, before any expansion that could be huge.

A job with ``spec.inventory`` also gets one inventory shard per Ready node of each
named pool (``<pool>-n<index>``: never a scan shard's id, whose last part is a
number), pinned to that node, with the node's addresses as its targets.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping, Sequence
from typing import Any

from portolan import errors
from portolan.engine import ports as ports_
from portolan.engine import targets as targets_
from portolan.models import scanjobs, settings, statuses

DEFAULT_POOL = "default"
_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


@dataclasses.dataclass(frozen=True)
class Taint:
    key: str
    value: str | None
    effect: str


@dataclasses.dataclass(frozen=True)
class NodeView:
    """What planning needs to know about one Node: can a pool's shard pods be placed on it."""

    name: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False


def node_view(node: Mapping[str, Any]) -> NodeView:
    """Reduce a Node (a dict in the API's JSON shape) to what planning reads."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = tuple(Taint(str(t.get("key") or ""), t.get("value"), str(t.get("effect") or ""))
                   for t in spec.get("taints") or [])
    return NodeView(name=str(meta.get("name") or ""), labels=dict(meta.get("labels") or {}), taints=taints,
                             ready=ready, unschedulable=bool(spec.get("unschedulable")))


def pools(spec: scanjobs.ScanJobSpec) -> list[scanjobs.Pool]:
    """The pools a job runs from: its own, or one default pool with no placement."""
    return spec.pools or [scanjobs.Pool(name=DEFAULT_POOL)]


def _tolerated(taint: Taint, tolerations: Sequence[scanjobs.Toleration]) -> bool:
    """Whether one of the tolerations tolerates the taint (the scheduler's rules)."""
    for toleration in tolerations:
        if toleration.effect is not None and toleration.effect != taint.effect:
            continue
        if toleration.operator == "Exists":
            if toleration.key in (None, "", taint.key):
                return True
        elif toleration.key == taint.key and (toleration.value or "") == (taint.value or ""):
            return True
    return False


def _expression_holds(expression: Mapping[str, Any], value: str | None) -> bool:
    """One node selector requirement (In, NotIn, Exists, DoesNotExist, Gt, Lt) against a label or field value."""
    operator = expression.get("operator")
    values = [str(v) for v in expression.get("values") or []]
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _affinity_allows(affinity: Mapping[str, Any] | None, node: NodeView) -> bool:
    """Whether the pool's required node affinity lets a pod on the node (terms ORed, requirements ANDed)."""
    required = ((affinity or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    for term in required.get("nodeSelectorTerms") or []:
        labels = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if not labels and not fields:
            continue  # an empty term matches no node
        if all(_expression_holds(e, node.labels.get(str(e.get("key")))) for e in labels) and all(
            _expression_holds(e, node.name if e.get("key") == "metadata.name" else None) for e in fields
        ):
            return True
    return False


def pool_nodes(pool: scanjobs.Pool, nodes: Sequence[NodeView]) -> list[str]:
    """The names (sorted) of the Ready, schedulable nodes the pool's shard pods can be placed on."""
    found = []
    for node in nodes:
        if not node.ready or node.unschedulable:
            continue
        if any(node.labels.get(key) != value for key, value in pool.node_selector.items()):
            continue
        if any(t.effect in _BLOCKING_EFFECTS and not _tolerated(t, pool.tolerations) for t in node.taints):
            continue
        if not _affinity_allows(pool.affinity, node):
            continue
        found.append(node.name)
    return sorted(found)


def udp_spread(plan: Sequence[statuses.ShardPlan]) -> dict[str, list[str]]:
    """Per pool, the nodes its UDP shards are pinned to (pools without a UDP spread are left out)."""
    spread: dict[str, list[str]] = {}
    for shard in plan:
        if shard.kind != statuses.ShardKind.SCAN:
            continue  # an inventory shard is pinned to the node it lists, not one slice of a spread
        if shard.node is not None and shard.node not in spread.setdefault(shard.pool, []):
            spread[shard.pool].append(shard.node)
    return {pool: names for pool, names in spread.items() if names}


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


def inventory_nodes(spec: scanjobs.ScanJobSpec,
                    nodes: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, list[str]]]]:
    """The nodes each pool in ``spec.inventory`` can place pods on (:func:`pool_nodes`), with their addresses.

    The same choice as for shard pods: Ready, schedulable, the pool's nodeSelector and required
    node affinity, every NoSchedule/NoExecute taint tolerated — an inventory pod pinned to a node
    it may not run on would wait, unscheduled, for ever.  A node's addresses are its InternalIPs
    and ExternalIPs.
    """
    if spec.inventory is None:
        return {}
    by_name = {pool.name: pool for pool in pools(spec)}
    addresses = {str((n.get("metadata") or {}).get("name")): [
        a["address"] for a in (n.get("status") or {}).get("addresses") or []
        if a.get("type") in ("InternalIP", "ExternalIP") and a.get("address")] for n in nodes}
    views = [node_view(n) for n in nodes]
    return {name: [(node, addresses[node]) for node in pool_nodes(by_name[name], views)]
            for name in spec.inventory.pools}


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


def _slices(found: Sequence[str], ports: Sequence[int], count: int) -> list[tuple[list[str], list[int]]]:
    """Today's split: contiguous target runs when there are enough targets, else contiguous port runs."""
    count = max(1, min(count, len(found) * len(ports)))
    if len(found) >= count:
        return [(list(found[start:end]), list(ports)) for start, end in _chunks(len(found), count)]
    return [(list(found), list(ports[start:end])) for start, end in _chunks(len(ports), count)]


def _spread_slices(
    found: Sequence[str], udp: Sequence[int], count: int, nodes: Sequence[str]
) -> list[tuple[list[str], list[int], str]]:
    """UDP shards as (targets, ports, node): each target's ports in disjoint slices, slice i on node i.

    One slice per node (as far as there are ports), never two slices of one target on one node:
    two scanners behind one address share the target's ICMP budget, and each would take the
    other's answers for silence.  More shards asked for become more target runs.
    """
    slices = min(len(nodes), len(udp))
    runs = min(len(found), max(1, math.ceil(count / slices)))
    shards = []
    for first, last in _chunks(len(found), runs):
        for index, (start, end) in enumerate(_chunks(len(udp), slices)):
            shards.append((list(found[first:last]), list(udp[start:end]), nodes[index]))
    return shards


def plan(
    spec: scanjobs.ScanJobSpec,
    config: settings.OperatorSettings,
    addresses: Sequence[str],
    *,
    resolve: targets_.Resolver = targets_.resolve_host,
    nodes: Sequence[NodeView] = (),
    inventory_nodes: NodeAddresses | None = None,
) -> list[statuses.ShardPlan]:
    """Plan the shards of a job whose selector targets are already resolved into ``addresses``.

    ``nodes`` are the cluster's nodes at planning time: a pool with UDP ports and more than one
    node its pods can use gets its UDP ports spread across them (see the module's docstring).
    ``inventory_nodes``: the Ready nodes of the job's inventory pools (:func:`inventory_nodes`),
    when it asks for one.
    """
    if spec.expect is not None and spec.expect.allowed_open_ports:
        ports_.parse_ports(spec.expect.allowed_open_ports)  # a bad expression is refused now, not at the end
    check_guardrails(spec, config, addresses)
    inventories = inventory_plan(spec, inventory_nodes or {})
    found = targets_.parse_targets(
        addresses, spec.targets.exclude, resolve=resolve, limit=config.max_targets_per_job
    )
    _check_cidrs(found, config)
    tcp = ports_.parse_ports(spec.ports) if "tcp" in spec.protocols else []
    udp = ports_.parse_ports(spec.udp_ports or spec.ports) if "udp" in spec.protocols else []
    tcp_set, udp_set = set(tcp), set(udp)
    port_list = sorted(tcp_set | udp_set)
    wanted = spec.sharding.shards
    if wanted is None and spec.sharding.targets_per_shard:
        wanted = math.ceil(len(found) / spec.sharding.targets_per_shard)
    everyone = [t.address for t in found]
    shared = _slices(everyone, port_list, wanted or 1)
    shard_plans = []
    for pool in pools(spec):
        usable = pool_nodes(pool, nodes) if len(udp) > 1 else []
        layout: list[tuple[list[str], list[int], list[int], str | None]] = []
        if len(usable) > 1:
            if tcp:
                layout += [(t, p, [], None) for t, p in _slices(everyone, sorted(tcp_set), wanted or 1)]
            layout += [(t, [], p, node) for t, p, node in _spread_slices(everyone, sorted(udp_set), wanted or 1,
                                                                          usable)]
        elif len(udp) > 1 and len(shared) > 1 and shared[0][0] == shared[1][0]:
            # Today's split is by ports, but a target's UDP ports stay in one shard: from one source
            # address, two shards would share the target's ICMP budget (see _spread_slices).
            if tcp:
                layout += [(t, p, [], None) for t, p in _slices(everyone, sorted(tcp_set), wanted or 1)]
            layout += [(t, [], p, None) for t, p in _slices(everyone, sorted(udp_set), min(wanted or 1, len(found)))]
        else:
            layout = [(t, [p for p in ps if p in tcp_set], [p for p in ps if p in udp_set], None) for t, ps in shared]
        for index, (shard_targets, tcp_part, udp_part, node) in enumerate(layout):
            shard_plans.append(
                statuses.ShardPlan(
                    id=f"{pool.name}-{index}",
                    pool=pool.name,
                    index=index,
                    targets=compact(shard_targets),
                    ports=port_expression(tcp_part) if tcp_part else "",
                    udp_ports=port_expression(udp_part) if udp_part else None,
                    probes=len(shard_targets) * (len(tcp_part) + len(udp_part)),
                    node=node,
                )
            )
    return shard_plans + inventories
