"""TFRecord framing: ``uint64 length, uint32 masked_crc32c(length), data, uint32 masked_crc32c(data)``.

Everything that walks the frames of a file goes through :func:`scan_frames`, so the rules for a corrupt length, a
corrupt payload, a truncated record, an empty file and a file that is not a TFRecord live in one place.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator

from crc32c import crc32c

try:
    import slidetiles.io._fastscan as _fastscan
except ImportError:  # the optional C extension was not compiled: everything below works without it
    _fastscan = None

from slidetiles.errors import (
    CorruptLengthError,
    CorruptRecordError,
    EmptyTFRecordError,
    NotATFRecordError,
    TFRecordError,
    TruncatedRecordError,
)

HEADER = struct.Struct("<QI")
FOOTER = struct.Struct("<I")
LENGTH = struct.Struct("<Q")
HEADER_SIZE = HEADER.size  # 12
FRAME_OVERHEAD = HEADER.size + FOOTER.size  # 16

_MASK_DELTA = 0xA282EAD8
_GZIP_MAGIC = b"\x1f\x8b"

#: Bytes read per system call. Large enough that syscalls are noise, small enough to stay in L2/L3-ish caches and
#: keep memory flat whatever the file size.
CHUNK_SIZE = 1 << 20


SCAN_ROW = struct.Struct("=qqqq")  # a frame as the C walker reports it: offset, framed length, loc_x, loc_y


def fast_scanner(verify: bool = True):
    """The C frame walker ``_fastscan.scan``, or None where it is not worth using.

    None when the extension is not compiled, when ``SLIDETILES_PURE_PYTHON`` is set (tests, debugging), and for
    CRC-checked walks on a CPU where it has only its portable table CRC (~2 GB/s): the ``crc32c`` package the
    Python path calls has its own hardware code there.
    """
    if not _c_enabled():
        return None
    if verify and _fastscan.crc_implementation == "slice-by-8":
        return None
    return _fastscan.scan


def fast_tile_fields():
    """The C parser of Slideflow tile records, ``_fastscan.tile_fields(payload) -> (image_raw, loc_x, loc_y) |
    None``, or None when the extension is not compiled or ``SLIDETILES_PURE_PYTHON`` is set.

    It answers only for an Example holding exactly the four tile features, one value each, and None for anything
    else (parse that with :func:`slidetiles.io.example.parse_example`). Why C: parsing through upb's Python
    message objects costs ~10 us a tile, about 3% of decoding that tile, on every tile a training loader reads.
    """
    return _fastscan.tile_fields if _c_enabled() else None


def _c_enabled() -> bool:
    return _fastscan is not None and os.environ.get("SLIDETILES_PURE_PYTHON", "").strip() in ("", "0")


def masked_crc32c(data) -> int:
    """TensorFlow's masked CRC-32C of ``data`` (any buffer)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode_frame(payload) -> bytes:
    """One framed record: header, payload, footer."""
    length = LENGTH.pack(len(payload))
    return b"".join(
        (length, FOOTER.pack(masked_crc32c(length)), payload, FOOTER.pack(masked_crc32c(payload)))
    )


_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def not_regular_error(path, mode: int) -> NotATFRecordError:
    """The error for a TFRecord path that names something other than a regular file."""
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return NotATFRecordError(path, f"this is {kind}, not a regular file; a TFRecord must be a plain file")


def open_tfrecord(path):
    """Open ``path`` for unbuffered binary reading, refusing anything but a regular file.

    Opened non-blocking and checked before any read: a plain ``open`` of a named pipe waits for a writer that may
    never come (and reading a device or a socket would never end). Raises
    :class:`~slidetiles.errors.NotATFRecordError` for those.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular_error(path, mode)
        os.set_blocking(fd, True)
        return open(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def check_regular(path) -> os.stat_result:
    """``os.stat(path)``, refusing a path that is not a regular file (:class:`~slidetiles.errors.NotATFRecordError`)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise not_regular_error(path, st.st_mode)
    return st


def not_a_tfrecord_error(path, head: bytes, reason: str) -> NotATFRecordError:
    """The error for a file whose first bytes ``head`` are no TFRecord; a GZIP header gets its own reason."""
    if head.startswith(_GZIP_MAGIC):
        reason = "starts with the GZIP magic bytes: this looks like a compressed TFRecord"
    return NotATFRecordError(path, reason, 0, 0)


def length_crc_error(path, header: bytes, record: int, offset: int) -> TFRecordError:
    """A length field that fails its CRC: at byte 0 the file is not a TFRecord at all, elsewhere it is damaged."""
    if offset == 0:
        return not_a_tfrecord_error(path, bytes(header), "the first record header fails its CRC")
    return CorruptLengthError(path, "the record length fails its CRC", record, offset)


def overrun_error(path, header: bytes, length: int, size: int, record: int, offset: int, verify: bool) -> TFRecordError:
    """A frame that claims more bytes than the file has left (a truncated file, or unchecked garbage at byte 0)."""
    if offset == 0 and not verify and length > size:
        return not_a_tfrecord_error(path, bytes(header), f"the first record claims {length} bytes")
    return TruncatedRecordError(
        path,
        f"the record claims {length} payload bytes but the file ends {size - offset - HEADER_SIZE} bytes after its "
        "header",
        record,
        offset,
    )


def scan_frames(
    path,
    *,
    verify: bool = True,
    start: int = 0,
    stop: int | None = None,
    first_record: int = 0,
    chunk_size: int = CHUNK_SIZE,
    skipped: list | None = None,
) -> Iterator[tuple[int, int, memoryview]]:
    """Yield ``(record_number, offset, payload)`` for each frame of ``path`` between byte ``start`` and ``stop``.

    ``payload`` is a memoryview into a reused buffer: it is valid only until the next item is requested. Copy it
    (``bytes(payload)``) or parse it before moving on. With ``verify`` both CRCs of every record are checked.
    ``first_record`` is the number of the record at ``start`` and only serves error messages.

    With ``skipped`` (a list), a record whose payload fails its CRC is not raised but appended to it as a
    :class:`CorruptRecordError` and passed over: its length was intact, so the frames after it can still be
    trusted. Framing errors (a bad length, truncation) always raise.

    Errors (all :class:`~slidetiles.errors.TFRecordError`): a path that is not a regular file (a named pipe would
    block forever), an empty file, a file whose first frame is not a
    TFRecord frame, a length whose CRC is wrong, a payload whose CRC is wrong, and a file that ends inside a
    record each raise their own subclass naming the file, the record and its byte offset.
    """
    with open_tfrecord(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise EmptyTFRecordError(path, "the file is empty (0 bytes)")
        stop = size if stop is None else min(stop, size)
        if start:
            f.seek(start)
        buf = bytearray(max(chunk_size, HEADER_SIZE))
        view = memoryview(buf)
        filled = f.readinto(view)
        base = start  # file offset of buf[0]
        pos = 0
        record = first_record
        fast = fast_scanner(verify)
        while base + pos < stop:
            if fast is not None:
                # The C walker checks every complete frame in the buffer in one call; whatever stops it (a chunk
                # boundary, a damaged record, the end) is then handled one record at a time below, so errors and
                # skipped records are exactly the pure-Python path's.
                new_pos, rows, _ = fast(buf, pos, min(filled, stop - base), base, verify, False)
                if rows:
                    for offset, framed, _, _ in SCAN_ROW.iter_unpack(rows):
                        data_start = offset - base + HEADER_SIZE
                        yield record, offset, view[data_start : data_start + framed - FRAME_OVERHEAD]
                        record += 1
                    pos = new_pos
                    continue
            offset = base + pos
            if filled - pos < HEADER_SIZE:
                if offset + HEADER_SIZE > size:
                    if offset == 0:
                        raise not_a_tfrecord_error(path, bytes(view[:filled]), f"the file is only {size} bytes long")
                    raise TruncatedRecordError(
                        path, f"the file ends {size - offset} bytes into a 12-byte record header", record, offset
                    )
                buf, view, filled = _refill(f, buf, view, pos, filled, HEADER_SIZE)
                base, pos = offset, 0
            length, length_crc = HEADER.unpack_from(buf, pos)
            if verify and masked_crc32c(view[pos : pos + 8]) != length_crc:
                raise length_crc_error(path, view[pos : pos + 8], record, offset)
            framed = length + FRAME_OVERHEAD
            if offset + framed > size:
                raise overrun_error(path, view[pos : pos + 8], length, size, record, offset, verify)
            if filled - pos < framed:
                buf, view, filled = _refill(f, buf, view, pos, filled, framed)
                base, pos = offset, 0
            data_start = pos + HEADER_SIZE
            data_end = data_start + length
            payload = view[data_start:data_end]
            if verify and masked_crc32c(payload) != FOOTER.unpack_from(buf, data_end)[0]:
                error = CorruptRecordError(path, f"the {length}-byte payload fails its CRC", record, offset)
                if skipped is None:
                    raise error
                skipped.append(error)
            else:
                yield record, offset, payload
            pos += framed
            record += 1


def _refill(f, buf: bytearray, view: memoryview, pos: int, filled: int, need: int):
    """Move the unread tail of ``buf`` to its front and read until ``need`` bytes (or EOF) are there."""
    tail = filled - pos
    if need > len(buf):
        # One record larger than the buffer: grow to fit it (and only it; the next refill keeps this size).
        grown = bytearray(need)
        grown[:tail] = buf[pos:filled]
        buf = grown
        view = memoryview(buf)
    else:
        buf[:tail] = buf[pos:filled]
    filled = tail
    while filled < need:
        n = f.readinto(view[filled:])
        if not n:
            break
        filled += n
    return buf, view, filled


def read_frame_at(fd: int, path, offset: int, framed_length: int, *, verify: bool = True, record=None) -> bytes:
    """Payload of the record whose frame starts at ``offset`` (random access through ``os.pread``)."""
    frame = os.pread(fd, framed_length, offset)
    if len(frame) < framed_length:
        raise TruncatedRecordError(
            path, f"the index says the record is {framed_length} bytes but only {len(frame)} remain", record, offset
        )
    length, length_crc = HEADER.unpack_from(frame, 0)
    if length + FRAME_OVERHEAD != framed_length:
        raise CorruptLengthError(
            path,
            f"the record header says {length} payload bytes but the index says {framed_length - FRAME_OVERHEAD}; "
            "the index may be stale (rebuild it with `slidetiles index --force`)",
            record,
            offset,
        )
    view = memoryview(frame)
    if verify:
        if masked_crc32c(view[:8]) != length_crc:
            raise CorruptLengthError(path, "the record length fails its CRC", record, offset)
        if masked_crc32c(view[HEADER_SIZE : HEADER_SIZE + length]) != FOOTER.unpack_from(frame, HEADER_SIZE + length)[0]:
            raise CorruptRecordError(path, f"the {length}-byte payload fails its CRC", record, offset)
    return frame[HEADER_SIZE : HEADER_SIZE + length]
