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
