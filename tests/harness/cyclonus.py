"""cyclonus, the outside judge of NetworkPolicy semantics: ask it whether traffic is allowed.

Runs ``cyclonus analyze --mode query-traffic`` (built with the control plane into
tools/k8s/bin) on a folder of policies, one per file with ``policyTypes`` filled
in (cyclonus reads only the first document of a file and refuses policies
without it), and a list of traffic objects; parses the ``IS ALLOWED?`` answer of
each.  Test code only: it shares nothing with the product's evaluator.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

BINARY = pathlib.Path(__file__).resolve().parents[2] / "tools" / "k8s" / "bin" / "cyclonus"
_ANSWER = re.compile(r"\|\s*IS ALLOWED\?\s*\|\s*(TRUE|FALSE)\s*\|")


@dataclasses.dataclass(frozen=True)
class Peer:
    """A pod (namespace, its labels, its pod's labels) or an address outside the cluster."""

    ip: str
    namespace: str | None = None
    namespace_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    pod_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        internal = None if self.namespace is None else {
            "PodLabels": dict(self.pod_labels), "NamespaceLabels": dict(self.namespace_labels),
            "Namespace": self.namespace}
        return {"Internal": internal, "IP": self.ip}


@dataclasses.dataclass(frozen=True)
class Traffic:
    source: Peer
    destination: Peer
    port: int
    protocol: str = "TCP"
    port_name: str = ""  # the destination's name for this port, if it declares one


def available() -> bool:
    return BINARY.exists()


def allowed(policies: Sequence[Mapping[str, Any]], traffic: Sequence[Traffic]) -> list[bool]:
    """cyclonus's verdict for each traffic, in order."""
    with tempfile.TemporaryDirectory(prefix="portolan-cyclonus-") as folder:
        root = pathlib.Path(folder)
        (root / "policies").mkdir()
        for index, policy in enumerate(policies):
            body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **policy}
            (root / "policies" / f"{index:03d}.yaml").write_text(yaml.safe_dump(body))
        (root / "traffic.json").write_text(json.dumps([
            {"Source": t.source.as_json(), "Destination": t.destination.as_json(), "Protocol": t.protocol,
             "ResolvedPort": t.port, "ResolvedPortName": t.port_name} for t in traffic]))
        done = subprocess.run([str(BINARY), "analyze", "--mode", "query-traffic", "--policy-path",
                               str(root / "policies"), "--traffic-path", str(root / "traffic.json")],
                              capture_output=True, text=True, timeout=120, check=True)
    answers = [match.group(1) == "TRUE" for match in _ANSWER.finditer(done.stdout)]
    if len(answers) != len(traffic):
        raise AssertionError(f"cyclonus answered {len(answers)} of {len(traffic)} queries:\n{done.stdout[-2000:]}")
    return answers
