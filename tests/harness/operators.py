"""The operator as a separate host process against the test control plane, restartable.

It watches one namespace, runs shard pods as ``python -m portolan.cli shard`` through the node
agent, and serves /metrics on a free loopback port.  :func:`prepare` installs the CRDs, the
namespace and the shard identity it needs.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import urllib.request

import yaml

from harness import clusters

ROOT = pathlib.Path(__file__).resolve().parents[2]

SHARD_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: portolan-shard}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: portolan-shard}
rules:
- {apiGroups: [portolan.dev], resources: [scanjobs], verbs: [get]}
- {apiGroups: [portolan.dev], resources: [scanjobs/status], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: portolan-shard}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: portolan-shard}
subjects: [{kind: ServiceAccount, name: portolan-shard}]
"""


def prepare(cluster: clusters.Cluster, namespace: str) -> None:
    """CRDs established, the namespace, and the shard ServiceAccount with its Role."""
    plane = cluster.plane
    plane.kubectl("apply", "-f", str(ROOT / "crds"))
    for crd in ("scanjobs", "scanschedules"):
        plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}.portolan.dev", "--timeout=30s")
    plane.kubectl("create", "namespace", namespace, check=False)
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=SHARD_RBAC)


class Operator:
    """``portolan operator --standalone`` for one namespace; logs to ``folder/operator.log``."""

    def __init__(self, cluster: clusters.Cluster, folder: pathlib.Path, namespace: str) -> None:
        self.cluster = cluster
        self.folder = folder
        self.namespace = namespace
        self.metrics_port = clusters.free_port()
        self.settings = folder / "settings.yaml"
        self.settings.write_text(yaml.safe_dump({
            "shardCommand": [sys.executable, "-m", "portolan.cli", "shard"],
            "shardHeartbeatSeconds": 0.5, "reconcileIntervalSeconds": 1.0,
            "metricsPort": self.metrics_port, "peering": None,
            "allowedCidrs": ["198.18.64.0/24", "198.18.0.0/16"],
        }))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, KUBECONFIG=str(self.cluster.plane.admin_kubeconfig))
        log = open(self.folder / "operator.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "portolan.cli", "operator", "--standalone", "--namespace", self.namespace,
             "--settings", str(self.settings), "--verbose"], env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def metrics(self) -> str:
        """One scrape of /metrics, as Prometheus would take it."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with contextlib.closing(urllib.request.urlopen(url, timeout=5)) as reply:
            return str(reply.read().decode())

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
