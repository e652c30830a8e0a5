"""Sources configs (datasets.json, YAML, dict), tile sizes and labels, and Slideflow project folders."""

import json
import os

import pytest
import yaml

from helpers import annotations_frame, write_tfrecord
import slidetiles
from slidetiles import Dataset, load_project
from slidetiles.dataset import tile_label
from slidetiles.tile_size import parse_tile_um
from slidetiles.errors import DatasetError


@pytest.mark.parametrize(
    "px, um, label",
    [(299, "10x", "299px_10x"), (299, "10X", "299px_10x"), (299, " 2.5x", "299px_2.5x"), (299, 302, "299px_302um"),
     (512, "302um", "512px_302um"), (224, "128", "224px_128um")],
)
def test_tile_label(px, um, label):
    assert tile_label(px, um) == label


@pytest.mark.parametrize("um", ["10", "ten", "10xx", "x", "0x", "-5", 0, -3, 10.5, True, None, "10 um x", "1e3x"])
def test_malformed_tile_um_is_named(um):
    if um == "10":  # a plain number string means microns
        assert parse_tile_um(um) == 10
        return
    with pytest.raises(DatasetError, match=r"tile_um=" + repr(um).replace("(", r"\(").replace(".", r"\.")):
        tile_label(299, um)


@pytest.mark.parametrize("px", [0, -1, "299", 299.0, True])
def test_malformed_tile_px_is_named(px):
    with pytest.raises(DatasetError, match="tile_px="):
        tile_label(px, 302)


def test_tile_size_needs_both(tmp_path):
    with pytest.raises(DatasetError, match="give both"):
        Dataset(tfrecords=tmp_path, tile_px=299)
    with pytest.raises(DatasetError, match=r"tile_um='tenx'"):
        Dataset(tfrecords=tmp_path, tile_px=299, tile_um="tenx")


@pytest.fixture
def two_sources(tmp_path):
    """Sources s_a (slides a1, a2) and s_b (b1), 299px_10x, plus a config file in JSON and YAML."""
    for source, slides in {"s_a": {"a1": 3, "a2": 4}, "s_b": {"b1": 5}}.items():
        for slide, n in slides.items():
            write_tfrecord(tmp_path / source / "tfr" / "299px_10x" / f"{slide}.tfrecords", n)
    config = {
        name: {"slides": str(tmp_path / name / "slides"), "roi": str(tmp_path / name / "roi"),
               "tiles": str(tmp_path / name / "tiles"), "tfrecords": str(tmp_path / name / "tfr")}
        for name in ("s_a", "s_b")
    }
    (tmp_path / "datasets.json").write_text(json.dumps(config))
    (tmp_path / "datasets.yaml").write_text(yaml.safe_dump(config))
    import pandas as pd

    pd.DataFrame({"patient": ["pa", "pa", "pb"], "slide": ["a1", "a2", "b1"], "label": ["x", "y", "x"]}).to_csv(
        tmp_path / "annotations.csv", index=False
    )
    return tmp_path, config


@pytest.mark.parametrize("config_name", ["datasets.json", "datasets.yaml", None])
def test_all_sources_by_default(two_sources, config_name):
    root, config = two_sources
    cfg = str(root / config_name) if config_name else config
    ds = Dataset(cfg, tile_px=299, tile_um="10x", annotations=str(root / "annotations.csv"))
    assert ds.sources_names == ["s_a", "s_b"]
    assert ds.slides() == ["a1", "a2", "b1"] and ds.num_tiles == 12
    assert ds.config == (cfg if config_name else None)
    assert ds.tfrecords(source="s_b") == [os.path.join(config["s_b"]["tfrecords"], "299px_10x", "b1.tfrecords")]
    assert ds.sources["s_a"]["label"] == "299px_10x"


def test_sources_select_and_unknown_source(two_sources):
    root, _ = two_sources
    ds = Dataset(str(root / "datasets.json"), "s_b", tile_px=299, tile_um="10x", annotations=str(root / "annotations.csv"))
    assert ds.slides() == ["b1"]
    assert ds.unmatched["slides_without_tfrecord"] == ["a1", "a2"]
    with pytest.raises(DatasetError, match=r"no source named 'nope'.*\['s_a', 's_b'\]"):
        Dataset(str(root / "datasets.json"), ["s_a", "nope"], tile_px=299, tile_um="10x")


def test_slide_in_two_sources_names_both_paths(two_sources):
    root, config = two_sources
    dup = write_tfrecord(root / "s_b" / "tfr" / "299px_10x" / "a1.tfrecords", 2)
    with pytest.raises(DatasetError, match=r"'a1'.*s_a.*a1\.tfrecords.*s_b.*a1\.tfrecords") as info:
        Dataset(str(root / "datasets.json"), tile_px=299, tile_um="10x")
    assert dup in str(info.value)
    assert Dataset(str(root / "datasets.json"), ["s_b"], tile_px=299, tile_um="10x").slides() == ["a1", "b1"]


def test_a_folder_shared_by_two_sources_is_read_once(two_sources):
    root, config = two_sources
    config["s_c"] = dict(config["s_a"])
    ds = Dataset(config, tile_px=299, tile_um="10x")
    assert ds.slides() == ["a1", "a2", "b1"]


def test_missing_label_folder_is_reported(two_sources):
    root, _ = two_sources
    ds = Dataset(str(root / "datasets.json"), tile_px=299, tile_um="20x")
    assert ds.tfrecords() == []
    assert "no TFRecord folder" in ds.summary(show=False)


def test_config_and_paths_together_is_an_error(two_sources):
    root, _ = two_sources
    with pytest.raises(DatasetError, match="not both"):
        Dataset(str(root / "datasets.json"), tfrecords=str(root), tile_px=299, tile_um="10x")
    with pytest.raises(DatasetError, match="no data to load"):
        Dataset(tile_px=299, tile_um="10x")


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "cannot parse"), ('["a"]', "mapping of source name"), ('{"s": "path"}', "source 's' must map")],
)
def test_bad_config_files(tmp_path, content, message):
    (tmp_path / "datasets.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        Dataset(str(tmp_path / "datasets.json"), tile_px=299, tile_um="10x")
    with pytest.raises(DatasetError, match="not found"):
        Dataset(str(tmp_path / "nope.json"), tile_px=299, tile_um="10x")


def test_without_tile_size_tfrecords_are_read_from_the_folder_itself(tmp_path):
    write_tfrecord(tmp_path / "flat" / "s1.tfrecords", 3)
    assert Dataset(tfrecords=tmp_path / "flat").manifest() == {str(tmp_path / "flat" / "s1.tfrecords"): {"total": 3, "clipped": 3}}


def test_summary_tables(two_sources, capsys):
    root, config = two_sources
    os.makedirs(config["s_a"]["roi"])
    (root / "s_a" / "roi" / "a2.csv").write_text("ROI_name,X_base,Y_base\n")
    ds = Dataset(str(root / "datasets.json"), tile_px=299, tile_um="10x", annotations=str(root / "annotations.csv"))
    text = ds.clip(4).summary()
    assert capsys.readouterr().out.strip() == text.strip()
    for expected in ("Overview:", "Configuration file:", str(root / "datasets.json"), "Tile size (px):", "299",
                     "Tile size (um):", "10x", "Filters:", "Filter Blank:", "Min Tiles:", "Sources:", "s_a", "s_b",
                     "299px_10x", "Number of tiles in TFRecords: 11 (of 12 before clipping)", "Annotation columns:",
                     "['patient', 'slide', 'label']", "Annotated slides without a TFRecord"):
        assert expected in text
    lines = text.splitlines()
    assert any(line.startswith("│ Slides with ROIs:") and "│ 1 " in line for line in lines)
    assert any(line.startswith("│ Patients:") and "│ 2 " in line for line in lines)
    assert ds.rois() == [str(root / "s_a" / "roi" / "a2.csv")]


# -- Slideflow project folders -------------------------------------------------------------------------------------
def make_project(root, settings, tfrecords):
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(settings))
    (root / "datasets.json").write_text(json.dumps({
        "TCGA": {"slides": "/nonexistent/slides", "roi": "/nonexistent/roi", "tiles": "/nonexistent/tiles",
                 "tfrecords": str(tfrecords / "tcga")},
        "Ext": {"slides": None, "roi": None, "tiles": None, "tfrecords": str(tfrecords / "ext")},
    }))
    annotations_frame().to_csv(root / "annotations.csv", index=False)


@pytest.fixture
def project(tmp_path):
    data = tmp_path / "data"
    write_tfrecord(data / "tcga" / "299px_302um" / "s1.tfrecords", 4)
    write_tfrecord(data / "tcga" / "299px_302um" / "s2.tfrecords", 6)
    write_tfrecord(data / "ext" / "299px_302um" / "s4.tfrecords", 9)
    write_tfrecord(data / "tcga" / "299px_10x" / "s1.tfrecords", 1)
    return tmp_path, data


@pytest.mark.parametrize(
    "annotations, dataset_config",
    [("./annotations.csv", "./datasets.json"), ("annotations.csv", "datasets.json"),
     ("$ROOT/annotations.csv", "$ROOT/datasets.json"), (None, None)],
)
def test_load_project_opens_a_slideflow_project_unchanged(project, annotations, dataset_config):
    tmp_path, data = project
    root = tmp_path / "proj"
    settings = {"name": "MyProject", "annotations": annotations, "dataset_config": dataset_config,
                "sources": ["TCGA"], "models_dir": "./models", "eval_dir": "./eval"}
    if annotations is None:  # absolute paths
        settings.update(annotations=str(root / "annotations.csv"), dataset_config=str(root / "datasets.json"))
    make_project(root, settings, data)
    before = sorted(os.listdir(root))
    P = load_project(root)
    assert P.name == "MyProject" and P.sources == ["TCGA"]
    assert os.path.samefile(P.annotations, root / "annotations.csv")
    assert os.path.samefile(P.dataset_config, root / "datasets.json")
    assert P.models_dir == os.path.join(str(root), "models")
    ds = P.dataset(tile_px=299, tile_um=302)
    assert ds.slides() == ["s1", "s2"] and ds.num_tiles == 10
    assert P.dataset(299, "10x").manifest() == {str(data / "tcga" / "299px_10x" / "s1.tfrecords"): {"total": 1, "clipped": 1}}
    both = P.dataset(tile_px=299, tile_um=302, sources=["TCGA", "Ext"], filters={"label": ["normal"]})
    assert both.slides() == ["s4"]
    assert sorted(os.listdir(root)) == before  # nothing created in the project folder


def test_load_project_errors(tmp_path, project):
    with pytest.raises(DatasetError, match="not a Slideflow project"):
        load_project(tmp_path)
    with pytest.raises(DatasetError, match="project folder not found"):
        load_project(tmp_path / "nope")
    _, data = project
    root = tmp_path / "proj"
    make_project(root, {"annotations": "./missing.csv", "dataset_config": "./datasets.json", "sources": ["TCGA"]}, data)
    with pytest.raises(DatasetError, match="missing.csv.*not found"):
        load_project(root).dataset(299, 302)
    assert load_project(root).dataset(299, 302, annotations=annotations_frame()).slides() == ["s1", "s2"]


def test_public_names():
    assert slidetiles.Dataset is Dataset and slidetiles.load_project is load_project
    assert slidetiles.dataset.tile_label is tile_label
