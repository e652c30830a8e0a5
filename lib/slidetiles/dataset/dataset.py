"""``slidetiles.Dataset``: slides, their annotations and their TFRecords at one tile size, filtered in memory.

A Dataset is built once from disk (sources, annotations, TFRecords and their tile counts) and after that is
immutable: it wraps one :class:`~slidetiles.dataset.state.DatasetState`, the data as loaded plus the spec of what to
retain, and ``filter``, ``clip``, ``balance`` and friends return a new Dataset over a new state sharing the same
read-only tables. This module keeps the Slideflow-facing methods; the rest lives next to the state it works on:
:mod:`~slidetiles.dataset.state` (the state and its checks), :mod:`~slidetiles.dataset.selection` (which TFRecords
a state retains, their clipped counts and weights), :mod:`~slidetiles.dataset.labels` (Slideflow's label encoding),
:mod:`~slidetiles.dataset.manifest` and :mod:`~slidetiles.dataset.summary` (a state written and shown).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pandas as pd

import slidetiles.dataset.labels as labelling
from slidetiles.dataset.annotations import load_annotations
from slidetiles.dataset.balancing import make_balance_spec
from slidetiles.dataset.catalog import Catalog, empty_frame, scan_catalog
from slidetiles.dataset.clipping import make_clip_spec
from slidetiles.dataset.extraction import extract_dataset_tiles
from slidetiles.dataset.imageformat import first_image_format
from slidetiles.dataset.loading import tensorflow_dataset, torch_loader
from slidetiles.dataset.manifest import manifest_document, read_state, write_manifest
from slidetiles.dataset.sources import select_sources, source_from_paths
from slidetiles.dataset.splitting import kfold_split_dataset, split_dataset
from slidetiles.dataset.state import DatasetState, LoadedData
from slidetiles.dataset.summary import render_summary
from slidetiles.dataset.tilecounts import count_tiles, rebuild_indexes
from slidetiles.errors import DatasetError
from slidetiles.io.tfrecord2idx import find_index
from slidetiles.splits.spec import SplitSpec
from slidetiles.tile_size import parse_tile_px, parse_tile_um, tile_label


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
        annotation_table = load_annotations(annotations) if annotations is not None else None
        loaded = LoadedData(config_path, tuple(chosen), px, um, label, annotation_table, Catalog(empty_frame()))
        # Filters are checked against the annotation columns before the (possibly long) scan of the TFRecords.
        spec = DatasetState(loaded).with_filters(filters, filter_blank, min_tiles if min_tiles else None).spec
        catalog = scan_catalog(chosen, label, jobs=jobs, progress=progress)
        self._state = DatasetState(replace(loaded, catalog=catalog), spec)
        self._jobs, self._progress = jobs, progress

    @classmethod
    def from_state(
        cls, state: DatasetState, *, jobs: int | None = None, progress: bool | None = None
    ) -> "Dataset":
        """The Dataset over ``state`` (e.g. another Dataset's :attr:`state`, changed), without touching the disk.

        ``jobs`` and ``progress`` are the defaults of :meth:`build_index`, as for the constructor.

        Example:
            >>> Dataset.from_state(ds.state.with_filters(filters={'site': ['A']}))  # doctest: +SKIP
        """
        new = object.__new__(cls)
        new._state = state
        new._jobs, new._progress = jobs, progress
        return new

    def _derived(self, state: DatasetState) -> "Dataset":
        """A Dataset over ``state`` with this one's index-building defaults."""
        return type(self).from_state(state, jobs=self._jobs, progress=self._progress)

    @property
    def state(self) -> DatasetState:
        """The Dataset's state: the data as loaded, the spec of what to retain, and what that retains
        (``state.selection``). Immutable, like the Dataset."""
        return self._state

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
        return self._derived(self._state.with_filters(filters, filter_blank, min_tiles))

    def remove_filter(
        self, *, filters: str | Sequence[str] | None = None, filter_blank=None, min_tiles: bool = False
    ) -> "Dataset":
        """A Dataset without some active filters: ``filters=[columns]``, ``filter_blank=[columns]``, and
        ``min_tiles=True`` to reset the minimum to 0. Naming a filter that is not active is an error listing the
        active ones.

        Example:
            >>> ds.remove_filter(filters=['site'], filter_blank=['label'])  # doctest: +SKIP
        """
        return self._derived(self._state.without_filters(filters, filter_blank, min_tiles))

    def clear_filters(self) -> "Dataset":
        """A Dataset with no filters, filter_blank or min_tiles (clip and balance are kept)."""
        return self._derived(self._state.without_any_filter())

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
        new = self._derived(self._state.with_clip(make_clip_spec(max_tiles, strategy, headers)))
        new.state.selection  # surfaces blank category values now rather than at the first manifest()
        return new

    def unclip(self) -> "Dataset":
        """A Dataset taking every tile of every TFRecord."""
        return self._derived(self._state.with_clip(None))

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
        new = self._derived(self._state.with_balance(make_balance_spec(headers, strategy)))
        new.state.selection  # as in clip()
        return new

    # -- information ---------------------------------------------------------------------------------------------
    @property
    def tile_px(self) -> int | None:
        return self._state.loaded.tile_px

    @property
    def tile_um(self) -> int | str | None:
        return self._state.loaded.tile_um

    @property
    def label(self) -> str | None:
        """Sub-folder of the TFRecords: ``tile_label(tile_px, tile_um)``, or None without a tile size."""
        return self._state.loaded.label

    @property
    def config(self) -> str | None:
        """The sources config file (None for a dict, direct paths or a manifest)."""
        return self._state.loaded.config

    @property
    def sources(self) -> dict[str, dict]:
        """``{name: {'slides', 'roi', 'tiles', 'tfrecords', 'label'}}`` of the sources in use."""
        return {s.name: {**s.folders(), "label": self._state.loaded.label} for s in self._state.loaded.sources}

    @property
    def sources_names(self) -> list[str]:
        return [s.name for s in self._state.loaded.sources]

    @property
    def filters(self) -> dict[str, list[str]]:
        """Active filters, ``{column: [values]}``."""
        return self._state.spec.to_json()["filters"]

    @property
    def filter_blank(self) -> list[str]:
        return list(self._state.spec.filter_blank)

    @property
    def min_tiles(self) -> int:
        return self._state.spec.min_tiles

    @property
    def clipping(self) -> dict | None:
        """The active clip as ``{'max_tiles', 'strategy', 'headers'}``, or None."""
        return self._state.spec.to_json()["clip"]

    @property
    def balancing(self) -> dict | None:
        """The active balance as ``{'headers', 'strategy'}``, or None."""
        return self._state.spec.to_json()["balance"]

    @property
    def annotations_file(self) -> str | None:
        ann = self._state.loaded.annotations
        return ann.path if ann is not None else None

    @property
    def annotations(self) -> pd.DataFrame | None:
        """Annotation rows of the retained slides (every value a str), in slide order; None without annotations.

        A copy: changing it changes nothing in the Dataset.
        """
        ann = self._state.loaded.annotations
        if ann is None:
            return None
        slides = sorted(self._state.selection.table["slide"])
        return ann.frame.loc[slides].reset_index(drop=True)

    #: Slideflow's name for the same table.
    filtered_annotations = annotations

    @property
    def all_annotations(self) -> pd.DataFrame | None:
        """Every annotation row as loaded, whatever the filters (a copy)."""
        ann = self._state.loaded.annotations
        return None if ann is None else ann.frame.reset_index(drop=True)

    def slide_table(self) -> pd.DataFrame:
        """One row per retained TFRecord, in path order: ``path, slide, patient, source, total, clipped,
        weight, size, mtime_ns`` (``size``/``mtime_ns``: the TFRecord the count was taken from). A copy."""
        return self._state.selection.table.copy()

    def tfrecords(self, source: str | None = None) -> list[str]:
        """Paths of the retained TFRecords (of one source if given), sorted."""
        table = self._state.selection.table
        if source is not None:
            if source not in self.sources_names:
                raise DatasetError(
                    f"tfrecords(source={source!r}): no such source; the sources are {self.sources_names}"
                )
            table = table[table["source"] == source]
        return table["path"].tolist()

    def slides(self) -> list[str]:
        """Names of the retained slides (those with a TFRecord that passes every filter), sorted."""
        return sorted(self._state.selection.table["slide"])

    def patients(self) -> dict[str, str]:
        """``{slide: patient}`` of the retained slides."""
        if self._state.loaded.annotations is None:
            raise DatasetError("patients(): no annotations loaded; pass annotations= with a 'patient' column")
        table = self._state.selection.table
        return dict(zip(table["slide"], table["patient"]))

    def manifest(self, key: str = "path", filter: bool = True) -> dict[str, dict[str, int]]:
        """``{tfrecord path: {'total': tiles, 'clipped': tiles taken after clip()}}`` of the retained TFRecords.

        ``key='name'`` keys by slide name instead; ``filter=False`` lists every TFRecord found (those not
        retained with ``clipped == total``).
        """
        if key not in ("path", "name"):
            raise DatasetError(f"manifest(key={key!r}): key is 'path' or 'name'")
        column = "path" if key == "path" else "slide"
        table = self._state.selection.table
        out = {
            k: {"total": int(t), "clipped": int(c)}
            for k, t, c in zip(table[column], table["total"], table["clipped"])
        }
        if not filter:
            cat = self._state.loaded.catalog.frame
            for k, t in zip(cat[column], cat["total"]):
                out.setdefault(k, {"total": int(t), "clipped": int(t)})
            out = dict(sorted(out.items()))
        return out

    @property
    def num_tiles(self) -> int:
        """Tiles of the retained TFRecords after clipping."""
        return int(self._state.selection.table["clipped"].sum())

    @property
    def prob_weights(self) -> dict[str, float] | None:
        """``{tfrecord: weight}`` when balanced (Slideflow's attribute), else None (the loaders sample uniformly)."""
        if self._state.spec.balance is None:
            return None
        table = self._state.selection.table
        return dict(zip(table["path"], table["weight"].tolist()))

    @property
    def unmatched(self) -> dict[str, list[str]]:
        """What did not match: ``slides_without_tfrecord`` (annotated slides passing the annotation filters
        that have no TFRecord), ``tfrecords_without_annotation`` (TFRecords whose slide no annotation row
        names; never retained when annotations are loaded) and ``empty_tfrecords`` (0 tiles; never retained).
        """
        return self._state.selection.unmatched()

    # -- labels, numbered as Slideflow numbers them (slidetiles.dataset.labels) ----------------------------------
    def label_categories(self, headers: str | Sequence[str]) -> dict[str, list[str]]:
        """``{header: sorted values}``: the categories :meth:`labels` numbers, as Slideflow does.

        The values of every annotated slide passing the filters, slides without a TFRecord included (see
        ``unmatched['slides_without_tfrecord']``), so the indices agree with Slideflow's ``Dataset.labels()``.

        Example:
            >>> ds.label_categories('subtype')  # doctest: +SKIP
            {'subtype': ['A', 'B', 'C']}
        """
        return labelling.label_categories(self._state, headers)

    def is_float(self, header: str) -> bool:
        """Whether every value of ``header`` reads as a number, over the rows Slideflow checks: every annotated
        slide passing the filters, slides without a TFRecord included (so ``use_float='auto'`` decides as
        Slideflow does)."""
        return labelling.is_float(self._state, header)

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
        return labelling.encode_labels(self._state, headers, use_float, assign, format)

    # -- slides and TFRecords on disk ----------------------------------------------------------------------------
    def extract_tiles(self, **kwargs) -> dict:
        """Tile every slide of the sources into ``<tfrecords>/<tile label>/`` (Slideflow's arguments).

        See :func:`slidetiles.dataset.extraction.extract_dataset_tiles`. Build a new Dataset afterwards to see
        the new TFRecords.

        Example:
            >>> reports = dataset.extract_tiles(qc="otsu", skip_extracted=True)  # doctest: +SKIP
        """
        return extract_dataset_tiles(self, **kwargs)

    def rois(self) -> list[str]:
        """ROI files (``<roi>/<slide>.csv``) of the retained slides, first source first."""
        found = self._state.loaded.roi_files()
        return [found[s] for s in self.slides() if s in found]

    @property
    def img_format(self) -> str | None:
        """``'jpeg'`` or ``'png'``: the image format of the retained TFRecords (their first record), None if
        there are none. TFRecords that mix formats are an error naming an example of each.

        Reads the first record of every retained TFRecord once (remembered for derived Datasets).
        """
        cache = self._state.loaded.catalog.cache.setdefault("img_format", {})
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
        text = render_summary(self._state, max_names=max_names)
        if show:
            print(text)
        return text

    def to_manifest(self, path: str | os.PathLike) -> str:
        """Write the manifest JSON (sources, filters, clip, balance, per-TFRecord counts and weights, and the
        size/mtime each count was computed from) atomically; returns its path. Same Dataset, same bytes."""
        return write_manifest(manifest_document(self._state), path)

    @classmethod
    def from_manifest(cls, path: str | os.PathLike, check: bool = True) -> "Dataset":
        """The Dataset a manifest describes, without scanning folders or reading indexes.

        With ``check`` (default), every TFRecord is stat'ed: any whose size or mtime changed since the manifest
        was written, or that is gone, raises :class:`~slidetiles.errors.StaleManifestError` naming them all.
        The Dataset holds only the manifest's TFRecords: clearing its filters cannot bring back others.
        """
        return cls.from_state(read_state(path, check=check))

    # -- training / validation splits (planning lives in slidetiles.splits) --------------------------------------
    # The split defaults are SplitSpec's (a dataclass's class attributes are its field defaults): one home for
    # them, still shown by help(). None is a value for model_type, site_labels and time_limit, so it cannot mean
    # "the default" here.
    def split(
        self,
        model_type: str | None = SplitSpec.model_type,
        labels=None,
        strategy: str | None = None,
        fraction: float | None = None,
        k_fold: int | None = None,
        k_fold_iter: int | None = None,
        k_fold_header: str | None = None,
        site_labels: str | None = SplitSpec.site_labels,
        splits: str | os.PathLike | None = None,
        seed: int = SplitSpec.seed,
        time_limit: float | None = SplitSpec.time_limit,
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
        return split_dataset(
            self, model_type, labels, strategy, fraction, k_fold, k_fold_iter, k_fold_header, site_labels, splits,
            seed, time_limit, val_strategy=val_strategy, val_fraction=val_fraction, val_k_fold=val_k_fold,
            read_only=read_only, from_wsi=from_wsi,
        )

    def kfold_split(
        self,
        k: int = SplitSpec.k_fold,
        labels=None,
        preserved_site: bool = False,
        splits: str | os.PathLike | None = None,
        seed: int = SplitSpec.seed,
        **options,
    ) -> tuple[tuple["Dataset", "Dataset"], ...]:
        """``(train, val)`` for each of the ``k`` folds of one partition, as a tuple (Slideflow's
        ``Dataset.kfold_split``; see :meth:`split`). ``options``: ``model_type``, ``site_labels``, ``time_limit``,
        ``read_only``.

        Example:
            >>> for train, val in ds.kfold_split(k=5, labels='subtype'):  # doctest: +SKIP
            ...     ...
        """
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
        return torch_loader(self, labels, batch_size, use_float=use_float, **options)

    def tensorflow(self, labels=None, batch_size: int = 32, *, use_float=False, **options):
        """A ``tf.data.Dataset`` over the retained tiles, with the options of :meth:`torch` (NHWC batches)."""
        return tensorflow_dataset(self, labels, batch_size, use_float=use_float, **options)

    def __repr__(self) -> str:
        loaded = self._state.loaded
        origin = f"manifest={loaded.origin!r}" if loaded.origin else f"config={loaded.config!r}"
        return (
            f"Dataset({origin}, sources={self.sources_names!r}, tile_px={loaded.tile_px!r}, "
            f"tile_um={loaded.tile_um!r}, tfrecords={len(self._state.selection.table)})"
        )
