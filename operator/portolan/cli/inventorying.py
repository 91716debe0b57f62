"""``portolan listeners``, ``portolan free-port`` and the listener part of ``portolan scan --listeners``.

Renders inventories as a table, JSON or JSON Lines; the work itself is in
:mod:`portolan.inventory`.  ``listeners`` and ``free-port`` look at the network
namespace this command runs in (use ``ip netns exec`` for another).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
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


_CHUNK = 2048  # lines per write: the reader takes the first ones while the next are formatted


def _jsonl(listeners: Sequence[listening.Listener]) -> Iterator[str]:
    """One JSON line per listener, as ``json.dumps(listener_dict(...))`` writes it, in chunks of lines.

    Only the port and inode differ from line to line: the start (protocol and
    address) and the end (user, owners, note) are formatted once each.
    """
    import json  # here and below, on first use: the table needs no JSON, and start-up counts

    dumps = json.dumps
    starts: dict[tuple[str, str], str] = {}
    ends: dict[tuple[str, tuple[listening.Owner, ...], str | None], str] = {}
    lines: list[str] = []
    append = lines.append
    last: tuple[str, tuple[listening.Owner, ...], str | None] | None = None
    end = ""
    for protocol, address, port, inode, user, held, note in listeners:
        start = starts.get((protocol, address))
        if start is None:
            start = starts[protocol, address] = f'{{"protocol": {dumps(protocol)}, "address": {dumps(address)}, "port": '
        if last is None or held is not last[1] or user != last[0] or note != last[2]:  # neighbours share one, mostly
            last = (user, held, note)
            end = ends.get(last) or ends.setdefault(last, (
                f', "user": {dumps(user)}, "owners": {dumps([_owner_dict(owner) for owner in held])}'
                + ("" if note is None else f', "note": {dumps(note)}') + "}\n"))
        append(f'{start}{port}, "inode": {inode}{end}')
        if len(lines) == _CHUNK:
            yield "".join(lines)
            lines.clear()
    yield "".join(lines)


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
    """The listeners as an aligned table; a listener held by several processes takes one row per process.

    Each column is as wide as its widest cell, the last one unpadded.  Built
    for 10,000 rows: the widths come from the distinct cells, and the owner
    part of a row is formatted once per owner.
    """
    head = ("PROTO", "ADDRESS", "PORT", *(("EXPOSURE",) if verdicts is not None else ()),
            "PID", "COMMAND", "USER", "WHERE")
    lead = len(head) - 4  # the listener's own columns; the owner's follow
    owner_cells: dict[listening.Owner, tuple[str, str, str, str]] = {}
    unowned_users: set[str] = set()
    for listener in listeners:
        if not listener.owners:
            unowned_users.add(listener.user)
        for owner in listener.owners:
            if owner not in owner_cells:
                owner_cells[owner] = (str(owner.pid), owner.command, owner.user, _where(owner))
    unowned_cells = {user: ("-", "-", user, "owner unknown *") for user in unowned_users}
    tails = [*owner_cells.values(), *unowned_cells.values()]
    starts = {(listener.protocol, listener.address) for listener in listeners}
    widths = [max([len(head[0]), *(len(protocol) for protocol, _ in starts)]),
              max([len(head[1]), *(len(address) for _, address in starts)]),
              max(len(head[2]), len(str(max((listener.port for listener in listeners), default=0))))]
    if verdicts is not None:
        widths.append(max([len(head[3]), *map(len, set(verdicts))]))
    tail_widths = [max([len(head[lead + column]), *(len(cells[column]) for cells in tails)]) for column in range(3)]

    def tail(cells: Sequence[str]) -> str:
        return ("  ".join(cell.ljust(width) for cell, width in zip(cells, tail_widths, strict=False))
                + "  " + cells[3]).rstrip() + "\n"

    owner_tail = {owner: tail(cells) for owner, cells in owner_cells.items()}
    unowned_tail = {user: tail(cells) for user, cells in unowned_cells.items()}
    template = "".join(f"{{:<{width}}}  " for width in widths)
    blank = template.format(*("",) * len(widths))  # the listener's cells on an owner's second row
    starts_text = {start: template.format(*start, "", "")[:widths[0] + widths[1] + 4] for start in starts}
    port_width = widths[2] + 2
    verdict_width = widths[-1] + 2
    lines = [template.format(*head[:lead]) + tail(head[lead:])]
    append = lines.append
    last: tuple[listening.Owner, ...] | None = None  # neighbours often share one owners tuple: no hashing then
    tails_of_last: list[str] = []
    for index, (protocol, address, port, _inode, user, owners, _note) in enumerate(listeners):
        first = starts_text[protocol, address] + str(port).ljust(port_width)
        if verdicts is not None:
            first += verdicts[index].ljust(verdict_width)
        if not owners:
            append(first + unowned_tail[user])
            continue
        if owners is not last:
            last, tails_of_last = owners, [owner_tail[owner] for owner in owners]
        for text in tails_of_last:
            append(first + text)
            first = blank
    return "".join(lines)


def render_inventory(inventory: listening.Inventory, fmt: str, out: TextIO, port: int | None = None) -> None:
    """Write an inventory as a table, one JSON document or JSON Lines (notes to stderr for JSONL)."""
    if fmt == "json":
        document = {"netns": inventory.netns, "method": inventory.method,
                    "listeners": [listener_dict(item) for item in inventory.listeners],
                    "unreadable_processes": inventory.unreadable_processes,
                    "closed_during_listing": inventory.closed_during_listing, "notes": inventory.notes}
        import json

        out.write(json.dumps(document, indent=2) + "\n")
        return
    if fmt == "jsonl":
        for chunk in _jsonl(inventory.listeners):
            out.write(chunk)
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
        import json

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
    import json

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
