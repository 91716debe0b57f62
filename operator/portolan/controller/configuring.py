"""Reading the operator's settings, once, at start-up (a file, or YAML text from the environment).

The only file I/O of the settings; the model itself is :mod:`portolan.models.settings`.
Every way the input can be wrong — a missing file, a directory, more than
:data:`MAX_BYTES`, bytes that are not UTF-8, bad or too deeply nested YAML, a
document that is not a mapping, a field the model refuses — is one
:class:`portolan.errors.SpecError` naming the source (exit 2 from the CLI).
"""

from __future__ import annotations

import pathlib

import pydantic
import yaml

from portolan import errors
from portolan.models import problems, settings

MAX_BYTES = 1 << 20
ENVIRONMENT = "PORTOLAN_SETTINGS"


def load(path: str | None, text: str | None = None) -> settings.OperatorSettings:
    """Read settings from a YAML/JSON file, else from YAML text, else the defaults."""
    source = ENVIRONMENT
    if path:
        source = path
        text = _read(path)
    elif text is not None and len(text) > MAX_BYTES:
        raise errors.SpecError(f"settings in ${ENVIRONMENT} are larger than {MAX_BYTES >> 20} MiB")
    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError as exc:
        raise errors.SpecError(f"settings {source}: not valid YAML: {problems.yaml_problem(exc)}") from exc
    except RecursionError as exc:
        raise errors.SpecError(f"settings {source}: the YAML is nested too deeply") from exc
    if data is not None and not isinstance(data, dict):
        raise errors.SpecError(f"settings {source}: expected a mapping of settings, not a {type(data).__name__}")
    try:
        return settings.OperatorSettings.model_validate(data or {})
    except pydantic.ValidationError as exc:
        described = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: "
            f"{str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise errors.SpecError(f"settings {source}: {described}") from exc


def _read(path: str) -> str:
    try:
        with pathlib.Path(path).open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise errors.SpecError(f"cannot read settings {path}: {exc.strerror}") from exc
    if len(data) > MAX_BYTES:
        raise errors.SpecError(f"settings {path} are larger than {MAX_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.SpecError(f"settings {path} are not UTF-8 text (byte {exc.start})") from exc

