"""Writing TFRecords without TensorFlow, atomically."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import threading

import numpy as np

from slidetiles.errors import OutputWriteError
from slidetiles.io.example import tile_example
from slidetiles.io.framing import FOOTER, LENGTH, masked_crc32c

log = logging.getLogger(__name__)

#: Errors that mean "the data does not fit", whatever was being written: turned into :class:`OutputWriteError`.
_NO_ROOM = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EFBIG: "the file is larger than the file system or the process's file-size limit (ulimit -f) allows",
    errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
}


def _host_tag() -> str:
    # Temporary files carry the writer's host so that a cleaner on another node of a shared file system never
    # mistakes a live writer there for a dead one here (process ids are per host). Hashed: host names can be long.
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temporary_path_for(path: str) -> str:
    """A hidden, unique name in the same folder as ``path`` (same file system, so ``os.replace`` is atomic).

    ``.<name>.tmp-<pid>-<host>-<random>``: the process id and a tag of the host let a later writer of the same
    target tell a file left by a killed writer from one still being written (:func:`remove_stale_temporaries`).
    """
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}-{_host_tag()}-{secrets.token_hex(4)}")


def _temporary_pattern(name: str) -> re.Pattern:
    # Also the older ``.<name>.tmp-<pid>-<random>`` (no host tag), taken to come from this host.
    return re.compile(rf"\.{re.escape(name)}\.tmp-(?P<pid>[0-9]{{1,10}})-(?:(?P<host>[0-9a-f]{{8}})-)?[0-9a-f]{{8}}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process we could have been: leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or a number we cannot check: assume alive
    return True


# Temporary-looking names of each folder, by target, as listed the first time this process wrote there. Listing a
# folder of 20,000 TFRecords and indexes costs tens of milliseconds: once per write, rebuilding their indexes would
# cost more than reading the TFRecords. A target's names are handed out once, at its first write in this process.
_listed: dict[str, dict[str, list[str]]] = {}
_listed_lock = threading.Lock()
_ANY_TEMPORARY = re.compile(r"\.(?P<target>.+)\.tmp-[0-9]{1,10}-(?:[0-9a-f]{8}-)?[0-9a-f]{8}")


def _candidates(folder: str, name: str, rescan: bool) -> list[str]:
    with _listed_lock:
        by_target = None if rescan else _listed.get(folder)
        if by_target is None:
            try:
                names = os.listdir(folder)
            except OSError:
                return []  # the write itself will report a missing or unreadable folder
            by_target = {}
            for entry in names:
                match = _ANY_TEMPORARY.fullmatch(entry) if ".tmp-" in entry else None
                if match is not None:
                    by_target.setdefault(match["target"], []).append(entry)
            _listed[folder] = by_target
        return by_target.pop(name, [])


def remove_stale_temporaries(path: str | os.PathLike, *, rescan: bool = False) -> list[str]:
    """Delete temporary files that killed writers of ``path`` left beside it; returns the paths removed.

    Only regular files named exactly as :func:`temporary_path_for` names them for this same ``path``, written on
    this host by a process that no longer exists, are removed; anything else (other targets, files of live
    writers, of other hosts, symbolic links, folders) is left alone. Failing to remove one is logged, never raised:
    it must not stop the write that triggered the clean-up.

    The folder is listed once per process (the first write there) unless ``rescan``; temporaries left by a writer
    killed after that are removed by the next process that writes the same target.
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    candidates = _candidates(folder, name, rescan)
    if not candidates:
        # The usual case; compiling the target's pattern costs ~0.8 ms, more than writing a slide's index.
        return []
    pattern = _temporary_pattern(name)
    here = _host_tag()
    removed = []
    for entry in candidates:
        match = pattern.fullmatch(entry)
        if match is None or match["host"] not in (None, here) or _pid_alive(int(match["pid"])):
            continue
        stale = os.path.join(folder, entry)
        try:
            if not stat.S_ISREG(os.lstat(stale).st_mode):
                continue
            os.unlink(stale)
        except FileNotFoundError:
            continue  # another writer cleaned it first
        except OSError as exc:
            log.warning("cannot remove the stale temporary file %s (%s)", stale, exc)
            continue
        log.info("removed %s, left by a writer (process %s) that no longer runs", stale, match["pid"])
        removed.append(stale)
    return removed


def no_room_error(path, exc: OSError) -> OSError:
    """``exc`` as an :class:`OutputWriteError` naming ``path`` when it means the data does not fit, else ``exc``."""
    hint = _NO_ROOM.get(exc.errno)
    if hint is None or isinstance(exc, OutputWriteError):
        return exc
    return OutputWriteError(path, exc.errno, f"cannot write the file: {exc.strerror or exc} ({hint})")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", *, fsync: bool = False, keep_mode: bool = False):
    """Write ``path`` through a hidden temporary file beside it that replaces it only if the block completes.

    A killed process or an exception leaves ``path`` as it was (absent, or the old file) and no temporary file;
    temporary files that killed writers of the same ``path`` left are removed first
    (:func:`remove_stale_temporaries`). A full disk or a file-size limit raises :class:`OutputWriteError`
    naming ``path``. Text modes write UTF-8 with ``\\n`` line ends. ``fsync`` flushes the data to disk before the
    rename; ``keep_mode`` gives the new file the permissions of the one it replaces (group-writable in a shared
    folder).

    Example:
        >>> with atomic_write("results/summary.txt", "w") as f:  # doctest: +SKIP
        ...     f.write(text)
    """
    path = os.fspath(path)
    remove_stale_temporaries(path)
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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            error = no_room_error(path, exc)
            if error is not exc:
                raise error from exc
        raise


class TFRecordWriter:
    """Write records to a TFRecord file that appears at its final path only when complete.

    Records go to a hidden temporary file beside ``path``; :meth:`close` renames it into place. A process that is
    killed, or a ``with`` block that raises, leaves no file at ``path`` (an existing file there stays untouched
    until the rename); temporary files that killed writers of the same ``path`` left are removed when the next
    writer starts. A full disk or a file-size limit raises :class:`~slidetiles.errors.OutputWriteError` naming
    ``path``, and drops the temporary file. The writer remembers each record's offset, length and tile location, so an index can be
    written without reading the file again (:meth:`index_arrays`).

    Example:
        >>> with TFRecordWriter("out/slide1.tfrecords") as writer:  # doctest: +SKIP
        ...     writer.write_tile(jpeg_bytes, "slide1", loc_x=768, loc_y=256)
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = False):
        self.path = os.fspath(path)
        self.fsync = fsync
        remove_stale_temporaries(self.path)
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
        try:
            self._file.write(length)
            self._file.write(FOOTER.pack(masked_crc32c(length)))
            self._file.write(payload)
            self._file.write(FOOTER.pack(masked_crc32c(payload)))
        except OSError as exc:
            # The file now ends inside a record: it can never be published.
            self.abort()
            raise no_room_error(self.path, exc) from exc
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
        try:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise no_room_error(self.path, exc) from exc
        self.closed = True

    def abort(self) -> None:
        """Drop everything written so far; nothing appears at the final path."""
        if self.closed:
            return
        self.closed = True
        # Closing flushes what is buffered, which fails again on a full disk; the file is dropped regardless.
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

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
