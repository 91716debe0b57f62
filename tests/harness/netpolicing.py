"""The test bed's NetworkPolicy enforcer: policies become nftables rules on each node's pod veths.

Written for the tests from the Kubernetes NetworkPolicy semantics, sharing no code with the
product's own policy evaluation, so that one mistake cannot hide in both.  It works as
iptables/nftables-based enforcers do:

* one table ``inet portolan-netpol`` per node namespace, rebuilt atomically whenever the
  policies, pods or namespaces change (polled, about twice a second);
* a ``forward`` chain: replies and established or related traffic pass first; traffic *from*
  an isolated pod's veth (:func:`harness.podnet.veth_name`) jumps to its egress chain (checked
  at the source's node), traffic *to* an isolated pod's veth jumps to its ingress chain
  (checked at the destination's node); an allowed packet returns, anything else meets the
  node's verdict;
* the chain hooks after kube-proxy's DNAT, so Services are judged on pod IPs and target ports.

Semantics covered: ``policyTypes`` defaulting (Ingress always, Egress when egress rules exist),
empty and absent pod selectors and peer lists, ``namespaceSelector`` alone and with
``podSelector``, ``matchLabels``/``matchExpressions``, ``ipBlock`` with ``except`` (IPv4 and
IPv6), numbered and named ports (named ports resolve on the destination pod), ``endPort``,
TCP, UDP and SCTP, several policies on one pod (their allowances add up).

Modes per node, for fault tests: ``enforce`` (default: denied packets are dropped), ``ignore``
(no rules at all — a CNI without policy support), ``reject`` (denied TCP gets a reset, the
rest ICMP admin-prohibited).

Pods are judged from the moment they have an address (``Pending`` with a ``podIP``): the node
agent reports the address and waits for a pass before it starts the container, as CNIs with
policy support program a pod's rules before it runs.

Limits: a pod's own node always reaches it (its traffic is not forwarded); ``hostNetwork``
pods are neither isolated nor matched as peers; API traffic goes through a loopback relay
and is never filtered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import pathlib
import subprocess
import threading
from collections.abc import Iterable
from typing import Any

import kubernetes

from harness import podnet

TABLE = "portolan-netpol"
MODES = ("enforce", "ignore", "reject")


@dataclasses.dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node: str
    address: str
    labels: dict[str, str]
    ports: dict[str, tuple[str, int]]  # container port name -> (protocol, number)


def selects(selector: Any, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (None or empty: everything) matches these labels."""
    if selector is None:
        return True
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.match_expressions or []:
        present = expression.key in labels
        value = labels.get(expression.key)
        values = expression.values or []
        operator = expression.operator
        if operator == "In" and not (present and value in values):
            return False
        if operator == "NotIn" and present and value in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def policy_types(policy: Any) -> set[str]:
    """Declared policyTypes, or the default: Ingress, plus Egress when egress rules are given."""
    if policy.spec.policy_types:
        return set(policy.spec.policy_types)
    return {"Ingress", "Egress"} if policy.spec.egress else {"Ingress"}


class _Rules:
    """Builds one node's ruleset from the cluster's policies, pods and namespace labels."""

    def __init__(self, policies: list[Any], pods: list[Pod], namespaces: dict[str, dict[str, str]]) -> None:
        self.policies = policies
        self.pods = pods
        self.namespaces = namespaces

    def peer_pods(self, policy: Any, peer: Any) -> list[Pod]:
        if peer.namespace_selector is None:
            spaces = {policy.metadata.namespace}
        else:
            spaces = {name for name, labels in self.namespaces.items() if selects(peer.namespace_selector, labels)}
        return [p for p in self.pods if p.namespace in spaces and selects(peer.pod_selector, p.labels)]

    def peer_matches(self, policy: Any, peers: list[Any] | None, field: str) -> list[tuple[str, list[Pod] | None]]:
        """(nft address match, the pods it stands for or None for an ipBlock) per peer; [("", None)] for any."""
        if not peers:
            return [("", None)]
        found: list[tuple[str, list[Pod] | None]] = []
        for peer in peers:
            if peer.ip_block is not None:
                network = ipaddress.ip_network(peer.ip_block.cidr, strict=False)
                family = "ip" if network.version == 4 else "ip6"
                match = f"{family} {field} {network}"
                excepted = [str(ipaddress.ip_network(e, strict=False)) for e in peer.ip_block.var_except or []]
                if excepted:
                    match += f" {family} {field} != {{ {', '.join(excepted)} }}"
                found.append((match, None))
            else:
                pods = self.peer_pods(policy, peer)
                if pods:
                    found.append((f"ip {field} {{ {', '.join(p.address for p in pods)} }}", pods))
        return found

    def port_matches(self, ports: list[Any] | None, owners: Iterable[Pod] | None) -> list[tuple[str, str]]:
        """(address restriction, nft port match) pairs; named ports resolve on the destination pods."""
        if not ports:
            return [("", "")]
        found: list[tuple[str, str]] = []
        for port in ports:
            protocol = (port.protocol or "TCP").lower()
            if port.port is None:
                found.append(("", f"meta l4proto {protocol}"))
            elif isinstance(port.port, int) or str(port.port).isdigit():
                number = int(port.port)
                span = f"{number}-{port.end_port}" if port.end_port else str(number)
                found.append(("", f"meta l4proto {protocol} th dport {span}"))
            else:
                for pod in owners or ():
                    named = pod.ports.get(str(port.port))
                    if named is not None and named[0].lower() == protocol:
                        found.append((f"ip daddr {pod.address}", f"meta l4proto {protocol} th dport {named[1]}"))
        return found

    def chain(self, pod: Pod, direction: str, deny: list[str]) -> list[str] | None:
        """The rules of pod's ingress or egress chain, or None when no policy isolates it that way."""
        kind = "Ingress" if direction == "in" else "Egress"
        chosen = [p for p in self.policies if p.metadata.namespace == pod.namespace
                  and kind in policy_types(p) and selects(p.spec.pod_selector, pod.labels)]
        if not chosen:
            return None
        lines: list[str] = []
        for policy in chosen:
            for rule in (policy.spec.ingress if direction == "in" else policy.spec.egress) or []:
                if direction == "in":
                    peers = self.peer_matches(policy, rule.var_from, "saddr")
                    for peer, _ in peers:
                        for _, port in self.port_matches(rule.ports, [pod]):
                            lines.append(" ".join(x for x in (peer, port, "return") if x))
                    continue
                for peer, pods in self.peer_matches(policy, rule.to, "daddr"):
                    owners = pods if pods is not None else (self.pods if not rule.to else [])
                    for where, port in self.port_matches(rule.ports, owners):
                        lines.append(" ".join(x for x in (peer, where, port, "return") if x))
        return lines + deny


def ruleset(node: str, mode: str, policies: list[Any], pods: list[Pod],
            namespaces: dict[str, dict[str, str]]) -> str:
    """The nft script that replaces this node's policy table."""
    body: list[str] = []
    chains: list[str] = []
    if mode != "ignore":
        deny = ["drop"] if mode == "enforce" else ["meta l4proto tcp reject with tcp reset",
                                                   "reject with icmpx admin-prohibited"]
        rules = _Rules(policies, pods, namespaces)
        body.append("ct state established,related accept")
        for pod in sorted((p for p in pods if p.node == node), key=lambda p: p.address):
            veth = podnet.veth_name(pod.address)
            for direction, hook in (("out", "iifname"), ("in", "oifname")):
                lines = rules.chain(pod, direction, deny)
                if lines is None:
                    continue
                name = f"{direction}-{veth}"
                body.append(f'{hook} "{veth}" jump {name}')
                chains.append(f" chain {name} {{\n" + "".join(f"  {line}\n" for line in lines) + " }\n")
    forward = (" chain forward {\n  type filter hook forward priority filter + 10; policy accept;\n"
               + "".join(f"  {line}\n" for line in body) + " }\n")
    return (f"table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n{forward}{''.join(chains)}}}\n")


class Enforcer:
    """Keeps every node's policy table in step with the API (start/stop; mode per node; sync)."""

    def __init__(self, core: Any, nodes: dict[str, str], folder: pathlib.Path) -> None:
        self.core = core
        self.networking = kubernetes.client.NetworkingV1Api(core.api_client)
        self.nodes = nodes  # node name -> its network namespace
        self.folder = folder
        self.modes = dict.fromkeys(nodes, "enforce")
        self.applied: dict[str, str] = {}
        self.errors: list[str] = []
        self.passes = 0
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self.changed:
            self.changed.notify_all()
        self.thread.join(timeout=5)

    def set_mode(self, node: str, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.modes[node] = mode
        self.sync()

    def sync(self, timeout: float = 15.0) -> None:
        """Return once a whole pass that began after this call has been applied."""
        with self.changed:
            target = self.passes + 2
            self.changed.notify_all()
            if not self.changed.wait_for(lambda: self.passes >= target or self.stopping.is_set(), timeout):
                raise TimeoutError("the NetworkPolicy enforcer did not catch up")
        if self.errors:
            raise RuntimeError("enforcer errors: " + "; ".join(self.errors[-3:]))

    def _loop(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(kubernetes.client.ApiException, OSError, ValueError):
                self._pass()
            with self.changed:
                self.passes += 1
                self.changed.notify_all()
                self.changed.wait(0.5)

    def _pass(self) -> None:
        policies = self.networking.list_network_policy_for_all_namespaces().items
        namespaces = {n.metadata.name: dict(n.metadata.labels or {}) for n in self.core.list_namespace().items}
        pods = []
        for item in self.core.list_pod_for_all_namespaces().items:
            if item.spec.host_network or not item.status.pod_ip or item.spec.node_name not in self.nodes \
                    or item.status.phase not in ("Pending", "Running") or item.metadata.deletion_timestamp is not None:
                continue
            ports = {p.name: (p.protocol or "TCP", p.container_port)
                     for c in item.spec.containers for p in c.ports or [] if p.name}
            pods.append(Pod(item.metadata.namespace, item.metadata.name, item.spec.node_name,
                            item.status.pod_ip, dict(item.metadata.labels or {}), ports))
        for node, namespace in self.nodes.items():
            script = ruleset(node, self.modes[node], policies, pods, namespaces)
            if self.applied.get(node) == script:
                continue
            (self.folder / f"{node}.nft").write_text(script)
            done = subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=script,
                                  text=True, capture_output=True, check=False)
            if done.returncode != 0:
                self.errors.append(f"{node}: {done.stderr.strip()}")
                continue
            self.applied[node] = script
