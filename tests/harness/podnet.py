"""The test bed's pod network: a namespace and an address per pod, routes between nodes, masquerade.

Layout, per node namespace (the node's ``eth0`` is on the agent's bridge, 198.18.64.0/24):

* the node's ``spec.podCIDR`` (a /24 of :data:`harness.clusters.CLUSTER_CIDR`, allocated by
  the controller-manager) gives its pods addresses ``.2``-``.254``; ``.1`` is the gateway;
* each pod gets its own namespace, joined to the node by a routed veth (no bridge): the pod
  side is ``eth0`` with ``podIP/32`` and a default route via the gateway, the node side is
  ``pv<third>-<fourth>`` (named after the pod's address) holding the gateway address and a
  ``podIP/32`` route.  Every packet to or from a pod is therefore *forwarded* by its node
  namespace, where nftables sees it (kube-proxy's Service translation, then the NetworkPolicy
  enforcer of :mod:`harness.netpolicing`);
* routes to the other nodes' pod CIDRs go through their addresses on the bridge, and the
  Service CIDR is on-link (no node has a default route);
* traffic from pods to addresses outside the cluster CIDR is masqueraded to the node's address.

Limits: IPv4 only; no DNS; traffic from a node to its own pods is never filtered (as on a real
cluster, where a pod cannot block its node).
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading

from harness import netns

MASQUERADE_TABLE = "portolan-podnet"


def veth_name(address: str) -> str:
    """The node-side interface of the pod with this address (unique across the cluster)."""
    octets = address.split(".")
    return f"pv{octets[2]}-{octets[3]}"


def setup_node(node_ns: str, cluster_cidr: str, service_cidr: str) -> None:
    """Forwarding on, a route for Service addresses, pods' traffic leaving the cluster CIDR masqueraded."""
    netns.run(node_ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    # A node has no default route here; locally sent packets need some route to a ClusterIP
    # before kube-proxy's output DNAT rewrites them (on a real node the default route serves).
    netns.run(node_ns, ["ip", "route", "replace", service_cidr, "dev", "eth0"])
    rules = (f"table ip {MASQUERADE_TABLE} {{\n"
             f" chain postrouting {{\n  type nat hook postrouting priority srcnat + 10;\n"
             f"  ip saddr {cluster_cidr} ip daddr != {cluster_cidr} oifname \"eth0\" masquerade\n }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", node_ns, "nft", "-f", "-"], input=rules, text=True,
                   check=True, capture_output=True)


def route_to(node_ns: str, pod_cidr: str, via: str) -> None:
    """Reach another node's pods through that node's address on the bridge."""
    netns.run(node_ns, ["ip", "route", "replace", pod_cidr, "via", via, "dev", "eth0"])


class Addresses:
    """Pod addresses of one node's pod CIDR: .1 is the gateway, the rest are handed out and returned."""

    def __init__(self, pod_cidr: str) -> None:
        network = ipaddress.ip_network(pod_cidr)
        hosts = [str(a) for a in network.hosts()]
        self.cidr = pod_cidr
        self.gateway = hosts[0]
        self.free = hosts[1:]
        self.lock = threading.Lock()

    def take(self) -> str:
        with self.lock:
            if not self.free:
                raise RuntimeError(f"pod CIDR {self.cidr} is exhausted")
            return self.free.pop(0)

    def give_back(self, address: str) -> None:
        with self.lock:
            if address not in self.free:
                self.free.append(address)


def add_pod(node_ns: str, pod_ns: str, address: str, gateway: str) -> None:
    """Create the pod's namespace and its routed veth to the node namespace."""
    netns.add(pod_ns)
    outer = veth_name(address)
    netns.ip("link", "add", outer, "netns", node_ns, "type", "veth", "peer", "name", "eth0", "netns", pod_ns)
    netns.ip("-n", node_ns, "-batch", "-", input=(
        f"addr add {gateway}/32 dev {outer}\nlink set {outer} up\nroute add {address}/32 dev {outer} src {gateway}\n"))
    netns.ip("-n", pod_ns, "-batch", "-", input=(
        f"addr add {address}/32 dev eth0\nlink set eth0 up\nroute add {gateway}/32 dev eth0\n"
        f"route add default via {gateway} dev eth0 src {address}\n"))


def remove_pod(pod_ns: str) -> None:
    """Delete the pod's namespace; its veth (and the node side) goes with it."""
    netns.delete(pod_ns)
