"""Free-port selection: ports that binding proves free now, reserved for a while against parallel callers.

A port is *free* when a socket of the asked protocol binds it, without
``SO_REUSEADDR``, on both wildcard addresses (``0.0.0.0`` and ``::``): that
fails when anything holds it on any address, including sockets in TIME_WAIT.
A table alone (``/proc/net/tcp``) is never trusted.

The kernel's ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``) is
skipped unless asked: the kernel hands those ports to outgoing connections at
any moment, so a port chosen there may be taken before its user binds it.

Reservations.  The picker cannot keep holding a port after it returns (the
caller binds it later), so two parallel callers could both see one port free.
Each picked port therefore gets a *lease*: a small file ``PROTOCOL-PORT`` in a
directory per network namespace under the runtime directory, holding the lease's
expiry.  The decision on a port is made under an exclusive ``flock`` of its
file (a caller that finds it locked moves on); a port whose lease has not
expired is skipped, even if it binds.  A caller that binds its port before the
lease ends keeps it for good (binding then fails for everyone else).  Lease
files are never deleted (deleting a lock file races with its next user); there
is at most one per port.  Leases only coordinate callers that share the runtime
directory; processes binding ports on their own are seen by the bind check alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import random
import socket
import time
from collections.abc import Callable, Iterator

from portolan import errors

EPHEMERAL_RANGE_PATH = "/proc/sys/net/ipv4/ip_local_port_range"
DEFAULT_LEASE_SECONDS = 60.0


def parse_range(text: str) -> tuple[int, int]:
    """``LOW-HIGH`` (or one port) as a pair; SpecError when malformed or out of 1-65535."""
    low_text, dash, high_text = text.strip().partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if dash else low
    except ValueError:
        raise errors.SpecError(f"malformed port range {text!r}; use LOW-HIGH, e.g. 30000-32767") from None
    if not 1 <= low <= high <= 65535:
        raise errors.SpecError(f"port range {text!r} must satisfy 1 <= LOW <= HIGH <= 65535")
    return low, high


def ephemeral_range(path: str = EPHEMERAL_RANGE_PATH) -> tuple[int, int]:
    """The kernel's ephemeral port range (this network namespace's)."""
    with open(path, encoding="ascii") as handle:
        low, high = handle.read().split()
    return int(low), int(high)


def binds(port: int, protocol: str) -> bool:
    """Whether ``port`` binds now on both wildcard addresses (without SO_REUSEADDR)."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    attempts: list[tuple[socket.AddressFamily, str]] = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        attempts.append((socket.AF_INET6, "::"))
    for family, address in attempts:
        try:
            probe = socket.socket(family, kind)
        except OSError as exc:
            if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                continue  # no IPv6 here
            raise
        with probe:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((address, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                if exc.errno == errno.EADDRNOTAVAIL:
                    continue  # IPv6 disabled on every interface
                raise
    return True


def runtime_directory() -> str:
    """Where leases live: $PORTOLAN_RUNTIME_DIR, else /run/portolan as root, else $XDG_RUNTIME_DIR or /tmp."""
    configured = os.environ.get("PORTOLAN_RUNTIME_DIR")
    if configured:
        return configured
    if os.geteuid() == 0:
        return "/run/portolan"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return f"{xdg}/portolan" if xdg else f"/tmp/portolan-{os.geteuid()}"


@dataclasses.dataclass
class Leases:
    """The lease files of one network namespace under a runtime directory."""

    directory: str
    seconds: float = DEFAULT_LEASE_SECONDS
    clock: Callable[[], float] = time.time

    @classmethod
    def here(cls, root: str | None = None, seconds: float = DEFAULT_LEASE_SECONDS,
             clock: Callable[[], float] = time.time) -> Leases:
        """The leases of the calling thread's network namespace."""
        namespace = os.readlink("/proc/thread-self/ns/net").strip("net:[]")
        directory = os.path.join(root or runtime_directory(), "ports", f"netns-{namespace}")
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise errors.ScanError(f"cannot create the lease directory {directory}: {exc.strerror}") from exc
        return cls(directory, seconds, clock)

    @contextlib.contextmanager
    def deciding(self, port: int, protocol: str) -> Iterator[int | None]:
        """The lease file of a port, locked; None when another caller is deciding on it right now."""
        path = os.path.join(self.directory, f"{protocol}-{port}")
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            yield descriptor
        finally:
            os.close(descriptor)  # releases the lock

    def leased(self, descriptor: int) -> bool:
        """Whether the locked lease file holds a lease that has not expired."""
        os.lseek(descriptor, 0, os.SEEK_SET)
        text = os.read(descriptor, 128).decode("ascii", "replace").split()
        try:
            return bool(text) and float(text[0]) > self.clock()
        except ValueError:
            return False

    def grant(self, descriptor: int) -> None:
        """Write a lease that expires ``seconds`` from now into the locked file."""
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{self.clock() + self.seconds:.3f} {os.getpid()}\n".encode("ascii"), 0)

    def release(self, port: int, protocol: str) -> None:
        """End this caller's lease on a port (waiting for the lock: the decision on it is short)."""
        path = os.path.join(self.directory, f"{protocol}-{port}")
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.ftruncate(descriptor, 0)
        finally:
            os.close(descriptor)


@dataclasses.dataclass(frozen=True)
class Picked:
    """Ports picked, and why the others in the range were not."""

    ports: list[int]
    busy: int = 0  # failed to bind
    leased: int = 0  # reserved by another caller
    ephemeral_skipped: int = 0


def pick(low: int, high: int, count: int, protocol: str, leases: Leases, allow_ephemeral: bool = False,
         ephemeral: tuple[int, int] | None = None, rng: random.Random | None = None) -> Picked:
    """Up to ``count`` ports of ``low``-``high`` that bind now and that no lease holds; each gets a lease.

    Candidates are tried from a random starting point, so parallel callers
    rarely contend for the same port; ``ephemeral`` (default: the kernel's
    range) is skipped unless ``allow_ephemeral``.
    """
    if protocol not in ("tcp", "udp"):
        raise errors.SpecError(f"unknown protocol {protocol!r}; use tcp or udp")
    if count < 1:
        raise errors.SpecError("--count must be at least 1")
    skip_low, skip_high = (0, -1) if allow_ephemeral else (ephemeral or ephemeral_range())
    candidates = [port for port in range(low, high + 1) if not skip_low <= port <= skip_high]
    skipped = high - low + 1 - len(candidates)
    if candidates:
        start = (rng or random.Random()).randrange(len(candidates))
        candidates = candidates[start:] + candidates[:start]
    picked: list[int] = []
    busy = leased = 0
    for port in candidates:
        if len(picked) == count:
            break
        with leases.deciding(port, protocol) as descriptor:
            if descriptor is None or leases.leased(descriptor):
                leased += 1
                continue
            if not binds(port, protocol):
                busy += 1
                continue
            leases.grant(descriptor)
            picked.append(port)
    return Picked(sorted(picked), busy, leased, skipped)
