"""``portolan audit show``: a ReachabilityAudit's results in the terminal, as JSON, or as JUnit for CI gates.

Reads the audit from the cluster (KUBECONFIG, or in-cluster), with its full
matrix from ``status.matrixConfigMap`` when it outgrew the status, or from a
file (``-f audit.json``, e.g. ``kubectl get reachabilityaudit NAME -o json``):
a file has only the port tables the status kept, and the table says so.  The
table shows the mismatches first, then the truth table of each port like
cyclonus's: a row per source, a column per destination, ``.`` reachable as
expected, ``x`` blocked as expected, ``R`` unexpectedly reachable, ``B``
unexpectedly blocked, ``?`` unjudged or inconclusive.  JUnit has a case per
probed port and source, failing for each mismatch.  Exit code 4 when the audit
found mismatches (a CI gate), 3 when it is not Complete (no verdict yet, or it
failed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any, TextIO
from xml.sax import saxutils

import pydantic

from portolan import errors
from portolan.cli import exits, rendering
from portolan.models import audits, problems, statuses

FORMATS = ("table", "json", "junit")


def _load(args: argparse.Namespace) -> dict[str, Any]:
    """The audit's body; read from the cluster, with its full matrix when it was spilled into a ConfigMap."""
    if args.file:
        try:
            text = sys.stdin.read() if args.file == "-" else pathlib.Path(args.file).read_text(encoding="utf-8")
            body: dict[str, Any] = json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise errors.SpecError(f"cannot read the audit from {args.file}: {exc}") from exc
        return body
    if not args.name:
        raise errors.SpecError("audit show needs NAME (read from the cluster) or -f FILE")
    from portolan.kube import clients

    kube = clients.Kube(clients.client_from_environment())
    body = kube.get_audit(args.name)
    status = body.get("status") or {}
    if status.get("matrixConfigMap"):
        try:
            columns, matrix = kube.audit_matrix(body)
        except ValueError as exc:
            raise errors.SpecError(f"the audit's spilled matrix is unreadable: {exc}") from exc
        body["status"] = {**status, "matrixColumns": columns, "matrix": matrix, "matrixOmitted": 0}
    return body


def render_table(name: str, status: audits.ReachabilityAuditStatus) -> str:
    """Mismatches first, then totals and a truth table per port."""
    lines = [f"ReachabilityAudit {name}: {status.phase.value if status.phase else 'Pending'}"]
    for condition in status.conditions:
        if condition.type in ("ReachabilityAsExpected", "RulesMatchPolicies", "Failed"):
            lines.append(f"  {condition.type}={condition.status} {condition.reason}: {condition.message}")
    if status.mismatches:
        lines.append("")
        lines.append("MISMATCHES")
        for m in status.mismatches:
            lines.append(f"  {m.kind}: {m.source} -> {m.destination} ({m.address}) {m.port}/{m.protocol.value}: "
                         f"expected {m.expected.value}, observed {m.observed.value} [{m.decided_by}; {m.evidence}]")
        if status.mismatches_truncated:
            lines.append(f"  ... and {status.mismatches_truncated} more")
    t = status.totals
    lines.append("")
    lines.append(f"{t.pairs} pairs: {t.agreeing} as expected, {t.unexpectedly_reachable} unexpectedly reachable, "
                 f"{t.unexpectedly_blocked} unexpectedly blocked, {t.inconclusive} inconclusive, {t.unjudged} unjudged "
                 f"({t.by_canary} verdicts from canaries)")
    columns = status.matrix_columns
    if status.matrix_omitted:
        lines.append(f"  ({status.matrix_omitted} more port table(s) in ConfigMap {status.matrix_config_map}; "
                     "`portolan audit show NAME` reads them from the cluster)")
    if columns:
        lines.append("")
        lines.append("destinations: " + "  ".join(f"{rendering.column_letter(i)}={c}" for i, c in enumerate(columns)))
    for key, rows in status.matrix.items():
        sources = [row.partition(" ")[0] for row in rows]
        indent = max([len(key), *(len(source) + 2 for source in sources)]) + 1
        lines.append("")
        lines.append(key.ljust(indent) + "".join(rendering.column_letter(i)[-1] for i in range(len(columns))))
        for row in rows:
            source, _, cells = row.partition(" ")
            lines.append(f"  {source}".ljust(indent) + cells)
    return "\n".join(lines) + "\n"


def render_junit(name: str, status: audits.ReachabilityAuditStatus) -> str:
    """A suite per port, a case per source, a failure per mismatch of that source and port."""
    quote = saxutils.quoteattr
    failures: dict[tuple[str, str], list[audits.Mismatch]] = {}
    for m in status.mismatches:
        failures.setdefault((f"{m.port}/{m.protocol.value}", m.source), []).append(m)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites name={quote("portolan audit " + name)} tests="{status.totals.pairs}" '
           f'failures="{len(status.mismatches)}">']
    for key, rows in status.matrix.items():
        sources = [row.partition(" ")[0] for row in rows]
        broken = sum(1 for s in sources if (key, s) in failures)
        out.append(f'  <testsuite name={quote(key)} tests="{len(sources)}" failures="{broken}">')
        for source in sources:
            found = failures.get((key, source), [])
            if not found:
                out.append(f'    <testcase classname={quote("portolan.audit." + name)} name={quote(source + " " + key)} />')
                continue
            out.append(f'    <testcase classname={quote("portolan.audit." + name)} name={quote(source + " " + key)}>')
            for m in found:
                message = (f"{m.source} -> {m.destination} ({m.address}) {m.port}/{m.protocol.value}: expected "
                           f"{m.expected.value}, observed {m.observed.value} ({m.decided_by}; {m.evidence})")
                out.append(f'      <failure type={quote(m.kind)} message={quote(message)} />')
            out.append("    </testcase>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``portolan audit show``; returns the exit code (4 when the audit found mismatches)."""
    if args.output not in FORMATS:
        raise errors.SpecError(f"unknown output format {args.output!r}; use one of {', '.join(FORMATS)}")
    body = _load(args)
    if body.get("kind") != audits.KIND:
        raise errors.SpecError(f"not a {audits.KIND}: kind {body.get('kind')!r}")
    try:
        status = audits.ReachabilityAuditStatus.model_validate(body.get("status") or {})
    except pydantic.ValidationError as exc:
        raise errors.SpecError(f"the audit's status is malformed: {problems.describe(exc, prefix='status.')}") from exc
    name = str((body.get("metadata") or {}).get("name", ""))
    if args.output == "json":
        out.write(json.dumps(body.get("status") or {}, indent=2) + "\n")
    elif args.output == "junit":
        out.write(render_junit(name, status))
    else:
        out.write(render_table(name, status))
    if status.phase != statuses.Phase.COMPLETE:
        return exits.FAILED  # Pending, Running, Failed or Rejected: no verdict a CI gate could pass on
    return exits.VIOLATIONS if status.mismatches else exits.OK
