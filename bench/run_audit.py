"""ReachabilityAudit benchmark on the test bed: 20 sources x 20 destinations x 5 ports (2,000 pairs).

    sudo .venv/bin/python bench/run_audit.py [--write bench/AUDIT.md]

Side by side in the same run, on the same pods and policies:

1. Portolan: ``kubectl apply`` of the audit -> ``Complete``, end to end (planning, probe pod start,
   probing with the engine, verdicts written, aggregated) — the probe pods carry the sources' labels.
2. The cyclonus way: one process exec per pair inside a source pod's network namespace (what
   ``kubectl exec agnhost connect`` does), 10 at a time (cyclonus runs its probes in parallel too),
   each with the same 1 s timeout.

Both must give the same verdicts; the destinations serve the five ports, and a policy lets half
the sources reach three of them, so many pairs are denied (dropped: each costs its timeout).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import kubernetes
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import clusters, nodeagent, podworld  # noqa: E402

SOURCES, DESTINATIONS, PORTS = 20, 20, [80, 81, 82, 83, 84]
NODES = ["cloud-1", "cloud-2"]
CONNECT = ("import socket,sys\ns=socket.socket();s.settimeout(1)\n"
           "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print('ok')\n"
           "except ConnectionRefusedError:\n print('refused')\nexcept OSError:\n print('timeout')\n")


def probe_rbac(namespaces: list[str]) -> str:
    """The chart's probe accounts, their role and the admission policy on what a probe pod may write."""
    values = json.dumps({"settings": {"auditNamespaces": namespaces}})
    rendered = [subprocess.run([str(clusters.BIN / "helm"), "template", "bench", str(ROOT / "charts/portolan"),
                                "--set-json", f"operator={values}", "--show-only", f"templates/{template}"],
                               capture_output=True, text=True, check=True, timeout=120).stdout
                for template in ("serviceaccounts.yaml", "probe-rbac.yaml")]
    accounts = [o for o in yaml.safe_load_all(rendered[0]) if o and o["metadata"]["name"] == "portolan-probe"]
    return yaml.safe_dump_all(accounts) + "---\n" + rendered[1]


class Timeline:
    """When, after the audit was applied, its probe pods were created, ran, and reported, and it completed."""

    def __init__(self, api: kubernetes.client.ApiClient, started: float) -> None:
        self.api, self.started = api, started
        self.first: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def mark(self, what: str) -> None:
        self.first.setdefault(what, time.monotonic() - self.started)

    def watch(self) -> None:
        core, custom = kubernetes.client.CoreV1Api(self.api), kubernetes.client.CustomObjectsApi(self.api)
        while not self.stop.wait(0.1):
            pods = core.list_namespaced_pod("src", label_selector="portolan.dev/audit=bench").items
            running = [p for p in pods if p.status.phase in ("Running", "Succeeded")]
            if pods:
                self.mark("first probe pod created")
            if len(pods) == SOURCES:
                self.mark("all probe pods created")
            if running:
                self.mark("first probe pod running")
            if len(running) == SOURCES:
                self.mark("all probe pods running")
            status = custom.get_cluster_custom_object("portolan.dev", "v1alpha1", "reachabilityaudits",
                                                      "bench").get("status") or {}
            if status.get("probes"):
                self.mark("first source reported")
            if len(status.get("probes") or {}) == SOURCES:
                self.mark("all sources reported")
            if status.get("phase") == "Complete":
                self.mark("Complete")
                return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", type=pathlib.Path)
    parser.add_argument("--portolan-only", action="store_true", help="skip the exec baseline (profiling)")
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-bench-audit-"))
    plane = clusters.start(folder)
    agent = nodeagent.NodeAgent(plane.api_port, plane.pki.ca.cert, plane.admin_kubeconfig, folder,
                                cluster_cidr=clusters.CLUSTER_CIDR, service_cidr=clusters.SERVICE_CIDR,
                                kube_proxy=plane.pki.kube_proxy)
    agent.start()
    api = kubernetes.config.new_client_from_config(config_file=str(plane.admin_kubeconfig))
    cluster = clusters.Cluster(plane, agent, api)
    operator = None
    try:
        cluster.wait("nodes", lambda: len([n for n in cluster.core().list_node().items if any(
            c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]) == len(agent.nodes))
        cluster.wait("the default account", lambda: bool(cluster.core().list_namespaced_service_account("default").items))
        plane.kubectl("apply", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd/reachabilityaudits.portolan.dev", "--timeout=60s")
        podworld.ensure_namespace(cluster, "src", {"team": "src"})
        podworld.ensure_namespace(cluster, "dst", {"team": "dst"})
        plane.kubectl("apply", "-f", "-", input=probe_rbac(["src", "dst"]))  # the chart's, admission policy included
        serve = [("tcp", port) for port in PORTS]
        destinations = podworld.create(cluster, "dst", [
            podworld.server_pod(f"d{i}", {"role": "dst"}, NODES[i % 2], serve) for i in range(DESTINATIONS)], timeout=180)
        sources = podworld.create(cluster, "src", [
            podworld.server_pod(f"s{i}", {"app": f"s{i}"}, NODES[(i + 1) % 2], [("tcp", 7)]) for i in range(SOURCES)],
            timeout=180)
        kubernetes.client.NetworkingV1Api(api).create_namespaced_network_policy("dst", {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "half"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"team": "src"}}, "podSelector": {"matchExpressions": [
                    {"key": "app", "operator": "In", "values": [f"s{i}" for i in range(0, SOURCES, 2)]}]}}],
                "ports": [{"port": p} for p in PORTS[:3]]}]}})
        agent.enforcer.sync()
        settings = folder / "settings.yaml"
        settings.write_text(yaml.safe_dump({"shardCommand": [sys.executable, "-m", "portolan", "shard"],
                                            "reconcileIntervalSeconds": 1.0, "metricsPort": 0, "peering": None,
                                            "auditNamespaces": ["src", "dst"], "maxPairsPerAudit": 5000}))
        env = dict(os.environ, KUBECONFIG=str(plane.admin_kubeconfig))
        with open(folder / "operator.log", "ab") as log:
            operator = subprocess.Popen([sys.executable, "-m", "portolan", "operator", "--standalone",
                                         "--settings", str(settings)], env=env, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(3)

        # 1. Portolan
        audit = {"apiVersion": "portolan.dev/v1alpha1", "kind": "ReachabilityAudit", "metadata": {"name": "bench"},
                 "spec": {"sources": [{"name": f"s{i}", "namespace": "src", "podLabels": {"app": f"s{i}"}}
                                      for i in range(SOURCES)],
                          "destinations": [{"name": "dst", "namespace": "dst", "podSelector": {"role": "dst"}}],
                          "ports": [{"port": p} for p in PORTS], "probeTimeoutMs": 1000}}  # convergence: the default 10 s
        custom = kubernetes.client.CustomObjectsApi(api)
        started = time.monotonic()
        custom.create_cluster_custom_object("portolan.dev", "v1alpha1", "reachabilityaudits", audit)
        timeline = Timeline(api, started)
        found: dict[str, Any] = {}

        def finished() -> bool:
            found.update(custom.get_cluster_custom_object("portolan.dev", "v1alpha1", "reachabilityaudits", "bench"))
            return (found.get("status") or {}).get("phase") in ("Complete", "Failed")

        cluster.wait("the audit", finished, 600)
        portolan_seconds = time.monotonic() - started
        status = found["status"]
        timeline.thread.join(5)
        steps = [f"| {what} | {t:.1f} s |" for what, t in sorted(timeline.first.items(), key=lambda kv: kv[1])]
        print("\n".join(steps), flush=True)
        if args.portolan_only:
            return

        # 2. One exec per pair, 10 at a time
        pairs = [(s, d, p) for s in sources for d in destinations for p in PORTS]

        def one(pair: tuple[str, str, int]) -> str:
            source, destination, port = pair
            done = subprocess.run(["ip", "netns", "exec", agent.pod_namespace("src", source), sys.executable, "-c",
                                   CONNECT, destinations[destination], str(port)], capture_output=True, text=True)
            return done.stdout.strip()

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            outcomes = dict(zip(pairs, pool.map(one, pairs), strict=True))
        exec_seconds = time.monotonic() - started
        allowed = {s for i, s in enumerate(sorted(sources, key=lambda n: int(n[1:]))) if i % 2 == 0}
        expected = {(s, d, p): s in allowed and p in PORTS[:3] for s, d, p in pairs}
        exec_right = sum((outcomes[k] == "ok") == v for k, v in expected.items())
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(15)
        agent.stop()
        plane.stop()
    totals = status["totals"]
    lines = [
        "# ReachabilityAudit benchmark", "",
        f"Measured {time.strftime('%Y-%m-%d')} on the test bed (4 nodes, pod network, nftables enforcer), "
        f"{SOURCES} sources x {DESTINATIONS} destination pods x {len(PORTS)} TCP ports = {len(pairs)} pairs; "
        "half the sources may reach 3 of the 5 ports, the rest is dropped (1 s timeout each way).", "",
        "| | wall time | pairs right |", "|---|---|---|",
        f"| Portolan audit, apply -> Complete (pods started, probed, aggregated) | {portolan_seconds:.1f} s | "
        f"{totals['agreeing']} / {totals['pairs']} |",
        f"| one process exec per pair in the source pod (the cyclonus / kubectl exec way), 10 parallel | "
        f"{exec_seconds:.1f} s | {exec_right} / {len(pairs)} |", "",
        f"Ratio: Portolan is **{exec_seconds / portolan_seconds:.1f}x** faster "
        f"(goal: <= 30 s end to end, >= 10x faster than one exec per pair).", "",
        f"Audit status: phase {status['phase']}, totals {json.dumps(totals)}; probe rounds per source "
        f"(1 + convergence re-probes of disagreeing pairs): "
        f"{sorted(p.get('rounds', 1) for p in status.get('probes', {}).values())}.", "",
        "Where the audit's time goes (first seen by a 0.1 s poll, seconds after the apply):", "",
        "| step | at |", "|---|---|", *steps, "",
        f"Load average when it ended: {os.getloadavg()[0]:.1f} (2 cores, shared with other test runs).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
