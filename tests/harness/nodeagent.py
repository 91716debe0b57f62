"""A kubelet stand-in for tests: Nodes with their own network namespaces that run pods as processes.

For each node it registers a ``Node`` (labels, taints, capacity, an InternalIP in
198.18.64.0/24), keeps its Lease and Ready condition fresh, and runs every pod the
scheduler binds to it as a local process: the first container's command and args,
env with downward-API ``fieldRef`` values, and — unless the pod opts out — a token
for the pod's service account (TokenRequest, bound to the pod) with the cluster's CA
and a kubeconfig whose path is in ``KUBECONFIG``.  A pod gets its own network
namespace and an address from its node's ``podCIDR`` (see :mod:`harness.podnet`);
a ``hostNetwork`` pod runs in its node's namespace instead.  The API server is reached
through a relay that listens on 127.0.0.1 inside each node and pod namespace and
forwards to the API server's loopback port in the root namespace (so NetworkPolicies
never see API traffic: a known difference from a real cluster).  With a kube-proxy
client certificate, each node namespace runs its own ``kube-proxy`` in nftables mode,
so ClusterIP and NodePort Services work from pods and nodes; a
:class:`~harness.netpolicing.Enforcer` applies NetworkPolicies on the pod veths.

Readiness probes (``tcpSocket``, ``exec``, ``httpGet``) run from the node as a kubelet
runs them; the pod is ``Ready`` only while they pass (without a probe, once running),
so EndpointSlices list only ready pods.

It reports Running, then Succeeded/Failed with the exit code, honours deletion
(SIGTERM, the grace period, SIGKILL, then the final delete with grace 0), and can
be told to kill a pod's process or to drop a node, for fault tests.

Volumes: ``hostPath``, ``emptyDir`` and ``persistentVolumeClaim`` bound to a hostPath
PersistentVolume are bind-mounted at their ``mountPath`` inside the process's own mount
namespace.  Exited containers restart as the pod's restartPolicy says (Always, OnFailure), with
the kubelet's doubling back-off, ``restartCount`` and ``CrashLoopBackOff`` in between.  Limits:
one container per pod (init containers and sidecars are ignored), other volume types are skipped.

Images: a pod whose image is registered in :attr:`NodeAgent.images` (a
:class:`harness.oci.Image`, the real image built from the Dockerfile) runs in that image under
runc, joined to its own network namespace (its node's for hostNetwork): the image's entrypoint and env unless the pod
overrides them, the pod's runAsUser/runAsGroup, added capabilities and ``hostPID`` (nothing else), a
read-only root (the unpacked image is shared), its volumes and credentials bind-mounted.  Any
other image is ignored and the command runs as a host process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import kubernetes

from harness import netns, netpolicing, pki, podnet

LEASE_SECONDS = 40


class VolumeError(Exception):
    """A pod's volume cannot be provided on this node."""


def restart_delay(policy: str | None, exit_code: int, restarts: int, *, base: float = 10.0,
                  cap: float = 300.0) -> float | None:
    """The kubelet's decision for an exited container: None (the pod ends), or the back-off before restart.

    ``Always`` restarts whatever the exit code, ``OnFailure`` only after a non-zero one,
    ``Never`` (and no policy: the API server defaults pods to Always, so a missing one is
    a bare test object) never.  The back-off doubles per restart from ``base`` up to
    ``cap`` (the kubelet's 10 s and 5 min).
    """
    if policy == "Always" or (policy == "OnFailure" and exit_code != 0):
        return float(min(cap, base * 2 ** restarts))
    return None


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    name: str
    pool: str
    address: str
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)


DEFAULT_NODES = (
    NodeSpec("edge-1", "edge", "198.18.64.11", (("portolan.dev/edge", "true", "NoSchedule"),)),
    NodeSpec("edge-2", "edge", "198.18.64.12", (("portolan.dev/edge", "true", "NoSchedule"),)),
    NodeSpec("cloud-1", "cloud", "198.18.64.21"),
    NodeSpec("cloud-2", "cloud", "198.18.64.22"),
)


@dataclasses.dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    node: str
    process: subprocess.Popen[bytes] | None
    folder: pathlib.Path
    reported: str = ""
    deleting: bool = False
    container: str | None = None  # the runc container id when the pod runs in an image
    address: str = ""  # its own pod address; empty for hostNetwork pods
    network: str = ""  # its own network namespace; empty for hostNetwork pods
    relay: socket.socket | None = None
    probe: Any = None  # the container's readinessProbe
    ports: dict[str, int] = dataclasses.field(default_factory=dict)  # named container ports
    ready: bool = False
    started: float = 0.0
    next_probe: float = 0.0
    successes: int = 0
    failures: int = 0
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class _Link:
    """Two relayed sockets; closed together when both directions are done."""

    def __init__(self, inner: socket.socket, outer: socket.socket) -> None:
        self.sockets = (inner, outer)
        self.open_directions = 2
        self.lock = threading.Lock()

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            with self.lock:
                self.open_directions -= 1
                last = self.open_directions == 0
            if last:
                for sock in self.sockets:
                    sock.close()


class NodeAgent:
    """Runs the nodes; start() builds namespaces and registers Nodes, stop() undoes it."""

    def __init__(self, server_port: int, ca: pathlib.Path, admin_kubeconfig: pathlib.Path,
                 folder: pathlib.Path, nodes: tuple[NodeSpec, ...] = DEFAULT_NODES,
                 prefix: str = "pk8s", *, cluster_cidr: str | None = None,
                 service_cidr: str = "198.18.128.0/24", kube_proxy: pki.Pair | None = None) -> None:
        self.port = server_port
        self.ca = ca
        self.folder = folder
        self.nodes = {node.name: node for node in nodes}
        self.prefix = f"{prefix}{os.getpid() % 100000}"
        self.api = kubernetes.config.new_client_from_config(config_file=str(admin_kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.coordination = kubernetes.client.CoordinationV1Api(self.api)
        self.pods: dict[str, RunningPod] = {}
        self.restart_counts: dict[str, int] = {}  # pod uid -> container restarts (restartPolicy)
        self.last_states: dict[str, dict[str, Any]] = {}  # pod uid -> the restarted container's end
        self.restart_backoff = (10.0, 300.0)  # the kubelet's base and cap; tests may shorten them
        self.dropped: set[str] = set()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.relays: list[socket.socket] = []
        self.switch = f"{self.prefix}-sw"
        self.images: dict[str, Any] = {}  # image reference -> harness.oci.Image run under runc
        self.cluster_cidr = cluster_cidr  # None: every pod runs in its node's namespace (the old bed)
        self.kube_proxy = kube_proxy
        self.service_cidr = service_cidr
        self.addresses: dict[str, podnet.Addresses] = {}
        self.proxies: dict[str, subprocess.Popen[bytes]] = {}
        self.enforcer: netpolicing.Enforcer | None = None

    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    # -- start and stop ---------------------------------------------------------------------

    def start(self) -> None:
        netns.add(self.switch)
        netns.run(self.switch, ["ip", "link", "add", "br0", "type", "bridge"])
        netns.run(self.switch, ["ip", "link", "set", "br0", "up"])
        for index, node in enumerate(self.nodes.values()):
            netns.add(self.ns(node.name))
            netns.veth_to_bridge(self.switch, "br0", self.ns(node.name),
                                 f"{self.prefix[-5:]}n{index}", f"{node.address}/24")
            self.relays.append(self._relay(self.ns(node.name)))
            self._register(node)
        if self.cluster_cidr is not None:
            self._pod_network(self.cluster_cidr)
        for target in (self._heartbeat, self._watch_pods, self._reap, self._probe_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            pods = list(self.pods.values())
        for pod in pods:
            self._terminate(pod, grace=1.0)
            self._release(pod)
        if self.enforcer is not None:
            self.enforcer.stop()
        for proxy in self.proxies.values():
            _stop_process(proxy)
        for relay in self.relays:
            _close_listener(relay)
        for node in self.nodes:
            netns.delete(self.ns(node))
        netns.delete(self.switch)

    # -- API relay --------------------------------------------------------------------------

    def _relay(self, namespace: str) -> socket.socket:
        with netns.entered(namespace):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while not self.stopping.is_set() and listener.fileno() != -1:
            try:
                inner, _ = listener.accept()
            except OSError:
                return
            try:
                outer = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                outer.settimeout(None)
            except OSError:
                inner.close()
                continue
            link = _Link(inner, outer)
            for a, b in ((inner, outer), (outer, inner)):
                threading.Thread(target=link.pump, args=(a, b), daemon=True).start()


    # -- pod network ------------------------------------------------------------------------

    def _pod_network(self, cluster_cidr: str, timeout: float = 30.0) -> None:
        """Wait for every Node's podCIDR, then route between nodes, masquerade, kube-proxy, policies."""
        deadline = time.monotonic() + timeout
        cidrs: dict[str, str] = {}
        while len(cidrs) < len(self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes without a podCIDR after {timeout:.0f} s: "
                                   f"{sorted(set(self.nodes) - set(cidrs))} (is --allocate-node-cidrs on?)")
            for item in self.core.list_node().items:
                if item.metadata.name in self.nodes and item.spec.pod_cidr:
                    cidrs[item.metadata.name] = item.spec.pod_cidr
            if len(cidrs) < len(self.nodes):
                time.sleep(0.2)
        for name in self.nodes:
            self.addresses[name] = podnet.Addresses(cidrs[name])
            podnet.setup_node(self.ns(name), cluster_cidr, self.service_cidr)
            for other, cidr in cidrs.items():
                if other != name:
                    podnet.route_to(self.ns(name), cidr, self.nodes[other].address)
        if self.kube_proxy is not None:
            config = pki.kubeconfig(self.folder / "kube-proxy.kubeconfig", f"https://127.0.0.1:{self.port}",
                                    self.ca, client=self.kube_proxy, user="system:kube-proxy")
            for name in self.nodes:
                self.proxies[name] = self._start_proxy(name, config, cluster_cidr)
        self.enforcer = netpolicing.Enforcer(self.core, {name: self.ns(name) for name in self.nodes},
                                             self.folder / "netpol")
        self.enforcer.start()

    def _start_proxy(self, node: str, config: pathlib.Path, cluster_cidr: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"kube-proxy-{node}.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.ns(node), str(KUBE_PROXY), f"--kubeconfig={config}",
                 f"--hostname-override={node}", "--proxy-mode=nftables", f"--cluster-cidr={cluster_cidr}",
                 # conntrack limits are the root namespace's business: leave them alone
                 "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
                 "--conntrack-tcp-timeout-close-wait=0", "--v=1"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def proxy_alive(self, node: str) -> bool:
        """Whether that node's kube-proxy is still running (tests check before blaming Services)."""
        process = self.proxies.get(node)
        return process is not None and process.poll() is None

    def pod_namespace(self, namespace: str, name: str) -> str:
        """The network namespace a running pod's process is in (its own, or its node's for hostNetwork)."""
        with self.lock:
            for pod in self.pods.values():
                if (pod.namespace, pod.name) == (namespace, name) and pod.reported != "dropped":
                    return pod.network or self.ns(pod.node)
        raise KeyError(f"{namespace}/{name} is not running here")

    def _release(self, pod: RunningPod) -> None:
        """Give back a finished pod's namespace, veth and address (idempotent)."""
        relay, pod.relay = pod.relay, None
        if relay is not None:
            _close_listener(relay)
        if pod.network:
            podnet.remove_pod(pod.network)
            pod.network = ""
        if pod.address and pod.node in self.addresses:
            self.addresses[pod.node].give_back(pod.address)

    # -- nodes ------------------------------------------------------------------------------

    def _register(self, node: NodeSpec) -> None:
        body = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": {
                "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "portolan.dev/pool": node.pool}},
            "spec": {"taints": [{"key": k, "value": v, "effect": e} for k, v, e in node.taints]},
        }
        with contextlib.suppress(kubernetes.client.ApiException):
            self.core.delete_node(node.name)
        self.core.create_node(body)
        self._node_status(node)

    def _node_status(self, node: NodeSpec) -> None:
        now = _now().isoformat()
        status = {
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": node.address},
                          {"type": "Hostname", "address": node.name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "test node agent is posting ready status",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"kubeletVersion": "v1.37.2-portolan-agent", "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "process://portolan", "kernelVersion": "",
                         "osImage": "portolan test node", "machineID": "", "systemUUID": "",
                         "bootID": ""},
        }
        self.core.patch_node_status(node.name, {"status": status})

    def _lease(self, node: str) -> None:
        now = _now()
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
        try:
            self.coordination.replace_namespaced_lease(node, "kube-node-lease", self._with_version(node, body))
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def _with_version(self, node: str, body: dict[str, Any]) -> dict[str, Any]:
        current = self.coordination.read_namespaced_lease(node, "kube-node-lease")
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        return body

    def _heartbeat(self) -> None:
        beat = 0
        while not self.stopping.wait(0 if beat == 0 else 5):
            for node in self.nodes.values():
                if node.name in self.dropped:
                    continue
                with contextlib.suppress(Exception):
                    self._lease(node.name)
                    if beat % 2 == 0:
                        self._node_status(node)
            beat += 1

    def revive_node(self, name: str) -> None:
        """Undo drop_node(delete=False): heartbeats resume and new pods bound here run again."""
        self.dropped.discard(name)
        with contextlib.suppress(Exception):
            self._lease(name)
            self._node_status(self.nodes[name])

    def drop_node(self, name: str, *, delete: bool = True) -> None:
        """Simulate a node's death: its pods' processes die, heartbeats stop, the Node goes away."""
        self.dropped.add(name)
        with self.lock:
            pods = [pod for pod in self.pods.values() if pod.node == name]
        for pod in pods:
            pod.reported = "dropped"  # first: a dead node reports nothing, not even its pods' deaths
            if pod.process is not None and pod.process.poll() is None:
                self._signal(pod, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    pod.process.wait(timeout=5)
            self._release(pod)
        if delete:
            with contextlib.suppress(kubernetes.client.ApiException):
                self.core.delete_node(name)

    # -- pods -------------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        while not self.stopping.is_set():
            try:
                stream = kubernetes.watch.Watch()
                for event in stream.stream(self.core.list_pod_for_all_namespaces, timeout_seconds=30):
                    if self.stopping.is_set():
                        return
                    self._on_pod(event["type"], event["object"])
            except Exception:
                if self.stopping.wait(0.5):
                    return

    def _on_pod(self, kind: str, pod: Any) -> None:
        node = pod.spec.node_name
        if node not in self.nodes or node in self.dropped:
            return
        key = pod.metadata.uid
        with self.lock:
            running = self.pods.get(key)
        if kind == "DELETED":
            if running is not None:
                self._terminate(running, grace=0.0)
                self._release(running)
                with self.lock:
                    self.pods.pop(key, None)
            return
        if pod.metadata.deletion_timestamp is not None:
            if running is not None and not running.deleting:
                running.deleting = True
                grace = pod.metadata.deletion_grace_period_seconds or 0
                threading.Thread(target=self._delete, args=(running, float(grace)), daemon=True).start()
            elif running is None:
                self._final_delete(pod.metadata.namespace, pod.metadata.name, key)
            return
        if running is None and pod.status.phase in (None, "Pending"):
            self._run_or_fail(pod)

    def _run_or_fail(self, pod: Any, sandbox: RunningPod | None = None) -> None:
        """Start a pod; a start that raises fails the pod with the error, never leaves it Pending unseen."""
        try:
            self._run(pod, sandbox)
        except Exception as exc:
            with self.lock:
                running = self.pods.get(pod.metadata.uid)
            if running is None:
                raise
            self._release(running)
            self._status(running, "Failed", exit_code=128, reason="StartError", message=f"{type(exc).__name__}: {exc}")

    def _pod_address(self, pod: Any) -> str:
        with self.lock:
            running = self.pods.get(pod.metadata.uid)
        return running.address if running is not None else ""

    def _env(self, pod: Any, container: Any) -> dict[str, str]:
        node = self.nodes[pod.spec.node_name]
        fields = {
            "metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid, "spec.nodeName": pod.spec.node_name,
            "spec.serviceAccountName": pod.spec.service_account_name or "default",
            "status.podIP": self._pod_address(pod) or node.address, "status.hostIP": node.address,
        }
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root", "LANG": "C.UTF-8",
               "HOSTNAME": pod.metadata.name}
        for item in container.env or []:
            if item.value is not None:
                env[item.name] = item.value
            elif item.value_from is not None and item.value_from.config_map_key_ref is not None:
                ref = item.value_from.config_map_key_ref
                data = self.core.read_namespaced_config_map(ref.name, pod.metadata.namespace).data or {}
                env[item.name] = data.get(ref.key, "")
            elif item.value_from is not None and item.value_from.field_ref is not None:
                path = item.value_from.field_ref.field_path
                if path.startswith("metadata.labels['"):
                    env[item.name] = (pod.metadata.labels or {}).get(path[17:-2], "")
                else:
                    env[item.name] = fields.get(path, "")
        return env

    def _credentials(self, pod: Any, folder: pathlib.Path) -> dict[str, str]:
        if pod.spec.automount_service_account_token is False:
            return {}
        account = pod.spec.service_account_name or "default"
        request = {"spec": {"audiences": [], "expirationSeconds": 3600,
                            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                               "name": pod.metadata.name, "uid": pod.metadata.uid}}}
        token = self.core.create_namespaced_service_account_token(
            account, pod.metadata.namespace, request).status.token
        token_file = folder / "token"
        token_file.write_text(token)
        (folder / "ca.crt").write_bytes(self.ca.read_bytes())
        (folder / "namespace").write_text(pod.metadata.namespace)
        config = pki.kubeconfig(folder / "kubeconfig", f"https://127.0.0.1:{self.port}",
                                folder / "ca.crt", token_file=token_file, user=account)
        return {"KUBECONFIG": str(config), "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(self.port),
                "PORTOLAN_SERVICEACCOUNT_DIR": str(folder)}

    def _mounts(self, pod: Any, container: Any, folder: pathlib.Path) -> list[tuple[str, str]]:
        """(mountPath, host directory) for each volumeMount: hostPath, emptyDir, or a claim bound to a hostPath PV."""
        volumes = {v.name: v for v in pod.spec.volumes or []}
        mounts = []
        for mount in container.volume_mounts or []:
            volume = volumes.get(mount.name)
            if volume is None:
                raise VolumeError(f"no volume {mount.name!r}")
            if volume.host_path is not None:
                source = pathlib.Path(volume.host_path.path)
            elif volume.empty_dir is not None:
                source = folder / "volumes" / mount.name
                source.mkdir(parents=True, exist_ok=True)
            elif volume.persistent_volume_claim is not None:
                name = volume.persistent_volume_claim.claim_name
                try:
                    claim = self.core.read_namespaced_persistent_volume_claim(name, pod.metadata.namespace)
                    if not claim.spec.volume_name:
                        raise VolumeError(f"claim {name!r} is not bound")
                    volume_ = self.core.read_persistent_volume(claim.spec.volume_name)
                except kubernetes.client.ApiException as exc:
                    raise VolumeError(f"claim {name!r}: {exc.reason}") from exc
                if volume_.spec.host_path is None:
                    raise VolumeError(f"volume {claim.spec.volume_name!r} is not a hostPath volume")
                source = pathlib.Path(volume_.spec.host_path.path)
            else:
                continue  # projected service-account tokens are handled by _credentials
            if not source.is_dir():
                raise VolumeError(f"{source} is not a directory on this node")
            mounts.append((mount.mount_path, str(source)))
        return mounts

    def _run(self, pod: Any, sandbox: RunningPod | None = None) -> None:
        """Start the pod's container; a restart (``sandbox``: the exited one) keeps its network and address."""
        folder = self.folder / "pods" / f"{pod.metadata.namespace}_{pod.metadata.name}_{pod.metadata.uid[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        running = RunningPod(pod.metadata.namespace, pod.metadata.name, pod.metadata.uid,
                             pod.spec.node_name, None, folder)
        with self.lock:
            self.pods[pod.metadata.uid] = running
        container = pod.spec.containers[0]
        running.probe = container.readiness_probe
        running.ports = {p.name: p.container_port for c in pod.spec.containers for p in c.ports or [] if p.name}
        image = self.images.get(container.image)
        if image is None and not container.command:
            self._status(running, "Failed", exit_code=127, reason="NoCommand",
                         message="the test node agent runs commands, not images")
            return
        namespace = self.ns(pod.spec.node_name)
        if sandbox is not None and sandbox.network:  # as a kubelet keeps the pod sandbox: pod IPs never change
            running.address, running.network, running.relay = sandbox.address, sandbox.network, sandbox.relay
            namespace = running.network
        elif not pod.spec.host_network and pod.spec.node_name in self.addresses:
            try:
                self._own_network(running)
            except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                self._release(running)
                self._status(running, "Failed", exit_code=1, reason="NetworkFailed", message=str(detail).strip())
                return
            namespace = running.network
            self._status(running, "Pending")  # the pod's address, before its container starts (as a kubelet does)
            self._isolate(running)
        if image is not None:
            self._run_in_image(pod, container, running, image, namespace)
            return
        argv = [*(container.command or []), *(container.args or [])]
        try:
            env = self._env(pod, container) | self._credentials(pod, folder)
        except kubernetes.client.ApiException as exc:
            self._release(running)
            self._status(running, "Failed", exit_code=1, reason="CredentialsFailed", message=str(exc.reason))
            return
        try:
            mounts = self._mounts(pod, container, folder)
        except VolumeError as exc:
            self._release(running)
            self._status(running, "Failed", exit_code=1, reason="VolumeFailed", message=str(exc))
            return
        if mounts:
            # ip netns exec gives the process its own mount namespace (slave of the root one),
            # so these bind mounts are seen by the pod alone, at the paths it asked for.
            script = "".join(f'mkdir -p "${{{2 * i + 1}}}" && mount --bind "${{{2 * i + 2}}}" "${{{2 * i + 1}}}" && '
                             for i in range(len(mounts)))
            script += f"shift {2 * len(mounts)} && exec \"$@\""
            argv = ["sh", "-c", script, "sh", *(part for pair in mounts for part in pair), *argv]
        log = open(folder / "log", "wb")  # noqa: SIM115 - handed to the child
        running.process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv], env=env, cwd=folder,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self._started(running)

    def _started(self, running: RunningPod) -> None:
        """Running; Ready at once without a readiness probe, else once it passes."""
        running.started = time.monotonic()
        running.ready = running.probe is None
        if running.probe is not None:
            running.next_probe = running.started + (running.probe.initial_delay_seconds or 0)
        self._status(running, "Running")

    def _run_in_image(self, pod: Any, container: Any, running: RunningPod, image: Any, network: str) -> None:
        from harness import oci

        folder = running.folder
        try:
            env = self._env(pod, container) | self._credentials(pod, folder)
            mounts = self._mounts(pod, container, folder)
        except kubernetes.client.ApiException as exc:
            self._release(running)
            self._status(running, "Failed", exit_code=1, reason="CredentialsFailed", message=str(exc.reason))
            return
        except VolumeError as exc:
            self._release(running)
            self._status(running, "Failed", exit_code=1, reason="VolumeFailed", message=str(exc))
            return
        for name in ("PATH", "HOME"):  # the image's, not this machine's
            env.pop(name, None)
        config = image.config
        if container.command:  # as the kubelet does: a command replaces the entrypoint and its Cmd
            argv = [*container.command, *(container.args or [])]
        else:
            argv = [*(config.get("Entrypoint") or []), *(container.args or config.get("Cmd") or [])]
        contexts = [c for c in (pod.spec.security_context, container.security_context) if c is not None]
        user = config["User"].split(":")
        for context in contexts:  # the container's settings win over the pod's
            if context.run_as_user is not None:
                user[0] = str(context.run_as_user)
            if getattr(context, "run_as_group", None) is not None:
                user[1] = str(context.run_as_group)
        added = container.security_context.capabilities.add if (
            container.security_context and container.security_context.capabilities) else None
        running.container = f"{self.prefix}-{pod.metadata.uid[:13]}"
        bundle = image.bundle(
            folder / "bundle", argv, user=(int(user[0]), int(user[1])), capabilities=tuple(added or ()),
            env=env, network=f"/run/netns/{network}", host_pid=bool(pod.spec.host_pid),
            mounts=(oci.Mount(folder, str(folder)),
                    *(oci.Mount(pathlib.Path(source), target, writable=True) for target, source in mounts)))
        log = open(folder / "log", "wb")  # noqa: SIM115 - handed to the child
        running.process = subprocess.Popen(
            ["runc", "run", "--bundle", str(bundle), running.container], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._await_container(running)  # like a kubelet: Running once the container has started
        self._started(running)

    @staticmethod
    def _await_container(pod: RunningPod, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pod.process is not None and pod.process.poll() is None:
            state = subprocess.run(["runc", "state", str(pod.container)], capture_output=True, text=True)
            if state.returncode == 0 and '"status": "created"' not in state.stdout:
                return
            time.sleep(0.02)

    def _signal(self, pod: RunningPod, sig: int) -> None:
        """Signal the pod's process; in an image, its container's (runc forwards no SIGKILL)."""
        if pod.container is not None:
            self._await_container(pod)
            subprocess.run(["runc", "kill", pod.container, signal.Signals(sig).name], capture_output=True)
            return
        if pod.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, sig)

    def _isolate(self, running: RunningPod) -> None:
        """Let the enforcer apply the policies that select a new pod before its container starts.

        CNIs with policy support program a pod's rules before it runs; without this the first
        packets of a short-lived pod could leave before the next enforcer pass.  Only policies of
        the pod's own namespace can select it, so without any there is nothing to wait for (as a
        peer of other pods' rules, the new pod is at worst denied until the next pass).
        """
        if self.enforcer is None:
            return
        try:
            policies = kubernetes.client.NetworkingV1Api(self.core.api_client).list_namespaced_network_policy(
                running.namespace, limit=1).items
        except kubernetes.client.ApiException:
            policies = [None]  # unknown: wait for the enforcer
        if policies:
            with contextlib.suppress(TimeoutError, RuntimeError):
                self.enforcer.sync()

    def _own_network(self, running: RunningPod) -> None:
        addresses = self.addresses[running.node]
        running.address = addresses.take()
        running.network = f"{self.prefix}-{running.address.replace('.', '-')}"
        podnet.add_pod(self.ns(running.node), running.network, running.address, addresses.gateway)
        running.relay = self._relay(running.network)

    def _status(self, pod: RunningPod, phase: str, *, exit_code: int | None = None,
                reason: str | None = None, message: str | None = None) -> None:
        if pod.reported == phase or pod.node in self.dropped:  # a dropped node is silent
            return
        pod.reported = phase
        pod.exit_code, pod.reason, pod.message = exit_code, reason, message
        self._send(pod)

    def _send(self, pod: RunningPod) -> None:
        """Write the pod's status: phase, addresses, Ready (running and its probe passing)."""
        node = self.nodes[pod.node]
        now = _now().isoformat()
        phase = pod.reported
        if phase == "Running":
            state: dict[str, Any] = {"running": {"startedAt": now}}
        elif phase == "Pending":
            state = {"waiting": {"reason": "ContainerCreating"}}
        else:
            state = {"terminated": {"exitCode": pod.exit_code if pod.exit_code is not None else 0,
                                    "reason": pod.reason or ("Completed" if pod.exit_code == 0 else "Error"),
                                    "finishedAt": now, "startedAt": now}}
            if pod.message:
                state["terminated"]["message"] = pod.message
        ready = phase == "Running" and pod.ready
        condition = "True" if ready else "False"
        address = pod.address or node.address
        status = {
            "phase": phase, "hostIP": node.address, "hostIPs": [{"ip": node.address}],
            "podIP": address, "podIPs": [{"ip": address}], "startTime": now,
            "conditions": [{"type": "Ready", "status": condition, "lastTransitionTime": now},
                           {"type": "ContainersReady", "status": condition, "lastTransitionTime": now},
                           {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "main", "ready": ready,
                                   "restartCount": self.restart_counts.get(pod.uid, 0),
                                   "lastState": self.last_states.get(pod.uid, {}),
                                   "image": "portolan", "imageID": "", "state": state,
                                   "started": phase == "Running"}],
        }
        with contextlib.suppress(kubernetes.client.ApiException):
            self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})

    # -- readiness --------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        while not self.stopping.wait(0.1):
            now = time.monotonic()
            with self.lock:
                due = [p for p in self.pods.values()
                       if p.probe is not None and p.reported == "Running" and not p.deleting and p.next_probe <= now]
            for pod in due:
                probe = pod.probe
                passed = self._probe(pod, probe)
                pod.next_probe = time.monotonic() + (probe.period_seconds or 10)
                if passed:
                    pod.successes, pod.failures = pod.successes + 1, 0
                    flip = not pod.ready and pod.successes >= (probe.success_threshold or 1)
                else:
                    pod.successes, pod.failures = 0, pod.failures + 1
                    flip = pod.ready and pod.failures >= (probe.failure_threshold or 3)
                if flip and pod.reported == "Running":
                    pod.ready = not pod.ready
                    self._send(pod)

    def _probe(self, pod: RunningPod, probe: Any) -> bool:
        """One readiness check, from the node as a kubelet does it."""
        timeout = float(probe.timeout_seconds or 1)
        host = pod.address or self.nodes[pod.node].address
        try:
            if probe.var_exec is not None:
                done = subprocess.run(["ip", "netns", "exec", pod.network or self.ns(pod.node), *probe.var_exec.command],
                                      capture_output=True, timeout=timeout, cwd=pod.folder, check=False)
                return done.returncode == 0
            action = probe.tcp_socket or probe.http_get
            if action is None:
                return False
            port = action.port if isinstance(action.port, int) else pod.ports.get(str(action.port), 0)
            with netns.entered(self.ns(pod.node)), \
                    socket.create_connection((action.host or host, int(port)), timeout=timeout) as sock:
                if probe.http_get is None:
                    return True
                sock.settimeout(timeout)
                sock.sendall(f"GET {action.path or '/'} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                line = sock.recv(256).split(b"\r\n", 1)[0].split()
                return len(line) >= 2 and line[1].isdigit() and 200 <= int(line[1]) < 400
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _reap(self) -> None:
        while not self.stopping.wait(0.1):
            with self.lock:
                pods = list(self.pods.values())
            for pod in pods:
                process = pod.process
                if process is None or pod.deleting or pod.reported in ("Succeeded", "Failed", "dropped"):
                    continue
                code = process.poll()
                if code is None:
                    continue
                code = 128 - code if code < 0 else code
                if self._restart_later(pod, code):
                    continue
                if code == 0:
                    self._status(pod, "Succeeded", exit_code=0)
                else:
                    self._status(pod, "Failed", exit_code=code)
                self._release(pod)

    def _restart_later(self, pod: RunningPod, code: int) -> bool:
        """Honour the pod's restartPolicy: report CrashLoopBackOff and start it again after the back-off."""
        try:
            source = self.core.read_namespaced_pod(pod.name, pod.namespace)
        except kubernetes.client.ApiException:
            return False
        restarts = self.restart_counts.get(pod.uid, 0)
        delay = restart_delay(source.spec.restart_policy, code, restarts, base=self.restart_backoff[0],
                              cap=self.restart_backoff[1])
        if delay is None:
            return False
        pod.reported = "BackOff"  # the reaper skips it until the restart
        pod.process = None
        now = _now().isoformat()
        status = {"phase": "Running", "containerStatuses": [{
            "name": "main", "ready": False, "started": False, "restartCount": restarts, "image": "portolan",
            "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": f"back-off {delay:g}s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                         "finishedAt": now}}}]}
        self.last_states[pod.uid] = status["containerStatuses"][0]["lastState"]
        if pod.node not in self.dropped:
            with contextlib.suppress(kubernetes.client.ApiException):
                self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})

        def restart() -> None:
            if self.stopping.wait(delay):
                return
            with self.lock:
                current = self.pods.get(pod.uid)
            if current is not pod or pod.deleting:
                return  # deleted during the back-off
            self.restart_counts[pod.uid] = restarts + 1
            self._run_or_fail(source, sandbox=pod)  # the API server refuses a pod IP that changes

        thread = threading.Thread(target=restart, daemon=True, name=f"restart-{pod.name}")
        thread.start()
        return True

    def _terminate(self, pod: RunningPod, grace: float) -> None:
        process = pod.process
        if process is None or process.poll() is not None:
            return
        self._signal(pod, signal.SIGTERM)
        try:
            process.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            self._signal(pod, signal.SIGKILL)
            process.wait()

    def _delete(self, pod: RunningPod, grace: float) -> None:
        self._terminate(pod, grace)
        self._release(pod)
        self._final_delete(pod.namespace, pod.name, pod.uid)
        with self.lock:
            self.pods.pop(pod.uid, None)

    def _final_delete(self, namespace: str, name: str, uid: str) -> None:
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        with contextlib.suppress(kubernetes.client.ApiException):
            self.core.delete_namespaced_pod(name, namespace, body=body)

    def kill_pod(self, namespace: str, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a pod's process, as if it crashed; the pod is then reported Failed."""
        with self.lock:
            pods = [p for p in self.pods.values() if (p.namespace, p.name) == (namespace, name)]
        for pod in pods:
            if pod.process is not None and pod.process.poll() is None:
                self._signal(pod, sig)

    def wait_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                busy = [p for p in self.pods.values() if p.process is not None and p.process.poll() is None]
            if not busy:
                return
            time.sleep(0.1)


KUBE_PROXY = pathlib.Path(__file__).resolve().parents[2] / "tools" / "k8s" / "bin" / "kube-proxy"


def _close_listener(listener: socket.socket) -> None:
    """Close a listening socket and wake the thread blocked in accept() on it."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
