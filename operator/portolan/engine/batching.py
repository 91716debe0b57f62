"""Batched sends on a raw IPv4 socket: many datagrams per system call with ``sendmmsg(2)``.

The SYN scanner's probes are 20-byte TCP headers to a handful of addresses.  A
:class:`Batch` keeps one preallocated buffer of header slots, one ``iovec`` per slot
and one ``sockaddr_in`` per target, so queuing a probe is a ``struct.pack_into`` and
an index, and :meth:`Batch.flush` hands every queued probe to the kernel in one call
(glibc's ``sendmmsg`` through ctypes).

Limits: Linux (glibc or musl exporting ``sendmmsg``), IPv4 only (the IPv6 path keeps
``sendto``: its sockaddr differs); :func:`available` says whether this libc has it.
A datagram the kernel refuses ends the call at that datagram: :meth:`Batch.flush`
reports it with its errno, and the caller decides (count it lost, or give a verdict)
before flushing the rest.
"""

from __future__ import annotations

import ctypes
import errno as errno_
import functools
import socket
from collections.abc import Sequence


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)), ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


class _SockAddrIn(ctypes.Structure):
    _fields_ = [("sin_family", ctypes.c_ushort), ("sin_port", ctypes.c_uint16),
                ("sin_addr", ctypes.c_uint8 * 4), ("sin_zero", ctypes.c_uint8 * 8)]


@functools.cache
def _sendmmsg() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    libc = ctypes.CDLL(None, use_errno=True)  # this process's symbols, libc's among them (ctypes.util costs ~30 ms)
    function = getattr(libc, "sendmmsg", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def available() -> bool:
    """Whether this libc exports sendmmsg."""
    try:
        return _sendmmsg() is not None
    except OSError:
        return False


class Batch:
    """Up to ``size`` datagrams of ``slot`` bytes each, queued then sent with one sendmmsg call."""

    def __init__(self, sock: socket.socket, addresses: Sequence[str], size: int = 256, slot: int = 20) -> None:
        function = _sendmmsg()
        if function is None:
            raise OSError(errno_.ENOSYS, "sendmmsg is not available")
        self._send = function
        self.fd = sock.fileno()
        self.size = size
        self.slot = slot
        self.buffer = bytearray(size * slot)
        self._raw = (ctypes.c_char * len(self.buffer)).from_buffer(self.buffer)
        base = ctypes.addressof(self._raw)
        self._addresses = (_SockAddrIn * max(1, len(addresses)))()
        for index, address in enumerate(addresses):
            entry = self._addresses[index]
            entry.sin_family = socket.AF_INET
            entry.sin_port = 0
            ctypes.memmove(entry.sin_addr, socket.inet_aton(address), 4)
        self._iovecs = (_IoVec * size)()
        self._messages = (_MMsgHdr * size)()
        for index in range(size):
            self._iovecs[index].iov_base = base + index * slot
            self._iovecs[index].iov_len = slot
            header = self._messages[index].msg_hdr
            header.msg_iov = ctypes.pointer(self._iovecs[index])
            header.msg_iovlen = 1
            header.msg_namelen = ctypes.sizeof(_SockAddrIn)
        self._address_pointers = [ctypes.addressof(self._addresses[i]) for i in range(len(addresses))]
        self.aimed: list[int] = [-1] * size  # the target each slot's message is addressed to
        self.count = 0

    def aim(self, index: int, target: int) -> None:
        """Address slot ``index``'s message to ``addresses[target]`` (callers filling slots themselves check ``aimed``)."""
        self.aimed[index] = target
        self._messages[index].msg_hdr.msg_name = self._address_pointers[target]

    def queue(self, target: int) -> int:
        """Reserve the next slot for a datagram to ``addresses[target]``; returns its offset in ``buffer``."""
        index = self.count
        if self.aimed[index] != target:
            self.aim(index, target)
        self.count = index + 1
        return index * self.slot

    def full(self) -> bool:
        return self.count >= self.size

    def flush(self, start: int = 0) -> tuple[int, int]:
        """Send slots ``start..count``; (how many were sent, errno of the first refused or 0)."""
        if start >= self.count:
            return 0, 0
        pointer = ctypes.cast(ctypes.byref(self._messages, start * ctypes.sizeof(_MMsgHdr)), ctypes.POINTER(_MMsgHdr))
        sent = self._send(self.fd, pointer, self.count - start, 0)
        if sent < 0:
            return 0, ctypes.get_errno()
        return sent, 0  # fewer than asked: the next call from there reports the refusal

    def clear(self) -> None:
        self.count = 0
