"""One entry point for every split: :func:`plan_split`, used by ``Dataset.split`` and by the pipeline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import slidetiles.splits.splits_file as splits_file
import slidetiles.splits.strategies as strategies
from slidetiles.errors import SplitError
from slidetiles.splits.spec import STRATEGIES, SplitSpec
from slidetiles.splits.cohort import (
    label_categories,
    label_values,
    outcome_names,
    patient_table,
    slideflow_outcomes,
)

__all__ = ["STRATEGIES", "SplitPlan", "SplitSpec", "plan_split"]


@dataclass(frozen=True, eq=False)
class SplitPlan:
    """A planned split: which slides are validated in each iteration.

    Attributes:
        strategy: one of :data:`STRATEGIES`.
        k: number of iterations: folds for k-fold strategies, repeats for ``bootstrap``, 1 for ``fixed`` and
            ``none``.
        folds: ``k`` sorted lists of slides; ``folds[i - 1]`` is validated in iteration ``i``.
        patients: the patient table (see :func:`~slidetiles.splits.cohort.patient_table`), plus an ``outcome``
            column: each patient's ``outcome_label`` in Slideflow's encoding.
        validation_patients: ``k`` sorted lists of patients, parallel to ``folds``.
        entry: the splits.json entry (None for ``bootstrap`` and ``none``, which are never saved to a splits file;
            :meth:`record` gives an entry for every strategy).
        reused: the entry was found in the splits file rather than computed.
        seed, fraction, model_type: the inputs.
        path: the splits file, if any; index: the entry's position in it (None when not saved).
        sites: ``{site: fold}`` for preserved-site splits, else None.
        outcome_labels: ``{"0": name, ...}`` (per column with several label columns): what the stored category
            indices mean; None for linear, mapping or no labels.
    """

    strategy: str
    k: int
    folds: list[list[str]]
    patients: pd.DataFrame
    validation_patients: list[list[str]]
    entry: dict | None
    reused: bool
    seed: int
    fraction: float | None
    model_type: str
    path: str | None = None
    index: int | None = None
    sites: dict | None = field(default=None)
    outcome_labels: dict | None = field(default=None)

    def record(self) -> dict:
        """The splits.json entry of this plan, for every strategy.

        ``bootstrap`` and ``none`` are never saved to a Slideflow splits file (they draw afresh each time), but the
        pipeline still leaves one artifact per plan: their entry is built here in the same format.
        """
        if self.entry is not None:
            return self.entry
        return splits_file.make_entry(self.patients, strategy=self.strategy,
                                      validation_patients=self.validation_patients, seed=self.seed,
                                      fraction=self.fraction, model_type=self.model_type,
                                      outcome_labels=self.outcome_labels)

    @property
    def slides(self) -> list[str]:
        """Every slide of the split, sorted."""
        return sorted(s for slides in self.patients["slides"] for s in slides)

    def train_val(self, iteration: int | None = None) -> tuple[list[str], list[str]]:
        """``(training slides, validation slides)`` of ``iteration`` (1-based, Slideflow's ``k_fold_iter``).

        ``iteration`` may be left out when there is only one (``fixed``, ``none``, single-repeat bootstrap).

        Raises:
            SplitError: iteration missing, 0, negative or greater than ``k``.

        Example:
            >>> train, val = plan.train_val(1)  # doctest: +SKIP
        """
        if iteration is None:
            if self.k != 1:
                raise SplitError(f"strategy {self.strategy!r} has {self.k} iterations: pass k_fold_iter=1..{self.k}")
            iteration = 1
        if isinstance(iteration, (bool, np.bool_)) or not isinstance(iteration, (int, np.integer)):
            raise SplitError(f"k_fold_iter must be an integer from 1 to {self.k}, not {iteration!r}")
        if not 1 <= iteration <= self.k:
            raise SplitError(f"k_fold_iter is 1-based and must be from 1 to {self.k} for this {self.strategy!r} "
                             f"split; got {iteration}")
        validation = self.folds[iteration - 1]
        held_out = set(validation)
        return [s for s in self.slides if s not in held_out], list(validation)

    def iter_train_val(self) -> Iterator[tuple[list[str], list[str]]]:
        """Every ``(training, validation)`` pair in iteration order (what ``Dataset.kfold_split`` yields)."""
        for iteration in range(1, self.k + 1):
            yield self.train_val(iteration)

    def composition(self) -> pd.DataFrame:
        """Patients per label on each side of each iteration, one row per (iteration, side).

        Columns: ``iteration`` (1-based), ``side`` (``'validation'``/``'training'``), then one column per label
        (a single ``patients`` column for linear models or unlabelled splits).
        """
        labels = label_values(self.patients)
        stratified = self.model_type == "categorical" and labels != [None]
        columns = [str(label) for label in labels] if stratified else ["patients"]
        label_of = self.patients["label"].to_dict()
        everyone = set(str(p) for p in self.patients.index)
        rows = []
        for iteration, validation in enumerate(self.validation_patients, start=1):
            for side, members in (("validation", set(validation)), ("training", everyone - set(validation))):
                counts = dict.fromkeys(columns, 0)
                for p in members:
                    counts[str(label_of[p]) if stratified else "patients"] += 1
                rows.append({"iteration": iteration, "side": side, **counts})
        return pd.DataFrame(rows, columns=["iteration", "side", *columns])


def _slides_of(table: pd.DataFrame, groups: list[list[str]]) -> list[list[str]]:
    slides = table["slides"].to_dict()
    return [sorted(s for p in group for s in slides[p]) for group in groups]


_UNSET = object()


def plan_split(slides_df: pd.DataFrame, spec: SplitSpec | None = None, *, model_type=_UNSET, labels=_UNSET,
               strategy=_UNSET, fraction=_UNSET, k_fold=_UNSET, k_fold_header=_UNSET, site_labels=_UNSET,
               splits: str | os.PathLike | None = None, seed=_UNSET, time_limit=_UNSET,
               categories: dict | None = None, read_only: bool = False) -> SplitPlan:
    """Plan a patient-level training/validation split, reusing or saving it in a ``splits.json``.

    The plan is a :class:`~slidetiles.splits.spec.SplitSpec`, given whole as ``spec`` or field by field as keywords
    (the spec's defaults fill the rest); not both.

    Args:
        slides_df: slide annotations, one row per slide, with ``slide``, ``patient`` and the label, site and fold
            columns used.
        spec: the whole plan; the keywords below are its fields.
        model_type: ``'categorical'`` (folds stratified by label) or ``'linear'`` (fold sizes balanced, labels
            parsed as numbers); Slideflow 3's ``'classification'`` and ``'regression'`` are the same two.
        labels: the outcome column (or list of columns, or ``{slide: label}``); None splits without labels.
        strategy: ``'k-fold'`` (default), ``'k-fold-preserved-site'``, ``'k-fold-manual'``, ``'fixed'``,
            ``'bootstrap'`` or ``'none'``.
        fraction: validation share for ``fixed`` and ``bootstrap`` (ignored otherwise).
        k_fold: folds for ``k-fold``/``k-fold-preserved-site``, repeats for ``bootstrap`` (default 3). Ignored for
            ``k-fold-manual``, whose folds are the distinct values of ``k_fold_header``.
        k_fold_header: the fold column for ``k-fold-manual``.
        site_labels: the site column for ``k-fold-preserved-site`` (read only by that strategy).
        splits: path of a ``splits.json`` to reuse a saved split from, or to save the new one to (``fixed`` and the
            k-fold strategies only: ``bootstrap`` draws afresh each time and ``none`` has nothing to save).
        seed: non-negative int; the same inputs and seed give the same split everywhere.
        time_limit: seconds the preserved-site solver may search.
        categories: ``{column: [names]}``, the categories Slideflow numbers a categorical label column over
            (``Dataset.split`` passes those of every annotated slide passing its filters, TFRecord or not); default:
            the values of ``slides_df``. Sets the ``outcome_label`` indices written and compared in ``splits``.
        read_only: reuse a saved split from ``splits`` but never write to it (Slideflow's ``read_only``).

    Returns:
        A :class:`SplitPlan`; ``plan.train_val(k_fold_iter)`` gives the slides of each side.

    Raises:
        SplitError: unknown strategy (the valid ones are listed), bad labels (see ``patient_table``), too few
            patients or sites for the folds, missing ``fraction`` or ``k_fold_header``, an unusable splits file.

    Example:
        >>> df = pd.DataFrame({"slide": [f"s{i}" for i in range(12)], "patient": [f"p{i // 2}" for i in range(12)],
        ...                    "subtype": ["A", "A", "B", "B"] * 3})
        >>> plan = plan_split(df, labels="subtype", strategy="k-fold", k_fold=3, seed=42)
        >>> plan.k, sorted(len(fold) for fold in plan.folds)
        (3, [4, 4, 4])
        >>> train, val = plan.train_val(1)
        >>> sorted(train + val) == plan.slides
        True
    """
    given = {name: value for name, value in (
        ("model_type", model_type), ("labels", labels), ("strategy", strategy), ("fraction", fraction),
        ("k_fold", k_fold), ("k_fold_header", k_fold_header), ("site_labels", site_labels), ("seed", seed),
        ("time_limit", time_limit)) if value is not _UNSET}
    if spec is None:
        spec = SplitSpec(**given)
    elif given:
        raise SplitError(f"plan_split(): pass spec= or the spec's fields ({', '.join(sorted(given))}), not both")
    strategy, model_type, labels, seed = spec.strategy, spec.model_type, spec.labels, spec.seed
    fraction, k_fold, k_fold_header, site_labels = spec.fraction, spec.k_fold, spec.k_fold_header, spec.site_labels
    time_limit = spec.time_limit
    site_column = site_labels if strategy == "k-fold-preserved-site" else None
    table = patient_table(slides_df, labels=labels, model_type=model_type, site_column=site_column)
    if len(table) == 0:
        raise SplitError("no slides to split")
    known = label_categories(slides_df, labels, model_type, categories)
    outcomes = slideflow_outcomes(slides_df, table, labels, model_type, known)
    table["outcome"] = pd.Series([outcomes[str(p)] for p in table.index], index=table.index, dtype=object)
    names = outcome_names(known)
    path = None if splits is None else os.fspath(splits)
    common = dict(patients=table, seed=seed, model_type=model_type, outcome_labels=names)

    if strategy == "none":
        return SplitPlan(strategy, 1, [[]], validation_patients=[[]], entry=None, reused=False, fraction=None,
                         **common)

    if strategy == "bootstrap":
        repeats = k_fold
        groups = [strategies.bootstrap_partition(table, fraction, seed, i, model_type)
                  for i in range(1, repeats + 1)]
        return SplitPlan(strategy, repeats, _slides_of(table, groups), validation_patients=groups, entry=None,
                         reused=False, fraction=fraction, **common)

    manual_folds = None
    # Manual folds come from the annotations, not the seed: a different seed must not save a second, identical split.
    entry_seed: int | None = None if strategy == "k-fold-manual" else seed
    extra: dict = {}
    fingerprint_extra: dict | None = None
    if strategy == "fixed":
        k = 1
    else:
        if strategy == "k-fold-manual":
            values, manual_folds = strategies.manual_partition(slides_df, k_fold_header, table)
            k = len(values)
            extra = {"k_fold_header": k_fold_header,
                     "manual_folds": {str(i): v for i, v in enumerate(values, start=1)}}
            fingerprint_extra = {"k_fold_header": k_fold_header,
                                 "folds": {p: values[i] for i, fold in enumerate(manual_folds) for p in fold}}
        else:
            k = strategies.check_k(k_fold, len(table))

    def build() -> dict:
        entry_extra = dict(extra)
        if strategy == "fixed":
            groups = strategies.fixed_partition(table, fraction, seed, model_type)
        elif strategy == "k-fold":
            groups = strategies.kfold_partition(table, k, seed, model_type)
        elif strategy == "k-fold-manual":
            groups = manual_folds
        else:
            part = strategies.preserved_site_partition(table, k, seed, time_limit, model_type)
            groups = part.folds
            entry_extra.update({"sites": part.sites, "solver": part.solver})
        return splits_file.make_entry(table, strategy=strategy, validation_patients=groups, seed=entry_seed,
                                      fraction=fraction, model_type=model_type, extra=entry_extra,
                                      fingerprint_extra=fingerprint_extra, outcome_labels=names)

    def find(entries):
        try:
            return splits_file.find_matching(entries, strategy, k, fraction, table, seed=entry_seed,
                                             model_type=model_type, folds=manual_folds, outcome_labels=names,
                                             source=path)
        except SplitError as e:
            raise SplitError(f"{path}: {e}") from None

    index = None
    if path is None:
        entry, reused = build(), False
    elif read_only:
        found = find(splits_file.load_splits(path))
        index, entry, reused = (found[0], found[1], True) if found is not None else (None, build(), False)
    else:
        index, entry, reused = splits_file.reuse_or_append(path, find, build)
    try:
        groups = splits_file.entry_validation_patients(entry)
    except SplitError as e:
        raise SplitError(f"{path}: saved split #{index}: {e}") from None
    if reused:
        splits_file.warn_changed_slides(entry, table, path, index)
    sites = None
    if strategy == "k-fold-preserved-site":
        saved_sites = entry.get("sites")
        if isinstance(saved_sites, dict):
            sites = {str(s): int(f) for s, f in saved_sites.items()}
        else:
            # A Slideflow entry has no site map; rebuild it from where each site's patients went.
            fold_of = {p: i + 1 for i, group in enumerate(groups) for p in group}
            sites = {}
            for p, site in zip(table.index, table["site"]):
                if sites.setdefault(str(site), fold_of[str(p)]) != fold_of[str(p)]:
                    raise SplitError(f"{path}: saved split #{index} puts site {site} in folds "
                                     f"{sites[str(site)]} and {fold_of[str(p)]}; it is not a preserved-site split")
            sites = dict(sorted(sites.items()))
    return SplitPlan(strategy, k, _slides_of(table, groups), validation_patients=groups, entry=entry, reused=reused,
                     fraction=fraction, path=path, index=index, sites=sites, **common)
