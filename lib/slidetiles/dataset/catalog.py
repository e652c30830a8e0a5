"""Every TFRecord of a Dataset's sources with its tile count: found once, then shared read-only.

One ``os.scandir`` per source folder lists both the TFRecords and their index files, so finding which index
exists costs no extra system call; counts come from :mod:`slidetiles.dataset.tilecounts`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from slidetiles.dataset.sources import Source
from slidetiles.dataset.tilecounts import count_tiles, pick_index
from slidetiles.errors import DatasetError, listing

TFRECORD_SUFFIX = ".tfrecords"
COLUMNS = ("path", "slide", "source", "total", "size", "mtime_ns")
#: How many failures a construction error lists in full.
SHOWN = 20


@dataclass
class Catalog:
    """TFRecords found, sorted by path: columns ``path, slide, source, total, size, mtime_ns``.

    ``size``/``mtime_ns`` are those of the TFRecord the tile count was computed from. The frame is never
    modified after construction; ``cache`` holds lazily computed facts about the same files (image format,
    ROI listings) that every Dataset derived from this one may share.
    """

    frame: pd.DataFrame
    #: ``(source, folder)`` for each configured TFRecord folder that does not exist.
    missing_dirs: tuple[tuple[str, str], ...] = ()
    cache: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)


def empty_frame() -> pd.DataFrame:
    return make_frame([])


def make_frame(rows: Sequence[tuple]) -> pd.DataFrame:
    """Catalog frame from ``(path, slide, source, total, size, mtime_ns)`` rows (sorted here by path)."""
    rows = sorted(rows, key=lambda r: r[0])
    columns = list(zip(*rows)) if rows else [()] * len(COLUMNS)
    data = {}
    for name, values in zip(COLUMNS, columns):
        if name in ("total", "size", "mtime_ns"):
            data[name] = pd.Series(values, dtype="int64")
        else:
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


def scan_catalog(
    sources: Sequence[Source], label: str | None, *, jobs: int | None = None, progress: bool | None = None
) -> Catalog:
    """Find ``<tfrecords>/<label>/*.tfrecords`` in every source and count their tiles from the index files.

    A folder shared by two sources is read once. The same slide name in two different folders is an error
    naming both files; so is any TFRecord whose tiles cannot be counted (the error lists every such file).
    """
    found: dict[str, tuple[str, str]] = {}  # slide -> (path, source)
    entries: list[tuple[str, int, int, str | None]] = []
    missing_dirs = []
    seen_dirs: set[str] = set()
    clashes = []
    for source in sources:
        folder = source.tfrecord_dir(label)
        if folder is None:
            continue
        key = os.path.normpath(os.path.abspath(folder))
        if key in seen_dirs:
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                dir_entries = list(it)
        except FileNotFoundError:
            missing_dirs.append((source.name, folder))
            continue
        except NotADirectoryError:
            raise DatasetError(f"source {source.name!r}: {folder} is a file, not a folder of TFRecords") from None
        names = {e.name for e in dir_entries}
        for entry in sorted(dir_entries, key=lambda e: e.name):
            name = entry.name
            if not name.endswith(TFRECORD_SUFFIX) or name.startswith(".") or not entry.is_file():
                continue
            slide = name[: -len(TFRECORD_SUFFIX)]
            path = os.path.join(folder, name)
            if slide in found:
                first, first_source = found[slide]
                clashes.append(f"{slide!r}: {first} (source {first_source!r}) and {path} (source {source.name!r})")
                continue
            found[slide] = (path, source.name)
            stat = entry.stat()
            index_name = pick_index(slide, names)
            index_file = os.path.join(folder, index_name) if index_name else None
            entries.append((path, stat.st_size, stat.st_mtime_ns, index_file))
    if clashes:
        shown = listing(clashes, SHOWN, sep="\n  ")
        raise DatasetError(
            f"{len(clashes)} slide(s) have TFRecords in two sources; a slide must come from one source only:\n  "
            f"{shown}\nRemove the duplicate files or choose sources=[...] that do not overlap."
        )
    counts, errors = count_tiles(entries, jobs=jobs, progress=progress)
    if errors:
        items = sorted(errors.items())
        shown = listing((f"{p}: {e}" for p, e in items), SHOWN, sep="\n  ")
        raise DatasetError(
            f"cannot count the tiles of {len(items)} TFRecord(s):\n  {shown}\n"
            "Check them with `slidetiles verify <file>`; re-create damaged files, rebuild foreign or damaged "
            "indexes with `slidetiles index --force <file>`, or move the files out of the dataset's folders."
        )
    source_of = {path: src for path, src in found.values()}
    rows = [
        (path, os.path.basename(path)[: -len(TFRECORD_SUFFIX)], source_of[path], *counts[path])
        for path in counts
    ]
    return Catalog(make_frame(rows), tuple(missing_dirs))
