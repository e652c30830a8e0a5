"""``slidetiles.Dataset``: slides, their annotations and their TFRecords at one tile size, filtered in memory.

A Dataset is built once from disk (sources, annotations, TFRecords and their tile counts) and after that is
immutable: ``filter``, ``clip``, ``balance`` and friends return a new Dataset sharing the same read-only tables,
recording only what was asked. What a Dataset retains, how many tiles each TFRecord contributes and with what
weight are computed from those tables when first needed, so chaining never touches the disk and a clip or a
balance stays consistent whatever filters are added after it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from slidetiles.dataset.annotations import Annotations, blank_mask, load_annotations
from slidetiles.dataset.balancing import BalanceSpec, balance_weights, make_balance_spec
from slidetiles.dataset.catalog import Catalog, empty_frame, scan_catalog
from slidetiles.dataset.clipping import ClipSpec, clip_counts, make_clip_spec
from slidetiles.dataset.sources import (
    Source,
    parse_tile_px,
    parse_tile_um,
    select_sources,
    source_from_paths,
    tile_label,
)
from slidetiles.errors import DatasetError, listing
from slidetiles.io.tfrecord2idx import find_index

#: Names shown in an error before summarising.
SHOWN = 10


@dataclass(frozen=True)
class _Setup:
    """What a Dataset was built from; shared, never modified, by every Dataset derived from it."""

    config: str | None
    sources: tuple[Source, ...]
    tile_px: int | None
    tile_um: int | str | None
    label: str | None
    annotations: Annotations | None
    catalog: Catalog
    #: The manifest a Dataset was loaded from, if any.
    origin: str | None = None
    #: Unmatched names recorded in that manifest (the files behind them are not known to this Dataset).
    recorded_unmatched: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


@dataclass(frozen=True)
class _Selection:
    """The TFRecords a Dataset retains, and what did not match."""

    #: Columns path, slide, patient, source, total, clipped, weight, size, mtime_ns; path order.
    table: pd.DataFrame
    slides_without_tfrecord: tuple[str, ...]
    tfrecords_without_annotation: tuple[str, ...]
    empty_tfrecords: tuple[str, ...]


class Dataset:
    """Slides, annotations and TFRecords at one tile size, from one or more sources.

    Build it from a sources config (Slideflow's ``datasets.json``, the same structure in YAML, or a dict) and
    the names of the ``sources`` to use (default: all of them), or directly from paths, which make one source
    named ``'dataset'``. TFRecords are looked for in ``<tfrecords>/<label>/<slide>.tfrecords`` with
    ``label = tile_label(tile_px, tile_um)`` (``299px_10x``, ``299px_302um``); without a tile size, directly in
    the tfrecords folder. Slides are matched to annotation rows by name. Tile counts come from the index files,
    which are built (in parallel, ``jobs`` processes, with a progress bar) where missing or stale.

    Args:
        config: path to datasets.json / a YAML file, or the same structure as a dict.
        sources: source name or names to use from ``config`` (default: all).
        tile_px: tile size in pixels.
        tile_um: tile size in microns (int) or a magnification string (``'10x'``).
        slides, roi, tiles, tfrecords: folders of a single source, instead of ``config``.
        annotations: CSV path or pandas DataFrame with at least ``patient`` and ``slide`` columns.
        filters, filter_blank, min_tiles: as for :meth:`filter`.
        jobs: processes for building missing indexes (default: all cores).
        progress: show progress bars (default: when stderr is a terminal).

    Example:
        >>> ds = Dataset('datasets.json', tile_px=299, tile_um='10x', annotations='annotations.csv')  # doctest: +SKIP
        >>> ds = ds.filter(filters={'site': ['A', 'B']}, min_tiles=50).clip(500).balance('label')  # doctest: +SKIP
        >>> ds.num_tiles, ds.manifest()  # doctest: +SKIP
    """

    def __init__(
        self,
        config: str | os.PathLike | Mapping | None = None,
        sources: str | Sequence[str] | None = None,
        tile_px: int | None = None,
        tile_um: int | str | None = None,
        *,
        slides: str | os.PathLike | None = None,
        roi: str | os.PathLike | None = None,
        tiles: str | os.PathLike | None = None,
        tfrecords: str | os.PathLike | None = None,
        annotations: str | os.PathLike | pd.DataFrame | None = None,
        filters: Mapping | None = None,
        filter_blank: str | Sequence[str] | None = None,
        min_tiles: int = 0,
        jobs: int | None = None,
        progress: bool | None = None,
    ):
        direct = any(v is not None for v in (slides, roi, tiles, tfrecords))
        if direct and (config is not None or sources is not None):
            raise DatasetError(
                "give either config= (with optional sources=) or folders (slides=, roi=, tiles=, tfrecords=), not both"
            )
        if not direct and config is None:
            raise DatasetError(
                "no data to load: give config= (a datasets.json/YAML file or dict) or folders such as tfrecords=..."
            )
        if (tile_px is None) != (tile_um is None):
            raise DatasetError(
                f"tile_px={tile_px!r}, tile_um={tile_um!r}: give both (TFRecords live in "
                "<tfrecords>/<tile_px>px_<tile_um>/) or neither"
            )
        px = parse_tile_px(tile_px) if tile_px is not None else None
        um = parse_tile_um(tile_um) if tile_um is not None else None
        label = tile_label(px, um) if px is not None else None
        if direct:
            config_path, chosen = None, [source_from_paths(slides, roi, tiles, tfrecords)]
        else:
            config_path, chosen = select_sources(config, sources)
        loaded = load_annotations(annotations) if annotations is not None else None
        self._setup = _Setup(config_path, tuple(chosen), px, um, label, loaded, Catalog(empty_frame()))
        self._filters: dict[str, tuple[str, ...]] = {}
        self._filter_blank: tuple[str, ...] = ()
        self._min_tiles = 0
        self._clip: ClipSpec | None = None
        self._balance: BalanceSpec | None = None
        self._selection_cache: _Selection | None = None
        self._jobs, self._progress = jobs, progress
        # Filters are checked against the annotation columns before the (possibly long) scan of the TFRecords.
        self._apply_filters(filters, filter_blank, min_tiles if min_tiles else None)
        catalog = scan_catalog(chosen, label, jobs=jobs, progress=progress)
        self._setup = replace(self._setup, catalog=catalog)

    # -- construction helpers ----------------------------------------------------------------------------------
    @classmethod
    def _from_setup(cls, setup: _Setup, *, filters, filter_blank, min_tiles, clip, balance) -> "Dataset":
        # Trusted state (a manifest we wrote): no column checks, which an empty manifest could not pass.
        ds = object.__new__(cls)
        ds._setup = setup
        ds._filters = {str(k): tuple(str(v) for v in values) for k, values in filters.items()}
        ds._filter_blank = tuple(filter_blank)
        ds._min_tiles = int(min_tiles)
        ds._clip = clip
        ds._balance = balance
        ds._selection_cache = None
        ds._jobs, ds._progress = None, None
        return ds

    def _evolve(self, **changes) -> "Dataset":
        """A copy with some state replaced: shares the read-only setup, drops the cached selection."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._filters = dict(self._filters)
        for name, value in changes.items():
            setattr(new, name, value)
        new._selection_cache = None
        return new

    def _columns(self) -> list[str]:
        ann = self._setup.annotations
        return ann.columns if ann is not None else []

    def _check_columns(self, columns, what: str) -> None:
        ann = self._setup.annotations
        if ann is None:
            raise DatasetError(f"{what}: no annotations loaded; pass annotations= (CSV or DataFrame) to use columns")
        missing = [c for c in columns if c not in ann.frame.columns]
        if missing:
            raise DatasetError(
                f"{what}: no annotation column(s) {missing}; the columns are {ann.columns}"
                + (f" (from {ann.path})" if ann.path else "")
            )

    def _apply_filters(self, filters, filter_blank, min_tiles) -> None:
        # Only called on a fresh copy (constructor, _evolve result), so mutating self here is safe.
        if filters is not None:
            if not isinstance(filters, Mapping):
                raise DatasetError(f"filters must be a dict of column -> list of values, not {type(filters).__name__}")
            self._check_columns(list(filters), "filter(filters=...)")
            for column, values in filters.items():
                if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
                    values = [values]
                self._filters[str(column)] = tuple(
                    dict.fromkeys(v if isinstance(v, str) else str(v) for v in values)
                )
        if filter_blank is not None:
            columns = [filter_blank] if isinstance(filter_blank, str) else list(filter_blank)
            self._check_columns(columns, "filter(filter_blank=...)")
            self._filter_blank = tuple(dict.fromkeys([*self._filter_blank, *map(str, columns)]))
        if min_tiles is not None:
            if isinstance(min_tiles, bool) or not isinstance(min_tiles, (int, np.integer)) or min_tiles < 0:
                raise DatasetError(f"min_tiles={min_tiles!r}: give a number of tiles >= 0")
            self._min_tiles = int(min_tiles)

    # -- manipulation (each returns a new Dataset) ---------------------------------------------------------------
    def filter(
        self, *args, filters: Mapping | None = None, filter_blank=None, min_tiles: int | None = None
    ) -> "Dataset":
        """A Dataset keeping only slides that pass the filters, added to those already active.

        Args:
            filters: ``{column: [values]}``: keep slides whose value is one of the values (compared as strings;
                a non-string value is compared as ``str(value)``). Replaces an active filter on the same column.
            filter_blank: column(s): drop slides whose value is blank (``''``, whitespace, missing).
            min_tiles: drop TFRecords with fewer tiles than this (total tiles, before clipping); replaces the
                active value.

        A column that does not exist is an error listing the columns. ``filter({'site': ['A']})`` (the filters as
        the only positional argument) works too.

        Example:
            >>> ds.filter(filters={'label': ['tumor']}, filter_blank='site', min_tiles=10)  # doctest: +SKIP
        """
        if args:
            if len(args) > 1 or filters is not None:
                raise DatasetError("filter() takes the filters dict as its only positional argument")
            filters = args[0]
        new = self._evolve()
        new._apply_filters(filters, filter_blank, min_tiles)
        return new

    def remove_filter(
        self, *, filters: str | Sequence[str] | None = None, filter_blank=None, min_tiles: bool = False
    ) -> "Dataset":
        """A Dataset without some active filters: ``filters=[columns]``, ``filter_blank=[columns]``, and
        ``min_tiles=True`` to reset the minimum to 0. Naming a filter that is not active is an error listing the
        active ones.

        Example:
            >>> ds.remove_filter(filters=['site'], filter_blank=['label'])  # doctest: +SKIP
        """
        new_filters = dict(self._filters)
        if filters is not None:
            for column in [filters] if isinstance(filters, str) else list(filters):
                if column not in new_filters:
                    raise DatasetError(
                        f"remove_filter(filters=[{column!r}]): no active filter on {column!r}; "
                        f"active filters are on {list(new_filters) or 'no column'}"
                    )
                del new_filters[column]
        new_blank = list(self._filter_blank)
        if filter_blank is not None:
            for column in [filter_blank] if isinstance(filter_blank, str) else list(filter_blank):
                if column not in new_blank:
                    raise DatasetError(
                        f"remove_filter(filter_blank=[{column!r}]): {column!r} is not in the active filter_blank "
                        f"{new_blank}"
                    )
                new_blank.remove(column)
        return self._evolve(
            _filters=new_filters, _filter_blank=tuple(new_blank), _min_tiles=0 if min_tiles else self._min_tiles
        )

    def clear_filters(self) -> "Dataset":
        """A Dataset with no filters, filter_blank or min_tiles (clip and balance are kept)."""
        return self._evolve(_filters={}, _filter_blank=(), _min_tiles=0)

    def clip(
        self, max_tiles: int = 0, strategy: str | None = None, headers: str | Sequence[str] | None = None
    ) -> "Dataset":
        """A Dataset taking at most so many tiles from each TFRecord.

        ``max_tiles`` caps every TFRecord (0: no cap). ``strategy`` then undersamples to the smallest group:
        ``'slide'`` (every TFRecord keeps as many tiles as the smallest one), ``'patient'`` (every patient keeps
        as many tiles, in all, as the smallest patient) or ``'category'`` (likewise for each category of
        ``headers``); a group's budget is spread over its TFRecords in proportion to their tiles (see
        :mod:`slidetiles.dataset.clipping` for the exact rule). ``clip(0)`` with no strategy removes clipping.
        The clip is recomputed on whatever the Dataset retains, so later filters keep it consistent.

        Example:
            >>> ds.clip(500).manifest()  # doctest: +SKIP
            {'tfrecords/299px_10x/slide1.tfrecords': {'total': 1526, 'clipped': 500}, ...}
        """
        spec = make_clip_spec(max_tiles, strategy, headers)
        if spec is not None and spec.strategy in ("patient", "category"):
            self._check_columns(spec.headers or ["patient"], f"clip(strategy={spec.strategy!r})")
        new = self._evolve(_clip=spec)
        new._selection()  # surfaces blank category values now rather than at the first manifest()
        return new

    def unclip(self) -> "Dataset":
        """A Dataset taking every tile of every TFRecord."""
        return self._evolve(_clip=None)

    def balance(
        self, headers: str | Sequence[str] | None = None, strategy: str | None = "category", force: bool = False
    ) -> "Dataset":
        """A Dataset with sampling weights per TFRecord for the interleaving loaders.

        ``strategy``: ``'tile'`` (proportional to clipped tiles), ``'slide'`` (uniform), ``'patient'`` (each
        patient equally, split among its slides), ``'category'`` (each category of ``headers`` equally, then in
        proportion to tiles within it); None removes balancing. See :mod:`slidetiles.dataset.balancing`.
        ``force`` is accepted for Slideflow compatibility and ignored: every value here is a category string.

        Example:
            >>> ds.balance('label').prob_weights  # doctest: +SKIP
        """
        del force
        spec = make_balance_spec(headers, strategy)
        if spec is not None and spec.strategy in ("patient", "category"):
            self._check_columns(spec.headers or ["patient"], f"balance(strategy={spec.strategy!r})")
        new = self._evolve(_balance=spec)
        new._selection()
        return new

    # -- what is retained ----------------------------------------------------------------------------------------
    def _group_keys(self, table: pd.DataFrame, strategy: str, headers, what: str) -> list:
        if strategy == "patient" or table.empty:
            return table["patient"].tolist()
        rows = self._setup.annotations.frame.loc[table["slide"].to_numpy(), list(headers)]
        blank = np.zeros(len(rows), dtype=bool)
        for column in headers:
            blank |= blank_mask(rows[column]).to_numpy()
        if blank.any():
            bad = rows.index[blank].tolist()
            raise DatasetError(
                f"{what}: {len(bad)} slide(s) have a blank value in {list(headers)}: {listing(bad, SHOWN)}. "
                f"Drop them first with .filter(filter_blank={list(headers)})"
            )
        if len(headers) == 1:
            return rows[headers[0]].tolist()
        return list(zip(*(rows[c].tolist() for c in headers)))

    def _passing_mask(self, frame: pd.DataFrame) -> np.ndarray:
        """Annotation rows passing ``filters`` and ``filter_blank`` (TFRecords and tile counts aside)."""
        mask = np.ones(len(frame), dtype=bool)
        # A column can be absent only in a Dataset read from a manifest that retained no slide at all.
        for column, values in self._filters.items():
            mask &= frame[column].isin(values).to_numpy() if column in frame else False
        for column in self._filter_blank:
            mask &= ~blank_mask(frame[column]).to_numpy() if column in frame else False
        return mask

    def _label_rows(self) -> pd.DataFrame:
        """The annotation rows Slideflow's ``filtered_annotations`` holds, which its ``labels()`` numbers over.

        Every row passing ``filters`` and ``filter_blank``, slides without a TFRecord (or with an empty one)
        included; with ``min_tiles``, only slides with a TFRecord of that many tiles, as Slideflow checks it.
        A category carried only by a slide without a TFRecord still takes its place in the sorted list, so
        numbering the retained slides alone would disagree with Slideflow (and with its ``splits.json``).
        """
        frame = self._label_frame()
        mask = self._passing_mask(frame)
        if self._min_tiles:
            cat = self._setup.catalog.frame
            enough = set(cat.loc[cat["total"].to_numpy() >= self._min_tiles, "slide"])
            mask &= frame.index.isin(enough)
        return frame.loc[mask]

    def _label_frame(self) -> pd.DataFrame:
        """Every annotation row; for a Dataset read from a manifest, the annotations CSV it names.

        A manifest records the rows of the retained slides only, but Slideflow numbers categories over the whole
        filtered CSV. When the CSV is still there, unchanged (same sha256), its rows are used; otherwise the
        manifest's, and a category carried only by a slide without a TFRecord goes unnumbered (warned once).
        """
        setup = self._setup
        ann = setup.annotations
        if setup.origin is None or not ann.path:
            return ann.frame
        cache = setup.catalog.cache
        if "label_frame" not in cache:
            frame = ann.frame
            try:
                full = load_annotations(ann.path)
            except (DatasetError, OSError, UnicodeDecodeError):
                full = None
            if full is not None and full.sha256 == ann.sha256:
                frame = full.frame
            elif setup.recorded_unmatched[0]:
                warnings.warn(
                    f"{setup.origin}: the annotations {ann.path} are missing or changed since the manifest was "
                    f"written, so categories carried only by its slides without a TFRecord "
                    f"({listing(setup.recorded_unmatched[0], SHOWN)}) cannot be numbered as Slideflow numbers them",
                    UserWarning, stacklevel=4,
                )
            cache["label_frame"] = frame
        return cache["label_frame"]

    def label_categories(self, headers: str | Sequence[str]) -> dict[str, list[str]]:
        """``{header: sorted values}``: the categories :meth:`labels` numbers, as Slideflow does.

        The values of every annotated slide passing the filters, slides without a TFRecord included (see
        ``unmatched['slides_without_tfrecord']``), so the indices agree with Slideflow's ``Dataset.labels()``.

        Example:
            >>> ds.label_categories('subtype')  # doctest: +SKIP
            {'subtype': ['A', 'B', 'C']}
        """
        header_list = [headers] if isinstance(headers, str) else list(headers)
        self._check_columns(header_list, "label_categories()")
        rows = self._label_rows()
        return {header: sorted(set(rows[header].tolist())) for header in header_list}

    def _selection(self) -> _Selection:
        if self._selection_cache is not None:
            return self._selection_cache
        setup = self._setup
        cat = setup.catalog.frame
        slides = cat["slide"]
        nonempty = cat["total"].to_numpy() > 0
        if setup.annotations is None:
            passes = np.ones(len(cat), dtype=bool)
            known = passes
            without_tfrecord: list[str] = []
        else:
            frame = setup.annotations.frame
            passing = frame.index[self._passing_mask(frame)]
            passes = slides.isin(passing).to_numpy()
            known = slides.isin(frame.index).to_numpy()
            without_tfrecord = sorted(set(passing) - set(slides))
        keep = passes & nonempty
        if self._min_tiles:
            keep &= cat["total"].to_numpy() >= self._min_tiles
        table = cat.loc[keep].reset_index(drop=True)
        if setup.annotations is not None:
            patients = setup.annotations.frame["patient"].reindex(table["slide"].to_numpy()).to_numpy()
        else:
            patients = [None] * len(table)
        table.insert(2, "patient", pd.Series(patients, dtype=object))
        totals = table["total"].tolist()
        groups = None
        if self._clip is not None and self._clip.strategy in ("patient", "category"):
            groups = self._group_keys(table, self._clip.strategy, self._clip.headers, f"clip({self._clip.describe()})")
        clipped = clip_counts(totals, self._clip, groups)
        groups = None
        if self._balance is not None and self._balance.strategy in ("patient", "category"):
            groups = self._group_keys(
                table, self._balance.strategy, self._balance.headers, f"balance({self._balance.describe()})"
            )
        weights = balance_weights(clipped, self._balance, groups)
        table.insert(table.columns.get_loc("total") + 1, "clipped", pd.Series(clipped, dtype="int64"))
        table.insert(table.columns.get_loc("clipped") + 1, "weight", pd.Series(weights, dtype="float64"))
        recorded_slides, recorded_tfrecords = setup.recorded_unmatched
        selection = _Selection(
            table=table,
            slides_without_tfrecord=tuple(sorted(set(without_tfrecord) | set(recorded_slides))),
            tfrecords_without_annotation=tuple(sorted(set(cat.loc[~known, "path"]) | set(recorded_tfrecords))),
            empty_tfrecords=tuple(cat.loc[passes & ~nonempty, "path"].tolist()),
        )
        self._selection_cache = selection
        return selection

    # -- information ---------------------------------------------------------------------------------------------
    @property
    def tile_px(self) -> int | None:
        return self._setup.tile_px

    @property
    def tile_um(self) -> int | str | None:
        return self._setup.tile_um

    @property
    def label(self) -> str | None:
        """Sub-folder of the TFRecords: ``tile_label(tile_px, tile_um)``, or None without a tile size."""
        return self._setup.label

    @property
    def config(self) -> str | None:
        """The sources config file (None for a dict, direct paths or a manifest)."""
        return self._setup.config

    @property
    def sources(self) -> dict[str, dict]:
        """``{name: {'slides', 'roi', 'tiles', 'tfrecords', 'label'}}`` of the sources in use."""
        return {s.name: {**s.folders(), "label": self._setup.label} for s in self._setup.sources}

    @property
    def sources_names(self) -> list[str]:
        return [s.name for s in self._setup.sources]

    @property
    def filters(self) -> dict[str, list[str]]:
        """Active filters, ``{column: [values]}``."""
        return {k: list(v) for k, v in self._filters.items()}

    @property
    def filter_blank(self) -> list[str]:
        return list(self._filter_blank)

    @property
    def min_tiles(self) -> int:
        return self._min_tiles

    @property
    def clipping(self) -> dict | None:
        """The active clip as ``{'max_tiles', 'strategy', 'headers'}``, or None."""
        return self._clip.to_json() if self._clip is not None else None

    @property
    def balancing(self) -> dict | None:
        """The active balance as ``{'headers', 'strategy'}``, or None."""
        return self._balance.to_json() if self._balance is not None else None

    @property
    def annotations_file(self) -> str | None:
        ann = self._setup.annotations
        return ann.path if ann is not None else None

    @property
    def annotations(self) -> pd.DataFrame | None:
        """Annotation rows of the retained slides (every value a str), in slide order; None without annotations.

        A copy: changing it changes nothing in the Dataset.
        """
        ann = self._setup.annotations
        if ann is None:
            return None
        slides = sorted(self._selection().table["slide"])
        return ann.frame.loc[slides].reset_index(drop=True)

    #: Slideflow's name for the same table.
    filtered_annotations = annotations

    @property
    def all_annotations(self) -> pd.DataFrame | None:
        """Every annotation row as loaded, whatever the filters (a copy)."""
        ann = self._setup.annotations
        return None if ann is None else ann.frame.reset_index(drop=True)

    def slide_table(self) -> pd.DataFrame:
        """One row per retained TFRecord, in path order: ``path, slide, patient, source, total, clipped,
        weight, size, mtime_ns`` (``size``/``mtime_ns``: the TFRecord the count was taken from). A copy."""
        return self._selection().table.copy()

    def tfrecords(self, source: str | None = None) -> list[str]:
        """Paths of the retained TFRecords (of one source if given), sorted."""
        table = self._selection().table
        if source is not None:
            if source not in self.sources_names:
                raise DatasetError(
                    f"tfrecords(source={source!r}): no such source; the sources are {self.sources_names}"
                )
            table = table[table["source"] == source]
        return table["path"].tolist()

    def slides(self) -> list[str]:
        """Names of the retained slides (those with a TFRecord that passes every filter), sorted."""
        return sorted(self._selection().table["slide"])

    def patients(self) -> dict[str, str]:
        """``{slide: patient}`` of the retained slides."""
        if self._setup.annotations is None:
            raise DatasetError("patients(): no annotations loaded; pass annotations= with a 'patient' column")
        table = self._selection().table
        return dict(zip(table["slide"], table["patient"]))

    def manifest(self, key: str = "path", filter: bool = True) -> dict[str, dict[str, int]]:
        """``{tfrecord path: {'total': tiles, 'clipped': tiles taken after clip()}}`` of the retained TFRecords.

        ``key='name'`` keys by slide name instead; ``filter=False`` lists every TFRecord found (those not
        retained with ``clipped == total``).
        """
        if key not in ("path", "name"):
            raise DatasetError(f"manifest(key={key!r}): key is 'path' or 'name'")
        column = "path" if key == "path" else "slide"
        table = self._selection().table
        out = {
            k: {"total": int(t), "clipped": int(c)}
            for k, t, c in zip(table[column], table["total"], table["clipped"])
        }
        if not filter:
            cat = self._setup.catalog.frame
            for k, t in zip(cat[column], cat["total"]):
                out.setdefault(k, {"total": int(t), "clipped": int(t)})
            out = dict(sorted(out.items()))
        return out

    @property
    def num_tiles(self) -> int:
        """Tiles of the retained TFRecords after clipping."""
        return int(self._selection().table["clipped"].sum())

    @property
    def prob_weights(self) -> dict[str, float] | None:
        """``{tfrecord: weight}`` when balanced (Slideflow's attribute), else None (the loaders sample uniformly)."""
        if self._balance is None:
            return None
        table = self._selection().table
        return dict(zip(table["path"], table["weight"].tolist()))

    @property
    def unmatched(self) -> dict[str, list[str]]:
        """What did not match: ``slides_without_tfrecord`` (annotated slides passing the annotation filters
        that have no TFRecord), ``tfrecords_without_annotation`` (TFRecords whose slide no annotation row
        names; never retained when annotations are loaded) and ``empty_tfrecords`` (0 tiles; never retained).
        """
        sel = self._selection()
        return {
            "slides_without_tfrecord": list(sel.slides_without_tfrecord),
            "tfrecords_without_annotation": list(sel.tfrecords_without_annotation),
            "empty_tfrecords": list(sel.empty_tfrecords),
        }

    def is_float(self, header: str) -> bool:
        """Whether every value of ``header`` reads as a number, over the rows Slideflow checks: every annotated
        slide passing the filters, slides without a TFRecord included (so ``use_float='auto'`` decides as
        Slideflow does)."""
        self._check_columns([header], "is_float()")
        try:
            [float(v) for v in self._label_rows()[header]]
        except ValueError:
            return False
        return True

    def labels(
        self,
        headers: str | Sequence[str],
        use_float: bool | Mapping[str, bool] | str = False,
        assign: Mapping[str, Mapping[str, int]] | None = None,
        format: str = "index",
    ):
        """Labels of the retained slides, as Slideflow returns them: ``(labels, unique)``.

        Categorical headers: ``labels[slide]`` is the index of the value in the sorted list of distinct values
        (``format='name'``: the value itself; ``assign={header: {value: int}}``: that int), ``unique`` that list.
        As in Slideflow, the list holds the values of every annotated slide passing the filters, slides without a
        TFRecord included (:meth:`label_categories`), so a value carried only by such a slide still takes an
        index; the dict itself covers the retained slides.
        Continuous headers (``use_float=True``, a ``{header: bool}`` dict, or ``'auto'`` for every header whose
        values all read as numbers): ``labels[slide]`` is a list of floats, as in Slideflow, and ``unique`` is
        ``[]``. With several headers ``labels[slide]`` is a list (one entry per header) and ``unique`` a dict
        per header. A blank or non-numeric continuous value is an error naming the slides.

        Example:
            >>> labels, unique = ds.labels('label')  # doctest: +SKIP
            >>> unique  # doctest: +SKIP
            ['normal', 'tumor']
        """
        header_list = [headers] if isinstance(headers, str) else list(headers)
        self._check_columns(header_list, "labels()")
        if format not in ("index", "name"):
            raise DatasetError(f"labels(format={format!r}): format is 'index' or 'name'")
        table = self._selection().table
        if table.empty:
            raise DatasetError("labels(): the dataset retains no slides (check filters and min_tiles)")
        rows = self._setup.annotations.frame.loc[table["slide"].to_numpy()]
        slides = table["slide"].tolist()
        results: dict[str, object] = {}
        uniques: dict[str, list] = {}
        for header in header_list:
            values = rows[header].tolist()
            if isinstance(use_float, Mapping):
                if header not in use_float:
                    raise DatasetError(f"labels(): use_float is a dict but has no entry for {header!r}")
                as_float = bool(use_float[header])
            elif use_float == "auto":
                as_float = self.is_float(header)
            elif isinstance(use_float, bool):
                as_float = use_float
            else:
                raise DatasetError(f"labels(use_float={use_float!r}): use True, False, 'auto' or a dict per header")
            if as_float:
                converted = []
                bad = []
                for slide, value in zip(slides, values):
                    try:
                        if not value.strip():
                            raise ValueError
                        converted.append(float(value))
                    except ValueError:
                        bad.append(f"{slide}={value!r}")
                if bad:
                    raise DatasetError(
                        f"labels({header!r}, use_float=True): {len(bad)} slide(s) have a blank or non-numeric "
                        f"value: {listing(bad, SHOWN)}. Drop blanks with .filter(filter_blank=[{header!r}])"
                    )
                per_slide = [[v] for v in converted]
                uniques[header] = []
            else:
                unique = self.label_categories(header)[header]
                if assign is not None:
                    mapping = assign.get(header) if (len(header_list) > 1 or header in assign) else None
                    if mapping is None:
                        raise DatasetError(f"labels(): assign has no mapping for {header!r}")
                    missing = sorted(set(unique) - set(mapping))
                    if missing:
                        raise DatasetError(f"labels(): assign[{header!r}] has no entry for value(s) {missing}")
                    per_slide = [mapping[v] for v in values]
                elif format == "name":
                    per_slide = list(values)
                else:
                    position = {v: i for i, v in enumerate(unique)}
                    per_slide = [position[v] for v in values]
                uniques[header] = unique
            for slide, value in zip(slides, per_slide):
                if len(header_list) == 1:
                    results[slide] = value
                elif slide in results:
                    results[slide] = [*results[slide], *(value if isinstance(value, list) else [value])]
                else:
                    results[slide] = list(value) if isinstance(value, list) else [value]
        if len(header_list) == 1:
            return results, uniques[header_list[0]]
        return results, uniques

    def extract_tiles(self, **kwargs) -> dict:
        """Tile every slide of the sources into ``<tfrecords>/<tile label>/`` (Slideflow's arguments).

        See :func:`slidetiles.dataset.extraction.extract_dataset_tiles`. Build a new Dataset afterwards to see
        the new TFRecords.

        Example:
            >>> reports = dataset.extract_tiles(qc="otsu", skip_extracted=True)  # doctest: +SKIP
        """
        from slidetiles.dataset.extraction import extract_dataset_tiles

        return extract_dataset_tiles(self, **kwargs)

    def rois(self) -> list[str]:
        """ROI files (``<roi>/<slide>.csv``) of the retained slides, first source first."""
        found = self._roi_files()
        return [found[s] for s in self.slides() if s in found]

    def _roi_files(self) -> dict[str, str]:
        cache = self._setup.catalog.cache
        if "rois" not in cache:
            found: dict[str, str] = {}
            for source in self._setup.sources:
                if not source.roi or not os.path.isdir(source.roi):
                    continue
                with os.scandir(source.roi) as it:
                    for entry in sorted(it, key=lambda e: e.name):
                        if entry.name.lower().endswith(".csv") and entry.is_file():
                            found.setdefault(entry.name[:-4], os.path.join(source.roi, entry.name))
            cache["rois"] = found
        return cache["rois"]

    @property
    def img_format(self) -> str | None:
        """``'jpeg'`` or ``'png'``: the image format of the retained TFRecords (their first record), None if
        there are none. TFRecords that mix formats are an error naming an example of each.

        Reads the first record of every retained TFRecord once (remembered for derived Datasets).
        """
        from slidetiles.dataset.imageformat import first_image_format

        cache = self._setup.catalog.cache.setdefault("img_format", {})
        formats: dict[str, list[str]] = {}
        for path in self.tfrecords():
            if path not in cache:
                cache[path] = first_image_format(path)
            formats.setdefault(str(cache[path]), []).append(path)
        if not formats:
            return None
        if len(formats) > 1:
            examples = "; ".join(f"{fmt}: {paths[0]}" for fmt, paths in sorted(formats.items()))
            raise DatasetError(f"the TFRecords mix image formats ({examples}); keep one format per dataset")
        fmt = next(iter(formats))
        return None if fmt == "None" else fmt

    def verify_img_format(self) -> str | None:
        """Slideflow's name for :attr:`img_format`."""
        return self.img_format

    # -- indexes -------------------------------------------------------------------------------------------------
    def build_index(self, force: bool = False, *, jobs: int | None = None, progress: bool | None = None) -> None:
        """Build missing or stale index files of the retained TFRecords (all of them with ``force``), in
        parallel processes with a progress bar. Tile counts of this Dataset are not re-read: build a new one
        (or :meth:`from_manifest`) to see TFRecords that changed.
        """
        from slidetiles.dataset.tilecounts import count_tiles, rebuild_indexes

        paths = self.tfrecords()
        jobs = self._jobs if jobs is None else jobs
        progress = self._progress if progress is None else progress
        if force:
            errors = rebuild_indexes(paths, jobs=jobs, progress=progress)
        else:
            entries = []
            for path in paths:
                stat = os.stat(path)
                entries.append((path, stat.st_size, stat.st_mtime_ns, find_index(path)))
            _, errors = count_tiles(entries, jobs=jobs, progress=progress)
        if errors:
            items = sorted(errors.items())
            shown = "\n  ".join(f"{p}: {e}" for p, e in items[:20])
            raise DatasetError(f"cannot index {len(items)} TFRecord(s):\n  {shown}")

    def rebuild_index(self, *, jobs: int | None = None, progress: bool | None = None) -> None:
        """Rewrite the index of every retained TFRecord: ``build_index(force=True)``."""
        self.build_index(force=True, jobs=jobs, progress=progress)

    # -- output --------------------------------------------------------------------------------------------------
    def summary(self, *, max_names: int = 10, show: bool = True) -> str:
        """Print (unless ``show=False``) and return the Overview / Filters / Sources tables, the tile count, the
        annotation columns and what did not match (counts and up to ``max_names`` names)."""
        from slidetiles.dataset.summary import render_summary

        text = render_summary(self, max_names=max_names)
        if show:
            print(text)
        return text

    def to_manifest(self, path: str | os.PathLike) -> str:
        """Write the manifest JSON (sources, filters, clip, balance, per-TFRecord counts and weights, and the
        size/mtime each count was computed from) atomically; returns its path. Same Dataset, same bytes."""
        from slidetiles.dataset.manifest import manifest_document, write_manifest

        return write_manifest(manifest_document(self), path)

    @classmethod
    def from_manifest(cls, path: str | os.PathLike, check: bool = True) -> "Dataset":
        """The Dataset a manifest describes, without scanning folders or reading indexes.

        With ``check`` (default), every TFRecord is stat'ed: any whose size or mtime changed since the manifest
        was written, or that is gone, raises :class:`~slidetiles.errors.StaleManifestError` naming them all.
        The Dataset holds only the manifest's TFRecords: clearing its filters cannot bring back others.
        """
        from slidetiles.dataset.manifest import dataset_from_manifest

        return dataset_from_manifest(cls, path, check=check)

    # -- training / validation splits (planning lives in slidetiles.splits) --------------------------------------
    def split(
        self,
        model_type: str | None = "categorical",
        labels=None,
        strategy: str | None = None,
        fraction: float | None = None,
        k_fold: int | None = None,
        k_fold_iter: int | None = None,
        k_fold_header: str | None = None,
        site_labels: str | None = "site",
        splits: str | os.PathLike | None = None,
        seed: int = 0,
        time_limit: float = 10.0,
        *,
        val_strategy: str | None = None,
        val_fraction: float | None = None,
        val_k_fold: int | None = None,
        read_only: bool = False,
        from_wsi: bool = False,
    ) -> tuple["Dataset", "Dataset"]:
        """Split into ``(train, val)`` Datasets at patient level (Slideflow's ``Dataset.split``).

        ``strategy`` is ``'k-fold'`` (default, ``k_fold=3`` folds), ``'k-fold-preserved-site'`` (whole sites per
        fold, by ``site_labels``), ``'k-fold-manual'`` (folds from the ``k_fold_header`` column), ``'fixed'`` (a
        ``fraction`` of patients to validation), ``'bootstrap'`` (fresh each repeat) or ``'none'`` (everything
        trains, validation is empty). ``k_fold_iter`` is 1-based. ``model_type`` is ``'categorical'`` or
        ``'linear'`` (Slideflow 3: ``'classification'``, ``'regression'``; None: classification with labels).
        Slideflow 3's names work too: ``val_strategy``, ``val_fraction``, ``val_k_fold``.

        With ``splits`` (a ``splits.json`` path) a saved split with the same strategy, folds, fraction, patients and
        labels is reused, else the new one is appended (``read_only=True``: reused, never written). Labels are
        saved and compared in Slideflow's encoding (category index over :meth:`label_categories`, ``[float]``
        for linear labels), so Slideflow reuses these entries and this reuses Slideflow's. The same data, labels,
        strategy and ``seed`` give the same split on any machine.

        Example:
            >>> train, val = ds.split(labels='subtype', k_fold=5, k_fold_iter=1, splits='splits.json')  # doctest: +SKIP
            >>> train, val = ds.split('classification', 'subtype', val_strategy='k-fold', val_k_fold=5,
            ...                       k_fold_iter=1, splits='splits.json')  # doctest: +SKIP
        """
        from slidetiles.dataset.splitting import split_dataset

        return split_dataset(
            self, model_type, labels, strategy, fraction, k_fold, k_fold_iter, k_fold_header, site_labels, splits,
            seed, time_limit, val_strategy=val_strategy, val_fraction=val_fraction, val_k_fold=val_k_fold,
            read_only=read_only, from_wsi=from_wsi,
        )

    def kfold_split(
        self,
        k: int = 3,
        labels=None,
        preserved_site: bool = False,
        splits: str | os.PathLike | None = None,
        seed: int = 0,
        **options,
    ) -> tuple[tuple["Dataset", "Dataset"], ...]:
        """``(train, val)`` for each of the ``k`` folds of one partition, as a tuple (Slideflow's
        ``Dataset.kfold_split``; see :meth:`split`). ``options``: ``model_type``, ``site_labels``, ``time_limit``,
        ``read_only``.

        Example:
            >>> for train, val in ds.kfold_split(k=5, labels='subtype'):  # doctest: +SKIP
            ...     ...
        """
        from slidetiles.dataset.splitting import kfold_split_dataset

        return kfold_split_dataset(self, k, labels, preserved_site, splits, seed, **options)

    # -- training loaders (the loaders live in slidetiles.loaders) -------------------------------------------------
    def torch(self, labels=None, batch_size: int = 32, *, use_float=False, **options):
        """A PyTorch ``DataLoader`` over the retained tiles (Slideflow's ``Dataset.torch``).

        ``labels``: a header (categories become indices in sorted order, as :meth:`labels`; ``use_float`` for
        continuous outcomes) or a ``{slide: label}`` dict (pass the full dataset's labels to a split's loaders so
        both sides encode classes alike). Sampling weights come from :meth:`balance`, limits from :meth:`clip`.
        ``options``: ``num_workers``, ``infinite`` (default True), ``augment`` (``'xyrjb'`` letters or True),
        ``standardize``, ``rank``/``world_size`` (worker w of rank r reads shard ``r * workers + w``), ``seed``,
        ``incl_slidenames``, ``incl_loc``, ``on_error='raise'|'skip'``... (see
        :func:`slidetiles.loaders.make_torch_loader`). Batches: ``(images (N,3,H,W) uint8, labels[, ...])``.

        Example:
            >>> loader = ds.torch(labels='subtype', batch_size=64, num_workers=2, augment='xyr', seed=0)  # doctest: +SKIP
            >>> loader.set_epoch(1)  # doctest: +SKIP
        """
        from slidetiles.dataset.loading import torch_loader

        return torch_loader(self, labels, batch_size, use_float=use_float, **options)

    def tensorflow(self, labels=None, batch_size: int = 32, *, use_float=False, **options):
        """A ``tf.data.Dataset`` over the retained tiles, with the options of :meth:`torch` (NHWC batches)."""
        from slidetiles.dataset.loading import tensorflow_dataset

        return tensorflow_dataset(self, labels, batch_size, use_float=use_float, **options)

    def __repr__(self) -> str:
        setup = self._setup
        origin = f"manifest={setup.origin!r}" if setup.origin else f"config={setup.config!r}"
        return (
            f"Dataset({origin}, sources={self.sources_names!r}, tile_px={setup.tile_px!r}, "
            f"tile_um={setup.tile_um!r}, tfrecords={len(self._selection().table)})"
        )
