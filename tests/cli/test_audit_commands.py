"""``portolan audit show``: from a saved audit object to the terminal, JSON and JUnit, with a CI exit code."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from harness import audited

PORTOLAN = [sys.executable, "-m", "portolan"]


def test_an_audit_with_mismatches_exits_4_and_lists_them_in_junit(tmp_path: pathlib.Path) -> None:
    saved = tmp_path / "audit.json"
    saved.write_text(json.dumps(audited.finished_audit()))
    done = subprocess.run([*PORTOLAN, "audit", "show", "-f", str(saved), "-o", "junit"], capture_output=True, text=True)
    assert done.returncode == 4, done.stderr
    assert done.stdout.count("<failure type=\"UnexpectedlyReachable\"") == 6


def test_an_audit_read_from_stdin_renders_the_same_json_status(tmp_path: pathlib.Path) -> None:
    body = audited.finished_audit()
    done = subprocess.run([*PORTOLAN, "audit", "show", "-f", "-", "-o", "json"], input=json.dumps(body),
                          capture_output=True, text=True)
    assert done.returncode == 4
    assert json.loads(done.stdout) == body["status"]


def test_a_file_that_is_not_an_audit_is_a_one_line_usage_error(tmp_path: pathlib.Path) -> None:
    saved = tmp_path / "job.json"
    saved.write_text(json.dumps({"kind": "ScanJob"}))
    done = subprocess.run([*PORTOLAN, "audit", "show", "-f", str(saved)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["portolan audit: error: not a ReachabilityAudit: kind 'ScanJob'"]



def test_an_audit_that_is_not_complete_fails_the_gate_with_exit_3(tmp_path: pathlib.Path) -> None:
    body = audited.finished_audit()
    body["status"]["phase"] = "Running"
    saved = tmp_path / "audit.json"
    saved.write_text(json.dumps(body))
    done = subprocess.run([*PORTOLAN, "audit", "show", "-f", str(saved)], capture_output=True, text=True)
    assert done.returncode == 3
