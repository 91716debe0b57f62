"""The shard's standard-library REST client against the real API server, beside the official client."""

from __future__ import annotations

import json
import pathlib
import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from harness import clusters
from portolan import errors
from portolan.kube import clients, rest

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def job(control_plane: clusters.ControlPlane) -> Iterator[tuple[str, str]]:
    control_plane.kubectl("apply", "-f", str(ROOT / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "crd/scanjobs.portolan.dev", "--timeout=30s")
    name = f"rest-{uuid.uuid4().hex[:6]}"
    manifest = {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": name, "namespace": "default"},
                "spec": {"targets": {"addresses": ["198.18.0.10"]}, "ports": "22", "suspend": True}}
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    yield "default", name
    control_plane.kubectl("delete", "scanjob", name, "-n", "default", "--ignore-not-found")


@pytest.fixture
def both(control_plane: clusters.ControlPlane) -> Iterator[tuple[rest.Rest, clients.Kube]]:
    """Ours from the admin kubeconfig (a client certificate), and the official client from the same file."""
    ours = rest.from_environment({"KUBECONFIG": str(control_plane.admin_kubeconfig)}, account=pathlib.Path("/nonexistent"))
    assert ours is not None
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.admin_kubeconfig))
    try:
        yield ours, clients.Kube(api)
    finally:
        ours.close()
        api.close()


def test_a_kubeconfig_with_a_client_certificate_reads_the_same_job_as_the_official_client(
    both: tuple[rest.Rest, clients.Kube], job: tuple[str, str]
) -> None:
    ours, theirs = (client.get_job(*job) for client in both)
    assert ours == theirs and ours["metadata"]["name"] == job[1]


def test_a_merge_patch_of_a_scanshards_status_changes_only_the_keys_given(
    both: tuple[rest.Rest, clients.Kube], job: tuple[str, str], control_plane: clusters.ControlPlane
) -> None:
    ours, official = both
    namespace, name = job
    control_plane.kubectl("wait", "--for=condition=Established", "crd/scanshards.portolan.dev", "--timeout=30s")
    shard = {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanShard",
             "metadata": {"name": f"{name}-s0", "namespace": namespace, "labels": {"portolan.dev/job": name}},
             "spec": {"id": "s0", "pool": "default", "index": 0, "targets": ["198.18.0.10"], "ports": "22", "probes": 1}}
    official.create_scan_shard(shard)
    ours.patch_scan_shard_status(namespace, f"{name}-s0", {"attempt": 1, "phase": "Running"})
    ours.patch_scan_shard_status(namespace, f"{name}-s0", {"done": 1, "states": {"closed": 1}})
    status = official.get_scan_shard(namespace, f"{name}-s0")["status"]
    assert (status["attempt"], status["phase"], status["done"], status["states"]) == (1, "Running", 1, {"closed": 1})
    assert ours.get_scan_shard(namespace, f"{name}-s0") == official.get_scan_shard(namespace, f"{name}-s0")
    assert [o["spec"]["id"] for o in official.list_scan_shards(namespace, name)] == ["s0"]


def test_the_api_server_keeps_shard_entries_out_of_the_scanjob_so_it_stays_small(
    both: tuple[rest.Rest, clients.Kube], job: tuple[str, str]
) -> None:
    ours, official = both
    ours.patch_job_status(*job, {"shardCount": 1, "shards": {"s0": {"attempt": 1}}, "plan": [{"id": "s0"}]})
    status = official.get_job(*job)["status"]
    assert status["shardCount"] == 1 and "shards" not in status and "plan" not in status  # pruned: not in the schema


def test_api_errors_become_the_same_kube_errors_as_the_official_clients(
    both: tuple[rest.Rest, clients.Kube], job: tuple[str, str]
) -> None:
    caught = []
    for each in both:
        with pytest.raises(errors.KubeError) as raised:
            each.get_job("default", "no-such-job")
        caught.append((str(raised.value), raised.value.status))
    assert caught[0] == caught[1] and caught[0][1] == 404


def test_a_service_account_token_file_is_used_and_a_forbidden_call_says_403(
    control_plane: clusters.ControlPlane, job: tuple[str, str], tmp_path: pathlib.Path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "rest-probe", "-n", "default")
    token = control_plane.kubectl("create", "token", "rest-probe", "-n", "default").stdout.strip()
    (tmp_path / "token").write_text(token)
    (tmp_path / "ca.crt").write_bytes(control_plane.pki.ca.cert.read_bytes())
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(control_plane.api_port)}
    client = rest.from_environment(env, account=tmp_path)
    assert client is not None
    try:
        with pytest.raises(errors.KubeError) as raised:  # a new account may not read ScanJobs
            client.get_job(*job)
    finally:
        client.close()
    assert raised.value.status == 403


def test_an_unreachable_server_is_a_kube_error_that_says_so(tmp_path: pathlib.Path) -> None:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{clusters.free_port()}",
                                                     "insecure-skip-tls-verify": True}}],
              "users": [{"name": "u", "user": {"token": "x"}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    (tmp_path / "config").write_text(json.dumps(config))
    client = rest.from_environment({"KUBECONFIG": str(tmp_path / "config")}, account=tmp_path / "none")
    assert client is not None
    with pytest.raises(errors.KubeError, match="the API server cannot be reached"):
        client.get_job("default", "anything")
    client.close()


def test_a_kubeconfig_with_an_exec_plugin_is_left_to_the_official_client(tmp_path: pathlib.Path) -> None:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
              "users": [{"name": "u", "user": {"exec": {"command": "get-token"}}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    (tmp_path / "config").write_text(json.dumps(config))
    assert rest.from_environment({"KUBECONFIG": str(tmp_path / "config")}, account=tmp_path / "none") is None
