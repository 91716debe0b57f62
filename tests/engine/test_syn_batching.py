"""SYNs sent in batches (sendmmsg): a refused datagram in the middle of a batch does not lose the rest."""

from __future__ import annotations

import socket
import subprocess

import pytest

from harness import netns
from portolan.engine import batching, plans, scanning
from portolan.models import scanjobs

pytestmark = pytest.mark.lab

# The scanner's own output hook refuses SYNs to 7001: sendmmsg stops there with EPERM.
REFUSE_7001 = """
table ip out {
  chain output {
    type filter hook output priority 0;
    tcp dport 7001 drop
  }
}
"""


def test_a_syn_refused_by_the_local_firewall_mid_batch_is_filtered_and_the_batch_goes_on(fresh_netns: str) -> None:
    assert batching.available()
    subprocess.run(["ip", "netns", "exec", fresh_netns, "nft", "-f", "-"], input=REFUSE_7001, text=True, check=True)
    spec = scanjobs.ScanJobSpec.model_validate({
        "targets": {"addresses": ["127.0.0.1"]}, "ports": "7000-7003", "protocols": ["tcp"], "technique": "syn",
        "serviceDetection": False, "timing": {"retries": 0, "initialRttTimeoutMs": 200, "maxRttTimeoutMs": 200},
    })
    with netns.entered(fresh_netns):
        server = socket.socket()
        server.bind(("127.0.0.1", 7002))
        server.listen()
        try:
            report = scanning.run(plans.expand(spec), list_all=True)
        finally:
            server.close()
    assert not [n for n in report.notes if n.code == "SynUnavailable"]
    states = {p.port: p.state.value for h in report.hosts for p in h.ports}
    assert states == {7000: "closed", 7001: "filtered", 7002: "open", 7003: "closed"}
    assert report.summary.packets_sent == 3  # 7001's SYN never left; the ones after it in its batch did
