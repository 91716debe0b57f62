"""``portolan listeners`` and ``scan --listeners`` on real sockets in namespaces the tests create.

Each test gets a namespace ``host`` with the address 198.18.16.1 on a veth
whose other end sits in a second, empty namespace (so the address is up and
routable only there).  Sockets are held by :mod:`harness.holding` processes,
which exit exactly when the test closes their stdin.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from harness import labs, netns
from portolan.inventory import listening

PORTOLAN = [sys.executable, "-m", "portolan"]
TESTS = str(pathlib.Path(__file__).resolve().parent.parent)
ADDRESS = "198.18.16.1"
COMMAND = pathlib.Path(sys.executable).name[:15]  # what the kernel calls the holders (comm)

pytestmark = pytest.mark.lab


@pytest.fixture
def host() -> Iterator[str]:
    labs.require_lab()
    tag = f"{os.getpid() % 100000}{os.urandom(2).hex()}"
    name, peer = f"pinv{tag}-h", f"pinv{tag}-p"
    netns.add(name)
    netns.add(peer)
    try:
        netns.ip("link", "add", f"vi{tag}", "netns", name, "type", "veth", "peer", "name", "eth0", "netns", peer)
        netns.run(name, ["ip", "addr", "add", f"{ADDRESS}/24", "dev", f"vi{tag}"])
        netns.run(name, ["ip", "link", "set", f"vi{tag}", "up"])
        netns.run(peer, ["ip", "link", "set", "eth0", "up"])
        yield name
    finally:
        netns.delete(name)
        netns.delete(peer)


@contextlib.contextmanager
def holding(ns: str, *specs: str, then_netns: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process in ``ns`` holding these sockets until the block ends."""
    extra = ["--then-netns", then_netns] if then_netns else []
    process = netns.popen(ns, [sys.executable, "-m", "harness.holding", *extra, *specs],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=TESTS))
    assert process.stdout is not None and process.stdin is not None
    try:
        assert process.stdout.readline().strip() == b"ready"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()


def listeners(ns: str, *options: str, user: str | None = None) -> dict[str, object]:
    prefix = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups"] if user else []
    done = netns.run(ns, [*prefix, *PORTOLAN, "listeners", "-o", "json", *options], timeout=60)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def by_port(document: dict[str, object]) -> dict[tuple[str, int], dict[str, object]]:
    return {(item["protocol"], item["port"]): item for item in document["listeners"]}  # type: ignore[attr-defined, index]


def test_every_listener_of_the_namespace_is_listed_with_its_owning_process(host: str) -> None:
    with holding(host, "tcp:127.0.0.1:8081", "tcp:0.0.0.0:8080", "udp:0.0.0.0:5353", "tcp:[::]:8443") as holder:
        for method in listening.METHODS:
            found = by_port(listeners(host, "--method", method))
            assert set(found) == {("tcp", 8081), ("tcp", 8080), ("udp", 5353), ("tcp", 8443)}
            assert {(item["address"]) for item in found.values()} == {"127.0.0.1", "0.0.0.0", "::"}
            for item in found.values():
                assert item["owners"] == [{"pid": holder.pid, "command": COMMAND, "user": "root"}]
                assert "note" not in item


def test_the_port_option_answers_who_occupies_one_port(host: str) -> None:
    with holding(host, "tcp:0.0.0.0:8080", "tcp:0.0.0.0:9090") as holder:
        found = listeners(host, "--port", "9090")
        assert [(item["port"], item["owners"][0]["pid"]) for item in found["listeners"]] == [(9090, holder.pid)]  # type: ignore[index, attr-defined]
        empty = netns.run(host, [*PORTOLAN, "listeners", "--port", "7070"])
        assert "nothing listens on port 7070" in empty.stdout


def test_a_listener_of_a_process_that_moved_to_another_namespace_is_found_and_flagged(host: str, fresh_netns: str) -> None:
    with holding(host, "tcp:0.0.0.0:8080", then_netns=fresh_netns) as holder:
        here = by_port(listeners(host))
        assert here[("tcp", 8080)]["owners"] == [{"pid": holder.pid, "command": COMMAND, "user": "root",
                                                  "other_netns": True}]
        assert ("tcp", 8080) not in by_port(listeners(fresh_netns))  # the socket stays where it was bound


def test_a_socket_whose_process_exits_during_the_listing_is_counted_not_listed(host: str) -> None:
    with holding(host, "tcp:0.0.0.0:8080") as stays, holding(host, "tcp:0.0.0.0:8090", "udp:0.0.0.0:5000") as leaves:
        with netns.entered(host):
            walked = listening.find_holders()  # take's order: the owners first, then the table
            table = listening.read_sockets()
            assert {(s.protocol, s.port) for s in table} == {("tcp", 8080), ("tcp", 8090), ("udp", 5000)}
            leaves.kill()
            leaves.wait()  # exits after both reads, before its owner record is read
            inventory = listening.assemble(table, walked, "netlink", listening.current_netns())
        assert [(item.port, [owner.pid for owner in item.owners]) for item in inventory.listeners] == [(8080, [stays.pid])]
        assert inventory.closed_during_listing == 2
        assert inventory.notes == ("2 sockets closed during the listing (their processes exited); not listed",)


def test_a_process_exiting_between_the_walk_and_the_table_leaves_no_trace(host: str) -> None:
    with holding(host, "tcp:0.0.0.0:8080") as stays, holding(host, "tcp:0.0.0.0:8090") as leaves, netns.entered(host):
        walked = listening.find_holders()
        assert leaves.pid in [pid for pids in walked.holders.values() for pid in pids]
        leaves.kill()
        leaves.wait()
        inventory = listening.assemble(listening.read_sockets(), walked, "proc", listening.current_netns())
    assert [(item.port, item.owners[0].pid) for item in inventory.listeners] == [(8080, stays.pid)]
    assert inventory.closed_during_listing == 0 and inventory.notes == ()


def test_a_socket_opened_during_the_listing_is_listed_with_a_note_saying_so(host: str) -> None:
    with netns.entered(host):
        walked = listening.find_holders()
    with holding(host, "udp:0.0.0.0:5000"), netns.entered(host):
        inventory = listening.assemble(listening.read_sockets(), walked, "netlink", listening.current_netns())
    [item] = inventory.listeners
    assert (item.protocol, item.port, item.owners) == ("udp", 5000, ())
    assert item.note is not None and "a socket opened during the listing" in item.note


def test_the_walk_shared_by_forked_walkers_finds_every_holder_a_single_walker_finds(host: str) -> None:
    with holding(host, "tcp:0.0.0.0:8080", "udp:0.0.0.0:5000") as first, holding(host, "tcp:0.0.0.0:8090") as second:
        with netns.entered(host):
            inodes = {s.inode for s in listening.read_sockets()}
            alone = listening.find_holders(walkers=1)
            shared = listening.find_holders(walkers=3)
        assert len(inodes) == 3
        for scan in (alone, shared):
            assert sorted(pid for inode in inodes for pid in scan.holders[inode]) == sorted([first.pid] * 2 + [second.pid])


def test_a_process_with_other_threads_walks_alone_and_still_finds_every_holder(host: str) -> None:
    import threading

    release = threading.Event()
    waiting = threading.Thread(target=release.wait)
    waiting.start()
    try:
        with holding(host, "tcp:0.0.0.0:8080") as holder, netns.entered(host):
            [inode] = [s.inode for s in listening.read_sockets()]
            assert listening.find_holders(walkers=2).holders[inode] == [holder.pid]
    finally:
        release.set()
        waiting.join()


def test_listing_while_processes_come_and_go_never_fails_and_always_finds_the_stable_owner(host: str) -> None:
    with holding(host, "tcp:0.0.0.0:8080") as stays:
        churn = [netns.popen(host, [sys.executable, "-c",
                                    "import socket,time\n"
                                    "for i in range(400):\n"
                                    "    s=socket.socket(); s.bind(('0.0.0.0',0)); s.listen(); time.sleep(0.002); s.close()"])
                 for _ in range(2)]
        try:
            rounds = 0
            deadline = time.monotonic() + 10
            with netns.entered(host):
                while rounds < 30 and time.monotonic() < deadline and any(p.poll() is None for p in churn):
                    inventory = listening.take()
                    stable = [item for item in inventory.listeners if item.port == 8080]
                    assert [owner.pid for owner in stable[0].owners] == [stays.pid]
                    assert all(item.owners or item.note for item in inventory.listeners)
                    rounds += 1
            assert rounds > 0
        finally:
            for process in churn:
                process.kill()
                process.wait()


def test_without_privileges_the_owner_is_unknown_and_the_listing_says_why(host: str) -> None:
    with holding(host, "tcp:0.0.0.0:8080"):
        found = listeners(host, user="65534")
    item = by_port(found)[("tcp", 8080)]
    assert item["owners"] == [] and item["user"] == "root"
    assert str(item["note"]).startswith("owner unknown:") and "unreadable without privileges" in str(item["note"])
    assert found["unreadable_processes"] > 0  # type: ignore[operator]


def test_a_process_in_a_kubernetes_pod_cgroup_is_reported_with_its_pod_and_container(host: str) -> None:
    root = pathlib.Path("/sys/fs/cgroup/pids")
    if not (root / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 pids hierarchy to place a process in")
    pod, container = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "ab" * 32
    leaf = root / f"kubepods-test{os.getpid()}" / "besteffort" / f"pod{pod}" / container
    leaf.mkdir(parents=True)
    try:
        with holding(host, "tcp:0.0.0.0:8080") as holder:
            (leaf / "cgroup.procs").write_text(str(holder.pid))
            owner = by_port(listeners(host))[("tcp", 8080)]["owners"][0]  # type: ignore[index]
            (root / "cgroup.procs").write_text(str(holder.pid))
        assert (owner["pod_uid"], owner["container"], owner["pid"]) == (pod, container, holder.pid)
    finally:
        for path in (leaf, leaf.parent, leaf.parent.parent, leaf.parent.parent.parent):
            with contextlib.suppress(OSError):
                path.rmdir()


def test_scan_with_listeners_marks_each_listener_exposed_shielded_or_local_only(host: str) -> None:
    rules = ("table ip inv {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
             "  tcp dport 8082 drop\n  tcp dport 8083 reject with tcp reset\n"
             "  udp dport 5354 reject with icmp type admin-prohibited\n }\n}\n")
    netns.run(host, ["nft", "-f", "-"], input=rules)
    with holding(host, "tcp:0.0.0.0:8080", "tcp:127.0.0.1:8081", "tcp:0.0.0.0:8082", f"tcp:{ADDRESS}:8083",
                 "tcp:0.0.0.0:9999", "udp:0.0.0.0:5353", "udp:0.0.0.0:5354") as holder:
        done = netns.run(host, [*PORTOLAN, "scan", ADDRESS, "-p", "8080-8083", "--udp-ports", "5353-5354", "-t", "-u",
                                "--listeners", "-o", "json", "-q", "--max-rtt-timeout", "300", "--retries", "0",
                                "--no-service"], timeout=120)
    report = json.loads(done.stdout)
    judged = {(item["protocol"], item["port"]): (item["exposure"], item.get("reached_on"), item["owners"][0]["pid"])
              for item in report["listeners"]}
    assert judged == {
        ("tcp", 8080): ("exposed", [ADDRESS], holder.pid),
        ("tcp", 8081): ("local-only", None, holder.pid),
        ("tcp", 8082): ("shielded", None, holder.pid),  # dropped
        ("tcp", 8083): ("shielded", None, holder.pid),  # refused by a reset rule although it listens
        ("tcp", 9999): ("not-scanned", None, holder.pid),
        ("udp", 5353): ("unknown", None, holder.pid),  # a silent UDP listener looks like a dropped port
        ("udp", 5354): ("shielded", None, holder.pid),  # admin-prohibited
    }
    assert {(port["protocol"], port["port"]): port["state"] for port in report["hosts"][0]["ports"]} == {
        ("tcp", 8080): "open", ("tcp", 8081): "closed", ("tcp", 8082): "filtered", ("tcp", 8083): "closed",
        ("udp", 5353): "open|filtered", ("udp", 5354): "filtered"}


def test_bad_listener_options_exit_2_with_one_line() -> None:
    done = subprocess.run([*PORTOLAN, "listeners", "--port", "70000"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == \
        "portolan listeners: error: port 70000 is out of range 1-65535"
    done = subprocess.run([*PORTOLAN, "scan", "127.0.0.1", "--listeners", "-o", "xml"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 2 and "--listeners works with table, json and jsonl" in done.stderr


class _Replay:
    """A channel that hands back recorded kernel replies, glued into one buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, size: int) -> bytes:
        data, self.data = self.data, b""
        return data


def test_a_dump_that_arrives_in_mixed_buffers_parses_like_the_uniform_one(host: str) -> None:
    import socket as socket_
    import struct

    with holding(host, "tcp:127.0.0.1:8081", "tcp:[::]:8443", "tcp:0.0.0.0:8080"), netns.entered(host):
        expected = sorted(s for s in listening.read_netlink(["tcp"]))
        recorded = b""
        for family in (socket_.AF_INET, socket_.AF_INET6):
            with socket_.socket(socket_.AF_NETLINK, socket_.SOCK_RAW, 4) as channel:
                body = struct.pack("=BBBxI48x", family, socket_.IPPROTO_TCP, 0, 1 << 10)
                channel.sendto(struct.pack("=IHHII", 16 + len(body), 20, 0x301, 1, 0) + body, (0, 0))
                while True:
                    data = channel.recv(1 << 20)
                    if struct.unpack_from("=IH", data)[1] == 3:  # NLMSG_DONE
                        break
                    recorded += data
    found: list[listening.Socket] = []
    done = struct.pack("=IHHIIi", 20, 3, 2, 1, 0, 0)
    listening._receive_dump(_Replay(recorded + done), "tcp", found)  # type: ignore[arg-type]  # messages and DONE in one buffer
    assert sorted(found) == expected and len(expected) == 3
