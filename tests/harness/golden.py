"""Golden files: compare rendered text with a committed file under tests/golden/.

Update every golden file with one command after an intended change:

    PORTOLAN_UPDATE_GOLDEN=1 .venv/bin/pytest tests/golden

then review the diff like any other change.
"""

from __future__ import annotations

import os
import pathlib

FOLDER = pathlib.Path(__file__).resolve().parent.parent / "golden"


def check(name: str, text: str) -> None:
    """Assert ``text`` equals ``tests/golden/<name>``; with PORTOLAN_UPDATE_GOLDEN=1, rewrite the file instead."""
    path = FOLDER / name
    if os.environ.get("PORTOLAN_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run PORTOLAN_UPDATE_GOLDEN=1 .venv/bin/pytest tests/golden"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from its golden file (update with PORTOLAN_UPDATE_GOLDEN=1)"
