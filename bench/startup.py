"""Start-up benchmark: the CLI's ``portolan scan 127.0.0.1 -p 80`` and a shard's imports, this tree against another.

    sudo .venv/bin/python bench/startup.py [--baseline /work/main/operator] [--runs 15]

* CLI: ``portolan scan 127.0.0.1 -p 80 -q`` in a fresh namespace (nothing listens: one closed
  port, no service identification), process start to exit;
* shard: ``portolan shard`` with an empty environment, which exits (code 2) right after
  importing everything a shard needs before its first probe (the shard program, the
  engine, the models and its Kubernetes client) — the start-up a shard pod pays;
* shard, planned: the same imports, then the shard runtime reads a plain job and its ScanShard
  (from a stand-in for the API server, in process) and plans its scan — everything a shard pod
  does before its first probe except the two HTTPS requests;
* ``python -c pass``, the interpreter's own floor.

Each tree is byte-compiled first and ``PYTHONDONTWRITEBYTECODE`` is dropped, as after
``pip install`` or in the image: compiling every module on each run would add ~50 ms.

With ``--baseline DIR`` the same commands run with ``PYTHONPATH=DIR`` first (e.g. main's
``operator/`` folder), for a before/after in the same run.  Medians of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import netns  # noqa: E402

# The shard runtime up to its plan, with the API server's answers given in process.
_SHARD_PLANNED = '''
import threading
from portolan.shard import running

class Api:
    def get_job(self, namespace, name):
        return {"spec": {"targets": {"addresses": ["198.18.0.0/28"]}, "ports": "1-1000", "timing": {"retries": 1}}}
    def get_scan_shard(self, namespace, name):
        return {"spec": {"id": "edge-0", "pool": "edge", "index": 0, "targets": ["198.18.0.0-198.18.0.15"],
                         "ports": "1-1000", "probes": 16000}, "status": {"attempt": 1}}

env = running.ShardEnv(namespace="team", job="audit", shard="edge-0", attempt=1, open_cap=200,
                       heartbeat_seconds=60.0, pod=None, node=None)
runner = running.ShardRunner(Api(), env, stop=threading.Event())
job = runner.kube.get_job("team", "audit")
assert runner._still_mine()
assert runner.scan_plan(job).probe_count == 16000
'''


def median_wall(ns: str, argv: list[str], runs: int, env: dict[str, str], codes: tuple[int, ...] = (0,)) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, env=env, timeout=60)
        times.append(time.perf_counter() - start)
        if done.returncode not in codes:
            raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr[-400:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=pathlib.Path, help="another tree's operator/ folder, run with PYTHONPATH")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    ns = f"pbench-start-{os.getpid()}"
    netns.add(ns)
    trees = {"this tree": str(ROOT / "operator")}
    if args.baseline:
        trees["baseline"] = str(args.baseline.resolve())
    # As installed (pip and the image compile every module): bytecode written once, then read.
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("PORTOLAN_", "KUBE")) and k != "PYTHONDONTWRITEBYTECODE"}
    for tree in trees.values():
        subprocess.run([sys.executable, "-m", "compileall", "-q", tree], check=True, stdout=subprocess.DEVNULL)
    rows = []
    try:
        floor = median_wall(ns, [sys.executable, "-c", "pass"], args.runs, base_env)
        for label, tree in trees.items():
            env = dict(base_env, PYTHONPATH=tree)
            cli = median_wall(ns, [sys.executable, "-m", "portolan", "scan", "127.0.0.1", "-p", "80", "-q"], args.runs, env)
            shard = median_wall(ns, [sys.executable, "-m", "portolan", "shard"], args.runs, env, codes=(2,))
            planned = median_wall(ns, [sys.executable, "-c", _SHARD_PLANNED], args.runs, env)
            rows.append((label, tree, cli, shard, planned))
    finally:
        netns.delete(ns)
    print(f"python -c pass: {floor:.3f} s (median of {args.runs})\n")
    print("| tree | `portolan scan 127.0.0.1 -p 80` (s) | `portolan shard` start-up (s) | shard, planned (s) |")
    print("|---|---|---|---|")
    for label, tree, cli, shard, planned in rows:
        print(f"| {label} ({tree}) | {cli:.3f} | {shard:.3f} | {planned:.3f} |")


if __name__ == "__main__":
    main()
