"""clip() and balance() on the hand-made cohort (see tests/helpers.py), chaining, and properties.

Retained TFRecords in path order: s1..s8 with 10, 30, 5, 20, 8, 8, 4, 2 tiles (87); patients p1 = {s1, s2},
p2 = {s3}, p3 = {s4}, p4 = {s5, s6, s7, s8}; labels tumor = {s1, s2, s5..s8} (62 tiles), normal = {s3, s4} (25).
"""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import TILES
from slidetiles.dataset.balancing import BalanceSpec, balance_weights
from slidetiles.dataset.clipping import ClipSpec, clip_counts, spread
from slidetiles.errors import DatasetError

ORDER = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"]


def clipped(ds):
    table = ds.slide_table()
    return dict(zip(table["slide"], table["clipped"].tolist()))


def weights(ds):
    table = ds.slide_table()
    return dict(zip(table["slide"], table["weight"].tolist()))


def as_dict(values):
    return dict(zip(ORDER, values))


# -- clip ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        # Per-TFRecord cap: min(total, 10).
        ((10,), [10, 10, 5, 10, 8, 8, 4, 2]),
        ((100,), [10, 30, 5, 20, 8, 8, 4, 2]),
        # 'slide': every TFRecord keeps as many as the smallest (s8: 2); with a cap first, the same here.
        ((0, "slide"), [2] * 8),
        ((5, "slide"), [2] * 8),
        # 'patient': patient totals p1 40, p2 5, p3 20, p4 22 -> budget 5 each.
        # p1: spread(5, [10, 30]) = floors [1, 3] (remainders 10, 30), +1 to s2 -> [1, 4].
        # p4: spread(5, [8, 8, 4, 2]) = floors [1, 1, 0, 0] (remainders 18, 18, 20, 10), +1 to s7, s5, s6.
        ((0, "patient"), [1, 4, 5, 5, 2, 2, 1, 0]),
        # With max_tiles=6 first: caps [6, 6, 5, 6, 6, 6, 4, 2]; patients 12, 5, 6, 18 -> budget 5.
        # p1: spread(5, [6, 6]) = [2, 2] + tie -> first: [3, 2]; p3: [5];
        # p4: spread(5, [6, 6, 4, 2]) = floors [1, 1, 1, 0] (remainders 12, 12, 2, 10) + s5, s6 -> [2, 2, 1, 0].
        ((6, "patient"), [3, 2, 5, 5, 2, 2, 1, 0]),
        # 'category' by label: tumor 62, normal 25 -> budget 25 each. normal is exact: [5, 20].
        # tumor: spread(25, [10, 30, 8, 8, 4, 2]) = floors [4, 12, 3, 3, 1, 0] (remainders 2, 6, 14, 14, 38, 50)
        # = 23, +1 to s8 and s7 -> [4, 12, 3, 3, 2, 1].
        ((0, "category", "label"), [4, 12, 5, 20, 3, 3, 2, 1]),
        # By (label, site): (tumor, A) 40, (normal, B) 25, (tumor, C) 22 -> budget 22.
        # (tumor, A): spread(22, [10, 30]) = [5, 16] + tie -> s1 -> [6, 16];
        # (normal, B): spread(22, [5, 20]) = [4, 17] (remainders 10, 15) + s4 -> [4, 18]; (tumor, C) exact.
        ((0, "category", ["label", "site"]), [6, 16, 4, 18, 8, 8, 4, 2]),
    ],
)
def test_clip_strategies_hand_computed(cohort_ds, args, expected):
    out = cohort_ds.clip(*args)
    assert clipped(out) == as_dict(expected)
    assert out.num_tiles == sum(expected)
    for path, entry in out.manifest().items():
        assert entry["clipped"] <= entry["total"]


def test_manifest_clipped_is_min_of_clip_and_total(cohort, cohort_ds):
    out = cohort_ds.clip(12)
    for path, entry in out.manifest().items():
        assert entry == {"total": entry["total"], "clipped": min(12, entry["total"])}
    assert out.num_tiles == sum(min(12, n) for n in out.slide_table()["total"])


def test_clip_follows_later_filters(cohort_ds):
    # Budget recomputed on what is retained: without p2 (5 tiles), the smallest patient is p3 with 20.
    out = cohort_ds.clip(strategy="patient").filter(filters={"patient": ["p1", "p3", "p4"]})
    # p1: spread(20, [10, 30]) = [5, 15]; p4 (22 tiles): spread(20, [8, 8, 4, 2]) = floors [7, 7, 3, 1]
    # (remainders 6, 6, 14, 18) = 18, +1 to s8 and s7 -> [7, 7, 4, 2].
    assert clipped(out) == {"s1": 5, "s2": 15, "s4": 20, "s5": 7, "s6": 7, "s7": 4, "s8": 2}


def test_clip_zero_removes_clipping_and_unclip(cohort_ds):
    assert cohort_ds.clip(10).clip(0).clipping is None
    assert cohort_ds.clip(10).unclip().num_tiles == 87


def test_clip_argument_errors(cohort_ds):
    with pytest.raises(DatasetError, match="needs headers"):
        cohort_ds.clip(5, strategy="category")
    with pytest.raises(DatasetError, match="choose one of"):
        cohort_ds.clip(5, strategy="tiles")
    with pytest.raises(DatasetError, match="max_tiles=-3"):
        cohort_ds.clip(-3)
    with pytest.raises(DatasetError, match="only applies with strategy='category'"):
        cohort_ds.clip(5, strategy="patient", headers=["label"])


def test_blank_category_values_are_an_error_naming_the_slides(cohort_ds):
    with pytest.raises(DatasetError, match=r"s3.*filter_blank=\['flag'\]"):
        cohort_ds.clip(strategy="category", headers="flag")
    with pytest.raises(DatasetError, match="s3"):
        cohort_ds.balance("flag")
    # Once blanks are filtered out, 'FALSE', 'TRUE' and 'unknown' are three ordinary categories.
    out = cohort_ds.filter(filter_blank="flag").clip(strategy="category", headers="flag")
    # FALSE: s1, s4, s7 = 34; TRUE: s2, s6, s8 = 40; unknown: s5 = 8 -> budget 8.
    # FALSE: spread(8, [10, 20, 4]) = floors [2, 4, 0] (remainders 12, 24, 32) + s7, s4 -> [2, 5, 1];
    # TRUE: spread(8, [30, 8, 2]) = floors [6, 1, 0] (remainders 0, 24, 16) + s6 -> [6, 2, 0].
    assert clipped(out) == {"s1": 2, "s2": 6, "s4": 5, "s5": 8, "s6": 2, "s7": 1, "s8": 0}


# -- balance -------------------------------------------------------------------------------------------------------
def test_balance_tile(cohort_ds):
    assert weights(cohort_ds.balance(strategy="tile")) == {s: TILES[s] / 87 for s in ORDER}
    # Clipped tiles count: after clip(10) the tiles are [10, 10, 5, 10, 8, 8, 4, 2] = 57.
    assert weights(cohort_ds.clip(10).balance(strategy="tile")) == as_dict(
        [n / 57 for n in [10, 10, 5, 10, 8, 8, 4, 2]]
    )


def test_balance_slide_and_unbalanced_are_uniform(cohort_ds):
    assert weights(cohort_ds.balance(strategy="slide")) == {s: 1 / 8 for s in ORDER}
    assert weights(cohort_ds) == {s: 1 / 8 for s in ORDER}
    assert cohort_ds.prob_weights is None
    assert cohort_ds.balance(strategy="slide").balance(strategy=None).prob_weights is None


def test_balance_patient(cohort_ds):
    # 4 patients: p1's two slides 1/8 each, p2 and p3 1/4, p4's four slides 1/16 each.
    assert weights(cohort_ds.balance(strategy="patient")) == as_dict([1 / 8, 1 / 8, 1 / 4, 1 / 4] + [1 / 16] * 4)


def test_balance_category(cohort_ds):
    # 2 categories, each 1/2; within tumor (62 tiles) and normal (25 tiles) in proportion to tiles.
    expected = {s: TILES[s] / 124 for s in ["s1", "s2", "s5", "s6", "s7", "s8"]}
    expected.update({"s3": 5 / 50, "s4": 20 / 50})
    out = cohort_ds.balance("label")
    assert weights(out) == {s: expected[s] for s in ORDER}
    assert out.prob_weights == dict(zip(out.tfrecords(), [expected[s] for s in ORDER]))
    assert sum(weights(out)[s] for s in ["s3", "s4"]) == pytest.approx(0.5)


def test_balance_category_with_two_headers(cohort_ds):
    out = cohort_ds.balance(["label", "site"])
    # (tumor, A) 40 tiles, (normal, B) 25, (tumor, C) 22: each 1/3.
    expected = {"s1": 10 / 120, "s2": 30 / 120, "s3": 5 / 75, "s4": 20 / 75, "s5": 8 / 66, "s6": 8 / 66,
                "s7": 4 / 66, "s8": 2 / 66}
    assert weights(out) == expected


def test_balance_argument_errors(cohort_ds):
    with pytest.raises(DatasetError, match="needs headers"):
        cohort_ds.balance(strategy="category")
    with pytest.raises(DatasetError, match="choose one of"):
        cohort_ds.balance("label", strategy="weird")


def test_balance_weights_sum_to_one(cohort_ds):
    for strategy in ("tile", "slide", "patient", "category"):
        out = cohort_ds.clip(7, strategy="patient").balance("label", strategy=strategy)
        assert sum(out.prob_weights.values()) == pytest.approx(1.0, abs=1e-12)


# -- chaining ------------------------------------------------------------------------------------------------------
def test_chaining_never_mutates_the_original(cohort_ds):
    before = (cohort_ds.manifest(), cohort_ds.filters, cohort_ds.filter_blank, cohort_ds.min_tiles,
              cohort_ds.clipping, cohort_ds.balancing, cohort_ds.slide_table())
    out = (
        cohort_ds.filter(filters={"label": ["tumor"]}, filter_blank=["flag"], min_tiles=3)
        .clip(6, strategy="patient")
        .balance("site")
        .remove_filter(filters=["label"])
        .filter(filters={"site": ["A", "C"]})
    )
    out.filters["site"].append("B")  # the returned dict is a copy too
    table = out.annotations
    table.loc[0, "label"] = "edited"
    after = (cohort_ds.manifest(), cohort_ds.filters, cohort_ds.filter_blank, cohort_ds.min_tiles,
             cohort_ds.clipping, cohort_ds.balancing, cohort_ds.slide_table())
    assert before[:6] == after[:6]
    assert before[6].equals(after[6])
    assert out.filters == {"site": ["A", "C"]}
    assert cohort_ds.annotations["label"].tolist().count("edited") == 0


def test_order_of_chaining_does_not_matter(cohort_ds):
    a = cohort_ds.clip(6, strategy="patient").balance("label").filter(filters={"site": ["A", "C"]})
    b = cohort_ds.filter(filters={"site": ["A", "C"]}).balance("label").clip(6, strategy="patient")
    assert a.manifest() == b.manifest() and a.prob_weights == b.prob_weights


# -- properties of the pure functions ------------------------------------------------------------------------------
counts = st.lists(st.integers(0, 500), min_size=1, max_size=30)


@given(st.integers(0, 2000), counts)
def test_spread_is_exact_capped_and_proportional(budget, caps):
    shares = spread(budget, caps)
    assert sum(shares) == min(budget, sum(caps))
    assert all(0 <= s <= c for s, c in zip(shares, caps))
    if 0 < budget < sum(caps):
        for s, c in zip(shares, caps):
            assert abs(Fraction(s) - Fraction(budget * c, sum(caps))) < 1


@given(st.lists(st.tuples(st.integers(1, 300), st.sampled_from("abcd")), min_size=1, max_size=30),
       st.integers(0, 100), st.sampled_from([None, "slide", "patient", "category"]))
@settings(max_examples=200)
def test_clip_counts_properties(rows, max_tiles, strategy):
    totals = [t for t, _ in rows]
    groups = [g for _, g in rows]
    spec = ClipSpec(max_tiles, strategy, ("x",) if strategy == "category" else None)
    out = clip_counts(totals, spec, groups)
    caps = [min(t, max_tiles) if max_tiles else t for t in totals]
    assert all(0 <= c <= cap for c, cap in zip(out, caps))
    if strategy is None:
        assert out == caps
    elif strategy == "slide":
        assert set(out) == {min(caps)}
    else:
        sums = {}
        for g, c in zip(groups, out):
            sums[g] = sums.get(g, 0) + c
        assert len(set(sums.values())) == 1  # every group undersampled to the same count


@given(st.lists(st.tuples(st.integers(1, 300), st.sampled_from("abcd")), min_size=1, max_size=30),
       st.sampled_from([None, "tile", "slide", "patient", "category"]))
@settings(max_examples=200)
def test_balance_weights_properties(rows, strategy):
    tiles = [t for t, _ in rows]
    groups = [g for _, g in rows]
    spec = None if strategy is None else BalanceSpec(strategy, ("x",) if strategy == "category" else None)
    w = balance_weights(tiles, spec, groups)
    assert all(x >= 0 for x in w)
    assert sum(w) == pytest.approx(1.0, abs=1e-9)
    if strategy in ("patient", "category"):
        sums = {}
        for g, x in zip(groups, w):
            sums[g] = sums.get(g, 0) + x
        assert max(sums.values()) - min(sums.values()) < 1e-9  # each group equally likely


operations = st.lists(
    st.one_of(
        st.builds(lambda sites: ("filter", {"filters": {"site": sites}}), st.lists(st.sampled_from("ABCZ"), max_size=3)),
        st.builds(lambda col: ("filter", {"filter_blank": [col]}), st.sampled_from(["flag", "score", "label"])),
        st.builds(lambda n: ("filter", {"min_tiles": n}), st.integers(0, 25)),
        st.builds(
            lambda n, strategy: ("clip", (n, strategy, "site" if strategy == "category" else None)),
            st.integers(0, 25),
            st.sampled_from([None, "slide", "patient", "category"]),
        ),
        st.builds(
            lambda strategy: ("balance", ("label", strategy)),
            st.sampled_from([None, "tile", "slide", "patient", "category"]),
        ),
        st.just(("clear_filters", ())),
        st.just(("unclip", ())),
    ),
    max_size=6,
)


@given(operations)
@settings(max_examples=60, deadline=None)
def test_random_chains_keep_invariants_and_never_mutate(cohort_ds, ops):
    before = cohort_ds.manifest()
    ds = cohort_ds
    for name, args in ops:
        if name == "filter":
            ds = ds.filter(**args)
        else:
            ds = getattr(ds, name)(*args)
    manifest = ds.manifest()
    assert all(0 <= e["clipped"] <= e["total"] for e in manifest.values())
    assert all(e["total"] >= ds.min_tiles for e in manifest.values())
    assert ds.num_tiles == sum(e["clipped"] for e in manifest.values())
    weights = ds.slide_table()["weight"]
    if len(weights) and weights.sum() > 0:
        assert weights.sum() == pytest.approx(1.0, abs=1e-9)
    assert cohort_ds.manifest() == before and cohort_ds.filters == {} and cohort_ds.clipping is None
