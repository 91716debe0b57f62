"""The image itself: the Dockerfile built by buildah, then run by runc as a restricted pod would run it.

The build (tools/image/build.sh) is cached by content hash; a changed Dockerfile, lock or source
rebuilds it (about 1.5 minutes, the base included). Every container here gets its own network
namespace with loopback only, so all traffic stays inside it.
"""

from __future__ import annotations

import json
import pathlib
import re
import time
from typing import Any

import pytest

from harness import oci

ROOT = pathlib.Path(__file__).resolve().parents[2]
PORT = 443  # below 1024: uid 65532 binds it only through the per-namespace sysctl, as Kubernetes allows
LOW_PORTS = {"net.ipv4.ip_unprivileged_port_start": "0"}
# A listener inside the container, then the command: both share the container's loopback.
LISTEN = ("python3 -c 'import socket, time; s = socket.socket(); s.bind((\"127.0.0.1\", {port})); s.listen(); "
          "open(\"/tmp/ready\", \"w\").close(); time.sleep(60)' & "
          "i=0; while [ ! -e /tmp/ready ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exec {command}")
# An HTTP request captured from a real exchange (the same frame tests/capture uses).
FRAME = (bytes(12) + b"\x08\x00" + bytes.fromhex("4500003c1c4640004006b1e6c6120001c612000a")
         + bytes.fromhex("d4310050a0b1c2d30000000050180200000000") + b"\x00" + b"GET / HTTP/1.1\r\n")


@pytest.fixture(scope="module")
def image() -> oci.Image:
    return oci.built_image()


def _with_listener(command: str) -> list[str]:
    return ["/bin/sh", "-c", LISTEN.format(port=PORT, command=command)]


def _report(stdout: str) -> dict[str, Any]:
    return json.loads(stdout)  # type: ignore[no-any-return]


def test_the_dockerfile_is_multi_stage_from_debian_slim_and_runs_as_uid_65532() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["debian:bookworm-slim", "debian:bookworm-slim"]
    assert "USER 65532:65532" in text and 'ENTRYPOINT ["portolan"]' in text


def test_every_runtime_dependency_is_pinned_in_the_lock() -> None:
    pins = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)
    names = {line.split("==")[0].lower().replace("_", "-") for line in pins}
    for needed in ("pydantic", "kopf", "kubernetes", "prometheus-client", "pyyaml", "rich"):
        assert needed in names


def test_the_built_image_holds_python_and_libpcap_but_no_compiler_and_its_size_is_in_the_readme(image: oci.Image) -> None:
    config = image.config
    assert config["User"] == "65532:65532" and config["Entrypoint"] == ["portolan"]
    root = image.rootfs
    assert (root / "usr/bin/python3").exists() and (root / "opt/portolan/bin/portolan").exists()
    assert list((root / "usr/lib/x86_64-linux-gnu").glob("libpcap.so.*"))
    for compiler in ("gcc", "cc", "c++", "clang", "ld", "make"):
        assert not (root / "usr/bin" / compiler).exists(), compiler
    uncompressed, compressed = image.size
    readme = (ROOT / "README.md").read_text()
    stated = re.search(r"image is (\d+) MB compressed \((\d+) MB unpacked\)", readme)
    assert stated is not None, "README states the image size"
    assert abs(int(stated[1]) - compressed / 1e6) <= 0.1 * compressed / 1e6, (stated[0], compressed)
    assert abs(int(stated[2]) - uncompressed / 1e6) <= 0.1 * uncompressed / 1e6, (stated[0], uncompressed)


def test_as_uid_65532_the_root_is_read_only_and_no_capability_is_held(image: oci.Image) -> None:
    done = image.run(["/bin/sh", "-c", "id -u; grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status; touch /opt/x"])
    lines = done.stdout.split()
    assert lines[0] == "65532"
    assert [lines[i] for i in (2, 4, 6)] == ["0000000000000000"] * 3
    assert done.returncode != 0 and "Read-only file system" in done.stderr


def test_as_uid_65532_a_loopback_scan_finds_the_listener_started_in_the_same_container(image: oci.Image) -> None:
    done = image.run(_with_listener("portolan scan 127.0.0.1 -p 1-1024 -o json --no-service -q"), sysctl=LOW_PORTS)
    assert done.returncode == 0, done.stderr
    report = _report(done.stdout)
    assert [(p["port"], p["state"], p["reason"]) for p in report["hosts"][0]["ports"]] == [(PORT, "open", "syn-ack")]
    assert report["summary"]["states"] == {"open": 1, "closed": 1023}


def test_the_mount_point_of_a_shard_pods_evidence_claim_is_a_directory_in_the_image(image: oci.Image) -> None:
    from portolan.kube import builders

    # Resolved inside the image (Debian's /var/run is a link to /run), never through this
    # machine's own directories: a read-only root needs the mount point made at build time.
    assert image.inside(pathlib.PurePosixPath(builders.CAPTURE_MOUNT)).is_dir()
    assert image.inside(pathlib.PurePosixPath("/var/run")) == image.rootfs / "run"


def test_as_uid_65532_capture_reads_a_mounted_pcapng(image: oci.Image, tmp_path: pathlib.Path) -> None:
    from portolan.capture import pcapfiles

    writer = pcapfiles.RotatingWriter(tmp_path / "http", fmt="pcapng", clock=time.monotonic)
    writer.write(pcapfiles.Record(1_795_000_000_123_456_789, FRAME, len(FRAME)))
    writer.close()
    tmp_path.chmod(0o755)  # readable by uid 65532, like a ConfigMap or volume mounted into a pod
    writer.files[0].chmod(0o644)
    done = image.run(image.entrypoint("capture", "-r", "/tmp/captures/http-0001.pcapng"),
                     mounts=(oci.Mount(tmp_path, "/tmp/captures"),))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1795000000.123457 eth/ipv4/tcp 198.18.0.1:54321 > 198.18.0.10:80 http GET / HTTP/1.1"


def test_operator_help_works_and_shard_without_its_environment_fails_with_a_clear_message(image: oci.Image) -> None:
    helped = image.run(image.entrypoint("operator", "--help"))
    assert helped.returncode == 0 and "--standalone" in helped.stdout, helped.stderr
    shard = image.run(image.entrypoint("shard"))
    assert shard.returncode == 2
    message = shard.stderr.strip()
    assert "\n" not in message and "shard environment" in message and "PORTOLAN_JOB_NAMESPACE" in message


def test_without_net_raw_a_syn_scan_falls_back_to_connect_and_says_so(image: oci.Image) -> None:
    done = image.run(_with_listener("portolan scan --syn 127.0.0.1 -p 1-1024 -o json --no-service -q"), sysctl=LOW_PORTS)
    assert done.returncode == 0, done.stderr
    report = _report(done.stdout)
    assert report["summary"]["states"] == {"open": 1, "closed": 1023}
    assert [note["code"] for note in report["notes"]] == ["SynUnavailable"]
    assert "needs CAP_NET_RAW; used TCP connect" in report["notes"][0]["message"]


def test_with_net_raw_a_syn_scan_finds_the_listener_and_records_its_packets(image: oci.Image, tmp_path: pathlib.Path) -> None:
    from portolan.capture import decoding, pcapfiles

    evidence = tmp_path / "evidence"
    evidence.mkdir()
    # As the shard pods of a syn job run: root, with NET_RAW as the only capability.
    done = image.run(_with_listener("portolan scan --syn 127.0.0.1 -p 1-1024 -o json --no-service -q --capture-dir /tmp/evidence"),
                     user=(0, 0), capabilities=("NET_RAW",), sysctl=LOW_PORTS,
                     mounts=(oci.Mount(evidence, "/tmp/evidence", writable=True),))
    assert done.returncode == 0, done.stderr
    report = _report(done.stdout)
    assert [(p["port"], p["state"], p["reason"]) for p in report["hosts"][0]["ports"]] == [(PORT, "open", "syn-ack")]
    assert report["hosts"][0]["extraports"] == [{"protocol": "tcp", "state": "closed", "reason": "reset", "count": 1023}]
    files = sorted(evidence.glob("*.pcapng"))
    assert len(files) == 1 and f"in /tmp/evidence/{files[0].name}" in done.stderr
    seen = [decoding.decode_ethernet(r.data) for r in pcapfiles.read(files[0])]
    probed = {d.dport for d in seen if d.transport == "tcp" and d.destination == "127.0.0.1" and d.dport <= 1024}
    assert probed == set(range(1, 1025))
