"""Classic BPF programs on sockets: assemble instructions and attach them (SO_ATTACH_FILTER).

Used by the SYN scanner's receive filter (hand-written programs) and by
capture (programs compiled by libpcap).  The kernel copies a program when it
is attached, so the buffer only lives for the call.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Iterable

SO_ATTACH_FILTER = 26
_INSTRUCTION = struct.Struct("HBBI")  # code, jt, jf, k


def assemble(instructions: Iterable[tuple[int, int, int, int]]) -> bytes:
    """The bytes of a program: one ``struct sock_filter`` per (code, jt, jf, k)."""
    return b"".join(_INSTRUCTION.pack(*insn) for insn in instructions)


def attach(sock: socket.socket, program: bytes) -> None:
    """Attach an assembled program to ``sock``."""
    buffer = ctypes.create_string_buffer(program, len(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HxxxxxxQ", len(program) // _INSTRUCTION.size, ctypes.addressof(buffer)))
