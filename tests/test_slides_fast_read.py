"""JPEG-compressed TIFF levels read by decoding each source tile once (slidetiles.slides.tiffjpeg): the same pixels
as libvips' loader on every slide kind and JPEG variant, each tile decoded once, memory bounded, damaged tiles
named, and the same TFRecord bytes as the libvips path."""

import os

import imagecodecs
import numpy as np
import pytest
import tifffile

from slidetiles.errors import SlideFormatError
from slidetiles.slides.reader import open_slide
from slidetiles.slides.synthetic import write_synthetic_slide
from slidetiles.slides.tiffjpeg import JpegLevels
from slidetiles.slides.wsi import WSI

W, H = 1600, 1200


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast_read")
    return {
        kind: write_synthetic_slide(root / name, W, H, kind=kind, levels=(1, 4, 16), seed=5)
        for kind, name in (("aperio", "f_aperio.svs"), ("ome", "f_ome.ome.tiff"), ("plain", "f_plain.tiff"))
    }


def _libvips_only(path):
    reader = open_slide(path)
    reader._jpeg = JpegLevels(reader.path, {})
    return reader


def _regions(w, h):
    """Whole level, unaligned regions across tile boundaries, and regions past the edges (padded)."""
    yield 0, 0, w, h
    yield 37, 11, min(w - 37, 301), min(h - 11, 257)
    yield w // 3, h // 3, w // 3, h // 4
    yield w - 50, h - 40, 100, 90
    yield -20, -10, 64, 64


def _assert_same_as_libvips(path):
    fast, slow = open_slide(path), _libvips_only(path)
    assert fast._jpeg.levels, "no level taken by the fast path"
    for level, (w, h) in enumerate(fast.level_dimensions):
        for x, y, rw, rh in _regions(w, h):
            got, want = fast.read(level, x, y, rw, rh), slow.read(level, x, y, rw, rh)
            assert np.array_equal(got, want), (path, level, (x, y, rw, rh))
            vips = np.asarray(fast.read_vips(level, x, y, rw, rh))
            assert np.array_equal(vips, want)
    # Every level passed the reader's own check, so it was read by the fast path, not by libvips' fallback.
    assert fast._checked == {level: True for level in range(fast.level_count)}


@pytest.mark.parametrize("kind", ["aperio", "ome", "plain"])
def test_pixels_equal_libvips_on_every_level(slides, kind):
    _assert_same_as_libvips(slides[kind].path)


def _segments(data):
    """(marker, whole segment) of a JPEG stream up to its scan, then (0xDA, scan to the end)."""
    pos, out = 2, []
    while data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append((data[pos + 1], data[pos : pos + 2 + length]))
        pos += 2 + length
    out.append((0xDA, data[pos:]))
    return out


def _write_jpeg_tiff(path, pixels, photometric, tables, markers, tile=256, subsampling="420"):
    """A one-level tiled TIFF of JPEG tiles written as given: photometric 'rgb' (untransformed RGB components,
    Aperio's layout) or 'ycbcr'; with ``tables``, the quantisation and Huffman tables moved to a shared JPEGTables
    tag (abbreviated tile streams); without ``markers``, no JFIF/Adobe marker says what the components are."""
    shared, tiles = None, []
    for y in range(0, pixels.shape[0], tile):
        for x in range(0, pixels.shape[1], tile):
            block = pixels[y : y + tile, x : x + tile]  # edge tiles padded to full size, as TIFF stores them
            block = np.pad(block, ((0, tile - block.shape[0]), (0, tile - block.shape[1]), (0, 0)), mode="edge")
            if photometric == "rgb":
                data = imagecodecs.jpeg8_encode(block, level=80, colorspace="RGB", outcolorspace="RGB")
            else:
                data = imagecodecs.jpeg8_encode(block, level=80, outcolorspace="YCBCR", subsampling=subsampling)
            segments = _segments(data)
            if not markers:
                segments = [(m, s) for m, s in segments if m not in (0xE0, 0xEE)]
            if tables:
                common = b"".join(s for m, s in segments if m in (0xDB, 0xC4))
                shared = shared or b"\xff\xd8" + common + b"\xff\xd9"
                assert common == shared[2:-2]  # libjpeg's standard tables: the same for every tile
                segments = [(m, s) for m, s in segments if m not in (0xDB, 0xC4)]
            tiles.append(b"\xff\xd8" + b"".join(s for _, s in segments))
    tifffile.imwrite(
        path, iter(tiles), shape=pixels.shape, dtype=np.uint8, tile=(tile, tile), photometric=photometric,
        compression="jpeg", compressionargs={"outcolorspace": photometric}, jpegtables=shared,
        subsampling=None if photometric == "rgb" else {"420": (2, 2), "411": (4, 1)}[subsampling],
        resolution=(40000, 40000), resolutionunit="CENTIMETER",
    )
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.photometric.name == photometric.upper() and bool(page.jpegtables) == tables


@pytest.mark.parametrize(
    "photometric, tables, markers",
    [("rgb", True, False), ("rgb", False, False), ("rgb", True, True), ("ycbcr", True, True)],
    ids=["aperio-rgb-jpegtables", "rgb-no-marker", "rgb-adobe-marker", "ycbcr-jpegtables"],
)
def test_jpeg_variants_equal_libvips(slides, tmp_path, photometric, tables, markers):
    pixels = tifffile.imread(slides["plain"].path, level=0)[:1024, :1200]  # 1200: a partial last tile column
    path = tmp_path / f"{photometric}.tiff"
    _write_jpeg_tiff(path, pixels, photometric, tables, markers)
    _assert_same_as_libvips(path)
    # And right, not merely equal: the components were read in the colour space they were written in.
    assert np.abs(open_slide(path).read(0, 0, 0, 1200, 1024).astype(int) - pixels).mean() < 3


def test_jpeg_kind_not_decoded_here_is_left_to_libvips(slides, tmp_path):
    """4:1:1 chroma (which TurboJPEG's simplejpeg does not take): the level is read by libvips, not refused."""
    pixels = tifffile.imread(slides["plain"].path, level=0)[:512, :768]
    path = tmp_path / "ycbcr411.tiff"
    _write_jpeg_tiff(path, pixels, "ycbcr", False, True, subsampling="411")
    fast, slow = open_slide(path), _libvips_only(path)
    assert np.array_equal(fast.read(0, 0, 0, 768, 512), slow.read(0, 0, 0, 768, 512))
    assert fast._checked == {0: False} and not fast._jpeg.levels


def test_each_source_tile_decoded_once_and_cache_bounded(slides):
    reader = open_slide(slides["plain"].path)
    level, (w, h) = 0, reader.level_dimensions[0]
    reader.read(level, 0, 0, 8, 8)  # the level's check, done once
    jpeg = reader._jpeg
    jpeg._cache.clear()
    jpeg._cached = 0
    before = jpeg.decoded
    # Overlapping regions over the same 3 x 2 source tiles (256 px): each tile decoded once in all.
    for x, y in ((10, 20), (200, 100), (300, 250), (12, 260)):
        reader.read(level, x, y, 400, 230)
    assert jpeg.decoded - before == len({(c, r) for c in range(3) for r in range(2)}) == 6
    # A small cache still gives the same pixels, and holds no more than its bound (the tile count at most one
    # over, when a single tile is larger than the bound).
    small = open_slide(slides["plain"].path)
    small._jpeg.cache_bytes = 3 * 256 * 256 * 3
    assert np.array_equal(small.read(level, 0, 0, w, h), reader.read(level, 0, 0, w, h))
    assert small._jpeg._cached <= small._jpeg.cache_bytes
    assert len(small._jpeg._cache) == 3


def _damage(path, out, level, index, how):
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[level].keyframe
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
    data = bytearray(open(path, "rb").read())
    tile = bytes(data[offset : offset + count])
    if how == "marker":  # an end-of-image marker amid the entropy-coded data (libjpeg-turbo warns, libvips goes on)
        tile = tile[: count // 2] + b"\xff\xd9" + tile[count // 2 + 2 :]
    elif how == "cut":  # the tile's stream cut short, the rest of its bytes zero
        tile = tile[: count // 2] + bytes(count - count // 2)
    else:  # not a JPEG at all
        tile = bytes(count)
    data[offset : offset + count] = tile
    out.write_bytes(bytes(data))


# (Zero bytes amid the entropy-coded data may decode without a warning: JPEG has no checksum, so no decoder can
# tell; what libjpeg-turbo can tell, a cut stream or a stray marker, is an error here, not grey pixels.)
@pytest.mark.parametrize("how", ["marker", "cut", "garbage"])
def test_damaged_tile_names_slide_level_and_tile(slides, tmp_path, how):
    wsi = WSI(slides["plain"].path, 64, 100)  # read from level 1 (400 x 300: 2 x 2 tiles of 256)
    level = wsi.size.level
    assert level == 1
    bad = tmp_path / "damaged.tiff"
    _damage(slides["plain"].path, bad, level, 1, how)  # tile 1: column 1, row 0
    with pytest.raises(SlideFormatError, match=r"damaged\.tiff.*level 1, JPEG tile 1 \(column 1, row 0") as info:
        WSI(bad, 64, 100).extract_tiles(tmp_path / "out", grayspace_fraction=1.0)
    assert info.value.path == str(bad)
    assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".tfrecords") or ".tmp-" in n]


@pytest.mark.parametrize("kind, tile_px, tile_um", [("aperio", 64, 100), ("ome", 64, "20x"), ("plain", 100, 77)])
def test_same_tfrecord_bytes_as_libvips_path(slides, tmp_path, monkeypatch, kind, tile_px, tile_um):
    path = slides[kind].path
    fast = WSI(path, tile_px, tile_um).extract_tiles(tmp_path / "fast", grayspace_fraction=1.0, num_threads=2)
    monkeypatch.setenv("SLIDETILES_VIPS_ONLY", "1")
    wsi = WSI(path, tile_px, tile_um)
    assert not wsi.reader._jpeg.levels
    slow = wsi.extract_tiles(tmp_path / "slow", grayspace_fraction=1.0, num_threads=1)
    assert fast.num_tiles == slow.num_tiles > 0
    assert open(fast.tfrecord, "rb").read() == open(slow.tfrecord, "rb").read()
