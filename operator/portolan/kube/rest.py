"""A minimal Kubernetes REST client for shard pods: read the ScanJob, merge-patch its status.

A shard makes two kinds of calls (GET its ScanJob, JSON-merge-PATCH the
status subresource), so loading the official client (~0.2 s of imports, more
than the scan of a small shard) is not worth it there.  :class:`Rest` speaks
HTTPS with the standard library (``http.client``, ``ssl``) and satisfies
:class:`ShardClient`, the part of :class:`portolan.kube.clients.Client` a
shard uses; errors are mapped to :class:`~portolan.errors.KubeError` with the
same messages and statuses as the official client's seam
(:func:`portolan.kube.clients._mapped`).

Configuration, as the official client finds it: the pod's service account
(``KUBERNETES_SERVICE_HOST``/``PORT`` and the token and CA under
:data:`SERVICE_ACCOUNT`), else the current context of ``$KUBECONFIG`` (or
``~/.kube/config``) when it uses a server CA, a token (inline or a file) or a
client certificate (files or inline data).  Anything else (exec plugins,
auth providers, proxies) returns ``None`` from :func:`from_environment`, and
the caller falls back to the official client.  Limits: one keep-alive
connection, requests serialised by a lock, one reconnect per request.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import tempfile
import threading
import typing
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

from portolan import errors
from portolan.models import kinds

if typing.TYPE_CHECKING:
    import http.client
    import ssl

SERVICE_ACCOUNT = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ShardClient(Protocol):
    """What a shard needs of the API server (a part of :class:`portolan.kube.clients.Client`)."""

    def get_job(self, namespace: str, name: str) -> dict[str, Any]: ...
    def get_scan_shard(self, namespace: str, name: str) -> dict[str, Any]: ...
    def patch_scan_shard_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...


class Rest:
    """HTTPS to one API server with a bearer token (re-read from its file) or a client certificate."""

    def __init__(self, server: str, context: ssl.SSLContext, *, token: str | None = None,
                 token_file: pathlib.Path | None = None, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(server)
        if parts.scheme != "https" or not parts.hostname:
            raise errors.KubeError(f"no usable Kubernetes configuration: server {server!r} is not https://host")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.prefix = parts.path.rstrip("/")
        self.context = context
        self.token = token
        self.token_file = token_file
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connection: http.client.HTTPSConnection | None = None

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "portolan-shard"}
        token = self.token
        if self.token_file is not None:
            token = self.token_file.read_text().strip()  # projected tokens rotate: read every time
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _request(self, what: str, method: str, path: str, body: Mapping[str, Any] | None = None,
                 content_type: str | None = None) -> dict[str, Any]:
        import http.client

        payload = None if body is None else json.dumps(body).encode()
        with self._lock:
            for attempt in (0, 1):
                if self._connection is None:
                    self._connection = http.client.HTTPSConnection(
                        self.host, self.port, context=self.context, timeout=self.timeout)
                try:
                    self._connection.request(method, self.prefix + path, body=payload,
                                             headers=self._headers(content_type))
                    response = self._connection.getresponse()
                    data = response.read()
                except (http.client.HTTPException, OSError) as exc:
                    self._connection.close()
                    self._connection = None
                    if attempt == 0 and isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                                         BrokenPipeError)):
                        continue  # a keep-alive connection the server had closed: once more, fresh
                    raise errors.KubeError(
                        f"{what}: the API server cannot be reached ({exc.__class__.__name__})") from exc
                if response.status >= 400:
                    raise errors.KubeError(f"{what}: {response.status} {response.reason}", response.status)
                try:
                    decoded: dict[str, Any] = json.loads(data) if data else {}
                except ValueError as exc:
                    raise errors.KubeError(f"{what}: the API server sent no JSON") from exc
                return decoded
        raise AssertionError("unreachable")  # pragma: no cover

    def _job_path(self, namespace: str, name: str) -> str:
        quote = urllib.parse.quote
        return (f"/apis/{kinds.API_GROUP}/{kinds.API_VERSION}/namespaces/{quote(namespace, safe='')}/"
                f"{kinds.SCANJOBS}/{quote(name, safe='')}")

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        return self._request(f"reading {kinds.SCANJOB} {namespace}/{name}", "GET", self._job_path(namespace, name))

    def _shard_path(self, namespace: str, name: str) -> str:
        quote = urllib.parse.quote
        return (f"/apis/{kinds.API_GROUP}/{kinds.API_VERSION}/namespaces/{quote(namespace, safe='')}/"
                f"{kinds.SCANSHARDS}/{quote(name, safe='')}")

    def get_scan_shard(self, namespace: str, name: str) -> dict[str, Any]:
        return self._request(f"reading {kinds.SCANSHARD} {namespace}/{name}", "GET",
                             self._shard_path(namespace, name))

    def patch_scan_shard_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of a ScanShard's status subresource: what a shard pod writes."""
        self._request(f"patching {kinds.SCANSHARD} {namespace}/{name} status", "PATCH",
                      self._shard_path(namespace, name) + "/status", {"status": status},
                      content_type="application/merge-patch+json")

    def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of the status subresource: only the keys given change."""
        self._request(f"patching {kinds.SCANJOB} {namespace}/{name} status", "PATCH",
                      self._job_path(namespace, name) + "/status", {"status": status},
                      content_type="application/merge-patch+json")

    def patch_audit_status(self, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of a ReachabilityAudit's status (cluster-scoped): what a probe pod writes."""
        path = (f"/apis/{kinds.API_GROUP}/{kinds.API_VERSION}/{kinds.AUDITS}/"
                f"{urllib.parse.quote(name, safe='')}/status")
        self._request(f"patching {kinds.AUDIT} {name} status", "PATCH", path, {"status": status},
                      content_type="application/merge-patch+json")

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _context(ca_file: str | None = None, ca_data: bytes | None = None, insecure: bool = False) -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context(cafile=ca_file, cadata=ca_data.decode() if ca_data else None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _in_cluster(env: Mapping[str, str], account: pathlib.Path) -> Rest | None:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token = account / "token"
    if not host or not port or not token.is_file():
        return None
    host = f"[{host}]" if ":" in host else host
    return Rest(f"https://{host}:{port}", _context(str(account / "ca.crt")), token_file=token)


def _data_file(folder: pathlib.Path, name: str, data: str) -> str:
    path = folder / name
    path.write_bytes(base64.b64decode(data))
    return str(path)


def _from_kubeconfig(path: pathlib.Path) -> Rest | None:
    text = path.read_text()
    try:
        config = json.loads(text)
    except ValueError:
        import yaml  # a YAML kubeconfig: only then is YAML loaded

        try:
            config = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError) as exc:
            raise ValueError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(config, dict):
        return None

    def named(section: str, name: object) -> dict[str, Any]:
        for item in config.get(section) or []:
            if isinstance(item, dict) and item.get("name") == name:
                found = item.get(section[:-1])
                return found if isinstance(found, dict) else {}
        return {}

    context = named("contexts", config.get("current-context"))
    cluster, user = named("clusters", context.get("cluster")), named("users", context.get("user"))
    if not cluster.get("server") or set(user) - {"token", "tokenFile", "client-certificate", "client-key",
                                                   "client-certificate-data", "client-key-data"}:
        return None  # exec plugins, auth providers, passwords...: the official client's business
    if set(cluster) - {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify"}:
        return None  # proxies, TLS server names...
    base = path.parent

    def local(value: str) -> str:
        return str(base / value) if not os.path.isabs(value) else value

    ca = cluster.get("certificate-authority")
    ca_data = cluster.get("certificate-authority-data")
    ssl_context = _context(local(ca) if ca else None, base64.b64decode(ca_data) if ca_data else None,
                           bool(cluster.get("insecure-skip-tls-verify")))
    cert, key = user.get("client-certificate"), user.get("client-key")
    if user.get("client-certificate-data") or user.get("client-key-data"):
        folder = pathlib.Path(tempfile.mkdtemp(prefix="portolan-kube-"))
        cert = _data_file(folder, "client.crt", user.get("client-certificate-data", ""))
        key = _data_file(folder, "client.key", user.get("client-key-data", ""))
    if cert:
        ssl_context.load_cert_chain(local(cert), local(key) if key else None)
    token_file = user.get("tokenFile")
    return Rest(cluster["server"], ssl_context, token=user.get("token"),
                token_file=pathlib.Path(local(token_file)) if token_file else None)


def from_environment(env: Mapping[str, str] | None = None, account: pathlib.Path = SERVICE_ACCOUNT) -> Rest | None:
    """The pod's service account, else the kubeconfig's current context; None when only the official client can."""
    env = os.environ if env is None else env
    try:
        found = _in_cluster(env, account)
        if found is not None:
            return found
        path = pathlib.Path((env.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)[0]).expanduser()
        if not path.is_file():
            return None
        return _from_kubeconfig(path)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; a bad base64 a ValueError
        raise errors.KubeError(f"no usable Kubernetes configuration: {exc}") from exc
