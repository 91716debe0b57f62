"""The image, without a Docker engine: its install steps in a fresh venv, then its entrypoint."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_dockerfile_is_multi_stage_non_root_and_uses_the_shared_install_steps() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    assert "USER 65532:65532" in text and 'ENTRYPOINT ["portolan"]' in text
    assert "RUN image-install /opt/portolan /src" in text
    assert "COPY tools/image-install.sh /usr/local/bin/image-install" in text


def test_every_runtime_dependency_is_pinned_in_the_lock() -> None:
    pins = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)
    names = {line.split("==")[0].lower().replace("_", "-") for line in pins}
    for needed in ("pydantic", "kopf", "kubernetes", "prometheus-client", "pyyaml", "rich"):
        assert needed in names


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    prefix = tmp_path_factory.mktemp("image") / "opt-portolan"
    subprocess.run([str(ROOT / "tools/image-install.sh"), str(prefix), str(ROOT)], check=True, timeout=900,
                   capture_output=True)
    return prefix


def test_the_image_entrypoint_runs_every_command(image_venv: pathlib.Path) -> None:
    portolan = str(image_venv / "bin/portolan")
    env = {"PATH": f"{image_venv / 'bin'}:/usr/bin:/bin", "HOME": "/nonexistent"}
    assert subprocess.run([portolan, "--version"], capture_output=True, text=True, env=env).stdout.strip() == "portolan 0.1.0"
    for command in ("scan", "operator", "shard"):
        assert subprocess.run([portolan, command, "--help"], capture_output=True, env=env).returncode == 0
    crds = subprocess.run([portolan, "crd"], capture_output=True, text=True, env=env)
    assert "kind: CustomResourceDefinition" in crds.stdout
    shard = subprocess.run([portolan, "shard"], capture_output=True, text=True, env=env)
    assert shard.returncode == 2 and "shard environment incomplete" in shard.stderr


@pytest.mark.lab
def test_the_image_entrypoint_scans_loopback_in_a_fresh_namespace(image_venv: pathlib.Path, fresh_netns: str) -> None:
    env = dict(os.environ, PATH=f"{image_venv / 'bin'}:/usr/bin:/bin")
    done = subprocess.run(["ip", "netns", "exec", fresh_netns, str(image_venv / "bin/portolan"), "scan", "127.0.0.1",
                           "-p", "1-1024", "-o", "json", "--no-service"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"closed": 1024' in done.stdout
