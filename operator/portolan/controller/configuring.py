"""Reading the operator's settings, once, at start-up (a file, or YAML text from the environment).

The only file I/O of the settings; the model itself is :mod:`portolan.models.settings`.
"""

from __future__ import annotations

import pathlib

import yaml

from portolan.models import settings


def load(path: str | None, text: str | None = None) -> settings.OperatorSettings:
    """Read settings from a YAML/JSON file, else from YAML text, else the defaults."""
    if path:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) if text else None
    return settings.OperatorSettings.model_validate(data or {})


