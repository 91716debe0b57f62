"""Reading a shard's slice and scan options from its ScanShard and ScanJob, without pydantic.

A shard pod would pay pydantic's import and model building (most of its start-up on a slow
node) only to check again fields that the API server's schema and the operator have checked
already.  These readers take the fields a shard uses when each is plainly well formed — the
types the CRD schema allows, within the models' bounds (:mod:`portolan.models.defaults`,
:mod:`portolan.models.rules`) — and return None otherwise, so the caller validates with the
models and reports their message.  They read only what a shard uses; the rest of a ScanJob's
spec is the operator's to judge.  A table test holds both paths to the same result.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

from portolan.engine import plans
from portolan.models import defaults, rules

_TIMING_FIELDS = {
    "".join([name.split("_")[0], *(part.title() for part in name.split("_")[1:])]): name
    for name in defaults.TIMING_BOUNDS
}  # camelCase on the wire -> the engine's field name
_SLICE_FIELDS = {"id", "pool", "index", "targets", "ports", "udpPorts", "probes", "kind", "node"}
_KINDS = ("scan", "inventory")
_TARGET_FIELDS = {"addresses", "exclude", "selectors"}


class Slice(typing.NamedTuple):
    """What one shard probes (its ScanShard's spec), as the shard uses it."""

    id: str
    kind: str  # "scan" or "inventory"
    targets: list[str]
    ports: str
    udp_ports: str | None
    node: str | None


class Options(typing.NamedTuple):
    """The scan options a shard takes from its ScanJob's spec (a job that records evidence takes the models)."""

    exclude: list[str]
    timing: plans.Timing
    service_detection: bool
    verify_open: bool
    technique: defaults.Technique


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _strings(value: Any, *, most: int | None = None, length: int | None = None) -> bool:
    return (isinstance(value, list) and (most is None or len(value) <= most)
            and all(isinstance(item, str) and (length is None or len(item) <= length) for item in value))


def shard_slice(spec: Mapping[str, Any]) -> Slice | None:
    """A ScanShard's spec as a :class:`Slice`, or None when the models should judge it."""
    if not isinstance(spec, Mapping) or not set(spec) <= _SLICE_FIELDS:
        return None
    shard_id, pool, targets, ports = spec.get("id"), spec.get("pool"), spec.get("targets"), spec.get("ports")
    udp_ports, kind, node = spec.get("udpPorts"), spec.get("kind", "scan"), spec.get("node")
    if not (isinstance(shard_id, str) and isinstance(pool, str) and isinstance(ports, str) and _strings(targets)
            and _is_int(spec.get("index")) and _is_int(spec.get("probes")) and kind in _KINDS):
        return None
    if not (udp_ports is None or isinstance(udp_ports, str)) or not (node is None or isinstance(node, str)):
        return None
    return Slice(shard_id, kind, list(typing.cast(list[str], targets)), ports, udp_ports, node)


def _timing(value: Any) -> plans.Timing | None:
    if not isinstance(value, Mapping) or not set(value) <= set(_TIMING_FIELDS):
        return None
    fields: dict[str, Any] = {}
    for key, item in value.items():
        name = _TIMING_FIELDS[key]
        least, most = defaults.TIMING_BOUNDS[name]
        if item is None and name in ("max_rate", "max_host_rate"):
            continue
        if not _is_int(item) or item < least or (most is not None and item > most):
            return None
        fields[name] = item
    timing = plans.Timing(**fields)
    if timing.min_rtt_timeout_ms > timing.max_rtt_timeout_ms:
        return None
    return timing


def scan_options(spec: Mapping[str, Any]) -> Options | None:
    """A ScanJob spec's scan options as :class:`Options`, or None when the models should judge them.

    A job that records evidence (``capture``) always takes the models: capture's options are theirs.
    """
    if not isinstance(spec, Mapping) or spec.get("capture") is not None:
        return None
    if any(not isinstance(key, str) or "_" in key for key in spec):
        return None  # snake_case names (the models take them too): theirs to read
    targets = spec.get("targets")
    if not isinstance(targets, Mapping) or not set(targets) <= _TARGET_FIELDS:
        return None
    exclude = targets.get("exclude", [])
    if not _strings(exclude, most=rules.TARGETS_MAX_ITEMS, length=rules.TARGET_MAX_LENGTH):
        return None
    timing = _timing(spec.get("timing", {}))
    service_detection = spec.get("serviceDetection", defaults.SERVICE_DETECTION)
    verify_open = spec.get("verifyOpen", defaults.VERIFY_OPEN)
    technique = spec.get("technique", defaults.Technique.CONNECT.value)
    if timing is None or not isinstance(service_detection, bool) or not isinstance(verify_open, bool):
        return None
    if not isinstance(technique, str) or technique not in {t.value for t in defaults.Technique}:
        return None
    return Options(list(exclude), timing, service_detection, verify_open, defaults.Technique(technique))


def attempt(status: Any) -> int | None:
    """The attempt a ScanShard's status names (0 when none), or None when the models should judge it."""
    if not isinstance(status, Mapping):
        return None
    value = status.get("attempt", 0)
    return value if _is_int(value) else None
