"""From slide annotations to one row per patient: the unit every split works on.

Splits are always patient-level, so the first step of any strategy is to fold the slide-level annotations into a
patient table and to refuse, with a message naming the slides, everything that would make a patient-level split
ambiguous: a patient with two labels, a patient in two sites, a blank or non-numeric label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import pandas as pd

from slidetiles.errors import SplitError, listing
from slidetiles.splits.spec import canonical_model_type



class SplitWarning(UserWarning):
    """A split that can be made but is weaker than asked (a class too small to reach every fold, ...)."""


def natural_key(text: str) -> tuple:
    """Sort key putting ``"2"`` before ``"10"`` and ``"fold2"`` before ``"fold10"``; ties fall back to the text.

    >>> sorted(["10", "2", "1"], key=natural_key)
    ['1', '2', '10']
    """
    parts = re.split(r"(\d+)", text)
    # (0, int) and (1, str) never compare an int with a str.
    key = tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")
    return key, text


def is_blank(value) -> bool:
    """Blank as Slideflow's ``filter_blank`` defines it: None, NaN, ``''`` or a single space.

    Cells a CSV reader takes for missing (``NA``, ``nan``, ``NULL``, ...) are already ``''`` once loaded (see
    :mod:`slidetiles.dataset.annotations`). Anything else, two spaces included, is a value, as in Slideflow.
    """
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        if pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return isinstance(value, str) and value in ("", " ")


def _slide_labels(df: pd.DataFrame, labels, model_type: str) -> list:
    """One raw label per row of ``df`` (None when no labels were asked for)."""
    columns = [str(c) for c in df.columns]
    if labels is None:
        return [None] * len(df)
    if isinstance(labels, Mapping):
        missing = [s for s in df["slide"] if s not in labels]
        if missing:
            raise SplitError(f"labels has no entry for slides {listing(missing)}")
        # Slideflow's Dataset.labels() gives linear outcomes as one-element lists.
        return [v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v for v in (labels[s] for s in df["slide"])]
    if isinstance(labels, str):
        names = [labels]
    elif isinstance(labels, Sequence) and all(isinstance(n, str) for n in labels) and len(labels) > 0:
        names = list(labels)
        if len(names) > 1 and model_type == "linear":
            raise SplitError(f"a linear split balances one outcome; got several label columns: {listing(names)}")
    else:
        raise SplitError(f"labels must be a column name, a list of column names or a slide->label mapping, "
                         f"not {type(labels).__name__}")
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise SplitError(f"label column {listing(repr(m) for m in missing)} not in the annotations; "
                         f"columns are: {listing(columns, limit=40)}")
    if len(names) == 1:
        return list(df[names[0]])
    # Several categorical outcomes are balanced as their combination, as Slideflow does ("a-b").
    rows = zip(*(df[n] for n in names))
    return [None if any(is_blank(v) for v in row) else "-".join(str(v) for v in row) for row in rows]


def _label_name(labels) -> str:
    if isinstance(labels, str):
        return repr(labels)
    if isinstance(labels, Mapping):
        return "labels"
    return repr("-".join(labels))


def patient_table(slides_df: pd.DataFrame, labels=None, model_type: str = "categorical",
                  site_column: str | None = None) -> pd.DataFrame:
    """One row per patient, sorted by patient: the input of every split strategy.

    Args:
        slides_df: slide-level annotations with columns ``slide`` and ``patient`` (strings), plus the label and site
            columns. One row per slide.
        labels: the outcome to balance: a column name, a list of categorical column names (balanced as their
            combination ``"a-b"``), a ``{slide: label}`` mapping, or None (no label: folds balance sizes only).
        model_type: ``'categorical'`` (labels kept as strings) or ``'linear'`` (labels parsed as floats).
        site_column: column holding each slide's site (for preserved-site splits), or None.

    Returns:
        A DataFrame indexed by ``patient`` (sorted by code point, so the order never depends on locale or hash seed)
        with columns ``slides`` (sorted list of slide names), ``label`` (str, float or None) and ``site`` (str or
        None).

    Raises:
        SplitError: a missing column (the message lists the columns), a slide listed twice, a blank patient, a blank
            label or site (the message names the slides and suggests ``filter_blank``), a non-numeric label for a
            linear model, a patient whose slides carry two labels or two sites (patient and slides named).

    Example:
        >>> df = pd.DataFrame({"slide": ["s1", "s2", "s3"], "patient": ["p1", "p1", "p2"],
        ...                    "subtype": ["A", "A", "B"]})
        >>> table = patient_table(df, labels="subtype")
        >>> table.loc["p1", "slides"], table["label"].to_dict()
        (['s1', 's2'], {'p1': 'A', 'p2': 'B'})
    """
    model_type = canonical_model_type(model_type)
    if not isinstance(slides_df, pd.DataFrame):
        raise SplitError(f"expected a DataFrame of slides, got {type(slides_df).__name__}")
    for required in ("slide", "patient"):
        if required not in slides_df.columns:
            raise SplitError(f"annotations lack the column {required!r}; columns are: "
                             f"{listing([str(c) for c in slides_df.columns], limit=40)}")
    df = slides_df.reset_index(drop=True)
    slides = [str(s) for s in df["slide"]]
    patients = list(df["patient"])

    blank_slides = [i for i, s in enumerate(df["slide"]) if is_blank(s)]
    if blank_slides:
        raise SplitError(f"{len(blank_slides)} annotation rows have a blank slide name (rows {listing(blank_slides)})")
    counts: dict[str, int] = {}
    for s in slides:
        counts[s] = counts.get(s, 0) + 1
    duplicated = sorted(s for s, n in counts.items() if n > 1)
    if duplicated:
        raise SplitError(f"slides listed more than once in the annotations: {listing(duplicated)}")
    blank_patients = [slides[i] for i, p in enumerate(patients) if is_blank(p)]
    if blank_patients:
        raise SplitError(f"slides with a blank patient: {listing(sorted(blank_patients))}; every slide needs one")
    patients = [str(p) for p in patients]

    raw_labels = _slide_labels(df, labels, model_type)
    values: list = []
    if labels is not None:
        blank = sorted(s for s, v in zip(slides, raw_labels) if is_blank(v))
        if blank:
            hint = f"filter_blank=[{labels!r}]" if isinstance(labels, str) else "filter_blank"
            raise SplitError(f"blank label {_label_name(labels)} for slides {listing(blank)}; remove them first "
                             f"(dataset.filter({hint}))")
        for slide, value in zip(slides, raw_labels):
            if model_type == "categorical":
                values.append(str(value))
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise SplitError(f"slide {slide}: label {_label_name(labels)} is {value!r}, not a number; a linear "
                                 f"model needs numeric labels") from None
            if not math.isfinite(number):
                raise SplitError(f"slide {slide}: label {_label_name(labels)} is {value!r}, not a finite number")
            values.append(number)
    else:
        values = [None] * len(slides)

    sites: list = [None] * len(slides)
    if site_column is not None:
        if site_column not in df.columns:
            raise SplitError(f"site column {site_column!r} not in the annotations; columns are: "
                             f"{listing([str(c) for c in df.columns], limit=40)}")
        raw_sites = list(df[site_column])
        blank = sorted(s for s, v in zip(slides, raw_sites) if is_blank(v))
        if blank:
            raise SplitError(f"blank site {site_column!r} for slides {listing(blank)}; remove them first "
                             f"(dataset.filter(filter_blank=[{site_column!r}]))")
        sites = [str(v) for v in raw_sites]

    by_patient: dict[str, list[int]] = {}
    for i, patient in enumerate(patients):
        by_patient.setdefault(patient, []).append(i)

    rows = []
    two_labels, two_sites = [], []
    for patient in sorted(by_patient):
        rows_of = sorted(by_patient[patient], key=lambda i: slides[i])
        patient_labels = {values[i] for i in rows_of}
        if len(patient_labels) > 1:
            detail = ", ".join(f"{slides[i]}={raw_labels[i]!r}" for i in rows_of)
            two_labels.append(f"{patient} ({detail})")
        patient_sites = {sites[i] for i in rows_of}
        if len(patient_sites) > 1:
            detail = ", ".join(f"{slides[i]}={sites[i]!r}" for i in rows_of)
            two_sites.append(f"{patient} ({detail})")
        first = rows_of[0]
        rows.append((patient, [slides[i] for i in rows_of], values[first], sites[first]))
    if two_labels:
        raise SplitError(f"patients with slides of different labels {_label_name(labels)}: "
                         f"{listing(two_labels, limit=5)}; a patient-level split needs one label per patient")
    if two_sites:
        raise SplitError(f"patients spanning two sites in {site_column!r}: {listing(two_sites, limit=5)}; "
                         f"preserved-site splitting needs every patient in one site")

    table = pd.DataFrame(
        {
            "slides": pd.Series([r[1] for r in rows], dtype=object),
            "label": pd.Series([r[2] for r in rows], dtype="float64" if model_type == "linear" and labels is not None
                               else object),
            "site": pd.Series([r[3] for r in rows], dtype=object),
        },
    )
    table.index = pd.Index([r[0] for r in rows], name="patient", dtype=object)
    return table


def label_values(table: pd.DataFrame) -> list:
    """The distinct labels of a patient table, sorted; ``[None]`` for a table without labels."""
    values = set(table["label"])
    if None in values:
        return [None]
    return sorted(values)


def json_value(value):
    """``value`` as plain JSON types (NumPy scalars to Python, tuples to lists); other objects as their str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return json_value(value.item())
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def label_categories(slides_df: pd.DataFrame, labels, model_type: str = "categorical",
                     categories: Mapping[str, Sequence] | None = None) -> dict[str, list[str]] | None:
    """The category names of each label column, sorted: the list whose positions Slideflow stores as labels.

    Only categorical labels given as column names have categories (None otherwise). ``categories`` overrides the
    names per column: Slideflow numbers categories over every annotation row passing the filters, slides without a
    TFRecord included (``Dataset.labels``), so a Dataset passes the names of those rows, which may be more than
    the split's slides carry.

    Raises:
        SplitError: a slide's label is missing from the given ``categories``.

    Example:
        >>> df = pd.DataFrame({"slide": ["s1", "s2"], "patient": ["p1", "p2"], "subtype": ["B", "A"]})
        >>> label_categories(df, "subtype", categories={"subtype": ["C", "A", "B"]})
        {'subtype': ['A', 'B', 'C']}
    """
    if canonical_model_type(model_type) != "categorical" or labels is None or isinstance(labels, Mapping):
        return None
    names = [labels] if isinstance(labels, str) else list(labels)
    out = {}
    for name in names:
        used = sorted({str(v) for v in slides_df[name]})
        given = None if categories is None else categories.get(name)
        if given is None:
            out[name] = used
            continue
        given = sorted({str(v) for v in given})
        unknown = sorted(set(used) - set(given))
        if unknown:
            raise SplitError(f"label {name!r}: values {listing(repr(v) for v in unknown)} are not among the "
                             f"categories given ({listing(repr(v) for v in given)})")
        out[name] = given
    return out


def slideflow_outcomes(slides_df: pd.DataFrame, table: pd.DataFrame, labels, model_type: str = "categorical",
                       categories: Mapping[str, list[str]] | None = None) -> dict[str, object]:
    """Each patient's ``outcome_label`` as Slideflow writes it in ``splits.json``.

    Slideflow compares a saved entry's ``outcome_label`` with the labels its training code hands to
    ``Dataset.split`` (``Project.train``), and reuses the entry only when every patient's is equal:

    * a categorical column: the index of the value among the sorted categories (``Dataset.labels``), an int;
    * several categorical columns: the indices joined by ``-`` (``"0-2"``), as ``Project.train`` does;
    * a linear column: ``[value]``, a one-element list of float (``labels(use_float=True)``);
    * a ``{slide: label}`` mapping: the value as given (Slideflow stores what it is handed);
    * no labels: the patient itself (Slideflow then splits by ``Dataset.patients()``).

    Args:
        slides_df: the slide annotations the patient ``table`` was made from.
        table: :func:`patient_table` of ``slides_df``.
        labels, model_type: as given to :func:`patient_table`.
        categories: :func:`label_categories` (None: the sorted values of ``slides_df``).

    Example:
        >>> df = pd.DataFrame({"slide": ["s1", "s2"], "patient": ["p1", "p2"], "subtype": ["B", "A"]})
        >>> table = patient_table(df, labels="subtype")
        >>> slideflow_outcomes(df, table, "subtype", categories={"subtype": ["A", "B", "C"]})
        {'p1': 1, 'p2': 0}
    """
    model_type = canonical_model_type(model_type)
    patients = [str(p) for p in table.index]
    if labels is None:
        return {p: p for p in patients}
    first = {p: slides[0] for p, slides in zip(patients, table["slides"])}
    if isinstance(labels, Mapping):
        return {p: json_value(labels[first[p]]) for p in patients}
    if model_type == "linear":
        return {p: [float(v)] for p, v in zip(patients, table["label"])}
    if categories is None:
        categories = label_categories(slides_df, labels, model_type)
    names = [labels] if isinstance(labels, str) else list(labels)
    position = {name: {v: i for i, v in enumerate(categories[name])} for name in names}
    rows = slides_df.reset_index(drop=True)
    row_of = {str(s): i for i, s in enumerate(rows["slide"])}
    out = {}
    for p in patients:
        i = row_of[first[p]]
        indices = [position[name][str(rows[name].iat[i])] for name in names]
        out[p] = indices[0] if len(names) == 1 else "-".join(str(x) for x in indices)
    return out


def outcome_names(categories: Mapping[str, list[str]] | None) -> dict | None:
    """What each stored index means, for a splits.json reader: ``{"0": name, ...}``, one such dict per column
    when there are several (None without categories)."""
    if not categories:
        return None
    named = {column: {str(i): v for i, v in enumerate(values)} for column, values in categories.items()}
    return next(iter(named.values())) if len(named) == 1 else named
