"""Probing for a reachability audit, inside a probe pod: probe every pair, re-probe mismatches, report.

The pod's environment (set by :func:`portolan.kube.builders.probe_pod`) names
the audit and the source and carries the pairs (``PORTOLAN_PAIRS``, see
:func:`portolan.kube.codecs.encode_pairs`) with each one's expected verdict.
One pass probes them all with the engine (TCP connect; UDP with protocol
payloads); then every pair whose answer disagrees with its expectation is
probed again, about once a second, until it agrees or ``convergence`` seconds
have passed — as the upstream e2e suite does, to allow for the CNI to converge.
The verdicts go into ``status.probes.<source>`` of the audit, one character
per pair, in order.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from portolan import errors
from portolan.engine import payloads, plans, scanning, targets
from portolan.kube import builders, codecs, rest
from portolan.models import audits, defaults, results

Pair = tuple[str, int, str, bool | None, bool]


class ProbeClient(Protocol):
    """What a probe pod needs of the API: one status write."""

    def patch_audit_status(self, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of the audit's status."""

Scan = Callable[..., results.ScanReport]
_CHARS = {
    (results.PortState.OPEN, results.Reason.SYN_ACK): "o",
    (results.PortState.OPEN, results.Reason.UDP_RESPONSE): "o",
    (results.PortState.CLOSED, results.Reason.CONN_REFUSED): "r",
    (results.PortState.CLOSED, results.Reason.PORT_UNREACH): "r",
    (results.PortState.CLOSED, results.Reason.RESET): "r",
}
_PROHIBITED = frozenset({results.Reason.ADMIN_PROHIBITED, results.Reason.HOST_PROHIBITED,
                         results.Reason.NET_PROHIBITED})


@dataclasses.dataclass(frozen=True)
class ProbeEnv:
    """Who this probe pod is, from the environment the operator set."""

    audit: str
    source: str
    pairs: list[Pair]
    run: int
    convergence_seconds: float
    timeout_ms: int

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> ProbeEnv:
        """Read the environment; a missing or malformed variable raises SpecError."""
        try:
            return cls(audit=env["PORTOLAN_AUDIT"], source=env["PORTOLAN_SOURCE"],
                       pairs=codecs.decode_pairs(env["PORTOLAN_PAIRS"]), run=int(env.get("PORTOLAN_RUN", "1")),
                       convergence_seconds=float(env.get("PORTOLAN_CONVERGENCE_SECONDS", "10")),
                       timeout_ms=int(env.get("PORTOLAN_PROBE_TIMEOUT_MS", "1000")))
        except (KeyError, ValueError) as exc:
            raise errors.SpecError(f"probe environment incomplete or malformed: {exc}") from exc


def char_of(port: results.PortResult) -> str:
    """One verdict character (see :data:`portolan.kube.codecs.VERDICT_CHARS`) for an engine result."""
    if port.reason in _PROHIBITED:
        return "p"
    if port.reason == results.Reason.LOCAL_ERROR:
        return "e"
    return _CHARS.get((port.state, port.reason), "s")


def probe(pairs: Sequence[Pair], timeout_ms: int, scan: Scan, stop: threading.Event) -> list[str]:
    """One verdict character per pair, from one engine run per protocol over the pairs' addresses and ports."""
    chars = ["s"] * len(pairs)
    for protocol in ("TCP", "UDP"):
        wanted: dict[tuple[str, int], list[int]] = {}  # pairs may share an address and port (overlapping destinations)
        for i, (address, number, proto, _, _) in enumerate(pairs):
            if proto == protocol:
                wanted.setdefault((address, number), []).append(i)
        if not wanted:
            continue
        addresses = sorted({address for address, _ in wanted})
        ports = sorted({port for _, port in wanted})
        timing = plans.Timing(retries=1, max_rtt_timeout_ms=timeout_ms, initial_rtt_timeout_ms=min(timeout_ms, 500),
                              min_rtt_timeout_ms=min(timeout_ms, defaults.MIN_RTT_TIMEOUT_MS))
        plan = plans.Plan(targets=[targets.Target(a) for a in addresses],
                          tcp_ports=ports if protocol == "TCP" else [], udp_ports=ports if protocol == "UDP" else [],
                          timing=timing, service_detection=False, verify_open=False)
        report = scan(plan, list_all=True, stop=stop, payloads=payloads.payload_bytes, rate_limit_budget=2.0)
        for host in report.hosts:
            for port in host.ports:
                for index in wanted.get((host.address, port.port), ()):
                    chars[index] = char_of(port)
    return chars


def disagreeing(pairs: Sequence[Pair], chars: Sequence[str]) -> list[int]:
    """Indexes of the pairs whose answer contradicts their expected verdict."""
    found = []
    for index, ((_, _, protocol, expected, listener), char) in enumerate(zip(pairs, chars, strict=True)):
        seen = audits.observed(char, protocol, listener)
        if expected is not None and seen is not None and (seen == audits.Verdict.REACHABLE) != expected:
            found.append(index)
    return found


def converge(env: ProbeEnv, scan: Scan, stop: threading.Event,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep
             ) -> tuple[list[str], int]:
    """Probe every pair, then re-probe the disagreeing ones until they agree or time runs out; (chars, rounds)."""
    chars = probe(env.pairs, env.timeout_ms, scan, stop)
    deadline = clock() + env.convergence_seconds
    rounds = 1
    while not stop.is_set():
        again = disagreeing(env.pairs, chars)
        if not again or clock() >= deadline:
            break
        sleep(1.0)
        fresh = probe([env.pairs[i] for i in again], env.timeout_ms, scan, stop)
        for index, char in zip(again, fresh, strict=True):
            chars[index] = char
        rounds += 1
    return chars, rounds


def run(client: ProbeClient, env: ProbeEnv, stop: threading.Event, *, scan: Scan = scanning.run,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)) -> int:
    """Probe, converge and write ``status.probes.<source>``; returns the exit code."""
    chars, rounds = converge(env, scan, stop)
    entry: dict[str, Any] = {"run": env.run, "phase": "Done" if not stop.is_set() else "Interrupted",
                             "verdicts": "".join(chars),
                             "rounds": rounds, "finished": builders.timestamp(now())}
    client.patch_audit_status(env.audit, {"probes": {env.source: entry}})
    return 0 if not stop.is_set() else 143


def main() -> int:
    """``portolan probe``: run the probes this pod's environment names; returns the exit code."""
    import os

    from portolan.engine import stopping

    env = ProbeEnv.from_environment(os.environ)
    with stopping.on_signals(threading.Event()) as stop:
        client: ProbeClient | None = rest.from_environment()  # the standard library's HTTPS: a fast start
        if client is None:
            from portolan.kube import clients  # the official client only where the small one cannot serve

            client = clients.Kube(clients.client_from_environment())
        code = run(client, env, stop)
    print(f"portolan probe {env.audit}/{env.source}: {len(env.pairs)} pairs, exit {code}", file=sys.stderr)
    return code
