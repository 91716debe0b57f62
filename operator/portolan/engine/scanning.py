"""Scanning: turn a ScanJob spec into probes, run the passes, collect a report.

This is the engine's one entry point for callers (the CLI, shard pods):

* :func:`portolan.engine.plans.expand` expands targets and ports once (so bad
  input fails before any packet is sent);
* :func:`run` runs the TCP connect pass (optionally split over forked worker
  processes), the UDP pass, open-port verification and service identification,
  streaming each verdict to ``on_port`` and progress to ``on_progress``, and
  returns a :class:`~portolan.models.results.ScanReport`.

Service identification starts as soon as a TCP port is found open (a session
from ``identify`` runs beside the passes) and is collected at the end, so a
scan pays about one identification deadline on top of its passes, whatever
the number of open ports.  For TCP, silence and every ICMP unreachable both
mean ``filtered``: the re-probe of a host's silent ports at its ICMP rate
limit can only refine a reason, so it is off unless ``tcp_reason_budget``
asks for it (a note says when such reasons may be hidden).

Limits: the report lists open ports and small groups individually and counts
large groups of closed/filtered ports (``extraports``) unless ``list_all`` is
set; the collector keeps in memory only what the report lists (plus two bytes
per silent TCP port), so memory follows the results, not the probe count.  An
interrupted run (``stop`` set) returns what was gathered with
``complete=False``.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
import typing
from collections.abc import Callable

from portolan.engine import collecting, plans, reporting, tcp_scanning, udp_scanning
from portolan.engine import workers as workers_
from portolan.models import defaults, results


class ServiceSession(typing.Protocol):
    """Identification of open TCP endpoints, fed while the scan runs (see engine.services.Session)."""

    def submit(self, address: str, port: int) -> None: ...

    def collect(self, stop: threading.Event | None = None) -> dict[tuple[str, int], results.ServiceInfo]: ...

    def close(self) -> None: ...


Services = Callable[[float], ServiceSession]  # a session whose endpoints get this deadline (s)


def run(
    plan_: plans.Plan,
    *,
    on_port: collecting.PortCallback | None = None,
    on_progress: collecting.ProgressCallback | None = None,
    identify: Services | None = None,
    payloads: udp_scanning.PayloadSource | None = None,
    identify_reply: Callable[[int, bytes], results.ServiceInfo | None] | None = None,
    workers: int | None = None,
    list_all: bool = False,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    rate_limit_budget: float = 60.0,
    tcp_reason_budget: float = 0.0,
    args: str = "",
) -> results.ScanReport:
    """Run every pass of a plan and return the report.

    ``rate_limit_budget`` bounds the UDP re-probe of hosts that rate-limit ICMP
    (seconds); ``tcp_reason_budget`` the TCP one (0: not done).
    """
    started = wall_clock()
    begun = clock()
    collector = collecting.Collector(plan_, on_port, on_progress, clock, keep_all=list_all)
    session: ServiceSession | None = None
    if plan_.service_detection and identify is not None and plan_.tcp_ports:
        session = identify(plan_.timing.max_rtt_timeout_ms / 1000 + 1.0)
        addresses = [target.address for target in plan_.targets]
        submit = session.submit
        collector.on_open = lambda host, port: submit(addresses[host], port)
    try:
        return _passes(plan_, collector, session, started, begun, payloads=payloads,
                       identify_reply=identify_reply, workers=workers, list_all=list_all, stop=stop,
                       clock=clock, wall_clock=wall_clock, rate_limit_budget=rate_limit_budget,
                       tcp_reason_budget=tcp_reason_budget, args=args)
    finally:
        if session is not None:
            session.close()


def _passes(
    plan_: plans.Plan,
    collector: collecting.Collector,
    session: ServiceSession | None,
    started: float,
    begun: float,
    *,
    payloads: udp_scanning.PayloadSource | None,
    identify_reply: Callable[[int, bytes], results.ServiceInfo | None] | None,
    workers: int | None,
    list_all: bool,
    stop: threading.Event | None,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
    rate_limit_budget: float,
    tcp_reason_budget: float,
    args: str,
) -> results.ScanReport:
    packets = 0
    notes: list[results.ScanNote] = []
    syn_targets: list[int] = []
    if plan_.tcp_ports and plan_.technique == defaults.Technique.SYN:
        from portolan.engine import syn_scanning  # raw sockets and BPF: only SYN scans load them

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
        subset = plan_._replace(targets=[plan_.targets[i] for i in connect_targets])

        def back(index: int, port: int, state: results.PortState, reason: results.Reason,
                 rtt: float | None, tries: int) -> None:
            collector.tcp(connect_targets[index], port, state, reason, rtt, tries)

        scanner = tcp_scanning.TcpConnectScanner(subset.targets, plan_.tcp_ports, plan_.timing, back,
                                                 clock=clock, stop=stop)
        packets += scanner.run().packets
    elif plan_.tcp_ports and not syn_targets:
        count = workers if workers is not None else workers_.default_workers(plan_)
        if count > 1:
            tcp_stats = workers_.tcp_in_workers(plan_, collector, count, stop)
        else:
            scanner = tcp_scanning.TcpConnectScanner(
                plan_.targets, plan_.tcp_ports, plan_.timing, collector.tcp, clock=clock, stop=stop
            )
            tcp_stats = scanner.run()
        packets += tcp_stats.packets
    if plan_.tcp_ports and not (stop is not None and stop.is_set()):
        paced, note_list = _reprobe_icmp_limited(plan_, collector, clock, stop, tcp_reason_budget)
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
        services = _identify(plan_, collector, session, identify_reply, stop)
    complete = not (stop is not None and stop.is_set())
    return reporting.build(
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
    plan_: plans.Plan,
    collector: collecting.Collector,
    clock: Callable[[], float],
    stop: threading.Event | None,
    budget: float,
) -> tuple[int, list[results.ScanNote]]:
    """Re-probe silent TCP ports of hosts that also answered with ICMP errors.

    Such a host rate-limits its ICMP errors like any Linux host, so a port that
    stayed silent during the fast pass may really be rejected.  Both mean
    ``filtered``: only the reason can change.  With a budget, the silent ports
    are probed again at one per second per host (the kernel's default refill)
    within it; without one (the default), a note says the reasons may hide
    rejections.
    """
    packets = 0
    notes: list[results.ScanNote] = []
    per_second = 1
    counted = collector.groups()
    for host in range(len(plan_.targets)):
        # Only TCP verdicts exist yet (UDP runs later).
        if not any(group[2] in _ICMP_REASONS for group in counted.get(host, ())):
            continue
        silent = collector.silent_tcp(host)
        if not silent:
            continue
        if budget <= 0:
            notes.append(results.ScanNote(
                code="TcpReasonsUnchecked", host=plan_.targets[host].address,
                message=(f"the host answers some TCP probes with ICMP errors; its {len(silent)} silent "
                         "ports are reported filtered/no-response, though its ICMP rate limit may have "
                         "hidden rejections (the state is filtered either way; a TCP reason budget "
                         "re-probes them)"),
            ))
            continue
        reachable = silent[: max(0, int(budget * per_second))]
        timing = plan_.timing._replace(max_host_rate=per_second, max_rate=None, retries=0)

        def again(
            _index: int, port: int, state: results.PortState, reason: results.Reason,
            rtt: float | None, tries: int, host_: int = host,
        ) -> None:
            previous = collector.verdicts[host_].get((results.Protocol.TCP, port))
            before = previous[3] if previous is not None else plan_.timing.retries + 1
            collector.add(results.Protocol.TCP, host_, port, state, reason, rtt, before + tries,
                          was_silent=previous is None)

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
    plan_: plans.Plan, collector: collecting.Collector, hosts: list[int], clock: Callable[[], float],
    stop: threading.Event | None,
) -> int:
    """SYN-scan these targets, one scanner per address family; verdicts map back to the plan's indexes."""
    from portolan.engine import syn_scanning

    packets = 0
    for family in sorted({plan_.targets[i].family for i in hosts}):
        chosen = [i for i in hosts if plan_.targets[i].family == family]

        def back(index: int, port: int, state: results.PortState, reason: results.Reason,
                 rtt: float | None, tries: int, chosen_: list[int] = chosen) -> None:
            collector.tcp(chosen_[index], port, state, reason, rtt, tries)

        def ttl(index: int, port: int, value: int, chosen_: list[int] = chosen) -> None:
            collector.ttls[(chosen_[index], port)] = value

        def closed(index: int, count: int, chosen_: list[int] = chosen) -> None:
            collector.closed_count(chosen_[index], count, results.Reason.RESET)

        detailed = collector.keep_all or collector.on_port is not None
        scanner = syn_scanning.SynScanner([plan_.targets[i] for i in chosen], plan_.tcp_ports, plan_.timing, back,
                                          clock=clock, stop=stop, ttl_sink=ttl,
                                          count_closed=None if detailed else closed)
        packets += scanner.run()
    return packets


def _verify_open(
    plan_: plans.Plan, collector: collecting.Collector, clock: Callable[[], float], stop: threading.Event | None
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
    plan_: plans.Plan,
    collector: collecting.Collector,
    session: ServiceSession | None,
    identify_reply: Callable[[int, bytes], results.ServiceInfo | None] | None,
    stop: threading.Event | None,
) -> dict[tuple[int, results.Protocol, int], results.ServiceInfo]:
    """The services of every port still open: TCP from the session (fed during the passes), UDP from replies."""
    found: dict[tuple[int, results.Protocol, int], results.ServiceInfo] = {}
    where: dict[tuple[str, int], int] = {}
    for host, table in enumerate(collector.verdicts):
        address = plan_.targets[host].address
        for (protocol, port), verdict in table.items():
            if verdict[0] != results.PortState.OPEN:
                continue
            if protocol == results.Protocol.TCP:
                if session is not None:
                    session.submit(address, port)  # already submitted when found: nothing
                where[(address, port)] = host
            elif identify_reply is not None:
                reply = collector.replies.get((host, port))
                info = identify_reply(port, reply) if reply is not None else None
                if info is not None:
                    found[(host, protocol, port)] = info
    if session is not None:
        for endpoint, info in session.collect(stop).items():
            if endpoint in where:  # verification may have closed a port found open
                found[(where[endpoint], results.Protocol.TCP, endpoint[1])] = info
    return found


