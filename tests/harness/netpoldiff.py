"""The differential NetworkPolicy test: real connections on the test bed against cyclonus's matrix.

A scenario is a folder ``tests/netpol/testbed/<name>/`` with ``model.json`` (a cyclonus probe
model: namespaces with labels, pods with labels and container ports, the probes as protocol and
port) and ``policies/*.yaml``.  Policies may say ``${podCIDR:<node>}`` for a node's pod CIDR,
filled in from the running cluster (pod addresses are not known in advance).

:class:`World` runs the model's namespaces and pods on the bed, spread over three nodes so that
pairs cross nodes and share them; each pod serves every port of its containers.
:func:`compare` applies a scenario's policies to the real control plane, waits for the enforcer,
asks cyclonus for the expected matrix (with the policies as the API server stored them and the
pods' real addresses), probes every (source pod, destination pod, probe) with a real connection
from the source pod, and returns the disagreeing triples.  A connection counts as allowed when
it is answered.  A pod's traffic to itself never leaves its namespace on the bed (nor through a
real CNI's veth), so self pairs are left out.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import pathlib
import re
import tempfile
from typing import Any

import kubernetes
import yaml

from harness import clusters, cyclonusprobe, podworld

SCENARIOS = pathlib.Path(__file__).resolve().parents[1] / "netpol" / "testbed"
PLACEMENT = ("cloud-1", "cloud-2", "edge-1")


@dataclasses.dataclass(frozen=True)
class Disagreement:
    source: str
    destination: str
    probe: str
    expected: bool  # cyclonus: allowed?
    observed: bool  # the bed: answered?

    def __str__(self) -> str:
        def word(allowed: bool) -> str:
            return "allowed" if allowed else "blocked"
        return f"{self.source} -> {self.destination} {self.probe}: cyclonus {word(self.expected)}, bed {word(self.observed)}"


def scenario_names() -> list[str]:
    return sorted(p.name for p in SCENARIOS.iterdir() if (p / "model.json").exists())


def load_model(name: str) -> dict[str, Any]:
    return json.loads((SCENARIOS / name / "model.json").read_text())  # type: ignore[no-any-return]


class World:
    """The model's namespaces and pods, running; addresses by "ns/pod"."""

    def __init__(self, cluster: clusters.Cluster, model: dict[str, Any]) -> None:
        self.cluster = cluster
        self.resources = model["Resources"]
        self.addresses: dict[str, str] = {}
        self.ports: dict[str, dict[str, tuple[str, int]]] = {}  # "ns/pod" -> port name -> (proto, number)

    def start(self) -> None:
        for namespace, labels in self.resources["Namespaces"].items():
            podworld.ensure_namespace(self.cluster, namespace, labels)
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for index, pod in enumerate(self.resources["Pods"]):
            serve = [(c["Protocol"].lower(), int(c["Port"])) for c in pod["Containers"]]
            named = {c["PortName"]: (c["Protocol"].lower(), int(c["Port"])) for c in pod["Containers"] if c.get("PortName")}
            self.ports[f"{pod['Namespace']}/{pod['Name']}"] = named
            by_namespace.setdefault(pod["Namespace"], []).append(podworld.server_pod(
                pod["Name"], pod["Labels"], PLACEMENT[index % len(PLACEMENT)], serve, named=named))
        for namespace, pods in by_namespace.items():
            for name, address in podworld.create(self.cluster, namespace, pods).items():
                self.addresses[f"{namespace}/{name}"] = address

    def stop(self) -> None:
        for namespace in self.resources["Namespaces"]:
            podworld.delete_namespace(self.cluster, namespace)

    def model_with_addresses(self, model: dict[str, Any]) -> dict[str, Any]:
        filled: dict[str, Any] = json.loads(json.dumps(model))
        for pod in filled["Resources"]["Pods"]:
            pod["IP"] = self.addresses[f"{pod['Namespace']}/{pod['Name']}"]
        return filled


def _policies(cluster: clusters.Cluster, name: str) -> list[dict[str, Any]]:
    cidrs = {n.metadata.name: n.spec.pod_cidr for n in cluster.core().list_node().items}
    found: list[dict[str, Any]] = []
    for path in sorted((SCENARIOS / name / "policies").glob("*.yaml")):
        text = re.sub(r"\$\{podCIDR:([\w-]+)\}", lambda m: cidrs[m.group(1)], path.read_text())
        found.extend(d for d in yaml.safe_load_all(text) if d)
    return found


def apply(cluster: clusters.Cluster, name: str) -> list[dict[str, Any]]:
    """Create the scenario's policies; returns them as the API server stored them (policyTypes filled in)."""
    networking = kubernetes.client.NetworkingV1Api(cluster.api)
    stored = []
    for policy in _policies(cluster, name):
        # Read back as raw JSON: the client's own serializer drops a rule's "from" (kubernetes 37.0.2).
        reply = networking.create_namespaced_network_policy(policy["metadata"]["namespace"], policy,
                                                            _preload_content=False)
        body = json.loads(reply.data)
        stored.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"name": body["metadata"]["name"], "namespace": body["metadata"]["namespace"]},
                       "spec": body["spec"]})
    return stored


def remove_policies(cluster: clusters.Cluster, namespaces: list[str]) -> None:
    networking = kubernetes.client.NetworkingV1Api(cluster.api)
    for namespace in namespaces:
        networking.delete_collection_namespaced_network_policy(namespace)


def observe(world: World, model: dict[str, Any], timeout: float = 1.0) -> cyclonusprobe.Matrix:
    """Every (source, destination, probe) tried with a real connection from the source pod."""
    pods = list(world.addresses)

    def from_source(source: str) -> cyclonusprobe.Matrix:
        keys: list[tuple[str, str, str]] = []
        targets: list[tuple[str, str, int]] = []
        for destination in pods:
            if destination == source:
                continue
            for probe in model["Probes"]:
                protocol, port = probe["Protocol"].lower(), probe["Port"]
                if isinstance(port, str):  # a named port: the destination's number for it, if any
                    named = world.ports[destination].get(port)
                    if named is None or named[0] != protocol:
                        continue
                    number = named[1]
                else:
                    number = int(port)
                keys.append((source, destination, f"{protocol}/{port}"))
                targets.append((world.addresses[destination], protocol, number))
        namespace, name = source.split("/")
        outcomes = podworld.probe_from(world.cluster, namespace, name, targets, timeout=timeout)
        return {key: outcome.startswith("ok") for key, outcome in zip(keys, outcomes, strict=True)}

    observed: cyclonusprobe.Matrix = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(pods)) as pool:
        for part in pool.map(from_source, pods):
            observed |= part
    return observed


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One scenario on the bed: cyclonus's matrix, what disagreed, and what cyclonus was given."""

    expected: cyclonusprobe.Matrix
    disagreements: list[Disagreement]
    policies: list[dict[str, Any]]  # as the API server stored them
    model: dict[str, Any]  # with the pods' real addresses


def compare(world: World, name: str) -> Comparison:
    """Apply scenario ``name``, compare the bed with cyclonus, remove the policies."""
    cluster = world.cluster
    model = load_model(name)
    try:
        stored = apply(cluster, name)
        assert cluster.agent.enforcer is not None
        cluster.agent.enforcer.sync()
        with tempfile.TemporaryDirectory(prefix="cyclonus-") as folder:
            policy_dir = pathlib.Path(folder) / "policies"
            policy_dir.mkdir()
            for index, policy in enumerate(stored):
                # JSON, which is YAML too: cyclonus's YAML 1.1 reader takes a bare `y` (a namespace here) for true
                (policy_dir / f"{index:02d}.yaml").write_text(json.dumps(policy))
            model_path = pathlib.Path(folder) / "model.json"
            filled = world.model_with_addresses(model)
            model_path.write_text(json.dumps(filled))
            expected = cyclonusprobe.expected(policy_dir, model_path)
        observed = observe(world, model)
    finally:
        remove_policies(cluster, list(model["Resources"]["Namespaces"]))
        if cluster.agent.enforcer is not None:
            cluster.agent.enforcer.sync()
    disagreements = [Disagreement(*key, expected[key], observed[key])
                     for key in sorted(observed) if key in expected and expected[key] != observed[key]]
    missing = sorted(set(observed) - set(expected))
    if missing:
        raise AssertionError(f"cyclonus has no verdict for {len(missing)} probed triples, e.g. {missing[:3]}")
    return Comparison(expected, disagreements, stored, filled)
