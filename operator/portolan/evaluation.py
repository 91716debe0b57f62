"""Evaluating results: drift between two runs of a schedule, and open ports against expectations.

Pure functions over ``status.results`` (per vantage: open ports); no I/O.  Changes are
listed up to a cap (the byte budget of the schedule's status) and counted beyond it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from portolan.models import schedules

MAX_LISTED = 100


def _open_ports(results: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, int, str], str | None]:
    """(pool, host, port, protocol) -> service, for every open port listed in a run's results."""
    found: dict[tuple[str, str, int, str], str | None] = {}
    for vantage in results:
        pool = str(vantage.get("pool", ""))
        for port in vantage.get("open") or []:
            found[(pool, str(port["host"]), int(port["port"]), str(port["protocol"]))] = port.get("service")
    return found


def drift(previous_name: str, previous: Sequence[Mapping[str, Any]], latest_name: str,
          latest: Sequence[Mapping[str, Any]], *, partial: bool = False,
          limit: int = MAX_LISTED) -> schedules.Drift:
    """Open ports that appeared (``opened``) and disappeared (``closed``) from ``previous`` to ``latest``."""
    before, after = _open_ports(previous), _open_ports(latest)
    opened = [schedules.PortChange(pool=k[0], host=k[1], port=k[2], protocol=k[3], service=after[k])
              for k in sorted(after.keys() - before.keys())]
    closed = [schedules.PortChange(pool=k[0], host=k[1], port=k[2], protocol=k[3], service=before[k])
              for k in sorted(before.keys() - after.keys())]
    truncated = max(0, len(opened) - limit) + max(0, len(closed) - limit)
    return schedules.Drift(previous=previous_name, latest=latest_name, opened=opened[:limit], closed=closed[:limit],
                           truncated=truncated, partial=partial)


def unexpected_open(
    allowed: set[int], found: Sequence[tuple[str, str, int, str, str | None]], *, limit: int = MAX_LISTED,
) -> tuple[int, list[tuple[str, str, int, str, str | None]]]:
    """Open ports outside ``allowed``: (count, the first ``limit`` of them, sorted).

    ``found`` holds (pool, host, port, protocol, service) for every open port listed.
    """
    violations = sorted(item for item in found if item[2] not in allowed)
    return len(violations), violations[:limit]
