"""tcpdump filter expressions compiled to classic BPF by libpcap (through ctypes).

Only ``pcap_open_dead`` and ``pcap_compile`` are used: libpcap compiles, the kernel runs the
program on an AF_PACKET socket (SO_ATTACH_FILTER).  Raises :class:`FilterError` with
libpcap's own message for a bad expression.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import socket
from collections.abc import Iterable

from portolan import errors
from portolan.wire import bpf

DLT_EN10MB = 1
MAX_NETWORK_TERMS = 32
_WIDER_V4 = (24, 16, 8, 0)
_WIDER_V6 = (64, 48, 32, 0)
ICMP_ERRORS = "icmp[icmptype] == icmp-unreach or icmp[icmptype] == icmp-timxceed"
ICMP6_ERRORS = "icmp6[icmp6type] == icmp6-destinationunreach or icmp6[icmp6type] == icmp6-timeexceeded"


class FilterError(errors.SpecError):
    """A capture filter does not compile, or is too long for the kernel."""

    reason = "InvalidFilter"


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn))]


def _libpcap() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        library = ctypes.CDLL(name)
    except OSError as exc:
        raise errors.ScanError(f"libpcap is needed to compile capture filters: {exc}") from exc
    library.pcap_open_dead.restype = ctypes.c_void_p
    library.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    library.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_uint32]
    library.pcap_geterr.restype = ctypes.c_char_p
    library.pcap_geterr.argtypes = [ctypes.c_void_p]
    library.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
    library.pcap_close.argtypes = [ctypes.c_void_p]
    return library


def compile_filter(expression: str, snaplen: int = 262144, linktype: int = DLT_EN10MB) -> list[tuple[int, int, int, int]]:
    """Compile a tcpdump expression into BPF instructions (code, jt, jf, k)."""
    library = _libpcap()
    handle = library.pcap_open_dead(linktype, snaplen)
    program = _Program()
    try:
        if library.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, 0xFFFFFFFF) != 0:
            message = (library.pcap_geterr(handle) or b"").decode(errors="replace")
            raise FilterError(f"bad capture filter {expression!r}: {message}")
        instructions = [(program.bf_insns[i].code, program.bf_insns[i].jt, program.bf_insns[i].jf, program.bf_insns[i].k)
                        for i in range(program.bf_len)]
        library.pcap_freecode(ctypes.byref(program))
        return instructions
    finally:
        library.pcap_close(handle)


def attach(sock: socket.socket, instructions: list[tuple[int, int, int, int]]) -> None:
    """Attach compiled instructions to a socket (the kernel copies them)."""
    bpf.attach(sock, bpf.assemble(instructions))


def probe_filter(addresses: Iterable[str], *, limit: int = MAX_NETWORK_TERMS) -> str:
    """A tcpdump expression for the traffic of a scan of these addresses, and ICMP errors about it.

    Addresses are collapsed into networks; when that leaves more than ``limit`` terms, the
    networks are widened (IPv4 /24, /16, ...; IPv6 /64, /48, ...) until it does not, so the
    filter stays short enough for the kernel's 4096-instruction limit.  ICMP and ICMPv6 errors
    (unreachable, time exceeded) are included whatever their source, since an unreachable or
    prohibited answer may come from any router; other ICMP (neighbour discovery) is not.
    """
    parsed = [ipaddress.ip_address(a) for a in addresses]
    nets4 = list(ipaddress.collapse_addresses(ipaddress.IPv4Network(a) for a in parsed if a.version == 4))
    nets6 = list(ipaddress.collapse_addresses(ipaddress.IPv6Network(a) for a in parsed if a.version == 6))
    for wide4, wide6 in zip(_WIDER_V4, _WIDER_V6, strict=True):
        if len(nets4) + len(nets6) <= limit:
            break
        nets4 = list(ipaddress.collapse_addresses(
            n if n.prefixlen <= wide4 else n.supernet(new_prefix=wide4) for n in nets4))
        nets6 = list(ipaddress.collapse_addresses(
            n if n.prefixlen <= wide6 else n.supernet(new_prefix=wide6) for n in nets6))
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [*nets4, *nets6]
    terms = [
        f"host {net.network_address}" if net.prefixlen == net.max_prefixlen else f"net {net}"
        for net in networks
    ]
    errors_ = [ICMP_ERRORS] if nets4 or not networks else []
    errors_ += [ICMP6_ERRORS] if nets6 or not networks else []
    return " or ".join([*terms, *errors_])
