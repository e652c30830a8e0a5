"""Dataset.split / kfold_split on a real small cohort (demo tiles -> TFRecords -> Dataset)."""

import json

import pytest

import slidetiles
from slidetiles.demo import write_demo_tiles
from slidetiles.errors import SplitError
from slidetiles.io import write_tfrecords_multi


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    write_demo_tiles(root, n_slides=14, n_sites=3, tiles_per_slide=(3, 5), seed=3, px=32)
    write_tfrecords_multi(root / "tiles", root / "tfrecords" / "32px_302um")
    return root


def dataset(root):
    return slidetiles.Dataset(
        tfrecords=str(root / "tfrecords"), tile_px=32, tile_um=302, annotations=str(root / "annotations.csv")
    )


def patients(ds):
    return set(ds.patients().values())


@pytest.mark.parametrize("strategy", ["k-fold", "k-fold-preserved-site"])
def test_split_is_patient_level_and_complete(cohort, strategy):
    ds = dataset(cohort)
    train, val = ds.split(labels="label", strategy=strategy, k_fold=3, k_fold_iter=2, seed=1)
    assert not patients(train) & patients(val)
    assert sorted(train.slides() + val.slides()) == ds.slides()
    if strategy == "k-fold-preserved-site":
        sites = lambda d: set(d.annotations["site"])  # noqa: E731
        assert not sites(train) & sites(val)


def test_kfold_split_yields_every_fold_once(cohort):
    ds = dataset(cohort)
    folds = list(ds.kfold_split(k=3, labels="label", seed=5))
    assert len(folds) == 3
    validated = [s for _, val in folds for s in val.slides()]
    assert sorted(validated) == ds.slides()
    assert ds.num_tiles == dataset(cohort).num_tiles  # nothing mutated


def test_split_saved_and_reused(cohort, tmp_path):
    ds = dataset(cohort)
    path = tmp_path / "splits.json"
    first = ds.split(labels="label", strategy="fixed", fraction=0.3, splits=str(path), seed=9)
    saved = path.read_bytes()
    again = ds.split(labels="label", strategy="fixed", fraction=0.3, splits=str(path), seed=9)
    assert path.read_bytes() == saved and len(json.loads(saved)) == 1
    assert first[1].slides() == again[1].slides()


def test_split_errors(cohort):
    ds = dataset(cohort)
    with pytest.raises(SplitError, match="k_fold_iter"):
        ds.split(labels="label", k_fold=3)
    with pytest.raises(SplitError):
        ds.split(labels="label", k_fold=3, k_fold_iter=4)
    with pytest.raises(SplitError, match="unknown split strategy"):
        ds.split(labels="label", strategy="random", k_fold_iter=1)


def test_none_strategy_trains_on_everything(cohort):
    ds = dataset(cohort)
    train, val = ds.split(strategy="none")
    assert train.slides() == ds.slides() and val.slides() == []
