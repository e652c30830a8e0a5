"""The report at cohort scale (10,000 fake extraction reports: a light page, thumbnails linked, the table cut with
the whole of it in a TSV) and the extraction drawing (kept and removed tiles where and in the colour they should be).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import slidetiles
from slidetiles.pipeline.report import MAX_TABLE_ROWS, extraction_table, render_report
from slidetiles.pipeline.steps import make_report
from slidetiles.slides import preview
from slidetiles.slides.synthetic import write_synthetic_slide

N_SLIDES = 10_000
#: Size the page must stay under at 10,000 slides (measured: about 105 KB; it took about 4 s on 2 cores).
MAX_PAGE_BYTES = 300_000


def fake_cohort(root: Path, n: int) -> list[str]:
    """``n`` extraction reports in 3 sources, every 500th skipped (no microns per pixel), and a manifest."""
    rng = np.random.default_rng(0)
    reports, tfrecords = [], {}
    for i in range(n):
        source, slide = f"SRC{i % 3}", f"TCGA-{i:05d}"
        grid = int(rng.integers(200, 5000))
        kept = int(rng.integers(1, grid))
        skipped = f"slide {slide} records no microns per pixel" if i % 500 == 7 else None
        if skipped:
            grid = kept = 0
        rest = grid - kept
        removed = {"roi": 0, "qc": rest // 2, "whitespace": rest - rest // 2, "grayspace": 0} if grid else {}
        path = root / "results" / "extraction" / source / f"{slide}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tfrecord = None if skipped else f"tfrecords/{source}/{slide}.tfrecords"
        path.write_text(json.dumps({"source": source, "slide": slide, "num_tiles": kept, "removed": removed,
                                    "skipped": skipped, "tfrecord": tfrecord, "index": None}))
        reports.append(str(path.relative_to(root)))
        if tfrecord:
            tfrecords[tfrecord] = {"slide": slide, "total": kept, "clipped": min(kept, 2000)}
    (root / "results" / "manifests").mkdir(parents=True)
    (root / "results" / "manifests" / "all.json").write_text(json.dumps({"tfrecords": tfrecords}))
    (root / "results" / "manifests" / "all.summary.txt").write_text("Overview\n")
    return reports


def test_report_at_cohort_scale(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reports = fake_cohort(tmp_path, N_SLIDES)
    make_report(manifests=["results/manifests/all.json"], summaries=["results/manifests/all.summary.txt"],
                splits=[], plots=[], html="results/report.html", extractions=reports,
                tiles_tsv="results/extraction/tiles_per_slide.tsv")
    page = Path("results/report.html").read_text()
    assert len(page.encode()) < MAX_PAGE_BYTES, len(page.encode())
    # Charts only are embedded (one per dataset, one for the extraction): no thumbnail, whatever the cohort size.
    assert page.count("data:image") == 2
    links = re.findall(r"<a href='([^']+\.png)'>", page)
    assert len(links) == MAX_TABLE_ROWS and all(link.startswith("extraction/SRC") for link in links)
    rows = re.search(r"<table class='slides'>(.*?)</table>", page, re.S).group(1).count("<tr>")
    assert rows == MAX_TABLE_ROWS + 1  # the header row and the cut table
    assert f"The {MAX_TABLE_ROWS} slides of {N_SLIDES}" in page
    assert "<a href='extraction/tiles_per_slide.tsv'>tiles_per_slide.tsv</a>" in page
    # Skipped slides first, then the fewest kept tiles.
    skipped = {f"extraction/SRC{i % 3}/TCGA-{i:05d}.png" for i in range(7, N_SLIDES, 500)}
    assert set(links[: len(skipped)]) == skipped and "records no microns per pixel" in page

    table = pd.read_csv("results/extraction/tiles_per_slide.tsv", sep="\t", keep_default_na=False)
    assert len(table) == N_SLIDES and list(table[["source", "slide"]].iloc[0]) == ["SRC0", "TCGA-00000"]
    assert (table["grid"] == table["kept"] + table.filter(like="removed_").sum(axis=1)).all()
    assert Path(table["thumbnail"].iloc[0]) == Path("results/extraction/SRC0/TCGA-00000.png")
    skipped = table[table["skipped"] != ""]
    assert len(skipped) == N_SLIDES // 500 and (skipped["kept_fraction"] == "").all()


def test_report_without_slide_sources(tmp_path, monkeypatch):
    """Sources of loose tiles only: no extraction section, the TSV has its header alone."""
    monkeypatch.chdir(tmp_path)
    fake_cohort(tmp_path, 3)
    make_report(manifests=["results/manifests/all.json"], summaries=["results/manifests/all.summary.txt"],
                splits=[], plots=[], html="results/report.html", extractions=[],
                tiles_tsv="results/extraction/tiles_per_slide.tsv")
    page = Path("results/report.html").read_text()
    assert "Slide extraction" not in page and page.count("data:image") == 1
    assert Path("results/extraction/tiles_per_slide.tsv").read_text().startswith("source\tslide\tgrid\tkept\t")


def test_extraction_table_reasons(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"source": "S", "slide": "a", "num_tiles": 3, "removed": {"qc": 1, "new-filter": 2}}))
    b.write_text(json.dumps({"source": "S", "slide": "b", "num_tiles": 0, "removed": {}, "skipped": "unreadable"}))
    table = extraction_table([str(b), str(a)])
    assert list(table["slide"]) == ["a", "b"] and list(table["grid"]) == [6, 0]
    assert table["kept_fraction"].iloc[0] == 0.5 and pd.isna(table["kept_fraction"].iloc[1])
    assert list(table["removed_new-filter"]) == [2, 0] and list(table["removed_roi"]) == [0, 0]
    page = render_report(manifests=[], summaries=[], splits=[], plots=[], extraction=table,
                         page=str(tmp_path / "report.html"))
    assert "<th>new-filter</th>" in page and "<td>unreadable</td><td><a href='b.png'>png</a></td>" in page
    bad = tmp_path / "c.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="c.json: cannot read this extraction report"):
        extraction_table([str(bad)])


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preview") / "s1.svs"
    write_synthetic_slide(path, 2048, 1536, seed=1)
    return path


def blended(under, colour) -> np.ndarray:
    return np.round((1 - preview.FILL_ALPHA) * np.asarray(under, float) + preview.FILL_ALPHA * np.asarray(colour))


def test_draw_extraction_places_tiles(slide, tmp_path):
    wsi = slidetiles.WSI(slide, 64, 64)  # 0.25 um/px: 256 level-0 px a tile, 8 x 6 tiles
    report = wsi.extract_tiles(dry_run=True, max_tiles=10, num_threads=1)
    removed = report.removed_locations
    assert report.num_tiles == 10 and {r: len(c) for r, c in removed.items()} == report.removed
    assert report.num_tiles + sum(report.removed.values()) == 48 and report.removed["max_tiles"] > 0
    assert report.removed["grayspace"] > 0  # the default grayspace filter, glass between the tissue
    path = tmp_path / "s1.png"
    image = preview.draw_extraction(wsi, report, path, width=512)
    assert image.width == 512 and image.height > 384 and (image.height - 384) % preview.LEGEND_ROW == 0
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == image.size and not png.info  # no metadata, no timestamp
        pixels = np.asarray(png.convert("RGB"))
    plain = np.asarray(wsi.thumb(width=512).convert("RGB"))
    # 256 level-0 px at 1/4 scale: the tile of centre (cx, cy) covers thumbnail pixels [cx/4 - 32, cx/4 + 32).
    # The file is a palette PNG: colours are compared to within the palette's rounding, which is far smaller than
    # the distance between two of the drawing's colours.
    for reason, centres in (("kept", report.locations), ("max_tiles", removed["max_tiles"]),
                            ("grayspace", removed["grayspace"])):
        cx, cy = (int(v) // 4 for v in centres[-1])
        colour = preview.COLOURS[reason]
        for y, x in ((cy - 32, cx - 32), (cy + 31, cx + 31)):  # the outline, opaque
            assert np.abs(pixels[y, x].astype(int) - colour).max() <= 8, (reason, pixels[y, x])
        inside = pixels[cy, cx].astype(int)  # the fill, blended over the slide
        distances = {r: np.abs(inside - blended(plain[cy, cx], c)).sum() for r, c in preview.COLOURS.items()}
        assert min(distances, key=distances.get) == reason and distances[reason] <= 24, (reason, distances)
    # The same slide and report, the same bytes.
    again = tmp_path / "again.png"
    preview.draw_extraction(wsi, report, again, width=512)
    assert again.read_bytes() == path.read_bytes()


def test_draw_note(slide, tmp_path):
    damaged = tmp_path / "damaged.svs"
    damaged.write_bytes(b"II*\x00" + b"not a slide " * 10)
    alone = preview.draw_note(tmp_path / "damaged.png", "skipped: " + "cannot open /a/long/path/damaged.svs " * 5,
                              slide_path=damaged)
    assert alone.width == preview.DEFAULT_WIDTH and alone.height >= 3 * preview.LEGEND_ROW
    assert (tmp_path / "damaged.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    over = preview.draw_note(None, "skipped: no microns per pixel", slide_path=slide)
    assert over.size == (512, 384 + preview.LEGEND_ROW)
