"""UDP past one source address (issue 13): one host's 200 UDP ports from 4 nodes vs nmap -sU from one.

    sudo .venv/bin/python bench/run_udp_spread.py [--write bench/RESULTS.md] [--no-single]

On the real test control plane with the node agent (pod network on: pod traffic to the test
hosts is masqueraded to the node's address), a Linux host in its own namespace on the nodes'
bridge (198.18.64.110, default ICMP rate limit) answers UDP on 53 (DNS) and 123 (echo); every
other port of 1-200 is closed. After an untimed warm-up job (one TCP port: the operator is
watching and a shard pod has run), timed, one run each, in this order with a pause between (the
host's ICMP token buckets refill):

1. a ScanJob for the 200 UDP ports on a pool of all four nodes, no shard count given: the
   planner spreads the ports over the nodes (4 shards, 50 ports each); ``kubectl apply`` →
   the job's Complete condition seen by polling (operator reconcile cadence 1 s, shard pod
   start-up and status writes included);
2. ``nmap -sU -Pn -n -p 1-200`` run in one node's namespace (one source address);
3. (unless ``--no-single``) the same ScanJob on a pool of one node with ``shards: 4``: one
   source address, so the planner keeps the host's UDP ports in one shard (four shards behind
   one address would share the host's ICMP budget and misread each other's answers).

Accuracy is the share of the 200 ports whose state matches the construction; for a ScanJob
it is read from the aggregated result (listed open ports, counted states).  Shard pods run
as host processes with ``PORTOLAN_TEST_PODS=host``, else in the image (harness/operators.py).
Traffic stays on 198.18.64.0/24 inside namespaces this script creates.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import kubernetes  # noqa: E402

from harness import clusters, nodeagent, operators, targethosts  # noqa: E402

NS = "bench-udp"
HOST = "198.18.64.110"
PORTS = list(range(1, 201))
SERVED = {53: "dns", 123: "echo"}
EXPECTED = {p: ("open" if p in SERVED else "closed") for p in PORTS}
EDGE = [{"key": "portolan.dev/edge", "operator": "Exists"}]


def job(name: str, pool: dict[str, Any], shards: int | None) -> str:
    spec: dict[str, Any] = {"targets": {"addresses": [HOST]}, "protocols": ["udp"], "udpPorts": "1-200",
                            "serviceDetection": False, "pools": [pool]}
    if shards is not None:
        spec["sharding"] = {"shards": shards}
    return yaml.safe_dump({"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
                           "metadata": {"name": name, "namespace": NS}, "spec": spec})


def run_job(cluster: clusters.Cluster, name: str, pool: dict[str, Any], shards: int | None) -> dict[str, Any]:
    start = time.monotonic()
    cluster.plane.kubectl("apply", "-f", "-", input=job(name, pool, shards))
    seen: dict[tuple[str, str], float] = {}  # (shard, phase) -> first seen, seconds after apply
    while True:
        status = cluster.plane.scanjob(NS, name).get("status") or {}  # with its ScanShards' plan and entries
        now = time.monotonic() - start
        for shard, entry in (status.get("shards") or {}).items():
            seen.setdefault((shard, entry.get("phase") or ""), now)
        if status.get("phase") in ("Complete", "Failed"):
            seconds = now
            break
        if now > 900:
            raise TimeoutError(f"{name} did not finish: {status.get('shards')}")
        time.sleep(0.25)
    ids = [s["id"] for s in status["plan"]]
    running = [seen.get((i, "Running"), seen.get((i, "Succeeded"), seconds)) for i in ids]
    done = [seen.get((i, "Succeeded"), seconds) for i in ids]
    timeline = (f"shards Running at {min(running):.1f}-{max(running):.1f} s, Succeeded at {min(done):.1f}-"
                f"{max(done):.1f} s (longest Running → Succeeded {max(d - r for r, d in zip(running, done, strict=True)):.1f} s), "
                f"Complete at {seconds:.1f} s")
    (result,) = status["results"]
    listed = {o["port"] for o in result.get("open", []) if o["host"] == HOST and o["protocol"] == "udp"}
    right = len(listed & {p for p, s in EXPECTED.items() if s == "open"}) + result["states"].get("closed", 0)
    spread = next((c for c in status["conditions"] if c["type"] == "UdpSpread"), {})
    return {"seconds": seconds, "timeline": timeline, "phase": status["phase"], "accuracy": right / len(PORTS), "states": result["states"],
            "layout": [(s["id"], s.get("node") or status["shards"][s["id"]].get("node"), s.get("udpPorts"))
                       for s in status["plan"]],
            "spread": f"{spread.get('status')} ({spread.get('reason')})"}


def run_nmap(ns: str) -> dict[str, Any]:
    from xml.etree import ElementTree

    start = time.monotonic()
    done = subprocess.run(["ip", "netns", "exec", ns, "nmap", "-sU", "-Pn", "-n", "-p", "1-200", "-oX", "-", HOST],
                          capture_output=True, text=True, check=True, timeout=1800)
    seconds = time.monotonic() - start
    root = ElementTree.fromstring(done.stdout)
    listed: dict[int, str] = {}
    default = "?"
    for node in root.iter("port"):
        state = node.find("state")
        listed[int(node.get("portid", "0"))] = state.get("state", "?") if state is not None else "?"
    for extra in root.iter("extraports"):
        default = extra.get("state", "?")
    found = {p: listed.get(p, default) for p in PORTS}
    right = sum(1 for p in PORTS if found[p] == EXPECTED[p])
    return {"seconds": seconds, "accuracy": right / len(PORTS)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", type=pathlib.Path)
    parser.add_argument("--no-single", action="store_true")
    parser.add_argument("--pause", type=float, default=15.0)
    parser.add_argument("--only-spread", action="store_true", help="a quick look: the spread job alone, no table")
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-bench-"))
    plane = clusters.start(folder)
    agent = nodeagent.NodeAgent(plane.api_port, plane.pki.ca.cert, plane.admin_kubeconfig, folder,
                                cluster_cidr=clusters.CLUSTER_CIDR, service_cidr=clusters.SERVICE_CIDR,
                                kube_proxy=plane.pki.kube_proxy)
    agent.start()
    api = kubernetes.config.new_client_from_config(config_file=str(plane.admin_kubeconfig))
    cluster = clusters.Cluster(plane, agent, api)
    core = cluster.core()
    cluster.wait("nodes to be Ready", lambda: sum(
        1 for n in core.list_node().items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])) == len(agent.nodes))
    image = operators.pod_image()
    operator = None
    rows: dict[str, dict[str, Any]] = {}
    try:
        operators.prepare(cluster, NS)
        operator = operators.Operator(cluster, folder, NS, image=image)
        operator.start()
        with targethosts.udp_host(agent, HOST, SERVED, tag="ub"):
            # Warm-up, untimed: the operator is watching and a shard pod has run (TCP: no ICMP spent).
            cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump({
                "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": "warm-up", "namespace": NS},
                "spec": {"targets": {"addresses": [HOST]}, "ports": "80", "serviceDetection": False}}))
            cluster.plane.kubectl("wait", "--for=condition=Complete", "scanjob/warm-up", "-n", NS, "--timeout=300s",
                                  timeout=330)
            rows["portolan, pool of 4 nodes (spread)"] = run_job(cluster, "spread", {"name": "all", "tolerations": EDGE}, None)
            if args.only_spread:
                print(rows)
                return
            time.sleep(args.pause)
            rows["nmap -sU (one address)"] = run_nmap(agent.ns("cloud-1"))
            if not args.no_single:
                time.sleep(args.pause)
                rows["portolan, pool of 1 node (shards: 4 asked)"] = run_job(
                    cluster, "single", {"name": "one", "nodeSelector": {"kubernetes.io/hostname": "cloud-1"}}, 4)
    finally:
        if operator is not None:
            operator.stop()
        agent.stop()
        api.close()
        plane.stop()
    nmap = rows["nmap -sU (one address)"]["seconds"]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    version = subprocess.run(["nmap", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    lines = [
        "", "## 7. UDP past one source address (issue 13): 200 UDP ports of one Linux host from 4 nodes", "",
        f"Measured {when} by `bench/run_udp_spread.py` on 2 cores, {version}; shard pods "
        f"{'in the image under runc' if image is not None else 'as host processes (PORTOLAN_TEST_PODS=host)'}; one run each. "
        f"Target {HOST} in its own namespace on the test bed's node bridge, default ICMP rate limit, UDP 53 (DNS) "
        "and 123 (echo) served, 1-200 otherwise closed. Portolan's time is `kubectl apply` → the job's phase "
        "Complete (polled every 0.25 s): planning, pod scheduling and start-up, scanning, status aggregation.", "",
        "| run | wall time (s) | ratio to nmap -sU | accuracy | shards (node: UDP ports) |", "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        layout = "; ".join(f"{node}: {ports}" for _, node, ports in row.get("layout", [])) or "-"
        lines.append(f"| {name} | {row['seconds']:.1f} | {row['seconds'] / nmap:.2f}x | {100 * row['accuracy']:.1f}% | {layout} |")
    lines += ["", "States found: " + "; ".join(f"{name}: {row['states']}" for name, row in rows.items() if "states" in row)
              + ". UdpSpread condition: " + "; ".join(f"{name}: {row['spread']}" for name, row in rows.items() if "spread" in row)
              + ".", "", "Timeline (polled every 0.25 s): " + "; ".join(
                  f"{name}: {row['timeline']}" for name, row in rows.items() if "timeline" in row) + ".",
              "", "Goal: the 4-node spread ≤ 0.25× nmap -sU's time at 100% accuracy.", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        with args.write.open("a") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
