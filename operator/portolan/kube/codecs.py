"""The results codec: aggregated results spilled into a ConfigMap when they would not fit the status.

The operator encodes (:func:`encode_results`), ScanSchedules and the CLI decode
(:func:`decode_results`); both sides live here so the format is written once:
gzip'd JSON of the ``status.results`` list, base64 in ``binaryData``.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping, Sequence
from typing import Any

KEY = "results.json.gz"


def encode_results(results: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The ConfigMap ``binaryData`` holding these results."""
    return {KEY: base64.b64encode(gzip.compress(json.dumps(list(results)).encode())).decode()}


def decode_results(binary_data: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """The results held in a ConfigMap's ``binaryData`` (empty when it holds none)."""
    blob = (binary_data or {}).get(KEY)
    if not blob:
        return []
    found: list[dict[str, Any]] = json.loads(gzip.decompress(base64.b64decode(blob)))
    return found


def configmap_name(results_ref: str | None) -> str | None:
    """The ConfigMap named by ``status.resultsRef`` (``configmap/NAME``), if any."""
    if not results_ref:
        return None
    return results_ref.removeprefix("configmap/")


# -- reachability audits: the pairs a probe pod probes, and the verdicts it reports ----------------------

VERDICT_CHARS = {
    "open": "o",  # TCP connected / a UDP reply (a canary's echo)
    "refused": "r",  # TCP reset / ICMP port-unreachable: the path is open (unless an enforcer rejects)
    "prohibited": "p",  # ICMP administratively prohibited (host/net/admin): an enforcer rejected it
    "silent": "s",  # nothing came back within the timeout
    "error": "e",  # the local stack refused to send
}


PACKED = "gz:"  # the prefix of a packed (gzip'd, base64) text
PACK_ABOVE = 16 * 1024  # bytes; smaller texts stay readable


def pack(text: str) -> str:
    """``text`` as it is when small, else gzip'd and base64 behind :data:`PACKED`.

    The pairs ride in a probe pod's environment (one variable stops at 128 KiB in
    ``execve``) and the legend in an annotation (all of a pod's stop at 256 KiB);
    both repeat themselves, so packing carries some ten times more pairs.
    """
    if len(text) <= PACK_ABOVE:
        return text
    return PACKED + base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


def unpack(text: str) -> str:
    """The inverse of :func:`pack`; a damaged packed text raises ValueError."""
    if not text.startswith(PACKED):
        return text
    try:
        return gzip.decompress(base64.b64decode(text.removeprefix(PACKED), validate=True)).decode()
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"damaged packed text: {exc.__class__.__name__}: {exc}") from exc


def encode_pairs(pairs: list[tuple[str, int, str, bool | None, bool]]) -> str:
    """``address port protocol expected listener`` per pair, comma-separated (expected: 1, 0 or ?); packed when long."""
    return pack(",".join(f"{address} {port} {protocol} {'?' if expected is None else int(expected)} {int(listener)}"
                         for address, port, protocol, expected, listener in pairs))


def encode_legend(rows: Sequence[Sequence[str | bool | None]]) -> str:
    """Per pair: destination, endpoint, what decided the expectation, the declared rule (JSON; packed when long)."""
    return pack(json.dumps([list(row) for row in rows], separators=(",", ":")))


def decode_legend(text: str) -> list[list[Any]]:
    """The inverse of :func:`encode_legend`; malformed text raises ValueError."""
    rows = json.loads(unpack(text) or "[]")
    if not isinstance(rows, list) or not all(isinstance(row, list) and len(row) == 4 for row in rows):
        raise ValueError("a legend is a list of [destination, endpoint, decided by, rule]")
    return rows


def decode_pairs(text: str) -> list[tuple[str, int, str, bool | None, bool]]:
    """The inverse of :func:`encode_pairs`; a malformed entry raises ValueError."""
    found: list[tuple[str, int, str, bool | None, bool]] = []
    for item in filter(None, unpack(text).split(",")):
        address, port, protocol, expected, listener = item.split(" ")
        if protocol not in ("TCP", "UDP") or expected not in ("0", "1", "?") or listener not in ("0", "1"):
            raise ValueError(f"malformed pair {item!r}")
        found.append((address, int(port), protocol, None if expected == "?" else expected == "1", listener == "1"))
    return found


# -- reachability audits: the full matrix, when it outgrew the status -------------------------------------

MATRIX_KEY = "matrix.json.gz"


def encode_matrix(run: int, columns: Sequence[str], matrix: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The ConfigMap ``binaryData`` holding an audit run's full matrix (gzip'd JSON, base64)."""
    document = {"run": run, "matrixColumns": list(columns), "matrix": {k: list(v) for k, v in matrix.items()}}
    return {MATRIX_KEY: base64.b64encode(gzip.compress(json.dumps(document).encode())).decode()}


def decode_matrix(binary_data: Mapping[str, str] | None) -> tuple[int, list[str], dict[str, list[str]]] | None:
    """The inverse of :func:`encode_matrix` (None when the data holds no matrix); malformed data raises ValueError."""
    blob = (binary_data or {}).get(MATRIX_KEY)
    if not blob:
        return None
    try:
        document = json.loads(gzip.decompress(base64.b64decode(blob)))
        return int(document["run"]), list(document["matrixColumns"]), dict(document["matrix"])
    except (OSError, EOFError, KeyError, TypeError, ValueError) as exc:  # bad base64 and JSON are ValueErrors
        raise ValueError(f"not an audit matrix: {exc.__class__.__name__}: {exc}") from exc
