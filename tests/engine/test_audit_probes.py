"""Audit probes and canaries with real sockets, in a fresh network namespace with nftables rules.

A canary listens; nftables plays the enforcer (drop, reject with an ICMP
prohibition, or let through); the probe runtime probes the pairs with the engine,
re-probes the ones that disagree with their expectation until they agree or time
runs out, and writes one verdict per pair into the audit's status.
"""

from __future__ import annotations

import subprocess
import threading

from harness import netns
from portolan.kube import codecs, fakes
from portolan.shard import echoing, probing

RULES = """
table inet enforcer {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 7011 drop
        udp dport 7012 reject with icmpx admin-prohibited
    }
}
"""
LATE = """
table inet late {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 7001 drop
    }
}
"""


def _audit() -> fakes.FakeKube:
    kube = fakes.FakeKube()
    kube.add({"apiVersion": "portolan.dev/v1alpha1", "kind": "ReachabilityAudit",
              "metadata": {"name": "a", "namespace": ""}, "spec": {}})
    return kube


def _env(pairs: list[tuple[str, int, str, bool | None, bool]], convergence: float) -> probing.ProbeEnv:
    return probing.ProbeEnv.from_environment({
        "PORTOLAN_AUDIT": "a", "PORTOLAN_SOURCE": "web", "PORTOLAN_PAIRS": codecs.encode_pairs(pairs),
        "PORTOLAN_CONVERGENCE_SECONDS": str(convergence), "PORTOLAN_PROBE_TIMEOUT_MS": "300"})


def _canary(name: str, stop: threading.Event, ready: threading.Event) -> threading.Thread:
    def serve() -> None:
        with netns.entered(name):
            echoing.serve([7001], [7002], stop, ready=ready)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5)
    return thread


def test_each_pair_gets_the_verdict_its_path_earns_and_the_report_lands_in_the_status(fresh_netns: str) -> None:
    subprocess.run(["ip", "netns", "exec", fresh_netns, "nft", "-f", "-"], input=RULES, text=True, check=True)
    stop, ready = threading.Event(), threading.Event()
    canary = _canary(fresh_netns, stop, ready)
    pairs = [("127.0.0.1", 7001, "TCP", True, True),  # the canary accepts
             ("127.0.0.1", 7002, "UDP", True, True),  # the canary echoes
             ("127.0.0.1", 7010, "TCP", None, False),  # nothing listens: a reset
             ("127.0.0.1", 7011, "TCP", False, False),  # dropped
             ("127.0.0.1", 7012, "UDP", False, False)]  # rejected: ICMP admin-prohibited
    kube = _audit()
    try:
        with netns.entered(fresh_netns):
            code = probing.run(kube, _env(pairs, 0), threading.Event())
    finally:
        stop.set()
        canary.join(5)
    assert code == 0
    report = kube.get_audit("a")["status"]["probes"]["web"]
    assert report["phase"] == "Done" and report["verdicts"] == "oorsp"


def test_a_pair_that_disagrees_is_probed_again_until_the_enforcer_converges(fresh_netns: str) -> None:
    subprocess.run(["ip", "netns", "exec", fresh_netns, "nft", "-f", "-"], input=LATE, text=True, check=True)
    stop, ready = threading.Event(), threading.Event()
    canary = _canary(fresh_netns, stop, ready)
    lifted = threading.Timer(1.5, lambda: subprocess.run(
        ["ip", "netns", "exec", fresh_netns, "nft", "delete", "table", "inet", "late"], check=True))
    lifted.start()
    try:
        with netns.entered(fresh_netns):
            chars, rounds = probing.converge(_env([("127.0.0.1", 7001, "TCP", True, True)], 20), probing.scanning.run,
                                             threading.Event())
    finally:
        lifted.cancel()
        stop.set()
        canary.join(5)
    assert chars == ["o"] and rounds >= 2  # silent at first, then connected once the enforcer caught up


def test_a_pair_that_never_agrees_is_reported_as_seen_once_the_convergence_time_is_spent(fresh_netns: str) -> None:
    with netns.entered(fresh_netns):
        chars, rounds = probing.converge(_env([("127.0.0.1", 7020, "TCP", False, False)], 2), probing.scanning.run,
                                         threading.Event())
    assert chars == ["r"] and rounds >= 2
