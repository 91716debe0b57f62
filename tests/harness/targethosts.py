"""Target hosts for the cluster tests: servers in namespaces on the node agent's bridge (198.18.64.0/24)."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from harness import clusters, netns

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOSTS = {  # address -> (open TCP ports served, nftables rule or None)
    "198.18.64.101": ((22, 80), None),
    "198.18.64.102": ((80,), None),
    "198.18.64.103": ((), "meta l4proto tcp drop"),  # silent: makes shards slow enough to kill
}
KINDS = {22: "ssh", 80: "http"}


@pytest.fixture(scope="session")
def targets(cluster: clusters.Cluster) -> Iterator[dict[str, Any]]:
    agent = cluster.agent
    made: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    try:
        for index, (address, (ports, rule)) in enumerate(HOSTS.items()):
            ns = f"{agent.prefix}-t{index}"
            netns.add(ns)
            made.append(ns)
            netns.veth_to_bridge(agent.switch, "br0", ns, f"{agent.prefix[-5:]}t{index}", f"{address}/24")
            if rule:
                subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, text=True,
                               input=f"table ip t {{\n chain input {{\n  type filter hook input priority 0;\n  {rule}\n }}\n}}\n")
            if ports:
                spec = json.dumps([{"proto": "tcp", "port": p, "kind": KINDS[p]} for p in ports])
                server = netns.popen(ns, [sys.executable, "-m", "harness.servers", spec], stdout=subprocess.PIPE, env=env)
                assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
                servers.append(server)
        yield {"hosts": HOSTS}
    finally:
        for server in servers:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        for ns in made:
            netns.delete(ns)




@contextlib.contextmanager
def udp_host(agent: Any, address: str, services: Mapping[int, str], tag: str = "u") -> Iterator[str]:
    """A Linux host on the agent's bridge at ``address`` serving UDP ``services`` (port -> echo or dns).

    Every other UDP port is closed: the host's kernel answers ICMP port unreachable under its
    default rate limit (``net.ipv4.icmp_ratelimit``, per source address). Yields its namespace.
    """
    ns = f"{agent.prefix}-{tag}"
    netns.add(ns)
    server: subprocess.Popen[bytes] | None = None
    try:
        netns.veth_to_bridge(agent.switch, "br0", ns, f"{agent.prefix[-5:]}{tag}", f"{address}/24")
        spec = json.dumps([{"proto": "udp", "port": p, "kind": kind} for p, kind in services.items()])
        env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
        server = netns.popen(ns, [sys.executable, "-m", "harness.servers", spec], stdout=subprocess.PIPE, env=env)
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        yield ns
    finally:
        if server is not None:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        netns.delete(ns)
