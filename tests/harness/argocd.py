"""Argo CD's health check as Argo CD runs it: a resource-customization Lua script, Lua 5.1.

Argo CD evaluates ``resource.customizations.health.<group>_<kind>`` with gopher-lua (Lua 5.1):
the live object is the global ``obj`` (a table converted from its JSON, nulls dropped) and the
script returns a table ``{status=..., message=...}``.  Here the object is written as a Lua
table constructor and the script runs under Debian's ``lua5.1`` interpreter, which implements
the same language version.  Limits: Argo CD's sandbox and its Go<->Lua number conversions are
not reproduced (the scripts use only tables, strings, numbers and ``ipairs``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "charts/portolan/argocd"
HEALTH_STATUSES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")

# The table, per object recorded from a real run (tests/golden/argocd/<case>.json):
# case -> (kind, Argo CD health, words its message must contain).
EXPECTED = {
    "scanjob-unseen": ("ScanJob", "Progressing", "Waiting for the Portolan operator"),
    "scanjob-running": ("ScanJob", "Progressing", "ShardsRunning: 0/1 shards done"),
    "scanjob-complete": ("ScanJob", "Healthy", "Completed: 2 open ports found"),
    "scanjob-complete-violated": ("ScanJob", "Degraded", "UnexpectedOpenPorts: 1 open port(s) not in allowedOpenPorts '22'"),
    "scanjob-failed": ("ScanJob", "Degraded", "DeadlineExceeded: 1 of 1 shards failed"),
    "scanjob-rejected": ("ScanJob", "Degraded", "InvalidPorts: port range '90-80' ends before it starts"),
    "scanjob-suspended": ("ScanJob", "Suspended", "spec.suspend is true"),
    "scanschedule-unseen": ("ScanSchedule", "Progressing", "Waiting for the Portolan operator"),
    "scanschedule-invalid": ("ScanSchedule", "Degraded", "InvalidSpec: "),
    "scanschedule-healthy": ("ScanSchedule", "Healthy", "Next run at "),
    "scanschedule-drifted": ("ScanSchedule", "Degraded", "PortsChanged: 1 opened, 0 closed"),
    "scanschedule-suspended": ("ScanSchedule", "Suspended", "spec.suspend is true"),
}


@dataclasses.dataclass(frozen=True)
class Health:
    status: str
    message: str


def lua_interpreter() -> str:
    """The lua5.1 binary; skips outside CI when it is missing (tools/test.sh installs it)."""
    found = shutil.which("lua5.1")
    if found is not None:
        return found
    why = "lua5.1 is not installed (tools/test.sh installs the Debian package)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}, and CI must not skip it")
    pytest.skip(why)


def lua_literal(value: Any) -> str:
    """A JSON value as a Lua 5.1 expression (objects and arrays become tables)."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua_string(str(k))}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def _lua_string(text: str) -> str:
    # Lua 5.1 strings are bytes; decimal escapes (\ddd) are the only portable way to write any byte.
    safe = (chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in text.encode())
    return '"' + "".join(safe) + '"'


def health(kind: str, obj: dict[str, Any]) -> Health:
    """Run the chart's health script for ``kind`` on ``obj``, as Argo CD would."""
    script = SCRIPTS / f"{kind}.lua"
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({_lua_string(str(script))})\n"
        "io.write(tostring(hs.status), '\\n', tostring(hs.message or ''))\n"
    )
    done = subprocess.run([lua_interpreter(), "-"], input=program, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"{script.name} failed: {done.stderr}")
    status, _, message = done.stdout.partition("\n")
    if status not in HEALTH_STATUSES:
        raise AssertionError(f"{script.name} returned an unknown health status {status!r}")
    return Health(status, message)
