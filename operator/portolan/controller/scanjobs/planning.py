"""Shard planning: a deterministic split of a ScanJob into shards, balanced by probe count.

Every pool (vantage) scans every target, so the plan is the same split repeated
per pool.  With at least as many targets as shards, targets are split into
contiguous runs; with fewer, ports are split instead.  Shard sizes differ by at
most one target's (or one port's) worth of probes.  Targets are recorded as
compact address ranges, so a 65,536-address job plans in a few hundred bytes.

Guardrails (allowed/denied CIDRs, probe and target limits) are checked here,
before any expansion that could be huge.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence

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


def plan(
    spec: scanjobs.ScanJobSpec,
    config: settings.OperatorSettings,
    addresses: Sequence[str],
    *,
    resolve: targets_.Resolver = targets_.resolve_host,
) -> list[statuses.ShardPlan]:
    """Plan the shards of a job whose selector targets are already resolved into ``addresses``."""
    if spec.expect is not None and spec.expect.allowed_open_ports:
        ports_.parse_ports(spec.expect.allowed_open_ports)  # a bad expression is refused now, not at the end
    check_guardrails(spec, config, addresses)
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
    return shard_plans
