"""Leader election on the real test control plane: takeover times and kill cycles mid-scan.

    sudo .venv/bin/python bench/run_takeover.py [--cycles 10] [--append bench/OPERATOR.md]

Two operator candidates (``portolan operator`` without ``--standalone``, Lease ``portolan``
in namespace ``bench-ha``) run as processes; shard pods run as host processes under the
test node agent.  Measured:

1. SIGKILL of the leader, a ScanJob applied right after: seconds until the Lease names the
   other candidate, until that job is ``Accepted``, until it is ``Complete``.
2. SIGTERM of the leader: seconds until the other candidate holds the Lease.
3. ``--cycles`` times: apply a ScanJob, wait for it to run, SIGKILL the leader and start a
   replacement candidate; at the end every job must be ``Complete`` with every shard's
   result.  Bounded: each wait has a timeout; the loop runs ``--cycles`` times.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import clusters, nodeagent  # noqa: E402

NS = "bench-ha"
SHARDS = 4
PORTS = 64


def until(what: str, check: Callable[[], Any], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(what)


class Bench:
    def __init__(self, plane: clusters.ControlPlane, folder: pathlib.Path) -> None:
        self.plane = plane
        self.folder = folder
        self.settings = folder / "settings.yaml"
        self.settings.write_text(yaml.safe_dump({
            "shardCommand": [sys.executable, "-m", "portolan", "shard"], "reconcileIntervalSeconds": 2.0,
            "metricsPort": 0, "peering": "portolan", "allowedCidrs": ["127.0.0.0/8"]}))
        self.candidates: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def candidate(self) -> subprocess.Popen[bytes]:
        self.count += 1
        env = dict(os.environ, KUBECONFIG=str(self.plane.admin_kubeconfig), POD_NAMESPACE=NS,
                   POD_NAME=f"candidate-{self.count}")
        log = open(self.folder / f"candidate-{self.count}.log", "ab")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen([sys.executable, "-m", "portolan", "operator", "--namespace", NS,
                                    "--settings", str(self.settings)], env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.candidates.append(process)
        return process

    def holder(self) -> str:
        done = self.plane.kubectl("get", "lease", "portolan", "-n", NS, "-o", "jsonpath={.spec.holderIdentity}",
                                  check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    def leader(self) -> subprocess.Popen[bytes]:
        holder = self.holder()
        index = int(holder.split("_")[0].removeprefix("candidate-"))
        return self.candidates[index - 1]

    def apply(self, name: str) -> None:
        self.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": name, "namespace": NS},
            "spec": {"targets": {"addresses": ["127.0.0.1"]}, "ports": f"1-{PORTS}", "sharding": {"shards": SHARDS},
                     "serviceDetection": False, "backoffSeconds": 1,
                     "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300}}}))

    def job(self, name: str) -> dict[str, Any]:
        out = self.plane.kubectl("get", "scanjob", name, "-n", NS, "-o", "json", check=False).stdout
        return json.loads(out) if out else {}

    def condition(self, name: str, kind: str) -> bool:
        conditions = (self.job(name).get("status") or {}).get("conditions") or []
        return any(c["type"] == kind and c["status"] == "True" for c in conditions)

    def probes(self, name: str) -> int:
        status = self.job(name).get("status") or {}
        return sum(sum(r.get("states", {}).values()) for r in status.get("results", []))

    def stop(self) -> None:
        for process in self.candidates:
            if process.poll() is None:
                process.terminate()
        for process in self.candidates:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--append", type=pathlib.Path)
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-ha-"))
    plane = clusters.start(folder)
    agent = nodeagent.NodeAgent(plane.api_port, plane.pki.ca.cert, plane.admin_kubeconfig, folder)
    agent.start()
    bench = Bench(plane, folder)
    lines = ["", "## Leader election (issue 14)", "",
             f"`bench/run_takeover.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, two candidates, "
             "Lease timings 15/10/2 s, jobs of 4 shards x 64 loopback ports:", ""]
    try:
        plane.kubectl("apply", "-f", str(ROOT / "crds"))
        plane.kubectl("create", "namespace", NS)
        plane.kubectl("create", "serviceaccount", "portolan-shard", "-n", NS)
        plane.kubectl("create", "rolebinding", "shard-admin", "--clusterrole=cluster-admin",
                      f"--serviceaccount={NS}:portolan-shard", "-n", NS)
        first = bench.candidate()
        until("first leader", lambda: bench.holder() != "", 60)
        bench.candidate()
        time.sleep(3)
        # 1. SIGKILL, a job applied in the gap
        old = bench.holder()
        start = time.monotonic()
        bench.leader().send_signal(signal.SIGKILL)
        bench.apply("gap")
        takeover = until("takeover after SIGKILL", lambda: bench.holder() not in ("", old), 60)
        until("gap job accepted", lambda: bench.condition("gap", "Accepted"), 60)
        accepted = time.monotonic() - start
        until("gap job complete", lambda: bench.condition("gap", "Complete"), 180)
        complete = time.monotonic() - start
        gap_probes = bench.probes("gap")
        lines.append(f"- SIGKILL of the leader: the standby holds the Lease after {takeover:.1f} s (goal ≤ 20 s); "
                     f"a ScanJob applied right after the kill was Accepted after {accepted:.1f} s and Complete after "
                     f"{complete:.1f} s with {gap_probes}/{PORTS} probes reported.")
        # 2. graceful stop
        bench.candidate()
        time.sleep(3)
        old = bench.holder()
        start = time.monotonic()
        bench.leader().send_signal(signal.SIGTERM)
        graceful = until("takeover after SIGTERM", lambda: bench.holder() not in ("", old), 60)
        lines.append(f"- SIGTERM of the leader (graceful stop, Lease released): the standby holds the Lease after "
                     f"{graceful:.1f} s (goal ≤ 3 s).")
        # 3. kill cycles
        started = time.monotonic()
        for cycle in range(args.cycles):
            bench.candidate()
            name = f"cycle-{cycle}"
            bench.apply(name)
            until(f"{name} running", lambda n=name: bench.condition(n, "Accepted"), 120)  # type: ignore[misc]
            killed = bench.holder()
            bench.leader().send_signal(signal.SIGKILL)
            until(f"takeover in cycle {cycle}", lambda: bench.holder() not in ("", killed), 60)  # noqa: B023
        for cycle in range(args.cycles):
            until(f"cycle-{cycle} complete", lambda n=f"cycle-{cycle}": bench.condition(n, "Complete"), 300)  # type: ignore[misc]
        complete_all = [bench.probes(f"cycle-{c}") == PORTS for c in range(args.cycles)]
        lines.append(f"- {args.cycles} cycles of (apply a ScanJob, wait for Accepted, SIGKILL the leader, start a new "
                     f"candidate): {sum(complete_all)}/{args.cycles} jobs Complete with all {PORTS} probes reported, "
                     f"{time.monotonic() - started:.0f} s in all.")
        _ = first
    finally:
        text = "\n".join(lines) + "\n"
        print(text, flush=True)
        if args.append:
            with args.append.open("a") as handle:
                handle.write(text)
        bench.stop()
        agent.stop()
        plane.stop()


if __name__ == "__main__":
    main()
