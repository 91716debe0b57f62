"""UDP on loopback never mistakes the scanner's own datagrams for replies.

A probe socket whose source port equals the port it probes receives its own
datagram; before the fix a full-range loopback scan reported one or two
random high ports ``open/udp-response`` most runs.  These scans run in a fresh
namespace (loopback only) so nothing else listens.
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from harness import netns
from portolan.engine import plans, targets, udp_scanning
from portolan.models import results

pytestmark = pytest.mark.lab

_TIMING = plans.Timing(retries=1, initial_rtt_timeout_ms=300, max_rtt_timeout_ms=400)


def _verdicts(address: str, ports: range, timing: plans.Timing = _TIMING) -> dict[int, tuple[results.PortState, results.Reason]]:
    found: dict[int, tuple[results.PortState, results.Reason]] = {}

    def verdict(host: int, port: int, state: results.PortState, reason: results.Reason, *_: object) -> None:
        assert port not in found, f"port {port} was decided twice"
        found[port] = (state, reason)

    udp_scanning.UdpScanner([targets.Target(address)], ports, timing, verdict).run()
    return found


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_repeated_full_range_loopback_scans_find_exactly_the_one_listener(fresh_netns: str, address: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with netns.entered(fresh_netns):
        listener = socket.socket(family, socket.SOCK_DGRAM)
        listener.bind((address, 40404))
        try:
            for _ in range(3):
                scan = _verdicts(address, range(1, 65536))
                # The listener does not answer, so it is open|filtered; every other port is closed.
                opened = {port: v for port, v in scan.items() if v[0] != results.PortState.CLOSED}
                assert opened == {40404: (results.PortState.OPEN_FILTERED, results.Reason.NO_RESPONSE)}
                assert len(scan) == 65535
        finally:
            listener.close()


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_probes_inside_a_narrow_ephemeral_range_never_receive_their_own_datagrams(
    fresh_netns: str, address: str
) -> None:
    # Every source port the kernel can pick is one of the probed ports, so most runs
    # would meet themselves (the unfixed scanner reported about one phantom per run here).
    # Eight probes in flight leave the kernel free ports to pick from.
    subprocess.run(["ip", "netns", "exec", fresh_netns, "sysctl", "-qw",
                    "net.ipv4.ip_local_port_range=40000 40063"], check=True)
    few = _TIMING._replace(concurrency=8)
    with netns.entered(fresh_netns):
        for _ in range(10):
            scan = _verdicts(address, range(40000, 40064), few)
            assert scan == {port: (results.PortState.CLOSED, results.Reason.PORT_UNREACH)
                            for port in range(40000, 40064)}
