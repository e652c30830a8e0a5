"""What a training loader reads: one :class:`TileSource` per TFRecord, and the labels that go with them.

A source is a plain, framework-free description (path, slide, label, record count, clip, weight), so a Dataset,
a manifest row or a hand-written list can all feed the same loaders. Nothing here imports torch or TensorFlow.

Labels are settled before any worker starts: every source must have one when labels are asked for (the error
names the slides that lack one), and they are encoded once into a numpy array indexed by source:

- all strings -> categorical: the index of the value in the sorted list of distinct values (``label_map``), as
  Slideflow's ``Dataset.labels()`` does;
- all integers -> int64 as given (already-encoded categories);
- any float -> float32 (regression);
- sequences (several outcomes) -> one vector per source, int64 when every element is an integer, else float32;
  all of the same length.

Example:
    >>> sources = [
    ...     TileSource("a.tfrecords", "a", "tumor", n_records=120),
    ...     TileSource("b.tfrecords", "b", "normal", n_records=80, clip=50, weight=2.0),
    ... ]
    >>> labels = encode_labels(sources)
    >>> labels.label_map, labels.values.tolist()
    (['normal', 'tumor'], [1, 0])
    >>> [s.n_tiles for s in sources]
    [120, 50]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The loader errors live in slidetiles.errors with the others; importing them from here still works.
from slidetiles.errors import LoaderError, MissingLabelError, SourceChangedError, TFRecordIndexError, listing
from slidetiles.io.tfrecord2idx import read_index

__all__ = [
    "LabelEncoding",
    "LoaderError",
    "MissingLabelError",
    "SourceChangedError",
    "TileSource",
    "check_sources",
    "encode_labels",
    "sources_from_table",
]

#: How many names an error message lists before it summarises.
_SHOWN = 10


def _slide_of(path: str) -> str:
    name = os.path.basename(path)
    return name[: -len(".tfrecords")] if name.endswith(".tfrecords") else os.path.splitext(name)[0]


@dataclass(frozen=True)
class TileSource:
    """One TFRecord as a loader sees it.

    Attributes:
        path: the ``.tfrecords`` file (its index ``<stem>.index.npz`` / ``.index`` / ``.index.npy`` beside it).
        slide: the slide name; labels are looked up by it, and loaders yield it with ``incl_slidenames``.
        label: the slide's label (str, int, float, a sequence of those) or None.
        n_records: records in the file, i.e. the length of its index (``total`` in a manifest).
        clip: take only the first ``clip`` records (``Dataset.clip()``), or None for all.
        weight: sampling weight in infinite mode (``Dataset.balance()``); >= 0, need not be normalised.

    Example:
        >>> TileSource("/data/s1.tfrecords", "s1", "tumor", n_records=500, clip=100).n_tiles
        100
    """

    path: str
    slide: str
    label: Any = None
    n_records: int = 0
    clip: int | None = None
    weight: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "path", os.fspath(self.path))
        if not isinstance(self.slide, str) or not self.slide:
            raise LoaderError(f"{self.path}: slide must be a non-empty string, got {self.slide!r}")
        if isinstance(self.n_records, bool) or int(self.n_records) != self.n_records or self.n_records < 0:
            raise LoaderError(f"{self.path}: n_records must be an integer >= 0, got {self.n_records!r}")
        object.__setattr__(self, "n_records", int(self.n_records))
        if self.clip is not None:
            if isinstance(self.clip, bool) or int(self.clip) != self.clip or self.clip < 0:
                raise LoaderError(f"{self.path}: clip must be None or an integer >= 0, got {self.clip!r}")
            object.__setattr__(self, "clip", int(self.clip))
        try:
            weight = float(self.weight)
        except (TypeError, ValueError):
            raise LoaderError(f"{self.path}: weight must be a number, got {self.weight!r}") from None
        if not math.isfinite(weight) or weight < 0:
            raise LoaderError(f"{self.path}: weight must be finite and >= 0, got {self.weight!r}")
        object.__setattr__(self, "weight", weight)

    @property
    def n_tiles(self) -> int:
        """Records read from this file per epoch in finite mode: ``min(n_records, clip)``."""
        return self.n_records if self.clip is None else min(self.n_records, self.clip)

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str | os.PathLike],
        *,
        labels: Mapping[str, Any] | Callable[[str], Any] | None = None,
        weights: Mapping[str, float] | Sequence[float] | None = None,
        clip: int | Mapping[str, int] | None = None,
        slides: Sequence[str] | None = None,
        create_index: bool = True,
    ) -> list["TileSource"]:
        """Sources for TFRecord files, counting records from their indexes (built and written when missing).

        Args:
            paths: the TFRecords.
            labels: ``{slide: label}`` or a function of the slide name; slides it lacks get None.
            weights: one per path, or a dict keyed by path or slide name; 1.0 when missing.
            clip: one cap for every file, or a dict keyed by path or slide name.
            slides: slide names, one per path; default: the file name without ``.tfrecords``.
            create_index: build missing indexes (and rebuild stale ones we wrote); else such a file is an error.

        Example:
            >>> sources = TileSource.from_paths(["s1.tfrecords"], labels={"s1": "tumor"})  # doctest: +SKIP
        """
        paths = [os.fspath(p) for p in paths]
        if slides is None:
            slides = [_slide_of(p) for p in paths]
        elif len(slides) != len(paths):
            raise LoaderError(f"got {len(paths)} paths but {len(slides)} slide names")
        if weights is not None and not isinstance(weights, Mapping):
            weights = list(weights)
            if len(weights) != len(paths):
                raise LoaderError(f"got {len(paths)} paths but {len(weights)} weights")
        out = []
        for i, (path, slide) in enumerate(zip(paths, slides)):
            index = read_index(path, create=create_index)
            if index is None:
                raise LoaderError(f"{path}: no index file; build it with `slidetiles index {path}`")
            if callable(labels):
                label = labels(slide)
            elif labels is not None:
                label = labels.get(slide)
            else:
                label = None
            if weights is None:
                weight = 1.0
            elif isinstance(weights, Mapping):
                weight = weights.get(path, weights.get(slide, 1.0))
            else:
                weight = weights[i]
            if isinstance(clip, Mapping):
                file_clip = clip.get(path, clip.get(slide))
            else:
                file_clip = clip
            out.append(cls(path, slide, label, len(index), file_clip, weight))
        return out


def sources_from_table(rows, *, labels: Mapping[str, Any] | None = None) -> list[TileSource]:
    """Sources from rows describing TFRecords, e.g. a Dataset's table or a manifest.

    Each row is a mapping (a ``pandas.DataFrame`` is read row by row) with:

    - ``path`` (or ``tfrecord``): the file;
    - ``slide``: optional, default the file name;
    - ``total`` (or ``n_records``): records in the file;
    - ``clipped`` (records taken, as in ``Dataset.manifest()``) or ``clip`` (the cap); optional;
    - ``weight``: optional, default 1;
    - ``label``: optional; ``labels={slide: label}`` overrides it.

    Nothing is read from disk: the counts are trusted here and checked against the indexes when the loader
    starts (:func:`check_sources`).

    Example:
        >>> rows = [{"path": "/d/s1.tfrecords", "total": 500, "clipped": 100, "weight": 0.5}]
        >>> sources_from_table(rows, labels={"s1": 1})[0]
        TileSource(path='/d/s1.tfrecords', slide='s1', label=1, n_records=500, clip=100, weight=0.5)
    """
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        rows = rows.to_dict("records")
    out = []
    for row in rows:
        path = row.get("path", row.get("tfrecord"))
        if path is None:
            raise LoaderError(f"a row has neither 'path' nor 'tfrecord': {dict(row)!r}")
        path = os.fspath(path)
        slide = row.get("slide") or _slide_of(path)
        total = row.get("total", row.get("n_records"))
        if total is None:
            raise LoaderError(f"{path}: the row has neither 'total' nor 'n_records'")
        clip = row.get("clip")
        if clip is None and row.get("clipped") is not None and int(row["clipped"]) < int(total):
            clip = int(row["clipped"])
        weight = row.get("weight")
        weight = 1.0 if weight is None else weight
        label = labels.get(slide) if labels is not None else row.get("label")
        out.append(TileSource(path, slide, label, int(total), clip, weight))
    return out


def check_sources(sources: Sequence[TileSource], *, create_index: bool = False) -> None:
    """Refuse sources whose TFRecords are missing or no longer hold the records they were counted with.

    Reads each file's index (checked against the TFRecord's size and modification time when we wrote it), so a
    TFRecord rewritten after a manifest counted it is reported here, before any worker starts, naming the files.

    Raises:
        SourceChangedError: files missing, without an index (and ``create_index`` False), or whose record
            count differs from ``n_records``.
    """
    missing, changed, problems = [], [], []
    for source in sources:
        if source.n_tiles == 0:
            continue  # nothing will be read from it (clip=0, or counted empty)
        if not os.path.isfile(source.path):
            missing.append(source.path)
            continue
        try:
            index = read_index(source.path, create=create_index)
        except TFRecordIndexError as exc:
            changed.append(source.path)
            problems.append(str(exc))
            continue
        if index is None:
            changed.append(source.path)
            problems.append(f"{source.path}: no index file (build it with `slidetiles index {source.path}`)")
        elif len(index) != source.n_records:
            changed.append(source.path)
            problems.append(f"{source.path}: {len(index)} records now, {source.n_records} when counted")
    if missing or changed:
        parts = []
        if missing:
            parts.append(f"{len(missing)} TFRecord(s) no longer exist: {listing(missing, _SHOWN)}")
        if changed:
            parts.append(f"{len(changed)} TFRecord(s) changed since they were counted: {listing(problems, _SHOWN)}")
        raise SourceChangedError(
            missing + changed,
            "; ".join(parts) + ". Rebuild the manifest / dataset from the current files (and their indexes).",
        )


@dataclass(frozen=True)
class LabelEncoding:
    """Labels of every source, encoded once.

    Attributes:
        values: one row per source: shape ``(n_sources,)`` or ``(n_sources, k)`` for k outcomes.
        label_map: for string labels, the sorted distinct values (``values`` holds indices into it); else None.
    """

    values: np.ndarray
    label_map: list[str] | None = None

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one label: ``()`` or ``(k,)``."""
        return tuple(self.values.shape[1:])


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return False


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


def encode_labels(sources: Sequence[TileSource], labels: Mapping[str, Any] | None = None) -> LabelEncoding:
    """Encode the label of every source (``labels={slide: label}`` overrides ``source.label``).

    Raises:
        MissingLabelError: some slides have no label (None, NaN, blank), naming them.
        LoaderError: labels of mixed kinds (strings and numbers), or outcome vectors of different lengths.
    """
    values = [labels.get(s.slide) if labels is not None else s.label for s in sources]
    missing = sorted({s.slide for s, v in zip(sources, values) if _is_missing(v)})
    if missing:
        raise MissingLabelError(missing)
    if not values:
        return LabelEncoding(np.zeros(0, dtype=np.int64))
    vectors = [isinstance(v, (list, tuple, np.ndarray)) for v in values]
    if any(vectors):
        if not all(vectors):
            raise LoaderError("labels mix single values and sequences; give every slide the same kind of label")
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            raise LoaderError(f"label sequences have different lengths {sorted(lengths)}; every slide needs the same")
        flat = [x for v in values for x in v]
        if not all(_is_number(x) for x in flat):
            bad = next(s.slide for s, v in zip(sources, values) if not all(_is_number(x) for x in v))
            raise LoaderError(f"slide {bad}: label sequences must hold numbers (encode categories first)")
        if any(_is_missing(x) for x in flat):
            bad = sorted({s.slide for s, v in zip(sources, values) if any(_is_missing(x) for x in v)})
            raise MissingLabelError(bad)
        dtype = np.int64 if all(_is_int(x) for x in flat) else np.float32
        return LabelEncoding(np.asarray([list(v) for v in values], dtype=dtype))
    strings = [isinstance(v, str) for v in values]
    if all(strings):
        label_map = sorted(set(values))
        position = {v: i for i, v in enumerate(label_map)}
        return LabelEncoding(np.asarray([position[v] for v in values], dtype=np.int64), label_map)
    if any(strings) or not all(_is_number(v) for v in values):
        kinds = sorted({type(v).__name__ for v in values})
        raise LoaderError(f"labels mix kinds {kinds}; use all strings (categories) or all numbers")
    dtype = np.int64 if all(_is_int(v) for v in values) else np.float32
    return LabelEncoding(np.asarray(values, dtype=dtype))
