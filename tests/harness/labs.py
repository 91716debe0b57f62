"""The engine's test lab: hosts in network namespaces with real servers and nftables.

Topology (all in 198.18.0.0/24, nothing routed from the root namespace)::

    scanner 198.18.0.1 ──┐
    services 198.18.0.10 ├── bridge (in its own "switch" namespace)
    filtered 198.18.0.20 │
    rejecting 198.18.0.30│
    limited 198.18.0.40  │
    firewalled 198.18.0.50
    quiet 198.18.0.60   ─┘

:data:`CONSTRUCTION` is the one table the lab is built from — servers, nftables
rules — and from which :attr:`Lab.expected` (the state and reason every probe
must get, in nmap's vocabulary) is derived.  The host ``limited`` keeps
Linux's default ICMP rate limit, so closed UDP ports beyond the first burst are
answered only once per second, as on a real Linux host; the others have it
off, so their verdicts do not depend on which test ran before.

Two hosts make a *mixed network* with ``services`` (group ``"mixed"``; the
engine's per-port tests scan the ``"core"`` group only): ``firewalled`` keeps
Linux's default ICMP rate limit and an nftables policy like an ordinary edge
firewall (443 accepted, 25 reset, 8443 rejected with ICMP admin-prohibited,
everything else dropped); ``quiet`` serves :data:`QUIET_PORTS`, 200 TCP ports
that accept and then say nothing, and refuses the rest.

The session fixture ``lab`` skips when not root or without ``ip netns``; with
``CI=true`` it fails instead, so CI never passes by skipping.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from harness import netns

PREFIX = "plab"
SUBNET = "198.18.0.0/24"


@dataclasses.dataclass(frozen=True)
class Port:
    """One port of a host: how it is built and what a scanner must see."""

    proto: str
    port: int
    state: str
    reason: str
    server: str | None = None  # a harness.servers kind
    rule: str | None = None  # an nftables verdict for this port
    service: str | None = None  # the service name identification must find


@dataclasses.dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    ports: tuple[Port, ...]
    default_rule: str | None = None  # an nftables rule for everything else
    icmp_ratelimit_ms: int | None = 0  # net.ipv4.icmp_ratelimit; None keeps Linux's default
    group: str = "core"  # "core": the per-port lab; "mixed": the mixed-network hosts


QUIET_PORTS = range(1001, 1201)  # the quiet host's 200 silent open ports


CONSTRUCTION: tuple[HostSpec, ...] = (
    HostSpec(
        "services",
        "198.18.0.10",
        (
            Port("tcp", 21, "open", "syn-ack", server="ftp", service="ftp"),
            Port("tcp", 22, "open", "syn-ack", server="ssh", service="ssh"),
            Port("tcp", 25, "open", "syn-ack", server="smtp", service="smtp"),
            Port("tcp", 80, "open", "syn-ack", server="http", service="http"),
            Port("tcp", 443, "open", "syn-ack", server="https", service="https"),
            Port("tcp", 3306, "open", "syn-ack", server="mysql", service="mysql"),
            Port("tcp", 5432, "open", "syn-ack", server="postgresql", service="postgresql"),
            Port("tcp", 6379, "open", "syn-ack", server="redis", service="redis"),
            Port("tcp", 9999, "open", "syn-ack", server="silent"),
            Port("tcp", 23, "closed", "conn-refused"),
            Port("tcp", 8080, "closed", "conn-refused"),
            Port("udp", 53, "open", "udp-response", server="dns", service="dns"),
            Port("udp", 123, "open", "udp-response", server="ntp", service="ntp"),
            Port("udp", 161, "open", "udp-response", server="snmp", service="snmp"),
            Port("udp", 7777, "open", "udp-response", server="echo"),
            Port("udp", 9998, "open|filtered", "no-response", rule="drop"),
            Port("udp", 9996, "closed", "port-unreach"),
            Port("udp", 9997, "closed", "port-unreach"),
        ),
    ),
    HostSpec(
        "filtered",
        "198.18.0.20",
        (
            Port("tcp", 22, "filtered", "no-response"),
            Port("tcp", 80, "filtered", "no-response"),
            Port("tcp", 443, "filtered", "no-response"),
            Port("udp", 53, "open|filtered", "no-response"),
        ),
        default_rule="meta l4proto { tcp, udp } drop",
    ),
    HostSpec(
        "rejecting",
        "198.18.0.30",
        (
            Port("tcp", 80, "open", "syn-ack", server="http", service="http"),
            Port("tcp", 81, "closed", "conn-refused"),
            Port("tcp", 1001, "filtered", "admin-prohibited",
                 rule="reject with icmp type admin-prohibited"),
            Port("tcp", 1002, "filtered", "host-prohibited",
                 rule="reject with icmp type host-prohibited"),
            Port("tcp", 1003, "filtered", "net-prohibited",
                 rule="reject with icmp type net-prohibited"),
            Port("tcp", 1004, "filtered", "host-unreach",
                 rule="reject with icmp type host-unreachable"),
            Port("tcp", 1005, "closed", "conn-refused", rule="reject with tcp reset"),
            Port("udp", 161, "filtered", "admin-prohibited",
                 rule="reject with icmp type admin-prohibited"),
        ),
    ),
    # Every port closed, and Linux's default ICMP rate limit (a burst of ~6, then 1/s).
    HostSpec("limited", "198.18.0.40", (), icmp_ratelimit_ms=None),
    # An edge firewall: one service, one reset, one ICMP rejection, silence for the rest.
    HostSpec(
        "firewalled",
        "198.18.0.50",
        (
            Port("tcp", 443, "open", "syn-ack", server="https", rule="accept", service="https"),
            Port("tcp", 25, "closed", "conn-refused", rule="reject with tcp reset"),
            Port("tcp", 8443, "filtered", "admin-prohibited",
                 rule="reject with icmp type admin-prohibited"),
            Port("tcp", 22, "filtered", "no-response"),
            Port("tcp", 80, "filtered", "no-response"),
        ),
        default_rule="meta l4proto { tcp, udp } drop",
        icmp_ratelimit_ms=None,
        group="mixed",
    ),
    # Many open ports that accept and then say nothing (every other port refused).
    HostSpec(
        "quiet",
        "198.18.0.60",
        (
            *(Port("tcp", port, "open", "syn-ack", server="silent") for port in QUIET_PORTS),
            Port("tcp", 1000, "closed", "conn-refused"),
            Port("tcp", 1201, "closed", "conn-refused"),
        ),
        group="mixed",
    ),
)


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    ns: str
    address: str
    spec: HostSpec

    def ports(self, proto: str) -> list[int]:
        return [p.port for p in self.spec.ports if p.proto == proto]


class Lab:
    """A built lab: namespaces, hosts, and what every probe must find."""

    def __init__(self, prefix: str, specs: tuple[HostSpec, ...] = CONSTRUCTION) -> None:
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self.scanner_ns = f"{prefix}-scan"
        self.scanner_address = "198.18.0.1"
        self.hosts: dict[str, Host] = {
            spec.name: Host(spec.name, f"{prefix}-{spec.name}", spec.address, spec)
            for spec in specs
        }
        self.servers: list[subprocess.Popen[bytes]] = []

    def group(self, name: str) -> list[Host]:
        """The hosts of one group ("core" or "mixed")."""
        return [host for host in self.hosts.values() if host.spec.group == name]

    @property
    def expected(self) -> dict[tuple[str, int, str], tuple[str, str]]:
        return {
            (host.address, port.port, port.proto): (port.state, port.reason)
            for host in self.hosts.values()
            for port in host.spec.ports
        }

    @property
    def expected_services(self) -> dict[tuple[str, int, str], str]:
        return {
            (host.address, port.port, port.proto): port.service
            for host in self.hosts.values()
            for port in host.spec.ports
            if port.service
        }

    def inside(self, ns: str | None = None) -> netns.contextlib.AbstractContextManager[None]:
        return netns.entered(ns or self.scanner_ns)

    def run(self, argv: list[str], ns: str | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return netns.run(ns or self.scanner_ns, argv, **kwargs)

    def popen(self, argv: list[str], ns: str | None = None, **kwargs: object) -> subprocess.Popen[bytes]:
        return netns.popen(ns or self.scanner_ns, argv, **kwargs)

    # -- building -------------------------------------------------------------------------

    def build(self) -> None:
        netns.add(self.switch)
        netns.run(self.switch, ["ip", "link", "add", "br0", "type", "bridge"])
        netns.run(self.switch, ["ip", "link", "set", "br0", "up"])
        netns.add(self.scanner_ns)
        tag = self.prefix[-6:]
        netns.veth_to_bridge(self.switch, "br0", self.scanner_ns, f"{tag}s", f"{self.scanner_address}/24")
        for index, host in enumerate(self.hosts.values()):
            netns.add(host.ns)
            netns.veth_to_bridge(self.switch, "br0", host.ns, f"{tag}h{index}", f"{host.address}/24")
            if host.spec.icmp_ratelimit_ms is not None:
                netns.run(host.ns, ["sysctl", "-q", "-w",
                                    f"net.ipv4.icmp_ratelimit={host.spec.icmp_ratelimit_ms}"])
            self._firewall(host)
            self._serve(host)

    def _firewall(self, host: Host) -> None:
        rules = [
            f"{port.proto} dport {port.port} {port.rule}"
            for port in host.spec.ports
            if port.rule is not None
        ]
        if host.spec.default_rule:
            rules.append(host.spec.default_rule)
        if not rules:
            return
        body = "\n".join(f"    {rule}" for rule in rules)
        script = (
            "table ip lab {\n  chain input {\n    type filter hook input priority 0; policy accept;\n"
            f"{body}\n  }}\n}}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", host.ns, "nft", "-f", "-"], input=script, text=True,
            check=True, capture_output=True,
        )

    def _serve(self, host: Host) -> None:
        spec = [
            {"proto": port.proto, "port": port.port, "kind": port.server}
            for port in host.spec.ports
            if port.server is not None
        ]
        if not spec:
            return
        env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parent.parent))
        process = netns.popen(
            host.ns, [sys.executable, "-m", "harness.servers", json.dumps(spec)],
            stdout=subprocess.PIPE, env=env,
        )
        self.servers.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"lab servers on {host.name} did not start")

    def teardown(self) -> None:
        for process in self.servers:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        for name in [self.scanner_ns, self.switch, *(h.ns for h in self.hosts.values())]:
            netns.delete(name)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"the lab needs {tool!r} (iproute2, nftables)"
    return None


def require_lab() -> None:
    """Skip (or, in CI, fail) when the lab cannot be built here."""
    why = _unavailable()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}, and CI must not skip it")
    pytest.skip(why)


def _alive(name: str) -> bool:
    """Whether the test session that made this namespace (its PID follows the prefix) still runs."""
    digits = name[len(PREFIX):].split("-", 1)[0]
    if not digits.isdigit():
        return False
    try:
        os.kill(int(digits), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    require_lab()
    for stale in netns.existing():
        if stale.startswith(PREFIX) and not _alive(stale):
            netns.delete(stale)
    built = Lab(f"{PREFIX}{os.getpid() % 100000}")
    try:
        built.build()
        yield built
    finally:
        built.teardown()


@pytest.fixture
def fresh_netns() -> Iterator[str]:
    """A brand-new namespace with only loopback up, deleted afterwards."""
    require_lab()
    name = f"{PREFIX}{os.getpid() % 100000}-lo{os.urandom(2).hex()}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)
