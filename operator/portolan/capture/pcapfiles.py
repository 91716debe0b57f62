"""pcap and pcapng files: writers with rotation by size and time, optional gzip, and readers.

Writers flush every record to the OS, so a capture stopped by SIGINT/SIGTERM (or killed) keeps
every packet written so far in its last, partial file.  Timestamps are nanoseconds (pcap magic
0xa1b23c4d; pcapng ``if_tsresol`` = 9).  Readers accept either format, gzip'd or not, and stream: a small file that
decompresses to gigabytes costs the time to read it, never the memory.
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from portolan import errors

LINKTYPE_ETHERNET = 1
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_US = 0xA1B2C3D4
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D


@dataclasses.dataclass(frozen=True)
class Record:
    """One captured packet: its time, the bytes kept and the length on the wire."""

    timestamp_ns: int
    data: bytes
    original_length: int
    linktype: int = LINKTYPE_ETHERNET


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


class _Format:
    extension = ""

    def header(self, snaplen: int, linktype: int) -> bytes:
        raise NotImplementedError

    def record(self, record: Record) -> bytes:
        raise NotImplementedError


class PcapFormat(_Format):
    """Classic pcap with nanosecond timestamps."""

    extension = ".pcap"

    def header(self, snaplen: int, linktype: int) -> bytes:
        """The file header."""
        return struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype)

    def record(self, record: Record) -> bytes:
        """One packet record."""
        seconds, nanos = divmod(record.timestamp_ns, 1_000_000_000)
        return struct.pack("<IIII", seconds, nanos, len(record.data), record.original_length) + record.data


class PcapngFormat(_Format):
    """pcapng: a section header, one interface, enhanced packet blocks."""

    extension = ".pcapng"

    def header(self, snaplen: int, linktype: int) -> bytes:
        """The section header and interface description blocks."""
        shb_body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
        shb = struct.pack("<II", PCAPNG_SHB, 12 + len(shb_body)) + shb_body + struct.pack("<I", 12 + len(shb_body))
        options = struct.pack("<HHB", 9, 1, 9) + b"\0\0\0" + struct.pack("<HH", 0, 0)  # if_tsresol=9, end
        idb_body = struct.pack("<HHI", linktype, 0, snaplen) + options
        idb = struct.pack("<II", PCAPNG_IDB, 12 + len(idb_body)) + idb_body + struct.pack("<I", 12 + len(idb_body))
        return shb + idb

    def record(self, record: Record) -> bytes:
        """One enhanced packet block."""
        high, low = record.timestamp_ns >> 32, record.timestamp_ns & 0xFFFFFFFF
        body = struct.pack("<IIIII", 0, high, low, len(record.data), record.original_length) + _pad(record.data)
        return struct.pack("<II", PCAPNG_EPB, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


FORMATS: dict[str, type[_Format]] = {"pcap": PcapFormat, "pcapng": PcapngFormat}


class RotatingWriter:
    """Writes records to ``base-0001.pcapng``, ``base-0002.pcapng``, ... rotating by size and/or time."""

    def __init__(
        self,
        base: pathlib.Path,
        *,
        fmt: str = "pcapng",
        snaplen: int = 262144,
        linktype: int = LINKTYPE_ETHERNET,
        rotate_bytes: int | None = None,
        rotate_seconds: float | None = None,
        compress: bool = False,
        clock: Callable[[], float],
    ) -> None:
        if fmt not in FORMATS:
            raise errors.SpecError(f"unknown capture format {fmt!r}; use pcap or pcapng")
        self.base = base
        self.format = FORMATS[fmt]()
        self.snaplen = snaplen
        self.linktype = linktype
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.compress = compress
        self.clock = clock
        self.files: list[pathlib.Path] = []
        self.counts: list[int] = []
        self.stream: BinaryIO | None = None
        self.written = 0
        self.opened_at = 0.0

    def _open(self) -> None:
        self.close()
        suffix = self.format.extension + (".gz" if self.compress else "")
        path = self.base.with_name(f"{self.base.name}-{len(self.files) + 1:04d}{suffix}")
        stream: BinaryIO = gzip.open(path, "wb") if self.compress else open(path, "wb")  # type: ignore[assignment]  # noqa: SIM115
        header = self.format.header(self.snaplen, self.linktype)
        stream.write(header)
        self.stream = stream
        self.written = len(header)
        self.opened_at = self.clock()
        self.files.append(path)
        self.counts.append(0)

    def begin(self) -> None:
        """Open the first file now, so a capture that sees nothing still leaves a (header-only) file."""
        if self.stream is None and not self.files:
            self._open()

    def write(self, record: Record) -> None:
        """Write one record, starting a new file first when the size or time limit is reached."""
        now = self.clock()
        if self.stream is None or (self.rotate_bytes is not None and self.written >= self.rotate_bytes) or (
            self.rotate_seconds is not None and now - self.opened_at >= self.rotate_seconds
        ):
            self._open()
        assert self.stream is not None
        data = self.format.record(Record(record.timestamp_ns, record.data[: self.snaplen], record.original_length,
                                         record.linktype))
        self.stream.write(data)
        self.stream.flush()
        self.written += len(data)
        self.counts[-1] += 1

    def close(self) -> None:
        """Close the current file (flushing the gzip stream when compressing)."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None


MAX_BLOCK = 1 << 24  # a record or block claiming more than 16 MiB is corruption, not a packet


def _open_any(path: pathlib.Path) -> BinaryIO:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


def read(path: pathlib.Path) -> Iterator[Record]:
    """Records of a pcap or pcapng file (gzip'd or not), streamed: memory stays at one record.

    A truncated last record ends the file; an unreadable file, a corrupt or truncated gzip
    stream, or a header that is not pcap/pcapng raises :class:`~portolan.errors.SpecError`.
    """
    try:
        with _open_any(path) as stream:
            magic_bytes = stream.read(4)
            if len(magic_bytes) < 4:
                raise errors.SpecError(f"{path}: not a capture file ({len(magic_bytes)} bytes)")
            magic = struct.unpack("<I", magic_bytes)[0]
            if magic in (PCAP_MAGIC_NS, PCAP_MAGIC_US):
                yield from _read_pcap(stream, path, nanos=magic == PCAP_MAGIC_NS)
            elif magic == PCAPNG_SHB:
                yield from _read_pcapng(stream, path)
            else:
                raise errors.SpecError(f"{path}: not a pcap or pcapng file (magic 0x{magic:08x})")
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise errors.SpecError(f"{path}: corrupt or truncated gzip data: {exc}") from exc
    except OSError as exc:
        raise errors.SpecError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read_pcap(stream: BinaryIO, path: pathlib.Path, *, nanos: bool) -> Iterator[Record]:
    header = stream.read(20)
    if len(header) < 20:
        raise errors.SpecError(f"{path}: truncated pcap header ({len(header) + 4} of 24 bytes)")
    linktype = struct.unpack_from("<I", header, 16)[0]
    while True:
        head = stream.read(16)
        if len(head) < 16:
            return
        seconds, fraction, included, original = struct.unpack("<IIII", head)
        if included > MAX_BLOCK:
            raise errors.SpecError(f"{path}: corrupt record claiming {included} bytes")
        data = stream.read(included)
        if len(data) < included:
            return
        stamp = seconds * 1_000_000_000 + (fraction if nanos else fraction * 1000)
        yield Record(stamp, data, original, linktype)


def _read_pcapng(stream: BinaryIO, path: pathlib.Path) -> Iterator[Record]:
    linktypes: list[int] = []
    resolutions: list[int] = []
    kind = PCAPNG_SHB  # its type was read already
    while True:
        raw_length = stream.read(4)
        if len(raw_length) < 4:
            return
        length = struct.unpack("<I", raw_length)[0]
        if length < 12:
            return
        if length > MAX_BLOCK:
            raise errors.SpecError(f"{path}: corrupt block claiming {length} bytes")
        rest = stream.read(length - 8)
        if len(rest) < length - 8:
            return
        body = rest[:-4]
        if kind == PCAPNG_IDB and len(body) >= 8:
            linktypes.append(struct.unpack_from("<H", body)[0])
            resolution = 6
            option = 8
            while option + 4 <= len(body):
                code, size = struct.unpack_from("<HH", body, option)
                if code == 0:
                    break
                if code == 9 and size >= 1 and option + 4 < len(body):
                    resolution = body[option + 4]
                option += 4 + size + (-size % 4)
            resolutions.append(resolution)
        elif kind == PCAPNG_EPB and len(body) >= 20:
            interface, high, low, included, original = struct.unpack_from("<IIIII", body)
            ticks = (high << 32) | low
            resolution = resolutions[interface] if interface < len(resolutions) else 6
            stamp = ticks * 10 ** (9 - resolution) if resolution <= 9 else ticks
            linktype = linktypes[interface] if interface < len(linktypes) else LINKTYPE_ETHERNET
            yield Record(stamp, body[20 : 20 + included], original, linktype)
        raw_kind = stream.read(4)
        if len(raw_kind) < 4:
            return
        kind = struct.unpack("<I", raw_kind)[0]
