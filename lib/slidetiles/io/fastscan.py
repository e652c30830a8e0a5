"""Index builds through the optional C frame walker ``slidetiles.io._fastscan``.

The pure-Python index build pays Python for every record (reading, two CRC calls, the frame walk, the location
scan) and runs at about a third of a plain sequential read. Here the C extension walks all the complete frames of a
buffer in one call with the GIL released, so Python's cost is per chunk read, not per record.

The C side decides only the common case. Whatever else it meets stops its walk at that record, and the code below
deals with the record exactly as :func:`slidetiles.io.framing.scan_frames` and
:func:`slidetiles.io.tfrecord2idx.build_index` do: same checks in the same order, same exception classes, messages,
record numbers and offsets, and :func:`slidetiles.io.example.scan_locations` itself for any record whose layout the
C scanner does not know.

``SLIDETILES_PURE_PYTHON=1`` in the environment makes :func:`available` False, so every caller takes the
pure-Python path (for tests and debugging).
"""

from __future__ import annotations

import os
import queue
import threading

import numpy as np

from slidetiles.errors import (
    CorruptRecordError,
    EmptyTFRecordError,
    InvalidExampleError,
    TruncatedRecordError,
)
from slidetiles.io.example import WireError, scan_locations
from slidetiles.io.framing import (
    FRAME_OVERHEAD,
    HEADER_SIZE,
    LENGTH,
    SCAN_ROW,
    fast_scanner,
    length_crc_error,
    not_a_tfrecord_error,
    open_tfrecord,
    overrun_error,
)

try:
    import slidetiles.io._fastscan as _fastscan
except ImportError:  # not compiled (no C compiler at install time): the pure-Python path serves
    _fastscan = None

#: Bytes per read. The C walk then finds much of each chunk still in the L2 cache the kernel copied it into (1 MiB
#: per core on the benchmark machine): 512 KiB measured best in two interleaved series (ratio to a plain read
#: 0.93 / 0.80, against 0.90 / 0.76 for 256 KiB, 0.75 / 0.69 for 128 KiB and 0.77 / 0.68 for 1 MiB).
CHUNK_SIZE = 512 << 10

# Buffers kept between calls, by size: a fresh megabyte bytearray costs its zeroing and page faults, about as much
# as scanning a small file (measured: ratio to a plain read 0.61 with fresh buffers, 0.70 reused, at 1 MiB chunks).
_SPARE_BUFFERS = 4
_spare: dict[int, list[bytearray]] = {}
_spare_lock = threading.Lock()

if _fastscan is not None:
    _NEED_HEADER = _fastscan.STOP_NEED_HEADER
    _NEED_FRAME = _fastscan.STOP_NEED_FRAME
    _LENGTH_CRC = _fastscan.STOP_LENGTH_CRC
    _DATA_CRC = _fastscan.STOP_DATA_CRC
    _LOCATIONS = _fastscan.STOP_LOCATIONS


def available(verify: bool = True) -> bool:
    """Whether index builds (checking CRCs or not, per ``verify``) should go through the C extension.

    See :func:`slidetiles.io.framing.fast_scanner`: False when it is not compiled, when ``SLIDETILES_PURE_PYTHON``
    is set, and for CRC-checked builds on a CPU where the C code has only its portable table CRC.
    """
    return fast_scanner(verify) is not None


def build_index_fast(
    path, verify: bool = True, *, chunk_size: int = CHUNK_SIZE, threaded: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(arr_0, locations)`` of the TFRecord ``path``, as :func:`~slidetiles.io.tfrecord2idx.build_index` finds them.

    ``arr_0`` is int64 ``(n, 2)`` of ``[start, framed length]``; ``locations`` int64 ``(n, 2)`` of
    ``[loc_x, loc_y]``, or None when some record carries none. Every CRC is checked unless ``verify=False``.
    Raises the same :class:`~slidetiles.errors.TFRecordError` subclasses as the pure-Python path, and
    ``RuntimeError`` when the extension is not compiled.

    ``threaded=True`` reads ahead in a second thread. It is off because it measured slower on the 2-core benchmark
    machine (ratio to a plain read: median 0.63 over 21 interleaved rounds, against 0.79 without): the C walk then
    reads each chunk from the other core's cache instead of its own, and every chunk costs a thread hand-over. It
    may pay on a machine with idle cores and slow storage; ``benchmarks/bench_tfrecord.py`` measures both.
    """
    if _fastscan is None:
        raise RuntimeError("slidetiles.io._fastscan is not compiled; use slidetiles.io.tfrecord2idx.build_index")
    path = os.fspath(path)
    with open_tfrecord(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise EmptyTFRecordError(path, "the file is empty (0 bytes)")
        # Like scan_frames, stop at the size seen at open even if the file grows meanwhile.
        # A file of one chunk has nothing to overlap: spare it the thread.
        source = (_ThreadedChunks if threaded and size > chunk_size else _Chunks)(f, size, chunk_size)
        try:
            return _walk(path, size, source, verify)
        finally:
            source.close()


def _walk(path: str, size: int, source, verify: bool):
    scan = _fastscan.scan
    parts: list[bytes] = []
    python_locations: list[tuple[int, int, int]] = []  # (row, loc_x, loc_y) read by Python, as Python ints
    record = 0
    want_locations = True
    buf, pos, end, base = source.first(path)
    while True:
        pos, rows, status = scan(buf, pos, end, base, verify, want_locations)
        if rows:
            parts.append(rows)
            record += len(rows) // SCAN_ROW.size
        offset = base + pos
        # The checks below are scan_frames' and build_index's, in their order, for the record at `offset`.
        if status == _NEED_HEADER:
            if offset == size:
                break
            if offset + HEADER_SIZE > size:
                if offset == 0:
                    raise not_a_tfrecord_error(path, bytes(buf[pos:end]), f"the file is only {size} bytes long")
                raise TruncatedRecordError(
                    path, f"the file ends {size - offset} bytes into a 12-byte record header", record, offset
                )
            buf, pos, end, base = source.extend(buf, pos, end, base, HEADER_SIZE, path, record)
            continue
        if status == _LENGTH_CRC:
            raise length_crc_error(path, buf[pos : pos + 8], record, offset)
        length = LENGTH.unpack_from(buf, pos)[0]
        framed = length + FRAME_OVERHEAD
        if status == _NEED_FRAME:
            if offset + framed > size:
                raise overrun_error(path, buf[pos : pos + 8], length, size, record, offset, verify)
            buf, pos, end, base = source.extend(buf, pos, end, base, framed, path, record)
            continue
        if status == _DATA_CRC:
            raise CorruptRecordError(path, f"the {length}-byte payload fails its CRC", record, offset)
        if status != _LOCATIONS:
            raise AssertionError(f"unknown _fastscan status {status}")
        try:
            location = scan_locations(memoryview(buf)[pos + HEADER_SIZE : pos + HEADER_SIZE + length])
        except WireError as exc:
            raise InvalidExampleError(path, f"payload is not a tf.train.Example ({exc})", record, offset) from None
        if location is None:
            want_locations = False
        else:
            python_locations.append((record, location[0], location[1]))
        parts.append(SCAN_ROW.pack(offset, framed, 0, 0))
        record += 1
        pos += framed

    table = np.frombuffer(b"".join(parts), dtype=np.int64).reshape(-1, 4)
    arr_0 = table[:, :2].copy()
    if not want_locations:
        return arr_0, None
    locations = table[:, 2:].copy()
    for row, x, y in python_locations:
        # Python ints, already cut to int64 by scan_locations as protobuf cuts them.
        locations[row] = (x, y)
    return arr_0, locations


def _take_buffer(size: int) -> bytearray:
    with _spare_lock:
        spare = _spare.get(size)
        return spare.pop() if spare else bytearray(size)


def _give_back(buffers: list) -> None:
    with _spare_lock:
        for buf in buffers:
            spare = _spare.setdefault(len(buf), [])
            if len(spare) < _SPARE_BUFFERS:
                spare.append(buf)


class _Chunks:
    """The file read in chunks into one buffer, each chunk after ``chunk_size`` bytes kept free in front of it.

    Before the next read, the unread tail of the buffer (the first part of a record cut by the chunk boundary)
    moves into that free space, just in front of where the next chunk lands: a record is made whole by copying
    only its first part. Reading into the same buffer every time also keeps it in the cache (with two buffers in
    turn, each read wrote to memory the cache had already dropped).
    """

    def __init__(self, f, size: int, chunk_size: int):
        self._file = f
        self._size = size
        self._chunk = max(int(chunk_size), HEADER_SIZE)
        self._reserve = self._chunk
        self._read = 0  # file offset of the next chunk
        self._buffers = [_take_buffer(self._reserve + self._chunk)]

    def _fill(self, buf: bytearray) -> int:
        """Read the next chunk into ``buf[reserve:]``; returns its length (0 at the end of the file)."""
        want = min(self._chunk, self._size - self._read)
        got = 0
        view = memoryview(buf)
        while got < want:
            n = self._file.readinto(view[self._reserve + got : self._reserve + want])
            if not n:
                break
            got += n
        return got

    def first(self, path):
        """``(buffer, pos, end, base)``: the first chunk is ``buffer[pos:end]``, file offset = ``base`` + index."""
        buf = self._buffers[0]
        n = self._fill(buf)
        if not n:
            raise _shrunk(path, 0, 0)
        self._read = n
        return buf, self._reserve, self._reserve + n, -self._reserve

    def extend(self, buf, pos: int, end: int, base: int, need: int, path, record):
        """``(buf, pos, end, base)`` holding the bytes of ``buf[pos:end]`` and what follows, at least ``need``."""
        tail = end - pos
        if tail <= self._reserve and need <= tail + self._chunk:
            target = self._buffers[0]
            target[self._reserve - tail : self._reserve] = buf[pos:end]  # the slice is a copy: overlap is fine
            n = self._fill(target)
            offset = self._read
            self._read += n
            if tail + n < need:
                raise _shrunk(path, record, base + pos)
            return target, self._reserve - tail, self._reserve + n, offset - self._reserve
        # A record larger than the buffer: read the rest of it into a buffer of its own.
        whole = bytearray(need)
        whole[:tail] = buf[pos:end]
        view = memoryview(whole)
        got = tail
        while got < need:
            n = self._file.readinto(view[got:])
            if not n:
                raise _shrunk(path, record, base + pos)
            got += n
        self._read += need - tail
        return whole, 0, need, base + pos

    def close(self) -> None:
        _give_back(self._buffers)
        self._buffers = []


def _shrunk(path, record, offset):
    return TruncatedRecordError(path, "the file became shorter while it was being read", record, offset)


class _ThreadedChunks(_Chunks):
    """:class:`_Chunks` read ahead by a thread into a ring of buffers, filling the next while C walks this one."""

    #: The buffer being walked, one waiting, one being filled.
    BUFFERS = 3

    def __init__(self, f, size: int, chunk_size: int):
        super().__init__(f, size, chunk_size)
        self._buffers += [_take_buffer(self._reserve + self._chunk) for _ in range(self.BUFFERS - 1)]
        self._owned = {id(buf) for buf in self._buffers}  # not a record gathered in a buffer of its own
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._full: queue.SimpleQueue = queue.SimpleQueue()
        for buf in self._buffers:
            self._free.put(buf)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="slidetiles-index-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset = 0
        try:
            while offset < self._size:
                buf = self._free.get()
                if buf is None or self._stopped:
                    return
                self._read = offset
                n = self._fill(buf)
                if not n:
                    break
                self._full.put((buf, n, offset))
                offset += n
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            self._full.put(exc)
            return
        self._full.put(None)

    def _next(self):
        """``(buffer, byte count, file offset)`` of the next chunk (at ``buffer[reserve:]``), or None at the end."""
        item = self._full.get()
        if isinstance(item, BaseException):
            self._full.put(item)  # every later call fails the same way
            raise item
        if item is None:
            self._full.put(None)
        return item

    def _release(self, buf) -> None:
        if id(buf) in self._owned:
            self._free.put(buf)

    def first(self, path):
        chunk = self._next()
        if chunk is None:
            raise _shrunk(path, 0, 0)
        buf, n, offset = chunk
        return buf, self._reserve, self._reserve + n, offset - self._reserve

    def extend(self, buf, pos: int, end: int, base: int, need: int, path, record):
        tail = end - pos
        chunk = self._next()
        if chunk is None:
            raise _shrunk(path, record, base + pos)
        nbuf, n, offset = chunk
        if tail <= self._reserve and tail + n >= need:
            nbuf[self._reserve - tail : self._reserve] = buf[pos:end]
            self._release(buf)
            return nbuf, self._reserve - tail, self._reserve + n, offset - self._reserve
        # A record larger than a chunk: gather it in a buffer of its own.
        whole = bytearray(buf[pos:end])
        record_offset = base + pos
        self._release(buf)
        while True:
            whole += memoryview(nbuf)[self._reserve : self._reserve + n]
            self._release(nbuf)
            if len(whole) >= need:
                return whole, 0, len(whole), record_offset
            chunk = self._next()
            if chunk is None:
                raise _shrunk(path, record, record_offset)
            nbuf, n, offset = chunk

    def close(self) -> None:
        # Unblocks the reader if it waits for a buffer; the file is closed, and the buffers reused, only after it
        # has stopped.
        self._stopped = True
        self._free.put(None)
        self._thread.join()
        super().close()
