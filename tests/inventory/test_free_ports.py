"""``portolan free-port``: bind-checked ports, the ephemeral range, leases, and parallel callers.

Every test runs in a fresh network namespace (ports and the ephemeral range
are per namespace) with its own runtime directory for leases.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from harness import netns
from portolan.inventory import freeports

PORTOLAN = [sys.executable, "-m", "portolan"]

pytestmark = pytest.mark.lab


def free_port(ns: str, runtime: pathlib.Path, *options: str) -> subprocess.Popen[str]:
    return netns.popen(ns, [*PORTOLAN, "free-port", "--runtime-dir", str(runtime), *options],  # type: ignore[return-value]
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen[str]) -> tuple[int, list[int], str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, [int(line) for line in out.split()], err


@contextlib.contextmanager
def held(ns: str, ports: list[int], kind: socket.SocketKind = socket.SOCK_STREAM) -> Iterator[list[socket.socket]]:
    """Sockets bound (and listening, for TCP) in ``ns`` on these ports until the block ends."""
    sockets: list[socket.socket] = []
    with netns.entered(ns):
        try:
            for port in ports:
                sock = socket.socket(socket.AF_INET, kind)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
                if kind == socket.SOCK_STREAM:
                    sock.listen()
            yield sockets
        finally:
            for sock in sockets:
                sock.close()


def test_parallel_calls_never_return_a_port_another_call_still_holds(fresh_netns: str, tmp_path: pathlib.Path) -> None:
    calls = [free_port(fresh_netns, tmp_path, "--range", "30000-30039", "--count", "5") for _ in range(8)]
    outcomes = [finished(call) for call in calls]
    assert all(code == 0 for code, _, _ in outcomes), [err for _, _, err in outcomes]
    returned = [port for _, ports, _ in outcomes for port in ports]
    assert len(returned) == 40 and len(set(returned)) == 40  # the whole range, each port once
    code, ports, err = finished(free_port(fresh_netns, tmp_path, "--range", "30000-30039"))
    assert (code, ports) == (3, [])  # every port is leased to one of the eight
    assert "found 0 of 1 free tcp ports in 30000-30039: 0 in use, 40 reserved by other free-port calls" in err


def test_ports_held_by_sockets_are_never_returned_and_an_exhausted_range_fails_clearly(
    fresh_netns: str, tmp_path: pathlib.Path
) -> None:
    with held(fresh_netns, [31000, 31002]), held(fresh_netns, [31001], socket.SOCK_DGRAM):
        code, ports, _ = finished(free_port(fresh_netns, tmp_path, "--range", "31000-31003", "--count", "2"))
        assert (code, ports) == (0, [31001, 31003])  # a UDP socket on 31001 leaves TCP 31001 free
        code, ports, err = finished(free_port(fresh_netns, tmp_path, "--range", "31000-31003", "--protocol", "tcp"))
        assert (code, ports) == (3, [])
        assert err.strip() == ("portolan free-port: failed: found 0 of 1 free tcp ports in 31000-31003: "
                               "2 in use, 2 reserved by other free-port calls")
        code, ports, _ = finished(free_port(fresh_netns, tmp_path, "--range", "31000-31002", "--protocol", "udp",
                                            "--count", "2"))
        assert (code, ports) == (0, [31000, 31002])  # TCP sockets on 31000 and 31002 leave those UDP ports free


def test_a_partial_pick_fails_and_gives_its_leases_back(fresh_netns: str, tmp_path: pathlib.Path) -> None:
    with held(fresh_netns, [31100]):
        code, ports, err = finished(free_port(fresh_netns, tmp_path, "--range", "31100-31102", "--count", "3"))
        assert (code, ports) == (3, []) and "found 2 of 3" in err
    code, ports, _ = finished(free_port(fresh_netns, tmp_path, "--range", "31100-31102", "--count", "3"))
    assert (code, ports) == (0, [31100, 31101, 31102])


def test_the_kernel_ephemeral_range_is_skipped_unless_asked(fresh_netns: str, tmp_path: pathlib.Path) -> None:
    netns.run(fresh_netns, ["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40009"])
    code, ports, _ = finished(free_port(fresh_netns, tmp_path, "--range", "39999-40010", "--count", "2"))
    assert (code, ports) == (0, [39999, 40010])
    code, _, err = finished(free_port(fresh_netns, tmp_path, "--range", "40000-40009"))
    assert code == 3 and "10 in the kernel's ephemeral range 40000-40009 skipped (--allow-ephemeral" in err
    code, ports, _ = finished(free_port(fresh_netns, tmp_path, "--range", "40000-40009", "--allow-ephemeral"))
    assert code == 0 and len(ports) == 1 and 40000 <= ports[0] <= 40009


def test_a_lease_ends_after_its_time_and_a_port_bound_by_then_stays_taken(fresh_netns: str, tmp_path: pathlib.Path) -> None:
    now = [1000.0]
    with netns.entered(fresh_netns):
        leases = freeports.Leases.here(str(tmp_path), seconds=30, clock=lambda: now[0])
        first = freeports.pick(32000, 32001, 1, "tcp", leases, ephemeral=(1, 0))
        second = freeports.pick(32000, 32001, 2, "tcp", leases, ephemeral=(1, 0))
        assert len(first.ports) == 1 and second.ports == sorted({32000, 32001} - set(first.ports))
        assert second.leased == 1
        now[0] += 31  # both leases have ended; the first caller bound its port meanwhile
        with held(fresh_netns, first.ports):
            third = freeports.pick(32000, 32001, 2, "tcp", leases, ephemeral=(1, 0))
        assert third.ports == second.ports and third.busy == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--range", "3000-20"], "port range '3000-20' must satisfy 1 <= LOW <= HIGH <= 65535"),
        (["--range", "abc"], "malformed port range 'abc'"),
        (["--count", "0"], "--count must be at least 1"),
        (["--protocol", "sctp"], "invalid choice: 'sctp'"),
    ],
)
def test_bad_free_port_options_exit_2_with_one_line(tmp_path: pathlib.Path, options: list[str], message: str) -> None:
    done = subprocess.run([*PORTOLAN, "free-port", "--runtime-dir", str(tmp_path), *options], capture_output=True,
                          text=True, check=False, env=dict(os.environ))
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1]
