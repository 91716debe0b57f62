"""Operator scale on the real test control plane: CPU per shard and per job, API writes per shard.

    sudo .venv/bin/python bench/run_scale.py [--shards 16 64] [--jobs 1000] [--append bench/OPERATOR.md]

1. For each shard count, one job of that many shards (each probes one closed loopback port)
   from ``kubectl apply`` to ``Complete``: wall time, the operator's CPU seconds (from
   /proc), and the writes to scanjobs the API server counted in its own /metrics
   (``apiserver_request_body_size_bytes`` by verb: count and request bytes), with the
   final object's size (each write stores the whole object in etcd).
2. ``--jobs`` suspended ScanJobs created at once: seconds until every one is reconciled
   (phase Suspended) and the operator's CPU seconds per job.
Bounded: every wait has a timeout.
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

NS = "bench-scale"


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def writes(plane: clusters.ControlPlane, resource: str = "scanjobs") -> dict[str, tuple[float, float]]:
    """verb -> (count, bytes) of requests to ``resource`` (and its status) with a body."""
    text = plane.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_body_size_bytes_") or f'resource="{resource}"' not in line:
            continue
        kind = "count" if line.startswith("apiserver_request_body_size_bytes_count") else "sum"
        if kind not in ("count", "sum") or "_bucket" in line:
            continue
        verb = line.split('verb="', 1)[1].split('"', 1)[0]
        entry = found.setdefault(verb, [0.0, 0.0])
        entry[0 if kind == "count" else 1] += float(line.rsplit(" ", 1)[1])
    return {verb: (count, size) for verb, (count, size) in found.items()}


def job(name: str, shards: int, *, suspend: bool = False) -> dict[str, object]:
    return {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": name, "namespace": NS},
            "spec": {"targets": {"addresses": ["127.0.0.1"]}, "ports": f"1-{shards}", "sharding": {"shards": shards},
                     "serviceDetection": False, "suspend": suspend,
                     "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300}}}


def until(check, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.5)
    raise TimeoutError


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--append", type=pathlib.Path)
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-scale-"))
    plane = clusters.start(folder)
    agent = nodeagent.NodeAgent(plane.api_port, plane.pki.ca.cert, plane.admin_kubeconfig, folder)
    agent.start()
    lines = ["", "## Scale (issue 14)", "",
             f"`bench/run_scale.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, shared 2-core machine:", "",
             "| shards | apply→Complete | operator CPU | CPU per shard | scanjob writes | scanshard writes | "
             "request bytes | final objects (job; mean shard) | etcd bytes (writes × final size, upper bound) | "
             "etcd bytes per shard |", "|---|---|---|---|---|---|---|---|---|---|"]
    operator = None
    try:
        plane.kubectl("apply", "-f", str(ROOT / "crds"))
        plane.kubectl("create", "namespace", NS)
        plane.kubectl("create", "serviceaccount", "portolan-shard", "-n", NS)
        plane.kubectl("create", "rolebinding", "shard-admin", "--clusterrole=cluster-admin",
                      f"--serviceaccount={NS}:portolan-shard", "-n", NS)
        settings = folder / "settings.yaml"
        settings.write_text(yaml.safe_dump({"shardCommand": [sys.executable, "-m", "portolan", "shard"],
                                            "allowedCidrs": ["127.0.0.0/8"], "metricsPort": 0, "peering": None}))
        env = dict(os.environ, KUBECONFIG=str(plane.admin_kubeconfig))
        operator = subprocess.Popen([sys.executable, "-m", "portolan", "operator", "--standalone",
                                     "--namespace", NS, "--settings", str(settings)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        for shards in args.shards:
            name = f"scale-{shards}"
            before, cpu = writes(plane), cpu_seconds(operator.pid)
            before_shards = writes(plane, "scanshards")
            start = time.monotonic()
            plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(job(name, shards)))
            done = plane.kubectl("wait", "--for=condition=Complete", f"scanjob/{name}", "-n", NS,
                                 "--timeout=900s", timeout=960)
            assert done.returncode == 0, done.stderr
            wall = time.monotonic() - start
            used = cpu_seconds(operator.pid) - cpu
            after, after_shards = writes(plane), writes(plane, "scanshards")
            mutating = [v for v in after if v != "create"]  # the job's own create is the user's
            count = sum(after[v][0] - before.get(v, (0, 0))[0] for v in mutating)
            size = sum(after[v][1] - before.get(v, (0, 0))[1] for v in mutating)
            shard_count = sum(after_shards[v][0] - before_shards.get(v, (0, 0))[0] for v in after_shards)
            size += sum(after_shards[v][1] - before_shards.get(v, (0, 0))[1] for v in after_shards)
            final = len(plane.kubectl("get", "scanjob", name, "-n", NS, "-o", "json").stdout)
            listed = json.loads(plane.kubectl("get", "scanshards", "-n", NS, "-l", f"portolan.dev/job={name}",
                                              "-o", "json", timeout=120).stdout)["items"]
            mean_shard = sum(len(json.dumps(o)) for o in listed) / max(1, len(listed))
            etcd = count * final + shard_count * mean_shard
            lines.append(f"| {shards} | {wall:.1f} s | {used:.1f} s | {used / shards * 1000:.0f} ms | {count:.0f} "
                         f"({count / shards:.2f}/shard) | {shard_count:.0f} ({shard_count / shards:.1f}/shard) | "
                         f"{size / 1024:.0f} KiB | {final / 1024:.1f} KiB; {mean_shard / 1024:.1f} KiB | "
                         f"{etcd / 1024 / 1024:.1f} MiB | {etcd / shards / 1024:.1f} KiB |")
        cpu = cpu_seconds(operator.pid)
        if not args.jobs:
            return  # the lines are printed (and appended) below
        body = "".join("---\n" + yaml.safe_dump(job(f"idle-{i}", 1, suspend=True)) for i in range(args.jobs))
        start = time.monotonic()
        plane.kubectl("apply", "-f", "-", input=body, timeout=900)
        created = time.monotonic() - start

        def all_seen() -> bool:
            out = plane.kubectl("get", "scanjobs", "-n", NS, "-o", "json", timeout=300).stdout
            items = json.loads(out)["items"]
            return sum(1 for i in items if (i.get("status") or {}).get("phase") == "Suspended") >= args.jobs

        settled = until(all_seen, 900)
        used = cpu_seconds(operator.pid) - cpu
        lines += ["", f"{args.jobs} suspended ScanJobs: created in {created:.1f} s (kubectl apply), all reconciled "
                  f"{settled:.1f} s after that (goal: ≤ 20 s after creation); operator CPU {used:.1f} s in that time "
                  f"({used / args.jobs * 1000:.0f} ms per job, including its periodic ticks)."]
    finally:
        text = "\n".join(lines) + "\n"
        print(text, flush=True)
        if args.append:
            with args.append.open("a") as handle:
                handle.write(text)
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
