"""Validation problems as one line for humans: the one formatter of pydantic's errors.

Used for manifests and options (CLI), ScanJob and ScanSchedule specs
(conditions and Events): ``spec.ports: Value error, ...; spec.bogus: Extra inputs are not permitted``.
"""

from __future__ import annotations

import pydantic


def describe(exc: pydantic.ValidationError, *, prefix: str = "", first_only: bool = False) -> str:
    """Each error as ``<prefix><dotted location>: <message>``, joined by ``; `` (or only the first)."""
    parts = []
    for error in exc.errors():
        where = (prefix + ".".join(str(part) for part in error["loc"])).rstrip(".")
        message = str(error["msg"]).removeprefix("Value error, ")  # a validator's own words, without pydantic's tag
        if error["type"] == "string_pattern_mismatch":
            message = f"{error['input']!r} is not valid here ({message.lower()})"
        parts.append(f"{where}: {message}" if where else message)
        if first_only:
            break
    return "; ".join(parts)
