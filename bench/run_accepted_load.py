"""Time to ``Accepted`` for new ScanJobs while many others are running and ticking (issue 14).

    sudo .venv/bin/python bench/run_accepted_load.py [--busy 150] [--count 20]

Starts the test control plane and node agent (host processes), an operator with
``reconcileIntervalSeconds: 1``, then ``--busy`` ScanJobs that stay Running for minutes (one
shard each, a rate-capped scan of loopback; at most 64 shard pods run at once, the rest wait for
a slot and keep ticking), and then measures ``--count`` new jobs with ``bench/run_accepted.py``
(create through the API → the watch event that first shows ``Accepted``).  Bounded: every wait
has a timeout; everything is stopped at the end.
"""

from __future__ import annotations

import argparse
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

NS = "bench-accepted"


def busy_job(name: str) -> dict[str, object]:
    return {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": name, "namespace": NS},
            "spec": {"targets": {"addresses": ["127.0.0.1"]}, "ports": "1-600", "sharding": {"shards": 1},
                     "serviceDetection": False, "timing": {"maxRate": 2, "retries": 0}}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--busy", type=int, default=150)
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-accepted-"))
    plane = clusters.start(folder)
    agent = nodeagent.NodeAgent(plane.api_port, plane.pki.ca.cert, plane.admin_kubeconfig, folder)
    agent.start()
    operator = None
    try:
        plane.kubectl("apply", "-f", str(ROOT / "crds"))
        plane.kubectl("create", "namespace", NS)
        plane.kubectl("create", "serviceaccount", "portolan-shard", "-n", NS)
        plane.kubectl("create", "rolebinding", "shard-admin", "--clusterrole=cluster-admin",
                      f"--serviceaccount={NS}:portolan-shard", "-n", NS)
        settings = folder / "settings.yaml"
        settings.write_text(yaml.safe_dump({"shardCommand": [sys.executable, "-m", "portolan", "shard"],
                                            "allowedCidrs": ["127.0.0.0/8", "198.18.64.0/24"], "metricsPort": 0,
                                            "peering": None, "reconcileIntervalSeconds": 1.0}))
        env = dict(os.environ, KUBECONFIG=str(plane.admin_kubeconfig))
        operator = subprocess.Popen([sys.executable, "-m", "portolan", "operator", "--standalone",
                                     "--namespace", NS, "--settings", str(settings)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        body = "".join("---\n" + yaml.safe_dump(busy_job(f"busy-{i}")) for i in range(args.busy))
        plane.kubectl("apply", "-f", "-", input=body, timeout=600)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # every busy job planned and Running (or waiting for a slot)
            phases = plane.kubectl("get", "scanjobs", "-n", NS, "-o", "jsonpath={.items[*].status.phase}").stdout.split()
            if phases.count("Running") >= args.busy:
                break
            time.sleep(2)
        time.sleep(5)
        load = os.getloadavg()[0]
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "run_accepted.py"), NS, str(args.count), "probe", "0.5"],
                              env=env, capture_output=True, text=True, timeout=300)
        print(f"{args.busy} busy ScanJobs Running (load average {load:.1f}); {done.stdout.strip()} {done.stderr[-500:]}")
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        agent.stop()
        plane.stop()


if __name__ == "__main__":
    main()
