"""``portolan listeners``, ``portolan free-port`` and the listener part of ``portolan scan --listeners``.

Renders inventories as a table, JSON or JSON Lines; the work itself is in
:mod:`portolan.inventory`.  ``listeners`` and ``free-port`` look at the network
namespace this command runs in (use ``ip netns exec`` for another).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from portolan import errors
from portolan.cli import exits
from portolan.inventory import listening

if TYPE_CHECKING:  # exposure imports the report models (pydantic): only ``scan --listeners`` needs them
    from portolan.inventory import exposure

FORMATS = ("table", "json", "jsonl")


def _owner_dict(owner: listening.Owner) -> dict[str, object]:
    found: dict[str, object] = {"pid": owner.pid, "command": owner.command, "user": owner.user}
    where = owner.containment
    for key, value in (("runtime", where.runtime), ("container", where.container), ("pod_uid", where.pod_uid)):
        if value is not None:
            found[key] = value
    if owner.other_netns:
        found["other_netns"] = True
    return found


def listener_dict(listener: listening.Listener) -> dict[str, object]:
    """A listener as a JSON object (absent fields omitted)."""
    found: dict[str, object] = {
        "protocol": listener.protocol, "address": listener.address, "port": listener.port,
        "inode": listener.inode, "user": listener.user,
        "owners": [_owner_dict(owner) for owner in listener.owners],
    }
    if listener.note is not None:
        found["note"] = listener.note
    return found


def _jsonl(listeners: Sequence[listening.Listener]) -> str:
    """One JSON line per listener, as ``json.dumps(listener_dict(...))`` writes it, the owner part formatted once."""
    dumps = json.dumps
    owner_parts: dict[tuple[listening.Owner, ...], str] = {}
    user_parts: dict[str, str] = {}
    lines: list[str] = []
    for item in listeners:
        owners = owner_parts.get(item.owners)
        if owners is None:
            owners = owner_parts[item.owners] = dumps([_owner_dict(owner) for owner in item.owners])
        user = user_parts.get(item.user)
        if user is None:
            user = user_parts[item.user] = dumps(item.user)
        note = "" if item.note is None else f", \"note\": {dumps(item.note)}"
        lines.append(f'{{"protocol": "{item.protocol}", "address": "{item.address}", "port": {item.port}, '
                     f'"inode": {item.inode}, "user": {user}, "owners": {owners}{note}}}\n')
    return "".join(lines)


def exposure_dict(judged: exposure.Exposure) -> dict[str, object]:
    """A listener and its exposure as a JSON object."""
    found = listener_dict(judged.listener) | {"exposure": judged.exposure}
    if judged.reached_on:
        found["reached_on"] = list(judged.reached_on)
    if judged.seen:
        found["seen"] = list(judged.seen)
    return found


def _where(owner: listening.Owner) -> str:
    parts = []
    if owner.containment.pod_uid:
        parts.append(f"pod {owner.containment.pod_uid}")
    if owner.containment.container:
        parts.append(f"{owner.containment.runtime or 'container'} {owner.containment.container[:12]}")
    if owner.other_netns:
        parts.append("other netns")
    return ", ".join(parts)


def _listener_rows(listeners: Sequence[listening.Listener], verdicts: Sequence[str] | None) -> str:
    """The listeners as an aligned table; a listener held by several processes takes one row per process."""
    head = ("PROTO", "ADDRESS", "PORT", *(("EXPOSURE",) if verdicts is not None else ()),
            "PID", "COMMAND", "USER", "WHERE")
    rows: list[tuple[str, ...]] = [head]
    append = rows.append
    owner_cells: dict[listening.Owner, tuple[str, str, str, str]] = {}
    for index, listener in enumerate(listeners):
        first: tuple[str, ...] = (listener.protocol, listener.address, str(listener.port))
        if verdicts is not None:
            first = (*first, verdicts[index])
        if not listener.owners:
            append((*first, "-", "-", listener.user, "owner unknown *"))
            continue
        for owner in listener.owners:
            cells = owner_cells.get(owner)
            if cells is None:
                cells = owner_cells[owner] = (str(owner.pid), owner.command, owner.user, _where(owner))
            append((*first, *cells))
            first = ("",) * len(first)
    widths = [max(map(len, column)) for column in list(zip(*rows, strict=True))[:-1]]
    template = "  ".join(f"{{:<{width}}}" for width in widths) + "  {}"
    return "".join(template.format(*row).rstrip() + "\n" for row in rows)


def render_inventory(inventory: listening.Inventory, fmt: str, out: TextIO, port: int | None = None) -> None:
    """Write an inventory as a table, one JSON document or JSON Lines (notes to stderr for JSONL)."""
    if fmt == "json":
        document = {"netns": inventory.netns, "method": inventory.method,
                    "listeners": [listener_dict(item) for item in inventory.listeners],
                    "unreadable_processes": inventory.unreadable_processes,
                    "closed_during_listing": inventory.closed_during_listing, "notes": inventory.notes}
        out.write(json.dumps(document, indent=2) + "\n")
        return
    if fmt == "jsonl":
        out.write(_jsonl(inventory.listeners))
        for note in inventory.notes:
            print(f"note: {note}", file=sys.stderr)
        return
    if not inventory.listeners:
        out.write(f"nothing listens on port {port} here\n" if port is not None else "no listeners here\n")
    else:
        out.write(_listener_rows(inventory.listeners, None))
    _footnotes(inventory.listeners, inventory.notes, out)


def _footnotes(listeners: Sequence[listening.Listener], notes: Sequence[str], out: TextIO) -> None:
    unowned: dict[str, int] = {}
    for listener in listeners:
        if listener.note is not None:
            unowned[listener.note] = unowned.get(listener.note, 0) + 1
    for note, count in unowned.items():
        out.write(f"* {count} listener(s): {note}\n")
    for note in notes:
        out.write(f"Note: {note}\n")


def render_exposures(judged: Sequence[exposure.Exposure], fmt: str, out: TextIO) -> None:
    """The ``--listeners`` part of a scan: a table section or JSON Lines (JSON is merged by :func:`merge_json`)."""
    if fmt == "jsonl":
        for item in judged:
            out.write(json.dumps({"kind": "listener", **exposure_dict(item)}) + "\n")
        return
    out.write("\nListeners on this host\n")
    if not judged:
        out.write("none\n")
        return
    out.write(_listener_rows([item.listener for item in judged], [item.exposure for item in judged]))
    _footnotes([item.listener for item in judged], [], out)


def merge_json(report_json: str, judged: Sequence[exposure.Exposure]) -> str:
    """The JSON report with a ``listeners`` array added."""
    document = json.loads(report_json)
    document["listeners"] = [exposure_dict(item) for item in judged]
    return json.dumps(document, indent=2) + "\n"


def run_listeners(args: argparse.Namespace) -> int:
    """``portolan listeners``."""
    if args.output not in FORMATS:
        raise errors.SpecError(f"unknown output format {args.output!r}; use one of {', '.join(FORMATS)}")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise errors.SpecError(f"port {args.port} is out of range 1-65535")
    protocols = [p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on] or list(listening.PROTOCOLS)
    inventory = listening.take(port=args.port, protocols=protocols, method=args.method)
    render_inventory(inventory, args.output, sys.stdout, args.port)
    return exits.OK


def run_free_port(args: argparse.Namespace) -> int:
    """``portolan free-port``: print ``--count`` free ports, one a line, or fail with a reason."""
    from portolan.inventory import freeports

    low, high = freeports.parse_range(args.range)
    if args.lease <= 0:
        raise errors.SpecError("--lease must be positive")
    ephemeral = freeports.ephemeral_range()
    leases = freeports.Leases.here(args.runtime_dir, seconds=args.lease)
    picked = freeports.pick(low, high, args.count, args.protocol, leases, allow_ephemeral=args.allow_ephemeral,
                            ephemeral=ephemeral)
    if len(picked.ports) < args.count:
        for port in picked.ports:
            leases.release(port, args.protocol)
        why = [f"{picked.busy} in use", f"{picked.leased} reserved by other free-port calls"]
        if picked.ephemeral_skipped:
            why.append(f"{picked.ephemeral_skipped} in the kernel's ephemeral range {ephemeral[0]}-{ephemeral[1]} "
                       "skipped (--allow-ephemeral to use them)")
        raise errors.ScanError(f"found {len(picked.ports)} of {args.count} free {args.protocol} ports in "
                               f"{low}-{high}: {', '.join(why)}")
    for port in picked.ports:
        print(port)
    return exits.OK
