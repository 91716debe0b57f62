"""The ScanJob spec's defaults and technique names, without pydantic.

The pydantic models in :mod:`portolan.models.scanjobs` take their defaults from
here, and so do the engine's :class:`~portolan.engine.plans.Timing` and the CLI's
fast path (a command-line scan that needs no model validation), so a local scan
of a few ports never imports pydantic and the defaults still have one source.
Limits: values only; the constraints (ranges, patterns) live on the models, and a
test checks that both paths build the same plan.
"""

from __future__ import annotations

import enum
from typing import Literal


class Technique(enum.StrEnum):
    CONNECT = "connect"
    SYN = "syn"


PORTS = "common"
PORTS_PATTERN = r"^[0-9a-z, -]+$"  # spec.ports / spec.udpPorts; named sets are lower case
PROTOCOLS: tuple[Literal["tcp", "udp"], ...] = ("tcp",)
SERVICE_DETECTION = True
VERIFY_OPEN = False

CONCURRENCY = 4096
RETRIES = 1
INITIAL_RTT_TIMEOUT_MS = 500
MIN_RTT_TIMEOUT_MS = 100
MAX_RTT_TIMEOUT_MS = 1250

# The bounds of spec.timing's fields, (least, most or None): the models' field limits and the
# shard's plain reader (portolan.shard.reading) both take them from here.
TIMING_BOUNDS: dict[str, tuple[int, int | None]] = {
    "max_rate": (1, None),
    "max_host_rate": (1, None),
    "concurrency": (1, 1_000_000),
    "retries": (0, 10),
    "initial_rtt_timeout_ms": (1, 60_000),
    "min_rtt_timeout_ms": (1, 60_000),
    "max_rtt_timeout_ms": (1, 60_000),
}
