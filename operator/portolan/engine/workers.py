"""Worker processes for the TCP connect pass: fork, split the ports, merge packed verdicts from pipes.

Each worker scans an interleaved share of the ports with its share of the
rate and concurrency and writes :data:`portolan.engine.collecting.RECORD`
records to its pipe, ending with a trailer that carries its packet count.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading

from portolan import errors
from portolan.engine import collecting, plans, tcp_scanning
from portolan.models import results, scanjobs


def tcp_in_workers(
    plan_: plans.Plan, collector: collecting.Collector, workers: int, stop: threading.Event | None
) -> tcp_scanning.TcpStats:
    """Split the TCP pass over forked processes (ports interleaved), merge their verdicts."""
    timing = plan_.timing
    share = timing.model_copy(
        update={
            "max_rate": None if timing.max_rate is None else max(1, timing.max_rate // workers),
            "max_host_rate": (
                None if timing.max_host_rate is None else max(1, timing.max_host_rate // workers)
            ),
            "concurrency": max(1, timing.concurrency // workers),
        }
    )
    children: list[tuple[int, int]] = []
    for index in range(workers):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(read_fd)
            code = 0
            try:
                code = _worker(plan_, share, plan_.tcp_ports[index::workers], write_fd)
            finally:
                os._exit(code)
        os.close(write_fd)
        children.append((pid, read_fd))
    stats = tcp_scanning.TcpStats()
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytearray] = {}
    for _, fd in children:
        selector.register(fd, selectors.EVENT_READ)
        buffers[fd] = bytearray()
    open_fds = len(children)
    size = collecting.RECORD.size
    try:
        while open_fds:
            if stop is not None and stop.is_set():
                for pid, _ in children:
                    _terminate(pid)
            for key, _ in selector.select(0.1):
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
    finally:
        selector.close()
        failed = []
        for pid, fd in children:
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) not in (0, -15):
                failed.append(pid)
    if failed and not (stop is not None and stop.is_set()):
        raise errors.ScanError(f"{len(failed)} TCP worker process(es) failed")
    return stats


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)


def _worker(plan_: plans.Plan, timing: scanjobs.Timing, ports: list[int], fd: int) -> int:
    """A child process: scan its share of ports and write packed verdicts to the pipe."""
    out = bytearray()
    pack = collecting.RECORD.pack

    def verdict(
        host: int, port: int, state: results.PortState, reason: results.Reason,
        rtt: float | None, tries: int,
    ) -> None:
        out.extend(
            pack(host, port, collecting.STATE_INDEX[state], collecting.REASON_INDEX[reason], min(tries, 254),
                 -1.0 if rtt is None else rtt)
        )
        if len(out) >= 1 << 15:
            _write_all(fd, out)
            out.clear()

    try:
        scanner = tcp_scanning.TcpConnectScanner(plan_.targets, ports, timing, verdict)
        stats = scanner.run()
        out.extend(pack(min(stats.packets, (1 << 32) - 1), 0, collecting.TRAILER, 0, 0, 0.0))
        _write_all(fd, out)
        return 0
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
    return max(1, min(os.cpu_count() or 1, 4))
