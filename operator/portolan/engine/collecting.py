"""Collecting verdicts: every probe's verdict kept per host, streamed, and counted for progress.

Memory: a verdict costs one dict slot (about 50 bytes) per probed port.  The
``(protocol, port)`` keys are shared by every host and verdict tuples are
interned (most closed and silent ports have identical verdicts), so a scan's
memory is the slot per probe plus what is really distinct (RTTs of answered
ports), not the ~240 bytes per probe that fresh tuples, ints and floats cost.

The workers' wire format lives here too (:data:`RECORD`, a packed verdict), so
the collector can take a batch of records without building objects per port.
"""

from __future__ import annotations

import collections.abc
import struct
from collections.abc import Callable

from portolan.engine import plans
from portolan.models import results

PortCallback = Callable[[results.PortResult], None]
ProgressCallback = Callable[[results.Progress], None]
Verdict = tuple[results.PortState, results.Reason, float | None, int]
RECORD = struct.Struct("=IHBBBf")  # host, port, state, reason, tries, rtt (-1 = none)
TRAILER = 255  # a record whose state is TRAILER carries the worker's packet count in ``host``
STATES = list(results.PortState)
REASONS = list(results.Reason)
STATE_INDEX = {state: i for i, state in enumerate(STATES)}
REASON_INDEX = {reason: i for i, reason in enumerate(REASONS)}
_INTERNED_MAX = 1 << 16  # distinct verdict tuples shared; beyond that new ones are kept as they come


class _Keys(dict[tuple[results.Protocol, int], tuple[results.Protocol, int]]):
    """One ``(protocol, port)`` tuple per key for the whole scan (bounded: 2 x 65,536)."""

    def __missing__(self, key: tuple[results.Protocol, int]) -> tuple[results.Protocol, int]:
        self[key] = key
        return key


class Collector:
    """Keeps every verdict, streams it, and ticks progress."""

    def __init__(
        self,
        plan_: plans.Plan,
        on_port: PortCallback | None,
        on_progress: ProgressCallback | None,
        clock: Callable[[], float],
    ) -> None:
        self.plan = plan_
        self.on_port = on_port
        self.on_progress = on_progress
        self.clock = clock
        self.total = plan_.probe_count
        self.done = 0
        self.open = 0
        self.last_tick = 0.0
        # verdicts[host][(protocol, port)] = (state, reason, rtt, tries)
        self.verdicts: list[dict[tuple[results.Protocol, int], Verdict]] = [
            {} for _ in plan_.targets
        ]
        self.keys = _Keys()
        self.interned: dict[Verdict, Verdict] = {}
        self.replies: dict[tuple[int, int], bytes] = {}
        self.ttls: dict[tuple[int, int], int] = {}  # (host, TCP port) -> TTL of the answer (SYN scans)

    def add(
        self,
        protocol: results.Protocol,
        host: int,
        port: int,
        state: results.PortState,
        reason: results.Reason,
        rtt: float | None,
        tries: int,
    ) -> None:
        """Keep one verdict (the last one for a port wins), stream it and tick progress."""
        table = self.verdicts[host]
        key = self.keys[(protocol, port)]
        if key not in table:
            self.done += 1
            if state == results.PortState.OPEN:
                self.open += 1
        table[key] = self.intern((state, reason, rtt, tries))
        if self.on_port is not None:
            self.on_port(self.port_result(host, protocol, port))
        if self.on_progress is not None:
            now = self.clock()
            if now - self.last_tick >= 0.1 or self.done == self.total:
                self.last_tick = now
                self.on_progress(results.Progress(done=self.done, total=self.total, open=self.open))

    def tcp_records(self, records: collections.abc.Iterable[tuple[int, int, int, int, int, float]]) -> int:
        """Take a batch of packed worker verdicts; returns the packets any trailer reported.

        Without a per-port callback this is the hot path of a big scan: the verdict tables are
        filled directly and progress is reported once per batch, not once per port.
        """
        if self.on_port is not None:
            packets = 0
            for host, port, state, reason, tries, rtt in records:
                if state == TRAILER:
                    packets += host
                    continue
                self.tcp(host, port, STATES[state], REASONS[reason], None if rtt < 0 else float(rtt), tries)
            return packets
        packets = 0
        verdicts = self.verdicts
        tcp = results.Protocol.TCP
        open_index = STATE_INDEX[results.PortState.OPEN]
        states = STATES
        reasons = REASONS
        keys = self.keys
        intern = self.intern
        for host, port, state, reason, tries, rtt in records:
            if state == TRAILER:  # the worker's packet count
                packets += host
                continue
            table = verdicts[host]
            key = keys[(tcp, port)]
            if key not in table:
                self.done += 1
                if state == open_index:
                    self.open += 1
            table[key] = intern((states[state], reasons[reason], None if rtt < 0 else float(rtt), tries))
        if self.on_progress is not None:
            now = self.clock()
            if now - self.last_tick >= 0.1 or self.done == self.total:
                self.last_tick = now
                self.on_progress(results.Progress(done=self.done, total=self.total, open=self.open))
        return packets

    def intern(self, verdict: Verdict) -> Verdict:
        """The shared copy of an equal verdict (the interning table is bounded)."""
        interned = self.interned
        found = interned.get(verdict)
        if found is not None:
            return found
        if len(interned) < _INTERNED_MAX:
            interned[verdict] = verdict
        return verdict

    def tcp(
        self, host: int, port: int, state: results.PortState, reason: results.Reason,
        rtt: float | None, tries: int,
    ) -> None:
        """A TCP verdict."""
        self.add(results.Protocol.TCP, host, port, state, reason, rtt, tries)

    def udp(
        self, host: int, port: int, state: results.PortState, reason: results.Reason,
        rtt: float | None, tries: int, reply: bytes | None,
    ) -> None:
        """A UDP verdict, with the reply that decided it if any."""
        if reply is not None:
            self.replies[(host, port)] = reply
        self.add(results.Protocol.UDP, host, port, state, reason, rtt, tries)

    def port_result(
        self,
        host: int,
        protocol: results.Protocol,
        port: int,
        service: results.ServiceInfo | None = None,
    ) -> results.PortResult:
        """The kept verdict of one port as a PortResult."""
        state, reason, rtt, tries = self.verdicts[host][(protocol, port)]
        return results.PortResult.model_construct(
            host=self.plan.targets[host].address,
            port=port,
            protocol=protocol,
            state=state,
            reason=reason,
            reason_ttl=self.ttls.get((host, port)) if protocol == results.Protocol.TCP else None,
            rtt_ms=None if rtt is None else round(rtt * 1000, 3),
            tries=tries,
            service=service,
        )
