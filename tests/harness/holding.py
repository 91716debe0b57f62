"""A test process that holds sockets: ``python -m harness.holding SPEC...`` binds, prints ``ready``, waits.

Each SPEC is ``PROTO:ADDRESS:PORT`` (``tcp:[::]:443`` for IPv6) (TCP sockets listen; UDP sockets are only
bound).  ``--then-netns NAME`` moves the process into another network
namespace *after* binding, so it holds sockets of a namespace it no longer
lives in.  The process exits when its stdin closes (or on SIGTERM/SIGKILL), so
a test decides exactly when the sockets go away.  A test-only stand-in: it
shares no code with :mod:`portolan.inventory`.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000


def _bound(spec: str) -> socket.socket:
    proto, _, rest = spec.partition(":")
    address, _, port = rest.rpartition(":")
    address = address.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    held = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    held.bind((address, int(port)))
    if proto == "tcp":
        held.listen()
    return held


def main(argv: list[str]) -> None:
    then: str | None = None
    if argv[:1] == ["--then-netns"]:
        then, argv = argv[1], argv[2:]
    held = [_bound(spec) for spec in argv]
    if then is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{then}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)
    print("ready", flush=True)
    sys.stdin.read()
    for item in held:
        item.close()


if __name__ == "__main__":
    main(sys.argv[1:])
