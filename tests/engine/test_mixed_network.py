"""The engine on a mixed network: an edge firewall, many silent open ports, and an ordinary host.

States, reasons, services and notes are checked against the lab's construction;
how long any of it takes is the benchmark's business (bench/run.py, mixed network).
"""

from __future__ import annotations

import json
import sys
import threading

import pytest

from harness import labs
from portolan.engine import payloads, plans, scanning, services
from portolan.models import results, scanjobs

pytestmark = pytest.mark.lab

ISSUE_PORTS = "1-1300,2222,5432,6379,8443"  # issue 13's port list


def _spec(addresses: list[str], ports: str, **extra: object) -> scanjobs.ScanJobSpec:
    return scanjobs.ScanJobSpec.model_validate(
        {"targets": {"addresses": addresses}, "ports": ports, "protocols": ["tcp"], **extra}
    )


def _run(lab: labs.Lab, spec: scanjobs.ScanJobSpec, **options: object) -> results.ScanReport:
    with lab.inside():
        return scanning.run(plans.expand(spec), identify=services.Session, payloads=payloads.payload_bytes,
                            identify_reply=payloads.identify_reply, list_all=True, **options)  # type: ignore[arg-type]


def _verdicts(report: results.ScanReport) -> dict[tuple[str, int], tuple[str, str]]:
    return {(p.host, p.port): (p.state.value, p.reason.value) for h in report.hosts for p in h.ports}


def _built(lab: labs.Lab, host: labs.Host, ports: list[int], otherwise: tuple[str, str]) -> dict[tuple[str, int], tuple[str, str]]:
    """What the construction says for these ports of one host (``otherwise`` for unlisted ones)."""
    return {(host.address, port): lab.expected.get((host.address, port, "tcp"), otherwise) for port in ports}


def test_a_firewalled_host_gets_its_accept_reset_icmp_rejection_and_drops_and_a_note_on_unchecked_reasons(
    lab: labs.Lab,
) -> None:
    host = lab.hosts["firewalled"]
    report = _run(lab, _spec([host.address], "20-30,440-450,8440-8450", serviceDetection=False))
    ports = [*range(20, 31), *range(440, 451), *range(8440, 8451)]
    assert _verdicts(report) == _built(lab, host, ports, ("filtered", "no-response"))
    assert [(n.code, n.host) for n in report.notes] == [("TcpReasonsUnchecked", host.address)]
    assert "30 silent ports are reported filtered/no-response" in report.notes[0].message


def test_a_tcp_reason_budget_re_probes_silent_ports_at_the_icmp_pace_and_changes_no_state(lab: labs.Lab) -> None:
    host = lab.hosts["firewalled"]
    report = _run(lab, _spec([host.address], "22,25,80,443,8443,9000", serviceDetection=False),
                  tcp_reason_budget=2.0)
    assert _verdicts(report) == _built(lab, host, [22, 25, 80, 443, 8443, 9000], ("filtered", "no-response"))
    assert [n.code for n in report.notes] == ["IcmpRateLimited"]
    assert "3 silent ports" not in report.notes[0].message
    assert "2 silent ports were re-probed" in report.notes[0].message
    assert "1 were not, within the time budget" in report.notes[0].message


def test_two_hundred_silent_open_ports_are_open_and_each_gets_a_port_table_guess(lab: labs.Lab) -> None:
    host = lab.hosts["quiet"]
    report = _run(lab, _spec([host.address], "1000-1201"))
    assert _verdicts(report) == _built(lab, host, list(range(1000, 1202)), ("closed", "conn-refused"))
    found = {p.port: p.service for h in report.hosts for p in h.ports if p.state == results.PortState.OPEN}
    assert sorted(found) == list(labs.QUIET_PORTS)
    assert {(s.name, s.method) for s in found.values() if s is not None} == {("unknown", "port")}
    assert None not in found.values()


def test_a_default_scan_of_the_mixed_network_gets_every_hosts_construction_and_services(lab: labs.Lab) -> None:
    hosts = [lab.hosts[name] for name in ("services", "firewalled", "quiet")]
    report = _run(lab, _spec([h.address for h in hosts], ISSUE_PORTS))
    ports = [*range(1, 1301), 2222, 5432, 6379, 8443]
    expected = {
        **_built(lab, hosts[0], ports, ("closed", "conn-refused")),
        **_built(lab, hosts[1], ports, ("filtered", "no-response")),
        **_built(lab, hosts[2], ports, ("closed", "conn-refused")),
    }
    assert _verdicts(report) == expected
    named = {(p.host, p.port): p.service.name for h in report.hosts for p in h.ports if p.service is not None}
    for (address, port, protocol), name in lab.expected_services.items():
        if protocol == "tcp" and address in {h.address for h in hosts} and port in ports:
            assert named[(address, port)] == name, (address, port)
    assert [(n.code, n.host) for n in report.notes] == [("TcpReasonsUnchecked", hosts[1].address)]


def test_a_session_identifies_endpoints_submitted_while_it_runs_once_each(lab: labs.Lab) -> None:
    host = lab.hosts["services"].address
    session = services.Session(2.0)
    with lab.inside():
        for port in (22, 80, 443, 6379, 5432, 22, 80):
            session.submit(host, port)
        found = session.collect()
    assert {port: info.name for (_, port), info in found.items()} == {
        22: "ssh", 80: "http", 443: "https", 6379: "redis", 5432: "postgresql",
    }


def test_a_descriptor_budget_of_one_endpoint_at_a_time_still_identifies_every_endpoint(lab: labs.Lab) -> None:
    host = lab.hosts["services"].address
    with lab.inside():
        found = services.identify_services([(host, 21), (host, 25), (host, 3306), (host, 80)], 2.0, limit=1)
    assert {port: info.name for (_, port), info in found.items()} == {
        21: "ftp", 25: "smtp", 3306: "mysql", 80: "http",
    }


def test_a_stopped_session_gives_up_on_endpoints_still_running_and_ends_its_loop(lab: labs.Lab) -> None:
    host = lab.hosts["quiet"].address
    stop = threading.Event()
    stop.set()
    session = services.Session(30.0)
    with lab.inside():
        for port in labs.QUIET_PORTS:
            session.submit(host, port)
        found = session.collect(stop)
    assert found == {}
    assert not [t for t in threading.enumerate() if t.name == "portolan-services"]


def test_the_cli_reports_unchecked_tcp_reasons_and_rechecks_them_when_given_a_budget(lab: labs.Lab) -> None:
    host = lab.hosts["firewalled"].address
    base = [sys.executable, "-m", "portolan", "scan", host, "-p", "22,25,443,8443", "-o", "json", "--no-service", "-q"]
    plain = lab.run(base, timeout=120)
    budget = lab.run([*base, "--tcp-reason-budget", "1"], timeout=120)
    assert plain.returncode == 0 and budget.returncode == 0, (plain.stderr, budget.stderr)
    reports = [json.loads(done.stdout) for done in (plain, budget)]
    states = [{p["port"]: p["state"] for p in r["hosts"][0]["ports"]} for r in reports]
    assert states[0] == states[1] == {22: "filtered", 25: "closed", 443: "open", 8443: "filtered"}
    assert [n["code"] for n in reports[0]["notes"]] == ["TcpReasonsUnchecked"]
    assert [n["code"] for n in reports[1]["notes"]] == ["IcmpRateLimited"]
