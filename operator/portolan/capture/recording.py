"""Recording a scan's own traffic as evidence: a capture thread around a scan.

A :class:`Recorder` opens an AF_PACKET socket on every interface with a filter limited to
the scan's targets (and ICMP errors), before the first probe is sent, and writes pcap or
pcapng files through the rotating writer.  :meth:`Recorder.finish` waits a short grace
period for late replies, stops the thread, closes the last file and returns what was
written.  Opening fails without CAP_NET_RAW; the caller decides whether that is fatal
(for a shard it is not: the scan runs and the status says why there is no evidence).
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
import time
from collections.abc import Callable, Iterable

from portolan import errors
from portolan.capture import capturing, filters, pcapfiles


@dataclasses.dataclass
class Evidence:
    """What a recording produced: files (in order), the filter, counts."""

    files: list[pathlib.Path]
    filter: str
    packets: int
    dropped: int


class Recorder:
    """Evidence of a scan: captures its own traffic (targets plus ICMP errors) in a background thread."""

    def __init__(
        self,
        base: pathlib.Path,
        addresses: Iterable[str],
        *,
        fmt: str = "pcapng",
        snaplen: int = 65535,
        compress: bool = False,
        rotate_bytes: int | None = None,
        grace_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.expression = filters.probe_filter(addresses)
        self.grace_seconds = grace_seconds
        self.sleep = sleep
        self.stop = threading.Event()
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.ScanError(f"cannot create the evidence folder {base.parent}: {exc.strerror}") from exc
        self.writer = pcapfiles.RotatingWriter(base, fmt=fmt, snaplen=snaplen, rotate_bytes=rotate_bytes,
                                               compress=compress, clock=clock)
        try:
            self.capture = capturing.Capture(capturing.ANY, expression=self.expression, snaplen=snaplen,
                                             writer=self.writer, stop=self.stop, clock=clock)
        except PermissionError as exc:
            raise errors.ScanError("packet capture needs CAP_NET_RAW (run as root with NET_RAW)") from exc
        except OSError as exc:
            raise errors.ScanError(f"cannot open a capture socket: {exc.strerror}") from exc
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="evidence", daemon=True)

    def _run(self) -> None:
        try:
            self.capture.run()
        except BaseException as exc:  # reported by finish(); the scan itself goes on
            self.failure = exc

    def start(self) -> Recorder:
        """Arm the capture; returns once the filter is attached, so no probe is missed."""
        try:
            self.writer.begin()
        except OSError as exc:
            self.capture.sock.close()
            raise errors.ScanError(f"cannot write evidence under {self.writer.base.parent}: {exc.strerror}") from exc
        self.thread.start()
        return self

    def finish(self) -> Evidence:
        """Let late replies arrive, stop, close the last file; never loses a written packet."""
        if self.thread.is_alive():
            self.sleep(self.grace_seconds)
        self.stop.set()
        self.thread.join()
        try:
            self.writer.close()
        except OSError as exc:
            raise errors.ScanError(f"cannot finish the evidence file: {exc.strerror}") from exc
        if self.failure is not None:
            raise errors.ScanError(f"capture failed: {self.failure}") from self.failure
        stats = self.capture.stats
        return Evidence(files=list(self.writer.files), filter=self.expression, packets=stats.packets,
                        dropped=stats.kernel_drops)
