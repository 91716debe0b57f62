"""Worker processes for the TCP connect pass: fork, split the ports, merge packed verdicts from pipes.

Each worker scans an interleaved share of the ports with its share of the
rate and concurrency and writes :data:`portolan.engine.collecting.RECORD`
records to its pipe, ending with a trailer that carries its packet count.

Ending: SIGINT/SIGTERM in a worker sets its own stop event (the parent sends
SIGTERM when its ``stop`` is set), so a worker writes what it found and exits
within one poll interval; the parent keeps reading until every pipe ends and
SIGKILLs a worker that is still there a second later.  If the parent fails
(an output write error, a broken pipe), every worker is SIGKILLed before it is
reaped.  A worker holds only its own pipe (the read ends of earlier workers
are closed in the child), so a worker whose reader is gone gets EPIPE instead
of blocking forever, and a worker whose parent dies gets SIGTERM (Linux's
parent-death signal).  The worker count is capped at the number of TCP ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import threading
import time

from portolan import errors
from portolan.engine import collecting, plans, stopping, tcp_scanning
from portolan.models import results

MAX_WORKERS = 64
_GRACE = 1.0  # seconds a stopped worker gets to write its verdicts before SIGKILL
_PR_SET_PDEATHSIG = 1
EXIT_STOPPED = 3  # a worker's exit code when a signal stopped it before its share was done


def tcp_in_workers(
    plan_: plans.Plan, collector: collecting.Collector, workers: int, stop: threading.Event | None
) -> tcp_scanning.TcpStats:
    """Split the TCP pass over forked processes (ports interleaved), merge their verdicts."""
    workers = max(1, min(workers, len(plan_.tcp_ports)))
    timing = plan_.timing
    share = timing._replace(
        max_rate=None if timing.max_rate is None else max(1, timing.max_rate // workers),
        max_host_rate=None if timing.max_host_rate is None else max(1, timing.max_host_rate // workers),
        concurrency=max(1, timing.concurrency // workers),
    )
    children: list[tuple[int, int]] = []
    parent = os.getpid()
    try:
        for index in range(workers):
            read_fd, write_fd = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(read_fd)
                os.close(write_fd)
                raise
            if pid == 0:  # pragma: no cover - runs in the child
                code = 1
                try:
                    os.close(read_fd)
                    for _, earlier in children:
                        os.close(earlier)  # only the parent may hold the read ends
                    code = _worker(plan_, share, plan_.tcp_ports[index::workers], write_fd, parent,
                                   count_closed=not collector.keep_all and collector.on_port is None)
                finally:
                    os._exit(code)
            os.close(write_fd)
            children.append((pid, read_fd))
    except OSError as exc:  # pipes or processes ran out (ulimit -n, -u)
        _reap(children, kill=True)
        raise errors.ScanError(f"cannot start {workers} TCP worker processes: {exc.strerror}; "
                               "lower --workers") from exc
    stats = tcp_scanning.TcpStats()
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytearray] = {}
    for _, fd in children:
        selector.register(fd, selectors.EVENT_READ)
        buffers[fd] = bytearray()
    open_fds = len(children)
    size = collecting.RECORD.size
    drained = False
    deadline: float | None = None
    try:
        while open_fds:
            if stop is not None and stop.is_set():
                if deadline is None:
                    deadline = time.monotonic() + _GRACE
                    for pid, _ in children:
                        _signal(pid, signal.SIGTERM)
                elif time.monotonic() > deadline:
                    for pid, _ in children:
                        _signal(pid, signal.SIGKILL)
            for key, _ in selector.select(0.05):
                fd = int(key.fd)
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    selector.unregister(fd)
                    open_fds -= 1
                    continue
                buffer = buffers[fd]
                buffer.extend(chunk)
                whole = len(buffer) - len(buffer) % size
                stats.packets += collector.tcp_records(collecting.RECORD.iter_unpack(bytes(buffer[:whole])))
                del buffer[:whole]
        drained = True
    finally:
        selector.close()
        failed = _reap(children, kill=not drained)
    if failed and not (stop is not None and stop.is_set()):
        # A worker that stopped on its own (its parent looked gone) scanned only part of its share:
        # reporting the rest as never probed would pass for a complete, empty scan.
        raise errors.ScanError(f"{len(failed)} TCP worker process(es) failed or stopped early")
    return stats


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _reap(children: list[tuple[int, int]], *, kill: bool) -> list[int]:
    """Close the parent's read ends and wait for every worker (SIGKILLed first if ``kill``); the failed pids."""
    failed = []
    for pid, fd in children:
        os.close(fd)
        if kill:
            _signal(pid, signal.SIGKILL)
    for pid, _ in children:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:  # stopped (EXIT_STOPPED, SIGTERM) counts unless asked
            failed.append(pid)
    return failed


def _own_stop(parent: int) -> threading.Event:
    """In a worker: SIGINT/SIGTERM (and the parent's death) set this worker's stop event.

    The parent is named by its pid, not assumed alive unless ``getppid()`` is 1: in a container
    the scanner is often pid 1 itself, so a child of a living parent sees ``getppid() == 1``.
    """
    stop = threading.Event()
    for signum in stopping.SIGNALS:
        signal.signal(signum, lambda _signum, _frame: stop.set())
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl (the child was re-parented)
        stop.set()
    return stop


def _worker(plan_: plans.Plan, timing: plans.Timing, ports: list[int], fd: int, parent: int, *,
            count_closed: bool = False) -> int:
    """A child process: scan its share of ports and write packed verdicts to the pipe.

    With ``count_closed`` a host's closed/conn-refused verdicts past the first
    ``COLLAPSE_ABOVE + 1`` are counted, not sent one by one (:data:`collecting.CLOSED_COUNT`).
    Exits 0 when its share is done, :data:`EXIT_STOPPED` when a signal (or its parent's death)
    stopped it first, 1 on any failure.
    """
    out = bytearray()
    pack = collecting.RECORD.pack
    closed = results.PortState.CLOSED
    refused = results.Reason.CONN_REFUSED
    sent_closed = [0] * len(plan_.targets)  # closed verdicts sent in full, per host
    counted = [0] * len(plan_.targets)  # closed verdicts counted and not yet sent, per host
    held = [0]  # closed verdicts counted and not yet sent, all hosts
    in_full = collecting.COLLAPSE_ABOVE + 1 if count_closed else len(plan_.tcp_ports) + 1

    def flush_counts() -> None:
        for host, count in enumerate(counted):
            if count:
                out.extend(pack(host, count, collecting.CLOSED_COUNT, 0, 0, 0.0))
                counted[host] = 0
        held[0] = 0

    def verdict(
        host: int, port: int, state: results.PortState, reason: results.Reason,
        rtt: float | None, tries: int,
    ) -> None:
        if state is closed and reason is refused:
            if sent_closed[host] >= in_full:
                counted[host] += 1
                held[0] += 1
                if held[0] >= 2048:  # keeps progress moving, however many hosts share the counts
                    flush_counts()
                    _write_all(fd, out)
                    out.clear()
                return
            sent_closed[host] += 1
        out.extend(
            pack(host, port, collecting.STATE_INDEX[state], collecting.REASON_INDEX[reason], min(tries, 254),
                 -1.0 if rtt is None else rtt)
        )
        if len(out) >= 1 << 15:
            _write_all(fd, out)
            out.clear()

    try:
        stop = _own_stop(parent)
        scanner = tcp_scanning.TcpConnectScanner(plan_.targets, ports, timing, verdict, stop=stop)
        stats = scanner.run()
        flush_counts()
        out.extend(pack(min(stats.packets, (1 << 32) - 1), 0, collecting.TRAILER, 0, 0, 0.0))
        _write_all(fd, out)
        return EXIT_STOPPED if stop.is_set() else 0
    except BaseException:
        return 1
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def default_workers(plan_: plans.Plan) -> int:
    """Worker processes for the TCP pass: one per CPU for big passes, else one."""
    if len(plan_.targets) * len(plan_.tcp_ports) < 8192:
        return 1
    return max(1, min(os.cpu_count() or 1, 4, len(plan_.tcp_ports)))
