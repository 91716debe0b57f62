"""``portolan audit evaluate``: the expected reachability of a model under a folder of NetworkPolicies, offline.

Like ``cyclonus analyze --mode probe``: no cluster, no probes — the policies
(YAML files, several documents each allowed; ``kind: NetworkPolicy`` documents
are taken, ``List``s unpacked) and a model of namespaces, pods and outside
addresses go in; a truth table per port comes out (``.`` allowed, ``x`` denied;
rows are sources, columns destinations), or JSON with the policy that decided
each pair.  The model file (YAML or JSON)::

    namespaces: {shop: {team: shop}, db: {team: db}}
    pods:
    - {namespace: shop, name: web, labels: {app: web}, ip: 198.18.200.10}
    - {namespace: db, name: pg, labels: {app: pg}, ip: 198.18.201.10,
       ports: [{name: pg, port: 5432, protocol: TCP}]}
    external: [192.0.2.10]
    ports: [{port: 5432}, {port: 53, protocol: UDP}]

The model cyclonus reads (``analyze --mode probe --probe-path``) is accepted too,
recognised by its ``Probes`` and ``Resources`` keys: ``Resources.Namespaces``
(labels), ``Resources.Pods`` (``Namespace``, ``Name``, ``Labels``, ``IP``,
``Containers`` with ``Port``, ``PortName``, ``Protocol``), ``Probes`` (``Port``,
``Protocol``), and Portolan's own ``External`` (addresses), which cyclonus
ignores.  The scenarios of tests/netpol are written that way.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any, TextIO

import pydantic

from portolan import errors
from portolan.cli import exits, rendering
from portolan.models import problems
from portolan.policies import checking, evaluating

MAX_FILE_BYTES = 4 << 20


class _Port(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: str | None = None
    port: int = pydantic.Field(ge=1, le=65535)
    protocol: str = pydantic.Field(default="TCP", pattern="^(TCP|UDP|SCTP)$")


class _Pod(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    namespace: str
    name: str
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    ip: str
    ports: list[_Port] = pydantic.Field(default_factory=list)


class Model(pydantic.BaseModel):
    """Namespaces (with labels), pods, addresses outside the cluster, and the ports to evaluate."""

    model_config = pydantic.ConfigDict(extra="forbid")

    namespaces: dict[str, dict[str, str]] = pydantic.Field(default_factory=dict)
    pods: list[_Pod] = pydantic.Field(min_length=1)
    external: list[str] = pydantic.Field(default_factory=list)
    ports: list[_Port] = pydantic.Field(min_length=1)


def _read(path: pathlib.Path) -> str:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise errors.SpecError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.SpecError(f"cannot read {path}: {exc}") from exc


def _documents(text: str, source: str) -> list[Any]:
    import yaml

    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (yaml.YAMLError, RecursionError) as exc:
        raise errors.SpecError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from exc


def load_policies(folder: pathlib.Path) -> list[dict[str, Any]]:
    """Every NetworkPolicy in the YAML/JSON files of ``folder`` (or the one file named)."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml", ".json")) if folder.is_dir() else [folder]
    if not files:
        raise errors.SpecError(f"{folder}: no .yaml, .yml or .json file")
    found: list[dict[str, Any]] = []
    for path in files:
        for doc in _documents(_read(path), str(path)):
            items = doc.get("items", []) if isinstance(doc, dict) and doc.get("kind", "").endswith("List") else [doc]
            for item in items:
                if isinstance(item, dict) and item.get("kind") == "NetworkPolicy":
                    meta = item.get("metadata") or {}
                    if not meta.get("namespace") or not meta.get("name"):
                        raise errors.SpecError(f"{path}: a NetworkPolicy needs metadata.name and metadata.namespace")
                    try:
                        checking.check(item)
                    except errors.SpecError as exc:
                        raise errors.SpecError(f"{path}: {exc}") from exc
                    found.append(item)
    return found


def _from_cyclonus(model: dict[str, Any]) -> dict[str, Any]:
    """cyclonus's probe model (Probes, Resources, and our External) in this command's own shape."""
    found = model.get("Resources")
    resources: dict[str, Any] = found if isinstance(found, dict) else {}
    unknown = set(model) - {"Description", "Probes", "Resources", "External"}
    if unknown:
        raise errors.SpecError(f"unknown keys in a cyclonus model: {', '.join(sorted(unknown))}")

    def port(entry: Any) -> Any:
        if not isinstance(entry, dict):
            return entry  # validation names it
        found = {"port": entry.get("Port"), "protocol": str(entry.get("Protocol") or "TCP").upper()}
        return {**found, "name": entry["PortName"]} if entry.get("PortName") else found

    def pod(entry: Any) -> Any:
        if not isinstance(entry, dict):
            return entry
        return {"namespace": entry.get("Namespace"), "name": entry.get("Name"), "labels": entry.get("Labels") or {},
                "ip": entry.get("IP"), "ports": [port(c) for c in entry.get("Containers") or []]}

    return {"namespaces": resources.get("Namespaces") or {}, "pods": [pod(p) for p in resources.get("Pods") or []],
            "external": model.get("External") or [], "ports": [port(p) for p in model.get("Probes") or []]}


def load_model(path: pathlib.Path) -> Model:
    """The model file, validated (this command's shape, or cyclonus's probe model)."""
    documents = _documents(_read(path), str(path))
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise errors.SpecError(f"{path}: a model is one mapping (namespaces, pods, external, ports)")
    document = documents[0]
    if "Probes" in document or "Resources" in document:
        document = _from_cyclonus(document)
    try:
        model = Model.model_validate(document)
    except pydantic.ValidationError as exc:
        raise errors.SpecError(f"{path}: {problems.describe(exc)}") from exc
    for pod in model.pods:
        model.namespaces.setdefault(pod.namespace, {"kubernetes.io/metadata.name": pod.namespace})
    return model


def matrix(policies: list[dict[str, Any]], model: Model) -> dict[str, dict[str, dict[str, evaluating.Verdict]]]:
    """port/protocol -> source -> destination -> verdict, for every pod and outside address (not to itself)."""
    peers: dict[str, evaluating.Endpoint] = {
        f"{p.namespace}/{p.name}": evaluating.Endpoint(
            p.ip, p.namespace, p.labels, named_ports={(q.name, q.protocol): q.port for q in p.ports if q.name})
        for p in model.pods}
    peers.update({address: evaluating.Endpoint(address) for address in model.external})
    table: dict[str, dict[str, dict[str, evaluating.Verdict]]] = {}
    cells = evaluating.matrix(policies, model.namespaces, peers, [(p.port, p.protocol) for p in model.ports])
    for (source, destination, port, protocol), verdict in cells.items():
        table.setdefault(f"{port}/{protocol}", {}).setdefault(source, {})[destination] = verdict
    return table


def render(table: dict[str, dict[str, dict[str, evaluating.Verdict]]]) -> str:
    """Truth tables, cyclonus-style: a row per source, a column per destination (lettered in a legend)."""
    columns = sorted({d for rows in table.values() for row in rows.values() for d in row})
    lines = ["destinations: " + "  ".join(f"{rendering.column_letter(i)}={c}" for i, c in enumerate(columns))]
    for key, rows in table.items():
        indent = max([len(key), *(len(source) + 2 for source in rows)]) + 1
        lines.append("")
        lines.append(key.ljust(indent) + "".join(rendering.column_letter(i)[-1] for i in range(len(columns))))
        for source, row in rows.items():
            lines.append(f"  {source}".ljust(indent) + "".join(
                "-" if column not in row else ("." if row[column].allowed else "x") for column in columns))
    lines.append("")
    lines.append(". allowed   x denied   - itself, or outside to outside")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``portolan audit evaluate``; returns the exit code."""
    table = matrix(load_policies(pathlib.Path(args.policies)), load_model(pathlib.Path(args.model)))
    if args.output == "json":
        out.write(json.dumps({key: {s: {d: {"allowed": v.allowed, "decidedBy": v.decided_by, "policies": list(v.policies)}
                                        for d, v in row.items()}
                                    for s, row in rows.items()} for key, rows in table.items()}, indent=2) + "\n")
    elif args.output == "table":
        out.write(render(table))
    else:
        raise errors.SpecError(f"unknown output format {args.output!r}; use table or json")
    return exits.OK
