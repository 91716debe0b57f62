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
(:attr:`Inventory.closed_during_listing`; the order that makes this exact is
described in :func:`take`).  Connected UDP sockets are not
listed (they are not waiting for anyone).
"""

from __future__ import annotations

import _socket  # the C module: ``socket`` adds 2.5 ms of enum building to start-up, for nothing used here
import functools
import marshal
import operator
import os
import pwd
import re
import struct
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

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
_MESSAGE = struct.Struct("=BBBBH2s16s16sI8sIIIII")  # inet_diag_msg, through the inode (ports in network order)


class Socket(NamedTuple):
    """One socket from the kernel's table: where it is bound, its inode and the uid that created it."""

    protocol: str  # tcp or udp
    address: str
    port: int
    inode: int
    uid: int


# NamedTuple's own __new__ is a Python function, three times slower than tuple's: 10,000 sockets notice.
_new_socket: Callable[[tuple[str, str, int, int, int]], Socket] = functools.partial(tuple.__new__, Socket)


class Containment(NamedTuple):
    """What a process's cgroup says about where it runs (None when it says nothing)."""

    runtime: str | None = None  # docker, containerd, cri-o, podman, ...
    container: str | None = None  # the container id (64 hex digits)
    pod_uid: str | None = None  # the Kubernetes pod UID, when the cgroup is under kubepods


class Owner(NamedTuple):
    """A process holding a socket."""

    pid: int
    command: str
    user: str
    containment: Containment = Containment()
    other_netns: bool = False  # the process itself lives in another network namespace


class Listener(NamedTuple):
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
        import ipaddress  # on first use: the listing itself never needs it

        return ipaddress.ip_address(self.address).is_loopback


_new_listener: Callable[[tuple[str, str, int, int, str, tuple[Owner, ...], str | None]], Listener] = \
    functools.partial(tuple.__new__, Listener)


class Inventory(NamedTuple):
    """The listeners of one namespace, how they were read, and what could not be known."""

    listeners: list[Listener]
    method: str
    netns: str  # e.g. net:[4026531840]
    unreadable_processes: int = 0
    closed_during_listing: int = 0
    notes: tuple[str, ...] = ()


# -- the socket table ------------------------------------------------------------------------


def _proc_address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return _socket.inet_ntop(_socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return _socket.inet_ntop(_socket.AF_INET6, words)


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
        channel = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise errors.ScanError(f"cannot open a sock_diag netlink socket: {exc.strerror} "
                               "(--method proc reads /proc/net instead)") from exc
    try:
        channel.bind((0, 0))
        sequence = 0
        for protocol in protocols:
            number = _socket.IPPROTO_TCP if protocol == "tcp" else _socket.IPPROTO_UDP
            for family in (_socket.AF_INET, _socket.AF_INET6):
                sequence += 1
                body = _REQUEST.pack(family, number, 0, 1 << _STATE[protocol])
                header = _NLMSG.pack(_NLMSG.size + len(body), _SOCK_DIAG_BY_FAMILY,
                                     _NLM_F_REQUEST | _NLM_F_DUMP, sequence, 0)
                channel.sendto(header + body, (0, 0))
                _receive_dump(channel, protocol, found)
    finally:
        channel.close()
    return found


@functools.cache
def _uniform(length: int) -> struct.Struct:
    """A header and a message of ``length`` bytes in one struct (only the fields read are named)."""
    return struct.Struct(f"=4xH10xB3xH2x16s28x12xII{length - _NLMSG.size - _MESSAGE.size}x")


def _receive_dump(channel: _socket.socket, protocol: str, found: list[Socket]) -> None:
    names: dict[tuple[int, bytes], str] = {}  # addresses repeat: format each once (per family: 0.0.0.0 and :: look alike)
    new = _new_socket
    ntohs = _socket.ntohs
    append = found.append

    def named(family: int, source: bytes) -> str:
        address = names[family, source] = (_socket.inet_ntop(_socket.AF_INET, source[:4]) if family == _socket.AF_INET
                                   else _socket.inet_ntop(_socket.AF_INET6, source))
        return address

    while True:
        data = channel.recv(1 << 20)
        if not data:
            return
        length = _NLMSG.unpack_from(data)[0]
        if length >= _NLMSG.size + _MESSAGE.size and length % 4 == 0 and len(data) % length == 0:
            # the usual case: a buffer of same-sized socket messages, unpacked in one C loop
            rows = list(_uniform(length).iter_unpack(data))
            if all(row[0] == _SOCK_DIAG_BY_FAMILY for row in rows):
                for _kind, family, sport, source, uid, inode in rows:
                    if sport:
                        address = names.get((family, source)) or named(family, source)
                        append(new((protocol, address, ntohs(sport), inode, uid)))
                continue
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
            if kind == _NLMSG_DONE:
                return
            if kind == _NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
                if code == 0:
                    return
                raise errors.ScanError(f"sock_diag refused the dump: {os.strerror(-code)}")
            (family, _state, _timer, _retrans, sport, _dport, source, _dest, _interface, _cookie,
             _expires, _rqueue, _wqueue, uid, inode) = _MESSAGE.unpack_from(data, offset + _NLMSG.size)
            if sport:
                append(new((protocol, names.get((family, source)) or named(family, source), ntohs(sport), inode, uid)))
            offset += (length + 3) & ~3


def read_sockets(method: str = "netlink", protocols: Sequence[str] = PROTOCOLS) -> list[Socket]:
    """The socket table of the calling thread's namespace, by ``method`` (netlink or proc)."""
    if method == "netlink":
        return read_netlink(protocols)
    if method == "proc":
        return read_proc(protocols)
    raise errors.SpecError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")


# -- owners ------------------------------------------------------------------------------------


class OwnerScan:
    """The result of one walk over ``/proc/*/fd``: the pids holding each socket inode."""

    def __init__(self, holders: dict[int, list[int]], unreadable: int = 0) -> None:
        self.holders = holders
        self.unreadable = unreadable  # processes whose descriptors could not be read (privileges)


def _walker_count() -> int:
    """How many processes walk ``/proc``: one per usable core, at most :data:`_MOST_WALKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MOST_WALKERS))


_MOST_WALKERS = 2  # measured on 2 cores only (bench/listeners.py)


def _socket_links(proc: str, name: str) -> list[str] | None:
    """The ``socket:[INODE]`` links among the descriptors of process ``name``; None when they are unreadable.

    An empty list when the process exited meanwhile.  One ``readlink`` per
    descriptor, in a C-level loop while the process stays put.
    """
    readlink = os.readlink
    try:
        directory = os.open(f"{proc}/{name}/fd", os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        return None
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return []  # exited meanwhile
    try:
        try:
            entries = os.listdir(directory)
        except PermissionError:
            return None
        except (FileNotFoundError, ProcessLookupError):
            return []
        try:  # the fast path: one C-level loop over the descriptors
            links = list(map(functools.partial(readlink, dir_fd=directory), entries))
        except OSError:  # a descriptor closed meanwhile, or the process exited: one by one
            links = []
            for entry in entries:
                try:
                    links.append(readlink(entry, dir_fd=directory))
                except OSError:
                    continue
    finally:
        os.close(directory)
    return [link for link in links if link.startswith("socket:[")]


def _turns(count: int) -> int | None:
    """A pipe holding the numbers 0 to ``count - 1`` (4 bytes each) and no writer: its read end, or None.

    Walkers take turns reading one number at a time (each read of 4 bytes
    takes one whole number), so a walker that drew a process with many
    descriptors simply draws fewer.  None when the pipe cannot hold them all.
    """
    reading, writing = os.pipe()
    numbers = struct.pack(f"={count}I", *range(count))
    try:
        os.set_blocking(writing, False)
        written = os.write(writing, numbers)
    except OSError:
        written = 0
    finally:
        os.close(writing)
    if written != len(numbers):
        os.close(reading)
        return None
    return reading


def _walk_turns(proc: str, names: Sequence[str], turns: int) -> dict[str, list[str] | None]:
    """Walk the processes whose numbers this walker draws from ``turns``, until none is left."""
    found: dict[str, list[str] | None] = {}
    while number := os.read(turns, 4):
        name = names[int.from_bytes(number, sys.byteorder)]
        found[name] = _socket_links(proc, name)
    return found


def _forked_walker(proc: str, names: Sequence[str], turns: int) -> tuple[int, int] | None:
    """A forked child walking its turns and writing its findings (marshal) to a pipe: (pid, read end), or None.

    The child only makes ``os`` calls, marshals and leaves with ``os._exit``
    (no buffers flushed twice, no exit handlers run twice).
    """
    reading, writing = os.pipe()
    try:
        child = os.fork()
    except OSError:  # no process to be had: the other walkers take its turns
        os.close(reading)
        os.close(writing)
        return None
    if child == 0:  # pragma: no cover - the child's own lines are not traced
        try:
            os.close(reading)
            view = memoryview(marshal.dumps(_walk_turns(proc, names, turns)))
            while view:
                view = view[os.write(writing, view):]
        finally:
            os._exit(0)
    os.close(writing)
    return child, reading


def _collect(child: int, reading: int) -> dict[str, list[str] | None]:
    """A forked walker's findings; nothing if it died before it wrote them (killed, out of memory)."""
    chunks = []
    try:
        while chunk := os.read(reading, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(reading)
        os.waitpid(child, 0)
    try:
        found = marshal.loads(b"".join(chunks))
    except (EOFError, ValueError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def find_holders(proc: str = "/proc", walkers: int | None = None) -> OwnerScan:
    """Walk ``/proc/*/fd`` once and record which processes hold which socket inodes.

    Every socket is recorded, not only listeners, and every process holding
    it (in ``/proc`` order, pid ascending).  Processes that exit during the
    walk are skipped; processes whose descriptors are unreadable are counted.

    ``walkers`` processes (default: one per core, at most two) share the
    walk: this one and forked children, taking turns at drawing the next
    process from a pipe (:func:`_turns`); the children hand their findings
    back through a pipe of their own.  The walk is one ``readlink`` syscall
    per descriptor; threads would share the GIL between syscalls and overlap
    far less (bench/listeners.py measures one walker against the default).
    A process whose walker failed is walked here afterwards.  One walker
    alone when the turns do not fit in a pipe (some 16,000 processes).
    """
    names = [name for name in os.listdir(proc) if name.isdigit()]
    count = max(1, min(_walker_count() if walkers is None else walkers, len(names)))
    if count > 1 and len(os.listdir("/proc/self/task")) > 1:
        count = 1  # never fork a process with other threads (a lock one of them holds would stay held in the child)
    turns = _turns(len(names)) if count > 1 else None
    if turns is None:
        found = {name: _socket_links(proc, name) for name in names}
    else:
        try:
            forked = [_forked_walker(proc, names, turns) for _ in range(1, count)]
            found = _walk_turns(proc, names, turns)
        finally:
            os.close(turns)
        for child in forked:
            if child is not None:
                found.update(_collect(*child))
        for name in names:
            if name not in found:  # drawn by a walker that died
                found[name] = _socket_links(proc, name)
    scan = OwnerScan(holders={})
    holders = scan.holders
    for name in names:  # in /proc order, whichever walker walked the process
        links = found.get(name, [])
        if links is None:
            scan.unreadable += 1
            continue
        if not links:
            continue
        pid = int(name)
        for link in set(links):  # each socket once per process
            inode = int(link[8:-1])
            held = holders.get(inode)
            if held is None:
                holders[inode] = [pid]
            else:
                held.append(pid)
    return scan


@functools.cache
def _patterns() -> tuple[tuple[tuple[re.Pattern[str], str | None], ...], re.Pattern[str]]:
    """The container id patterns of the common runtimes, and the pod UID pattern (compiled on first use)."""
    containers = (
        (re.compile(r"(?:^|/)docker-([0-9a-f]{64})\.scope"), "docker"),
        (re.compile(r"(?:^|/)cri-containerd-([0-9a-f]{64})\.scope"), "containerd"),
        (re.compile(r"(?:^|/)crio-([0-9a-f]{64})\.scope"), "cri-o"),
        (re.compile(r"(?:^|/)libpod-([0-9a-f]{64})\.scope"), "podman"),
        (re.compile(r"/docker/([0-9a-f]{64})(?:/|$)"), "docker"),
        (re.compile(r"/kubepods[^\n]*/([0-9a-f]{64})(?:/|$)"), None),
    )
    pod = re.compile(r"kubepods[^\n]*?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
    return containers, pod


_CONTAINER_WORDS = ("docker", "containerd", "crio", "libpod", "kubepods")  # one is in every pattern of _patterns


def containment(cgroup_text: str) -> Containment:
    """The container and pod a ``/proc/PID/cgroup`` text names (systemd and cgroupfs drivers, v1 and v2)."""
    if not any(word in cgroup_text for word in _CONTAINER_WORDS):  # a host process: no pattern can match
        return Containment()
    runtime: str | None = None
    container: str | None = None
    pod_uid: str | None = None
    containers, pod_pattern = _patterns()
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        if pod_uid is None and (pod := pod_pattern.search(path)):
            pod_uid = pod.group(1).replace("_", "-")
        if container is None:
            for pattern, name in containers:
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
    """The listeners of the calling thread's namespace (only ``port``'s when given), with their owners.

    The owners are walked *before* the table is read: a socket in the table
    that no walked process held was opened after the walk began (or belongs to
    the kernel or to a process this PID namespace does not show); a socket
    whose holders all exited before they could be described closed during the
    listing and is only counted.  No second read of the table is needed.
    The walk is shared by one process per core (:func:`find_holders`).
    """
    netns = current_netns()
    scan = find_holders(proc)
    sockets = read_sockets(method, protocols)
    if port is not None:
        sockets = [s for s in sockets if s.port == port]
    return assemble(sockets, scan, method, netns, proc)


_UNREADABLE = ("owner unknown: {} processes' descriptors are unreadable without privileges "
               "(run as root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)")
_KERNEL = "no owner: a kernel socket"
_UNSEEN = ("no owner found: no process visible here held it when the descriptors were read (a kernel socket, "
           "a process outside this PID namespace, or a socket opened during the listing)")


def _owners_of(pids: Sequence[int], owners: dict[int, Owner | None], users: _Users, netns: str,
               proc: str) -> tuple[Owner, ...]:
    """The owner records of these holders that still run (each process described once, in ``owners``)."""
    for pid in pids:
        if pid not in owners:
            owners[pid] = describe(pid, users, netns, proc)
    return tuple(owner for pid in pids if (owner := owners[pid]) is not None)


def assemble(sockets: Sequence[Socket], scan: OwnerScan, method: str, netns: str,
             proc: str = "/proc") -> Inventory:
    """Join a socket table with an earlier walk of ``/proc`` (see :func:`take`): owners, notes, closed sockets."""
    users = _Users()
    owners: dict[int, Owner | None] = {}
    alone: dict[int, tuple[Owner, ...]] = {}  # the owners of sockets held by one process, by pid
    joined: dict[tuple[int, ...], tuple[Owner, ...]] = {}  # of sockets held by several, by their pids
    holders = scan.holders
    user_names = users.names
    unseen = _UNREADABLE.format(scan.unreadable) if scan.unreadable else _UNSEEN
    listeners: list[Listener] = []
    append = listeners.append
    new = _new_listener
    closed = 0
    for protocol, address, port, inode, uid in sockets:
        pids = holders.get(inode)
        note: str | None = None
        if pids is None:
            held: tuple[Owner, ...] = ()
            note = _KERNEL if inode == 0 else unseen
        else:
            if len(pids) == 1:
                found = alone.get(pids[0])
                if found is None:
                    found = alone[pids[0]] = _owners_of(pids, owners, users, netns, proc)
            else:
                key = tuple(pids)
                found = joined.get(key)
                if found is None:
                    found = joined[key] = _owners_of(pids, owners, users, netns, proc)
            held = found
            if not held:  # every holder exited after the walk: the socket closed with the last one
                closed += 1
                continue
        user = user_names.get(uid)
        append(new((protocol, address, port, inode, user if user is not None else users.name(uid), held, note)))
    # by protocol, port and address: three stable sorts on one field each are twice as fast as one on a tuple
    listeners.sort(key=operator.itemgetter(1))
    listeners.sort(key=operator.itemgetter(2))
    listeners.sort(key=operator.itemgetter(0))
    notes: list[str] = []
    if closed:
        notes.append(f"{closed} sockets closed during the listing (their processes exited); not listed")
    if scan.unreadable:
        notes.append(f"{scan.unreadable} processes' descriptors were unreadable without privileges")
    return Inventory(listeners, method, netns, scan.unreadable, closed, tuple(notes))
