"""Building the report: verdicts grouped per host, large closed/filtered groups counted (extraports)."""

from __future__ import annotations

import collections
import itertools
import operator

import portolan
from portolan.engine import collecting, plans
from portolan.models import results

COLLAPSE_ABOVE = 25
_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)


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
    for index, target in enumerate(plan_.targets):
        table = collector.verdicts[index]
        # (protocol, state, reason) of every verdict, built with map/zip so 65k ports cost milliseconds.
        triples = list(zip(map(_FIRST, table), map(_FIRST, table.values()), map(_SECOND, table.values()),
                           strict=True))
        groups = collections.Counter(triples)
        collapsed = {
            group
            for group, count in groups.items()
            if not list_all and count > COLLAPSE_ABOVE and group[1] != results.PortState.OPEN
        }
        # Filter before sorting: a collapsed group is usually almost every port.
        keys = sorted(itertools.compress(table, map(operator.not_, map(collapsed.__contains__, triples))))
        listed = [
            collector.port_result(index, protocol, port, services.get((index, protocol, port)))
            for protocol, port in keys
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
