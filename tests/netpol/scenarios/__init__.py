"""NetworkPolicy scenarios, as data: one folder each under this package.

Each folder ``<name>/`` holds

* ``model.json``: namespaces (with their labels, ``kubernetes.io/metadata.name``
  included) and pods (namespace, name, labels, IP, one container per probed port
  with its name and protocol), plus the ``Probes`` (port, protocol) to evaluate,
  in the format ``cyclonus analyze --mode probe --probe-path`` reads; and
  ``External``: addresses outside the cluster (cyclonus ignores the key);
* ``policies/*.yaml``: one NetworkPolicy per file, as the API server returns it
  (``policyTypes``, ``podSelector`` and each port's ``protocol`` filled in),
  because cyclonus reads only a file's first document and refuses a policy
  without ``policyTypes``.

Written from the API's documented semantics and the kinds of cases cyclonus's
generator and the upstream e2e suite exercise, in our own words.  They are
judged by cyclonus, evaluated by Portolan, and enforced by the test bed.  The
``ipBlock`` scenarios name the model's pod IPs (198.18.200.0/22): a bed that
gives pods other addresses must map them.  This loader is test code and shares
nothing with the product's evaluator.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: dict[str, str]
    ip: str
    ports: tuple[tuple[str, int, str], ...]  # (name, or '' when unnamed; port; protocol)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    folder: pathlib.Path
    policies: list[dict[str, Any]]
    namespaces: dict[str, dict[str, str]]
    pods: list[Pod]
    external: list[str]
    probes: list[tuple[int, str]]  # (port, protocol)

    @property
    def policy_folder(self) -> pathlib.Path:
        return self.folder / "policies"

    @property
    def model_file(self) -> pathlib.Path:
        return self.folder / "model.json"


def names() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if (p / "model.json").is_file())


def load(name: str) -> Scenario:
    folder = ROOT / name
    model = json.loads((folder / "model.json").read_text())
    resources = model["Resources"]
    pods = [Pod(p["Namespace"], p["Name"], dict(p.get("Labels") or {}), p["IP"],
                tuple((c.get("PortName") or "", int(c["Port"]), c["Protocol"]) for c in p["Containers"]))
            for p in resources["Pods"]]
    policies = [yaml.safe_load(path.read_text()) for path in sorted((folder / "policies").glob("*.yaml"))]
    return Scenario(name, folder, policies, {ns: dict(labels) for ns, labels in resources["Namespaces"].items()},
                    pods, list(model.get("External") or []),
                    [(int(p["Port"]), str(p["Protocol"]).upper()) for p in model["Probes"]])


def port_name(pod: Pod | None, port: int, protocol: str) -> str:
    """The destination's name for a port it declares ('' otherwise)."""
    if pod is None:
        return ""
    return next((name for name, number, proto in pod.ports if number == port and proto == protocol), "")
