"""Dataset.torch / Dataset.tensorflow and loaders_from_artifacts on a real cohort (manifest + splits JSON)."""

import os

import numpy as np
import pytest

import slidetiles
from slidetiles.demo import write_demo_tiles
from slidetiles.errors import StaleManifestError
from slidetiles.loaders import MissingLabelError
from slidetiles.io import write_tfrecords_multi
from slidetiles.splits import plan_split


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    write_demo_tiles(root, n_slides=9, n_sites=3, tiles_per_slide=(3, 6), seed=4, px=32)
    write_tfrecords_multi(root / "tiles", root / "tfrecords" / "32px_302um")
    ds = slidetiles.Dataset(tfrecords=str(root / "tfrecords"), tile_px=32, tile_um=302,
                            annotations=str(root / "annotations.csv")).clip(4).balance("label")
    manifest = ds.to_manifest(root / "manifest.json")
    splits = root / "splits.json"
    plan_split(ds.annotations, labels="label", strategy="k-fold", k_fold=3, splits=str(splits), seed=1)
    return root, ds, manifest, str(splits)


def collect(loader):
    slides, labels, n = [], [], 0
    for images, batch_labels, batch_slides in loader:
        images = np.asarray(images)
        n += images.shape[0]
        labels += np.asarray(batch_labels).tolist()
        slides += [s.decode() if isinstance(s, bytes) else str(s) for s in np.asarray(batch_slides).tolist()]
    return n, slides, labels


def test_torch_finite_epoch_reads_clipped_tiles_once(artifacts):
    _, ds, _, _ = artifacts
    loader = ds.torch(labels="label", batch_size=5, num_workers=2, infinite=False, incl_slidenames=True, seed=0)
    n, slides, labels = collect(loader)
    assert n == ds.num_tiles == sum(v["clipped"] for v in ds.manifest().values())
    expected, unique = ds.labels("label")
    assert unique == ["normal", "tumor"]
    assert all(label == expected[slide] for slide, label in zip(slides, labels))


def test_loaders_from_artifacts_split_the_fold(artifacts):
    _, ds, manifest, splits = artifacts
    for framework in ("torch", "tensorflow"):
        train, val = slidetiles.loaders_from_artifacts(
            manifest, splits, fold=2, labels="label", framework=framework, batch_size=4, infinite=False,
            incl_slidenames=True, seed=3,
        )
        n_train, train_slides, train_labels = collect(train)
        n_val, val_slides, val_labels = collect(val)
        assert not set(train_slides) & set(val_slides)
        assert set(train_slides) | set(val_slides) == set(ds.slides())
        assert n_train + n_val == ds.num_tiles
        expected, _ = ds.labels("label")  # encoded on the whole manifest: both sides agree
        assert all(expected[s] == label for s, label in zip(train_slides + val_slides, train_labels + val_labels))


def test_changed_tfrecord_refused(artifacts, tmp_path):
    root, ds, manifest, splits = artifacts
    victim = ds.tfrecords()[0]
    stat = os.stat(victim)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        with pytest.raises(StaleManifestError, match=os.path.basename(victim)):
            slidetiles.loaders_from_artifacts(manifest, splits, fold=1, labels="label")
    finally:
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_missing_label_is_an_error_before_the_first_batch(artifacts):
    _, ds, _, _ = artifacts
    frame = ds.all_annotations.copy()
    frame.loc[0, "label"] = ""
    blanked = slidetiles.Dataset(tfrecords=os.path.dirname(os.path.dirname(ds.tfrecords()[0])), tile_px=32,
                                 tile_um=302, annotations=frame)
    with pytest.raises(MissingLabelError, match=frame.loc[0, "slide"]):
        blanked.torch(labels="label", batch_size=4)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_example_training_script(artifacts, framework):
    import subprocess
    import sys
    from pathlib import Path

    _, _, manifest, splits = artifacts
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_example.py"
    result = subprocess.run(
        [sys.executable, str(script), "--framework", framework, "--manifest", str(manifest), "--split", splits,
         "--fold", "1", "--batch-size", "4", "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{framework} epoch 1:" in result.stdout and "validation accuracy" in result.stdout
