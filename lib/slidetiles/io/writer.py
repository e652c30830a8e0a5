"""Writing TFRecords without TensorFlow, atomically."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat

import numpy as np

from slidetiles.io.example import tile_example
from slidetiles.io.framing import FOOTER, LENGTH, masked_crc32c


def temporary_path_for(path: str) -> str:
    """A hidden, unique name in the same folder as ``path`` (same file system, so ``os.replace`` is atomic)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", *, fsync: bool = False, keep_mode: bool = False):
    """Write ``path`` through a hidden temporary file beside it that replaces it only if the block completes.

    A killed process or an exception leaves ``path`` as it was (absent, or the old file) and no temporary file.
    Text modes write UTF-8 with ``\\n`` line ends. ``fsync`` flushes the data to disk before the rename;
    ``keep_mode`` gives the new file the permissions of the one it replaces (group-writable in a shared folder).

    Example:
        >>> with atomic_write("results/summary.txt", "w") as f:  # doctest: +SKIP
        ...     f.write(text)
    """
    path = os.fspath(path)
    tmp = temporary_path_for(path)
    text = "b" not in mode
    try:
        with open(tmp, mode.replace("w", "x"), encoding="utf-8" if text else None, newline="\n" if text else None) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if keep_mode:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class TFRecordWriter:
    """Write records to a TFRecord file that appears at its final path only when complete.

    Records go to a hidden temporary file beside ``path``; :meth:`close` renames it into place. A process that is
    killed, or a ``with`` block that raises, leaves no file at ``path`` (an existing file there stays untouched
    until the rename). The writer remembers each record's offset, length and tile location, so an index can be
    written without reading the file again (:meth:`index_arrays`).

    Example:
        >>> with TFRecordWriter("out/slide1.tfrecords") as writer:  # doctest: +SKIP
        ...     writer.write_tile(jpeg_bytes, "slide1", loc_x=768, loc_y=256)
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = False):
        self.path = os.fspath(path)
        self.fsync = fsync
        self._tmp = temporary_path_for(self.path)
        self._file = open(self._tmp, "xb")
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._locations: list[tuple[int, int] | None] = []
        self._position = 0
        self.closed = False

    def write(self, payload, location: tuple[int, int] | None = None) -> None:
        """Append one serialised record (usually a ``tf.train.Example``)."""
        if self.closed:
            raise ValueError(f"{self.path}: write to a closed TFRecordWriter")
        length = LENGTH.pack(len(payload))
        self._file.write(length)
        self._file.write(FOOTER.pack(masked_crc32c(length)))
        self._file.write(payload)
        self._file.write(FOOTER.pack(masked_crc32c(payload)))
        framed = len(payload) + 16
        self._offsets.append(self._position)
        self._lengths.append(framed)
        self._locations.append(location)
        self._position += framed

    def write_tile(self, image_raw: bytes, slide: str, loc_x: int | None = None, loc_y: int | None = None) -> None:
        """Append one tile record with Slideflow's features."""
        location = None if loc_x is None else (int(loc_x), int(loc_y))
        self.write(tile_example(image_raw, slide, loc_x, loc_y), location)

    def __len__(self) -> int:
        return len(self._offsets)

    def index_arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(arr_0, locations)`` as :func:`slidetiles.io.tfrecord2idx.create_index` would compute them."""
        arr_0 = np.column_stack([np.asarray(self._offsets, np.int64), np.asarray(self._lengths, np.int64)])
        arr_0 = arr_0.reshape(-1, 2)
        if self._locations and all(loc is not None for loc in self._locations):
            return arr_0, np.asarray(self._locations, dtype=np.int64).reshape(-1, 2)
        return arr_0, None

    def close(self) -> None:
        """Finish the file and move it to its final path."""
        if self.closed:
            return
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        self.closed = True

    def abort(self) -> None:
        """Drop everything written so far; nothing appears at the final path."""
        if self.closed:
            return
        self._file.close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        # Garbage-collected without close(): the file may be incomplete, so never publish it.
        if not getattr(self, "closed", True):
            self.abort()
