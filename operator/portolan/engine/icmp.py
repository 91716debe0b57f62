"""Reading ICMP errors from a socket's error queue and naming them in nmap's vocabulary.

With ``IP_RECVERR`` / ``IPV6_RECVERR`` set, Linux queues each ICMP error that
matches a socket's flow on the socket's error queue, with the exact ICMP type
and code (``struct sock_extended_err``).  That is what lets a connect or UDP
scan tell admin-prohibited from host-unreachable without raw sockets.
"""

from __future__ import annotations

import socket
import struct

from portolan.models import results

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)

ORIGIN_LOCAL = 1
ORIGIN_ICMP = 2
ORIGIN_ICMP6 = 3

_EXTENDED_ERR = struct.Struct("=IBBBBII")

ICMP4_UNREACH: dict[int, results.Reason] = {
    0: results.Reason.NET_UNREACH,
    1: results.Reason.HOST_UNREACH,
    2: results.Reason.PROTO_UNREACH,
    3: results.Reason.PORT_UNREACH,
    6: results.Reason.NET_UNREACH,
    7: results.Reason.HOST_UNREACH,
    9: results.Reason.NET_PROHIBITED,
    10: results.Reason.HOST_PROHIBITED,
    11: results.Reason.NET_UNREACH,
    12: results.Reason.HOST_UNREACH,
    13: results.Reason.ADMIN_PROHIBITED,
}
ICMP6_UNREACH: dict[int, results.Reason] = {
    0: results.Reason.NET_UNREACH,
    1: results.Reason.ADMIN_PROHIBITED,
    3: results.Reason.HOST_UNREACH,
    4: results.Reason.PORT_UNREACH,
    5: results.Reason.ADMIN_PROHIBITED,
    6: results.Reason.ADMIN_PROHIBITED,
}


class QueuedError:
    """One entry of a socket's error queue."""

    __slots__ = ("code", "errno", "origin", "type")

    def __init__(self, errno: int, origin: int, icmp_type: int, code: int) -> None:
        self.errno = errno
        self.origin = origin
        self.type = icmp_type
        self.code = code

    @property
    def is_icmp(self) -> bool:
        """Whether an ICMP/ICMPv6 message (not the local stack) caused the error."""
        return self.origin in (ORIGIN_ICMP, ORIGIN_ICMP6)

    def reason(self) -> results.Reason:
        """The nmap reason for this error."""
        if self.origin == ORIGIN_ICMP and self.type == 3:
            return ICMP4_UNREACH.get(self.code, results.Reason.ICMP_OTHER)
        if self.origin == ORIGIN_ICMP6 and self.type == 1:
            return ICMP6_UNREACH.get(self.code, results.Reason.ICMP_OTHER)
        if self.is_icmp:
            return results.Reason.ICMP_OTHER
        return results.Reason.LOCAL_ERROR


def enable(sock: socket.socket, family: int) -> None:
    """Ask the kernel to queue ICMP errors for this socket."""
    if family == socket.AF_INET6:
        sock.setsockopt(SOL_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(SOL_IP, IP_RECVERR, 1)


def drain(sock: socket.socket) -> list[QueuedError]:
    """Read every queued error of a socket (non-blocking); an empty list if there are none."""
    found: list[QueuedError] = []
    for _ in range(16):
        try:
            _, ancdata, _, _ = sock.recvmsg(512, 512, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        for level, kind, data in ancdata:
            if (level, kind) in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)) and len(
                data
            ) >= _EXTENDED_ERR.size:
                errno, origin, icmp_type, code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
                found.append(QueuedError(errno, origin, icmp_type, code))
    return found
