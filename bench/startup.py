"""Start-up benchmark: the CLI's ``portolan scan 127.0.0.1 -p 80`` and a shard's imports, this tree against another.

    sudo .venv/bin/python bench/startup.py [--baseline /work/main/operator] [--runs 15]

* CLI: ``portolan scan 127.0.0.1 -p 80 -q`` in a fresh namespace (nothing listens: one closed
  port, no service identification), process start to exit;
* shard: ``portolan shard`` with an empty environment, which exits (code 2) right after
  importing everything a shard needs before its first probe (the shard program, the
  engine, the models and its Kubernetes client) — the start-up a shard pod pays;
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
            rows.append((label, tree, cli, shard))
    finally:
        netns.delete(ns)
    print(f"python -c pass: {floor:.3f} s (median of {args.runs})\n")
    print("| tree | `portolan scan 127.0.0.1 -p 80` (s) | `portolan shard` start-up (s) |")
    print("|---|---|---|")
    for label, tree, cli, shard in rows:
        print(f"| {label} ({tree}) | {cli:.3f} | {shard:.3f} |")


if __name__ == "__main__":
    main()
