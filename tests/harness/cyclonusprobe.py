"""cyclonus as an outside oracle in probe mode: the expected reachability matrix for a model of pods.

``cyclonus analyze --mode probe --policy-path DIR --probe-path MODEL`` simulates, for each
(protocol, port) of the model, which (source pod, destination pod) connections the policies
allow, and prints per probe an Ingress, an Egress and a Combined table.  :func:`expected`
runs it and parses the Combined tables: ``.`` is allowed, ``X`` blocked; other marks (such as
``N``, no such port on the destination) are left out.

cyclonus insists on ``spec.policyTypes``, which the API server fills in; give it the policies
as read back from the API, not as written.
"""

from __future__ import annotations

import pathlib
import re
import subprocess

BIN = pathlib.Path(__file__).resolve().parents[2] / "tools" / "k8s" / "bin" / "cyclonus"

Matrix = dict[tuple[str, str, str], bool]  # (source "ns/pod", destination "ns/pod", "tcp/80") -> allowed


def expected(policy_dir: pathlib.Path, model: pathlib.Path, timeout: float = 120.0) -> Matrix:
    done = subprocess.run([str(BIN), "analyze", "--mode", "probe", "--policy-path", str(policy_dir),
                           "--probe-path", str(model)], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cyclonus failed ({done.returncode}): {done.stderr[-2000:]}")
    return parse(done.stdout, done.stderr)


def parse(tables: str, log: str) -> Matrix:
    """The Combined table of each probe, keyed by (source, destination, "proto/port").

    The tables are on stdout, one Ingress/Egress/Combined triple per probe in the model's
    order (then one for the live cluster, empty here); the probe each belongs to is logged,
    in the same order, on stderr.
    """
    probes = re.findall(r'probe on port (\S+), protocol (\S+)"', log)
    combined = tables.split("Combined:")[1:]
    found: Matrix = {}
    for (port, protocol), body in zip(probes, combined, strict=False):
        rows = [line for line in body.split("\n\n", 1)[0].splitlines() if line.startswith("|")]
        columns = [c.strip().lower() for c in rows[0].strip("|").split("|")][1:]
        for row in rows[1:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            source = cells[0]
            for destination, mark in zip(columns, cells[1:], strict=True):
                if mark in (".", "X"):
                    found[(source, destination, f"{protocol.lower()}/{port}")] = mark == "."
    if not found or len(combined) < len(probes):
        raise RuntimeError(f"no probe tables in cyclonus's output:\n{tables[-2000:]}\n{log[-1000:]}")
    return found
