"""The API server itself refuses malformed ScanJobs at ``kubectl apply`` (the CRDs' CEL rules).

Only what needs no cluster state is checked there; the operator's checks
(``Accepted=False`` with an Event, in test_operator.py) remain the second line.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from harness import clusters

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "admission"


@pytest.fixture(scope="module")
def plane(control_plane: clusters.ControlPlane) -> clusters.ControlPlane:
    control_plane.kubectl("apply", "-f", str(ROOT / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "crd/scanjobs.portolan.dev",
                          "crd/scanschedules.portolan.dev", "--timeout=30s")
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    return control_plane


def _apply(plane: clusters.ControlPlane, name: str, spec: dict[str, Any], kind: str = "ScanJob") -> tuple[int, str]:
    body = {"apiVersion": "portolan.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec}
    done = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(body), check=False)
    return done.returncode, done.stdout + done.stderr


def _job(addresses: list[str], ports: str = "22", **extra: Any) -> dict[str, Any]:
    return {"targets": {"addresses": addresses}, "ports": ports, **extra}


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (_job(["198.18.0.1"], "70000"), "spec.ports", 'port expression "70000": every comma-separated item'),
        (_job(["198.18.0.1"], "22,,23"), "spec.ports", "a port 0-65535, a range first-last"),
        (_job(["198.18.0.1"], "webs"), "spec.ports", "or a named set (all, common,"),
        (_job(["198.18.0.1"], "22", udpPorts="53-65536"), "spec.udpPorts", 'port expression "53-65536"'),
        (_job(["198.18.0.1"], "22", expect={"allowedOpenPorts": "22,99999"}), "spec.expect.allowedOpenPorts",
         'port expression "22,99999"'),
        (_job(["198.18.0.300"]), "spec.targets.addresses[0]", 'target "198.18.0.300" is not an IP address, a CIDR'),
        (_job(["198.18.0.1", "198.18.0.0/33"]), "spec.targets.addresses[1]", 'target "198.18.0.0/33" is not'),
        (_job(["198.18.0.1-300"]), "spec.targets.addresses[0]", 'target "198.18.0.1-300" is not'),
        (_job(["198.18.0.1-fd00::1"]), "spec.targets.addresses[0]", "a range (198.18.0.1-198.18.0.9 or 198.18.0.1-9)"),
        (_job(["bad..name"]), "spec.targets.addresses[0]", "or a hostname"),
        ({"targets": {"addresses": ["198.18.0.1"], "exclude": ["1.2.3"]}}, "spec.targets.exclude[0]", 'target "1.2.3"'),
    ],
)
def test_kubectl_apply_of_a_malformed_scanjob_fails_and_names_the_field_and_value(
        plane: clusters.ControlPlane, spec: dict[str, Any], field: str, message: str) -> None:
    code, output = _apply(plane, "bad", spec)
    assert code != 0
    assert "is invalid" in output and field in output and message in output, output


def test_a_scanschedule_template_is_checked_by_the_same_rules(plane: clusters.ControlPlane) -> None:
    spec = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": _job(["198.18.0.1"], "70000")}}
    code, output = _apply(plane, "bad-schedule", spec, kind="ScanSchedule")
    assert code != 0 and "spec.jobTemplate.spec.ports" in output and 'port expression "70000"' in output, output


def test_every_target_and_port_form_the_engine_accepts_passes_the_api_server(plane: clusters.ControlPlane) -> None:
    spec = _job(
        ["198.18.0.1", " 198.18.0.2", "198.18.0.5/24", "198.18.0.0/16", "198.18.0.1-9", "198.18.0.1-198.18.0.9",
         "fd00::1", "[fd00::1]", "fd00::/64", "fd00::1-fd00::9", "db.example-1.internal", "host_a.", "dead-beef"],
        "22, 80-90,-100,1000-, web,well-known,00022,0,65535,all,common,databases,kubernetes,mail,remote",
        udpPorts="53,161-162", expect={"allowedOpenPorts": ""},
    )
    code, output = _apply(plane, "good", spec)
    assert code == 0, output
    assert "created (server dry run)" in output
