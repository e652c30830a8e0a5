"""Labels as Slideflow encodes them: the rows it numbers categories over, and ``Dataset.labels``' encoding.

Slideflow numbers a category by its place in the sorted values of every annotated slide passing the filters,
slides without a TFRecord included (its ``filtered_annotations``), not only the slides retained; numbering the
retained slides alone would disagree with Slideflow and with its ``splits.json``. Every function takes a
:class:`~slidetiles.dataset.state.DatasetState`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from slidetiles.dataset.annotations import load_annotations
from slidetiles.dataset.selection import SHOWN, passing_mask
from slidetiles.errors import DatasetError, listing

if TYPE_CHECKING:
    from slidetiles.dataset.state import DatasetState, LoadedData


def label_frame(loaded: "LoadedData") -> pd.DataFrame:
    """Every annotation row; for a Dataset read from a manifest, the annotations CSV it names.

    A manifest records the rows of the retained slides only, but Slideflow numbers categories over the whole
    filtered CSV. When the CSV is still there, unchanged (same sha256), its rows are used; otherwise the
    manifest's, and a category carried only by a slide without a TFRecord goes unnumbered (warned once).
    """
    ann = loaded.annotations
    if loaded.origin is None or not ann.path:
        return ann.frame
    cache = loaded.catalog.cache
    if "label_frame" not in cache:
        frame = ann.frame
        try:
            full = load_annotations(ann.path)
        except (DatasetError, OSError, UnicodeDecodeError):
            full = None
        if full is not None and full.sha256 == ann.sha256:
            frame = full.frame
        elif loaded.recorded_unmatched[0]:
            warnings.warn(
                f"{loaded.origin}: the annotations {ann.path} are missing or changed since the manifest was "
                f"written, so categories carried only by its slides without a TFRecord "
                f"({listing(loaded.recorded_unmatched[0], SHOWN)}) cannot be numbered as Slideflow numbers them",
                # label_frame <- label_rows <- label_categories/is_float <- the Dataset method <- its caller
                UserWarning, stacklevel=5,
            )
        cache["label_frame"] = frame
    return cache["label_frame"]


def label_rows(state: "DatasetState") -> pd.DataFrame:
    """The annotation rows Slideflow's ``filtered_annotations`` holds, which its ``labels()`` numbers over.

    Every row passing ``filters`` and ``filter_blank``, slides without a TFRecord (or with an empty one)
    included; with ``min_tiles``, only slides with a TFRecord of that many tiles, as Slideflow checks it.
    A category carried only by a slide without a TFRecord still takes its place in the sorted list.
    """
    frame = label_frame(state.loaded)
    mask = passing_mask(frame, state.spec)
    min_tiles = state.spec.min_tiles
    if min_tiles:
        cat = state.loaded.catalog.frame
        enough = set(cat.loc[cat["total"].to_numpy() >= min_tiles, "slide"])
        mask &= frame.index.isin(enough)
    return frame.loc[mask]


def label_categories(state: "DatasetState", headers: str | Sequence[str]) -> dict[str, list[str]]:
    """``{header: sorted values}`` over :func:`label_rows`; see :meth:`slidetiles.Dataset.label_categories`."""
    header_list = [headers] if isinstance(headers, str) else list(headers)
    state.loaded.check_columns(header_list, "label_categories()")
    rows = label_rows(state)
    return {header: sorted(set(rows[header].tolist())) for header in header_list}


def is_float(state: "DatasetState", header: str) -> bool:
    """Whether every value of ``header`` over :func:`label_rows` reads as a number; see
    :meth:`slidetiles.Dataset.is_float`."""
    state.loaded.check_columns([header], "is_float()")
    try:
        [float(v) for v in label_rows(state)[header]]
    except ValueError:
        return False
    return True


def encode_labels(
    state: "DatasetState",
    headers: str | Sequence[str],
    use_float: bool | Mapping[str, bool] | str = False,
    assign: Mapping[str, Mapping[str, int]] | None = None,
    format: str = "index",
):
    """``(labels, unique)`` of the retained slides, as Slideflow returns them; see :meth:`slidetiles.Dataset.labels`."""
    header_list = [headers] if isinstance(headers, str) else list(headers)
    state.loaded.check_columns(header_list, "labels()")
    if format not in ("index", "name"):
        raise DatasetError(f"labels(format={format!r}): format is 'index' or 'name'")
    table = state.selection.table
    if table.empty:
        raise DatasetError("labels(): the dataset retains no slides (check filters and min_tiles)")
    rows = state.loaded.annotations.frame.loc[table["slide"].to_numpy()]
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
            as_float = is_float(state, header)
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
            unique = label_categories(state, header)[header]
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
