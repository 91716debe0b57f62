"""``portolan capture``: capture, decode and write packets, or decode a pcap/pcapng file (``-r``).

Needs CAP_NET_RAW to capture; reading a file needs nothing.  SIGINT/SIGTERM end
a capture with every packet kept in the last file.
"""

from __future__ import annotations

import argparse
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

    if args.read:
        for record in pcapfiles.read(pathlib.Path(args.read)):
            decoded = decoding.decode_ethernet(record.data) if record.linktype == 1 else decoding.decode_ip(record.data)
            if not args.quiet:
                print(f"{record.timestamp_ns / 1e9:.6f} {decoded.summary()}")
        return exits.OK
    if not args.interface:
        raise errors.SpecError("capture needs -i INTERFACE (or -r FILE to read one)")
    writer = None
    if args.write:
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
    # Like tcpdump: once this line is out, the filter is attached and nothing matching is missed.
    print(f"listening on {args.interface}, filter {args.filter or '(none)'!r}, snapshot length {args.snaplen} bytes",
          file=sys.stderr, flush=True)
    stats = session.run(count=args.count, seconds=args.duration)
    print(stats.summary(), file=sys.stderr)
    if writer is not None:
        for path, count in zip(writer.files, writer.counts, strict=True):
            print(f"wrote {path} ({count} packets)", file=sys.stderr)
    return exits.OK


