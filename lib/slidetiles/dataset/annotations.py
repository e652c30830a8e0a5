"""Slide annotations: loading a CSV or DataFrame as strings, and refusing tables that would mis-assign slides.

Every value is a string, read as Slideflow reads it (``pandas.read_csv(dtype=str)``, then missing -> ``''``): a
CSV cell pandas takes for missing (empty, ``NA``, ``N/A``, ``nan``, ``NaN``, ``NULL``, ``None``, ``#N/A``, ``<NA>``,
... exactly, no surrounding spaces) becomes ``''``, as do NaN/None in a DataFrame; ``'0'``, ``'FALSE'`` and a string
``'nan'`` inside a DataFrame stay values. Blank, for ``filter_blank``, is what Slideflow drops: ``''`` or a single
space. The user's CSV is read, hashed and never written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass

import pandas as pd

from slidetiles.errors import AnnotationsError, listing

REQUIRED = ("patient", "slide")
#: How many offending rows/slides an error lists before summarising.
SHOWN = 10


@dataclass(frozen=True)
class Annotations:
    """A validated annotations table, shared read-only by every Dataset derived from one construction."""

    #: One row per slide, every value a str, indexed by slide name (the ``slide`` column is kept too).
    frame: pd.DataFrame
    #: The CSV it was read from, or None for a DataFrame.
    path: str | None
    #: SHA-256 of the CSV's bytes (or, for a DataFrame, of its canonical CSV text).
    sha256: str

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)


#: Slideflow's blank values once annotations are strings (``sf.util.EMPTY``: ``''``, ``' '``, None, NaN).
BLANK = ("", " ")


def blank_mask(values: pd.Series) -> pd.Series:
    """True where a value is blank as Slideflow's ``filter_blank`` sees it: missing, ``''`` or ``' '``."""
    return values.isna() | values.isin(BLANK)


def _empty_mask(values: pd.Series) -> pd.Series:
    # A patient or slide name of spaces is as unusable as none.
    return values.isna() | values.astype(str).str.strip().eq("")


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every value to str; real missing values to ``''`` (a literal 'nan' string stays a value)."""
    out = {}
    for column in frame.columns:
        values = frame[column]
        missing = values.isna()
        text = values.map(str, na_action="ignore") if missing.any() else values.map(str)
        out[column] = text.where(~missing, "").astype(str)
    return pd.DataFrame(out, index=frame.index, columns=frame.columns)


def _duplicate_headers(columns) -> list[str]:
    seen, dups = set(), []
    for c in columns:
        if c in seen and c not in dups:
            dups.append(c)
        seen.add(c)
    return dups


def load_annotations(annotations) -> Annotations:
    """Read and validate annotations from a CSV path or a pandas DataFrame.

    Errors (:class:`~slidetiles.errors.AnnotationsError`) name the file and the rows: a missing ``patient`` or
    ``slide`` column, duplicated headers, a blank patient or slide, a slide listed twice, a slide under two
    patients. CSV rows are given as line numbers (the header is line 1); DataFrame rows by index label.
    """
    if isinstance(annotations, pd.DataFrame):
        where = "annotations DataFrame"
        columns = [str(c) for c in annotations.columns]
        dups = _duplicate_headers(columns)
        if dups:
            raise AnnotationsError(f"{where}: duplicated column(s) {dups}; every column name must be unique")
        frame = _as_strings(annotations.set_axis(columns, axis=1))
        row_names = [f"row {label!r}" for label in annotations.index]
        path = None
        digest = hashlib.sha256(frame.to_csv(index=False, lineterminator="\n").encode("utf-8")).hexdigest()
        frame = frame.reset_index(drop=True)
    elif isinstance(annotations, (str, os.PathLike)):
        path = os.fspath(annotations)
        where = path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise AnnotationsError(f"{path}: annotations file not found") from None
        digest = hashlib.sha256(data).hexdigest()
        # utf-8-sig: spreadsheet exports often start with a byte-order mark that would rename the first column.
        text = data.decode("utf-8-sig", errors="strict") if data else ""
        header = next(csv.reader(io.StringIO(text)), None)
        if not header:
            raise AnnotationsError(
                f"{path}: the annotations file is empty; it needs a header with 'patient' and 'slide'"
            )
        dups = _duplicate_headers(header)
        if dups:
            raise AnnotationsError(
                f"{path}: duplicated column(s) {dups} in the header; every column name must be unique"
            )
        try:
            # pandas' default missing-value strings, as Slideflow reads the file: 'NA' and 'nan' are blank there.
            frame = pd.read_csv(io.StringIO(text), dtype=str)
        except (pd.errors.ParserError, ValueError) as exc:
            raise AnnotationsError(f"{path}: cannot read the annotations as CSV ({exc})") from None
        frame = _as_strings(frame)
        # Header is line 1, so data row i is line i + 2 (exact unless a quoted cell spans lines).
        row_names = [f"line {i + 2}" for i in range(len(frame))]
    else:
        raise AnnotationsError(
            f"annotations must be a CSV path or a pandas DataFrame, not {type(annotations).__name__}"
        )

    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        hint = (
            " slidetiles never rewrites your CSV to add one: add a 'slide' column holding each slide's name "
            "(its TFRecord file name without .tfrecords)."
            if "slide" in missing
            else ""
        )
        raise AnnotationsError(
            f"{where}: missing required column(s) {missing}; the columns are {list(frame.columns)}.{hint}"
        )
    if len(frame.columns) == 1:
        raise AnnotationsError(f"{where}: only one column found; is the file comma-separated?")

    for column in REQUIRED:
        bad = _empty_mask(frame[column]).to_numpy().nonzero()[0]
        if len(bad):
            raise AnnotationsError(
                f"{where}: blank {column!r} in {listing([row_names[i] for i in bad], SHOWN)}; every row needs a "
                "patient and a slide name (drop the rows or fill them in)"
            )

    slides = frame["slide"]
    dup_mask = slides.duplicated(keep=False).to_numpy()
    if dup_mask.any():
        groups: dict[str, list[int]] = {}
        for i in dup_mask.nonzero()[0]:
            groups.setdefault(slides.iat[i], []).append(int(i))
        conflicts = []
        repeats = []
        for slide, rows in groups.items():
            patients = list(dict.fromkeys(frame["patient"].iat[i] for i in rows))
            where_rows = " and ".join(row_names[i] for i in rows)
            if len(patients) > 1:
                conflicts.append(f"{slide!r} under patients {patients} ({where_rows})")
            else:
                repeats.append(f"{slide!r} ({where_rows})")
        if conflicts:
            raise AnnotationsError(
                f"{where}: {len(conflicts)} slide(s) assigned to more than one patient: "
                f"{listing(conflicts, SHOWN)}. A slide belongs to one patient; fix the rows."
            )
        raise AnnotationsError(
            f"{where}: {len(repeats)} slide(s) listed more than once: {listing(repeats, SHOWN)}. "
            "List each slide once (merge or drop the extra rows)."
        )

    frame = frame.set_axis(pd.Index(frame["slide"].to_numpy(), name=None), axis=0)
    return Annotations(frame=frame, path=path, sha256=digest)


def annotations_from_rows(rows: dict[str, dict[str, str]], path: str | None, sha256: str | None) -> Annotations:
    """Rebuild annotations from a manifest's ``slides`` table (``{slide: {column: value}}``)."""
    columns: list[str] = ["patient", "slide"]
    for values in rows.values():
        for c in sorted(values):
            if c not in columns:
                columns.append(c)
    records = []
    for slide, values in rows.items():
        record = {c: str(values.get(c, "")) for c in columns}
        record["slide"] = slide
        records.append(record)
    frame = pd.DataFrame(records, columns=columns, dtype=str) if records else pd.DataFrame(columns=columns, dtype=str)
    frame = frame.set_axis(pd.Index(frame["slide"].to_numpy(), name=None), axis=0)
    return Annotations(frame=frame, path=path, sha256=sha256 or "")
