"""How a scan ends when it is told to stop or loses its output: promptly, with every worker gone.

Each scan is a real ``portolan scan`` process in a fresh namespace (loopback
only), under the same memory bound as the hostile-input table.  The bounds
asserted are the issue's: SIGINT/SIGTERM end a scan within :data:`PROMPT`
seconds whatever the worker count and rate, with the partial report written
and exit 130; a reader that goes away ends the scan and every worker within
:data:`PROMPT` seconds, quietly (exit 141, nothing on stderr).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from harness import labs, netns

from . import test_hostile_inputs as hostile

pytestmark = pytest.mark.lab

PROMPT = 1.0  # seconds from the signal (or the closed pipe) to the process's exit


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    labs.require_lab()
    name = f"{labs.PREFIX}{os.getpid() % 100000}-end{os.urandom(2).hex()}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)


def _start(namespace: str, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "portolan", "scan", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        preexec_fn=hostile._bounded(),
    )


def _workers(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in found.stdout.split()]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for its reaper is gone too
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


def _wait_for_workers(process: subprocess.Popen[bytes], count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = _workers(process.pid)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"the scan did not start {count} workers")


def _wait_for_probes(process: subprocess.Popen[bytes]) -> None:
    """Until the scan has sockets open (it is probing, past start-up and its signal handlers)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for pid in [process.pid, *_workers(process.pid)]:
            try:
                links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                continue
            if any(link.startswith("socket:") for link in links):
                return
        time.sleep(0.02)
    raise AssertionError("the scan never started probing")


SCANS = {
    "four workers": ("127.0.0.1", "-p", "1-65535", "--workers", "4", "--rate", "5000"),
    "one process with a rate cap": ("127.0.0.1", "-p", "1-65535", "--workers", "1", "--rate", "2000"),
    "four workers with a rate cap over IPv6": ("::1", "-p", "1-65535", "--workers", "4", "--rate", "2000"),
    "UDP with a rate cap": ("127.0.0.1", "-u", "-p", "1-65535", "--rate", "2000"),
}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("scan", list(SCANS), ids=list(SCANS))
def test_a_signal_ends_the_scan_promptly_with_the_partial_report_and_exit_130(
    namespace: str, scan: str, signum: signal.Signals
) -> None:
    process = _start(namespace, *SCANS[scan], "-o", "json", "-q", "--no-service")
    workers = _wait_for_workers(process, 4) if "--workers" in SCANS[scan] and "4" in SCANS[scan] else []
    _wait_for_probes(process)
    time.sleep(0.5)
    assert process.poll() is None, "the scan ended before the signal: make it longer"
    process.send_signal(signum)
    sent = time.monotonic()
    try:
        out, err = process.communicate(timeout=PROMPT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"still running {PROMPT} s after {signum.name}") from None
    assert time.monotonic() - sent <= PROMPT
    assert process.returncode == 130, err.decode()
    report = json.loads(out)
    assert report["complete"] is False
    assert 0 < report["summary"]["probes"] < 65535
    assert all(_gone(pid) for pid in workers)


def test_a_reader_that_goes_away_ends_the_scan_and_every_worker_quietly(namespace: str) -> None:
    process = _start(namespace, "127.0.0.1", "-p", "1-65535", "--workers", "4", "--rate", "5000",
                     "-o", "jsonl", "--all-ports", "-q", "--no-service")
    workers = _wait_for_workers(process, 4)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert json.loads(first)["protocol"] == "tcp"
    process.stdout.close()  # like `| head -1`
    closed = time.monotonic()
    try:
        _, err = process.communicate(timeout=PROMPT + 0.5)  # the next write finds the pipe broken
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError("the scan outlived its reader") from None
    assert time.monotonic() - closed <= PROMPT + 0.5
    assert process.returncode == 141
    assert err == b""
    assert all(_gone(pid) for pid in workers)


def test_a_failing_output_file_ends_every_worker_with_one_line_and_exit_3(namespace: str) -> None:
    process = _start(namespace, "127.0.0.1", "-p", "1-65535", "--workers", "4", "-o", "jsonl", "--all-ports",
                     "-q", "--no-service", "--output-file", "/dev/full")
    try:
        _, err = process.communicate(timeout=hostile.TIME_LIMIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError("the scan hung on a failing output") from None
    assert process.returncode == 3
    assert err.decode().splitlines() == [
        "portolan scan: failed: cannot write the report to /dev/full: No space left on device"
    ]
    assert _workers(process.pid) == []


def test_forked_workers_of_a_scanner_that_is_pid_1_as_in_a_container_scan_their_whole_share(namespace: str) -> None:
    # In a container the scanner is pid 1, so its workers see getppid() == 1 while it lives;
    # they once took that for their parent's death and stopped at once: an empty "complete" scan.
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "unshare", "--pid", "--fork", "--mount-proc",
         sys.executable, "-c", "import os, runpy, sys; assert os.getpid() == 1; sys.argv[0] = 'portolan';"
         " runpy.run_module('portolan', run_name='__main__')",
         "scan", "127.0.0.0/22", "-p", "9,10", "--workers", "2", "--retries", "0", "--no-service", "-o", "json"],
        capture_output=True, timeout=hostile.TIME_LIMIT, stdin=subprocess.DEVNULL, preexec_fn=hostile._bounded())
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["complete"] is True
    assert report["summary"]["states"] == {"closed": 2048}
