"""The operator as a separate host process against the test control plane, restartable.

It watches one namespace, runs shard pods as ``python -m portolan shard`` through the node
agent, and serves /metrics on a free loopback port.  :func:`prepare` installs the CRDs, the
namespace and the shard identity it needs.

Given an ``image`` (a :class:`harness.oci.Image`), it runs as the chart's Deployment would: in
that image under runc, uid 65532, read-only root, no capabilities (on the host's network, where
the API server listens), and its shard pods name the image, so the node agent runs them in it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import sys
import urllib.request

import yaml

from harness import clusters, oci, pki

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
- {apiGroups: [portolan.dev], resources: [scanshards], verbs: [get]}
- {apiGroups: [portolan.dev], resources: [scanshards/status], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: portolan-shard}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: portolan-shard}
subjects: [{kind: ServiceAccount, name: portolan-shard}]
"""


def pod_image() -> oci.Image | None:
    """The real image for the operator and its shard pods, or None for host processes.

    ``PORTOLAN_TEST_PODS=host`` asks for host processes (a quicker edit-and-test loop: no image
    rebuild after a change under operator/); so does a machine without buildah, runc or
    mmdebstrap, outside CI only. Measured here: the image costs about 0.2 s more per operator
    start and nothing visible per job (the operator's 1 s reconcile cadence dominates).
    """
    if os.environ.get("PORTOLAN_TEST_PODS") == "host":
        return None
    if os.environ.get("CI") != "true" and (os.geteuid() != 0 or any(shutil.which(t) is None for t in oci.TOOLS)):
        return None
    return oci.built_image()


def prepare(cluster: clusters.Cluster, namespace: str) -> None:
    """CRDs established, the namespace, and the shard ServiceAccount with its Role."""
    plane = cluster.plane
    plane.kubectl("apply", "-f", str(ROOT / "crds"))
    for crd in ("scanjobs", "scanshards", "scanschedules"):
        plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}.portolan.dev", "--timeout=30s")
    plane.kubectl("create", "namespace", namespace, check=False)
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=SHARD_RBAC)


class Operator:
    """``portolan operator --standalone`` for one namespace; logs to ``folder/operator.log``."""

    IMAGE = "localhost/portolan:test"

    def __init__(self, cluster: clusters.Cluster, folder: pathlib.Path, namespace: str,
                 image: oci.Image | None = None, settings: dict[str, object] | None = None) -> None:
        self.cluster = cluster
        self.folder = folder
        self.namespace = namespace
        self.image = image
        self.container: str | None = None
        self.metrics_port = clusters.free_port()
        # In the image the operator is uid 65532: it gets its own copy of what it reads.
        self.home = folder / "in-image" if image is not None else folder
        self.home.mkdir(exist_ok=True)
        self.settings = self.home / "settings.yaml"
        in_image = {"shardCommand": ["portolan", "shard"], "shardImage": self.IMAGE}
        self.settings.write_text(yaml.safe_dump({
            "shardCommand": [sys.executable, "-m", "portolan", "shard"],
            "shardHeartbeatSeconds": 0.5, "reconcileIntervalSeconds": 1.0,
            "metricsPort": self.metrics_port, "peering": None,
            "allowedCidrs": ["198.18.64.0/24", "198.18.0.0/16"],
            **(in_image if image is not None else {}), **(settings or {}),
        }))
        self.process: subprocess.Popen[bytes] | None = None
        if image is not None:
            cluster.agent.images[self.IMAGE] = image
            plane = cluster.plane
            pair = pki.Pair(pathlib.Path(shutil.copy(plane.pki.admin.cert, self.home / "admin.crt")),
                            pathlib.Path(shutil.copy(plane.pki.admin.key, self.home / "admin.key")))
            ca = pathlib.Path(shutil.copy(plane.pki.ca.cert, self.home / "ca.crt"))
            pki.kubeconfig(self.home / "kubeconfig", plane.server, ca, client=pair)
            for path in (self.home, *self.home.iterdir()):
                os.chown(path, 65532, 65532)

    def start(self) -> None:
        kubeconfig = self.cluster.plane.admin_kubeconfig if self.image is None else self.home / "kubeconfig"
        args = ["operator", "--standalone", "--namespace", self.namespace, "--settings", str(self.settings), "--verbose"]
        log = open(self.folder / "operator.log", "ab")  # noqa: SIM115 - owned by the process
        if self.image is None:
            env = dict(os.environ, KUBECONFIG=str(kubeconfig))
            self.process = subprocess.Popen([sys.executable, "-m", "portolan", *args], env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        else:
            self.container = f"portolan-operator-{os.getpid()}-{self.metrics_port}"
            subprocess.run(["runc", "delete", "--force", self.container], capture_output=True)  # a killed run's
            bundle = self.image.bundle(
                self.folder / "bundle", self.image.entrypoint(*args), network="host", env={"KUBECONFIG": str(kubeconfig)},
                mounts=(oci.Mount(self.home, str(self.home)),))
            self.process = subprocess.Popen(["runc", "run", "--bundle", str(bundle), self.container],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def _signal(self, name: str) -> None:
        assert self.process is not None
        if self.container is not None:
            subprocess.run(["runc", "kill", self.container, name], capture_output=True)
        elif name == "KILL":
            self.process.kill()
        else:
            self.process.terminate()

    def metrics(self) -> str:
        """One scrape of /metrics, as Prometheus would take it."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with contextlib.closing(urllib.request.urlopen(url, timeout=5)) as reply:
            return str(reply.read().decode())

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._signal("KILL")
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._signal("TERM")
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
