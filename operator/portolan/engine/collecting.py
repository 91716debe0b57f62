"""Collecting verdicts: counted per group, kept in detail only where the report lists them, streamed.

The report lists a host's open ports and every (protocol, state, reason) group
of at most :data:`COLLAPSE_ABOVE` ports; bigger groups are counted
(``extraports``).  The collector applies that rule as verdicts arrive: once a
host's group grows past the bound, its per-port details are dropped and it is
only counted, so memory follows the results kept, not the probe count (unless
``keep_all``, i.e. ``--all-ports``, asks for every port).  TCP ports that
stayed silent are the one exception, kept as two bytes each, because a host
that answers other probes with ICMP errors has its silent ports re-probed
(:func:`portolan.engine.scanning.run`); a group collapsed once stays counted
even if re-probing later shrinks it.

Verdicts that are kept share their ``(protocol, port)`` keys across hosts and
their tuples when equal, so a kept verdict costs about one dict slot.

The workers' wire format lives here too (:data:`RECORD`, a packed verdict), so
the collector can take a batch of records without building objects per port.  A
worker whose verdicts need no detail (no ``--all-ports``, no streaming) sends a
host's first :data:`COLLAPSE_ABOVE` + 1 closed/conn-refused verdicts in full (the
group is collapsed by then) and only counts the rest (:data:`CLOSED_COUNT`): on a
65,535-port scan of a host, that spares the parent almost every record.
"""

from __future__ import annotations

import array
import collections.abc
import struct
from collections.abc import Callable

from portolan.engine import plans
from portolan.models import results

PortCallback = Callable[[results.PortResult], None]
OpenCallback = Callable[[int, int], None]  # (target index, TCP port) as soon as it is found open
ProgressCallback = Callable[[results.Progress], None]
Verdict = tuple[results.PortState, results.Reason, float | None, int]
Key = tuple[results.Protocol, int]
Group = tuple[results.Protocol, results.PortState, results.Reason]
RECORD = struct.Struct("=IHBBBf")  # host, port, state, reason, tries, rtt (-1 = none)
TRAILER = 255  # a record whose state is TRAILER carries the worker's packet count in ``host``
CLOSED_COUNT = 254  # a record whose state is CLOSED_COUNT says ``port`` more closed/conn-refused ports of ``host``
STATES = list(results.PortState)
REASONS = list(results.Reason)
STATE_INDEX = {state: i for i, state in enumerate(STATES)}
REASON_INDEX = {reason: i for i, reason in enumerate(REASONS)}
COLLAPSE_ABOVE = 25
SILENT_TCP: Group = (results.Protocol.TCP, results.PortState.FILTERED, results.Reason.NO_RESPONSE)
_OPEN = results.PortState.OPEN
_TCP = results.Protocol.TCP
_INTERNED_MAX = 1 << 16  # distinct verdict tuples shared; beyond that new ones are kept as they come


class _Keys(dict[Key, Key]):
    """One ``(protocol, port)`` tuple per key for the whole scan (bounded: 2 x 65,536)."""

    def __missing__(self, key: Key) -> Key:
        self[key] = key
        return key


class Collector:
    """Counts every verdict, keeps the ones the report will list, streams each, and ticks progress."""

    def __init__(
        self,
        plan_: plans.Plan,
        on_port: PortCallback | None,
        on_progress: ProgressCallback | None,
        clock: Callable[[], float],
        *,
        keep_all: bool = False,
    ) -> None:
        self.plan = plan_
        self.on_port = on_port
        self.on_progress = on_progress
        self.clock = clock
        self.keep_all = keep_all
        self.total = plan_.probe_count
        self.done = 0
        self.open = 0
        self.last_tick = 0.0
        # verdicts[host][(protocol, port)] = (state, reason, rtt, tries): open ports and small groups only
        self.verdicts: list[dict[Key, Verdict]] = [{} for _ in plan_.targets]
        self.counts: dict[tuple[int, Group], int] = {}  # every verdict, per host and group
        self.members: dict[tuple[int, Group], list[Key]] = {}  # kept keys of groups not collapsed (yet)
        self.collapsed: set[tuple[int, Group]] = set()
        self.silent: dict[int, array.array[int]] = {}  # silent TCP ports of collapsed groups, per host
        self.keys = _Keys()
        self.interned: dict[Verdict, Verdict] = {}
        self.replies: dict[tuple[int, int], bytes] = {}
        self.ttls: dict[tuple[int, int], int] = {}  # (host, TCP port) -> TTL of the answer (SYN scans)
        self.on_open: OpenCallback | None = None  # e.g. to start identifying its service at once

    def intern(self, verdict: Verdict) -> Verdict:
        """The shared copy of an equal verdict (the interning table is bounded)."""
        interned = self.interned
        found = interned.get(verdict)
        if found is not None:
            return found
        if len(interned) < _INTERNED_MAX:
            interned[verdict] = verdict
        return verdict

    def _record(self, protocol: results.Protocol, host: int, port: int, verdict: Verdict, *,
                was_silent: bool = False) -> None:
        """Count a verdict and keep it if the report will list it (replacing an earlier one of the port)."""
        key = self.keys[(protocol, port)]
        table = self.verdicts[host]
        old = table.pop(key, None)
        if old is not None:
            self._uncount(host, (protocol, old[0], old[1]), key)
        elif was_silent:
            self._uncount(host, SILENT_TCP, None)
        else:
            self.done += 1
            if verdict[0] is _OPEN:
                self.open += 1
        group = (protocol, verdict[0], verdict[1])
        slot = (host, group)
        count = self.counts.get(slot, 0) + 1
        self.counts[slot] = count
        if slot in self.collapsed:
            if group == SILENT_TCP and not was_silent:
                self.silent[host].append(port)
            if protocol is _TCP and self.ttls:
                self.ttls.pop((host, port), None)
            return
        if self.keep_all or verdict[0] is _OPEN:
            table[key] = verdict
            return
        if count <= COLLAPSE_ABOVE:
            table[key] = verdict
            self.members.setdefault(slot, []).append(key)
            return
        # The group outgrew what the report lists: count it from now on, drop its details.
        self.collapsed.add(slot)
        kept = self.members.pop(slot, [])
        for member in kept:
            del table[member]
        if group == SILENT_TCP:
            self.silent.setdefault(host, array.array("H")).extend([member[1] for member in kept] + [port])
        if protocol is _TCP and self.ttls:
            for member in [*kept, key]:
                self.ttls.pop((host, member[1]), None)

    def _uncount(self, host: int, group: Group, key: Key | None) -> None:
        slot = (host, group)
        self.counts[slot] -= 1
        members = self.members.get(slot)
        if key is not None and members is not None and key in members:
            members.remove(key)

    def add(
        self,
        protocol: results.Protocol,
        host: int,
        port: int,
        state: results.PortState,
        reason: results.Reason,
        rtt: float | None,
        tries: int,
        *,
        was_silent: bool = False,
    ) -> None:
        """Count one verdict (the last one for a port wins; ``was_silent``: it replaces a collapsed silent
        TCP port), keep it if the report lists it, stream it and tick progress."""
        verdict = self.intern((state, reason, rtt, tries))
        self._record(protocol, host, port, verdict, was_silent=was_silent)
        if self.on_open is not None and state == results.PortState.OPEN and protocol == results.Protocol.TCP:
            self.on_open(host, port)
        if self.on_port is not None:
            self.on_port(self.port_result(host, protocol, port, verdict=verdict))
        if self.on_progress is not None:
            self._tick(self.on_progress)

    def tcp_records(self, records: collections.abc.Iterable[tuple[int, int, int, int, int, float]]) -> int:
        """Take a batch of packed worker verdicts; returns the packets any trailer reported.

        Without a per-port callback progress is reported once per batch, not once per port.
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
        states = STATES
        reasons = REASONS
        intern = self.intern
        record = self._record
        on_open = self.on_open
        open_index = STATE_INDEX[results.PortState.OPEN]
        for host, port, state, reason, tries, rtt in records:
            if state == TRAILER:  # the worker's packet count
                packets += host
                continue
            if state == CLOSED_COUNT:
                self.closed_count(host, port)
                continue
            record(_TCP, host, port, intern((states[state], reasons[reason], None if rtt < 0 else float(rtt), tries)))
            if on_open is not None and state == open_index:
                on_open(host, port)
        if self.on_progress is not None:
            self._tick(self.on_progress)
        return packets

    def _tick(self, on_progress: ProgressCallback) -> None:
        """Report progress if the last tick is 0.1 s old or every probe is decided."""
        now = self.clock()
        if now - self.last_tick >= 0.1 or self.done == self.total:
            self.last_tick = now
            on_progress(results.Progress(done=self.done, total=self.total, open=self.open))

    def closed_count(self, host: int, count: int, reason: results.Reason = results.Reason.CONN_REFUSED) -> None:
        """``count`` more TCP ports of ``host`` closed for ``reason`` (conn-refused from connect workers, reset
        from SYN scans), each reported for the first time, in a group already collapsed (the sender gave
        enough of them in full first)."""
        slot = (host, (results.Protocol.TCP, results.PortState.CLOSED, reason))
        if slot not in self.collapsed:  # the sender's promise was broken: a report would list too few ports
            raise RuntimeError(f"a closed-port count for host {host} arrived before its group was collapsed")
        self.counts[slot] += count
        self.done += count
        if self.on_progress is not None:
            self._tick(self.on_progress)

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

    def groups(self) -> dict[int, dict[Group, int]]:
        """Verdict counts per host and group (groups emptied by re-probing left out)."""
        found: dict[int, dict[Group, int]] = {}
        for (host, group), count in self.counts.items():
            if count > 0:
                found.setdefault(host, {})[group] = count
        return found

    def silent_tcp(self, host: int) -> list[int]:
        """TCP ports of this host that stayed silent, kept or collapsed."""
        kept = [port for (protocol, port), v in self.verdicts[host].items()
                if protocol is _TCP and v[1] == results.Reason.NO_RESPONSE]
        return sorted([*kept, *self.silent.get(host, ())])

    def port_result(
        self,
        host: int,
        protocol: results.Protocol,
        port: int,
        service: results.ServiceInfo | None = None,
        *,
        verdict: Verdict | None = None,
    ) -> results.PortResult:
        state, reason, rtt, tries = verdict if verdict is not None else self.verdicts[host][(protocol, port)]
        return results.PortResult(
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
