"""Deterministic partitioners: a patient table in, lists of validation patients out.

Every function here is pure: the same table and seed give the same folds on any machine, Python hash seed, NumPy
release or process count. Three rules make that true:

* inputs are sorted (by code point) before anything random touches them, so row order and ``set`` order never matter;
* randomness comes from an explicit ``PCG64`` bit generator seeded through ``SeedSequence``, never global state;
* only the bit generator's raw 64-bit stream is used. NumPy promises stream stability for bit generators, but lets
  ``Generator`` methods (``shuffle``, ``permutation``, ``integers``) and ``default_rng``'s choice of bit generator
  change between feature releases (NumPy's random compatibility policy, NEP 19). A paper's split must come out the
  same a year later, so the shuffle is our own Fisher-Yates on top of the raw stream.

Each partitioner returns a list of folds, each a sorted list of patients: the validation patients of iteration
1, 2, ... Training is every other patient of the table.

Decision on small classes: a class with fewer patients than folds cannot reach every fold. The split is still valid
(patient-level, stratified as far as possible), so :func:`kfold_partition` warns with :class:`SplitWarning` naming
the class and continues; turn the warning into an error with ``warnings.simplefilter("error", SplitWarning)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from slidetiles.errors import SplitError, listing
from slidetiles.splits.cohort import SplitWarning, is_blank, label_values, natural_key
from slidetiles.splits.preserved_site import solve_preserved_site
# The checks shared with the split spec live there; re-exported here, where callers have long found them.
from slidetiles.splits.spec import check_fraction, check_k_fold, check_model_type, check_seed  # noqa: F401

_TWO_64 = 1 << 64


class _Stream:
    """Uniform integers from the raw output of a seeded PCG64, by rejection (unbiased, stable forever)."""

    def __init__(self, *entropy: int):
        self._bits = np.random.PCG64(np.random.SeedSequence(list(entropy)))

    def below(self, bound: int) -> int:
        """A uniform integer in ``[0, bound)``."""
        # Reject the top sliver of the 64-bit range that would make some residues more likely than others.
        limit = _TWO_64 - (_TWO_64 % bound)
        while True:
            raw = int(self._bits.random_raw())
            if raw < limit:
                return raw % bound

    def shuffled(self, items) -> list:
        """A Fisher-Yates shuffle of a copy of ``items``."""
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out


def check_k(k, n_patients: int, what: str = "folds") -> int:
    """``k`` as an int of at least 2 that ``n_patients`` patients can fill, one patient per fold at least."""
    k = check_k_fold(k, 2)
    if n_patients < k:
        raise SplitError(f"too few patients for {k} {what}: {n_patients} patient(s); each fold needs at least one "
                         f"patient (use fewer folds or more data)")
    return int(k)


def _sorted_patients(table: pd.DataFrame) -> list[str]:
    return sorted(str(p) for p in table.index)


def _stratified(table: pd.DataFrame, model_type: str) -> bool:
    return model_type == "categorical" and label_values(table) != [None]


def _by_label(table: pd.DataFrame, order: list[str]) -> list[tuple[object, list[str]]]:
    """``order`` grouped by label, labels sorted, each group keeping the order of ``order``."""
    label_of = table["label"].to_dict()
    groups: dict = {}
    for p in order:
        groups.setdefault(label_of[p], []).append(p)
    return [(label, groups[label]) for label in label_values(table)]


def kfold_partition(table: pd.DataFrame, k: int, seed: int = 0, model_type: str = "categorical") -> list[list[str]]:
    """Split patients into ``k`` folds: stratified for categorical labels, balanced in size for linear ones.

    The sorted patients are shuffled with the seed, grouped by label (labels sorted) and dealt round-robin, the
    dealer carrying on from one class to the next. Each class is then a contiguous run of the deal, so per-fold
    class counts differ by at most one, and so do fold sizes. The fold order is shuffled last, so the first fold is
    not always the largest.

    A class with fewer patients than folds leaves some folds without it: :class:`SplitWarning`, not an error (see
    the module docstring).

    Args:
        table: a :func:`~slidetiles.splits.cohort.patient_table`.
        k: number of folds, at least 2 and at most the number of patients.
        seed: non-negative int.
        model_type: ``'categorical'`` stratifies by label; ``'linear'`` (or a table without labels) balances sizes.

    Returns:
        ``k`` sorted lists of patients; fold ``i`` (0-based) is the validation set of iteration ``i + 1``.

    Example:
        >>> table = pd.DataFrame({"label": ["A", "A", "B", "B"], "slides": [["s1"], ["s2"], ["s3"], ["s4"]],
        ...                       "site": None}, index=pd.Index(["p1", "p2", "p3", "p4"], name="patient"))
        >>> folds = kfold_partition(table, 2, seed=0)
        >>> sorted(len(f) for f in folds), sorted(p for f in folds for p in f)
        ([2, 2], ['p1', 'p2', 'p3', 'p4'])
    """
    check_model_type(model_type)
    seed = check_seed(seed)
    patients = _sorted_patients(table)
    k = check_k(k, len(patients))
    stream = _Stream(seed)
    order = stream.shuffled(patients)
    if _stratified(table, model_type):
        groups = _by_label(table, order)
        small = [f"{label!r} ({len(members)} patient{'s' if len(members) != 1 else ''})"
                 for label, members in groups if len(members) < k]
        if small:
            warnings.warn(f"{len(small)} class(es) have fewer patients than the {k} folds, so some validation folds "
                          f"will lack them: {listing(small)}", SplitWarning, stacklevel=2)
        order = [p for _, members in groups for p in members]
    folds: list[list[str]] = [[] for _ in range(k)]
    for position, patient in enumerate(order):
        folds[position % k].append(patient)
    folds = stream.shuffled(folds)
    return [sorted(f) for f in folds]


def validation_count(n: int, fraction: float) -> int:
    """Patients a ``fraction`` of ``n`` sends to validation: rounded half up, at least 1, at most ``n - 1``.

    >>> validation_count(100, 0.29)
    29
    """
    # Round half up, with a tolerance: 0.29 * 100 is 28.999999999999996 in floating point and must give 29.
    count = int(np.floor(fraction * n + 0.5 + 1e-9))
    return min(max(count, 1), n - 1)


def _draw_validation(table: pd.DataFrame, fraction: float, stream: _Stream, model_type: str) -> list[str]:
    patients = _sorted_patients(table)
    if len(patients) < 2:
        raise SplitError(f"too few patients for a training/validation split: {len(patients)} patient(s)")
    order = stream.shuffled(patients)
    n_val = validation_count(len(patients), fraction)
    if not _stratified(table, model_type):
        return sorted(order[:n_val])
    groups = _by_label(table, order)
    # Largest-remainder allocation: each class gets floor or ceil of its share, and the total is exactly n_val.
    quotas = [fraction * len(members) for _, members in groups]
    counts = [min(int(np.floor(q + 1e-9)), len(members)) for q, (_, members) in zip(quotas, groups)]
    # Ties in the remainders are broken by a seeded draw, not by label order, so no class is always favoured.
    tie_break = stream.shuffled(range(len(groups)))
    by_remainder = sorted(range(len(groups)), key=lambda g: (-round(quotas[g] - counts[g], 9), tie_break.index(g)))
    missing = n_val - sum(counts)
    for g in by_remainder:
        if missing <= 0:
            break
        if counts[g] < len(groups[g][1]):
            counts[g] += 1
            missing -= 1
    for g in reversed(by_remainder):
        if missing >= 0:
            break
        if counts[g] > 0:
            counts[g] -= 1
            missing += 1
    validation = [p for (_, members), c in zip(groups, counts) for p in members[:c]]
    one_sided = [f"{label!r}" for (label, members), c in zip(groups, counts) if c == 0 or c == len(members)]
    if one_sided:
        warnings.warn(f"with fraction={fraction}, class(es) {listing(one_sided)} have no patient on one side of the "
                      f"split", SplitWarning, stacklevel=3)
    return sorted(validation)


def fixed_partition(table: pd.DataFrame, fraction: float, seed: int = 0,
                    model_type: str = "categorical") -> list[list[str]]:
    """Hold out ``fraction`` of the patients for validation, stratified by label for categorical models.

    The validation size is ``fraction * n`` rounded half up (at least 1, at most n - 1); each class contributes the
    floor or the ceiling of its own share (largest remainders get the ceiling).

    Returns:
        ``[validation_patients]`` (one fold, sorted); training is every other patient.

    Example:
        >>> table = pd.DataFrame({"label": ["A"] * 5 + ["B"] * 5, "slides": [[f"s{i}"] for i in range(10)],
        ...                       "site": None}, index=pd.Index([f"p{i}" for i in range(10)], name="patient"))
        >>> [val] = fixed_partition(table, 0.2, seed=1)
        >>> len(val), sorted(table.loc[val, "label"])
        (2, ['A', 'B'])
    """
    check_model_type(model_type)
    return [_draw_validation(table, check_fraction(fraction), _Stream(check_seed(seed)), model_type)]


def bootstrap_partition(table: pd.DataFrame, fraction: float, seed: int = 0, iteration: int = 1,
                        model_type: str = "categorical") -> list[str]:
    """Validation patients of one bootstrap repeat: a fresh stratified draw of ``fraction`` of the patients.

    As in Slideflow, "bootstrap" means repeated random hold-out (patients are drawn without replacement). Repeat
    ``iteration`` (1-based) draws from its own stream, ``SeedSequence([seed, iteration])``, so the repeats are
    independent yet all follow from the one seed, and repeat 3 comes out the same whether or not 1 and 2 ran.

    Returns:
        The sorted validation patients of this repeat.

    Example:
        >>> table = pd.DataFrame({"label": ["A", "B"] * 5, "slides": [[f"s{i}"] for i in range(10)],
        ...                       "site": None}, index=pd.Index([f"p{i}" for i in range(10)], name="patient"))
        >>> bootstrap_partition(table, 0.3, seed=0, iteration=1) == bootstrap_partition(table, 0.3, 0, 1)
        True
    """
    check_model_type(model_type)
    if isinstance(iteration, bool) or not isinstance(iteration, (int, np.integer)) or iteration < 1:
        raise SplitError(f"bootstrap iteration is 1-based, got {iteration!r}")
    stream = _Stream(check_seed(seed), int(iteration))
    return _draw_validation(table, check_fraction(fraction), stream, model_type)


def manual_partition(slides_df: pd.DataFrame, k_fold_header: str,
                     table: pd.DataFrame | None = None) -> tuple[list[str], list[list[str]]]:
    """Folds taken from an annotation column: every distinct value is one fold.

    Folds are ordered by the natural sort of their values (``"1" < "2" < "10"``, ``"fold2" < "fold10"``), so
    iteration ``i`` validates on the ``i``-th value. A patient whose slides carry two fold values is an error, as is
    a blank value or a single fold (nothing left to train on).

    Args:
        slides_df: slide-level annotations with ``slide``, ``patient`` and ``k_fold_header``.
        k_fold_header: the column naming each slide's fold.
        table: the patient table; when given, only its patients are assigned (and all of them must be).

    Returns:
        ``(fold_values, folds)``: the fold names in order and, for each, the sorted validation patients.

    Example:
        >>> df = pd.DataFrame({"slide": ["a", "b", "c"], "patient": ["p1", "p2", "p3"], "fold": ["2", "10", "2"]})
        >>> manual_partition(df, "fold")
        (['2', '10'], [['p1', 'p3'], ['p2']])
    """
    if k_fold_header is None:
        raise SplitError("strategy 'k-fold-manual' needs k_fold_header=... (the column naming each slide's fold)")
    if k_fold_header not in slides_df.columns:
        raise SplitError(f"k_fold_header {k_fold_header!r} not in the annotations; columns are: "
                         f"{listing([str(c) for c in slides_df.columns], limit=40)}")
    wanted = None if table is None else set(str(p) for p in table.index)
    fold_of: dict[str, dict[str, list[str]]] = {}
    blank = []
    for slide, patient, value in zip(slides_df["slide"], slides_df["patient"], slides_df[k_fold_header]):
        patient, slide = str(patient), str(slide)
        if wanted is not None and patient not in wanted:
            continue
        if is_blank(value):
            blank.append(slide)
            continue
        fold_of.setdefault(patient, {}).setdefault(str(value), []).append(slide)
    if blank:
        raise SplitError(f"blank fold {k_fold_header!r} for slides {listing(sorted(blank))}; remove them first "
                         f"(dataset.filter(filter_blank=[{k_fold_header!r}]))")
    split = [f"{p} ({', '.join(f'{s}={v!r}' for v, ss in sorted(fs.items()) for s in sorted(ss))})"
             for p, fs in sorted(fold_of.items()) if len(fs) > 1]
    if split:
        raise SplitError(f"patients with slides in two folds of {k_fold_header!r}: {listing(split, limit=5)}; "
                         f"all slides of a patient must share one fold")
    if wanted is not None and set(fold_of) != wanted:
        raise SplitError(f"patients without a fold in {k_fold_header!r}: {listing(sorted(wanted - set(fold_of)))}")
    values = sorted({v for fs in fold_of.values() for v in fs}, key=natural_key)
    if len(values) < 2:
        raise SplitError(f"k_fold_header {k_fold_header!r} has {len(values)} distinct value(s); manual k-fold needs at "
                         f"least 2 folds")
    folds = [sorted(p for p, fs in fold_of.items() if value in fs) for value in values]
    return values, folds


@dataclass(frozen=True)
class SitePartition:
    """The result of :func:`preserved_site_partition`.

    Attributes:
        folds: ``k`` sorted lists of validation patients.
        sites: ``{site: fold}`` with 1-based folds, sites sorted.
        solver: ``{"objective", "bound", "gap", "proved_optimal", "method"}`` (no timing: it must not reach a file
            whose bytes are meant to be reproducible).
        seconds: solver wall time, for logs only.
        stopped_by_time: the solver hit its time limit.
    """

    folds: list[list[str]]
    sites: dict[str, int]
    solver: dict
    seconds: float
    stopped_by_time: bool


def site_label_counts(table: pd.DataFrame) -> tuple[list[str], list, np.ndarray]:
    """``(sites, labels, counts)``: sorted sites and labels, and patients per site and label (n_sites, n_labels)."""
    if table["site"].isna().any():
        raise SplitError("preserved-site splitting needs a site for every patient")
    sites = sorted(set(str(s) for s in table["site"]))
    labels = label_values(table)
    site_index = {s: i for i, s in enumerate(sites)}
    label_index = {lab: j for j, lab in enumerate(labels)}
    counts = np.zeros((len(sites), len(labels)), dtype=np.int64)
    for site, label in zip(table["site"], table["label"]):
        counts[site_index[str(site)], label_index[label]] += 1
    return sites, labels, counts


def preserved_site_partition(table: pd.DataFrame, k: int, seed: int = 0, time_limit: float = 10.0,
                             model_type: str = "categorical") -> SitePartition:
    """Preserved-site k-fold (Howard et al. 2021): every site wholly in one fold, labels balanced across folds.

    The assignment of sites to folds minimises ``sum over labels l and folds f of (k * n_fl - N_l)^2`` (each fold
    as close as possible to a 1/k share of every label; for linear models or no labels, fold sizes only), solved
    by :func:`slidetiles.splits.preserved_site.solve_preserved_site` with sites sorted by name and labels sorted.

    Raises:
        SplitError: fewer than 2 folds, more folds than sites, a fold that would be empty.

    Warns:
        SplitWarning: the solver stopped at ``time_limit`` without proving optimality. The folds are still valid,
            but another machine could stop elsewhere: keep the ``splits.json`` that records them.

    Example:
        >>> sites = ["s1", "s1", "s2", "s3", "s3", "s4"]
        >>> table = pd.DataFrame({"label": ["A", "B", "A", "B", "A", "B"], "slides": [[f"x{i}"] for i in range(6)],
        ...                       "site": sites}, index=pd.Index([f"p{i}" for i in range(6)], name="patient"))
        >>> part = preserved_site_partition(table, 2, seed=0)
        >>> sorted(part.sites), sorted(len(f) for f in part.folds)
        (['s1', 's2', 's3', 's4'], [3, 3])
    """
    check_model_type(model_type)
    seed = check_seed(seed)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 2:
        raise SplitError(f"k-fold cross-validation needs at least 2 folds, got k_fold={k!r}")
    k = int(k)
    balance_table = table if _stratified(table, model_type) else table.assign(label=None)
    sites, _, counts = site_label_counts(balance_table)
    if k > len(sites):
        raise SplitError(f"k-fold-preserved-site with k_fold={k} needs at least {k} sites, found {len(sites)} "
                         f"({listing(sites)}): every site goes wholly into one fold")
    check_k(k, len(table))
    solution = solve_preserved_site(counts, k, seed=seed, time_limit=time_limit, site_names=sites)
    assignment = [int(f) for f in solution.assignment]
    if len(assignment) != len(sites) or any(not 0 <= f < k for f in assignment):
        raise SplitError(f"the preserved-site solver returned an invalid assignment {solution.assignment!r}")
    site_fold = {site: fold + 1 for site, fold in zip(sites, assignment)}
    folds: list[list[str]] = [[] for _ in range(k)]
    for patient, site in zip(table.index, table["site"]):
        folds[site_fold[str(site)] - 1].append(str(patient))
    empty = [str(i + 1) for i, f in enumerate(folds) if not f]
    if empty:
        raise SplitError(f"preserved-site split with k_fold={k} leaves fold(s) {', '.join(empty)} empty; "
                         f"use fewer folds (sites: {len(sites)})")
    if getattr(solution, "stopped_by_time", False) and not getattr(solution, "proved_optimal", False):
        warnings.warn(f"the preserved-site solver stopped at its {time_limit} s limit without proving the folds "
                      f"optimal (gap {solution.gap}); keep the splits.json that records them, since another machine "
                      f"may stop elsewhere", SplitWarning, stacklevel=2)
    solver = {
        "objective": _plain(solution.objective),
        "bound": _plain(solution.bound),
        "gap": _plain(solution.gap),
        "proved_optimal": bool(solution.proved_optimal),
        "method": str(solution.method),
    }
    return SitePartition([sorted(f) for f in folds], site_fold, solver, float(solution.seconds),
                         bool(getattr(solution, "stopped_by_time", False)))


def _plain(value):
    """A JSON-ready number: ints stay ints, integral floats become ints so the bytes don't depend on the solver."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    if not np.isfinite(value):
        return None
    return int(value) if value.is_integer() else round(value, 12)
