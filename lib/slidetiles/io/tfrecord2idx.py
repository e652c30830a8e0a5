"""TFRecord index files: ``<slide>.index.npz`` beside ``<slide>.tfrecords``.

The npz holds what Slideflow writes (``arr_0``: ``[start byte, framed length]`` per record; ``locations``:
``[loc_x, loc_y]`` per record, or an empty array when the records carry no locations, exactly as Slideflow writes
it: Slideflow's ``TFRecord()`` refuses an index without the key), so Slideflow reads our indexes, plus keys Slideflow ignores that record what the
index was built from (``tfrecord_size``, ``tfrecord_mtime_ns``, ``slidetiles_index``). A TFRecord rewritten after
indexing is noticed: our own index is rebuilt, anyone else's is reported (:class:`StaleIndexError`), never
silently trusted or overwritten. Before use, every index is checked to describe the file it sits beside: records
that follow each other from byte 0 and end exactly where the TFRecord ends (a damaged index would otherwise drop
tiles, or ask for a record of exabytes).

We also read the formats Slideflow reads: the older text ``<slide>.index`` (``"start length"`` per line, the
``tfrecord``/DALI format) and ``<slide>.index.npy`` (``arr_0`` only).
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np

import slidetiles.io.fastscan as fastscan
from slidetiles.errors import InvalidExampleError, StaleIndexError, TFRecordIndexError
from slidetiles.io.example import WireError, scan_locations
from slidetiles.io.framing import FRAME_OVERHEAD, check_regular, scan_frames
from slidetiles.io.writer import atomic_write

log = logging.getLogger(__name__)

#: Version of the extra keys we write; bump when their meaning changes.
INDEX_FORMAT_VERSION = 1
_META_KEYS = ("slidetiles_index", "tfrecord_size", "tfrecord_mtime_ns")
#: ``locations`` of an index whose records carry none: what Slideflow's ``np.savez(..., locations=[])`` stores.
_NO_LOCATIONS = np.array([], dtype=np.float64)


def index_stem(tfrecord: str | os.PathLike) -> str:
    """``/data/slide1.tfrecords`` -> ``/data/slide1`` (the name every index file starts with)."""
    return os.path.splitext(os.fspath(tfrecord))[0]


def index_path(tfrecord: str | os.PathLike) -> str:
    """Where our index of ``tfrecord`` lives: ``<stem>.index.npz``."""
    return index_stem(tfrecord) + ".index.npz"


def find_index(tfrecord: str | os.PathLike) -> str | None:
    """The existing index file of ``tfrecord``: ``.index.npz``, else the text ``.index``, else ``.index.npy``."""
    stem = index_stem(tfrecord)
    for suffix in (".index.npz", ".index", ".index.npy"):
        if os.path.isfile(stem + suffix):
            return stem + suffix
    return None


@dataclass(frozen=True)
class TFRecordIndex:
    """An index loaded from disk or built in memory."""

    #: int64 (n, 2): start byte and framed length (payload + 16) of every record.
    arr_0: np.ndarray
    #: int64 (n, 2) of ``[loc_x, loc_y]``, or None when the records carry no locations.
    locations: np.ndarray | None
    #: The index file, or None for an index built in memory only.
    path: str | None = None
    #: ``(size, mtime_ns)`` of the TFRecord the index was built from, when the index records it (ours do).
    built_from: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.arr_0)

    @property
    def offsets(self) -> np.ndarray:
        return self.arr_0[:, 0]

    @property
    def lengths(self) -> np.ndarray:
        return self.arr_0[:, 1]

    @property
    def is_ours(self) -> bool:
        """Written by slidetiles (and so safe for slidetiles to rebuild)."""
        return self.built_from is not None

    def end(self) -> int:
        """Byte just past the last record: the TFRecord's size when the index matches it."""
        return int(self.arr_0[-1, 0] + self.arr_0[-1, 1]) if len(self.arr_0) else 0


def build_index(tfrecord: str | os.PathLike, *, verify: bool = True) -> TFRecordIndex:
    """Scan ``tfrecord`` once and return its index without writing it.

    Every CRC is checked unless ``verify=False``; locations are read by skipping over the image bytes
    (:func:`slidetiles.io.example.scan_locations`), never by parsing whole Examples. The C frame walker
    (:mod:`slidetiles.io.fastscan`) does this when it is compiled, with the same results and errors as the loop
    below, which serves otherwise (and under ``SLIDETILES_PURE_PYTHON=1``).
    """
    path = os.fspath(tfrecord)
    stat = check_regular(path)
    if fastscan.available(verify):
        arr_0, locations = fastscan.build_index_fast(path, verify=verify)
        return TFRecordIndex(arr_0, locations, None, (stat.st_size, stat.st_mtime_ns))
    offsets: list[int] = []
    lengths: list[int] = []
    xs: list[int] = []
    ys: list[int] = []
    have_locations = True
    for record, offset, payload in scan_frames(path, verify=verify):
        offsets.append(offset)
        lengths.append(len(payload) + FRAME_OVERHEAD)
        if have_locations:
            try:
                location = scan_locations(payload)
            except WireError as exc:
                raise InvalidExampleError(path, f"payload is not a tf.train.Example ({exc})", record, offset) from None
            if location is None:
                have_locations = False
            else:
                xs.append(location[0])
                ys.append(location[1])
    arr_0 = np.array([offsets, lengths], dtype=np.int64).T.reshape(-1, 2)
    locations = np.array([xs, ys], dtype=np.int64).T.reshape(-1, 2) if have_locations else None
    return TFRecordIndex(arr_0, locations, None, (stat.st_size, stat.st_mtime_ns))


def save_index(
    tfrecord: str | os.PathLike,
    arr_0: np.ndarray,
    locations: np.ndarray | None = None,
    index_file: str | os.PathLike | None = None,
) -> str:
    """Write an index for ``tfrecord`` atomically (temporary file + rename); returns its path.

    Records the TFRecord's current size and modification time so a later change to it is noticed. Without
    ``locations`` the index holds an empty ``locations`` array, as Slideflow writes it for records without
    ``loc_x``/``loc_y``.
    """
    stat = os.stat(tfrecord)
    target = os.fspath(index_file) if index_file is not None else index_path(tfrecord)
    if not target.endswith(".npz"):
        raise ValueError(f"{target}: index files we write end in .index.npz")
    if os.path.lexists(target) and not os.path.isfile(target):
        # A named pipe or a folder there is the user's, whatever its name: never replace it.
        raise FileExistsError(errno.EEXIST, "exists and is not a regular file; not replacing it with an index", target)
    arrays = {
        "arr_0": np.asarray(arr_0, dtype=np.int64).reshape(-1, 2),
        "slidetiles_index": np.int64(INDEX_FORMAT_VERSION),
        "tfrecord_size": np.int64(stat.st_size),
        "tfrecord_mtime_ns": np.int64(stat.st_mtime_ns),
    }
    if locations is not None:
        arrays["locations"] = np.asarray(locations, dtype=np.int64).reshape(-1, 2)
    else:
        arrays["locations"] = _NO_LOCATIONS
    with atomic_write(target) as f:
        np.savez(f, **arrays)
    return target


def create_index(
    tfrecord: str | os.PathLike, index_file: str | os.PathLike | None = None, *, verify: bool = True
) -> str:
    """Build and write ``<slide>.index.npz`` for ``tfrecord``; returns the index path.

    Example:
        >>> from slidetiles.io import tfrecord2idx
        >>> tfrecord2idx.create_index("/data/299px_302um/slide1.tfrecords")  # doctest: +SKIP
        '/data/299px_302um/slide1.index.npz'
    """
    index = build_index(tfrecord, verify=verify)
    return save_index(tfrecord, index.arr_0, index.locations, index_file)


def _load_file(index_file: str) -> TFRecordIndex:
    try:
        if index_file.endswith(".npz"):
            with np.load(index_file, allow_pickle=False) as npz:
                if "arr_0" not in npz.files:
                    raise TFRecordIndexError(index_file, f"no 'arr_0' array in the index (found {npz.files})")
                arr_0 = npz["arr_0"]
                locations = npz["locations"] if "locations" in npz.files else None
                built_from = None
                if all(key in npz.files for key in _META_KEYS):
                    built_from = (int(npz["tfrecord_size"]), int(npz["tfrecord_mtime_ns"]))
        elif index_file.endswith(".npy"):
            arr_0, locations, built_from = np.load(index_file, allow_pickle=False), None, None
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "no data": an empty index is judged below
                arr_0 = np.loadtxt(index_file, dtype=np.int64, ndmin=2)
            locations, built_from = None, None
    except TFRecordIndexError:
        raise
    except Exception as exc:  # zip, npy and text parsers raise a zoo of types for the same problem
        raise TFRecordIndexError(index_file, f"cannot read the index file ({exc}); delete it to rebuild") from None
    arr_0 = np.asarray(arr_0)
    if arr_0.size == 0:
        arr_0 = arr_0.reshape(0, 2)
    if arr_0.ndim != 2 or arr_0.shape[1] != 2 or not np.issubdtype(arr_0.dtype, np.integer):
        raise TFRecordIndexError(index_file, f"'arr_0' must be integers of shape (n, 2), found {arr_0.dtype} {arr_0.shape}")
    arr_0 = arr_0.astype(np.int64, copy=False)
    if locations is not None:
        locations = np.asarray(locations)
        if locations.size == 0 and (len(arr_0) or locations.shape != arr_0.shape):
            # Slideflow's "no locations": np.savez(locations=[]) stores an empty float64 array.
            locations = None
    if locations is not None:
        if locations.shape != arr_0.shape or not np.issubdtype(locations.dtype, np.integer):
            raise TFRecordIndexError(
                index_file, f"'locations' must be integers of shape {arr_0.shape}, found {locations.dtype} {locations.shape}"
            )
        locations = locations.astype(np.int64, copy=False)
    if len(arr_0) and (
        arr_0[0, 0] != 0
        or np.any(arr_0[:, 1] < FRAME_OVERHEAD)
        or np.any(arr_0[1:, 0] != arr_0[:-1, 0] + arr_0[:-1, 1])
    ):
        raise TFRecordIndexError(index_file, "the records in 'arr_0' do not follow each other from byte 0; delete it to rebuild")
    return TFRecordIndex(arr_0, locations, index_file, built_from)


def read_index(tfrecord: str | os.PathLike, *, create: bool = True, verify: bool = True) -> TFRecordIndex | None:
    """The index of ``tfrecord``, checked against the file it describes.

    - No index: built and written when ``create`` (in memory only if the folder is read-only), else None.
    - Our index, but the TFRecord's size or modification time changed: rebuilt when ``create``, else
      :class:`StaleIndexError`.
    - Our index, unreadable or not covering the TFRecord although its size and time match (a damaged index file):
      rebuilt when ``create``, else :class:`TFRecordIndexError`.
    - Someone else's index (Slideflow's npz, a text ``.index``, an ``.npy``) that does not end where the TFRecord
      ends: :class:`StaleIndexError` telling how to rebuild it; it is never overwritten behind the user's back.

    A path that is not a regular file (a named pipe, a folder) raises
    :class:`~slidetiles.errors.NotATFRecordError`.
    """
    path = os.fspath(tfrecord)
    stat = check_regular(path)
    index_file = find_index(path)
    if index_file is None:
        return _create_or_build(path, verify) if create else None
    try:
        index = _load_file(index_file)
    except TFRecordIndexError:
        if create and index_file.endswith(".npz") and _written_by_us(index_file):
            log.warning("%s cannot be read; rebuilding it", index_file)
            return _create_or_build(path, verify)
        raise
    if index.is_ours:
        if index.built_from != (stat.st_size, stat.st_mtime_ns):
            if create:
                log.info("%s changed since %s was written; rebuilding the index", path, index_file)
                return _create_or_build(path, verify)
            raise StaleIndexError(
                index_file,
                f"{path} changed after this index was built (size/mtime {index.built_from} -> "
                f"{(stat.st_size, stat.st_mtime_ns)}); rebuild it with `slidetiles index {path}`",
            )
        problem = coverage_problem(index.arr_0, stat.st_size)
        if problem is None:
            return index
        if create:
            log.warning("%s is damaged (%s); rebuilding it", index_file, problem)
            return _create_or_build(path, verify)
        raise TFRecordIndexError(
            index_file, f"damaged index: {problem}; rebuild it with `slidetiles index --force {path}`"
        )
    problem = coverage_problem(index.arr_0, stat.st_size)
    if problem is not None:
        raise StaleIndexError(
            index_file,
            f"this index (not written by slidetiles) does not match {path}: {problem}; the TFRecord changed "
            f"after indexing. Rebuild it with `slidetiles index --force {path}` (replaces the index file) or "
            "delete the index file",
        )
    return index


def coverage_problem(arr_0: np.ndarray, size: int) -> str | None:
    """Why ``arr_0`` cannot be the index of a TFRecord of ``size`` bytes, or None when it can.

    ``arr_0`` must already list records that follow each other from byte 0 (``_load_file`` checks that); here the
    last one must end exactly at the end of the file, so no record is left out and no length is larger than the
    file (a damaged length would otherwise ask for exabytes).
    """
    if not len(arr_0):
        return None if size == 0 else f"it lists no records but the TFRecord holds {size} bytes"
    longest = int(arr_0[:, 1].max())
    if longest > size:
        return f"it lists a {longest}-byte record but the TFRecord holds only {size} bytes"
    end = int(arr_0[-1, 0]) + int(arr_0[-1, 1])
    if end != size:
        return f"its {len(arr_0)} records cover {end} bytes but the TFRecord holds {size} bytes"
    return None


def _written_by_us(index_file: str) -> bool:
    try:
        with np.load(index_file, allow_pickle=False) as npz:
            return "slidetiles_index" in npz.files
    except Exception:
        pass
    # Too damaged for the zip reader: our member's name in the raw bytes (its local header or the central
    # directory) still says who wrote it; no other writer names a member so.
    try:
        with open(index_file, "rb") as f:
            return b"slidetiles_index.npy" in f.read()
    except OSError:
        return False


def _create_or_build(path: str, verify: bool) -> TFRecordIndex:
    index = build_index(path, verify=verify)
    try:
        written = save_index(path, index.arr_0, index.locations)
    except OSError as exc:
        log.warning("cannot write the index of %s (%s); using it from memory only", path, exc)
        return index
    return TFRecordIndex(index.arr_0, index.locations, written, index.built_from)


def load_index(tfrecord: str | os.PathLike) -> np.ndarray | None:
    """``arr_0`` of the index of ``tfrecord`` (``[start, framed length]`` per record), or None if there is none.

    Like Slideflow's ``load_index``, it does not build a missing index (see :func:`create_index`); unlike it, it
    checks the index against the TFRecord (rebuilding our own stale indexes, refusing others').
    """
    if find_index(tfrecord) is None:
        return None
    # An index exists, so create=True only ever rebuilds our own stale one.
    return read_index(tfrecord, create=True).arr_0
