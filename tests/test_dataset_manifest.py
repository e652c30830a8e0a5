"""The manifest JSON: shape, byte-identical output, round trip, and staleness of the TFRecords it counted."""

import json
import os

import pytest

from helpers import build_cohort, write_tfrecord
from slidetiles import Dataset
from slidetiles.errors import DatasetError, StaleManifestError


@pytest.fixture
def tree(tmp_path):
    return build_cohort(tmp_path / "data")


def make(tree, **kwargs):
    return Dataset(tfrecords=tree["tfrecords"], tile_px=299, tile_um="10x", annotations=tree["csv"], **kwargs)


def chained(ds):
    return ds.filter(filters={"site": ["A", "C"]}, filter_blank=["flag"], min_tiles=2).clip(9, "patient").balance("label")


def test_manifest_has_the_documented_shape(tree, tmp_path):
    ds = chained(make(tree))
    path = ds.to_manifest(tmp_path / "out" / "manifest.json")
    doc = json.loads(open(path).read())
    assert set(doc) == {
        "format", "version", "tile_px", "tile_um", "label", "sources", "annotations", "filters", "filter_blank",
        "min_tiles", "clip", "balance", "slides", "tfrecords", "unmatched", "base",
    }
    assert doc["format"] == "slidetiles-manifest" and doc["version"] == 1
    assert (doc["tile_px"], doc["tile_um"], doc["label"]) == (299, "10x", "299px_10x")
    assert doc["sources"] == {"dataset": {"slides": None, "roi": None, "tiles": None, "tfrecords": tree["tfrecords"]}}
    assert doc["annotations"]["path"] == tree["csv"] and len(doc["annotations"]["sha256"]) == 64
    assert doc["filters"] == {"site": ["A", "C"]} and doc["filter_blank"] == ["flag"] and doc["min_tiles"] == 2
    assert doc["clip"] == {"max_tiles": 9, "strategy": "patient", "headers": None}
    assert doc["balance"] == {"headers": ["label"], "strategy": "category"}
    # site A or C, flag not blank, >= 2 tiles: s1, s2 (p1), s5, s6, s7, s8 (p4).
    assert sorted(doc["slides"]) == ["s1", "s2", "s5", "s6", "s7", "s8"]
    assert doc["slides"]["s5"] == {"patient": "p4", "slide": "s5", "site": "C", "label": "tumor", "flag": "unknown", "score": "2"}
    entry = doc["tfrecords"][tree["paths"]["s2"]]
    stat = os.stat(tree["paths"]["s2"])
    assert entry["slide"] == "s2" and entry["patient"] == "p1" and entry["total"] == 30
    assert (entry["size"], entry["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    assert set(entry) == {"slide", "patient", "total", "clipped", "weight", "size", "mtime_ns"}
    assert {p: e["clipped"] for p, e in doc["tfrecords"].items()} == {p: e["clipped"] for p, e in ds.manifest().items()}
    assert sum(e["weight"] for e in doc["tfrecords"].values()) == pytest.approx(1.0)
    assert doc["unmatched"] == {"slides_without_tfrecord": [], "tfrecords_without_annotation": [tree["paths"]["x1"]]}


def test_same_dataset_same_bytes(tree, tmp_path):
    a = chained(make(tree)).to_manifest(tmp_path / "a.json")
    b = chained(make(tree, jobs=1)).to_manifest(tmp_path / "b.json")
    data = open(a, "rb").read()
    assert data == open(b, "rb").read()
    assert data.endswith(b"\n") and json.dumps(json.loads(data), sort_keys=True, indent=2).encode() + b"\n" == data
    # Only the manifest is left: the write went through a temporary file that was renamed.
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json", "data"]


def test_round_trip_rebuilds_an_equivalent_dataset(tree, tmp_path):
    ds = chained(make(tree))
    path = ds.to_manifest(tmp_path / "m.json")
    back = Dataset.from_manifest(path)
    assert back.manifest() == ds.manifest()
    assert back.prob_weights == ds.prob_weights
    assert (back.filters, back.filter_blank, back.min_tiles) == (ds.filters, ds.filter_blank, ds.min_tiles)
    assert (back.clipping, back.balancing) == (ds.clipping, ds.balancing)
    assert (back.tile_px, back.tile_um, back.label) == (ds.tile_px, ds.tile_um, ds.label)
    assert back.patients() == ds.patients() and back.slides() == ds.slides()
    assert back.slide_table().equals(ds.slide_table())
    assert back.annotations.set_index("slide").loc["s5", "flag"] == "unknown"
    assert back.unmatched["tfrecords_without_annotation"] == [tree["paths"]["x1"]]
    # And it writes the very same file again.
    again = back.to_manifest(tmp_path / "again.json")
    assert open(again, "rb").read() == open(path, "rb").read()
    assert "manifest" in back.summary(show=False)


def test_manifest_of_a_dataset_chained_further_after_loading(tree, tmp_path):
    path = chained(make(tree)).to_manifest(tmp_path / "m.json")
    back = Dataset.from_manifest(path).filter(filters={"site": ["C"]}).unclip()
    assert back.slides() == ["s5", "s6", "s7", "s8"] and back.num_tiles == 22


def test_rewritten_tfrecord_makes_the_manifest_stale(tree, tmp_path):
    path = make(tree).to_manifest(tmp_path / "m.json")
    write_tfrecord(tree["paths"]["s2"], 31)  # re-extracted with one more tile
    os.unlink(tree["paths"]["s4"])
    with pytest.raises(StaleManifestError) as info:
        Dataset.from_manifest(path)
    err = info.value
    assert err.changed == [tree["paths"]["s2"]] and err.missing == [tree["paths"]["s4"]]
    assert tree["paths"]["s2"] in str(err) and "missing" in str(err) and "re-run the rule" in str(err)
    assert isinstance(err, ValueError)
    Dataset.from_manifest(path, check=False)  # still readable when asked not to check
    assert make(tree).manifest()[tree["paths"]["s2"]]["total"] == 31  # a new Dataset recounts


def test_touched_tfrecord_is_stale_too(tree, tmp_path):
    path = make(tree).to_manifest(tmp_path / "m.json")
    st = os.stat(tree["paths"]["s1"])
    os.utime(tree["paths"]["s1"], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(StaleManifestError, match="s1.tfrecords: size"):
        Dataset.from_manifest(path)


def test_stale_error_pickles(tree):
    import pickle

    err = StaleManifestError("m.json", ["a"], ["b"], "m.json: stale")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.changed, back.missing, str(back)) == ("m.json", ["a"], ["b"], "m.json: stale")


def test_empty_manifest_round_trip(tree, tmp_path):
    ds = make(tree).filter(filters={"site": ["Z"]}).balance("label")
    path = ds.to_manifest(tmp_path / "empty.json")
    back = Dataset.from_manifest(path)
    assert back.manifest() == {} and back.filters == {"site": ["Z"]}
    assert open(back.to_manifest(tmp_path / "again.json"), "rb").read() == open(path, "rb").read()


def test_manifest_without_annotations(tree, tmp_path):
    ds = Dataset(tfrecords=tree["tfrecords"], tile_px=299, tile_um="10x").clip(5)
    doc = json.loads(open(ds.to_manifest(tmp_path / "m.json")).read())
    assert doc["annotations"] == {"path": None, "sha256": None}
    assert doc["tfrecords"][tree["paths"]["x1"]]["patient"] is None
    back = Dataset.from_manifest(tmp_path / "m.json")
    assert back.manifest() == ds.manifest() and back.annotations is None


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a JSON manifest"),
        ('{"format": "other"}', "not a slidetiles manifest"),
        ('{"format": "slidetiles-manifest", "version": 99}', "version 99"),
        ('{"format": "slidetiles-manifest", "version": 1, "tfrecords": {}}', "malformed manifest"),
    ],
)
def test_bad_manifests(tmp_path, content, message):
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        Dataset.from_manifest(path)


def test_edited_weights_are_refused(tree, tmp_path):
    path = make(tree).balance(strategy="tile").to_manifest(tmp_path / "m.json")
    doc = json.loads(open(path).read())
    first = next(iter(doc["tfrecords"].values()))
    first["weight"] = 0.5
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(DatasetError, match="edited"):
        Dataset.from_manifest(path)


def test_user_csv_is_never_modified(tree, tmp_path):
    before = open(tree["csv"], "rb").read(), os.stat(tree["csv"]).st_mtime_ns
    chained(make(tree)).to_manifest(tmp_path / "m.json")
    assert (open(tree["csv"], "rb").read(), os.stat(tree["csv"]).st_mtime_ns) == before


def test_manifest_read_from_another_working_directory(tmp_path, monkeypatch):
    """Relative TFRecord paths are anchored at the recorded base, so a script started elsewhere still finds them."""
    from slidetiles.io.writer import TFRecordWriter

    work = tmp_path / "work"
    (work / "tfr").mkdir(parents=True)
    with TFRecordWriter(work / "tfr" / "s1.tfrecords") as writer:
        writer.write_tile(b"x", "s1", 0, 0)
    monkeypatch.chdir(work)
    ds = Dataset(tfrecords="tfr")
    manifest = ds.to_manifest("results/m.json")
    assert json.loads(open(manifest).read())["base"] == ".."
    assert list(Dataset.from_manifest(manifest).manifest()) == ["tfr/s1.tfrecords"]
    monkeypatch.chdir(tmp_path)
    elsewhere = Dataset.from_manifest(work / "results" / "m.json")
    assert list(elsewhere.manifest()) == [str(work / "tfr" / "s1.tfrecords")]
