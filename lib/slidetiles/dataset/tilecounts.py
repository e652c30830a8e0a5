"""Tile counts of many TFRecords from their index files, without reading the TFRecords.

A Dataset of 10,000 slides must open in seconds, so the count of a TFRecord is the length of its index's
``arr_0``, and only that is read: for our own ``.index.npz`` (written by :func:`slidetiles.io.tfrecord2idx.save_index`,
uncompressed) a small parser reads the npy header of ``arr_0`` and the two scalars recording what the index was
built from, in one ``open`` and one ``read``. Nothing read there is trusted unchecked: each member's CRC-32 must
match its zip header, and ``arr_0`` must list records that follow each other from byte 0 to the TFRecord's last
byte (a flipped bit would otherwise give a wrong count that flows into manifests). Anything it does not recognise
or cannot vouch for goes through :func:`slidetiles.io.tfrecord2idx.read_index`, which keeps the library's rules:

- our index, TFRecord unchanged (size and mtime as recorded) and covered exactly: the count is trusted;
- our index, damaged: it is rebuilt;
- no index, or our index but the TFRecord changed: the index is (re)built, in parallel processes;
- someone else's index (Slideflow's npz, a text ``.index``, an ``.npy``): trusted if it ends where the TFRecord
  ends, else :class:`~slidetiles.errors.StaleIndexError` (never overwritten behind the user's back).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import stat
import struct
import sys
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from slidetiles.errors import SlidetilesError
from slidetiles.io import tfrecord2idx

#: Index file suffixes in the order :func:`slidetiles.io.tfrecord2idx.find_index` looks for them.
INDEX_SUFFIXES = (".index.npz", ".index", ".index.npy")

_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
_LOCAL_MAGIC = 0x04034B50
_ZIP64_EXTRA = 0x0001
_NPY_MAGIC = b"\x93NUMPY"
_SMALL_INDEX = 256  # records: below this the contiguity check runs on plain ints
_SHAPE = re.compile(rb"'shape':\s*\(([^)]*)\)")
_DESCR = re.compile(rb"'descr':\s*'([^']*)'")
_FORTRAN = re.compile(rb"'fortran_order':\s*(True|False)")


@dataclass(frozen=True)
class IndexHead:
    """What a quick look at an index file gives: record count and, for ours, what it was built from."""

    n: int
    #: ``(tfrecord size, tfrecord mtime_ns)`` recorded by slidetiles, or None for a foreign index.
    built_from: tuple[int, int] | None
    #: Byte just past the last record, checked against the TFRecord size (records are checked to follow each
    #: other from byte 0, so this is also the sum of their lengths).
    end: int | None


def pick_index(stem: str, names: set[str]) -> str | None:
    """Which index file of ``<stem>.tfrecords`` exists, given the file names of its folder (no extra syscalls)."""
    for suffix in INDEX_SUFFIXES:
        if stem + suffix in names:
            return stem + suffix
    return None


def _npy_header(data: bytes, start: int) -> tuple[str, tuple[int, ...], bool, int] | None:
    """``(descr, shape, fortran order, offset of the array data)`` of the .npy at ``start``, or None if unusual."""
    if data[start : start + 6] != _NPY_MAGIC:
        return None
    major = data[start + 6]
    if major == 1:
        hlen = int.from_bytes(data[start + 8 : start + 10], "little")
        hstart = start + 10
    elif major in (2, 3):
        hlen = int.from_bytes(data[start + 8 : start + 12], "little")
        hstart = start + 12
    else:
        return None
    parsed = _parse_npy_dict(data[hstart : hstart + hlen])
    return None if parsed is None else (*parsed, hstart + hlen)


@functools.lru_cache(maxsize=1024)
def _parse_npy_dict(header: bytes) -> tuple[str, tuple[int, ...], bool] | None:
    # Cached on the header's bytes: across a cohort's indexes the scalar members' headers are all alike and
    # arr_0's differ only in the record count, so the regexes run once per distinct header, not 4 times a file.
    descr, shape, fortran = _DESCR.search(header), _SHAPE.search(header), _FORTRAN.search(header)
    if not (descr and shape and fortran):
        return None
    try:
        dims = tuple(int(part) for part in shape.group(1).split(b",") if part.strip())
    except ValueError:
        return None
    if any(d < 0 for d in dims):
        return None
    return descr.group(1).decode("ascii"), dims, fortran.group(1) == b"True"


def _zip_members(data: bytes) -> dict[str, tuple[int, int]] | None:
    """``{name: (data offset, size)}`` of the stored (uncompressed) members, walking local headers from byte 0.

    Only members whose bytes match the CRC-32 of their header are listed: a damaged one is then "missing", and
    the caller falls back to the full reader, which says what is wrong.
    """
    members = {}
    pos = 0
    while pos + _LOCAL_HEADER.size <= len(data):
        fields = _LOCAL_HEADER.unpack_from(data, pos)
        if fields[0] != _LOCAL_MAGIC:
            break
        flags, method, crc = fields[2], fields[3], fields[6]
        csize, usize, nlen, elen = fields[7], fields[8], fields[9], fields[10]
        # Compressed members (savez_compressed) or sizes deferred to a data descriptor: not ours, take the slow path.
        if method != 0 or flags & 0x08:
            return None
        name_start = pos + _LOCAL_HEADER.size
        name = data[name_start : name_start + nlen].decode("utf-8", "replace")
        extra = data[name_start + nlen : name_start + nlen + elen]
        if csize == 0xFFFFFFFF:  # numpy writes zip64 members: the real size is in the extra field
            csize = _zip64_csize(extra, usize == 0xFFFFFFFF)
            if csize is None:
                return None
        start = name_start + nlen + elen
        if start + csize > len(data):
            return None
        if zlib.crc32(data[start : start + csize]) == crc:
            members[name] = (start, csize)
        pos = start + csize
    return members or None


def _zip64_csize(extra: bytes, usize_first: bool) -> int | None:
    """Compressed size from the zip64 extra field (which lists the uncompressed size first when it is there)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == _ZIP64_EXTRA:
            offset = pos + 4 + (8 if usize_first else 0)
            if offset + 8 > pos + 4 + size:
                return None
            return int.from_bytes(extra[offset : offset + 8], "little")
        pos += 4 + size
    return None


def _scalar(data: bytes, members, name: str) -> int | None:
    member = members.get(name)
    if member is None:
        return None
    head = _npy_header(data, member[0])
    if head is None or head[0] != "<i8" or head[1] != () or head[3] + 8 != member[0] + member[1]:
        return None
    return int.from_bytes(data[head[3] : head[3] + 8], "little", signed=True)


def _read_regular(path: str) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (a named pipe would block ``open``), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.set_blocking(fd, True)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            return f.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def quick_head(index_file: str) -> IndexHead | None:
    """Record count of an ``.index.npz`` read from its headers; None when a full load is needed.

    One ``open`` and one ``read`` of the file. The members used must match their CRC-32, and ``arr_0`` must list
    records that follow each other from byte 0 (as :func:`slidetiles.io.tfrecord2idx.read_index` requires); None
    otherwise, so that the full reader names the problem (or rebuilds our own index).
    """
    if not index_file.endswith(".npz"):
        return None
    data = _read_regular(index_file)
    if data is None:
        return None
    try:
        return _parse_head(data)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError, OverflowError):
        return None  # malformed past what the checks above catch: the full reader names the problem


def _parse_head(data: bytes) -> IndexHead | None:
    members = _zip_members(data)
    if not members or "arr_0.npy" not in members:
        return None
    member_start, member_size = members["arr_0.npy"]
    head = _npy_header(data, member_start)
    if head is None:
        return None
    descr, shape, fortran, data_start = head
    if descr != "<i8" or not (shape == (0,) or (len(shape) == 2 and shape[1] == 2)):
        return None
    # The record count is the first dimension in either memory order (``build_index`` writes a transposed,
    # Fortran-ordered array; Slideflow writes C order).
    n = shape[0]
    if data_start + n * 16 != member_start + member_size:
        return None
    end = _records_end(data, data_start, n, fortran)
    if end is None:
        return None
    size, mtime = _scalar(data, members, "tfrecord_size.npy"), _scalar(data, members, "tfrecord_mtime_ns.npy")
    version = _scalar(data, members, "slidetiles_index.npy")
    if size is not None and mtime is not None and version is not None:
        return IndexHead(n, (size, mtime), end)
    return IndexHead(n, None, end)


def _records_end(data: bytes, data_start: int, n: int, fortran: bool) -> int | None:
    """Where the last of the ``n`` records of ``arr_0`` ends, or None unless they follow each other from byte 0
    with plausible lengths (the rules of ``tfrecord2idx._load_file``)."""
    if n == 0:
        return 0
    if n <= _SMALL_INDEX and sys.byteorder == "little":  # cast() reads native order; the file is little-endian
        # A slide's few dozen records: plain ints beat numpy's per-call overhead (~10 calls) several times over.
        values = memoryview(data)[data_start : data_start + 16 * n].cast("q")
        starts, lengths = (values[:n], values[n:]) if fortran else (values[0::2], values[1::2])
        end = 0
        for start, length in zip(starts, lengths):
            if start != end or length < 16:
                return None
            end = start + length
        return end
    values = np.frombuffer(data, dtype="<i8", count=2 * n, offset=data_start)
    rows = values.reshape(2, n).T if fortran else values.reshape(n, 2)
    starts, lengths = rows[:, 0], rows[:, 1]
    if starts[0] != 0 or np.any(lengths < 16) or np.any(starts[1:] != starts[:-1] + lengths[:-1]):
        return None
    return int(starts[-1]) + int(lengths[-1])


def count_from_index(tfrecord: str) -> tuple[int, tuple[int, int] | None]:
    """``(tiles, (size, mtime_ns) the count was computed from or None)`` via :func:`tfrecord2idx.read_index`.

    Builds or rebuilds the index when missing or stale (our own), exactly as ``read_index(create=True)`` does.
    """
    index = tfrecord2idx.read_index(tfrecord, create=True)
    return len(index), index.built_from


def _count_worker(path: str) -> tuple[str, int | None, tuple[int, int] | None, str | None]:
    # Runs in a pool process: errors travel back as text, since not every error class pickles.
    try:
        n, built_from = count_from_index(path)
        return path, n, built_from, None
    except (SlidetilesError, OSError) as exc:
        return path, None, None, f"{type(exc).__name__}: {exc}"


def _rebuild_worker(path: str) -> tuple[str, int | None, tuple[int, int] | None, str | None]:
    try:
        index = tfrecord2idx.build_index(path)
        tfrecord2idx.save_index(path, index.arr_0, index.locations)
        return path, len(index), index.built_from, None
    except (SlidetilesError, OSError) as exc:
        return path, None, None, f"{type(exc).__name__}: {exc}"


def run_parallel(function, paths: Sequence[str], *, jobs: int | None, description: str, progress: bool | None):
    """``function(path)`` for every path, in ``jobs`` processes (in this one for a single path or job), with a
    tqdm progress bar on stderr (shown when stderr is a terminal unless ``progress`` says otherwise)."""
    jobs = (os.cpu_count() or 1) if jobs is None else max(1, int(jobs))
    jobs = min(jobs, len(paths))
    if multiprocessing.current_process().daemon:
        jobs = 1  # a daemonic process (e.g. a DataLoader worker) may not start children
    disable = None if progress is None else not progress
    results = []
    with tqdm(total=len(paths), desc=description, unit="file", disable=disable, file=sys.stderr) as bar:
        if jobs <= 1:
            for path in paths:
                results.append(function(path))
                bar.update()
        else:
            chunk = max(1, min(64, len(paths) // (jobs * 8)))
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for result in pool.map(function, paths, chunksize=chunk):
                    results.append(result)
                    bar.update()
    return results


def count_tiles(
    entries: Iterable[tuple[str, int, int, str | None]],
    *,
    jobs: int | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, tuple[int, int, int]], dict[str, str]]:
    """Tile counts of TFRecords given as ``(path, size, mtime_ns, index file or None)``.

    Returns ``({path: (tiles, size, mtime_ns)}, {path: error})``; ``size``/``mtime_ns`` are those the count
    was computed from. An empty (0-byte) TFRecord counts 0 tiles without an index. Indexes that are missing
    or stale are built by :func:`run_parallel`.
    """
    counts: dict[str, tuple[int, int, int]] = {}
    pending: list[str] = []
    stats: dict[str, tuple[int, int]] = {}
    for path, size, mtime_ns, index_file in entries:
        stats[path] = (size, mtime_ns)
        if size == 0:
            counts[path] = (0, size, mtime_ns)
            continue
        head = quick_head(index_file) if index_file else None
        if head is not None and head.end == size and head.built_from in (None, (size, mtime_ns)):
            counts[path] = (head.n, size, mtime_ns)
            continue
        pending.append(path)
    errors: dict[str, str] = {}
    if pending:
        for path, n, built_from, error in run_parallel(
            _count_worker, pending, jobs=jobs, description="indexing TFRecords", progress=progress
        ):
            if error is not None:
                errors[path] = error
            else:
                size, mtime_ns = built_from if built_from is not None else stats[path]
                counts[path] = (n, size, mtime_ns)
    return counts, errors


def rebuild_indexes(paths: Sequence[str], *, jobs: int | None = None, progress: bool | None = None) -> dict[str, str]:
    """Rewrite ``<slide>.index.npz`` of every path (also current and foreign ones); returns ``{path: error}``."""
    errors = {}
    for path, _n, _built, error in run_parallel(
        _rebuild_worker, list(paths), jobs=jobs, description="rebuilding indexes", progress=progress
    ):
        if error is not None:
            errors[path] = error
    return errors
