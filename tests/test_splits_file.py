"""splits.json: Slideflow's format both ways, the reuse rule, reproducible bytes, concurrent writers."""

import json
import multiprocessing
import warnings

import pandas as pd
import pytest

from helpers import make_cohort
from slidetiles.errors import SplitError
from slidetiles.splits import SplitWarning, append_split, load_splits, plan_split, split_fingerprint
from slidetiles.splits.splits_file import dumps_splits


def slideflow_entry(df, strategy="k-fold", k=3, label="subtype", label_format="name", with_site=False):
    """An entry as Slideflow writes it: no extra keys, slides in annotation order, folds by hand (not ours)."""
    patients = {}
    labels = sorted(set(df[label]))
    for slide, patient, value, site in zip(df["slide"], df["patient"], df[label], df["site"]):
        if label_format == "index":
            value = labels.index(value)
        elif label_format == "float":
            value = [float(value)]
        record = patients.setdefault(patient, {"outcome_label": value, "slides": []})
        record["slides"].append(slide)
        if with_site:
            record["site"] = site
    order = list(patients)
    if strategy == "fixed":
        val = [s for p in order[: len(order) // 4] for s in patients[p]["slides"]]
        train = [s for p in order[len(order) // 4:] for s in patients[p]["slides"]]
        tfrecords = {"validation": val, "training": train}
    elif with_site:
        site_fold = {site: 1 + i % k for i, site in enumerate(sorted(set(df["site"])))}
        tfrecords = {f"k-fold-{i}": [s for p in order for s in patients[p]["slides"]
                                     if site_fold[patients[p]["site"]] == i] for i in range(1, k + 1)}
    else:
        tfrecords = {f"k-fold-{i}": [s for j, p in enumerate(order) if j % k == i - 1 for s in patients[p]["slides"]]
                     for i in range(1, k + 1)}
    return {"strategy": strategy, "patients": patients, "tfrecords": tfrecords}


def write_slideflow(path, entries):
    # Slideflow's write_json: json.dump with indent=1.
    with open(path, "w") as f:
        json.dump(entries, f, indent=1)
    return path.read_bytes()


# --------------------------------------------------------------------------------------------- Slideflow round trip


@pytest.mark.parametrize("label_format", ["name", "index"])
def test_slideflow_kfold_reused_as_is(tmp_path, label_format):
    df = make_cohort(12)
    entry = slideflow_entry(df, label_format=label_format)
    path = tmp_path / "splits.json"
    before = write_slideflow(path, [entry])
    plan = plan_split(df, labels="subtype", k_fold=3, splits=path, seed=123)
    assert plan.reused and plan.index == 0
    assert plan.folds == [sorted(entry["tfrecords"][f"k-fold-{i}"]) for i in (1, 2, 3)]
    assert path.read_bytes() == before
    train, val = plan.train_val(2)
    assert set(val) == set(entry["tfrecords"]["k-fold-2"])
    assert set(train) == set(entry["tfrecords"]["k-fold-1"] + entry["tfrecords"]["k-fold-3"])


def test_slideflow_linear_reused(tmp_path):
    df = make_cohort(9)
    path = tmp_path / "splits.json"
    before = write_slideflow(path, [slideflow_entry(df, label="score", label_format="float")])
    plan = plan_split(df, labels="score", model_type="linear", k_fold=3, splits=path)
    assert plan.reused and path.read_bytes() == before


def test_slideflow_fixed_reused_only_for_its_fraction(tmp_path):
    df = make_cohort(12)
    path = tmp_path / "splits.json"
    before = write_slideflow(path, [slideflow_entry(df, strategy="fixed")])
    plan = plan_split(df, labels="subtype", strategy="fixed", fraction=0.25, splits=path)
    assert plan.reused and path.read_bytes() == before
    plan = plan_split(df, labels="subtype", strategy="fixed", fraction=0.5, splits=path)
    assert not plan.reused and plan.index == 1 and len(load_splits(path)) == 2


def test_slideflow_preserved_site_reused_with_site_map(tmp_path):
    df = make_cohort(12, n_sites=4)
    entry = slideflow_entry(df, strategy="k-fold-preserved-site", with_site=True)
    path = tmp_path / "splits.json"
    before = write_slideflow(path, [entry])
    plan = plan_split(df, labels="subtype", strategy="k-fold-preserved-site", k_fold=3, splits=path)
    assert plan.reused and path.read_bytes() == before
    assert plan.sites == {"site0": 1, "site1": 2, "site2": 3, "site3": 1}


def test_our_entries_stay_readable_the_slideflow_way(tmp_path):
    # What Slideflow does with a file: find by strategy, fold count, patients, labels; read tfrecords["k-fold-i"].
    df = make_cohort(10)
    path = tmp_path / "splits.json"
    plan = plan_split(df, labels="subtype", k_fold=3, splits=path, seed=4)
    [entry] = json.loads(path.read_text())
    assert entry["strategy"] == "k-fold" and len(entry["tfrecords"]) == 3
    assert sorted(entry["patients"]) == sorted(set(df["patient"]))
    for i in (1, 2, 3):
        assert entry["tfrecords"][f"k-fold-{i}"] == plan.train_val(i)[1] == entry["validation"][str(i)]
    assert list(entry) == ["strategy", "patients", "tfrecords", "k_fold", "fraction", "seed", "model_type",
                           "outcome_labels", "validation", "fingerprint", "created_by"]
    # Slideflow's encoding: the category's index among the sorted categories, which outcome_labels names.
    assert entry["outcome_labels"] == {"0": "A", "1": "B", "2": "C"}
    for patient, subtype in zip(df["patient"], df["subtype"]):
        assert entry["patients"][patient]["outcome_label"] == "ABC".index(subtype)
    assert entry["created_by"] == "slidetiles"  # no version: bytes must survive an upgrade
    fixed = plan_split(df, labels="subtype", strategy="fixed", fraction=0.3, splits=path, seed=4).entry
    assert set(fixed["tfrecords"]) == {"training", "validation"}
    assert fixed["validation"] == {"1": fixed["tfrecords"]["validation"]}


@pytest.mark.parametrize("kind", ["categorical", "linear", "unlabelled", "two columns"])
def test_entries_of_older_releases_are_still_reused(tmp_path, kind):
    # Before Slideflow's encoding, slidetiles wrote the label's name, a bare float, or null without labels.
    df = make_cohort(12)
    kwargs = {"categorical": dict(labels="subtype"), "linear": dict(labels="score", model_type="linear"),
              "unlabelled": dict(labels=None), "two columns": dict(labels=["subtype", "site"])}[kind]
    path = tmp_path / "splits.json"
    plan = plan_split(df, k_fold=3, seed=6, splits=path, **kwargs)
    [entry] = load_splits(path)
    for patient, record in entry["patients"].items():
        label = plan.patients.loc[patient, "label"]
        record["outcome_label"] = None if label is None else label
    entry.pop("outcome_labels", None)
    before = write_slideflow(path, [entry])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWarning)
        again = plan_split(df, k_fold=3, seed=6, splits=path, **kwargs)
    assert again.reused and again.folds == plan.folds and path.read_bytes() == before


def test_a_wrong_index_is_not_reused_and_is_explained(tmp_path):
    df = make_cohort(12)
    path = tmp_path / "splits.json"
    plan_split(df, labels="subtype", k_fold=3, seed=6, splits=path)
    [entry] = load_splits(path)
    entry["patients"]["TCGA-000"]["outcome_label"] = 2  # 'A' is 0
    write_slideflow(path, [entry])
    with pytest.warns(SplitWarning, match=r"saved split #0 \(k-fold\) .* other outcome labels for TCGA-000 "
                                          r"\(saved 2, expected 0\)\. Making a new split"):
        again = plan_split(df, labels="subtype", k_fold=3, seed=6, splits=path)
    assert not again.reused and again.index == 1


def test_slideflow_label_dicts_are_stored_as_given(tmp_path):
    # Slideflow stores whatever labels dict it is handed; Dataset.labels() gives ints, or [float] with use_float.
    df = make_cohort(9)
    ints = {s: "ABC".index(v) for s, v in zip(df["slide"], df["subtype"])}
    entry = plan_split(df, labels=ints, k_fold=3).entry
    assert {p: r["outcome_label"] for p, r in entry["patients"].items()} == dict(zip(df["patient"], ints.values()))
    floats = {s: [float(v)] for s, v in zip(df["slide"], df["score"])}
    entry = plan_split(df, labels=floats, model_type="regression", k_fold=3).entry
    assert all(r["outcome_label"] == floats[r["slides"][0]] for r in entry["patients"].values())
    assert entry["model_type"] == "linear"


# --------------------------------------------------------------------------------------------- reuse rule


def test_reuse_rule(tmp_path):
    df = make_cohort(12)
    path = tmp_path / "splits.json"
    first = plan_split(df, labels="subtype", strategy="fixed", fraction=0.25, splits=path, seed=1)
    saved = path.read_bytes()
    again = plan_split(df.sample(frac=1, random_state=3), labels="subtype", strategy="fixed", fraction=0.25,
                       splits=path, seed=1)
    assert again.reused and again.folds == first.folds and path.read_bytes() == saved

    plan_split(df, labels="subtype", strategy="fixed", fraction=0.3, splits=path, seed=1)  # fraction
    plan_split(df, labels="subtype", strategy="fixed", fraction=0.25, splits=path, seed=2)  # seed
    plan_split(df[df["patient"] != "TCGA-003"], labels="subtype", strategy="fixed", fraction=0.25, splits=path,
               seed=1)  # patient set
    relabelled = df.assign(subtype=df["subtype"].replace({"A": "B"}))
    plan_split(relabelled, labels="subtype", strategy="fixed", fraction=0.25, splits=path, seed=1)  # labels
    plan_split(df, labels="subtype", strategy="k-fold", k_fold=3, splits=path, seed=1)  # strategy
    plan_split(df, labels="subtype", strategy="k-fold", k_fold=4, splits=path, seed=1)  # fold count
    entries = load_splits(path)
    assert len(entries) == 7
    assert [plan_split(df, labels="subtype", k_fold=4, splits=path, seed=1).index] == [6]
    assert len(load_splits(path)) == 7


def test_manual_folds_changed_in_annotations_gives_new_entry(tmp_path):
    df = make_cohort(12)
    path = tmp_path / "splits.json"
    plan_split(df, labels="subtype", strategy="k-fold-manual", k_fold_header="fold", splits=path)
    again = plan_split(df, labels="subtype", strategy="k-fold-manual", k_fold_header="fold", splits=path, seed=5)
    assert again.reused and again.entry["seed"] is None  # the folds come from the column, not the seed
    moved = df.copy()
    moved.loc[moved["patient"] == "TCGA-000", "fold"] = "2"
    plan = plan_split(moved, labels="subtype", strategy="k-fold-manual", k_fold_header="fold", splits=path)
    assert not plan.reused and len(load_splits(path)) == 2


def test_reused_split_follows_patients_to_new_slides(tmp_path):
    df = make_cohort(12)
    entry = slideflow_entry(df)
    path = tmp_path / "splits.json"
    write_slideflow(path, [entry])
    extra = pd.DataFrame([{"slide": "TCGA-000-new", "patient": "TCGA-000", "subtype": "A", "site": "site0",
                           "score": "1.0", "fold": "1"}])
    with pytest.warns(SplitWarning, match="TCGA-000 now have other slides"):
        plan = plan_split(pd.concat([df, extra]), labels="subtype", k_fold=3, splits=path)
    assert plan.reused
    [fold] = [f for f in plan.folds if "TCGA-000-0" in f]
    assert "TCGA-000-new" in fold


def test_inconsistent_saved_split_is_reported(tmp_path):
    df = make_cohort(6)
    entry = slideflow_entry(df)
    entry["tfrecords"]["k-fold-1"].append(entry["tfrecords"]["k-fold-2"][0])
    path = tmp_path / "splits.json"
    write_slideflow(path, [entry])
    with pytest.raises(SplitError, match=r"splits.json: saved split #0: saved split puts patient .* in both"):
        plan_split(df, labels="subtype", k_fold=3, splits=path)


def test_bad_files(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text("[{")
    with pytest.raises(SplitError, match="splits.json: not valid JSON"):
        load_splits(path)
    path.write_text('{"strategy": "k-fold"}')
    with pytest.raises(SplitError, match="JSON list of objects"):
        load_splits(path)
    path.write_text("")
    assert load_splits(path) == []
    assert load_splits(tmp_path / "missing.json") == []


# --------------------------------------------------------------------------------------------- reproducible bytes


def test_fingerprint_covers_inputs_and_can_be_recomputed(tmp_path):
    df = make_cohort(10)
    plan = plan_split(df, labels="subtype", k_fold=3, seed=8, splits=tmp_path / "s.json")
    again = split_fingerprint(plan.patients, "k-fold", 3, None, 8, "categorical")
    assert plan.entry["fingerprint"] == again
    renamed = df.replace({"slide": {"TCGA-001-0": "TCGA-001-0b"}})
    assert plan_split(renamed, labels="subtype", k_fold=3, seed=8).entry["fingerprint"] != again
    assert plan_split(df, labels="subtype", k_fold=3, seed=9).entry["fingerprint"] != again


def test_file_bytes_are_stable(tmp_path):
    df = make_cohort(8)
    for name in ("a.json", "b.json"):
        plan_split(df, labels="subtype", k_fold=2, seed=0, splits=tmp_path / name)
    text = (tmp_path / "a.json").read_bytes()
    assert text == (tmp_path / "b.json").read_bytes()
    assert text.endswith(b"}\n]\n")
    assert dumps_splits(load_splits(tmp_path / "a.json")).encode() == text


# --------------------------------------------------------------------------------------------- concurrent writers


def _append_many(path, who, n, barrier):
    barrier.wait()
    for i in range(n):
        append_split(path, {"strategy": "fixed", "patients": {}, "tfrecords": {}, "writer": who, "i": i})


def _plan_once(path, barrier):
    barrier.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan_split(make_cohort(30), labels="subtype", k_fold=5, seed=0, splits=path)


def test_two_processes_append_to_the_same_file(tmp_path):
    path = str(tmp_path / "splits.json")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_append_many, args=(path, who, 25, barrier)) for who in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    entries = json.loads(open(path).read())
    assert sorted((e["writer"], e["i"]) for e in entries) == sorted((w, i) for w in "ab" for i in range(25))


def test_parallel_jobs_share_one_saved_split(tmp_path):
    path = str(tmp_path / "splits.json")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    workers = [ctx.Process(target=_plan_once, args=(path, barrier)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert len(load_splits(path)) == 1
