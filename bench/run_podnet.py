"""Pod start-up on the test bed: a pod with its own network namespace against a hostNetwork pod.

    sudo .venv/bin/python bench/run_podnet.py [--pods 30] [--write bench/OPERATOR.md]

On the real control plane with the node agent (pod network and kube-proxy on), it creates a
burst of ``--pods`` pods (``sleep``) spread over the two cloud nodes, first with
``hostNetwork: true`` and then without, and times ``create`` → every pod ``Running`` with its
address reported; then the node agent's own share, the namespace + veth + routes of one pod
(:func:`harness.podnet.add_pod`, then removal), timed alone.  Appends a section to the given
file.  Traffic: none (the pods only sleep).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import kubernetes  # noqa: E402

from harness import clusters, nodeagent, podnet  # noqa: E402


def burst(core: object, namespace: str, count: int, host_network: bool) -> float:
    api: kubernetes.client.CoreV1Api = core  # type: ignore[assignment]
    start = time.monotonic()
    for index in range(count):
        spec = {"restartPolicy": "Never", "nodeName": f"cloud-{index % 2 + 1}", "hostNetwork": host_network,
                "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": "portolan", "command": ["sleep", "300"]}]}
        api.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod",
                                              "metadata": {"name": f"p{index}"}, "spec": spec})
    while True:
        pods = api.list_namespaced_pod(namespace).items
        if sum(1 for p in pods if p.status.phase == "Running" and p.status.pod_ip) == count:
            return time.monotonic() - start
        if time.monotonic() - start > 300:
            raise TimeoutError("pods did not start")
        time.sleep(0.05)


def clear(api: kubernetes.client.CoreV1Api, namespace: str) -> None:
    api.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    while api.list_namespaced_pod(namespace).items:
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--write", type=pathlib.Path)
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-bench-"))
    plane = clusters.start(folder)
    agent = nodeagent.NodeAgent(plane.api_port, plane.pki.ca.cert, plane.admin_kubeconfig, folder,
                                cluster_cidr=clusters.CLUSTER_CIDR, service_cidr=clusters.SERVICE_CIDR,
                                kube_proxy=plane.pki.kube_proxy)
    agent.start()
    try:
        api = kubernetes.client.CoreV1Api(agent.api)
        api.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        while True:  # the service account controller must have made "default" before pods are admitted
            try:
                api.read_namespaced_service_account("default", "bench")
                break
            except kubernetes.client.ApiException:
                time.sleep(0.2)
        seconds = {}
        for host_network in (True, False, True, False):  # twice each, interleaved; the second pair counts
            seconds[host_network] = burst(api, "bench", args.pods, host_network)
            clear(api, "bench")
        node = agent.ns("cloud-1")
        addresses = agent.addresses["cloud-1"]
        plumbing = []
        for index in range(20):
            address = addresses.take()
            start = time.monotonic()
            podnet.add_pod(node, f"{agent.prefix}-bench{index}", address, addresses.gateway)
            podnet.remove_pod(f"{agent.prefix}-bench{index}")
            plumbing.append(time.monotonic() - start)
            addresses.give_back(address)
    finally:
        agent.stop()
        plane.stop()
    own, host = seconds[False], seconds[True]
    lines = [
        "", "## Pod start-up: own network namespace vs hostNetwork", "",
        f"A burst of {args.pods} pods (`sleep`) over two nodes, `create` → all `Running` with `status.podIP`"
        " (bench/run_podnet.py, 2 cores):", "",
        "| pods | seconds | per pod |", "|---|---|---|",
        f"| hostNetwork | {host:.2f} | {1000 * host / args.pods:.0f} ms |",
        f"| own namespace, veth, address | {own:.2f} | {1000 * own / args.pods:.0f} ms |", "",
        f"The agent's plumbing alone (namespace, veth, addresses, routes; then removal): median "
        f"{1000 * statistics.median(plumbing):.0f} ms per pod over 20 (six `ip` processes). "
        f"An own namespace costs {1000 * (own - host) / args.pods:+.0f} ms per pod in the burst.", "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        with args.write.open("a") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
