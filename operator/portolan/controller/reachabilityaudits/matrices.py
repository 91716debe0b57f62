"""The truth tables of an audit: a compact matrix per port, and how much of it the status can carry.

Like cyclonus's truth table: per ``port/protocol``, one row per source, written
``"<source> <cells>"`` with a character per destination column (``.`` agrees
reachable, ``x`` agrees blocked, ``R`` unexpectedly reachable, ``B`` unexpectedly
blocked, ``?`` unjudged or inconclusive, blank: not probed).

:func:`fit` decides what the status carries: the whole matrix when it fits the
room left in the byte budget, else the leading port tables that do; the full
matrix then goes to a ConfigMap owned by the audit (:func:`configmap_name`,
in the first source's namespace, one of ``auditNamespaces``) and the status
names it.  Pure: no I/O; :mod:`~portolan.kube.codecs` encodes the ConfigMap's data.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

from portolan.kube import builders


def build(rows: Mapping[str, Mapping[str, Mapping[str, str]]], columns: Sequence[str]) -> dict[str, list[str]]:
    """``port/proto`` -> source -> column -> cell into rows of characters, ports in numeric order."""
    return {key: [f"{source} " + "".join(cells.get(c, " ") for c in columns) for source, cells in by_source.items()]
            for key, by_source in sorted(rows.items(), key=lambda kv: port_key(kv[0]))}


def port_key(key: str) -> tuple[int, str]:
    """``"5432/TCP"`` -> ``(5432, "TCP")``, for ordering."""
    port, _, protocol = key.partition("/")
    return int(port), protocol


def size(columns: Sequence[str], matrix: Mapping[str, Sequence[str]]) -> int:
    """Bytes the matrix and its columns take in the status JSON (keys included)."""
    return len(json.dumps({"matrixColumns": list(columns), "matrix": dict(matrix)}, separators=(",", ":")).encode())


@dataclasses.dataclass(frozen=True)
class Fitted:
    """What the status carries of the matrix."""

    columns: list[str]
    matrix: dict[str, list[str]]
    omitted: int  # port tables left out of the status (they are in the ConfigMap)
    spilled: bool  # the full matrix goes to the ConfigMap


def fit(columns: Sequence[str], matrix: Mapping[str, Sequence[str]], room: int) -> Fitted:
    """The whole matrix if it takes at most ``room`` bytes; else the leading port tables that fit, and spill.

    A table is kept or left out whole (a partial table would read as blocked pairs).
    When even the column names do not fit, the status carries no table at all.
    """
    if size(columns, matrix) <= room:
        return Fitted(list(columns), {k: list(v) for k, v in matrix.items()}, 0, False)
    kept: dict[str, list[str]] = {}
    for key, rows in matrix.items():
        trial = {**kept, key: list(rows)}
        if size(columns, trial) > room:
            break
        kept = trial
    if not kept:
        return Fitted([], {}, len(matrix), True)
    return Fitted(list(columns), kept, len(matrix) - len(kept), True)


def configmap_name(audit: str) -> str:
    """The ConfigMap holding an audit's full matrix (a DNS label, hashed when the audit's name is long)."""
    return builders.bounded_name(f"{audit}-matrix")
