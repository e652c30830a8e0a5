"""WSI tile extraction: Slideflow's grid, pixels against a reference crop-and-resize, TFRecords both libraries read,
bad inputs, determinism. Small synthetic slides (slidetiles.slides.synthetic) with known geometry."""

import importlib
import io
import os

import numpy as np
import pytest
import tifffile
from PIL import Image

import slidetiles
from slidetiles.errors import MagnificationError, MissingMPPError, SlideFormatError, SlideTooSmallError
from slidetiles.slides.extract import EmptySlideWarning
from slidetiles.slides.grid import tile_size
from slidetiles.slides.synthetic import write_synthetic_slide
from slidetiles.slides.wsi import WSI
from slidetiles.tfrecord import TFRecord

W, H = 1600, 1200


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """One small slide of each kind, levels 1/4/16 at 0.25 um/px (40x)."""
    root = tmp_path_factory.mktemp("slides")
    out = {}
    for kind, name in (("aperio", "s_aperio.svs"), ("ome", "s_ome.ome.tiff"), ("plain", "s_plain.tiff")):
        out[kind] = write_synthetic_slide(root / name, W, H, kind=kind, levels=(1, 4, 16), seed=3)
    return out


@pytest.fixture(scope="module")
def sf_slide(slideflow):
    """Slideflow's own slide module (libvips backend, as pyvips is what is installed)."""
    try:
        return importlib.import_module("slideflow.slide")
    except ImportError as exc:  # pragma: no cover - depends on the installed wheel's extras
        pytest.skip(f"slideflow.slide does not import here: {exc}")


def _slideflow_centres(sf_wsi):
    coord = np.asarray(sf_wsi.coord).reshape(-1, 4)
    keep = np.array([sf_wsi.grid[gx, gy] for _, _, gx, gy in coord], bool) if len(coord) else np.zeros(0, bool)
    xy = coord[keep, :2]
    return {(int(x + sf_wsi.full_extract_px / 2), int(y + sf_wsi.full_extract_px / 2)) for x, y in xy}


@pytest.mark.parametrize(
    "tile_px, tile_um, stride_div, origin, edge",
    [
        (100, "10x", 1, (0, 0), False),
        (64, 100, 1, (0, 0), False),
        (64, 100, 2, (37, 11), False),
        (128, 150, 3, (5, 200), False),
        (100, "10x", 2, (0, 0), True),
        (50, "2.5x", 1, (0, 0), False),
    ],
)
def test_grid_matches_slideflow(slides, sf_slide, tile_px, tile_um, stride_div, origin, edge):
    path = str(slides["aperio"].path)
    theirs = sf_slide.WSI(path, tile_px, tile_um, stride_div, origin=origin, use_edge_tiles=edge, verbose=False)
    ours = WSI(path, tile_px, tile_um, stride_div, origin=origin, use_edge_tiles=edge)
    assert ours.full_extract_px == theirs.full_extract_px
    assert ours.full_stride == theirs.full_stride
    assert ours.tile_um == theirs.tile_um
    centres = {tuple(c) for c in ours.centres().tolist()}
    assert centres == _slideflow_centres(theirs)
    assert len(centres) == ours.estimated_num_tiles == len(ours.centres())
    label = f"{tile_px}px_{tile_um}um" if isinstance(tile_um, int) else f"{tile_px}px_{tile_um}"
    assert ours.tile_label == label


def test_twenty_x_where_slideflow_refuses(slides, sf_slide):
    # 40x / 10x / 2.5x pyramid: Slideflow finds no 20x level; we read level 0 and halve it.
    path = str(slides["aperio"].path)
    with pytest.raises(Exception, match="closest"):
        sf_slide.WSI(path, 100, "20x", verbose=False)
    ours = WSI(path, 100, "20x")
    assert (ours.full_extract_px, ours.downsample_level, ours.extract_px) == (200, 0, 200)
    assert ours.tile_um == 50
    xs = sorted({x for x, _ in ours.centres().tolist()})
    assert xs == list(range(100, W - 100 + 1, 200))


def test_level_choice_never_level_zero_when_coarser_serves():
    # Exactly 4x: the 4x level serves (Slideflow's libvips reader would read level 0 here).
    size = tile_size(100, 100, mpp=0.25, level_downsamples=(1.0, 4.0, 16.0))
    assert (size.full_extract_px, size.level, size.extract_px) == (400, 1, 100)
    size = tile_size(100, 99, mpp=0.25, level_downsamples=(1.0, 4.0, 16.0))
    assert (size.full_extract_px, size.level) == (396, 0)


def _decode(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _reference_tile(path, level, x, y, n, tile_px):
    with tifffile.TiffFile(path) as tif:
        arr = tif.series[0].levels[level].asarray()
    crop = arr[y : y + n, x : x + n]
    return np.asarray(Image.fromarray(crop).resize((tile_px, tile_px), Image.LANCZOS), np.int16)


@pytest.mark.parametrize("kind", ["aperio", "ome", "plain"])
@pytest.mark.parametrize("tile_um, level, n", [(100, 1, 100), ("20x", 0, 128)])
def test_tile_pixels_against_reference_crop_and_resize(slides, tmp_path, kind, tile_um, level, n):
    slide = slides[kind]
    wsi = WSI(slide.path, 64, tile_um)
    assert (wsi.downsample_level, wsi.extract_px) == (level, n)
    report = wsi.extract_tiles(tmp_path, img_format="png", grayspace_fraction=1.0)
    records = TFRecord(report.tfrecord)
    assert len(records) == report.num_tiles == len(wsi.coord)
    ds = slide.downsamples[level]
    diffs = []
    # The three most textured tiles (tissue): on flat glass any place would look alike.
    spread = [_decode(records[i]["image_raw"]).std() for i in range(len(records))]
    for i in np.argsort(spread)[-3:]:
        rec = records[int(i)]
        x = rec["loc_x"] - wsi.full_extract_px // 2
        y = rec["loc_y"] - wsi.full_extract_px // 2
        got = _decode(rec["image_raw"]).astype(np.int16)
        assert got.shape == (64, 64, 3)
        ref = _reference_tile(slide.path, level, x // ds, y // ds, n, 64)
        diffs.append(np.abs(got - ref).mean())
        # The same comparison one tile-eighth off must fail: the test can tell places apart.
        off = _reference_tile(slide.path, level, x // ds + n // 8, y // ds, n, 64)
        assert np.abs(got - off).mean() > 3 * max(np.abs(got - ref).mean(), 0.5)
    # Lanczos-3 in libvips and in Pillow differ by rounding only.
    assert max(diffs) < 1.5


def test_tfrecords_read_by_both_libraries(slides, tmp_path, slideflow):
    wsi = WSI(slides["aperio"].path, 64, 100)
    report = wsi.extract_tiles(tmp_path / wsi.tile_label, grayspace_fraction=1.0)
    assert report.tfrecord == str(tmp_path / "64px_100um" / "s_aperio.tfrecords")
    assert os.path.exists(tmp_path / "64px_100um" / "s_aperio.index.npz")
    ours, theirs = TFRecord(report.tfrecord), slideflow.TFRecord(report.tfrecord)
    assert theirs.fields == ours.fields == ["image_raw", "slide", "loc_x", "loc_y"]
    assert theirs.img_format == ours.img_format == "jpeg"
    assert len(theirs) == len(ours) == report.num_tiles == (W // 400) * (H // 400)
    assert theirs.locations == ours.locations == [tuple(c) for c in report.locations.tolist()]
    for i in (0, 7, len(ours) - 1):
        assert theirs[i] == ours[i]
        assert ours[i]["slide"] == "s_aperio"
    # Slideflow's index reader agrees with the index written beside the TFRecord.
    their_index = slideflow.util.tfrecord2idx.load_index(report.tfrecord)
    assert len(their_index) == len(ours)


def test_jpeg_quality_is_slideflows(slides, tmp_path, sf_slide):
    # Same pixels, same encoder call: our default JPEG bytes are what Slideflow's numpy2jpg makes of our tile.
    from slidetiles.slides.extract import read_tile

    wsi = WSI(slides["plain"].path, 64, 100)
    tile = read_tile(wsi, 800, 400)
    report = wsi.extract_tiles(tmp_path, grayspace_fraction=1.0)
    rec = {tuple(loc): i for i, loc in enumerate(TFRecord(report.tfrecord).locations)}
    i = rec[(800 + 200, 400 + 200)]
    assert TFRecord(report.tfrecord)[i]["image_raw"] == sf_slide.utils.numpy2jpg(tile)


def test_same_bytes_twice(slides, tmp_path):
    paths = []
    # Twice, and with one thread and with three: the same bytes.
    for run, threads in (("a", 1), ("b", 3), ("c", 3)):
        wsi = WSI(slides["ome"].path, 64, 100, stride_div=2)
        paths.append(wsi.extract_tiles(tmp_path / run, num_threads=threads).tfrecord)
    a, b, c = (open(p, "rb").read() for p in paths)
    assert a == b == c and len(a) > 0


def test_loose_tiles_and_max_tiles(slides, tmp_path):
    wsi = WSI(slides["aperio"].path, 64, 100)
    report = wsi.extract_tiles(None, tiles_dir=tmp_path, grayspace_fraction=1.0, max_tiles=5)
    assert report.num_tiles == 5 and report.removed["max_tiles"] == len(wsi.coord) - 5
    names = sorted(os.listdir(tmp_path / "s_aperio"))
    assert names == sorted(f"s_aperio-{x}-{y}.jpg" for x, y in report.locations.tolist())
    assert report.tfrecord is None


def test_background_filter_removes_glass(slides, tmp_path):
    slide = slides["aperio"]
    wsi = WSI(slide.path, 64, 100)
    report = wsi.extract_tiles(tmp_path)
    assert 0 < report.num_tiles < len(wsi.coord)
    assert report.removed["grayspace"] == len(wsi.coord) - report.num_tiles
    # Every kept tile's centre lies on or near tissue (ground truth at downsample 16).
    tissue = slide.tissue_mask(16)
    for x, y in report.locations.tolist():
        window = tissue[max(0, y // 16 - 12) : y // 16 + 13, max(0, x // 16 - 12) : x // 16 + 13]
        assert window.any()


def test_mpp_sources(tmp_path):
    # A 1.0 um/px slide has an MPP (Slideflow's Aperio parser only takes 0.x); resolution tags in any unit.
    s = write_synthetic_slide(tmp_path / "one.svs", 512, 384, mpp=1.0, magnification=10, levels=(1, 4), islands=1)
    assert WSI(s.path, 64, 64).mpp == 1.0
    for unit in ("inch", "centimeter", "millimeter", "micrometer"):
        s = write_synthetic_slide(tmp_path / f"{unit}.tiff", 512, 384, mpp=0.5, kind="plain", levels=(1, 4),
                                  islands=1, resolution_unit=unit)
        assert WSI(s.path, 64, 64).mpp == pytest.approx(0.5)
    s = write_synthetic_slide(tmp_path / "o.ome.tiff", 512, 384, mpp=0.3, kind="ome", levels=(1, 4), islands=1)
    assert WSI(s.path, 64, 64).mpp == pytest.approx(0.3)


def test_missing_mpp_names_slide_and_fix(tmp_path):
    path = tmp_path / "nompp.tiff"
    tifffile.imwrite(path, np.full((256, 256, 3), 200, np.uint8), tile=(64, 64), photometric="rgb",
                     resolutionunit=1)
    with pytest.raises(MissingMPPError, match=r"nompp\.tiff.*mpp=") as info:
        WSI(path, 64, 64)
    assert info.value.path == str(path)
    assert WSI(path, 64, 64, mpp=0.5).full_extract_px == 128


def test_magnification_finer_than_the_scan_is_refused(slides):
    # A 40x scan: '40x' reads level 0, '80x' would upsample it (invented detail), so it is an error naming the slide.
    path = slides["aperio"].path
    assert WSI(path, 64, "40x").full_extract_px == 64
    with pytest.raises(MagnificationError, match=r"s_aperio.*scanned at 40x.*'80x' would upsample"):
        WSI(path, 64, "80x")
    with pytest.raises(MagnificationError):
        WSI(path, 64, "41x")  # beyond the 2 % a level's rounding explains


def test_corrupt_and_unsupported_files(slides, tmp_path):
    garbage = tmp_path / "garbage.svs"
    garbage.write_bytes(b"not a slide at all " * 64)
    with pytest.raises(SlideFormatError, match="garbage.svs"):
        WSI(garbage, 64, 100)
    with pytest.raises(SlideFormatError, match="no such slide"):
        WSI(tmp_path / "absent.svs", 64, 100)
    # A slide cut short in a copy: its tiles are missing, which must be an error, not grey tiles.
    data = open(slides["plain"].path, "rb").read()
    cut = tmp_path / "cut.tiff"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SlideFormatError, match="cut.tiff"):
        WSI(cut, 64, 100).extract_tiles(tmp_path / "out", grayspace_fraction=1.0)
    assert not os.path.exists(tmp_path / "out" / "cut.tfrecords")
    assert not [n for n in os.listdir(tmp_path / "out") if ".tmp-" in n]


def test_slide_smaller_than_a_tile(tmp_path):
    s = write_synthetic_slide(tmp_path / "tiny.svs", 256, 192, levels=(1,), islands=1)
    with pytest.raises(SlideTooSmallError, match=r"tiny\.svs.*smaller than one tile"):
        WSI(s.path, 299, 302)
    assert WSI(s.path, 299, 302, use_edge_tiles=True).estimated_num_tiles == 1


def test_no_tile_left_warns_and_writes_nothing(tmp_path):
    s = write_synthetic_slide(tmp_path / "glass.svs", 512, 384, levels=(1, 4), islands=0, pen=False, blur=False)
    out = tmp_path / "tfr"
    with pytest.warns(EmptySlideWarning, match="glass"):
        report = WSI(s.path, 64, 64).extract_tiles(out)
    assert report.num_tiles == 0 and report.tfrecord is None
    assert not out.exists() or not os.listdir(out)


def test_exported_as_slideflow_name():
    assert slidetiles.WSI is WSI


def _sf_kept_centres(sf_wsi, **generator_kwargs):
    gen = sf_wsi.build_generator(dry_run=True, num_threads=1, shuffle=False, **generator_kwargs)
    return set() if gen is None else {tuple(d["loc"]) for d in gen()}


@pytest.mark.parametrize("ws, gs", [(1.0, 0.9), (0.8, 0.9), (0.5, 1.0), (1.0, 0.6)])
def test_background_filter_matches_slideflow(slides, sf_slide, ws, gs):
    # The plain TIFF: Slideflow's libvips reader takes an Aperio file's thumbnail page for a pyramid level, and
    # so judges background on other pixels than those of the slide's real levels.
    path = str(slides["plain"].path)
    assert sf_slide.WSI(path, 64, 50, verbose=False).slide.level_downsamples == [1.0, 4.0, 16.0]
    theirs = _sf_kept_centres(
        sf_slide.WSI(path, 64, 50, verbose=False), whitespace_fraction=ws, grayspace_fraction=gs
    )
    report = WSI(path, 64, 50).extract_tiles(None, dry_run=True, whitespace_fraction=ws, grayspace_fraction=gs)
    assert {tuple(c) for c in report.locations.tolist()} == theirs
    assert 0 < len(theirs) < len(WSI(path, 64, 50).coord)


@pytest.fixture(scope="module")
def roi_dir(slides, tmp_path_factory):
    folder = tmp_path_factory.mktemp("roi")
    (folder / "s_aperio.csv").write_text(
        "roi_name,x_base,y_base\nA,100,100\nA,1100,150\nA,900,1000\nA,150,900\n"
        "B,1250,700\nB,1550,700\nB,1550,1150\nB,1250,1150\n"
    )
    return folder


@pytest.mark.parametrize("roi_method", ["auto", "inside", "outside"])
def test_roi_tiles_match_slideflow(slides, sf_slide, roi_dir, roi_method):
    path = str(slides["aperio"].path)
    theirs = sf_slide.WSI(path, 64, 50, roi_dir=str(roi_dir), roi_method=roi_method, verbose=False)
    ours = WSI(path, 64, 50, roi_dir=roi_dir, roi_method=roi_method)
    assert len(ours.rois) == 2
    kept = {tuple(c) for c in ours.centres().tolist()}
    assert kept == _slideflow_centres(theirs)
    assert 0 < len(kept) < len(ours.coord)
    report = ours.extract_tiles(None, dry_run=True, grayspace_fraction=1.0)
    assert report.removed["roi"] == len(ours.coord) - len(kept)


def test_roi_inside_without_roi_is_an_error(slides, tmp_path):
    from slidetiles.errors import MissingROIError

    with pytest.raises(MissingROIError, match="s_plain"):
        WSI(slides["plain"].path, 64, 50, roi_dir=tmp_path, roi_method="inside")


def test_qc_otsu_keeps_tissue_tiles(slides, tmp_path):
    slide = slides["plain"]
    wsi = WSI(slide.path, 64, 50)
    wsi.qc("otsu")
    kept = wsi.kept_corners()
    assert 0 < len(kept) < len(wsi.coord)
    tissue = slide.tissue_mask(4)
    fractions = [tissue[y // 4 : (y + 200) // 4, x // 4 : (x + 200) // 4].mean() for x, y in wsi.coord[:, :2]]
    kept_set = {tuple(c) for c in kept.tolist()}
    # Otsu on saturation misses pale stained tissue (that is the method), but never keeps glass.
    for (x, y), f in zip(wsi.coord[:, :2].tolist(), fractions):
        if (x, y) in kept_set:
            assert f > 0.3
    assert max(fractions) > 0.6
    report = wsi.extract_tiles(tmp_path, grayspace_fraction=1.0)
    assert report.num_tiles == len(kept) and report.removed["qc"] == len(wsi.coord) - len(kept)
    assert wsi.extract_tiles(None, qc="both", dry_run=True, grayspace_fraction=1.0).num_tiles <= len(kept)


def test_dataset_extract_tiles(slides, tmp_path, roi_dir):
    import shutil

    root = tmp_path / "project"
    (root / "slides").mkdir(parents=True)
    for kind in ("aperio", "plain"):
        shutil.copy(slides[kind].path, root / "slides")
    (root / "slides" / "broken.svs").write_bytes(b"garbage" * 100)
    shutil.copytree(roi_dir, root / "roi")
    config = {"src": {"slides": str(root / "slides"), "roi": str(root / "roi"), "tfrecords": str(root / "tfrecords"),
                      "tiles": str(root / "tiles")}}
    ds = slidetiles.Dataset(config, tile_px=64, tile_um=50)
    results = ds.extract_tiles(grayspace_fraction=1.0, save_tiles=True)
    folder = root / "tfrecords" / "64px_50um"
    assert sorted(os.listdir(folder)) == ["s_aperio.index.npz", "s_aperio.tfrecords", "s_plain.index.npz",
                                          "s_plain.tfrecords"]
    broken = results[str(root / "slides" / "broken.svs")]
    assert isinstance(broken.error, SlideFormatError)
    # The ROI folder applies to the slide it names.
    with_roi = results[str(root / "slides" / "s_aperio.svs")]
    assert with_roi.num_tiles < len(WSI(slides["aperio"].path, 64, 50).coord)
    assert len(os.listdir(root / "tiles" / "64px_50um" / "s_aperio")) == with_roi.num_tiles
    after = slidetiles.Dataset(config, tile_px=64, tile_um=50)
    assert after.slides() == ["s_aperio", "s_plain"]
    assert after.manifest(key="name")["s_aperio"]["total"] == with_roi.num_tiles
    # Already extracted: skipped, files untouched.
    stamp = os.stat(folder / "s_plain.tfrecords").st_mtime_ns
    again = after.extract_tiles(grayspace_fraction=1.0)
    assert list(again) == [str(root / "slides" / "broken.svs")]
    assert os.stat(folder / "s_plain.tfrecords").st_mtime_ns == stamp
    # Slideflow's qc and qc_* options reach the slide's QC (nothing written without save_tfrecords/save_tiles).
    dry = after.extract_tiles(save_tfrecords=False, qc="otsu", qc_filter_threshold=0.6, grayspace_fraction=1.0)
    blur = after.extract_tiles(save_tfrecords=False, qc="blur", qc_blur_radius=3, qc_blur_threshold=0.02,
                               grayspace_fraction=1.0)
    assert blur[str(root / "slides" / "s_plain.tiff")].removed["qc"] > 0
    direct = WSI(slides["plain"].path, 64, 50)
    direct.qc("otsu")
    assert dry[str(root / "slides" / "s_plain.tiff")].num_tiles == direct.estimated_num_tiles < len(direct.coord)
    assert sorted(os.listdir(folder)) == ["s_aperio.index.npz", "s_aperio.tfrecords", "s_plain.index.npz",
                                          "s_plain.tfrecords"]


@pytest.mark.parametrize("tile_px, tile_um", [(64, 50), (64, 100), (100, "10x")])
def test_tile_bytes_equal_slideflows(slides, sf_slide, tile_px, tile_um):
    # Same level, same place, same libvips resize, same encoder: Slideflow's own tiles, byte for byte.
    from slidetiles.slides.extract import encode_tile, read_tile

    path = str(slides["plain"].path)
    theirs = sf_slide.WSI(path, tile_px, tile_um, verbose=False)
    gen = theirs.build_generator(num_threads=1, shuffle=False, img_format="jpg", grayspace_fraction=1.0)
    their_tiles = {tuple(d["loc"]): d["image"] for d in gen()}
    ours = WSI(path, tile_px, tile_um)
    assert ours.extract_px == theirs.extract_px
    centres = ours.centres().tolist()
    assert {tuple(c) for c in centres} == set(their_tiles)
    for (x, y), (cx, cy) in zip(ours.kept_corners().tolist(), centres):
        assert encode_tile(read_tile(ours, x, y)) == their_tiles[(cx, cy)]


def test_openslide_reader_agrees_with_libvips(slides):
    # The reader for formats libvips' TIFF loader does not open, checked on a slide both read.
    from slidetiles.slides.reader import OpenSlideReader, open_slide

    path = str(slides["aperio"].path)
    vips, osr = open_slide(path), OpenSlideReader(path)
    assert vips.backend == "libvips" and osr.backend == "openslide"
    assert osr.level_dimensions == vips.level_dimensions and osr.level_downsamples == vips.level_downsamples
    assert osr.mpp == vips.mpp == 0.25 and osr.vendor == vips.vendor == "aperio"
    for level, x, y in ((0, 700, 300), (1, 40, 60), (2, 90, 70)):
        a, b = vips.read(level, x, y, 64, 48), osr.read(level, x, y, 64, 48)
        assert a.shape == b.shape == (48, 64, 3)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # two JPEG decoders
    osr.close()


def test_not_rgb_brightfield_is_refused(tmp_path):
    path = tmp_path / "fluorescence.tiff"
    tifffile.imwrite(path, np.zeros((256, 256), np.uint16), tile=(64, 64), resolution=(40000, 40000),
                     resolutionunit="CENTIMETER")
    with pytest.raises(SlideFormatError, match=r"fluorescence\.tiff.*not an RGB brightfield slide"):
        WSI(path, 64, 32)


def test_mpp_parsers():
    from slidetiles.slides import mpp

    assert mpp.mpp_from_aperio("Aperio Image Library v12 |AppMag = 10|MPP = 1|Filename = a") == 1.0
    assert mpp.mpp_from_aperio("Aperio Image Library v12 |AppMag = 10|Filename = a") is None
    ome = ('<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0"><Pixels ID="P:0" '
           'PhysicalSizeX="{}" PhysicalSizeXUnit="{}" SizeX="1" SizeY="1"/></Image></OME>')
    assert mpp.mpp_from_ome(ome.format(250, "nm")) == pytest.approx(0.25)
    assert mpp.mpp_from_ome(ome.format(0.5, "µm")) == 0.5
    assert mpp.mpp_from_ome(ome.format(0, "µm")) is None
    assert mpp.mpp_from_resolution((40000, 1), 3) == 0.25
    assert mpp.mpp_from_resolution(1.0, 1) is None  # unit "none"
    assert mpp.mpp_from_properties({"openslide.mpp-x": "0.2527"}) == 0.2527
    assert mpp.mpp_from_properties({"openslide.vendor": "generic-tiff"}) is None


def test_magnification_level_within_rounding_is_slideflows():
    # A 24,001-px slide: its 10x level has downsample 4.0002; Slideflow uses that level's own downsample.
    size = tile_size(100, "10x", mpp=0.25, level_downsamples=(1.0, 4.0002, 16.001))
    assert (size.full_extract_px, size.level, size.extract_px) == (400, 1, 100)
    size = tile_size(100, "20x", mpp=0.25, level_downsamples=(1.0, 4.0002, 16.001))
    assert (size.full_extract_px, size.level, size.extract_px) == (200, 0, 200)


def test_thumbnail(slides):
    wsi = WSI(slides["ome"].path, 64, 100)
    thumb = wsi.thumb(width=200)
    assert thumb.size == (200, 150)
    assert wsi.thumbnail(mpp=4.0).size == (100, 75)


def test_slide_names_as_slideflow(slides, tmp_path, slideflow):
    from slidetiles.slides.wsi import slide_name

    for path in ("a/TCGA-01.svs", "s2.ome.tiff", "s3.ome.tif", "a.b.svs", "noext", "x.OME.TIFF"):
        assert slide_name(path) == slideflow.util.path_to_name(path)
    report = WSI(slides["ome"].path, 64, 100).extract_tiles(tmp_path, grayspace_fraction=1.0)
    assert os.path.basename(report.tfrecord) == "s_ome.tfrecords"
    assert TFRecord(report.tfrecord)[0]["slide"] == "s_ome"


def test_edge_tiles_padded_white(slides, tmp_path):
    wsi = WSI(slides["plain"].path, 60, 150, use_edge_tiles=True)  # 600 level-0 px: the last column overhangs
    assert wsi.full_extract_px == 600 and sorted({x for x, _ in wsi.coord[:, :2].tolist()}) == [0, 600, 1200]
    report = wsi.extract_tiles(tmp_path, img_format="png", grayspace_fraction=1.0)
    records = TFRecord(report.tfrecord)
    edge = [r for r in records if r["loc_x"] == 1500 and r["loc_y"] == 300][0]
    pixels = _decode(edge["image_raw"])
    assert (pixels[:, 41:] == 255).all()  # 200 of 600 px past the edge: the right third, after resizing
    assert (pixels[:, :38] != 255).any()


def test_extraction_options_checked(slides):
    wsi = WSI(slides["plain"].path, 64, 100)
    with pytest.raises(TypeError, match="grayspace_fracion"):
        wsi.extract_tiles(None, dry_run=True, grayspace_fracion=0.5)
    with pytest.raises(ValueError, match="normalizer"):
        wsi.extract_tiles(None, dry_run=True, normalizer="reinhard")
    # Slideflow's scheduling options are accepted (tiles stay in grid order).
    assert wsi.extract_tiles(None, dry_run=True, shuffle=True, num_processes=4, normalizer=None).num_tiles > 0


@pytest.mark.parametrize("kind, tile_px, tile_um, stride_div, edge", [
    ("plain", 64, 100, 1, False), ("aperio", 64, 50, 2, True), ("ome", 100, "10x", 1, True), ("plain", 32, 20, 1, True),
])
def test_background_bands_judge_each_tile_as_its_own_patch(slides, kind, tile_px, tile_um, stride_div, edge):
    # Background is judged on bands of the filter level: each tile's fractions equal those of its own patch read
    # alone (Slideflow's per-tile read), for any band width, sparse tiles (every third kept) and edge tiles.
    from slidetiles.slides import background
    from slidetiles.slides.extract import slide_background_fractions

    wsi = WSI(str(slides[kind].path), tile_px, tile_um, stride_div=stride_div, use_edge_tiles=edge)
    reader, size = wsi.reader, wsi.size
    level, ratio = background.filter_downsample(reader.level_downsamples, size.extract_px, size.level)
    n, ds = max(1, size.extract_px // ratio), reader.level_downsamples[level]
    for corners in (wsi.kept_corners(), wsi.kept_corners()[::3]):
        patches = np.stack([reader.read(level, int(x // ds), int(y // ds), n, n) for x, y in corners.tolist()])
        expected = background.background_fractions(patches)
        for span, threads in ((0, 1), (1, 2), (3 * n, 2)):
            white, gray = slide_background_fractions(wsi, corners, 230, 0.05, threads, band_span=span)
            assert white.tolist() == expected[0].tolist() and gray.tolist() == expected[1].tolist()


@pytest.mark.parametrize("kind, tile_px, tile_um, stride_div, edge", [
    ("plain", 64, 100, 1, False), ("aperio", 64, 50, 2, True), ("ome", 100, "10x", 1, True), ("plain", 48, 30, 3, True),
])
def test_tiles_read_in_runs_are_each_tiles_own(slides, kind, tile_px, tile_um, stride_div, edge):
    # Runs of neighbouring tiles are read as one region and cut: each tile's pixels are read_tile's, whatever the
    # run length, with gaps (every third tile), overlaps (stride_div > 1) and tiles padded past the edge.
    from slidetiles.slides.extract import read_tile, read_tiles

    wsi = WSI(str(slides[kind].path), tile_px, tile_um, stride_div=stride_div, use_edge_tiles=edge)
    for corners in (wsi.kept_corners(), wsi.kept_corners()[::3], wsi.kept_corners()[1::2]):
        expected = np.stack([read_tile(wsi, x, y) for x, y in corners.tolist()])
        for run in (0, 1, 3):
            assert np.array_equal(read_tiles(wsi, corners, run_tiles=run), expected)


def test_same_bytes_for_any_thread_count(slides, tmp_path):
    wsi = WSI(str(slides["aperio"].path), 64, 50, stride_div=2)
    data = []
    for threads in (1, 2, 3):
        report = wsi.extract_tiles(tmp_path / str(threads), num_threads=threads, grayspace_fraction=0.9)
        data.append([r["image_raw"] for r in TFRecord(report.tfrecord)])
    assert len(data[0]) > 20 and data[0] == data[1] == data[2]
