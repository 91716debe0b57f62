"""Network namespaces for tests: create, wire, run commands in, and enter from a thread.

Only addresses in 198.18.0.0/15 are assigned, and nothing is routed from the
root namespace: every test host is reachable only from the namespaces the
tests create.  :func:`entered` moves the *calling thread* into a namespace with
``setns(2)`` (Python 3.11 has no ``os.setns``) so in-process code opens its
sockets there; threads and processes it starts inherit that namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator, Sequence

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str, input: str | None = None) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, input=input)


def add(name: str) -> None:
    ip("netns", "add", name)
    run(name, ["ip", "link", "set", "lo", "up"])


def delete(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def existing() -> list[str]:
    output = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in output.stdout.splitlines() if line.strip()]


def run(name: str, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        ["ip", "netns", "exec", name, *argv], check=True, capture_output=True, text=True, **kwargs
    )


def popen(name: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", name, *argv], **kwargs)  # type: ignore[call-overload, no-any-return]


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside namespace ``name``."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(f"/run/netns/{name}")
        try:
            yield
        finally:
            if _libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the original namespace")
    finally:
        os.close(original)


def veth_to_bridge(switch: str, bridge: str, host_ns: str, ifname: str, cidr: str) -> None:
    """Connect ``host_ns`` to ``bridge`` (inside ``switch``) with a veth, address ``cidr``."""
    outer = f"v{ifname}"
    ip("link", "add", outer, "netns", switch, "type", "veth", "peer", "name", "eth0",
       "netns", host_ns)
    run(switch, ["ip", "link", "set", outer, "master", bridge, "up"])
    run(host_ns, ["ip", "addr", "add", cidr, "dev", "eth0"])
    run(host_ns, ["ip", "link", "set", "eth0", "up"])
