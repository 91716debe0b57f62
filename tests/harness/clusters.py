"""The real control plane for tests: etcd, kube-apiserver, controller-manager, scheduler.

Binaries come from ``tools/k8s/build.sh`` (built from Go modules, cached).  Each
start gets its own PKI, data directory and free ports on 127.0.0.1; RBAC
authorization is on; processes run in their own process groups and are
stopped by PID on teardown.  A :class:`~harness.nodeagent.NodeAgent` stands in
for kubelets (see that module).

Usable from pytest (the session fixture ``cluster``) and from a shell:
``python -m harness.clusters up`` prints a KUBECONFIG path and waits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness import pki

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = ROOT / "tools" / "k8s" / "bin"
SERVICE_CIDR = "198.18.128.0/24"
SERVICE_IP = "198.18.128.1"
# Pod addresses: the controller-manager gives each Node a /24 of this (its spec.podCIDR).  Apart from
# the lab (198.18.0.0/24), the Nodes and test hosts (198.18.64.0/24), Services and the bench.
CLUSTER_CIDR = "198.19.0.0/16"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kube-proxy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binaries_missing() -> list[str]:
    return [name for name in COMPONENTS if not (BIN / name).exists()]


@dataclasses.dataclass
class ControlPlane:
    """A running control plane: its folder, endpoints and processes."""

    folder: pathlib.Path
    api_port: int
    pki: pki.Pki
    admin_kubeconfig: pathlib.Path
    processes: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)
    started_seconds: float = 0.0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: pathlib.Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or self.admin_kubeconfig
        return subprocess.run(
            [str(BIN / "kubectl"), f"--kubeconfig={config}", *args],
            input=input, capture_output=True, text=True, check=check, timeout=timeout,
        )

    def scanjob(self, namespace: str, name: str) -> dict[str, Any]:
        """A ScanJob as ``kubectl`` shows it, with ``status.plan`` and ``status.shards`` filled in from its ScanShards.

        Shards live in their own objects (``kubectl get scanshards -l portolan.dev/job=NAME``);
        tests read them beside the job.  Read here with kubectl alone, not the product's code.
        """
        import json

        job: dict[str, Any] = json.loads(self.kubectl("get", "scanjob", name, "-n", namespace, "-o", "json").stdout)
        listed = json.loads(self.kubectl("get", "scanshards", "-n", namespace, "-l", f"portolan.dev/job={name}",
                                         "-o", "json").stdout)["items"]
        uid = job["metadata"]["uid"]
        mine = [o for o in listed if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]
        mine.sort(key=lambda o: int(o["metadata"].get("annotations", {}).get("portolan.dev/ordinal", "0")))
        status = job.setdefault("status", {})
        status["plan"] = [o["spec"] for o in mine]
        status["shards"] = {o["spec"]["id"]: o.get("status") or {} for o in mine}
        return job

    def rss_mib(self) -> dict[str, float]:
        found = {}
        for name, process in self.processes.items():
            with contextlib.suppress(OSError):
                for line in pathlib.Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        found[name] = int(line.split()[1]) / 1024
        return found

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def _wait_ready(self, deadline: float) -> None:
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    tail = (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=context, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("kube-apiserver did not become ready in time")

    def start(self, timeout: float = 120.0) -> None:
        begun = time.monotonic()
        etcd_port, peer_port = free_port(), free_port()
        data = self.folder / "etcd"
        self._start("etcd", [
            str(BIN / "etcd"), f"--data-dir={data}", "--name=default",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level=warn",
        ])
        p = self.pki
        self._start("kube-apiserver", [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={p.serving.cert}", f"--tls-private-key-file={p.serving.key}",
            f"--client-ca-file={p.ca.cert}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer=https://127.0.0.1:{self.api_port}",
            f"--service-account-key-file={p.service_account_pub}",
            f"--service-account-signing-key-file={p.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true", f"--cert-dir={self.folder / 'certs'}",
            "--endpoint-reconciler-type=none",
            "--v=1",
        ])
        self._wait_ready(begun + timeout)
        controller_config = pki.kubeconfig(
            self.folder / "controller-manager.kubeconfig", self.server, p.ca.cert,
            client=p.controller_manager, user="system:kube-controller-manager",
        )
        self._start("kube-controller-manager", [
            str(BIN / "kube-controller-manager"),
            f"--kubeconfig={controller_config}",
            f"--authentication-kubeconfig={controller_config}",
            f"--authorization-kubeconfig={controller_config}",
            f"--service-account-private-key-file={p.service_account_key}",
            f"--root-ca-file={p.ca.cert}",
            "--use-service-account-credentials=true",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cluster-signing-cert-file={p.ca.cert}", f"--cluster-signing-key-file={p.ca.key}",
            "--allocate-node-cidrs=true", f"--cluster-cidr={CLUSTER_CIDR}", "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Notice a silent node in 25 s rather than 50 s (the agent heartbeats every 5 s).
            "--node-monitor-grace-period=25s", "--node-monitor-period=2s",
            "--v=1",
        ])
        scheduler_config = pki.kubeconfig(
            self.folder / "scheduler.kubeconfig", self.server, p.ca.cert,
            client=p.scheduler, user="system:kube-scheduler",
        )
        self._start("kube-scheduler", [
            str(BIN / "kube-scheduler"),
            f"--kubeconfig={scheduler_config}",
            f"--authentication-kubeconfig={scheduler_config}",
            f"--authorization-kubeconfig={scheduler_config}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--v=1",
        ])
        self._wait_ready(begun + timeout)
        self.started_seconds = time.monotonic() - begun

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def start(folder: pathlib.Path) -> ControlPlane:
    api_port = free_port()
    made = pki.make(folder / "pki", SERVICE_IP)
    admin = pki.kubeconfig(folder / "admin.kubeconfig", f"https://127.0.0.1:{api_port}",
                           made.ca.cert, client=made.admin, user="admin")
    plane = ControlPlane(folder=folder, api_port=api_port, pki=made, admin_kubeconfig=admin)
    try:
        plane.start()
    except BaseException:
        plane.stop()
        raise
    return plane


def require_binaries() -> None:
    missing = binaries_missing()
    if not missing:
        return
    why = f"control plane binaries missing ({', '.join(missing)}): run tools/k8s/build.sh"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    require_binaries()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-k8s-"))
    plane = start(folder)
    try:
        yield plane
    finally:
        plane.stop()
        shutil.rmtree(folder, ignore_errors=True)




@dataclasses.dataclass
class Cluster:
    """The control plane plus node agent that the cluster tests use."""

    plane: ControlPlane
    agent: Any
    api: Any

    def core(self) -> Any:
        import kubernetes

        return kubernetes.client.CoreV1Api(self.api)

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> Iterator[Cluster]:
    import kubernetes

    from harness import labs, nodeagent

    labs.require_lab()
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.admin_kubeconfig))
    agent = nodeagent.NodeAgent(control_plane.api_port, control_plane.pki.ca.cert,
                                control_plane.admin_kubeconfig, control_plane.folder,
                                cluster_cidr=CLUSTER_CIDR, service_cidr=SERVICE_CIDR, kube_proxy=control_plane.pki.kube_proxy)
    agent.start()
    built = Cluster(control_plane, agent, api)
    core = built.core()

    def nodes_ready() -> bool:
        nodes = core.list_node().items
        ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True"
                                         for c in (n.status.conditions or []))]
        return len(ready) == len(agent.nodes)

    def default_account() -> bool:
        try:
            core.read_namespaced_service_account("default", "default")
            return True
        except kubernetes.client.ApiException:
            return False

    try:
        built.wait("nodes to be Ready", nodes_ready)
        built.wait("the default service account", default_account)
        yield built
    finally:
        agent.stop()
        api.close()


def main() -> None:  # pragma: no cover - for humans (tools/k8s/up.sh)
    """Start the control plane (and with --nodes the node agent) until Ctrl-C or SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(prog="tools/k8s/up.sh")
    parser.add_argument("--nodes", action="store_true",
                        help="also run the test node agent: edge and cloud Nodes whose pods run as local processes")
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-k8s-"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    plane = start(folder)
    agent = None
    try:
        if args.nodes:
            from harness import nodeagent

            agent = nodeagent.NodeAgent(plane.api_port, plane.pki.ca.cert, plane.admin_kubeconfig, plane.folder,
                                        cluster_cidr=CLUSTER_CIDR, service_cidr=SERVICE_CIDR, kube_proxy=plane.pki.kube_proxy)
            agent.start()
        print(f"export KUBECONFIG={plane.admin_kubeconfig}", flush=True)
        print(f"# started in {plane.started_seconds:.1f} s; Ctrl-C stops it and removes everything", file=sys.stderr)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        if agent is not None:
            agent.stop()
        plane.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
