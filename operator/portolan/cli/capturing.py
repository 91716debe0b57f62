"""``portolan capture``: capture, decode and write packets, or decode a pcap/pcapng file (``-r``).

Needs CAP_NET_RAW to capture; reading a file needs nothing.  SIGINT/SIGTERM end
a capture with every packet kept in the last file.  Options are checked and
the first file is created before "listening on" is printed, so a bad option or
an unwritable ``-w`` fails at once (exit 2) and leaves no file behind; ``-r -q``
counts records without decoding them.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
from typing import TYPE_CHECKING

from portolan import errors
from portolan.cli import exits

if TYPE_CHECKING:
    from portolan.capture import pcapfiles


def run(args: argparse.Namespace) -> int:
    """Run ``portolan capture`` with parsed options; returns the exit code."""
    import pathlib
    import time

    from portolan.capture import decoding, pcapfiles
    from portolan.engine import stopping

    _check_options(args)
    if args.read:
        if sys.stdout is None and not args.quiet:
            raise errors.OutputError("standard output is closed; use -q to only count the records")
        records = 0
        try:
            for record in pcapfiles.read(pathlib.Path(args.read)):
                records += 1
                if args.quiet:
                    continue
                decoded = (decoding.decode_ethernet(record.data) if record.linktype == 1
                           else decoding.decode_ip(record.data))
                print(f"{record.timestamp_ns / 1e9:.6f} {decoded.summary()}")
        except BrokenPipeError as exc:
            raise errors.OutputClosed("the reader went away") from exc
        except OSError as exc:
            raise errors.OutputError(f"cannot write to standard output: {exc.strerror or exc}") from exc
        if args.quiet:
            print(f"{records} records", file=sys.stderr)
        return exits.OK
    if not args.interface:
        raise errors.SpecError("capture needs -i INTERFACE (or -r FILE to read one)")
    writer = None
    if args.write:
        folder = pathlib.Path(args.write).parent
        if not folder.is_dir():
            raise errors.SpecError(f"cannot write {args.write}: the folder {folder} does not exist")
        writer = pcapfiles.RotatingWriter(
            pathlib.Path(args.write), fmt=args.format, snaplen=args.snaplen, rotate_bytes=args.rotate_size,
            rotate_seconds=args.rotate_seconds, compress=args.gzip, clock=time.monotonic,
        )
    with stopping.on_signals(threading.Event()) as stop:  # SIGINT/SIGTERM end the capture, the last file kept
        return _capture(args, writer, stop)


def _capture(args: argparse.Namespace, writer: pcapfiles.RotatingWriter | None, stop: threading.Event) -> int:
    from portolan.capture import capturing

    def show(decoded: object) -> None:
        print(decoded.summary(), flush=True)  # type: ignore[attr-defined]

    try:
        session = capturing.Capture(args.interface, expression=args.filter, snaplen=args.snaplen,
                                    promiscuous=args.promisc, writer=writer,
                                    on_packet=None if args.quiet else show, stop=stop)
    except OSError as exc:
        raise errors.ScanError(f"cannot capture on {args.interface}: {exc.strerror or exc}") from exc
    if writer is not None:
        try:
            writer.begin()
        except OSError as exc:
            session.sock.close()
            raise errors.SpecError(f"cannot write {args.write}: {exc.strerror or exc}") from exc
    # Like tcpdump: once this line is out, the filter is attached and nothing matching is missed.
    print(f"listening on {args.interface}, filter {args.filter or '(none)'!r}, snapshot length {args.snaplen} bytes",
          file=sys.stderr, flush=True)
    stats = session.run(count=args.count, seconds=args.duration)
    print(stats.summary(), file=sys.stderr)
    if writer is not None:
        for path, count in zip(writer.files, writer.counts, strict=True):
            print(f"wrote {path} ({count} packets)", file=sys.stderr)
    return exits.OK




def _check_options(args: argparse.Namespace) -> None:
    """Numbers the parser accepts but a capture cannot use: refused before any file or socket exists."""
    if not 1 <= args.snaplen <= 262144:
        raise errors.SpecError(f"-s/--snaplen must be between 1 and 262144 bytes, not {args.snaplen}")
    if args.count is not None and args.count < 1:
        raise errors.SpecError(f"-c/--count must be at least 1, not {args.count}")
    if args.rotate_size is not None and args.rotate_size < 1:
        raise errors.SpecError(f"--rotate-size must be at least 1 byte, not {args.rotate_size}")
    for flag, value in (("--rotate-seconds", args.rotate_seconds), ("--duration", args.duration)):
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise errors.SpecError(f"{flag} must be a positive number of seconds, not {value}")
