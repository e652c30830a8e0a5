"""Tests of the preserved-site cross-validation solver (slidetiles.splits.preserved_site)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidetiles.errors import SplitError
from slidetiles.splits import preserved_site as ps
from slidetiles.splits.preserved_site import (
    PreservedSiteSplitter,
    lower_bound,
    objective,
    random_site_cohort,
    solve_preserved_site,
)

# Small budgets keep the file fast; determinism does not depend on the budget's size.
SMALL_WORK = 3_000_000

# A fixed cohort written out (not drawn), so that the golden assignments below pin the whole search: any change to
# the algorithm, the random stream or the arithmetic that would alter users' splits fails here.
GOLDEN_COUNTS = [
    [39, 11, 6], [18, 12, 9], [20, 9, 13], [12, 21, 21], [7, 28, 1], [22, 21, 4], [6, 11, 33], [1, 4, 12],
    [5, 1, 2], [3, 10, 8], [11, 8, 1], [33, 9, 11], [30, 16, 9], [4, 1, 0], [16, 8, 8], [35, 8, 7],
    [2, 4, 6], [9, 24, 15], [2, 5, 4], [14, 9, 7], [12, 10, 27], [2, 8, 11], [12, 4, 7], [11, 2, 7],
    [5, 9, 30], [9, 10, 0], [30, 17, 12], [6, 20, 3], [4, 17, 10], [1, 7, 24],
]  # fmt: skip
GOLDEN = {  # k: (assignment, objective, blocks tried, blocks that moved)
    4: ((0, 3, 0, 3, 0, 1, 2, 0, 0, 2, 2, 3, 2, 1, 1, 2, 1, 2, 2, 3, 3, 0, 1, 0, 1, 0, 1, 3, 1, 0), 76, 143, 66),
    6: ((4, 3, 0, 0, 5, 3, 5, 1, 5, 0, 2, 2, 0, 3, 3, 5, 3, 4, 1, 1, 2, 2, 5, 1, 4, 4, 1, 2, 1, 3), 894, 84, 20),
}


def brute_force(counts: np.ndarray, k: int) -> int:
    """Least objective over all assignments that leave no fold without a site with patients."""
    counts = np.asarray(counts)
    active = counts.sum(axis=1) > 0
    best = None
    for assignment in itertools.product(range(k), repeat=len(counts)):
        folds = np.array(assignment)
        if len(set(folds[active].tolist())) < k:
            continue
        value = objective(counts, folds, k)
        best = value if best is None else min(best, value)
    return best


def check_valid(counts, k: int, sol) -> None:
    counts = np.asarray(counts)
    if counts.ndim == 1:
        counts = counts[:, None]
    folds = np.asarray(sol.assignment)
    assert folds.shape == (len(counts),)
    assert folds.min() >= 0 and folds.max() < k
    # Every fold gets at least one site with patients.
    assert set(folds[counts.sum(axis=1) > 0].tolist()) == set(range(k))
    assert sol.objective == objective(counts, folds, k)
    assert sol.bound == lower_bound(counts, k)
    assert sol.gap == sol.objective - sol.bound >= 0
    assert np.array_equal(np.array(sol.fold_counts).reshape(k, -1), ps._fold_counts(counts.astype(np.int64), folds, k))
    if sol.gap == 0:
        assert sol.proved_optimal


small_instances = st.integers(2, 7).flatmap(
    lambda n: st.tuples(
        st.integers(2, min(3, n)),
        st.integers(1, 3).flatmap(
            lambda labels: st.lists(
                st.lists(st.integers(0, 30), min_size=labels, max_size=labels), min_size=n, max_size=n
            )
        ),
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_instances, st.integers(0, 2**32))
def test_optimal_on_small_instances(instance, seed):
    k, counts = instance
    counts = np.array(counts, dtype=np.int64)
    if (counts.sum(axis=1) > 0).sum() < k:
        with pytest.raises(SplitError):
            solve_preserved_site(counts, k, seed=seed)
        return
    sol = solve_preserved_site(counts, k, seed=seed)
    check_valid(counts, k, sol)
    assert sol.objective == brute_force(counts, k)
    assert sol.proved_optimal
    assert not sol.stopped_by_time


@pytest.mark.parametrize("case", range(12))
def test_local_search_finds_optimum_on_small_instances(monkeypatch, case):
    # Force the block local search (not the exhaustive path) and compare with brute force.
    monkeypatch.setattr(ps, "EXHAUSTIVE_SIZE", 0)
    rng = np.random.default_rng(1000 + case)
    n = 6 + case % 3
    k = 2 + case % 2
    counts = rng.integers(0, 25, size=(n, 1 + case % 3))
    counts[0] += 1  # at least one site with patients in every instance
    counts[1] += 1
    counts[2] += 1
    sol = solve_preserved_site(counts, k, seed=case, work_limit=SMALL_WORK)
    check_valid(counts, k, sol)
    assert sol.method.startswith("greedy")
    assert sol.objective == brute_force(counts, k)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(8, 40),
    st.integers(2, 6),
    st.integers(1, 4),
    st.integers(0, 10_000),
    st.integers(0, 2**32),
)
def test_always_valid_and_deterministic(n_sites, k, n_labels, cohort_seed, seed):
    counts = random_site_cohort(n_sites, n_labels, cohort_seed)
    first = solve_preserved_site(counts, k, seed=seed, work_limit=SMALL_WORK)
    check_valid(counts, k, first)
    again = solve_preserved_site(counts.tolist(), k, seed=seed, work_limit=SMALL_WORK, time_limit=None)
    assert again.assignment == first.assignment
    assert again.objective == first.objective
    assert (again.work, again.blocks, again.moves) == (first.work, first.blocks, first.moves)


def test_golden_assignments():
    for k, (assignment, value, blocks, moves) in GOLDEN.items():
        sol = solve_preserved_site(GOLDEN_COUNTS, k, seed=3, work_limit=20_000_000)
        assert sol.assignment == assignment, f"k={k}: the split changed; users could not regenerate old splits"
        assert sol.objective == value
        # The whole trajectory, not only its end: a change that happens to keep this split would still show here.
        assert (sol.blocks, sol.moves) == (blocks, moves)
        assert not sol.stopped_by_time


def test_same_seed_same_split_regardless_of_time_limit():
    counts = random_site_cohort(40, 3, 5)
    runs = [solve_preserved_site(counts, 5, seed=11, work_limit=30_000_000, time_limit=t) for t in (None, 5.0, 600.0)]
    assert len({r.assignment for r in runs}) == 1


def test_other_seed_may_differ_but_stays_valid():
    counts = random_site_cohort(40, 3, 5)
    for seed in range(3):
        check_valid(counts, 5, solve_preserved_site(counts, 5, seed=seed, work_limit=SMALL_WORK))


def test_reaches_bound_on_easy_peer_configuration():
    # 80 sites, 5 folds, 3 labels: peers' CPLEX reached 130 (bound 80) in 10 s; this reaches the bound at once.
    counts = random_site_cohort(80, 3, 2)
    sol = solve_preserved_site(counts, 5, seed=0)
    assert sol.gap == 0 and sol.proved_optimal


def test_time_limit_is_reported():
    counts = random_site_cohort(40, 4, 1)
    sol = solve_preserved_site(counts, 10, seed=0, time_limit=1e-9)
    assert sol.stopped_by_time
    check_valid(counts, 10, sol)


def test_lower_bound_formula():
    # Label totals 10 and 7 over k=3: r = 1 and 1, each costs r*(k-r)*k = 6.
    assert lower_bound([[4, 3], [6, 4]], 3) == 12
    assert lower_bound([[3, 3], [3, 3]], 3) == 0
    assert lower_bound([5, 6], 2) == 2  # one label, total 11: r=1, 1*1*2
    # The bound is what the ideal (fractional-free) split of each label costs.
    for total in range(0, 40):
        for k in range(2, 7):
            q, r = divmod(total, k)
            ideal = r * (k * (q + 1) - total) ** 2 + (k - r) * (k * q - total) ** 2
            assert lower_bound([[total]], k) == ideal == r * (k - r) * k


@settings(max_examples=50, deadline=None)
@given(
    st.integers(2, 5),
    st.lists(st.lists(st.integers(0, 50), min_size=2, max_size=2), min_size=5, max_size=12),
    st.data(),
)
def test_lower_bound_is_a_bound(k, counts, data):
    folds = data.draw(st.lists(st.integers(0, k - 1), min_size=len(counts), max_size=len(counts)))
    assert objective(counts, folds, k) >= lower_bound(counts, k)


def test_objective_definition():
    counts = np.array([[3, 1], [2, 2], [0, 5]])
    folds = [0, 1, 1]
    # Fold 0: (3, 1), fold 1: (2, 7); totals (5, 8); k=2 -> (6-5)^2 + (2-8)^2 + (4-5)^2 + (14-8)^2
    assert objective(counts, folds, 2) == 1 + 36 + 1 + 36


def test_one_label_balances_fold_sizes():
    sizes = np.array([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 12, 11, 13])  # 91 patients: best is 31 + 30 + 30
    sol = solve_preserved_site(sizes, 3, seed=0)
    check_valid(sizes, 3, sol)
    assert sol.objective == sol.bound == 6
    assert sorted(row[0] for row in sol.fold_counts) == [30, 30, 31]


def test_sites_without_patients_are_placed_and_do_not_count():
    counts = np.array([[5, 1], [0, 0], [3, 3], [0, 0], [4, 2], [2, 4]])
    sol = solve_preserved_site(counts, 3, seed=0)
    check_valid(counts, 3, sol)
    assert sol.objective == brute_force(counts, 3)


def test_errors_name_the_problem():
    with pytest.raises(SplitError, match="at least 2 folds"):
        solve_preserved_site([[1], [2]], 1)
    with pytest.raises(SplitError, match="only 2 sites"):
        solve_preserved_site([[1], [2]], 3)
    with pytest.raises(SplitError, match="'empty_site'"):
        solve_preserved_site([[1], [2], [0]], 3, site_names=["a", "b", "empty_site"])
    with pytest.raises(SplitError, match="negative.*'bad'"):
        solve_preserved_site([[1, 2], [-1, 3], [4, 4]], 2, site_names=["good", "bad", "fine"])
    with pytest.raises(SplitError, match="whole numbers"):
        solve_preserved_site([[1.5], [2.0], [3.0]], 2)
    with pytest.raises(SplitError, match="site_names"):
        solve_preserved_site([[1], [2], [3]], 2, site_names=["a", "b"])
    with pytest.raises(SplitError, match="seed"):
        solve_preserved_site([[1], [2], [3]], 2, seed=-1)
    with pytest.raises(SplitError, match="time_limit"):
        solve_preserved_site([[1], [2], [3]], 2, time_limit=0)
    with pytest.raises(SplitError):
        solve_preserved_site([[[1]]], 2)
    # SplitError is a ValueError, so older callers' except clauses still work.
    with pytest.raises(ValueError):
        solve_preserved_site([[1], [2]], 3)


def test_huge_cohorts_stay_exact():
    # Counts this large push the block products past 2**53: the solver must switch to exact int64 products.
    rng = np.random.default_rng(3)
    counts = rng.integers(10**6, 3 * 10**6, size=(7, 2))
    search = ps._Search(counts, 3, np.random.Generator(np.random.PCG64(0)))
    assert search.dtype is np.int64
    sol = solve_preserved_site(counts, 3)
    check_valid(counts, 3, sol)
    assert sol.objective == brute_force(counts, 3)
    big = solve_preserved_site(np.tile(counts, (3, 1)), 3, seed=1, work_limit=SMALL_WORK)
    check_valid(np.tile(counts, (3, 1)), 3, big)
    with pytest.raises(SplitError, match="too large"):
        solve_preserved_site(counts * 10**6, 3)


def test_as_many_folds_as_sites():
    counts = random_site_cohort(25, 2, 1)
    sol = solve_preserved_site(counts, 25)
    check_valid(counts, 25, sol)
    assert sol.proved_optimal and sol.assignment == tuple(range(25))


def test_whole_float_counts_are_accepted():
    sol = solve_preserved_site(np.array([[1.0, 2.0], [3.0, 1.0], [2.0, 2.0]]), 2)
    assert sol.proved_optimal


def test_splitter_maps_sites_to_folds():
    sites = ["h3", "h1", "h2", "h5", "h4", "h6"]
    patient_sites = {}
    patient_labels = {}
    for i in range(60):
        patient = f"p{i:02d}"
        patient_sites[patient] = sites[i % 6]
        patient_labels[patient] = "tumour" if (i * 7) % 3 else "normal"
    splitter = PreservedSiteSplitter(k=3, seed=0)
    folds = splitter.split(patient_sites, patient_labels)
    assert list(folds) == sorted(sites)  # sites in name order
    assert set(folds.values()) == {0, 1, 2}
    assert splitter.sites == tuple(sorted(sites))
    assert splitter.labels == ("normal", "tumour")
    assert splitter.solution is not None and splitter.solution.k == 3
    # Insertion order of the mappings does not matter.
    shuffled_sites = dict(reversed(list(patient_sites.items())))
    again = PreservedSiteSplitter(k=3, seed=0).split(shuffled_sites, dict(reversed(list(patient_labels.items()))))
    assert again == folds
    # Without labels the fold sizes are balanced.
    by_size = PreservedSiteSplitter(k=3, seed=0).split(patient_sites)
    assert set(by_size.values()) == {0, 1, 2}


def test_splitter_errors():
    with pytest.raises(SplitError, match="no label"):
        PreservedSiteSplitter(k=2).split({"p1": "a", "p2": "b", "p3": "c"}, {"p1": "x", "p2": "y"})
    with pytest.raises(SplitError):
        PreservedSiteSplitter(k=2).split({}, None)
    with pytest.raises(SplitError, match="only 1 site:"):
        PreservedSiteSplitter(k=2).split({"p1": "a", "p2": "a"})
