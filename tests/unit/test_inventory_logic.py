"""The pure parts of the inventory: cgroup paths to containers and pods, /proc/net lines, exposure rules."""

from __future__ import annotations

import pytest

from portolan.inventory import exposure, listening
from portolan.models import results

POD = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CID = "3f" * 32


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("0::/\n", listening.Containment()),
        ("0::/user.slice/user-1000.slice/session-2.scope\n", listening.Containment()),
        # kubelet with the systemd driver, containerd, cgroup v2
        (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice/"
         f"cri-containerd-{CID}.scope\n", listening.Containment("containerd", CID, POD)),
        # kubelet with the cgroupfs driver, cgroup v1 (several hierarchies)
        (f"12:pids:/kubepods/besteffort/pod{POD}/{CID}\n4:memory:/kubepods/besteffort/pod{POD}/{CID}\n",
         listening.Containment(None, CID, POD)),
        # CRI-O under systemd
        (f"0::/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{CID}.scope\n",
         listening.Containment("cri-o", CID, POD)),
        # plain Docker, both drivers
        (f"0::/system.slice/docker-{CID}.scope\n", listening.Containment("docker", CID, None)),
        (f"3:cpu:/docker/{CID}\n", listening.Containment("docker", CID, None)),
        # a pod's cgroup without a container (the pod-level sandbox)
        (f"0::/kubepods/burstable/pod{POD}\n", listening.Containment(None, None, POD)),
    ],
)
def test_a_cgroup_path_names_the_container_and_pod_it_belongs_to(cgroup: str, expected: listening.Containment) -> None:
    assert listening.containment(cgroup) == expected


def test_proc_net_lines_give_listening_tcp_and_unconnected_udp_sockets_only() -> None:
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1\n"
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 2222 1\n"
    )
    udp6 = (
        "  sl  local_address                         remote_address                        st tx_queue rx_queue tr "
        "tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
        "  0: 00000000000000000000000001000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 "
        "00:00000000 00000000   101        0 3333 2 0 0\n"
        "  1: 00000000000000000000000000000000:0000 00000000000000000000000000000000:0000 07 00000000:00000000 "
        "00:00000000 00000000   101        0 4444 2 0 0\n"
    )
    assert listening.parse_proc_table("tcp", tcp) == [listening.Socket("tcp", "127.0.0.1", 8080, 1111, 0)]
    assert listening.parse_proc_table("udp", udp6) == [listening.Socket("udp", "::1", 5353, 3333, 101)]


def _listener(address: str, port: int, protocol: str = "tcp") -> listening.Listener:
    return listening.Listener(protocol, address, port, 1, "root")


def _verdict(host: str, port: int, state: results.PortState, reason: results.Reason,
             protocol: str = "tcp") -> results.PortResult:
    return results.PortResult(host=host, port=port, protocol=results.Protocol(protocol), state=state, reason=reason)


def test_a_wildcard_listener_is_exposed_when_any_scanned_address_reached_it() -> None:
    verdicts = {
        ("198.18.0.1", 80, "tcp"): _verdict("198.18.0.1", 80, results.PortState.FILTERED, results.Reason.NO_RESPONSE),
        ("198.18.0.2", 80, "tcp"): _verdict("198.18.0.2", 80, results.PortState.OPEN, results.Reason.SYN_ACK),
    }
    [v4, v6, specific] = exposure.classify(
        [_listener("0.0.0.0", 80), _listener("::", 80), _listener("198.18.0.1", 80)], verdicts)
    assert (v4.exposure, v4.reached_on) == ("exposed", ("198.18.0.2",))
    assert (v6.exposure, v6.reached_on) == ("exposed", ("198.18.0.2",))  # dual-stack :: covers IPv4
    assert (specific.exposure, specific.seen) == ("shielded", ("198.18.0.1: filtered (no-response)",))


def test_loopback_udp_silence_and_unscanned_ports_get_their_own_verdicts() -> None:
    verdicts = {("198.18.0.1", 53, "udp"): _verdict("198.18.0.1", 53, results.PortState.OPEN_FILTERED,
                                                    results.Reason.NO_RESPONSE, "udp")}
    judged = exposure.classify([_listener("127.0.0.1", 80), _listener("::1", 81), _listener("0.0.0.0", 53, "udp"),
                                _listener("0.0.0.0", 54, "udp")], verdicts)
    assert [item.exposure for item in judged] == ["local-only", "local-only", "unknown", "not-scanned"]
