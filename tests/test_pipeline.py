"""The Snakemake pipeline, run for real: the demo end to end, reproducible splits, bad input, lint."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import slidetiles
from slidetiles.demo import iter_tiles

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"


def snakemake(workdir, *args, configfile=None, timeout=600):
    """Run the repository's workflow in ``workdir``; returns the CompletedProcess (output in .stdout)."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--cores", "2"]
    if configfile is not None:
        command += ["--configfile", str(configfile)]
    return subprocess.run(
        command + list(args), cwd=workdir, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def digests(folder: Path, pattern: str) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob(pattern))}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo_run")
    result = snakemake(workdir, configfile=TEST_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir


def test_default_config_dry_run():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1"], cwd=REPO, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for rule, count in [("demo_slide", 30), ("demo_annotations", 1), ("extract", 30), ("manifest", 2), ("split", 3)]:
        assert any(line.split() == [rule, str(count)] for line in out.splitlines()), (rule, out[-2000:])


def test_demo_artifacts(demo_run):
    results = demo_run / "results"
    config = yaml.safe_load(TEST_CONFIG.read_text())
    # The demo starts from slides: every format slidetiles reads, each extracted to a TFRecord with a thumbnail.
    slides = sorted(p.name for p in (demo_run / "resources" / "demo" / "slides").iterdir())
    assert len(slides) == config["demo"]["n_slides"] and {".svs", ".tiff"} <= {Path(s).suffix for s in slides}
    assert any(s.endswith(".ome.tiff") for s in slides)
    tfrecords = sorted((results / "tfrecords" / "demo" / "64px_302um").glob("*.tfrecords"))
    assert len(tfrecords) == config["demo"]["n_slides"]
    assert len(list((results / "extraction" / "demo").glob("*.png"))) == len(slides)
    extraction = json.loads((results / "extraction" / "demo" / "slide_001.json").read_text())
    assert extraction["num_tiles"] >= 4 and extraction["removed"]["qc"] > 0
    assert all(p.with_name(p.name.replace(".tfrecords", ".index.npz")).exists() for p in tfrecords)
    tfr = slidetiles.TFRecord(str(tfrecords[0]), create_index=False)
    assert tfr.img_format == "jpeg" and tfr.locations is not None
    ds = slidetiles.Dataset.from_manifest(str(results / "manifests" / "all.json"))
    assert sorted(ds.slides()) == [p.stem for p in tfrecords]
    assert abs(sum(ds.prob_weights.values()) - 1) < 1e-9
    for plan in ("kfold2", "site3", "boot"):
        entries = json.loads((results / "splits" / f"{plan}.json").read_text())
        assert len(entries) == 1 and entries[0]["seed"] == 3
        validated = sorted(s for fold in entries[0]["validation"].values() for s in fold)
        if plan != "boot":
            assert validated == ds.slides()  # every slide validated exactly once
        assert (results / "splits" / f"{plan}.png").stat().st_size > 0
    site = json.loads((results / "splits" / "site3.json").read_text())[0]
    assert sorted(site["sites"]) == ["site_A", "site_B", "site_C"] and "solver" in site
    report = (results / "report.html").read_text()
    assert report.count("data:image/png;base64") >= 4 and "Stage timings" in report
    assert (results / "benchmarks" / "manifest" / "all.tsv").exists()
    assert (demo_run / "logs" / "manifest" / "all.log").exists()
    assert not list(results.rglob(".*.tmp-*")), "no temporary files left behind"


def test_forced_split_rerun_is_byte_identical(demo_run):
    before = digests(demo_run / "results" / "splits", "*.json")
    result = snakemake(demo_run, "--forcerun", "split", configfile=TEST_CONFIG)
    assert result.returncode == 0, result.stderr
    assert digests(demo_run / "results" / "splits", "*.json") == before


def test_changing_a_seed_reruns_only_that_split(demo_run, tmp_path):
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["splits"]["kfold2"]["seed"] = 4
    changed = tmp_path / "config.yaml"
    changed.write_text(yaml.safe_dump(config))
    result = snakemake(demo_run, "-n", configfile=changed)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert any(line.split() == ["split", "1"] for line in out.splitlines()), out[-3000:]
    outputs = [line.strip() for line in out.splitlines() if line.strip().startswith("output:")]
    assert any("results/splits/kfold2.json" in line for line in outputs)
    assert not any("results/splits/site3.json" in line or "manifests" in line for line in outputs)


def test_lint_and_format():
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    snakefmt = shutil.which("snakefmt") or str(Path(sys.executable).with_name("snakefmt"))
    fmt = subprocess.run([snakefmt, "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


# -- bad input ---------------------------------------------------------------------------------------------------------
def make_cohort(root: Path, slides: dict[str, int], *, annotate=None, on_bad_input="error") -> Path:
    """Hand-made tiles folders + annotations + config for the workflow; returns the config path."""
    tiles = iter_tiles(5, sum(slides.values()) or 1, px=32)
    for slide, n in slides.items():
        folder = root / "tiles" / slide
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{slide}-{i * 32}-0.jpg").write_bytes(next(tiles))
    annotated = list(slides) if annotate is None else annotate
    rows = ["patient,slide,label"] + [f"p{i},{s},{'ab'[i % 2]}" for i, s in enumerate(annotated)]
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    config = {
        "tile_px": 32,
        "tile_um": 100,
        "sources": {"lab": {"tiles": "tiles", "tfrecords": "tfrecords"}},
        "annotations": "annotations.csv",
        "on_bad_input": on_bad_input,
        "datasets": {"all": {}},
        "splits": {},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def failure_text(result) -> str:
    return result.stdout + result.stderr


def test_missing_tiles_folder(tmp_path):
    config = make_cohort(tmp_path, {"s1": 2})
    shutil.rmtree(tmp_path / "tiles")
    result = snakemake(tmp_path, "-n", configfile=config)
    assert result.returncode != 0
    assert "sources.lab.tiles: the tiles folder 'tiles' does not exist" in failure_text(result)


def test_config_error_names_key_and_allowed_values(tmp_path):
    config = make_cohort(tmp_path, {"s1": 2})
    data = yaml.safe_load(config.read_text())
    data["splits"] = {"x": {"dataset": "all", "strategy": "random"}}
    config.write_text(yaml.safe_dump(data))
    result = snakemake(tmp_path, "-n", configfile=config)
    assert result.returncode != 0
    text = failure_text(result)
    assert "random" in text and "k-fold-preserved-site" in text


def test_empty_slide_folder_stops_its_job(tmp_path):
    config = make_cohort(tmp_path, {"s1": 2, "s2": 0})
    result = snakemake(tmp_path, configfile=config)
    assert result.returncode != 0
    log = (tmp_path / "logs" / "tfrecord" / "tfrecords" / "32px_100um" / "s2.log").read_text()
    assert "tiles/s2: no tile images" in log
    assert "Traceback" not in log


def test_unreadable_image_named_or_skipped(tmp_path):
    config = make_cohort(tmp_path, {"s1": 3, "s2": 2})
    bad = tmp_path / "tiles" / "s1" / "s1-32-0.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    result = snakemake(tmp_path, configfile=config)
    assert result.returncode != 0
    log = (tmp_path / "logs" / "tfrecord" / "tfrecords" / "32px_100um" / "s1.log").read_text()
    assert "s1-32-0.jpg" in log and "Traceback" not in log
    assert not (tmp_path / "tfrecords" / "32px_100um" / "s1.tfrecords").exists()

    data = yaml.safe_load(config.read_text())
    data["on_bad_input"] = "skip"
    config.write_text(yaml.safe_dump(data))
    result = snakemake(tmp_path, configfile=config)
    assert result.returncode == 0, failure_text(result)
    assert len(slidetiles.TFRecord(str(tmp_path / "tfrecords" / "32px_100um" / "s1.tfrecords"))) == 2
    log = (tmp_path / "logs" / "tfrecord" / "tfrecords" / "32px_100um" / "s1.log").read_text()
    assert "skipped 1 unreadable tile(s)" in log


def test_unannotated_slide_named_or_skipped(tmp_path):
    config = make_cohort(tmp_path, {"s1": 2, "s2": 2}, annotate=["s1"])
    result = snakemake(tmp_path, configfile=config)
    assert result.returncode != 0
    log = (tmp_path / "logs" / "manifest" / "all.log").read_text()
    assert "no row in annotations.csv: tfrecords/32px_100um/s2.tfrecords" in log

    data = yaml.safe_load(config.read_text())
    data["on_bad_input"] = "skip"
    config.write_text(yaml.safe_dump(data))
    result = snakemake(tmp_path, configfile=config)
    assert result.returncode == 0, failure_text(result)
    assert slidetiles.Dataset.from_manifest(str(tmp_path / "results" / "manifests" / "all.json")).slides() == ["s1"]
    assert "TFRecords without an annotation" in (tmp_path / "results" / "manifests" / "all.summary.txt").read_text()


def test_slide_name_that_breaks_paths(tmp_path):
    config = make_cohort(tmp_path, {"s1": 2})
    (tmp_path / "tiles" / "bad{name}").mkdir()
    result = snakemake(tmp_path, "-n", configfile=config)
    assert result.returncode != 0
    assert "'bad{name}' cannot be used as a file name" in failure_text(result)
    data = yaml.safe_load(config.read_text())
    data["on_bad_input"] = "skip"
    config.write_text(yaml.safe_dump(data))
    result = snakemake(tmp_path, "-n", configfile=config)
    assert result.returncode == 0, failure_text(result)


def test_snakemake_report(demo_run):
    result = snakemake(demo_run, "--report", "snakemake_report.html", configfile=TEST_CONFIG)
    assert result.returncode == 0, failure_text(result)
    assert (demo_run / "snakemake_report.html").stat().st_size > 10_000
