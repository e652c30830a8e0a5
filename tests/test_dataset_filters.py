"""Dataset construction, filters and what did not match, against the hand-made cohort of tests/helpers.py."""

import io
import os

import pandas as pd
import pytest
from PIL import Image

from helpers import ORPHANS, RETAINED, TILES, annotations_frame, build_cohort, path_of, write_tfrecord
from slidetiles import Dataset
from slidetiles.errors import DatasetError


def tiles_of(ds):
    return {os.path.basename(p)[: -len(".tfrecords")]: v["clipped"] for p, v in ds.manifest().items()}


def test_cohort_is_what_the_docstring_says(cohort):
    for slide, n in {**TILES, **ORPHANS}.items():
        size = os.path.getsize(path_of(cohort, slide))
        assert (size == 0) == (n == 0)


def test_construction_matches_tfrecords_to_annotations(cohort, cohort_ds):
    ds = cohort_ds
    assert ds.slides() == sorted(RETAINED)
    assert ds.tfrecords() == sorted(path_of(cohort, s) for s in RETAINED)
    assert ds.num_tiles == 10 + 30 + 5 + 20 + 8 + 8 + 4 + 2
    assert ds.manifest()[path_of(cohort, "s2")] == {"total": 30, "clipped": 30}
    assert ds.patients() == {"s1": "p1", "s2": "p1", "s3": "p2", "s4": "p3", "s5": "p4", "s6": "p4", "s7": "p4", "s8": "p4"}
    assert ds.label == "299px_10x" and ds.tile_um == "10x" and ds.tile_px == 299
    assert ds.sources_names == ["dataset"]


def test_unmatched_are_reported_not_silently_dropped(cohort, cohort_ds):
    assert cohort_ds.unmatched == {
        "slides_without_tfrecord": ["s10"],
        "tfrecords_without_annotation": [path_of(cohort, "x1")],
        "empty_tfrecords": [path_of(cohort, "s9")],
    }
    text = cohort_ds.summary(show=False)
    assert "s10" in text and "x1.tfrecords" in text and "s9.tfrecords" in text


def test_annotations_are_strings_of_retained_slides(cohort_ds):
    ann = cohort_ds.annotations
    assert ann["slide"].tolist() == sorted(RETAINED)
    assert all(isinstance(v, str) for v in ann.to_numpy().ravel())
    row = ann.set_index("slide").loc["s5"]
    assert row["flag"] == "unknown" and row["score"] == "2"
    assert ann.set_index("slide").loc["s1", "flag"] == "FALSE"
    assert len(cohort_ds.all_annotations) == 10


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"filters": {"label": ["tumor"]}}, ["s1", "s2", "s5", "s6", "s7", "s8"]),
        ({"filters": {"label": "normal"}}, ["s3", "s4"]),  # a single value works like a one-item list
        ({"filters": {"flag": ["FALSE"]}}, ["s1", "s4", "s7"]),  # s9 is FALSE too, but empty
        ({"filters": {"flag": ["unknown"]}}, ["s5"]),
        ({"filters": {"score": ["0"]}}, ["s1", "s4"]),
        ({"filters": {"score": [0]}}, ["s1", "s4"]),  # non-strings are compared as str(value)
        ({"filters": {"label": ["tumor"], "site": ["C"]}}, ["s5", "s6", "s7", "s8"]),
        ({"filters": {"site": ["Z"]}}, []),
        ({"filter_blank": ["flag"]}, ["s1", "s2", "s4", "s5", "s6", "s7", "s8"]),  # '' is blank
        ({"filter_blank": "score"}, ["s1", "s2", "s4", "s5", "s6", "s7", "s8"]),  # ' ' is blank
        ({"min_tiles": 8}, ["s1", "s2", "s4", "s5", "s6"]),
        ({"min_tiles": 31}, []),
        ({"filters": {"label": ["tumor"]}, "min_tiles": 5}, ["s1", "s2", "s5", "s6"]),
    ],
)
def test_filters_keep_hand_computed_slides(cohort_ds, kwargs, expected):
    out = cohort_ds.filter(**kwargs)
    assert out.slides() == expected
    assert out.num_tiles == sum(TILES[s] for s in expected)


def test_filters_given_at_construction_equal_filter(cohort, cohort_ds):
    ds = Dataset(
        tfrecords=cohort["tfrecords"], tile_px=299, tile_um="10x", annotations=cohort["csv"],
        filters={"label": ["tumor"]}, filter_blank=["flag"], min_tiles=5,
    )
    chained = cohort_ds.filter(filters={"label": ["tumor"]}, filter_blank=["flag"], min_tiles=5)
    assert ds.manifest() == chained.manifest()
    assert ds.slides() == ["s1", "s2", "s5", "s6"]


def test_empty_result_is_a_usable_dataset(cohort_ds):
    empty = cohort_ds.filter(filters={"site": ["Z"]})
    assert empty.manifest() == {} and empty.num_tiles == 0 and empty.tfrecords() == []
    assert empty.clip(5, strategy="patient").balance("label").manifest() == {}
    assert empty.balance(strategy="tile").prob_weights == {}
    assert "Slides:" in empty.summary(show=False)
    assert empty.unmatched["slides_without_tfrecord"] == []


def test_filters_accumulate_and_replace_per_column(cohort_ds):
    ds = cohort_ds.filter(filters={"label": ["tumor"]}).filter(filters={"site": ["A"]})
    assert ds.filters == {"label": ["tumor"], "site": ["A"]}
    assert ds.slides() == ["s1", "s2"]
    ds = ds.filter(filters={"site": ["C"]})  # replaces the site filter
    assert ds.slides() == ["s5", "s6", "s7", "s8"]
    ds = ds.filter(filter_blank="flag").filter(filter_blank=["score", "flag"])
    assert ds.filter_blank == ["flag", "score"]
    assert ds.filter({"label": ["normal"]}).filters["label"] == ["normal"]  # positional filters dict


def test_remove_filter_removes_both_kinds(cohort_ds):
    ds = cohort_ds.filter(filters={"label": ["tumor"], "site": ["A"]}, filter_blank=["flag", "score"], min_tiles=9)
    assert ds.slides() == ["s1", "s2"]
    out = ds.remove_filter(filters=["site"], filter_blank=["flag"])
    assert out.filters == {"label": ["tumor"]} and out.filter_blank == ["score"] and out.min_tiles == 9
    assert out.slides() == ["s1", "s2"]
    out = out.remove_filter(filter_blank="score", min_tiles=True)
    assert out.slides() == ["s1", "s2", "s5", "s6", "s7", "s8"]
    assert ds.filters == {"label": ["tumor"], "site": ["A"]}  # the original is unchanged


def test_remove_filter_that_is_not_active_names_the_active_ones(cohort_ds):
    ds = cohort_ds.filter(filters={"label": ["tumor"]}, filter_blank=["flag"])
    with pytest.raises(DatasetError, match=r"no active filter on 'site'.*\['label'\]"):
        ds.remove_filter(filters=["site"])
    with pytest.raises(DatasetError, match=r"'score' is not in the active filter_blank \['flag'\]"):
        ds.remove_filter(filter_blank=["score"])


def test_clear_filters_keeps_clip_and_balance(cohort_ds):
    ds = cohort_ds.filter(filters={"label": ["tumor"]}, min_tiles=9).clip(10).balance(strategy="slide")
    cleared = ds.clear_filters()
    assert cleared.filters == {} and cleared.filter_blank == [] and cleared.min_tiles == 0
    assert cleared.slides() == sorted(RETAINED)
    assert cleared.clipping == {"max_tiles": 10, "strategy": None, "headers": None}
    assert cleared.balancing == {"headers": None, "strategy": "slide"}


@pytest.mark.parametrize(
    "call",
    [
        lambda ds: ds.filter(filters={"grade": ["1"]}),
        lambda ds: ds.filter(filter_blank=["grade"]),
        lambda ds: ds.clip(5, strategy="category", headers=["grade"]),
        lambda ds: ds.balance("grade"),
        lambda ds: ds.labels("grade"),
    ],
)
def test_unknown_column_is_an_error_listing_the_columns(cohort_ds, call):
    with pytest.raises(DatasetError, match=r"'grade'.*\['patient', 'slide', 'site', 'label', 'flag', 'score'\]"):
        call(cohort_ds)


def test_bad_filter_arguments(cohort_ds):
    with pytest.raises(DatasetError, match="min_tiles=-1"):
        cohort_ds.filter(min_tiles=-1)
    with pytest.raises(DatasetError, match="dict"):
        cohort_ds.filter(filters=["label"])


def test_dataframe_annotations_give_the_same_dataset(cohort, cohort_ds):
    frame = annotations_frame()
    frame.loc[frame["slide"] == "s3", "flag"] = float("nan")  # a real missing value is blank
    ds = Dataset(tfrecords=cohort["tfrecords"], tile_px=299, tile_um="10x", annotations=frame)
    assert ds.manifest() == cohort_ds.manifest()
    assert ds.filter(filter_blank="flag").slides() == cohort_ds.filter(filter_blank="flag").slides()
    assert ds.annotations_file is None


def test_numeric_dataframe_columns_become_strings(cohort):
    frame = annotations_frame()
    frame["count"] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    frame["ok"] = [True, False] * 5
    ds = Dataset(tfrecords=cohort["tfrecords"], tile_px=299, tile_um="10x", annotations=frame)
    assert ds.filter(filters={"count": ["0", "3"]}).slides() == ["s1", "s4"]
    assert ds.filter(filters={"ok": ["False"]}).slides() == ["s2", "s4", "s6", "s8"]


def test_without_annotations_every_tfrecord_is_kept(cohort):
    ds = Dataset(tfrecords=cohort["tfrecords"], tile_px=299, tile_um="10x")
    assert ds.slides() == sorted([*RETAINED, "x1"])
    assert ds.unmatched["tfrecords_without_annotation"] == []
    assert ds.unmatched["empty_tfrecords"] == [path_of(cohort, "s9")]
    with pytest.raises(DatasetError, match="no annotations loaded"):
        ds.filter(filters={"label": ["tumor"]})
    with pytest.raises(DatasetError, match="no annotations"):
        ds.balance(strategy="patient")
    assert ds.balance(strategy="tile").prob_weights[path_of(cohort, "x1")] == 7 / 94


def test_tfrecords_of_one_source_and_unknown_source(cohort_ds):
    assert cohort_ds.tfrecords(source="dataset") == cohort_ds.tfrecords()
    with pytest.raises(DatasetError, match="no such source"):
        cohort_ds.tfrecords(source="other")


def test_manifest_key_name_and_unfiltered(cohort, cohort_ds):
    ds = cohort_ds.filter(filters={"site": ["A"]}).clip(12)
    assert ds.manifest(key="name") == {"s1": {"total": 10, "clipped": 10}, "s2": {"total": 30, "clipped": 12}}
    everything = ds.manifest(filter=False)
    assert len(everything) == 10 and everything[path_of(cohort, "x1")] == {"total": 7, "clipped": 7}
    assert everything[path_of(cohort, "s2")] == {"total": 30, "clipped": 12}


def test_labels_categorical_and_continuous(cohort_ds):
    labels, unique = cohort_ds.labels("label")
    assert unique == ["normal", "tumor"]
    assert labels["s1"] == 1 and labels["s3"] == 0
    names, _ = cohort_ds.labels("label", format="name")
    assert names["s4"] == "normal"
    ds = cohort_ds.filter(filter_blank="score")
    values, unique = ds.labels("score", use_float=True)
    assert values["s2"] == [1.5] and unique == []
    assert ds.is_float("score") and not ds.is_float("label")
    auto, _ = ds.labels(["score", "label"], use_float="auto")
    assert auto["s6"] == [3.0, 1]
    with pytest.raises(DatasetError, match=r"s3=' '"):
        cohort_ds.labels("score", use_float=True)
    assigned, _ = cohort_ds.labels("label", assign={"label": {"tumor": 7, "normal": 3}})
    assert assigned["s1"] == 7 and assigned["s3"] == 3


def test_one_patient_with_many_slides(cohort_ds):
    p4 = cohort_ds.filter(filters={"patient": ["p4"]})
    assert p4.slides() == ["s5", "s6", "s7", "s8"]
    assert set(p4.patients().values()) == {"p4"}
    assert p4.balance(strategy="patient").prob_weights == {p: 0.25 for p in p4.tfrecords()}


def test_rebuild_and_build_index(tmp_path):
    paths = build_cohort(tmp_path)
    ds = Dataset(tfrecords=paths["tfrecords"], tile_px=299, tile_um="10x", annotations=paths["csv"], jobs=1)
    index = paths["paths"]["s2"][: -len(".tfrecords")] + ".index.npz"
    before = os.stat(index).st_mtime_ns
    ds.build_index()  # everything current: nothing rewritten
    assert os.stat(index).st_mtime_ns == before
    os.unlink(index)
    ds.build_index()
    assert os.path.exists(index)
    ds.rebuild_index(jobs=1)
    assert Dataset(tfrecords=paths["tfrecords"], tile_px=299, tile_um="10x", annotations=paths["csv"]).manifest() == ds.manifest()


def test_img_format(tmp_path, jpeg_tiles):
    folder = tmp_path / "tfr" / "64px_302um"
    write_tfrecord(folder / "a.tfrecords", 3, tiles=jpeg_tiles)
    write_tfrecord(folder / "b.tfrecords", 2, tiles=jpeg_tiles[3:])
    ds = Dataset(tfrecords=tmp_path / "tfr", tile_px=64, tile_um=302)
    assert ds.img_format == "jpeg"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    write_tfrecord(folder / "c.tfrecords", 1, tiles=[buf.getvalue()])
    mixed = Dataset(tfrecords=tmp_path / "tfr", tile_px=64, tile_um=302)
    with pytest.raises(DatasetError, match="mix image formats"):
        mixed.img_format
    assert mixed.filter  # still usable
    assert Dataset(tfrecords=tmp_path / "tfr", tile_px=64, tile_um=302, annotations=pd.DataFrame(
        {"patient": ["p"], "slide": ["c"]})).img_format == "png"
