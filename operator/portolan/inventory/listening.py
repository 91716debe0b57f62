"""Listening TCP sockets and bound UDP sockets of this network namespace, with their owners.

Two readers of the socket table, with the same result:

* :func:`read_netlink` asks the kernel with ``sock_diag`` (``SOCK_DIAG_BY_FAMILY``
  over a raw ``AF_NETLINK`` socket), filtered by state in the kernel; the default,
  because it is the faster of the two (bench/listeners.py measures both);
* :func:`read_proc` parses ``/proc/thread-self/net/{tcp,tcp6,udp,udp6}``.

Both read the namespace of the *calling thread* (so a thread that entered a
namespace with ``setns`` lists that namespace).  Owners come from walking
``/proc/*/fd``: a socket's inode is unique across namespaces, so a process in
another network or PID namespace that holds one of these sockets is found too
(:attr:`Owner.other_netns` says so).  The container and pod come from the
owner's ``/proc/PID/cgroup`` (:func:`containment`).

Limits: without privileges the descriptors of other users' processes cannot be
read, so their sockets have no owner and say why (:attr:`Listener.note`); a
process may exit while the listing runs: its vanished ``/proc`` entries are
skipped, and a socket that closed meanwhile is dropped and counted
(:attr:`Inventory.closed_during_listing`).  Connected UDP sockets are not
listed (they are not waiting for anyone).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import pwd
import re
import socket
import struct
from collections.abc import Iterable, Sequence

from portolan import errors

PROTOCOLS = ("tcp", "udp")
METHODS = ("netlink", "proc")

_TCP_LISTEN = 10  # the kernel's TCP states, as in include/net/tcp_states.h
_TCP_CLOSE = 7  # an unconnected UDP socket ("UNCONN" in ss)
_STATE = {"tcp": _TCP_LISTEN, "udp": _TCP_CLOSE}

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBxI48x")  # inet_diag_req_v2: family, protocol, extensions, states, an empty sockid
_MESSAGE = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # inet_diag_msg, through the inode


@dataclasses.dataclass(frozen=True, slots=True)
class Socket:
    """One socket from the kernel's table: where it is bound, its inode and the uid that created it."""

    protocol: str  # tcp or udp
    address: str
    port: int
    inode: int
    uid: int


@dataclasses.dataclass(frozen=True, slots=True)
class Containment:
    """What a process's cgroup says about where it runs (None when it says nothing)."""

    runtime: str | None = None  # docker, containerd, cri-o, podman, ...
    container: str | None = None  # the container id (64 hex digits)
    pod_uid: str | None = None  # the Kubernetes pod UID, when the cgroup is under kubepods


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """A process holding a socket."""

    pid: int
    command: str
    user: str
    containment: Containment = Containment()
    other_netns: bool = False  # the process itself lives in another network namespace


@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    """A listening TCP socket or a bound UDP socket, with every process holding it."""

    protocol: str
    address: str
    port: int
    inode: int
    user: str  # the socket's creator (from the kernel table, readable without privileges)
    owners: tuple[Owner, ...] = ()
    note: str | None = None  # why there is no owner, when there is none

    @property
    def loopback(self) -> bool:
        """Bound to a loopback address only (reachable from this host alone)."""
        return ipaddress.ip_address(self.address).is_loopback


@dataclasses.dataclass(frozen=True)
class Inventory:
    """The listeners of one namespace, how they were read, and what could not be known."""

    listeners: list[Listener]
    method: str
    netns: str  # e.g. net:[4026531840]
    unreadable_processes: int = 0
    closed_during_listing: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)


# -- the socket table ------------------------------------------------------------------------


def _proc_address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def parse_proc_table(protocol: str, text: str) -> list[Socket]:
    """The listening (TCP) or unconnected (UDP) sockets of one ``/proc/net/{tcp,udp}[6]`` file's text."""
    wanted = f"{_STATE[protocol]:02X}"
    found: list[Socket] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != wanted:
            continue
        address, _, port = fields[1].partition(":")
        port_number = int(port, 16)
        if port_number == 0:  # a UDP socket not bound to a port yet
            continue
        found.append(Socket(protocol, _proc_address(address), port_number, int(fields[9]), int(fields[7])))
    return found


def read_proc(protocols: Sequence[str] = PROTOCOLS, net_dir: str = "/proc/thread-self/net") -> list[Socket]:
    """Read the socket table from ``/proc`` (the calling thread's namespace)."""
    found: list[Socket] = []
    for protocol in protocols:
        for suffix in ("", "6"):
            try:
                with open(f"{net_dir}/{protocol}{suffix}", encoding="ascii") as table:
                    text = table.read()
            except FileNotFoundError:  # no IPv6 in this kernel
                continue
            found.extend(parse_proc_table(protocol, text))
    return found


def read_netlink(protocols: Sequence[str] = PROTOCOLS) -> list[Socket]:
    """Read the socket table with netlink ``sock_diag`` (the calling thread's namespace)."""
    found: list[Socket] = []
    try:
        channel = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise errors.ScanError(f"cannot open a sock_diag netlink socket: {exc.strerror}") from exc
    with channel:
        channel.bind((0, 0))
        sequence = 0
        for protocol in protocols:
            number = socket.IPPROTO_TCP if protocol == "tcp" else socket.IPPROTO_UDP
            for family in (socket.AF_INET, socket.AF_INET6):
                sequence += 1
                body = _REQUEST.pack(family, number, 0, 1 << _STATE[protocol])
                header = _NLMSG.pack(_NLMSG.size + len(body), _SOCK_DIAG_BY_FAMILY,
                                     _NLM_F_REQUEST | _NLM_F_DUMP, sequence, 0)
                channel.sendto(header + body, (0, 0))
                _receive_dump(channel, protocol, found)
    return found


def _receive_dump(channel: socket.socket, protocol: str, found: list[Socket]) -> None:
    unpack_header = _NLMSG.unpack_from
    unpack_message = _MESSAGE.unpack_from
    while True:
        data = channel.recv(1 << 20)
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, kind, _flags, _seq, _pid = unpack_header(data, offset)
            if kind == _NLMSG_DONE:
                return
            if kind == _NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
                if code == 0:
                    return
                raise errors.ScanError(f"sock_diag refused the dump: {os.strerror(-code)}")
            (family, _state, _timer, _retrans, sport, _dport, source, _dest, _interface, _cookie,
             _expires, _rqueue, _wqueue, uid, inode) = unpack_message(data, offset + _NLMSG.size)
            port = int.from_bytes(sport, "big")
            if port:
                address = (socket.inet_ntop(socket.AF_INET, source[:4]) if family == socket.AF_INET
                           else socket.inet_ntop(socket.AF_INET6, source))
                found.append(Socket(protocol, address, port, inode, uid))
            offset += (length + 3) & ~3
        if not data:
            return


def read_sockets(method: str = "netlink", protocols: Sequence[str] = PROTOCOLS) -> list[Socket]:
    """The socket table of the calling thread's namespace, by ``method`` (netlink or proc)."""
    if method == "netlink":
        return read_netlink(protocols)
    if method == "proc":
        return read_proc(protocols)
    raise errors.SpecError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")


# -- owners ------------------------------------------------------------------------------------


@dataclasses.dataclass
class OwnerScan:
    """The result of one walk over ``/proc/*/fd``: the pids holding each wanted inode."""

    holders: dict[int, list[int]]
    unreadable: int = 0  # processes whose descriptors could not be read (privileges)


def find_holders(inodes: Iterable[int], proc: str = "/proc") -> OwnerScan:
    """Walk ``/proc/*/fd`` once and record which processes hold which of ``inodes``.

    Processes that exit during the walk are skipped; processes whose descriptors
    are unreadable are counted.
    """
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    scan = OwnerScan(holders={})
    if not wanted:
        return scan
    flags = os.O_RDONLY | os.O_DIRECTORY
    readlink = os.readlink
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            directory = os.open(f"{proc}/{name}/fd", flags)
        except PermissionError:
            scan.unreadable += 1
            continue
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue  # exited meanwhile
        try:
            try:
                entries = os.listdir(directory)
            except PermissionError:
                scan.unreadable += 1
                continue
            except (FileNotFoundError, ProcessLookupError):
                continue
            pid = int(name)
            for entry in entries:
                try:
                    target = readlink(entry, dir_fd=directory)
                except OSError:  # the descriptor was closed, or the process exited
                    continue
                inode = wanted.get(target)
                if inode is not None:
                    held = scan.holders.setdefault(inode, [])
                    if pid not in held:
                        held.append(pid)
        finally:
            os.close(directory)
    return scan


_CONTAINER_PATTERNS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"(?:^|/)docker-([0-9a-f]{64})\.scope"), "docker"),
    (re.compile(r"(?:^|/)cri-containerd-([0-9a-f]{64})\.scope"), "containerd"),
    (re.compile(r"(?:^|/)crio-([0-9a-f]{64})\.scope"), "cri-o"),
    (re.compile(r"(?:^|/)libpod-([0-9a-f]{64})\.scope"), "podman"),
    (re.compile(r"/docker/([0-9a-f]{64})(?:/|$)"), "docker"),
    (re.compile(r"/kubepods[^\n]*/([0-9a-f]{64})(?:/|$)"), None),
)
_POD = re.compile(r"kubepods[^\n]*?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


def containment(cgroup_text: str) -> Containment:
    """The container and pod a ``/proc/PID/cgroup`` text names (systemd and cgroupfs drivers, v1 and v2)."""
    runtime: str | None = None
    container: str | None = None
    pod_uid: str | None = None
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        if pod_uid is None and (pod := _POD.search(path)):
            pod_uid = pod.group(1).replace("_", "-")
        if container is None:
            for pattern, name in _CONTAINER_PATTERNS:
                if match := pattern.search(path):
                    container, runtime = match.group(1), name
                    break
    return Containment(runtime, container, pod_uid)


class _Users:
    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    def name(self, uid: int) -> str:
        known = self.names.get(uid)
        if known is None:
            try:
                known = pwd.getpwuid(uid).pw_name
            except KeyError:
                known = str(uid)
            self.names[uid] = known
        return known


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def describe(pid: int, users: _Users, netns: str, proc: str = "/proc") -> Owner | None:
    """The owner record of process ``pid``; None when it exited meanwhile."""
    try:
        uid = os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        return None
    command = _read(f"{proc}/{pid}/comm")
    if command is None:
        return None
    cgroup = _read(f"{proc}/{pid}/cgroup") or ""
    try:
        own_netns = os.readlink(f"{proc}/{pid}/ns/net")
    except OSError:
        own_netns = netns
    return Owner(pid, command.strip(), users.name(uid), containment(cgroup), own_netns != netns)


# -- the inventory -----------------------------------------------------------------------------


def current_netns() -> str:
    """The calling thread's network namespace, as ``net:[INODE]``."""
    return os.readlink("/proc/thread-self/ns/net")


def take(port: int | None = None, protocols: Sequence[str] = PROTOCOLS, method: str = "netlink",
         proc: str = "/proc") -> Inventory:
    """The listeners of the calling thread's namespace (only ``port``'s when given), with their owners."""
    netns = current_netns()
    sockets = read_sockets(method, protocols)
    if port is not None:
        sockets = [s for s in sockets if s.port == port]
    scan = find_holders({s.inode for s in sockets if s.inode}, proc)
    return assemble(sockets, scan, method, netns, proc)


def assemble(sockets: Sequence[Socket], scan: OwnerScan, method: str, netns: str,
             proc: str = "/proc") -> Inventory:
    """Join a socket table with a walk of ``/proc``: owners, notes, and sockets closed meanwhile.

    A socket nobody holds is looked up again in a fresh table: if it is gone,
    it closed during the listing (its owner exited) and is only counted.
    """
    users = _Users()
    owners: dict[int, Owner | None] = {}
    held_by: dict[int, list[Owner]] = {}
    for item in sockets:
        held: list[Owner] = []
        for pid in scan.holders.get(item.inode, ()):
            if pid not in owners:
                owners[pid] = describe(pid, users, netns, proc)
            owner = owners[pid]
            if owner is not None:
                held.append(owner)
        held_by[item.inode] = held
    unowned = {inode for inode, held in held_by.items() if not held}
    still_open: set[int] = set()
    if unowned:  # the holders may have exited since the table was read: is the socket still there?
        protocols = sorted({s.protocol for s in sockets})
        still_open = {s.inode for s in read_sockets(method, protocols)} & unowned
    listeners: list[Listener] = []
    closed = 0
    for item in sockets:
        held = held_by[item.inode]
        note: str | None = None
        if not held:
            if item.inode not in still_open:
                closed += 1
                continue
            if scan.unreadable:
                note = (f"owner unknown: {scan.unreadable} processes' descriptors are unreadable "
                        "without privileges (run as root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)")
            elif item.inode == 0:
                note = "no owner: a kernel socket"
            else:
                note = ("no owner found: no process visible here holds it (a kernel socket, a process outside this "
                        "PID namespace, or one that exited during the listing)")
        listeners.append(Listener(item.protocol, item.address, item.port, item.inode, users.name(item.uid),
                                  tuple(held), note))
    listeners.sort(key=lambda listener: (listener.protocol, listener.port, listener.address))
    notes: list[str] = []
    if closed:
        notes.append(f"{closed} sockets closed during the listing (their processes exited); not listed")
    if scan.unreadable:
        notes.append(f"{scan.unreadable} processes' descriptors were unreadable without privileges")
    return Inventory(listeners, method, netns, scan.unreadable, closed, notes)
