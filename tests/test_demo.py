"""slidetiles.demo: determinism, realistic sizes, the cohort layout and its annotations."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import slidetiles
from slidetiles.demo import (demo_slide_files, iter_tiles, tile_jpeg, write_demo_slide, write_demo_slides,
                             write_demo_tiles)
from slidetiles.slides.wsi import slide_name
from slidetiles.io.images import check_image, decode_image


def test_tile_jpeg_is_deterministic():
    a = [tile_jpeg(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    assert tile_jpeg(np.random.default_rng(4)) != a[0]
    rng = np.random.default_rng(3)
    assert tile_jpeg(rng) == a[0] and tile_jpeg(rng) != a[0]  # the generator advances


def test_tile_sizes_are_realistic():
    rng = np.random.default_rng(0)
    tiles = [tile_jpeg(rng) for _ in range(40)]
    sizes = np.array([len(t) for t in tiles])
    assert 20_000 <= sizes.mean() <= 30_000, sizes.mean()
    assert sizes.min() >= 12_000 and sizes.max() <= 40_000, (sizes.min(), sizes.max())
    for t in tiles[:5]:
        assert check_image(t, "demo", full=True) == "jpeg"
        assert decode_image(t).shape == (299, 299, 3)
    assert decode_image(tile_jpeg(rng, px=64, quality=50)).shape == (64, 64, 3)


def test_iter_tiles():
    # px=32 keeps the crop pool at its 256-crop cap cheaply, so re-finished pool crops are exercised too.
    tiles = list(iter_tiles(5, 300, px=32))
    assert tiles == list(iter_tiles(5, 300, px=32))
    assert len(set(tiles)) == 300
    assert list(iter_tiles(6, 3, px=32)) != tiles[:3]
    rng = np.random.default_rng(5)
    assert tiles[:3] == [tile_jpeg(rng, px=32) for _ in range(3)]
    assert all(decode_image(t).shape == (32, 32, 3) for t in tiles[-5:])


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_demo_tiles_is_byte_identical(tmp_path):
    kwargs = dict(n_slides=5, n_sites=2, tiles_per_slide=(2, 4), seed=1, px=48)
    first = write_demo_tiles(tmp_path / "a", **kwargs)
    second = write_demo_tiles(tmp_path / "b", **kwargs)
    pd.testing.assert_frame_equal(first, second)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    write_demo_tiles(tmp_path / "a", **kwargs)  # rewriting in place changes nothing, leaves no temp files
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    write_demo_tiles(tmp_path / "c", **{**kwargs, "seed": 2})
    assert tree(tmp_path / "c") != tree(tmp_path / "a")


def test_write_demo_tiles_layout(tmp_path):
    table = write_demo_tiles(tmp_path, n_slides=30, n_sites=3, tiles_per_slide=(3, 6), px=32, tile_um=302)
    assert list(table.columns) == ["patient", "slide", "site", "label"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "annotations.csv"), table)
    assert len(table) == 30 and table["slide"].is_unique
    assert all(re.fullmatch(r"slide_\d{3}", s) for s in table["slide"])
    assert set(table["label"]) == {"tumor", "normal"}
    assert set(table["site"]) == {"site_A", "site_B", "site_C"}
    per_patient = table.groupby("patient")
    assert (per_patient.size() == 2).sum() >= 3
    assert (per_patient[["site", "label"]].nunique() == 1).all().all()  # a patient has one site and one label
    for site, rows in table.groupby("site"):
        assert set(rows["label"]) == {"tumor", "normal"}, site

    stride = 604  # 302 um at 0.5 um/px
    for slide in table["slide"]:
        files = sorted((tmp_path / "tiles" / slide).iterdir())
        assert 3 <= len(files) <= 6
        coords = set()
        for f in files:
            m = re.fullmatch(rf"{slide}-(\d+)-(\d+)\.jpg", f.name)
            assert m, f.name
            x, y = int(m[1]), int(m[2])
            assert (x - stride // 2) % stride == 0 and (y - stride // 2) % stride == 0
            coords.add((x, y))
        assert len(coords) == len(files)


def test_write_demo_tiles_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_demo_tiles(tmp_path, tiles_per_slide=(5, 2))
    with pytest.raises(ValueError):
        write_demo_tiles(tmp_path, n_slides=0)


# ---- demo slides -------------------------------------------------------------------------------------------------


def test_demo_slide_files_mix_the_three_formats():
    files = demo_slide_files(16)
    assert files[0] == "slide_001.svs" and files[3] == "slide_004.ome.tiff" and files[6] == "slide_007.tiff"
    assert [slide_name(f) for f in files] == [f"slide_{i:03d}" for i in range(1, 17)]


def test_demo_slides_are_byte_identical_and_readable(tmp_path):
    files = demo_slide_files(4)
    table = write_demo_slides(tmp_path / "a", n_slides=4, n_sites=2, seed=5)
    for file in files:
        write_demo_slide(tmp_path / "b", file, seed=5)  # one at a time, in any order, as the pipeline's jobs
    for file in files:
        assert (tmp_path / "a" / "slides" / file).read_bytes() == (tmp_path / "b" / "slides" / file).read_bytes()
    write_demo_slide(tmp_path / "c", files[0], seed=6)
    assert (tmp_path / "c" / "slides" / files[0]).read_bytes() != (tmp_path / "a" / "slides" / files[0]).read_bytes()
    # The annotations are the tile demo's for the same arguments.
    assert table.equals(write_demo_tiles(tmp_path / "t", n_slides=4, n_sites=2, tiles_per_slide=(1, 1), seed=5, px=16))
    for file in files:
        wsi = slidetiles.WSI(tmp_path / "a" / "slides" / file, 64, 302)
        assert wsi.mpp == 0.5 and len(wsi.level_dimensions) == 3
        report = wsi.extract_tiles(None)
        assert report.num_tiles >= 10 and report.removed["grayspace"] > 0  # tissue islands on glass


def test_demo_slide_rejects_other_names(tmp_path):
    with pytest.raises(ValueError, match="not a demo slide"):
        write_demo_slide(tmp_path, "other.svs")
    with pytest.raises(ValueError, match="slide_004.ome.tiff"):
        write_demo_slide(tmp_path, "slide_004.svs")
    assert not (tmp_path / "slides").exists()
