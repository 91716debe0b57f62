"""Building the report: verdicts grouped per host, large closed/filtered groups counted (extraports).

The grouping itself happens as verdicts arrive (:class:`portolan.engine.collecting.Collector`).
"""

from __future__ import annotations

import collections

import portolan
from portolan.engine import collecting, plans
from portolan.models import results

COLLAPSE_ABOVE = collecting.COLLAPSE_ABOVE


def build(
    plan_: plans.Plan,
    collector: collecting.Collector,
    services: dict[tuple[int, results.Protocol, int], results.ServiceInfo],
    notes: list[results.ScanNote],
    *,
    list_all: bool,
    started: float,
    finished: float,
    duration: float,
    packets: int,
    complete: bool,
    args: str,
) -> results.ScanReport:
    """The report of a run: hosts with their listed ports and counted groups, summary and notes."""
    hosts: list[results.HostResult] = []
    totals: collections.Counter[str] = collections.Counter()
    counted = collector.groups()
    for index, target in enumerate(plan_.targets):
        table = collector.verdicts[index]
        groups = counted.get(index, {})
        # The collector kept in detail exactly what is listed: open ports and groups of at most
        # COLLAPSE_ABOVE ports (every port with list_all); the rest is counted.
        collapsed = [g for g in groups if (index, g) in collector.collapsed]
        listed = [
            collector.port_result(index, protocol, port, services.get((index, protocol, port)))
            for protocol, port in sorted(table)
        ]
        extraports = [
            results.ExtraPorts(protocol=g[0], state=g[1], reason=g[2], count=groups[g])
            for g in sorted(collapsed, key=lambda g: -groups[g])
        ]
        for (_, state, _), count in groups.items():
            totals[state.value] += count
        hosts.append(
            results.HostResult(
                address=target.address, hostname=target.hostname, ports=listed,
                extraports=extraports,
            )
        )
    summary = results.ScanSummary(
        hosts=len(plan_.targets),
        probes=collector.done,
        packets_sent=packets,
        states=dict(sorted(totals.items())),
        duration_seconds=round(duration, 3),
    )
    return results.ScanReport(
        version=portolan.__version__,
        args=args,
        started=started,
        finished=finished,
        complete=complete,
        hosts=hosts,
        summary=summary,
        notes=notes,
    )
