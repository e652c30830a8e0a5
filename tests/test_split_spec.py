"""SplitSpec: one set of split names, defaults and checks for the config, Dataset.split and plan_split."""

import dataclasses
import logging
import warnings

import pandas as pd
import pytest

from slidetiles.errors import ConfigError, LoaderError, SplitError
from slidetiles.splits import SplitSpec, plan_split
from slidetiles.splits.spec import DEPRECATED_KEYS, check_seed


def make_cohort(n_patients):
    """Two slides per patient, three subtypes, six sites."""
    return pd.DataFrame([{"slide": f"P{i:02d}-{j}", "patient": f"P{i:02d}", "subtype": "ABC"[i % 3],
                          "site": f"site{i % 6}"} for i in range(n_patients) for j in range(2)])


def config_with(plan):
    return {"sources": {"s": {"tiles": "t", "tfrecords": "o"}}, "datasets": {"d": {"sources": ["s"]}},
            "splits": {"p": {"dataset": "d", **plan}}}


def test_defaults_live_in_the_spec():
    spec = SplitSpec()
    assert dataclasses.asdict(spec) == {"strategy": "k-fold", "model_type": "categorical", "labels": None,
                                        "k_fold": 3, "fraction": None, "k_fold_header": None,
                                        "site_labels": "site", "seed": 0, "time_limit": 10.0}
    # An empty config plan and an empty call are the same plan.
    assert SplitSpec.from_config({"dataset": "all"}) == spec
    assert SplitSpec.from_config({}).to_config() == dataclasses.asdict(spec)


def test_slideflow_3_model_types_are_stored_as_ours():
    assert SplitSpec(model_type="classification").model_type == "categorical"
    assert SplitSpec(model_type="regression").model_type == "linear"


@pytest.mark.parametrize("old, new, value", [("k", "k_fold", 5), ("site_column", "site_labels", "centre")])
def test_old_config_keys_still_work_and_name_the_new_one(caplog, old, new, value):
    assert DEPRECATED_KEYS[old] == new
    with caplog.at_level(logging.WARNING, logger="slidetiles.splits.spec"):
        with pytest.warns(DeprecationWarning, match=f"splits.p.{old} is deprecated; call it splits.p.{new}"):
            spec = SplitSpec.from_config({"dataset": "d", old: value}, where="splits.p")
    assert getattr(spec, new) == value
    assert f"splits.p.{old} is deprecated; call it splits.p.{new}" in caplog.text
    # Old and new name together: fine when they agree, an error naming both when not.
    with pytest.warns(DeprecationWarning):
        assert getattr(SplitSpec.from_config({old: value, new: value}), new) == value
    with pytest.warns(DeprecationWarning), pytest.raises(SplitError, match=f"split.{old}=.*split.{new}=.*disagree"):
        SplitSpec.from_config({old: value, new: "other" if isinstance(value, str) else value + 1})


def test_old_keys_without_warnings_when_asked():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SplitSpec.from_config({"k": 4}, warn=False).k_fold == 4


def test_an_old_config_gives_the_split_the_new_one_gives():
    df = make_cohort(12)
    with pytest.warns(DeprecationWarning):
        old = SplitSpec.from_config({"strategy": "k-fold-preserved-site", "labels": "subtype", "k": 3,
                                     "site_column": "site", "seed": 7})
    new = SplitSpec(strategy="k-fold-preserved-site", labels="subtype", k_fold=3, site_labels="site", seed=7)
    assert old == new
    assert plan_split(df, old).folds == plan_split(df, labels="subtype", strategy="k-fold-preserved-site", k_fold=3,
                                                   seed=7).folds


@pytest.mark.parametrize("fields, key", [
    ({"strategy": "kfold"}, "strategy"),
    ({"strategy": "fixed"}, "fraction"),
    ({"strategy": "bootstrap", "fraction": 1.5}, "fraction"),
    ({"k_fold": 1}, "k_fold"),
    ({"k_fold": 2.0}, "k_fold"),
    ({"strategy": "bootstrap", "fraction": 0.2, "k_fold": 0}, "k_fold"),
    ({"strategy": "k-fold-manual"}, "k_fold_header"),
    ({"strategy": "k-fold-preserved-site", "site_labels": None}, "site_labels"),
    ({"seed": -1}, "seed"),
    ({"seed": True}, "seed"),
    ({"time_limit": 0}, "time_limit"),
    ({"model_type": "cph"}, "model_type"),
])
def test_each_check_names_its_key(fields, key):
    with pytest.raises(SplitError, match=key):
        SplitSpec(**fields)
    with pytest.raises(SplitError, match=f"^splits.p: .*{key}"):
        SplitSpec.from_config(fields, where="splits.p")


def test_unknown_config_key_lists_the_valid_ones():
    with pytest.raises(SplitError, match=r"splits.p.folds: unknown split setting; valid ones: .*k_fold, "):
        SplitSpec.from_config({"folds": 3}, where="splits.p")


def test_keys_a_strategy_does_not_read_are_not_checked():
    # As before the spec: fixed ignores k_fold, k-fold ignores fraction (kept as None so it cannot look used).
    assert SplitSpec(strategy="fixed", fraction=0.25, k_fold=1).k_fold == 1
    assert SplitSpec(fraction=0.3).fraction is None


def test_check_config_uses_the_spec():
    from slidetiles.pipeline.discovery import check_config

    with pytest.warns(DeprecationWarning, match="splits.p.k is deprecated; call it splits.p.k_fold"):
        check_config(config_with({"k": 4}))
    check_config(config_with({"k_fold": 4, "site_labels": "centre"}))
    with pytest.raises(ConfigError, match="^splits.p: .*fraction"):
        check_config(config_with({"strategy": "bootstrap"}))
    with pytest.raises(ConfigError, match="^splits.p: k_fold must be at least 2"):
        check_config(config_with({"k_fold": 1}))
    with pytest.raises(ConfigError, match="splits.p.dataset: 'x' is not a dataset"):
        check_config(config_with({"dataset": "x"}))


def test_plan_split_takes_a_spec_or_its_fields_not_both():
    df = make_cohort(12)
    spec = SplitSpec(labels="subtype", k_fold=4, seed=3)
    assert plan_split(df, spec).folds == plan_split(df, labels="subtype", k_fold=4, seed=3).folds
    with pytest.raises(SplitError, match=r"spec= or the spec's fields \(seed\), not both"):
        plan_split(df, spec, seed=3)


@pytest.mark.parametrize("strategy", ["bootstrap", "none"])
def test_the_plan_records_every_strategy(strategy):
    plan = plan_split(make_cohort(12), labels="subtype", strategy=strategy, fraction=0.25, k_fold=2, seed=1)
    assert plan.entry is None  # never saved to a splits file...
    record = plan.record()  # ...but recorded in the same format
    assert record["strategy"] == strategy
    assert len(record["tfrecords"]) == plan.k
    fixed = plan_split(make_cohort(12), labels="subtype", strategy="fixed", fraction=0.25)
    assert fixed.record() is fixed.entry


def test_one_seed_check_for_splits_solver_and_loaders():
    from slidetiles.loaders.sharding import resolve_seed
    from slidetiles.splits.preserved_site import solve_preserved_site

    assert check_seed(5) == 5 and check_seed(None, none_ok=True) is None
    with pytest.raises(SplitError, match="seed must be a non-negative integer, not -1"):
        check_seed(-1)
    with pytest.raises(SplitError, match="seed must be a non-negative integer, not 1.0"):
        solve_preserved_site([[1, 0], [0, 1]], 2, seed=1.0)
    with pytest.raises(LoaderError, match="seed must be None or a non-negative integer, not -2"):
        resolve_seed(-2)
    assert resolve_seed(4) == 4 and isinstance(resolve_seed(None), int)


def test_rule_params_are_the_same_for_old_and_new_keys():
    # The split rule's params: renaming k -> k_fold, or spelling out a default, must not re-run the split.
    from slidetiles.splits.spec import config_params

    old = config_params({"dataset": "all", "k": 3, "site_column": "site", "labels": "label"})
    new = config_params({"labels": "label", "dataset": "all"})
    assert old == new and list(old) == sorted(old)
    assert old["dataset"] == "all" and old["k_fold"] == 3 and "k" not in old
