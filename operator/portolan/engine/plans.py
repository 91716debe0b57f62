"""Scan plans: a ScanJob spec expanded once into concrete targets and ports.

:func:`expand` fails on bad input (SpecError subclasses) before any packet is
sent; :class:`Plan` is what :func:`portolan.engine.scanning.run` executes.
(The operator's *shard* plan, ``status.plan``, is a different thing: see
:mod:`portolan.controller.scanjobs.planning`.)
"""

from __future__ import annotations

import dataclasses

from portolan import errors
from portolan.engine import ports as ports_
from portolan.engine import targets as targets_
from portolan.models import scanjobs


@dataclasses.dataclass(frozen=True)
class Plan:
    """Concrete probes of one scan: what :func:`run` executes."""

    targets: list[targets_.Target]
    tcp_ports: list[int]
    udp_ports: list[int]
    timing: scanjobs.Timing
    service_detection: bool
    verify_open: bool
    technique: scanjobs.Technique = scanjobs.Technique.CONNECT

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
    tcp = ports_.parse_ports(spec.ports) if "tcp" in spec.protocols else []
    udp = ports_.parse_ports(spec.udp_ports or spec.ports) if "udp" in spec.protocols else []

    def check(count: int) -> None:
        probes = count * (len(tcp) + len(udp))
        if max_probes is not None and probes > max_probes:
            raise errors.GuardrailError(
                f"the scan has {probes:,} probes ({count:,} targets x {len(tcp) + len(udp):,} ports), "
                f"more than the cap of {max_probes:,}; narrow it or raise the cap with --max-probes"
            )

    found = targets_.parse_targets(
        spec.targets.addresses, spec.targets.exclude, resolve=resolve, limit=max_targets,
        check_count=check,
    )
    return Plan(
        targets=found,
        tcp_ports=tcp,
        udp_ports=udp,
        timing=spec.timing,
        service_detection=spec.service_detection,
        verify_open=spec.verify_open,
        technique=spec.technique,
    )
