"""Which TFRecords a Dataset retains: the filter engine over the loaded tables, and its result, :class:`Selection`.

Everything here is computed from tables already in memory (the catalog of TFRecords and the annotations), never
from the disk: :func:`select` is what :attr:`DatasetState.selection <slidetiles.dataset.state.DatasetState.selection>`
runs, once per state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from slidetiles.dataset.annotations import Annotations, blank_mask
from slidetiles.dataset.balancing import balance_weights
from slidetiles.dataset.clipping import clip_counts
from slidetiles.errors import DatasetError, listing

if TYPE_CHECKING:
    from slidetiles.dataset.state import LoadedData, SelectionSpec

#: Names shown in an error before summarising.
SHOWN = 10


# eq=False: a DataFrame has no single truth value, so selections compare by identity.
@dataclass(frozen=True, eq=False)
class Selection:
    """The TFRecords a Dataset retains, and what did not match."""

    #: Columns path, slide, patient, source, total, clipped, weight, size, mtime_ns; path order.
    table: pd.DataFrame
    #: Annotated slides passing the annotation filters that have no TFRecord (and those a manifest recorded).
    slides_without_tfrecord: tuple[str, ...]
    #: TFRecords whose slide no annotation row names (and those a manifest recorded).
    tfrecords_without_annotation: tuple[str, ...]
    #: TFRecords of 0 tiles whose slide passes the filters.
    empty_tfrecords: tuple[str, ...]

    def unmatched(self) -> dict[str, list[str]]:
        """The three lists of what did not match, by name (``Dataset.unmatched``)."""
        return {
            "slides_without_tfrecord": list(self.slides_without_tfrecord),
            "tfrecords_without_annotation": list(self.tfrecords_without_annotation),
            "empty_tfrecords": list(self.empty_tfrecords),
        }


def passing_mask(frame: pd.DataFrame, spec: "SelectionSpec") -> np.ndarray:
    """Annotation rows of ``frame`` passing ``spec.filters`` and ``spec.filter_blank`` (TFRecords and tile counts
    aside)."""
    mask = np.ones(len(frame), dtype=bool)
    # A column can be absent only in a Dataset read from a manifest that retained no slide at all.
    for column, values in spec.filters.items():
        mask &= frame[column].isin(values).to_numpy() if column in frame else False
    for column in spec.filter_blank:
        mask &= ~blank_mask(frame[column]).to_numpy() if column in frame else False
    return mask


def group_keys(annotations: Annotations | None, table: pd.DataFrame, strategy: str, headers, what: str) -> list:
    """The group of each row of ``table`` for a clip or balance ``strategy``: its patient, or its category of
    ``headers`` (a tuple of values for several headers). A blank category value is an error naming the slides."""
    if strategy == "patient" or table.empty:
        return table["patient"].tolist()
    rows = annotations.frame.loc[table["slide"].to_numpy(), list(headers)]
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


def select(loaded: "LoadedData", spec: "SelectionSpec") -> Selection:
    """What ``spec`` retains of ``loaded``: the TFRecords passing every filter with their clipped counts and
    weights, and what did not match."""
    cat = loaded.catalog.frame
    slides = cat["slide"]
    nonempty = cat["total"].to_numpy() > 0
    annotations = loaded.annotations
    if annotations is None:
        passes = np.ones(len(cat), dtype=bool)
        known = passes
        without_tfrecord: list[str] = []
    else:
        frame = annotations.frame
        passing = frame.index[passing_mask(frame, spec)]
        passes = slides.isin(passing).to_numpy()
        known = slides.isin(frame.index).to_numpy()
        without_tfrecord = sorted(set(passing) - set(slides))
    keep = passes & nonempty
    if spec.min_tiles:
        keep &= cat["total"].to_numpy() >= spec.min_tiles
    table = cat.loc[keep].reset_index(drop=True)
    if annotations is not None:
        patients = annotations.frame["patient"].reindex(table["slide"].to_numpy()).to_numpy()
    else:
        patients = [None] * len(table)
    table.insert(2, "patient", pd.Series(patients, dtype=object))
    totals = table["total"].tolist()
    clip, balance = spec.clip, spec.balance
    groups = None
    if clip is not None and clip.strategy in ("patient", "category"):
        groups = group_keys(annotations, table, clip.strategy, clip.headers, f"clip({clip.describe()})")
    clipped = clip_counts(totals, clip, groups)
    groups = None
    if balance is not None and balance.strategy in ("patient", "category"):
        groups = group_keys(annotations, table, balance.strategy, balance.headers, f"balance({balance.describe()})")
    weights = balance_weights(clipped, balance, groups)
    table.insert(table.columns.get_loc("total") + 1, "clipped", pd.Series(clipped, dtype="int64"))
    table.insert(table.columns.get_loc("clipped") + 1, "weight", pd.Series(weights, dtype="float64"))
    recorded_slides, recorded_tfrecords = loaded.recorded_unmatched
    return Selection(
        table=table,
        slides_without_tfrecord=tuple(sorted(set(without_tfrecord) | set(recorded_slides))),
        tfrecords_without_annotation=tuple(sorted(set(cat.loc[~known, "path"]) | set(recorded_tfrecords))),
        empty_tfrecords=tuple(cat.loc[passes & ~nonempty, "path"].tolist()),
    )
