"""The ``portolan`` command: bad input, manifests, output formats, loopback behaviour."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from harness import labs, netns
from portolan import launching as cli
from portolan.cli import exits

PORTOLAN = [sys.executable, "-m", "portolan"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan", "127.0.0.1", "-p", "70000"], "port 70000 is out of range"),
        (["scan", "198.18.0.0/33"], "malformed CIDR"),
        (["scan", "127.0.0.1", "-o", "yaml"], "unknown output format 'yaml'"),
        (["scan", "127.0.0.1", "--retries", "99"], "invalid option: retries: Input should be less than or equal to 10"),
        (["scan", "-f", "/nonexistent/job.yaml"], "cannot read manifest"),
        (["frobnicate"], "invalid choice"),
        (["scan", "127.0.0.1", "--allow-open", "22,ssh"], "unknown port item 'ssh'"),
    ],
)
def test_bad_input_prints_a_message_and_exits_2_before_sending_anything(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == exits.USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("kind: ScanJob\napiVersion: portolan.dev/v1alpha1\nspec: {targets: {addresses: []}}\n", "at least one address"),
        ("apiVersion: v1\nkind: ConfigMap\n", "no document with kind: ScanJob"),
        ("kind: ScanJob\napiVersion: portolan.dev/v1alpha1\nspec:\n  targets: {addresses: [x]}\n  bogus: 1\n", "spec.bogus"),
        ("{{{", "not valid YAML"),
    ],
)
def test_invalid_manifests_are_rejected_with_the_file_and_field_named(
    tmp_path: pathlib.Path, manifest: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(manifest)
    assert cli.main(["scan", "-f", str(path)]) == exits.USAGE
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def _in_ns(ns: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=120, **kwargs
    )


@pytest.mark.lab
def test_a_manifest_runs_locally_and_reports_json_matching_the_lab(lab: labs.Lab, tmp_path: pathlib.Path) -> None:
    host = lab.hosts["services"]
    path = tmp_path / "scanjob.yaml"
    path.write_text(
        "apiVersion: portolan.dev/v1alpha1\nkind: ScanJob\nmetadata: {name: lab}\nspec:\n"
        f"  targets: {{addresses: ['{host.address}']}}\n  ports: '22,80,23'\n"
        "  pools: [{name: edge, nodeSelector: {pool: edge}}]\n"
    )
    done = _in_ns(lab.scanner_ns, [*PORTOLAN, "scan", "-f", str(path), "-o", "json"])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    seen = {(p["port"], p["state"], p.get("service", {}).get("name")) for p in report["hosts"][0]["ports"]}
    assert seen == {(22, "open", "ssh"), (80, "open", "http"), (23, "closed", None)}


@pytest.mark.lab
def test_xml_output_reads_like_nmap_xml_for_the_same_ports(lab: labs.Lab) -> None:
    if shutil.which("nmap") is None:
        pytest.fail("nmap is installed by tools/test.sh")
    host = lab.hosts["rejecting"].address
    ours = _in_ns(lab.scanner_ns, [*PORTOLAN, "scan", host, "-p", "80,81", "-o", "xml", "--no-service"])
    theirs = _in_ns(lab.scanner_ns, ["nmap", "-sT", "-Pn", "-n", "-p", "80,81", "--reason", "-oX", "-", host])
    assert ours.returncode == 0 and theirs.returncode == 0, (ours.stderr, theirs.stderr)

    def read(text: str) -> set[tuple[str, str, str, str, str]]:
        root = ElementTree.fromstring(text)
        return {
            (address.get("addr", ""), port.get("protocol", ""), port.get("portid", ""),
             state.get("state", ""), state.get("reason", ""))
            for node in root.iter("host")
            for address in node.iter("address")
            for port in node.iter("port")
            for state in port.iter("state")
        }

    assert read(ours.stdout) == read(theirs.stdout)
    assert read(ours.stdout) == {(host, "tcp", "80", "open", "syn-ack"), (host, "tcp", "81", "closed", "conn-refused")}


@pytest.mark.lab
def test_loopback_self_connects_are_never_reported_open(fresh_netns: str) -> None:
    # Ephemeral ports on loopback can meet themselves (TCP simultaneous open); nothing listens here.
    done = _in_ns(fresh_netns, [*PORTOLAN, "scan", "127.0.0.1", "-p", "32768-60999", "-o", "json", "--all-ports", "--no-service"])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    states = {p["state"] for p in report["hosts"][0]["ports"]}
    assert states == {"closed"}
    assert report["summary"]["states"] == {"closed": 60999 - 32768 + 1}


@pytest.mark.lab
def test_the_embedded_default_scans_loopback_and_finds_a_listener(fresh_netns: str) -> None:
    server = netns.popen(fresh_netns, [sys.executable, "-m", "http.server", "8080", "--bind", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            probe = _in_ns(fresh_netns, [sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 8080), 1)"])
            if probe.returncode == 0:
                break
        done = _in_ns(fresh_netns, [*PORTOLAN, "scan"])
    finally:
        server.kill()
        server.wait()
    assert done.returncode == 0, done.stderr
    assert "8080/tcp" in done.stdout and "open" in done.stdout and "http" in done.stdout
    assert "Scan report for ::1" in done.stdout


@pytest.mark.lab
def test_sigterm_mid_scan_writes_the_partial_report_and_exits_130(lab: labs.Lab) -> None:
    host = lab.hosts["filtered"].address
    process = netns.popen(
        lab.scanner_ns, [*PORTOLAN, "scan", host, "-p", "1-2000", "-o", "json", "--no-service",
                         "--max-rtt-timeout", "3000", "--initial-rtt-timeout", "3000", "--concurrency", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        out, _ = process.communicate(timeout=1.5)
    except subprocess.TimeoutExpired:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert process.returncode == exits.INTERRUPTED
    report = json.loads(out)
    assert report["complete"] is False


@pytest.mark.lab
@pytest.mark.parametrize(("allowed", "code", "unexpected"), [("22", 4, [21, 25]), ("21-25", 0, []), ("", 4, [21, 22, 25])])
def test_open_ports_outside_allow_open_exit_4_and_are_listed_as_a_ci_gate(
        lab: labs.Lab, allowed: str, code: int, unexpected: list[int]) -> None:
    host = lab.hosts["services"].address
    done = _in_ns(lab.scanner_ns, [*PORTOLAN, "scan", host, "-p", "21-25", "--no-service", "-o", "json",
                                   "--allow-open", allowed])
    assert done.returncode == code, done.stderr
    report = json.loads(done.stdout)
    assert report["allowed_open_ports"] == allowed
    assert [p["port"] for p in report["unexpected_open"]] == unexpected
    for port in unexpected:
        assert f"unexpected open port: {host}:{port}/tcp" in done.stderr


@pytest.mark.lab
def test_junit_output_has_a_case_per_open_port_and_fails_the_unexpected_ones(lab: labs.Lab) -> None:
    from xml.etree import ElementTree

    host = lab.hosts["services"].address
    done = _in_ns(lab.scanner_ns, [*PORTOLAN, "scan", host, "-p", "21-25", "-o", "junit", "--allow-open", "22"])
    assert done.returncode == 4, done.stderr
    root = ElementTree.fromstring(done.stdout)
    assert (root.get("tests"), root.get("failures")) == ("3", "2")
    cases = {case.get("name"): case.find("failure") is not None for case in root.iter("testcase")}
    assert {name.split()[0]: failed for name, failed in cases.items()} == {"21/tcp": True, "22/tcp": False, "25/tcp": True}
    assert any(name.startswith("22/tcp open (ssh") for name in cases)
