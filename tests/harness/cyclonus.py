"""cyclonus, the outside judge of NetworkPolicy semantics: ask it whether traffic is allowed.

Two ways, both ``cyclonus analyze`` (built with the control plane into tools/k8s/bin)
on a folder of policies, one per file with ``policyTypes`` filled in (cyclonus
reads only the first document of a file and refuses policies without it):

* :func:`probe_matrix`: ``--mode probe`` on a model file (namespaces, pods with
  their containers' ports, the probes to run); parses the printed "Combined"
  truth table of each probe into ``{(source, destination, port, protocol): bool}``,
  pods named ``namespace/name``.  Pods only: the probe mode knows no addresses
  outside the cluster.  A cell cyclonus cannot decide (``N``: the destination
  declares no container on that port; ``P``: an unresolvable named port) is an
  error, so a model must declare every probed port on every pod.
* :func:`allowed`: ``--mode query-traffic`` on a list of traffic objects, which
  may name addresses outside the cluster; parses the ``IS ALLOWED?`` answer of each.

Test code only: it shares nothing with the product's evaluator.
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
_CELL = {".": True, "X": False}
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


Cell = tuple[str, str, int, str]  # (source namespace/name, destination namespace/name, port, protocol)


def _tables(text: str, title: str) -> list[list[list[str]]]:
    """Every table printed under ``title:``, as rows of cells (header row included), in order."""
    tables: list[list[list[str]]] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != f"{title}:":
            continue
        rows: list[list[str]] = []
        for row in lines[index + 1:]:
            if row.startswith("+"):
                continue
            if not row.startswith("|"):
                break
            rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
        tables.append(rows)
    return tables


def probe_matrix(policies: pathlib.Path, model: pathlib.Path) -> dict[Cell, bool]:
    """cyclonus's expected reachability for every (source pod, destination pod, probe) of the model."""
    probes = json.loads(model.read_text())["Probes"]
    done = subprocess.run([str(BINARY), "analyze", "--mode", "probe", "--policy-path", str(policies),
                           "--probe-path", str(model)], capture_output=True, text=True, timeout=120, check=True)
    tables = _tables(done.stdout, "Combined")
    if len(tables) < len(probes):
        raise AssertionError(f"cyclonus printed {len(tables)} tables for {len(probes)} probes:\n{done.stdout[-2000:]}")
    matrix: dict[Cell, bool] = {}
    for probe, table in zip(probes, tables, strict=False):  # a last table follows for the (absent) live pods
        port, protocol = int(probe["Port"]), str(probe["Protocol"]).upper()
        sources = [row[0] for row in table[1:]]  # the header repeats them, upper-cased: the rows keep their case
        for row in table[1:]:
            if len(row) != len(sources) + 1:
                raise AssertionError(f"cyclonus row {row} does not have {len(sources)} columns")
            for destination, cell in zip(sources, row[1:], strict=True):
                if cell not in _CELL:
                    raise AssertionError(f"cyclonus could not decide {row[0]} -> {destination} {port}/{protocol}: {cell}")
                matrix[(row[0], destination, port, protocol)] = _CELL[cell]
    return matrix
