"""Operator benchmarks on the real test control plane (see tests/harness).

    sudo .venv/bin/python bench/run_operator.py [--write bench/OPERATOR.md]

1. Overhead from ``kubectl apply`` to ``Complete`` for a job of 64 shards that each probe a
   single closed loopback port (their scanning takes milliseconds, so the time is the
   operator's planning, pod creation, scheduling, process start of each shard and status
   aggregation) — reported with the same for 1 shard, as a per-shard cost.
2. Operator memory (RSS) idle, then with 500 ScanJobs (suspended: no pods), then after a
   reconcile round over all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import clusters, nodeagent  # noqa: E402

NS = "bench"


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def job(name: str, shards: int, *, suspend: bool = False) -> str:
    return yaml.safe_dump({
        "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": name, "namespace": NS},
        "spec": {"targets": {"addresses": ["127.0.0.1"]}, "ports": f"1-{shards}", "sharding": {"shards": shards},
                 "serviceDetection": False, "suspend": suspend,
                 "pools": [{"name": "cloud", "nodeSelector": {"portolan.dev/pool": "cloud"}}]},
    })


def until(check, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.2)
    raise TimeoutError


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", type=pathlib.Path)
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-bench-"))
    plane = clusters.start(folder)
    agent = nodeagent.NodeAgent(plane.api_port, plane.pki.ca.cert, plane.admin_kubeconfig, folder)
    agent.start()
    lines = ["# Operator benchmark", ""]
    operator = None
    try:
        plane.kubectl("apply", "-f", str(ROOT / "crds"))
        plane.kubectl("create", "namespace", NS)
        plane.kubectl("create", "serviceaccount", "portolan-shard", "-n", NS)
        plane.kubectl("create", "rolebinding", "shard-admin", "--clusterrole=cluster-admin",
                      f"--serviceaccount={NS}:portolan-shard", "-n", NS)
        settings = folder / "settings.yaml"
        settings.write_text(yaml.safe_dump({"shardCommand": [sys.executable, "-m", "portolan", "shard"],
                                            "reconcileIntervalSeconds": 1.0, "metricsPort": 0, "peering": None}))
        env = dict(os.environ, KUBECONFIG=str(plane.admin_kubeconfig))
        operator = subprocess.Popen([sys.executable, "-m", "portolan", "operator", "--standalone",
                                     "--namespace", NS, "--settings", str(settings)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        idle = rss_mib(operator.pid)
        results = {}
        for shards in (1, 64):
            name = f"overhead-{shards}"
            start = time.monotonic()
            plane.kubectl("apply", "-f", "-", input=job(name, shards))
            done = plane.kubectl("wait", "--for=condition=Complete", f"scanjob/{name}", "-n", NS,
                                 "--timeout=600s", timeout=660)
            assert done.returncode == 0
            results[shards] = time.monotonic() - start
        per_shard = (results[64] - results[1]) / 63
        lines += [
            f"Control plane started in {plane.started_seconds:.1f} s (warm binaries); component RSS: "
            + ", ".join(f"{k} {v:.0f} MiB" for k, v in plane.rss_mib().items()) + ".",
            "",
            "## apply → Complete",
            "",
            "| shards | seconds |", "|---|---|",
            f"| 1 | {results[1]:.1f} |", f"| 64 | {results[64]:.1f} |",
            "",
            f"Marginal cost per shard: {per_shard:.2f} s on 2 cores, most of it the start of a Python "
            "process per shard pod (the test node agent runs every pod on this one machine).",
            "",
        ]
        body = "".join("---\n" + job(f"idle-{i}", 1, suspend=True) for i in range(args.jobs))
        start = time.monotonic()
        plane.kubectl("apply", "-f", "-", input=body, timeout=600)
        created = time.monotonic() - start

        def all_seen() -> bool:
            out = plane.kubectl("get", "scanjobs", "-n", NS, "-o", "json", timeout=120).stdout
            items = json.loads(out)["items"]
            return sum(1 for i in items if (i.get("status") or {}).get("phase") == "Suspended") >= args.jobs

        settled = until(all_seen, 900)
        loaded = rss_mib(operator.pid)
        lines += [
            f"## Memory with {args.jobs} ScanJobs", "",
            f"Operator RSS idle: {idle:.0f} MiB; with {args.jobs} suspended ScanJobs, all reconciled: "
            f"{loaded:.0f} MiB ({(loaded - idle) * 1024 / args.jobs:.1f} KiB per job). "
            f"Creating them took {created:.1f} s; the operator had reconciled all of them {settled:.1f} s later.",
            "",
        ]
    finally:
        text = "\n".join(lines) + "\n"
        print(text, flush=True)
        if args.write:
            args.write.write_text(text)
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(timeout=60)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
        agent.stop()
        plane.stop()


if __name__ == "__main__":
    main()
