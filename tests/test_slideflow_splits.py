"""splits.json, labels() and filter_blank against Slideflow 3.0.2's own Dataset, both ways, on one real cohort.

Every round trip runs Slideflow's real ``Dataset.split`` / ``kfold_split`` / ``labels`` / ``filtered_annotations``
on TFRecords and a splits.json written by slidetiles (and the other way round). "Reused" is checked the way a user
would notice it: the file's bytes do not change (Slideflow rewrites the file whenever it finds no compatible entry)
and both tools hand out the same training and validation slides.

The cohort's annotations carry one slide without a TFRecord whose ``label`` (``benign``) and ``subtype`` (``A``)
no other slide has: Slideflow numbers categories over every annotated slide, so that slide shifts every index.
"""

import json
import os
import warnings

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slidetiles
from slidetiles.demo import write_demo_tiles
from slidetiles.errors import SplitError
from slidetiles.io import write_tfrecords_multi
from slidetiles.splits import SplitWarning, load_splits

TILE_PX, TILE_UM = 32, 302
#: Annotated, no TFRecord, and the only slide of its label and subtype.
GHOST = {"patient": "patient_999", "slide": "slide_999", "site": "site_A", "label": "benign", "subtype": "A",
         "score": "9.5", "flag": "x"}
#: filter_blank probes: what pandas reads as missing is blank in Slideflow, spaces around or two spaces are not.
FLAGS = ["NA", "nan", "", " ", "  ", "None", "null ", " NA", "N/A", "keep", "NULL", "#N/A"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("sfcohort")
    frame = write_demo_tiles(root, n_slides=20, n_sites=4, tiles_per_slide=(2, 4), seed=11, px=TILE_PX)
    write_tfrecords_multi(root / "tiles", root / "tfrecords" / f"{TILE_PX}px_{TILE_UM}um")
    frame = frame.astype(str)
    patient_rank = {p: i for i, p in enumerate(sorted(set(frame["patient"])))}
    frame["subtype"] = [("B", "C", "D")[patient_rank[p] % 3] for p in frame["patient"]]
    frame["score"] = [str(patient_rank[p] * 0.5) for p in frame["patient"]]
    frame["flag"] = [FLAGS[i % len(FLAGS)] for i in range(len(frame))]
    frame = pd.concat([frame, pd.DataFrame([GHOST])], ignore_index=True)
    csv = root / "annotations.csv"
    frame.to_csv(csv, index=False)
    config = root / "datasets.json"
    config.write_text(json.dumps({"demo": {"slides": None, "roi": None, "tiles": None,
                                           "tfrecords": str(root / "tfrecords")}}))
    return {"root": root, "csv": str(csv), "config": str(config)}


def ours(cohort, **kwargs):
    return slidetiles.Dataset(config=cohort["config"], sources=["demo"], tile_px=TILE_PX, tile_um=TILE_UM,
                              annotations=cohort["csv"], **kwargs)


def theirs(slideflow, cohort, **kwargs):
    return slideflow.Dataset(config=cohort["config"], sources=["demo"], tile_px=TILE_PX, tile_um=TILE_UM,
                             annotations=cohort["csv"], **kwargs)


def slides(ds):
    """Slide names of a Dataset of either tool."""
    if isinstance(ds, slidetiles.Dataset):
        return sorted(ds.slides())
    return sorted(os.path.basename(t)[: -len(".tfrecords")] for t in ds.tfrecords())


def pairs(train_val):
    return slides(train_val[0]), slides(train_val[1])


# ------------------------------------------------------------------------------------------- labels() numbering


def test_cohort_has_a_category_only_on_a_slide_without_tfrecord(cohort):
    ds = ours(cohort)
    assert ds.unmatched["slides_without_tfrecord"] == ["slide_999"]
    assert "benign" not in set(ds.annotations["label"])


@pytest.mark.parametrize("header", ["label", "subtype"])
def test_labels_numbered_as_slideflow_numbers_them(slideflow, cohort, header):
    ds, sf_ds = ours(cohort), theirs(slideflow, cohort)
    mine, unique = ds.labels(header)
    their, their_unique = sf_ds.labels(header)
    assert unique == their_unique and unique[0] == GHOST[header]  # the TFRecord-less slide's value takes index 0
    assert ds.label_categories(header) == {header: their_unique}
    assert mine == {s: their[s] for s in ds.slides()}
    assert min(mine.values()) == 1


def test_filters_and_min_tiles_number_as_slideflow(slideflow, cohort):
    # min_tiles drops slides without a TFRecord from Slideflow's filtered annotations, and with them 'benign'.
    for kwargs in ({"filters": {"site": ["site_A", "site_B"]}}, {"min_tiles": 1}, {"filter_blank": ["flag"]}):
        mine, unique = ours(cohort, **kwargs).labels("label")
        their, their_unique = theirs(slideflow, cohort, **kwargs).labels("label")
        assert unique == their_unique, kwargs
        assert mine == {s: v for s, v in their.items() if s in mine}, kwargs
    assert ours(cohort, min_tiles=1).label_categories("label") == {"label": ["normal", "tumor"]}


# ------------------------------------------------------------------------------------------- filter_blank


def test_filter_blank_drops_what_slideflow_drops(slideflow, cohort):
    ds = ours(cohort, filter_blank=["flag"])
    sf_ds = theirs(slideflow, cohort, filter_blank=["flag"])
    assert slides(ds) == slides(sf_ds)
    kept = set(ds.annotations["flag"])
    assert kept == {"  ", "null ", " NA", "keep"}  # every probe that is not blank in Slideflow, no other
    passing = ds.slides() + ds.unmatched["slides_without_tfrecord"]
    assert sorted(sf_ds.filtered_annotations["slide"]) == sorted(passing)
    # Blanks become '' as Slideflow reads them, so labels() and filters see the same values.
    assert ours(cohort).all_annotations["flag"].tolist() == theirs(slideflow, cohort).annotations["flag"].tolist()


# ------------------------------------------------------------------------------------------- our file -> Slideflow


def assert_slideflow_reuses(slideflow, cohort, path, ours_pairs, **split):
    """Slideflow's Dataset.split on ``path``: no entry appended, same slides as ours for every iteration."""
    before = path.read_bytes()
    sf_ds = theirs(slideflow, cohort)
    for i, expected in enumerate(ours_pairs, start=1):
        iteration = {"k_fold_iter": i} if "k-fold" in split["val_strategy"] else {}
        got = pairs(sf_ds.split(splits=str(path), **split, **iteration))
        assert got == expected, f"iteration {i}"
    assert path.read_bytes() == before, "Slideflow found no compatible split and rewrote the file"


@pytest.mark.parametrize("seed", [0, 7])
def test_our_kfold_is_slideflows(slideflow, cohort, tmp_path, seed):
    path = tmp_path / "splits.json"
    ds = ours(cohort)
    mine = [pairs(p) for p in ds.kfold_split(k=3, labels="label", splits=str(path), seed=seed)]
    [entry] = load_splits(path)
    assert entry["outcome_labels"] == {"0": "benign", "1": "normal", "2": "tumor"}
    assert {r["outcome_label"] for r in entry["patients"].values()} == {1, 2}
    assert_slideflow_reuses(slideflow, cohort, path, mine, model_type="classification", labels="label",
                            val_strategy="k-fold", val_k_fold=3)
    # Slideflow's kfold_split (every fold through split()) reuses it too.
    before = path.read_bytes()
    folds = theirs(slideflow, cohort).kfold_split(3, labels="label", splits=str(path))
    assert [pairs(f) for f in folds] == mine and path.read_bytes() == before


def test_our_fixed_is_slideflows(slideflow, cohort, tmp_path):
    path = tmp_path / "splits.json"
    mine = [pairs(ours(cohort).split(labels="subtype", strategy="fixed", fraction=0.3, splits=str(path), seed=3))]
    assert_slideflow_reuses(slideflow, cohort, path, mine, model_type="classification", labels="subtype",
                            val_strategy="fixed", val_fraction=0.3)


def test_our_linear_is_slideflows(slideflow, cohort, tmp_path):
    path = tmp_path / "splits.json"
    ds = ours(cohort)
    mine = [pairs(ds.split("regression", "score", val_strategy="k-fold", val_k_fold=3, k_fold_iter=i,
                           splits=str(path), seed=2)) for i in (1, 2, 3)]
    [entry] = load_splits(path)
    assert entry["model_type"] == "linear" and "outcome_labels" not in entry
    # Slideflow's training code splits a regression outcome with labels(use_float=True): [float] per slide.
    sf_labels, _ = theirs(slideflow, cohort).labels("score", use_float=True)
    assert_slideflow_reuses(slideflow, cohort, path, mine, model_type="regression", labels=sf_labels,
                            val_strategy="k-fold", val_k_fold=3)


def test_our_unlabelled_split_is_slideflows(slideflow, cohort, tmp_path):
    # Without labels Slideflow splits Dataset.patients(): the outcome_label of a patient is the patient.
    path = tmp_path / "splits.json"
    mine = [pairs(ours(cohort).split(model_type=None, strategy="k-fold", k_fold=2, k_fold_iter=i, splits=str(path)))
            for i in (1, 2)]
    [entry] = load_splits(path)
    assert all(record["outcome_label"] == p for p, record in entry["patients"].items())
    assert_slideflow_reuses(slideflow, cohort, path, mine, val_strategy="k-fold", val_k_fold=2)


def test_our_preserved_site_is_read_by_slideflow_without_solving(slideflow, cohort, tmp_path):
    path = tmp_path / "splits.json"
    mine = [pairs(p) for p in ours(cohort).kfold_split(k=3, labels="label", preserved_site=True, splits=str(path),
                                                       seed=1)]
    assert_slideflow_reuses(slideflow, cohort, path, mine, model_type="classification", labels="label",
                            val_strategy="k-fold-preserved-site", val_k_fold=3, site_labels="site")
    # Slideflow only solves when no entry matches, and it cannot solve here (no CPLEX, no pyomo/bonmin): the runs
    # above took the reuse path. With no saved entry it has to solve, and fails.
    with pytest.raises(Exception):  # noqa: B017 - ImportError or Slideflow's solver error, either proves the point
        theirs(slideflow, cohort).split(model_type="classification", labels="label", val_strategy="k-fold-preserved-site",
                                        val_k_fold=3, k_fold_iter=1, splits=str(tmp_path / "fresh.json"))


def test_bootstrap_is_never_saved_by_either(slideflow, cohort, tmp_path):
    # Slideflow draws a bootstrap split afresh and never reads or writes splits.json for it; neither do we.
    path = tmp_path / "splits.json"
    ours(cohort).split(labels="label", strategy="bootstrap", fraction=0.3, k_fold=1, splits=str(path))
    theirs(slideflow, cohort).split(model_type="classification", labels="label", val_strategy="bootstrap",
                                    val_fraction=0.3, splits=str(path))
    assert not path.exists()


# ------------------------------------------------------------------------------------------- Slideflow's file -> ours


@pytest.mark.parametrize("kind", ["k-fold", "fixed", "linear", "unlabelled"])
def test_slideflows_file_is_ours(slideflow, cohort, tmp_path, kind):
    path = tmp_path / "splits.json"
    sf_ds, ds = theirs(slideflow, cohort), ours(cohort)
    if kind == "fixed":
        their = [pairs(sf_ds.split(model_type="classification", labels="label", val_strategy="fixed",
                                   val_fraction=0.3, splits=str(path)))]
        calls = [dict(labels="label", strategy="fixed", fraction=0.3)]
    elif kind == "linear":
        sf_labels, _ = sf_ds.labels("score", use_float=True)
        their = [pairs(sf_ds.split(model_type="regression", labels=sf_labels, val_strategy="k-fold", val_k_fold=3,
                                   k_fold_iter=i, splits=str(path))) for i in (1, 2, 3)]
        calls = [dict(model_type="regression", labels="score", val_k_fold=3, k_fold_iter=i) for i in (1, 2, 3)]
    elif kind == "unlabelled":
        their = [pairs(sf_ds.split(val_strategy="k-fold", val_k_fold=2, k_fold_iter=i, splits=str(path)))
                 for i in (1, 2)]
        calls = [dict(model_type=None, k_fold=2, k_fold_iter=i) for i in (1, 2)]
    else:
        their = [pairs(sf_ds.split(model_type="classification", labels="label", val_strategy="k-fold", val_k_fold=3,
                                   k_fold_iter=i, splits=str(path))) for i in (1, 2, 3)]
        calls = [dict(labels="label", k_fold=3, k_fold_iter=i) for i in (1, 2, 3)]
    before = path.read_bytes()
    assert len(json.loads(before)) == 1
    for call, expected in zip(calls, their):
        with warnings.catch_warnings():
            warnings.simplefilter("error", SplitWarning)  # a reused split of the same slides: nothing to warn about
            assert pairs(ds.split(splits=str(path), seed=5, **call)) == expected
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------------- renumbered categories


def test_entry_numbered_without_the_tfrecordless_slide_is_explained_not_silently_replaced(slideflow, cohort,
                                                                                          tmp_path):
    # Saved from annotations without slide_999: 'normal' was 0. With it, Slideflow (and we) call 'normal' 1.
    path = tmp_path / "splits.json"
    frame = pd.read_csv(cohort["csv"], dtype=str, keep_default_na=False)
    without = frame[frame["slide"] != GHOST["slide"]]
    ours(cohort).__class__(config=cohort["config"], sources=["demo"], tile_px=TILE_PX, tile_um=TILE_UM,
                           annotations=without).split(labels="label", k_fold=3, k_fold_iter=1, splits=str(path))
    [old] = load_splits(path)
    assert old["outcome_labels"] == {"0": "normal", "1": "tumor"}
    with pytest.warns(SplitWarning, match=r"saved split #0 .*other outcome labels.*numbers the categories "
                                          r"\{\"0\": \"normal\", \"1\": \"tumor\"\}.*'benign' come only from "
                                          r"annotated slides outside this split"):
        mine = pairs(ours(cohort).split(labels="label", k_fold=3, k_fold_iter=1, splits=str(path)))
    entries = load_splits(path)
    assert len(entries) == 2 and entries[1]["outcome_labels"]["0"] == "benign"
    # Same inputs, same seed: the new entry is the same partition, only numbered as Slideflow numbers it...
    assert entries[1]["tfrecords"] == old["tfrecords"] and entries[1]["fingerprint"] == old["fingerprint"]
    # ... and it is the one Slideflow reuses.
    before = path.read_bytes()
    got = pairs(theirs(slideflow, cohort).split(model_type="classification", labels="label", val_strategy="k-fold",
                                                val_k_fold=3, k_fold_iter=1, splits=str(path)))
    assert got == mine and path.read_bytes() == before


# ------------------------------------------------------------------------------------------- Slideflow 3's names


def test_slideflow_names_are_aliases(cohort, tmp_path):
    ds = ours(cohort)
    a = pairs(ds.split(labels="label", strategy="k-fold", k_fold=4, k_fold_iter=2, seed=3))
    b = pairs(ds.split("classification", "label", val_strategy="k-fold", val_k_fold=4, k_fold_iter=2, seed=3))
    assert a == b
    c = pairs(ds.split(labels="label", strategy="fixed", fraction=0.25, seed=3))
    assert c == pairs(ds.split(labels="label", val_strategy="fixed", val_fraction=0.25, seed=3))
    assert pairs(ds.split("linear", "score", k_fold=3, k_fold_iter=1)) == \
        pairs(ds.split("regression", "score", k_fold=3, k_fold_iter=1))
    with pytest.raises(SplitError, match="val_strategy is Slideflow 3's name for strategy"):
        ds.split(labels="label", strategy="fixed", val_strategy="k-fold", k_fold_iter=1)
    with pytest.raises(SplitError, match="from_wsi"):
        ds.split(labels="label", k_fold_iter=1, from_wsi=True)
    with pytest.raises(SplitError, match="'classification'"):
        ds.split("survival", "label", k_fold_iter=1)


def test_read_only_reuses_but_never_writes(cohort, tmp_path):
    path = tmp_path / "splits.json"
    ds = ours(cohort)
    fresh = pairs(ds.split(labels="label", k_fold=3, k_fold_iter=1, splits=str(path), read_only=True))
    assert not path.exists()
    saved = pairs(ds.split(labels="label", k_fold=3, k_fold_iter=1, splits=str(path)))
    assert saved == fresh
    before = path.read_bytes()
    assert pairs(ds.split(labels="label", k_fold=3, k_fold_iter=1, splits=str(path), read_only=True)) == saved
    ds.kfold_split(k=4, labels="label", splits=str(path), read_only=True)  # no match: computed, not saved
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------------- the pipeline's step


def test_pipeline_split_step_writes_slideflows_encoding(slideflow, cohort, tmp_path, monkeypatch):
    from slidetiles.pipeline.steps import make_split

    monkeypatch.chdir(tmp_path)
    manifest = ours(cohort).to_manifest(str(tmp_path / "all.json"))
    out = tmp_path / "kfold.json"
    plan = {"strategy": "k-fold", "labels": "label", "k": 3, "seed": 3}
    make_split(manifest=manifest, plan=plan, splits=str(out), png=str(tmp_path / "p.png"), svg=str(tmp_path / "p.svg"))
    first = out.read_bytes()
    [entry] = json.loads(first)
    assert entry["outcome_labels"] == {"0": "benign", "1": "normal", "2": "tumor"}
    make_split(manifest=manifest, plan=plan, splits=str(out), png=str(tmp_path / "p.png"), svg=str(tmp_path / "p.svg"))
    assert out.read_bytes() == first  # a rerun gives the same bytes
    mine = [pairs(p) for p in ours(cohort).kfold_split(k=3, labels="label", splits=str(out), seed=3)]
    assert_slideflow_reuses(slideflow, cohort, out, mine, model_type="classification", labels="label",
                            val_strategy="k-fold", val_k_fold=3)


# ------------------------------------------------------------------------------------------- invariant


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(extra=st.lists(st.text(alphabet="ABCDXYZabc_", min_size=1, max_size=3), max_size=4))
def test_outcome_label_is_the_index_among_all_categories(cohort, extra):
    # Whatever categories slides outside the split add, every stored index names the patient's own label.
    from slidetiles.splits import plan_split

    df = ours(cohort).annotations
    categories = {"subtype": sorted(set(df["subtype"]) | set(extra))}
    plan = plan_split(df, labels="subtype", k_fold=3, seed=1, categories=categories)
    names = plan.entry["outcome_labels"]
    assert list(names.values()) == categories["subtype"]
    label_of = dict(zip(df["patient"], df["subtype"]))
    for patient, record in plan.entry["patients"].items():
        assert names[str(record["outcome_label"])] == label_of[patient]


def test_several_label_columns_as_slideflows_training_code_splits_them(slideflow, cohort, tmp_path):
    # Project.train joins the indices of several categorical outcomes with '-' before calling Dataset.split.
    path = tmp_path / "splits.json"
    mine = [pairs(p) for p in ours(cohort).kfold_split(k=3, labels=["label", "subtype"], splits=str(path), seed=4)]
    [entry] = load_splits(path)
    assert entry["outcome_labels"] == {"label": {"0": "benign", "1": "normal", "2": "tumor"},
                                       "subtype": {"0": "A", "1": "B", "2": "C", "3": "D"}}
    sf_ds = theirs(slideflow, cohort)
    indices, _ = sf_ds.labels(["label", "subtype"])
    split_labels = {slide: "-".join(map(str, v)) for slide, v in indices.items()}
    assert_slideflow_reuses(slideflow, cohort, path, mine, model_type="classification", labels=split_labels,
                            val_strategy="k-fold", val_k_fold=3)
