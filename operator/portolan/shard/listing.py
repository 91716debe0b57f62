"""An inventory shard's report: a node's listeners as a bounded status entry.

An inventory pod runs with its node's network and PID namespaces (``hostNetwork``,
``hostPID``), so :func:`portolan.inventory.listening.take` in it lists the node's
sockets and their processes.  :func:`entry` turns that inventory into the fields of
the shard's ``status.shards.<id>`` entry: at most ``cap`` listeners (those on
non-loopback addresses first, as exposure is judged on them), each with its first
owner, commands cut to :data:`COMMAND_CHARS`; the rest are counted in
``listenersTruncated``.  Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from portolan.inventory import listening

COMMAND_CHARS = 64
NOTES = 3


def listener_fields(listener: listening.Listener) -> dict[str, Any]:
    """One listener as a status entry (camelCase keys, absent values omitted)."""
    found: dict[str, Any] = {"protocol": listener.protocol, "address": listener.address, "port": listener.port,
                             "user": listener.user}
    if listener.owners:
        owner = listener.owners[0]
        found["pid"] = owner.pid
        found["command"] = owner.command[:COMMAND_CHARS]
        if owner.containment.pod_uid:
            found["podUid"] = owner.containment.pod_uid
    elif listener.note:
        found["note"] = listener.note[:200]
    return found


def entry(inventory: listening.Inventory, cap: int) -> dict[str, Any]:
    """The listener fields of an inventory shard's status entry: listed up to ``cap``, the rest counted."""
    ordered = sorted(inventory.listeners, key=lambda item: (item.loopback, item.protocol, item.port, item.address))
    return {
        "listeners": [listener_fields(item) for item in ordered[:cap]],
        "listenersTruncated": max(0, len(ordered) - cap),
        "listenerNotes": [note[:200] for note in inventory.notes[:NOTES]],
    }
