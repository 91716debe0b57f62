"""Scan plans: a ScanJob spec expanded once into concrete targets and ports.

:func:`expand` fails on bad input (SpecError subclasses) before any packet is
sent; :class:`Plan` is what :func:`portolan.engine.scanning.run` executes.
(The operator's *shard* plan, ``status.plan``, is a different thing: see
:mod:`portolan.controller.scanjobs.planning`.)
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

from portolan import errors
from portolan.engine import ports as ports_
from portolan.engine import targets as targets_
from portolan.models import defaults

if typing.TYPE_CHECKING:
    from portolan.models import scanjobs


class Timing(typing.NamedTuple):
    """The engine's copy of a spec's ``timing`` (same names, same defaults; milliseconds)."""

    max_rate: int | None = None
    max_host_rate: int | None = None
    concurrency: int = defaults.CONCURRENCY
    retries: int = defaults.RETRIES
    initial_rtt_timeout_ms: int = defaults.INITIAL_RTT_TIMEOUT_MS
    min_rtt_timeout_ms: int = defaults.MIN_RTT_TIMEOUT_MS
    max_rtt_timeout_ms: int = defaults.MAX_RTT_TIMEOUT_MS


def timing_of(timing: scanjobs.Timing) -> Timing:
    """A validated spec's timing, as the engine takes it (the fields of the same names)."""
    return Timing(*(getattr(timing, name) for name in Timing._fields))


class Plan(typing.NamedTuple):
    """Concrete probes of one scan: what :func:`run` executes."""

    targets: list[targets_.Target]
    tcp_ports: list[int]
    udp_ports: list[int]
    timing: Timing
    service_detection: bool
    verify_open: bool
    technique: defaults.Technique = defaults.Technique.CONNECT

    @property
    def probe_count(self) -> int:
        """Targets times ports, TCP and UDP."""
        return len(self.targets) * (len(self.tcp_ports) + len(self.udp_ports))


def expand(
    spec: scanjobs.ScanJobSpec,
    *,
    resolve: targets_.Resolver = targets_.resolve_host,
    max_targets: int = targets_.DEFAULT_LIMIT,
    max_probes: int | None = None,
) -> Plan:
    """Expand a spec's targets and ports; raise SpecError subclasses on bad input.

    With ``max_probes``, a scan of more probes (targets x ports) raises GuardrailError before
    any target is enumerated.
    """
    if spec.targets.selectors and not spec.targets.addresses:
        raise errors.TargetError(
            "targets.selectors need a cluster (they name Kubernetes objects); give addresses "
            "for a local scan"
        )
    return expand_fields(
        spec.targets.addresses, spec.targets.exclude, ports=spec.ports, udp_ports=spec.udp_ports,
        protocols=spec.protocols, timing=timing_of(spec.timing), service_detection=spec.service_detection,
        verify_open=spec.verify_open, technique=spec.technique,
        resolve=resolve, max_targets=max_targets, max_probes=max_probes,
    )


def expand_fields(
    addresses: Sequence[str],
    exclude: Sequence[str],
    *,
    ports: str = defaults.PORTS,
    udp_ports: str | None = None,
    protocols: Sequence[str] = defaults.PROTOCOLS,
    timing: Timing | None = None,
    service_detection: bool = defaults.SERVICE_DETECTION,
    verify_open: bool = defaults.VERIFY_OPEN,
    technique: defaults.Technique = defaults.Technique.CONNECT,
    resolve: targets_.Resolver = targets_.resolve_host,
    max_targets: int = targets_.DEFAULT_LIMIT,
    max_probes: int | None = None,
) -> Plan:
    """:func:`expand` of a spec's fields, for callers that checked them without the models (the CLI's fast path)."""
    tcp = ports_.parse_ports(ports) if "tcp" in protocols else []
    udp = ports_.parse_ports(udp_ports or ports) if "udp" in protocols else []

    def check(count: int) -> None:
        probes = count * (len(tcp) + len(udp))
        if max_probes is not None and probes > max_probes:
            raise errors.GuardrailError(
                f"the scan has {probes:,} probes ({count:,} targets x {len(tcp) + len(udp):,} ports), "
                f"more than the cap of {max_probes:,}; narrow it or raise the cap with --max-probes"
            )

    found = targets_.parse_targets(
        list(addresses), list(exclude), resolve=resolve, limit=max_targets, check_count=check,
    )
    return Plan(
        targets=found,
        tcp_ports=tcp,
        udp_ports=udp,
        timing=Timing() if timing is None else timing,
        service_detection=service_detection,
        verify_open=verify_open,
        technique=technique,
    )
