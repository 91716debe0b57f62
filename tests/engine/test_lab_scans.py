"""The engine against the lab: every port gets exactly the state and reason of its construction."""

from __future__ import annotations

import pytest

from harness import labs, netns
from portolan.engine import payloads, plans, scanning, services
from portolan.models import results, scanjobs

pytestmark = pytest.mark.lab


def _spec(addresses: list[str], ports: str, protocols: list[str], **extra: object) -> scanjobs.ScanJobSpec:
    return scanjobs.ScanJobSpec.model_validate(
        {
            "targets": {"addresses": addresses},
            "ports": ports,
            "protocols": protocols,
            "timing": {"retries": 1, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 400},
            **extra,
        }
    )


def _verdicts(report: results.ScanReport) -> dict[tuple[str, int, str], tuple[str, str]]:
    return {
        (port.host, port.port, port.protocol.value): (port.state.value, port.reason.value)
        for host in report.hosts
        for port in host.ports
    }


def _scan(lab: labs.Lab, protocol: str, **extra: object) -> results.ScanReport:
    hosts = [host for host in lab.group("core") if host.spec.ports]
    ports = sorted({p for h in hosts for p in h.ports(protocol)})
    spec = _spec([h.address for h in hosts], ",".join(map(str, ports)), [protocol], **extra)
    with lab.inside():
        return scanning.run(
            plans.expand(spec),
            identify=services.Session,
            payloads=payloads.payload_bytes,
            identify_reply=payloads.identify_reply,
            list_all=True,
            rate_limit_budget=30.0,
        )


def _expected_for(lab: labs.Lab, protocol: str) -> dict[tuple[str, int, str], tuple[str, str]]:
    """The construction's verdicts for one protocol on the core hosts."""
    core = {host.address for host in lab.group("core")}
    return {k: v for k, v in lab.expected.items() if k[2] == protocol and k[0] in core}


def test_every_tcp_port_in_the_lab_gets_the_state_and_reason_of_its_construction(lab: labs.Lab) -> None:
    report = _scan(lab, "tcp", serviceDetection=False)
    seen = _verdicts(report)
    for key, verdict in _expected_for(lab, "tcp").items():
        assert seen[key] == verdict, key


def test_ports_probed_on_hosts_that_do_not_list_them_follow_the_host_default(lab: labs.Lab) -> None:
    report = _scan(lab, "tcp", serviceDetection=False)
    seen = _verdicts(report)
    filtered = lab.hosts["filtered"].address
    services_host = lab.hosts["services"].address
    # The filtered host drops everything; the services host refuses what it does not serve.
    assert seen[(filtered, 1001, "tcp")] == ("filtered", "no-response")
    assert seen[(services_host, 1001, "tcp")] == ("closed", "conn-refused")


def test_every_udp_port_in_the_lab_gets_the_state_and_reason_of_its_construction(lab: labs.Lab) -> None:
    report = _scan(lab, "udp", serviceDetection=False)
    seen = _verdicts(report)
    for key, verdict in _expected_for(lab, "udp").items():
        assert seen[key] == verdict, key


def test_open_tcp_services_are_identified_by_name(lab: labs.Lab) -> None:
    report = _scan(lab, "tcp")
    named = {
        (port.host, port.port, port.protocol.value): port.service.name
        for host in report.hosts
        for port in host.ports
        if port.service is not None
    }
    core = {host.address for host in lab.group("core")}
    for key, name in lab.expected_services.items():
        if key[2] == "tcp" and key[0] in core:
            assert named.get(key) == name, key


def test_ssh_banner_gives_product_and_version(lab: labs.Lab) -> None:
    host = lab.hosts["services"].address
    with lab.inside():
        info = services.identify_one(host, 22)
    assert (info.name, info.product, info.version) == ("ssh", "OpenSSH", "9.2p1")


def test_dns_responder_is_identified_from_its_reply_to_our_payload(lab: labs.Lab) -> None:
    report = _scan(lab, "udp")
    dns = [
        port for host in report.hosts for port in host.ports
        if port.host == lab.hosts["services"].address and port.port == 53
    ]
    assert dns and dns[0].service is not None and dns[0].service.name == "dns"


def test_ntp_and_snmp_v2c_responders_are_identified_from_their_replies_to_our_payloads(lab: labs.Lab) -> None:
    report = _scan(lab, "udp")
    found = {port.port: port.service for host in report.hosts for port in host.ports
             if port.host == lab.hosts["services"].address and port.port in (123, 161)}
    ntp, snmp = found[123], found[161]
    assert ntp is not None and (ntp.name, ntp.version) == ("ntp", "v4")
    assert snmp is not None and (snmp.name, snmp.product) == ("snmp", "Linux lab-snmp 6.1")


def test_forked_tcp_workers_find_the_same_verdicts_as_one_process(lab: labs.Lab) -> None:
    hosts = [host for host in lab.group("core") if host.spec.ports]
    ports = sorted({p for h in hosts for p in h.ports("tcp")})
    spec = _spec([h.address for h in hosts], ",".join(map(str, ports)), ["tcp"], serviceDetection=False)
    with lab.inside():
        single = scanning.run(plans.expand(spec), workers=1, list_all=True)
        forked = scanning.run(plans.expand(spec), workers=2, list_all=True)
    assert _verdicts(single) == _verdicts(forked)
    assert len(_verdicts(forked)) == len(hosts) * len(ports)


def test_forked_workers_that_count_closed_ports_report_what_one_process_reports(lab: labs.Lab) -> None:
    # Past a host's first 26 closed ports a worker sends counts, not records: the report (listed
    # ports, counted groups, totals) must not change.
    hosts = [host for host in lab.group("core") if host.spec.ports]
    spec = _spec([h.address for h in hosts], "1-3000", ["tcp"], serviceDetection=False)

    def shape(report: results.ScanReport) -> tuple[object, ...]:
        return (
            sorted((p.host, p.port, p.state.value, p.reason.value) for h in report.hosts for p in h.ports),
            sorted((h.address, e.state.value, e.reason.value, e.count) for h in report.hosts for e in h.extraports),
            report.summary.states, report.summary.probes,
        )

    with lab.inside():
        single = scanning.run(plans.expand(spec), workers=1)
        forked = scanning.run(plans.expand(spec), workers=2)
    assert shape(single) == shape(forked)
    assert any(e.reason == results.Reason.CONN_REFUSED and e.count > 1000 for h in forked.hosts for e in h.extraports)


def test_a_worker_sends_a_hosts_first_26_refusals_in_full_then_counts_in_small_steps(lab: labs.Lab) -> None:
    # The wire promise the collector relies on (a count only after the group collapsed), and
    # counts sent often enough for progress to move.
    import os

    from portolan.engine import collecting, workers

    host = lab.hosts["services"]
    spec = _spec([host.address], "1-6000", ["tcp"], serviceDetection=False)
    plan = plans.expand(spec)
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    with lab.inside():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker, as workers.tcp_in_workers forks it
            status = 1
            try:
                os.close(read_fd)
                status = workers._worker(plan, plan.timing, plan.tcp_ports, write_fd, parent, count_closed=True)
            finally:
                os._exit(status)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 1 << 16):
        chunks.append(chunk)
    os.close(read_fd)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    records = list(collecting.RECORD.iter_unpack(b"".join(chunks)))
    refused = collecting.REASON_INDEX[results.Reason.CONN_REFUSED]
    kinds = [("count", r[1]) if r[2] == collecting.CLOSED_COUNT else ("trailer", 0) if r[2] == collecting.TRAILER
             else ("refused", 0) if r[3] == refused else ("other", 0) for r in records]
    assert code == 0
    first_count = next(i for i, (kind, _) in enumerate(kinds) if kind == "count")
    assert [kind for kind, _ in kinds[:first_count]].count("refused") == collecting.COLLAPSE_ABOVE + 1
    counts = [n for kind, n in kinds if kind == "count"]
    assert len(counts) >= 2 and max(counts) <= 2048
    assert sum(counts) + sum(1 for kind, _ in kinds if kind in ("refused", "other")) == 6000


def test_a_host_that_rate_limits_icmp_is_re_probed_and_reported_in_a_note(lab: labs.Lab) -> None:
    host = lab.hosts["limited"].address
    spec = _spec([host], "9980-9995", ["udp"], serviceDetection=False)
    with lab.inside():
        report = scanning.run(plans.expand(spec), list_all=True, rate_limit_budget=30.0)
    states = {port.port: port.state.value for port in report.hosts[0].ports}
    assert set(states.values()) == {"closed"}, states
    assert [note.code for note in report.notes] == ["IcmpRateLimited"]


def test_a_short_rate_limit_budget_leaves_ports_open_filtered_and_says_so(lab: labs.Lab) -> None:
    host = lab.hosts["limited"].address
    spec = _spec([host], "9960-9979", ["udp"], serviceDetection=False)
    with lab.inside():
        report = scanning.run(plans.expand(spec), list_all=True, rate_limit_budget=1.5)
    states = [port.state.value for port in report.hosts[0].ports]
    assert "open|filtered" in states and "closed" in states
    assert "could not be re-probed" in report.notes[0].message


def test_tls_is_recognised_and_http_inside_it_named_https(lab: labs.Lab) -> None:
    host = lab.hosts["services"].address
    with lab.inside():
        info = services.identify_one(host, 443)
    assert (info.name, info.tls, info.product) == ("https", True, "lab-httpd/1.0")


def test_verification_keeps_ports_that_answer_twice_open(lab: labs.Lab) -> None:
    host = lab.hosts["services"]
    spec = _spec([host.address], "22,80,23", ["tcp"], serviceDetection=False, verifyOpen=True)
    with lab.inside():
        report = scanning.run(plans.expand(spec), list_all=True)
    assert {(p.port, p.state.value) for p in report.hosts[0].ports} == {
        (22, "open"), (80, "open"), (23, "closed"),
    }
    assert report.summary.packets_sent == 5  # three first probes, two verifications


def test_progress_ticks_end_at_the_total_and_count_open_ports(lab: labs.Lab) -> None:
    host = lab.hosts["services"]
    ticks: list[results.Progress] = []
    spec = _spec([host.address], "1-1024", ["tcp"], serviceDetection=False)
    with lab.inside():
        scanning.run(plans.expand(spec), on_progress=ticks.append)
    assert ticks[-1].done == ticks[-1].total == 1024
    assert ticks[-1].open == len([p for p in host.ports("tcp") if p <= 1024 and lab.expected[(host.address, p, "tcp")][0] == "open"])
    assert [t.done for t in ticks] == sorted(t.done for t in ticks)


def test_a_syn_scan_gets_the_constructions_states_with_raw_mode_reasons(lab: labs.Lab) -> None:
    report = _scan(lab, "tcp", serviceDetection=False, technique="syn")
    assert report.notes == []
    seen = _verdicts(report)
    for key, (state, reason) in _expected_for(lab, "tcp").items():
        assert seen[key] == (state, "reset" if reason == "conn-refused" else reason), key


def test_a_syn_scan_that_counts_resets_reports_what_a_detailed_one_lists(lab: labs.Lab) -> None:
    # Without --all-ports a host's RST answers past its first 26 are counted, not handed over one by one.
    hosts = [host for host in lab.group("core") if host.spec.ports]
    spec = _spec([h.address for h in hosts], "1-2000", ["tcp"], serviceDetection=False, technique="syn")
    with lab.inside():
        counted = scanning.run(plans.expand(spec))
        detailed = scanning.run(plans.expand(spec), list_all=True)
    assert counted.notes == [] and detailed.notes == []

    def totals(report: results.ScanReport) -> dict[tuple[str, str, str], int]:
        found: dict[tuple[str, str, str], int] = {}
        for host in report.hosts:
            for port in host.ports:
                key = (host.address, port.state.value, port.reason.value)
                found[key] = found.get(key, 0) + 1
            for group in host.extraports:
                key = (host.address, group.state.value, group.reason.value)
                found[key] = found.get(key, 0) + group.count
        return found

    assert totals(counted) == totals(detailed)
    assert counted.summary.states == detailed.summary.states and counted.summary.probes == len(hosts) * 2000
    assert any(g.reason == results.Reason.RESET and g.count > 1000 for h in counted.hosts for g in h.extraports)
    opened = {(p.host, p.port) for h in counted.hosts for p in h.ports if p.state == results.PortState.OPEN}
    assert opened == {(p.host, p.port) for h in detailed.hosts for p in h.ports if p.state == results.PortState.OPEN}


def test_a_syn_scan_reports_the_ttl_of_every_answer_and_none_for_silence(lab: labs.Lab) -> None:
    report = _scan(lab, "tcp", serviceDetection=False, technique="syn")
    ports = [port for host in report.hosts for port in host.ports]
    answered = [p for p in ports if p.reason != results.Reason.NO_RESPONSE]
    assert answered and all(p.reason_ttl == 64 for p in answered)  # Linux hosts, one hop away
    assert all(p.reason_ttl is None for p in ports if p.reason == results.Reason.NO_RESPONSE)


IPV6_RULES = """
table inet syn6 {
  chain input {
    type filter hook input priority 0;
    tcp dport 1001 reject with icmpv6 type admin-prohibited
    tcp dport 1002 drop
  }
}
"""


def test_a_syn_scan_over_ipv6_gets_the_same_states_as_connect_with_raw_mode_reasons(fresh_netns: str) -> None:
    import socket
    import subprocess

    subprocess.run(["ip", "netns", "exec", fresh_netns, "nft", "-f", "-"], input=IPV6_RULES, text=True, check=True)
    listeners = []
    with netns.entered(fresh_netns):
        for port in (2201, 2202):
            server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            server.bind(("::1", port))
            server.listen()
            listeners.append(server)
        try:
            reports = {
                technique: scanning.run(plans.expand(_spec(["::1"], "2200-2203,1001,1002", ["tcp"],
                                                            serviceDetection=False, technique=technique)),
                                        list_all=True)
                for technique in ("connect", "syn")
            }
        finally:
            for server in listeners:
                server.close()
    connect, syn = (_verdicts(reports[t]) for t in ("connect", "syn"))
    assert not [n for n in reports["syn"].notes if n.code == "SynUnavailable"]
    assert syn == {
        ("::1", 2200, "tcp"): ("closed", "reset"), ("::1", 2201, "tcp"): ("open", "syn-ack"),
        ("::1", 2202, "tcp"): ("open", "syn-ack"), ("::1", 2203, "tcp"): ("closed", "reset"),
        ("::1", 1001, "tcp"): ("filtered", "admin-prohibited"), ("::1", 1002, "tcp"): ("filtered", "no-response"),
    }
    assert {k: v[0] for k, v in connect.items()} == {k: v[0] for k, v in syn.items()}
    assert all(p.reason_ttl == 64 for h in reports["syn"].hosts for p in h.ports if p.port != 1002)
