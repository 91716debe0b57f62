"""Validation problems as one line for humans: the one formatter of pydantic's errors.

Used for manifests and options (CLI), ScanJob and ScanSchedule specs
(conditions and Events): ``spec.ports: Value error, ...; spec.bogus: Extra inputs are not permitted``;
and YAML errors as one clause (manifests, settings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pydantic

if TYPE_CHECKING:
    import yaml


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


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as one clause: the problem and where it is."""
    import yaml  # only when there is a YAML problem to describe: the CLI's fast path loads no YAML

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{exc.problem}{where}"
    return " ".join(str(exc).split()) or type(exc).__name__
