"""The Dataset's state as values: what it was loaded from, what was asked of it, and what that retains.

A :class:`~slidetiles.Dataset` wraps one :class:`DatasetState`, which pairs

- :class:`LoadedData`: the sources, annotations and TFRecords (with their tile counts) as read from disk, shared
  read-only by every Dataset derived from one construction or one manifest, and
- :class:`SelectionSpec`: the filters, ``filter_blank``, ``min_tiles``, clip and balance asked for, nothing more.

What a state retains (:class:`~slidetiles.dataset.selection.Selection`) follows from these two and is computed from
the tables in memory when first read (:mod:`~slidetiles.dataset.selection`), so chaining never touches the disk and
a clip or a balance stays consistent whatever filters are added after it. The manifest writes and reads a state
(:mod:`~slidetiles.dataset.manifest`), the summary renders one (:mod:`~slidetiles.dataset.summary`) and the labels
are encoded from one (:mod:`~slidetiles.dataset.labels`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from slidetiles.dataset.annotations import Annotations
from slidetiles.dataset.balancing import BalanceSpec
from slidetiles.dataset.catalog import Catalog
from slidetiles.dataset.clipping import ClipSpec
from slidetiles.dataset.selection import Selection, select
from slidetiles.dataset.sources import Source, roi_files
from slidetiles.errors import DatasetError

__all__ = ["DatasetState", "LoadedData", "Selection", "SelectionSpec"]


# eq=False here and below: the tables are DataFrames, which have no single truth value; states compare by identity.
@dataclass(frozen=True, eq=False)
class LoadedData:
    """What a Dataset was built from; shared, never modified, by every Dataset derived from it."""

    #: The sources config file (None for a dict, direct paths or a manifest).
    config: str | None
    sources: tuple[Source, ...]
    tile_px: int | None
    tile_um: int | str | None
    #: Sub-folder of the TFRecords, ``tile_label(tile_px, tile_um)``; None without a tile size.
    label: str | None
    annotations: Annotations | None
    #: The TFRecords found and their tile counts; its ``cache`` keeps what derived Datasets reuse (ROIs, formats).
    catalog: Catalog
    #: The manifest a Dataset was loaded from, if any.
    origin: str | None = None
    #: Unmatched names recorded in that manifest (the files behind them are not known to this Dataset).
    recorded_unmatched: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    @property
    def columns(self) -> list[str]:
        """The annotation columns ([] without annotations)."""
        return self.annotations.columns if self.annotations is not None else []

    def check_columns(self, columns: Sequence[str], what: str) -> None:
        """Raise a :class:`DatasetError` starting with ``what`` unless every one of ``columns`` is an annotation
        column (listing the columns there are)."""
        ann = self.annotations
        if ann is None:
            raise DatasetError(f"{what}: no annotations loaded; pass annotations= (CSV or DataFrame) to use columns")
        missing = [c for c in columns if c not in ann.frame.columns]
        if missing:
            raise DatasetError(
                f"{what}: no annotation column(s) {missing}; the columns are {ann.columns}"
                + (f" (from {ann.path})" if ann.path else "")
            )

    def roi_files(self) -> dict[str, str]:
        """``{slide: <roi>/<slide>.csv}`` of every source, first source first; the folders are scanned once."""
        cache = self.catalog.cache
        if "rois" not in cache:
            cache["rois"] = roi_files(self.sources)
        return cache["rois"]


@dataclass(frozen=True)
class SelectionSpec:
    """What was asked of a Dataset: filters, ``filter_blank``, ``min_tiles``, clip and balance (nothing computed).

    The values are normalised (filter values as strings, without repeats); :meth:`DatasetState.with_filters`
    builds them from ``Dataset.filter``'s arguments, :meth:`from_json` from a manifest.
    """

    #: ``{column: values}``: keep slides whose value is one of these. Never modified: a new spec gets a new dict.
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Columns whose blank values drop a slide.
    filter_blank: tuple[str, ...] = ()
    #: TFRecords with fewer tiles than this are dropped (0: none).
    min_tiles: int = 0
    clip: ClipSpec | None = None
    balance: BalanceSpec | None = None

    def to_json(self) -> dict:
        """``{'filters', 'filter_blank', 'min_tiles', 'clip', 'balance'}`` as the manifest records them."""
        return {
            "filters": {k: list(v) for k, v in self.filters.items()},
            "filter_blank": list(self.filter_blank),
            "min_tiles": self.min_tiles,
            "clip": self.clip.to_json() if self.clip is not None else None,
            "balance": self.balance.to_json() if self.balance is not None else None,
        }

    @classmethod
    def from_json(cls, doc: Mapping) -> SelectionSpec:
        """The spec :meth:`to_json` wrote. Trusted (a manifest we wrote): no column checks, which a manifest that
        retained no slide could not pass."""
        return cls(
            filters={str(k): tuple(str(v) for v in values) for k, values in doc["filters"].items()},
            filter_blank=tuple(doc["filter_blank"]),
            min_tiles=int(doc["min_tiles"]),
            clip=ClipSpec.from_json(doc["clip"]),
            balance=BalanceSpec.from_json(doc["balance"]),
        )


@dataclass(frozen=True, eq=False)
class DatasetState:
    """One Dataset's state: the data as loaded and the spec of what to retain.

    Immutable: the ``with_*``/``without_*`` methods return a new state sharing ``loaded``. Each checks its
    arguments against the annotation columns as the Dataset method of the same purpose documents.

    Example:
        >>> state = dataset.state.with_filters(filters={'site': ['A']})  # doctest: +SKIP
        >>> state.selection.table['path'].tolist()  # doctest: +SKIP
    """

    loaded: LoadedData
    spec: SelectionSpec = field(default_factory=SelectionSpec)

    @functools.cached_property
    def selection(self) -> Selection:
        """What this state retains, computed from the tables in memory when first read, then remembered (the state
        never changes). Raises :class:`DatasetError` for a category clip or balance over blank values."""
        return select(self.loaded, self.spec)

    def _respec(self, **changes) -> DatasetState:
        return replace(self, spec=replace(self.spec, **changes))

    def with_filters(self, filters: Mapping | None = None, filter_blank=None, min_tiles=None) -> DatasetState:
        """This state with filters added to the active ones (``Dataset.filter``'s arguments; None: unchanged)."""
        spec, loaded = self.spec, self.loaded
        new_filters = dict(spec.filters)
        new_blank = spec.filter_blank
        new_min = spec.min_tiles
        if filters is not None:
            if not isinstance(filters, Mapping):
                raise DatasetError(f"filters must be a dict of column -> list of values, not {type(filters).__name__}")
            loaded.check_columns(list(filters), "filter(filters=...)")
            for column, values in filters.items():
                if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
                    values = [values]
                new_filters[str(column)] = tuple(dict.fromkeys(v if isinstance(v, str) else str(v) for v in values))
        if filter_blank is not None:
            columns = [filter_blank] if isinstance(filter_blank, str) else list(filter_blank)
            loaded.check_columns(columns, "filter(filter_blank=...)")
            new_blank = tuple(dict.fromkeys([*new_blank, *map(str, columns)]))
        if min_tiles is not None:
            if isinstance(min_tiles, bool) or not isinstance(min_tiles, (int, np.integer)) or min_tiles < 0:
                raise DatasetError(f"min_tiles={min_tiles!r}: give a number of tiles >= 0")
            new_min = int(min_tiles)
        return self._respec(filters=new_filters, filter_blank=new_blank, min_tiles=new_min)

    def without_filters(self, filters=None, filter_blank=None, min_tiles: bool = False) -> DatasetState:
        """This state without some active filters (``Dataset.remove_filter``'s arguments); naming a filter that is
        not active is an error listing the active ones."""
        new_filters = dict(self.spec.filters)
        if filters is not None:
            for column in [filters] if isinstance(filters, str) else list(filters):
                if column not in new_filters:
                    raise DatasetError(
                        f"remove_filter(filters=[{column!r}]): no active filter on {column!r}; "
                        f"active filters are on {list(new_filters) or 'no column'}"
                    )
                del new_filters[column]
        new_blank = list(self.spec.filter_blank)
        if filter_blank is not None:
            for column in [filter_blank] if isinstance(filter_blank, str) else list(filter_blank):
                if column not in new_blank:
                    raise DatasetError(
                        f"remove_filter(filter_blank=[{column!r}]): {column!r} is not in the active filter_blank "
                        f"{new_blank}"
                    )
                new_blank.remove(column)
        return self._respec(
            filters=new_filters, filter_blank=tuple(new_blank), min_tiles=0 if min_tiles else self.spec.min_tiles
        )

    def without_any_filter(self) -> DatasetState:
        """This state with no filters, ``filter_blank`` or ``min_tiles`` (clip and balance kept)."""
        return self._respec(filters={}, filter_blank=(), min_tiles=0)

    def with_clip(self, clip: ClipSpec | None) -> DatasetState:
        """This state with ``clip`` (None: no clipping), whose grouping columns must be annotation columns."""
        if clip is not None and clip.strategy in ("patient", "category"):
            self.loaded.check_columns(clip.headers or ["patient"], f"clip(strategy={clip.strategy!r})")
        return self._respec(clip=clip)

    def with_balance(self, balance: BalanceSpec | None) -> DatasetState:
        """This state with ``balance`` (None: no balancing), whose grouping columns must be annotation columns."""
        if balance is not None and balance.strategy in ("patient", "category"):
            self.loaded.check_columns(balance.headers or ["patient"], f"balance(strategy={balance.strategy!r})")
        return self._respec(balance=balance)
