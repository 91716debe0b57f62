"""Scanning: turn a ScanJob spec into probes, run the passes, collect a report.

This is the engine's one entry point for callers (the CLI, shard pods):

* :func:`plan` expands targets and ports once (so bad input fails before any
  packet is sent);
* :func:`run` runs the TCP connect pass (optionally split over forked worker
  processes), the UDP pass, open-port verification and service identification,
  streaming each verdict to ``on_port`` and progress to ``on_progress``, and
  returns a :class:`~portolan.models.results.ScanReport`.

Limits: verdicts are kept in memory (a few dozen bytes per probed port); the
report lists open ports and small groups individually and counts large groups
of closed/filtered ports (``extraports``) unless ``list_all`` is set.  An
interrupted run (``stop`` set) returns what was gathered with
``complete=False``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import operator
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

import portolan
from portolan import errors
from portolan.engine import ports as ports_
from portolan.engine import syn_scanning, tcp_scanning, udp_scanning
from portolan.engine import targets as targets_
from portolan.models import results, scanjobs

PortCallback = Callable[[results.PortResult], None]
ProgressCallback = Callable[[results.Progress], None]
Services = Callable[[Sequence[tuple[str, int]], float], dict[tuple[str, int], results.ServiceInfo]]

COLLAPSE_ABOVE = 25
_Verdict = tuple[results.PortState, results.Reason, float | None, int]
_RECORD = struct.Struct("=IHBBBf")  # host, port, state, reason, tries, rtt (-1 = none)
_TRAILER = 255
_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)
_STATES = list(results.PortState)
_REASONS = list(results.Reason)
_STATE_INDEX = {state: i for i, state in enumerate(_STATES)}
_REASON_INDEX = {reason: i for i, reason in enumerate(_REASONS)}


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
        return len(self.targets) * (len(self.tcp_ports) + len(self.udp_ports))


def plan(
    spec: scanjobs.ScanJobSpec,
    *,
    resolve: targets_.Resolver = targets_.resolve_host,
    max_targets: int = targets_.DEFAULT_LIMIT,
) -> Plan:
    """Expand a spec's targets and ports; raise SpecError subclasses on bad input."""
    if spec.targets.selectors and not spec.targets.addresses:
        raise errors.TargetError(
            "targets.selectors need a cluster (they name Kubernetes objects); give addresses "
            "for a local scan"
        )
    found = targets_.parse_targets(
        spec.targets.addresses, spec.targets.exclude, resolve=resolve, limit=max_targets
    )
    tcp = ports_.parse_ports(spec.ports) if "tcp" in spec.protocols else []
    udp = ports_.parse_ports(spec.udp_ports or spec.ports) if "udp" in spec.protocols else []
    return Plan(
        targets=found,
        tcp_ports=tcp,
        udp_ports=udp,
        timing=spec.timing,
        service_detection=spec.service_detection,
        verify_open=spec.verify_open,
        technique=spec.technique,
    )


class _Collector:
    """Keeps every verdict, streams it, and ticks progress."""

    def __init__(
        self,
        plan_: Plan,
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
        self.verdicts: list[dict[tuple[results.Protocol, int], _Verdict]] = [
            {} for _ in plan_.targets
        ]
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
        table = self.verdicts[host]
        key = (protocol, port)
        if key not in table:
            self.done += 1
            if state == results.PortState.OPEN:
                self.open += 1
        table[key] = (state, reason, rtt, tries)
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
                if state == _TRAILER:
                    packets += host
                    continue
                self.tcp(host, port, _STATES[state], _REASONS[reason], None if rtt < 0 else float(rtt), tries)
            return packets
        packets = 0
        verdicts = self.verdicts
        tcp = results.Protocol.TCP
        open_index = _STATE_INDEX[results.PortState.OPEN]
        states = _STATES
        reasons = _REASONS
        for host, port, state, reason, tries, rtt in records:
            if state == _TRAILER:  # the worker's packet count
                packets += host
                continue
            table = verdicts[host]
            key = (tcp, port)
            if key not in table:
                self.done += 1
                if state == open_index:
                    self.open += 1
            table[key] = (states[state], reasons[reason], None if rtt < 0 else float(rtt), tries)
        if self.on_progress is not None:
            now = self.clock()
            if now - self.last_tick >= 0.1 or self.done == self.total:
                self.last_tick = now
                self.on_progress(results.Progress(done=self.done, total=self.total, open=self.open))
        return packets

    def tcp(
        self, host: int, port: int, state: results.PortState, reason: results.Reason,
        rtt: float | None, tries: int,
    ) -> None:
        self.add(results.Protocol.TCP, host, port, state, reason, rtt, tries)

    def udp(
        self, host: int, port: int, state: results.PortState, reason: results.Reason,
        rtt: float | None, tries: int, reply: bytes | None,
    ) -> None:
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


def _tcp_in_workers(
    plan_: Plan, collector: _Collector, workers: int, stop: threading.Event | None
) -> tcp_scanning.TcpStats:
    """Split the TCP pass over forked processes (ports interleaved), merge their verdicts."""
    timing = plan_.timing
    share = timing.model_copy(
        update={
            "max_rate": None if timing.max_rate is None else max(1, timing.max_rate // workers),
            "max_host_rate": (
                None if timing.max_host_rate is None else max(1, timing.max_host_rate // workers)
            ),
            "concurrency": max(1, timing.concurrency // workers),
        }
    )
    children: list[tuple[int, int]] = []
    for index in range(workers):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(read_fd)
            code = 0
            try:
                code = _tcp_worker(plan_, share, plan_.tcp_ports[index::workers], write_fd)
            finally:
                os._exit(code)
        os.close(write_fd)
        children.append((pid, read_fd))
    stats = tcp_scanning.TcpStats()
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytearray] = {}
    for _, fd in children:
        selector.register(fd, selectors.EVENT_READ)
        buffers[fd] = bytearray()
    open_fds = len(children)
    size = _RECORD.size
    try:
        while open_fds:
            if stop is not None and stop.is_set():
                for pid, _ in children:
                    _terminate(pid)
            for key, _ in selector.select(0.1):
                fd = int(key.fd)
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    selector.unregister(fd)
                    open_fds -= 1
                    continue
                buffer = buffers[fd]
                buffer.extend(chunk)
                whole = len(buffer) - len(buffer) % size
                stats.packets += collector.tcp_records(_RECORD.iter_unpack(bytes(buffer[:whole])))
                del buffer[:whole]
    finally:
        selector.close()
        failed = []
        for pid, fd in children:
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) not in (0, -15):
                failed.append(pid)
    if failed and not (stop is not None and stop.is_set()):
        raise errors.ScanError(f"{len(failed)} TCP worker process(es) failed")
    return stats


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)


def _tcp_worker(plan_: Plan, timing: scanjobs.Timing, ports: list[int], fd: int) -> int:
    """A child process: scan its share of ports and write packed verdicts to the pipe."""
    out = bytearray()
    pack = _RECORD.pack

    def verdict(
        host: int, port: int, state: results.PortState, reason: results.Reason,
        rtt: float | None, tries: int,
    ) -> None:
        out.extend(
            pack(host, port, _STATE_INDEX[state], _REASON_INDEX[reason], min(tries, 254),
                 -1.0 if rtt is None else rtt)
        )
        if len(out) >= 1 << 15:
            _write_all(fd, out)
            out.clear()

    try:
        scanner = tcp_scanning.TcpConnectScanner(plan_.targets, ports, timing, verdict)
        stats = scanner.run()
        out.extend(pack(min(stats.packets, (1 << 32) - 1), 0, _TRAILER, 0, 0, 0.0))
        _write_all(fd, out)
        return 0
    except BaseException:
        return 1
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def default_workers(plan_: Plan) -> int:
    """Worker processes for the TCP pass: one per CPU for big passes, else one."""
    if len(plan_.targets) * len(plan_.tcp_ports) < 8192:
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


def run(
    plan_: Plan,
    *,
    on_port: PortCallback | None = None,
    on_progress: ProgressCallback | None = None,
    identify: Services | None = None,
    payloads: udp_scanning.PayloadSource | None = None,
    identify_reply: Callable[[int, bytes], results.ServiceInfo | None] | None = None,
    workers: int | None = None,
    list_all: bool = False,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    rate_limit_budget: float = 60.0,
    args: str = "",
) -> results.ScanReport:
    """Run every pass of a plan and return the report."""
    started = wall_clock()
    begun = clock()
    collector = _Collector(plan_, on_port, on_progress, clock)
    packets = 0
    notes: list[results.ScanNote] = []
    syn_targets: list[int] = []
    if plan_.tcp_ports and plan_.technique == scanjobs.Technique.SYN:
        for family in sorted({t.family for t in plan_.targets}):
            why = syn_scanning.syn_available(family)
            if why is None:
                syn_targets += [i for i, t in enumerate(plan_.targets) if t.family == family]
            else:
                kind = "IPv6" if family == socket.AF_INET6 else "IPv4"
                notes.append(results.ScanNote(code="SynUnavailable",
                                              message=f"{why}; used TCP connect for {kind} targets instead"))
        syn_targets.sort()
    if syn_targets:
        packets += _syn_pass(plan_, collector, syn_targets, clock, stop)
    by_syn = set(syn_targets)
    connect_targets = [i for i in range(len(plan_.targets)) if i not in by_syn]
    if plan_.tcp_ports and connect_targets and len(connect_targets) < len(plan_.targets):
        subset = dataclasses.replace(plan_, targets=[plan_.targets[i] for i in connect_targets])

        def back(index: int, port: int, state: results.PortState, reason: results.Reason,
                 rtt: float | None, tries: int) -> None:
            collector.tcp(connect_targets[index], port, state, reason, rtt, tries)

        scanner = tcp_scanning.TcpConnectScanner(subset.targets, plan_.tcp_ports, plan_.timing, back,
                                                 clock=clock, stop=stop)
        packets += scanner.run().packets
    elif plan_.tcp_ports and not syn_targets:
        count = workers if workers is not None else default_workers(plan_)
        if count > 1:
            tcp_stats = _tcp_in_workers(plan_, collector, count, stop)
        else:
            scanner = tcp_scanning.TcpConnectScanner(
                plan_.targets, plan_.tcp_ports, plan_.timing, collector.tcp, clock=clock, stop=stop
            )
            tcp_stats = scanner.run()
        packets += tcp_stats.packets
    if plan_.tcp_ports and not (stop is not None and stop.is_set()):
        paced, note_list = _reprobe_icmp_limited(plan_, collector, clock, stop, rate_limit_budget)
        packets += paced
        notes.extend(note_list)
        if plan_.verify_open and not (stop is not None and stop.is_set()):
            packets += _verify_open(plan_, collector, clock, stop)
    if plan_.udp_ports and not (stop is not None and stop.is_set()):
        udp = udp_scanning.UdpScanner(
            plan_.targets,
            plan_.udp_ports,
            plan_.timing,
            collector.udp,
            payloads=payloads or udp_scanning.empty_payloads,
            clock=clock,
            stop=stop,
            rate_limit_budget=rate_limit_budget,
        )
        udp_stats = udp.run()
        packets += udp_stats.packets
        for host, count_ in udp_stats.rate_limited_hosts.items():
            left = udp_stats.unresolved.get(host, 0)
            message = (
                f"the host rate-limits ICMP port-unreachable; {count_} silent UDP ports were "
                "re-probed at the host's pace"
            )
            if left:
                message += (
                    f"; {left} could not be re-probed within the time budget and are reported "
                    "open|filtered (most are probably closed)"
                )
            notes.append(
                results.ScanNote(
                    code="IcmpRateLimited", host=plan_.targets[host].address, message=message
                )
            )
    services: dict[tuple[int, results.Protocol, int], results.ServiceInfo] = {}
    if plan_.service_detection and not (stop is not None and stop.is_set()):
        services = _identify(plan_, collector, identify, identify_reply)
    complete = not (stop is not None and stop.is_set())
    return _report(
        plan_, collector, services, notes, list_all=list_all, started=started,
        finished=wall_clock(), duration=clock() - begun, packets=packets, complete=complete,
        args=args,
    )


_ICMP_REASONS = frozenset(
    {
        results.Reason.NET_UNREACH, results.Reason.HOST_UNREACH, results.Reason.PROTO_UNREACH,
        results.Reason.PORT_UNREACH, results.Reason.NET_PROHIBITED,
        results.Reason.HOST_PROHIBITED, results.Reason.ADMIN_PROHIBITED,
        results.Reason.ICMP_OTHER,
    }
)


def _reprobe_icmp_limited(
    plan_: Plan,
    collector: _Collector,
    clock: Callable[[], float],
    stop: threading.Event | None,
    budget: float,
) -> tuple[int, list[results.ScanNote]]:
    """Re-probe silent TCP ports of hosts that also answered with ICMP errors.

    Such a host rate-limits its ICMP errors like any Linux host, so a port that
    stayed silent during the fast pass may really be rejected.  Its silent ports
    are probed again at one per second per host (the kernel's default refill),
    within the time budget.
    """
    packets = 0
    notes: list[results.ScanNote] = []
    per_second = 1
    for host, table in enumerate(collector.verdicts):
        # Only TCP verdicts exist yet (UDP runs later); map/itemgetter keeps this pass in C.
        if not _ICMP_REASONS.intersection(map(_SECOND, table.values())):
            continue
        silent = sorted(
            port for (p, port), v in table.items()
            if p == results.Protocol.TCP and v[1] == results.Reason.NO_RESPONSE
        )
        if not silent:
            continue
        reachable = silent[: max(0, int(budget * per_second))]
        timing = plan_.timing.model_copy(
            update={"max_host_rate": per_second, "max_rate": None, "retries": 0}
        )

        def again(
            _index: int, port: int, state: results.PortState, reason: results.Reason,
            rtt: float | None, tries: int, host_: int = host,
        ) -> None:
            previous = collector.verdicts[host_][(results.Protocol.TCP, port)]
            collector.tcp(host_, port, state, reason, rtt, previous[3] + tries)

        scanner = tcp_scanning.TcpConnectScanner(
            [plan_.targets[host]], reachable, timing, again, clock=clock, stop=stop,
            paced_start=True,
        )
        packets += scanner.run().packets
        message = (
            f"the host answers some TCP probes with ICMP errors; {len(reachable)} silent ports "
            "were re-probed at one per second in case its ICMP rate limit hid a rejection"
        )
        if len(reachable) < len(silent):
            message += f"; {len(silent) - len(reachable)} were not, within the time budget"
        notes.append(
            results.ScanNote(
                code="IcmpRateLimited", host=plan_.targets[host].address, message=message
            )
        )
    return packets, notes


def _syn_pass(
    plan_: Plan, collector: _Collector, hosts: list[int], clock: Callable[[], float], stop: threading.Event | None
) -> int:
    """SYN-scan these targets, one scanner per address family; verdicts map back to the plan's indexes."""
    packets = 0
    for family in sorted({plan_.targets[i].family for i in hosts}):
        chosen = [i for i in hosts if plan_.targets[i].family == family]

        def back(index: int, port: int, state: results.PortState, reason: results.Reason,
                 rtt: float | None, tries: int, chosen_: list[int] = chosen) -> None:
            collector.tcp(chosen_[index], port, state, reason, rtt, tries)

        def ttl(index: int, port: int, value: int, chosen_: list[int] = chosen) -> None:
            collector.ttls[(chosen_[index], port)] = value

        scanner = syn_scanning.SynScanner([plan_.targets[i] for i in chosen], plan_.tcp_ports, plan_.timing, back,
                                          clock=clock, stop=stop, ttl_sink=ttl)
        packets += scanner.run()
    return packets


def _verify_open(
    plan_: Plan, collector: _Collector, clock: Callable[[], float], stop: threading.Event | None
) -> int:
    """Probe every open TCP port once more; a port must answer twice to stay open."""
    packets = 0
    by_port: dict[int, list[int]] = collections.defaultdict(list)
    for host, table in enumerate(collector.verdicts):
        for (protocol, port), verdict in table.items():
            if protocol == results.Protocol.TCP and verdict[0] == results.PortState.OPEN:
                by_port[port].append(host)
    for port, hosts in by_port.items():
        subset = [plan_.targets[h] for h in hosts]

        def second(
            index: int, port_: int, state: results.PortState, reason: results.Reason,
            rtt: float | None, tries: int, hosts_: list[int] = hosts,
        ) -> None:
            if state != results.PortState.OPEN:
                collector.tcp(hosts_[index], port_, state, reason, rtt, tries)

        scanner = tcp_scanning.TcpConnectScanner(
            subset, [port], plan_.timing, second, clock=clock, stop=stop
        )
        packets += scanner.run().packets
    return packets


def _identify(
    plan_: Plan,
    collector: _Collector,
    identify: Services | None,
    identify_reply: Callable[[int, bytes], results.ServiceInfo | None] | None,
) -> dict[tuple[int, results.Protocol, int], results.ServiceInfo]:
    found: dict[tuple[int, results.Protocol, int], results.ServiceInfo] = {}
    endpoints: list[tuple[str, int]] = []
    where: dict[tuple[str, int], int] = {}
    for host, table in enumerate(collector.verdicts):
        address = plan_.targets[host].address
        for (protocol, port), verdict in table.items():
            if verdict[0] != results.PortState.OPEN:
                continue
            if protocol == results.Protocol.TCP:
                endpoints.append((address, port))
                where[(address, port)] = host
            elif identify_reply is not None:
                reply = collector.replies.get((host, port))
                info = identify_reply(port, reply) if reply is not None else None
                if info is not None:
                    found[(host, protocol, port)] = info
    if endpoints and identify is not None:
        timeout = plan_.timing.max_rtt_timeout_ms / 1000 + 1.0
        for endpoint, info in identify(endpoints, timeout).items():
            found[(where[endpoint], results.Protocol.TCP, endpoint[1])] = info
    return found


def _report(
    plan_: Plan,
    collector: _Collector,
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
