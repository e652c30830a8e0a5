"""A user's own config, run the way the README says: a fresh checkout, `snakemake --cores N --configfile ...`.

Nothing of the demo (config/config.yaml) may leak into a run configured by the user; the README's "regenerate a
published split" command rebuilds a split byte for byte; a run killed with SIGKILL is recovered with the
README's commands and ends with the same splits as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slidetiles
from slidetiles.demo import iter_tiles
from helpers import job_counts

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Written from config/README.md alone, for data that has nothing in common with the demo: two hospitals,
# TCGA-style slide names (with dashes before the coordinates), an outcome `subtype`, a site column `center`.
USER_CONFIG = """\
tile_px: 32
tile_um: 128
sources:
  HOSP_A:
    tiles: {data}/HOSP_A/tiles
    tfrecords: tfrecords/HOSP_A
  HOSP_B:
    tiles: {data}/HOSP_B/tiles
    tfrecords: tfrecords/HOSP_B
annotations: {data}/annotations.csv
datasets:
  lung:
    filters: {{subtype: [LUAD, LUSC]}}
    filter_blank: [subtype]
    balance: {{headers: [subtype], strategy: category}}
splits:
  site_cv:
    dataset: lung
    strategy: k-fold-preserved-site
    labels: subtype
    site_column: center
    k: 3
    seed: 42
    time_limit: 2
  holdout:
    dataset: lung
    strategy: fixed
    labels: subtype
    fraction: 0.34
    seed: 11
"""
# (source, center, patient, slide, subtype): every center has both subtypes; P4 has two slides.
SLIDES = [
    ("HOSP_A", "ctr1", "P1", "TCGA-05-4244-01Z", "LUAD"),
    ("HOSP_A", "ctr1", "P2", "TCGA-05-4249-01Z", "LUSC"),
    ("HOSP_A", "ctr2", "P3", "TCGA-21-1070-01Z", "LUAD"),
    ("HOSP_A", "ctr2", "P4", "TCGA-21-1071-01Z", "LUSC"),
    ("HOSP_A", "ctr2", "P4", "TCGA-21-1071-02Z", "LUSC"),
    ("HOSP_B", "ctr3", "P5", "TCGA-33-4532-01Z", "LUAD"),
    ("HOSP_B", "ctr3", "P6", "TCGA-33-4533-01Z", "LUSC"),
]
TILES_PER_SLIDE = 3


def fresh_checkout(dest: Path) -> Path:
    """The repository as a user gets it: its files (tracked and new, not ignored), no results, no .snakemake."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
        check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_symlink():  # the root's `profiles` link to workflow/profiles, as git checks it out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(source), dest / name)
        elif source.is_file():  # files deleted in the working tree are still listed by --cached
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def readme_command(checkout: Path, *args: str, timeout=600) -> subprocess.CompletedProcess:
    """`snakemake <args>` in the checkout, as typed from the README (the venv's snakemake first on PATH)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(["snakemake", *args], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=timeout)


def output(result) -> str:
    return result.stdout + result.stderr



def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """The user's data, outside any checkout: tile folders of two sources and an annotations CSV."""
    data = tmp_path_factory.mktemp("user_data")
    tiles = iter_tiles(11, len(SLIDES) * TILES_PER_SLIDE, px=32)
    rows = ["patient,slide,subtype,center"]
    for source, center, patient, slide, subtype in SLIDES:
        folder = data / source / "tiles" / slide
        folder.mkdir(parents=True)
        for i in range(TILES_PER_SLIDE):
            (folder / f"{slide}-{256 * i + 128}-384.jpg").write_bytes(next(tiles))
        rows.append(f"{patient},{slide},{subtype},{center}")
    (data / "annotations.csv").write_text("\n".join(rows) + "\n")
    return data


def write_user_config(path: Path, cohort: Path, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(USER_CONFIG.format(data=cohort) + extra)
    return path


@pytest.fixture(scope="module")
def user_run(tmp_path_factory, cohort):
    """A fresh checkout, the user's my_config.yaml, and the README's command; returns (checkout, result)."""
    checkout = fresh_checkout(tmp_path_factory.mktemp("checkout"))
    write_user_config(checkout / "my_config.yaml", cohort)
    result = readme_command(checkout, "--cores", "2", "--configfile", "my_config.yaml")
    assert result.returncode == 0, output(result)[-5000:]
    return checkout, result


def test_user_config_is_the_whole_run(user_run, cohort):
    checkout, result = user_run
    text = output(result)
    assert "Using workflow specific profile profiles/default" in text
    assert job_counts(text) == {"tfrecord": 7, "tfrecord_index": 7, "manifest": 1, "split": 2, "report": 1,
                                "all": 1, "total": 19}, text[-3000:]
    assert "config/config.yaml" not in text and "demo" not in text

    # Exactly the user's artifacts, and nothing of the demo's (its tiles, TFRecords, datasets or splits).
    assert not (checkout / "resources").exists()
    assert files_under(checkout / "results" / "manifests") == [
        "lung.json", "lung.summary.txt", "lung.tiles_per_slide.tsv"]
    assert files_under(checkout / "results" / "splits") == [
        "holdout.json", "holdout.png", "holdout.svg", "site_cv.json", "site_cv.png", "site_cv.svg"]
    assert sorted(p.name for p in (checkout / "results").iterdir()) == [
        "benchmarks", "extraction", "manifests", "report.html", "splits"]
    # Tile folders only: the report's table of extracted slides is a header.
    assert files_under(checkout / "results" / "extraction") == ["tiles_per_slide.tsv"]
    for source in ("HOSP_A", "HOSP_B"):
        expected = sorted(f"{slide}.{ext}" for s, *_, slide, _ in SLIDES if s == source
                          for ext in ("tfrecords", "index.npz"))
        assert sorted(p.name for p in (checkout / "tfrecords" / source / "32px_128um").iterdir()) == expected

    ds = slidetiles.Dataset.from_manifest(str(checkout / "results" / "manifests" / "lung.json"))
    assert ds.slides() == sorted(slide for *_, slide, _ in SLIDES)
    record = slidetiles.TFRecord(str(checkout / "tfrecords" / "HOSP_A" / "32px_128um" / "TCGA-05-4244-01Z.tfrecords"))
    assert len(record) == TILES_PER_SLIDE
    assert sorted(map(tuple, record.locations)) == [(128, 384), (384, 384), (640, 384)]

    site_cv = json.loads((checkout / "results" / "splits" / "site_cv.json").read_text())[0]
    assert sorted(site_cv["sites"]) == ["ctr1", "ctr2", "ctr3"]
    validated = sorted(s for fold in site_cv["validation"].values() for s in fold)
    assert validated == ds.slides()
    # Preserved-site folds: each center's slides are validated in one fold.
    center_of = {slide: center for _, center, _, slide, _ in SLIDES}
    for fold in site_cv["validation"].values():
        assert len({center_of[s] for s in fold}) == 1, site_cv["validation"]
    assert input_files_untouched(cohort)


def input_files_untouched(cohort: Path) -> bool:
    """The user's folders hold what the fixture wrote and nothing else (no markers, temporaries or outputs)."""
    expected = ["annotations.csv"] + sorted(
        f"{source}/tiles/{slide}/{slide}-{256 * i + 128}-384.jpg"
        for source, _, _, slide, _ in SLIDES for i in range(TILES_PER_SLIDE))
    return files_under(cohort) == sorted(expected)


def test_demo_disabled_in_a_user_config(tmp_path, cohort):
    # `demo: {enabled: false}` used to fail on the demo's missing folder, merged in from config/config.yaml.
    checkout = fresh_checkout(tmp_path / "checkout")
    write_user_config(checkout / "my_config.yaml", cohort, "demo: {enabled: false}\n")
    result = readme_command(checkout, "-n", "--cores", "2", "--configfile", "my_config.yaml")
    assert result.returncode == 0, output(result)[-3000:]
    counts = job_counts(output(result))
    assert "demo_slide" not in counts and counts["tfrecord"] == len(SLIDES) and counts["split"] == 2, counts


def test_config_overrides_still_edit_the_demo(tmp_path):
    # Without --configfile the run is the demo, and --config edits it key by key.
    checkout = fresh_checkout(tmp_path / "checkout")
    result = readme_command(checkout, "-n", "--cores", "1", "--config", "tile_px=64")
    assert result.returncode == 0, output(result)[-3000:]
    text = output(result)
    counts = job_counts(text)
    assert counts["demo_slide"] == 30 and counts["extract"] == 30 and counts["split"] == 3, counts
    assert "results/extraction/demo/slide_030.json" in text and '"tile_px":64' in text and '"tile_px":299' not in text


@pytest.mark.slow
def test_regenerate_a_published_split(tmp_path, user_run, cohort):
    checkout, _ = user_run
    published = checkout / "results" / "splits"
    site_cv, holdout = sha256(published / "site_cv.json"), (published / "holdout.json").stat().st_mtime_ns

    # In the checkout that made it: only that split re-runs, and rewrites the same bytes.
    result = readme_command(checkout, "results/splits/site_cv.json", "--cores", "2", "--configfile",
                            "my_config.yaml", "--forcerun", "split")
    assert result.returncode == 0, output(result)[-3000:]
    assert job_counts(output(result)) == {"split": 1, "total": 1}, output(result)[-3000:]
    assert sha256(published / "site_cv.json") == site_cv
    assert (published / "holdout.json").stat().st_mtime_ns == holdout

    # A reader with the paper's config, the data and a fresh checkout: the README's command, exactly.
    fresh = fresh_checkout(tmp_path / "fresh")
    write_user_config(fresh / "paper" / "config.yaml", cohort)
    result = readme_command(fresh, "results/splits/site_cv.json", "--cores", "all", "--configfile",
                            "paper/config.yaml", "--forcerun", "split")
    assert result.returncode == 0, output(result)[-3000:]
    assert job_counts(output(result)) == {"tfrecord": 7, "tfrecord_index": 7, "manifest": 1, "split": 1,
                                          "total": 16}, output(result)[-3000:]
    assert sha256(fresh / "results" / "splits" / "site_cv.json") == site_cv
    assert not (fresh / "resources").exists() and not (fresh / "results" / "splits" / "holdout.json").exists()
    assert input_files_untouched(cohort)


# -- recovery after a killed run ------------------------------------------------------------------------------------
# The demo at a small size, as a user's config: slides -> TFRecords -> ... -> report. The run is killed once the
# first slide's TFRecord is there, while other slides are being written or extracted.
KILL_CONFIG = """\
tile_px: 32
tile_um: 302
demo: {enabled: true, source: demo, out_dir: resources/demo, n_slides: 5, n_sites: 2, seed: 5}
sources:
  demo: {slides: resources/demo/slides, tfrecords: results/tfrecords/demo}
annotations: resources/demo/annotations.csv
datasets:
  all: {filter_blank: [label]}
splits:
  cv:
    dataset: all
    strategy: k-fold
    labels: label
    k: 2
    seed: 9
"""


@pytest.mark.slow
def test_killed_run_recovers_with_the_readme_commands(tmp_path):
    reference = fresh_checkout(tmp_path / "reference")
    (reference / "my_config.yaml").write_text(KILL_CONFIG)
    result = readme_command(reference, "--cores", "2", "--configfile", "my_config.yaml")
    assert result.returncode == 0, output(result)[-3000:]

    checkout = fresh_checkout(tmp_path / "killed")
    (checkout / "my_config.yaml").write_text(KILL_CONFIG)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    tfrecords = checkout / "results" / "tfrecords" / "demo" / "32px_302um"
    with open(tmp_path / "killed.log", "w") as log:
        # Its own process group, so that the kill takes Snakemake and its running jobs, as a lost node does.
        run = subprocess.Popen(["snakemake", "--cores", "2", "--configfile", "my_config.yaml"], cwd=checkout,
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while run.poll() is None and not (tfrecords.is_dir() and any(tfrecords.glob("*.tfrecords"))):
                time.sleep(0.005)
            os.killpg(run.pid, signal.SIGKILL)
        finally:
            run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (checkout / "results" / "splits").exists()
    # Nothing half-written at a final path: every slide and TFRecord there is whole (killed writers leave at
    # most hidden temporaries, which the next writer of the same file removes).
    for path in [*(checkout / "resources" / "demo" / "slides").glob("*"), *tfrecords.glob("*.tfrecords")]:
        if not path.name.startswith("."):
            reference_path = reference / path.relative_to(checkout)
            assert sha256(path) == sha256(reference_path), path

    # The README: the same command again; it names the lock, which --unlock (same config) removes; then again.
    result = readme_command(checkout, "--cores", "2", "--configfile", "my_config.yaml")
    assert result.returncode != 0 and "--unlock" in output(result), output(result)[-3000:]
    result = readme_command(checkout, "--unlock", "--configfile", "my_config.yaml")
    assert result.returncode == 0, output(result)[-3000:]
    result = readme_command(checkout, "--cores", "2", "--configfile", "my_config.yaml")
    assert result.returncode == 0, output(result)[-3000:]

    for folder in ("results/splits", "results/tfrecords/demo/32px_302um", "results/extraction", "resources/demo"):
        done = {name: sha256(checkout / folder / name) for name in files_under(checkout / folder)
                if not name.endswith(".npz")}
        assert done == {name: sha256(reference / folder / name) for name in files_under(reference / folder)
                        if not name.endswith(".npz")}, folder
    assert files_under(checkout / "results") == files_under(reference / "results")


def test_the_config_readme_example_is_a_complete_config(tmp_path, cohort):
    # The complete example in config/README.md, pointed at real data, is a run of its own.
    readme = (REPO / "config" / "README.md").read_text()
    example = next(block for block in readme.split("```yaml\n")[1:] if block.startswith("tile_px"))
    example = example.split("```", 1)[0]
    config = example.replace("/data/tiles/LAB", str(cohort / "HOSP_A" / "tiles")).replace(
        "/data/tfrecords/LAB", "tfrecords/LAB").replace("/data/annotations.csv", str(cohort / "annotations.csv"))
    checkout = fresh_checkout(tmp_path / "checkout")
    (checkout / "my_config.yaml").write_text(config)
    result = readme_command(checkout, "-n", "--cores", "32", "--configfile", "my_config.yaml")
    assert result.returncode == 0, output(result)[-3000:]
    hosp_a = sum(source == "HOSP_A" for source, *_ in SLIDES)
    assert job_counts(output(result)) == {"tfrecord": hosp_a, "tfrecord_index": hosp_a, "manifest": 1, "split": 1,
                                          "report": 1, "all": 1, "total": 2 * hosp_a + 4}, output(result)[-3000:]
