"""Sources with `slides`: whole-slide images -> TFRecords -> indexes -> manifests -> splits -> report, for real.

Tiny synthetic slides (Aperio SVS, OME-TIFF, plain TIFF, a TIFF without microns per pixel, a blank one), a config
written from config/README.md, and the library called directly on the same slides as the reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import slidetiles
from slidetiles.slides import preview
from slidetiles.slides.synthetic import write_synthetic_slide
from helpers import job_counts

REPO = Path(__file__).resolve().parents[1]
W, H = 2048, 1536
LABEL = "64px_64um"
# slide -> (file name, how it is written)
SLIDES = {
    "s1": "s1.svs",
    "s2": "s2.svs",
    "s3": "s3.ome.tiff",
    "s4": "s4.tiff",
    "nompp": "nompp.tiff",
    "blank": "blank.tif",
    "damaged": "damaged.svs",
}
#: Slides without a TFRecord in the end (skipped with on_bad_input: skip).
NO_TILES = ("blank", "damaged")
ROI = "roi_name,x_base,y_base\nA,100,100\nA,1300,150\nA,1200,1100\nA,150,1000\n"
CONFIG = """\
tile_px: 64
tile_um: 64
sources:
  SCANNER:
    slides: {data}/slides
    roi: {data}/roi
    tfrecords: tfrecords/SCANNER
{mpp}annotations: {data}/annotations.csv
on_bad_input: {on_bad_input}
extraction:
  whitespace_fraction: 0.9
datasets:
  all: {{filter_blank: [label]}}
splits:
  cv: {{dataset: all, labels: label, k: 2, seed: 1}}
"""
MPP_OVERRIDE = "    mpp_overrides: {nompp: 0.5}\n"


def snakemake(workdir, config, *args, timeout=600):
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--cores", "2",
               "--configfile", str(config), *args]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})



def write_config(path: Path, data: Path, *, mpp: bool, on_bad_input: str) -> Path:
    path.write_text(CONFIG.format(data=data, mpp=MPP_OVERRIDE if mpp else "", on_bad_input=on_bad_input))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slides_data")
    slides = root / "slides"
    write_synthetic_slide(slides / SLIDES["s1"], W, H, seed=1)
    write_synthetic_slide(slides / SLIDES["s2"], W, H, seed=2)
    write_synthetic_slide(slides / SLIDES["s3"], W, H, kind="ome", seed=3)
    write_synthetic_slide(slides / SLIDES["s4"], W, H, kind="plain", seed=4)
    rng = np.random.default_rng(0)
    # No OpenSlide/Aperio MPP, no OME, no resolution tags: the config must give it.
    tifffile.imwrite(slides / SLIDES["nompp"], rng.integers(0, 255, (1024, 1024, 3), np.uint8), tile=(256, 256),
                     photometric="rgb", resolutionunit=1)
    # Uniform grey glass at 0.25 um/px: every tile is grayspace, none is left.
    tifffile.imwrite(slides / SLIDES["blank"], np.full((1024, 1024, 3), 200, np.uint8), tile=(256, 256),
                     photometric="rgb", resolution=(40000, 40000), resolutionunit="CENTIMETER")
    # A TIFF header and nothing readable: found at parse time like any slide (nothing is opened then).
    (slides / SLIDES["damaged"]).write_bytes(b"II*\x00" + b"not a slide " * 100)
    (slides / "notes.txt").write_text("not a slide")
    (root / "roi").mkdir()
    (root / "roi" / "s2.csv").write_text(ROI)
    rows = ["patient,slide,label"] + [f"p{i},{s},{'ab'[i % 2]}" for i, s in enumerate(SLIDES)]
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return root


def reference(data: Path, out: Path, slide: str, mpp=None):
    """The library called directly, as a Python user would, with the same options as the config."""
    wsi = slidetiles.WSI(data / "slides" / SLIDES[slide], 64, 64, roi_dir=data / "roi", mpp=mpp)
    return wsi.extract_tiles(tfrecord_dir=out, whitespace_fraction=0.9, num_threads=1)


def test_missing_mpp_and_empty_slide_named(data, tmp_path):
    config = write_config(tmp_path / "config.yaml", data, mpp=False, on_bad_input="error")
    result = snakemake(tmp_path, config, "--keep-going")
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "slide nompp" in text and "sources.SCANNER.mpp" in text and "sources.SCANNER.mpp_overrides" in text
    assert "slide blank" in text and "no tile left after filtering" in text and "on_bad_input: skip" in text
    assert "slide damaged of source SCANNER" in text and "damaged.svs" in text
    label_dir = tmp_path / "tfrecords" / "SCANNER" / LABEL
    for slide in ("nompp", *NO_TILES):
        assert not (label_dir / f"{slide}.tfrecords").exists() and not (label_dir / f"{slide}.index.npz").exists()
    assert not list(label_dir.glob(".*"))  # no temporary file left behind
    assert (label_dir / "s1.tfrecords").exists()  # the good slides went on (--keep-going)
    assert not (tmp_path / "results" / "manifests" / "all.json").exists()


def test_slides_end_to_end(data, tmp_path):
    config = write_config(tmp_path / "config.yaml", data, mpp=True, on_bad_input="skip")
    dry = snakemake(tmp_path, config, "-n")  # no slide is opened at parse time: the damaged one has its job too
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert job_counts(dry.stdout)["extract"] == len(SLIDES)

    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr
    label_dir = tmp_path / "tfrecords" / "SCANNER" / LABEL
    assert sorted(p.name for p in label_dir.iterdir()) == sorted(
        f"{s}{ext}" for s in SLIDES if s not in NO_TILES for ext in (".tfrecords", ".index.npz")
    )
    ref_dir = tmp_path / "reference"
    for slide in SLIDES:
        if slide in NO_TILES:
            continue
        ref = reference(data, ref_dir, slide, mpp=0.5 if slide == "nompp" else None)
        ours = slidetiles.TFRecord(str(label_dir / f"{slide}.tfrecords"))
        theirs = slidetiles.TFRecord(ref.tfrecord)
        assert len(ours) == len(theirs) == ref.num_tiles > 0
        assert ours.locations == theirs.locations == [tuple(c) for c in ref.locations.tolist()]
        assert (label_dir / f"{slide}.tfrecords").read_bytes() == Path(ref.tfrecord).read_bytes()
        report = json.loads((tmp_path / "results" / "extraction" / "SCANNER" / f"{slide}.json").read_text())
        assert report["num_tiles"] == ref.num_tiles and report["skipped"] is None
    # The ROI of s2 was used: fewer tiles than the slide without it.
    assert len(slidetiles.TFRecord(str(label_dir / "s2.tfrecords"))) < len(
        slidetiles.WSI(data / "slides" / "s2.svs", 64, 64).coord)

    # The blank slide: skipped and logged, no TFRecord at the final path, the rest of the run went on.
    blank = json.loads((tmp_path / "results" / "extraction" / "SCANNER" / "blank.json").read_text())
    assert blank["num_tiles"] == 0 and "no tile left" in blank["skipped"] and blank["tfrecord"] is None
    assert "no tile left" in (tmp_path / "logs" / "extract" / "SCANNER" / "blank.log").read_text()
    damaged = json.loads((tmp_path / "results" / "extraction" / "SCANNER" / "damaged.json").read_text())
    assert "damaged.svs" in damaged["skipped"] and damaged["tfrecord"] is None
    manifest = slidetiles.Dataset.from_manifest(str(tmp_path / "results" / "manifests" / "all.json"))
    assert sorted(Path(p).name for p in manifest.tfrecords()) == sorted(
        f"{s}.tfrecords" for s in SLIDES if s not in NO_TILES)
    assert (tmp_path / "results" / "splits" / "cv.json").exists()
    check_thumbnails_and_report(tmp_path)

    again = snakemake(tmp_path, config, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout

    # A deleted thumbnail, asked for, is drawn again by its slide's extract job (then put back).
    thumbnail = tmp_path / "results" / "extraction" / "SCANNER" / "s3.png"
    os.replace(thumbnail, tmp_path / "s3.png")
    redraw = snakemake(tmp_path, config, "-n", str(thumbnail.relative_to(tmp_path)))
    assert job_counts(redraw.stdout) == {"extract": 1, "total": 1}, redraw.stdout
    os.replace(tmp_path / "s3.png", thumbnail)

    # An edited ROI re-extracts its slide only (the same outline, one vertex more on an edge).
    (data / "roi" / "s2.csv").write_text(ROI + "A,125,550\n")
    edited = snakemake(tmp_path, config, "-n")
    assert job_counts(edited.stdout)["extract"] == 1

    # A TFRecord deleted after its extraction: named with the way to extract it again, which works.
    (label_dir / "s1.tfrecords").unlink()
    lost = snakemake(tmp_path, config, "-n")
    report_path = os.path.join("results", "extraction", "SCANNER", "s1.json")
    assert lost.returncode != 0 and f"though {report_path} records" in lost.stdout + lost.stderr
    (tmp_path / report_path).unlink()
    again = snakemake(tmp_path, config, "-n")
    assert again.returncode == 0 and job_counts(again.stdout)["extract"] == 2, again.stdout + again.stderr


def check_thumbnails_and_report(workdir: Path) -> None:
    """Every slide has its thumbnail PNG (the slide's aspect above the legend; a note alone for the file that does
    not open), and the report links each from its table of tiles per slide, never embedding one."""
    extraction = workdir / "results" / "extraction"
    for slide in SLIDES:
        with Image.open(extraction / "SCANNER" / f"{slide}.png") as png:
            assert png.format == "PNG" and png.width == preview.DEFAULT_WIDTH, slide
            if slide == "damaged":
                assert png.height % preview.LEGEND_ROW == 0
                continue
            w, h = (W, H) if slide.startswith("s") else (1024, 1024)
            legend = png.height - round(png.width * h / w)
            assert 0 < legend <= 10 * preview.LEGEND_ROW and legend % preview.LEGEND_ROW == 0, (slide, png.size)
            if slide == "s2":  # the tiles outside its ROI outlined in the ROI colour (within the palette's rounding)
                pixels = np.asarray(png.convert("RGB")).astype(int)
                assert (np.abs(pixels - preview.COLOURS["roi"]).max(axis=-1) <= 8).any()
    page = (workdir / "results" / "report.html").read_text()
    assert "Slide extraction" in page and "<a href='extraction/tiles_per_slide.tsv'>" in page
    assert page.count("data:image") == 3  # the dataset's and the extraction's charts, the split's plot
    for slide in SLIDES:
        assert f"<a href='extraction/SCANNER/{slide}.png'>png</a>" in page
        assert f"<tr><td>{slide}</td><td>SCANNER</td>" in page
    assert "no tile left after filtering" in page
    table = (extraction / "tiles_per_slide.tsv").read_text().splitlines()
    assert len(table) == len(SLIDES) + 1 and table[0].startswith("source\tslide\tgrid\tkept\t")


def test_two_files_of_one_slide_name(data, tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a.svs", "a.tiff"):
        os.link(data / "slides" / "s1.svs", slides / name)
    (tmp_path / "roi").mkdir()
    (tmp_path / "annotations.csv").write_text("patient,slide,label\np1,a,x\n")
    config = write_config(tmp_path / "config.yaml", tmp_path, mpp=False, on_bad_input="error")
    result = snakemake(tmp_path, config, "-n")
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "'a.svs' and 'a.tiff' are both slide 'a'" in text and "sources.SCANNER.slides" in text



def test_parse_time_config_errors(data, tmp_path):
    """A slide in a tiles source and a slides source, an mpp_overrides key that is no slide: named, no job run."""
    (tmp_path / "tiles" / "s1").mkdir(parents=True)
    (tmp_path / "tiles" / "s1" / "s1-32-32.png").write_bytes(b"")
    config = write_config(tmp_path / "config.yaml", data, mpp=False, on_bad_input="error")
    text = config.read_text().replace("sources:\n", "sources:\n  TILES: {tiles: tiles, tfrecords: tfrecords/TILES}\n")
    config.write_text(text)
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode != 0
    assert "slide 's1' is in two sources (TILES and SCANNER)" in result.stdout + result.stderr

    config.write_text(CONFIG.format(data=data, mpp="    mpp_overrides: {nompp: 0.5, s9: 0.5}\n",
                                    on_bad_input="error"))
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode != 0
    assert "sources.SCANNER.mpp_overrides: 's9' is no slide of" in result.stdout + result.stderr
