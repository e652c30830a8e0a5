"""Synthetic whole-slide images: what real readers (tifffile, OpenSlide, tiffslide, libvips) see in them, and how
the pixels agree with the scene's ground truth."""

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile

from slidetiles.slides import SyntheticSlide, make_scene, write_synthetic_slide
from slidetiles.slides.synthetic import GLASS_NOISE, GLASS_RGB, INK_DENSITY, PEN_DEFOCUS

W, H = 2048, 1536
LEVELS = (1, 4, 16)
DIMS = ((2048, 1536), (512, 384), (128, 96))


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, SyntheticSlide]:
    """One small slide of each kind, same scene (seed 1)."""
    root = tmp_path_factory.mktemp("slides")
    suffix = {"aperio": "svs", "ome": "ome.tiff", "plain": "tiff"}
    return {k: write_synthetic_slide(root / f"s.{suffix[k]}", W, H, kind=k, seed=1) for k in suffix}


def _level(path, level: int) -> np.ndarray:
    """A whole pyramid level decoded by tifffile (imagecodecs' libjpeg-turbo)."""
    with tifffile.TiffFile(path) as tf:
        return tf.series[0].levels[level].asarray()


def _openslide():
    return pytest.importorskip("openslide")


# ---- formats as the readers see them --------------------------------------------------------------------------


def test_returned_description(slides):
    s = slides["aperio"]
    assert s.dimensions == (W, H)
    assert s.downsamples == LEVELS
    assert s.level_dimensions == DIMS
    assert s.mpp == 0.25 and s.magnification == 40
    assert s.path.is_file()


def test_aperio_is_an_aperio_slide_to_openslide(slides):
    openslide = _openslide()
    with openslide.OpenSlide(str(slides["aperio"].path)) as o:
        props = o.properties
        assert props["openslide.vendor"] == "aperio"
        assert float(props["openslide.mpp-x"]) == 0.25
        assert float(props["openslide.mpp-y"]) == 0.25
        assert float(props["openslide.objective-power"]) == 40
        assert props["aperio.MPP"] == "0.25" and props["aperio.AppMag"] == "40"
        assert o.level_count == 3
        assert o.level_dimensions == DIMS
        assert o.level_downsamples == (1.0, 4.0, 16.0)
        assert list(o.associated_images) == ["thumbnail"]
        assert props["openslide.level[0].tile-width"] == "256"


def test_aperio_tiff_structure(slides):
    with tifffile.TiffFile(slides["aperio"].path) as tf:
        first = tf.pages[0]
        assert tf.is_svs
        desc = first.description
        assert desc.startswith("Aperio Image Library")
        assert f"{W}x{H} [0,0 {W}x{H}] (256x256) JPEG/RGB Q=90" in desc
        assert "|AppMag = 40|" in desc and "|MPP = 0.25|" in desc
        assert first.is_tiled and first.tilewidth == 256 and first.compression == tifffile.COMPRESSION.JPEG
        # Aperio's layout: level 0, an untiled thumbnail, then the lower levels.
        assert not tf.pages[1].is_tiled
        assert [p.shape[:2] for p in tf.pages if p.is_tiled] == [(h, w) for w, h in DIMS]
        assert [lv.shape for lv in tf.series[0].levels] == [(h, w, 3) for w, h in DIMS]
        # No physical resolution (tifffile's placeholder 1/1 without a unit): the description is the MPP's
        # only source, as in most real SVS files.
        unit = first.tags.get("ResolutionUnit")
        assert unit is None or unit.value == tifffile.RESUNIT.NONE


def test_ome_tiff_pyramid_and_physical_size(slides):
    with tifffile.TiffFile(slides["ome"].path) as tf:
        assert tf.is_ome
        assert len(tf.pages) == 1  # the pyramid lives in SubIFDs of the one top-level page
        assert len(tf.pages[0].subifds) == 2
        series = tf.series[0]
        assert [lv.shape for lv in series.levels] == [(h, w, 3) for w, h in DIMS]
        root = ET.fromstring(tf.ome_metadata)
    ns = {"ome": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}
    pixels = root.find(".//ome:Pixels", ns)
    assert float(pixels.get("PhysicalSizeX")) == 0.25 and pixels.get("PhysicalSizeXUnit") == "µm"
    assert float(pixels.get("PhysicalSizeY")) == 0.25
    assert (int(pixels.get("SizeX")), int(pixels.get("SizeY"))) == (W, H)
    assert float(root.find(".//ome:Objective", ns).get("NominalMagnification")) == 40


def test_plain_has_resolution_tags_and_no_description(slides):
    with tifffile.TiffFile(slides["plain"].path) as tf:
        assert len(tf.pages) == 3
        for page, d in zip(tf.pages, LEVELS):
            assert "ImageDescription" not in page.tags
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            num, den = page.tags["XResolution"].value
            assert 1e4 / (num / den) == pytest.approx(0.25 * d)
        assert [p.is_reduced for p in tf.pages] == [False, True, True]


@pytest.mark.parametrize(("unit", "per_um"), [("inch", 25400.0), ("millimeter", 1e3), ("micrometer", 1.0)])
def test_resolution_units(tmp_path, unit, per_um):
    s = write_synthetic_slide(tmp_path / "u.tiff", 256, 256, kind="plain", levels=(1, 4), resolution_unit=unit)
    with tifffile.TiffFile(s.path) as tf:
        page = tf.pages[0]
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT[unit.upper()]
        num, den = page.tags["XResolution"].value
        assert per_um / (num / den) == pytest.approx(0.25)


def test_openslide_reads_plain_as_generic_tiff_with_mpp(slides):
    openslide = _openslide()
    with openslide.OpenSlide(str(slides["plain"].path)) as o:
        assert o.properties["openslide.vendor"] == "generic-tiff"
        assert float(o.properties["openslide.mpp-x"]) == 0.25
        assert o.level_dimensions == DIMS


def test_openslide_sees_only_level_0_of_an_ome_subifd_pyramid(slides):
    # Worth knowing for the readers' comparison: OpenSlide's generic-tiff driver ignores SubIFDs.
    openslide = _openslide()
    with openslide.OpenSlide(str(slides["ome"].path)) as o:
        assert o.level_count == 1 and o.dimensions == (W, H)
        assert float(o.properties["openslide.mpp-x"]) == 0.25


def test_tiffslide_reads_all_kinds(slides):
    tiffslide = pytest.importorskip("tiffslide")
    for kind, s in slides.items():
        t = tiffslide.TiffSlide(s.path)
        try:
            assert t.level_dimensions == DIMS, kind
            assert float(t.properties["tiffslide.mpp-x"]) == 0.25, kind
            if kind == "aperio":
                assert t.properties["tiffslide.vendor"] == "aperio"
                assert float(t.properties["tiffslide.objective-power"]) == 40
        finally:
            t.close()


def test_pyvips_reads_levels_and_resolution(slides):
    pyvips = pytest.importorskip("pyvips")
    aperio = pyvips.Image.new_from_file(str(slides["aperio"].path), page=2)  # page 1 is the thumbnail
    assert (aperio.width, aperio.height) == DIMS[1]
    assert pyvips.Image.new_from_file(str(slides["aperio"].path)).get("image-description").startswith("Aperio")
    ome = pyvips.Image.new_from_file(str(slides["ome"].path), subifd=1)
    assert (ome.width, ome.height) == DIMS[2]
    plain = pyvips.Image.new_from_file(str(slides["plain"].path), page=1)
    assert (plain.width, plain.height) == DIMS[1]
    # libvips gives resolution in pixels per millimetre: 4 at level 1 of a 0.25-um slide (1 um per pixel).
    assert 1000 / plain.xres == pytest.approx(1.0)
    pixels = np.ndarray(buffer=plain.write_to_memory(), dtype=np.uint8, shape=(plain.height, plain.width, 3))
    assert np.abs(pixels.astype(int) - _level(slides["plain"].path, 1)).mean() < 1.0


# ---- pixels against the scene ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["aperio", "ome", "plain"])
def test_every_level_matches_the_scene_up_to_jpeg(slides, kind):
    s = slides[kind]
    for i, (d, (w, h)) in enumerate(zip(LEVELS, DIMS)):
        stored = _level(s.path, i).astype(np.int16)
        exact = s.render(0, 0, w, h, downsample=d).astype(np.int16)
        err = np.abs(stored - exact)
        assert err.mean() < 3.0, (kind, d, err.mean())
        assert np.percentile(err, 99) < 24, (kind, d)


def test_openslide_and_tiffslide_decode_the_same_pixels(slides):
    openslide = _openslide()
    tiffslide = pytest.importorskip("tiffslide")
    path = str(slides["aperio"].path)
    with openslide.OpenSlide(path) as o:
        a = np.asarray(o.read_region((512, 256), 0, (600, 500)).convert("RGB"), np.int16)
        low = np.asarray(o.read_region((0, 0), 2, DIMS[2]).convert("RGB"), np.int16)
    t = tiffslide.TiffSlide(path)
    b = np.asarray(t.read_region((512, 256), 0, (600, 500), as_array=True)[..., :3], np.int16)
    t.close()
    assert np.abs(a - b).mean() < 1.0
    assert np.abs(low - _level(path, 2)).mean() < 1.0


def test_tissue_glass_pen_and_blur_look_the_part(slides):
    s = slides["aperio"]
    img = _level(s.path, 1).astype(np.float32)
    tissue, pen, blur = s.tissue_mask(4), s.pen_mask(4), s.blur_mask(4)
    assert tissue.shape == pen.shape == blur.shape == img.shape[:2]
    # Away from any boundary, so JPEG ringing and anti-aliasing don't count.
    from scipy.ndimage import binary_erosion

    core = binary_erosion(tissue & ~pen, iterations=4)
    glass = binary_erosion(~tissue & ~pen, iterations=4)
    # The defocused ink reaches full density only ~2.5 sigma of its blur inside the stroke's outline.
    sigma = PEN_DEFOCUS * s.scene.pen.half_width / 4
    ink = binary_erosion(pen & ~tissue, iterations=round(2.5 * sigma))
    assert core.sum() > 5000 and glass.sum() > 50000 and ink.sum() > 200

    glass_px = img[glass]
    assert np.abs(glass_px.mean(0) - GLASS_RGB).max() < 2.0
    # Level 1 averages 4 x 4 level-0 pixels, as a scanner's pyramid does: a quarter of the noise (plus JPEG's).
    assert glass_px.std(0).max() < 1.0 < GLASS_NOISE
    tissue_px = img[core]
    # Stained tissue: darker and far more varied than glass, and brown-stained (red above blue) on average.
    assert tissue_px.mean() < np.mean(GLASS_RGB) - 40
    assert tissue_px.std(0).min() > 20
    assert tissue_px[:, 0].mean() > tissue_px[:, 2].mean() + 10
    # Ink over glass is the glass seen through the ink.
    expected = np.asarray(GLASS_RGB) * (1 - INK_DENSITY * (1 - np.asarray(s.scene.pen.transmittance)))
    assert np.abs(img[ink].mean(0) - expected).max() < 6

    # The out-of-focus disc has lost its fine detail: compare the Laplacian's energy at level 0.
    full = _level(s.path, 0).astype(np.float32).mean(2)
    lap = np.abs(4 * full[1:-1, 1:-1] - full[:-2, 1:-1] - full[2:, 1:-1] - full[1:-1, :-2] - full[1:-1, 2:])
    blur0 = binary_erosion(s.blur_mask(1), iterations=20)[1:-1, 1:-1]
    sharp0 = binary_erosion(s.tissue_mask(1) & ~s.blur_mask(1) & ~s.pen_mask(1), iterations=20)[1:-1, 1:-1]
    assert blur0.sum() > 2000
    assert lap[blur0].mean() < 0.4 * lap[sharp0].mean()


def test_masks_geometry(slides):
    s = slides["aperio"]
    tissue, pen, blur = s.tissue_mask(16), s.pen_mask(16), s.blur_mask(16)
    assert tissue.shape == (96, 128)
    assert 0.1 < tissue.mean() < 0.5
    # The pen circles island 0 in and out of its tissue; the blur patch is all tissue.
    assert (pen & tissue).any() and (pen & ~tissue).any()
    assert blur.any() and not (blur & ~tissue).any()
    # Any downsample, not only the stored levels, and the same answer at coarser sampling.
    fine = s.tissue_mask(2)
    assert fine.shape == (768, 1024)
    assert np.mean(fine[::8, ::8] == s.tissue_mask(16)) > 0.97
    # Islands don't touch the slide's border.
    assert not tissue[0].any() and not tissue[-1].any() and not tissue[:, 0].any() and not tissue[:, -1].any()


@pytest.mark.parametrize("d", [1.0, 4.0, 2.6])
def test_regions_agree_with_the_whole(slides, d):
    # Tiles are drawn in blocks: any region must equal the same pixels drawn as part of a larger one, at a
    # level's downsample or any other (the Aperio thumbnail's is fractional).
    scene = slides["aperio"].scene
    # Level-0 px 1200-1712 x 200-584 hold island 1 with the blurred patch; at coarser levels the whole slide.
    ox, oy = (1200, 200) if d == 1.0 else (0, 0)
    whole = scene.render(d, ox, oy, 512, 384)
    whole_masks = scene.masks(d, ox, oy, 512, 384)
    assert whole_masks["tissue"].any()
    for x, y, w, h in [(0, 0, 17, 9), (100, 37, 200, 150), (255, 255, 2, 2), (300, 200, 212, 184)]:
        assert np.array_equal(scene.render(d, ox + x, oy + y, w, h), whole[y : y + h, x : x + w])
        masks = scene.masks(d, ox + x, oy + y, w, h)
        for name, full in whole_masks.items():
            assert np.array_equal(masks[name], full[y : y + h, x : x + w]), name


def test_same_seed_same_bytes_other_seed_other_slide(tmp_path):
    kw = dict(width=700, height=520, levels=(1, 4), kind="aperio")
    # Same file name: the Aperio description records it.
    a = write_synthetic_slide(tmp_path / "a" / "s.svs", seed=5, **kw)
    b = write_synthetic_slide(tmp_path / "b" / "s.svs", seed=5, **kw)
    c = write_synthetic_slide(tmp_path / "c" / "s.svs", seed=6, **kw)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.path.read_bytes() != c.path.read_bytes()
    assert not np.array_equal(a.tissue_mask(4), c.tissue_mask(4))


def test_options(tmp_path):
    s = write_synthetic_slide(
        tmp_path / "o.svs",
        1000,
        700,
        mpp=0.5,
        magnification=20,
        levels=(1, 2, 8),
        tile=128,
        islands=1,
        pen=False,
        blur=False,
        quality=70,
    )
    assert s.level_dimensions == ((1000, 700), (500, 350), (125, 87))
    assert s.scene.pen is None and s.scene.blur is None and len(s.scene.islands) == 1
    assert not s.pen_mask(8).any() and not s.blur_mask(8).any() and s.tissue_mask(8).any()
    with tifffile.TiffFile(s.path) as tf:
        assert tf.pages[0].tilewidth == 128
        assert "|AppMag = 20|MPP = 0.5|" in tf.pages[0].description
        assert "Q=70" in tf.pages[0].description
    # Without tissue the slide is all glass.
    empty = write_synthetic_slide(tmp_path / "e.tiff", 300, 300, kind="plain", islands=0, pen=False, blur=False)
    assert not empty.tissue_mask(1).any()
    assert np.abs(_level(empty.path, 0).mean((0, 1)) - GLASS_RGB).max() < 1.5


def test_bigtiff_aperio(tmp_path):
    # Slides of 4 GiB raw and more are written as BigTIFF; readers must still see an Aperio slide.
    s = write_synthetic_slide(tmp_path / "b.svs", 600, 400, levels=(1, 4), bigtiff=True)
    with tifffile.TiffFile(s.path) as tf:
        assert tf.is_bigtiff and tf.is_svs
    openslide = _openslide()
    with openslide.OpenSlide(str(s.path)) as o:
        assert o.properties["openslide.vendor"] == "aperio"
        assert o.level_dimensions == ((600, 400), (150, 100))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "ndpi"},
        {"levels": (2, 4)},
        {"levels": (1, 4, 4)},
        {"tile": 200},
        {"quality": 0},
        {"mpp": 0},
        {"resolution_unit": "furlong"},
        {"islands": 0},
    ],
)
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_synthetic_slide(tmp_path / "x.svs", 512, 512, **kwargs)
    assert not (tmp_path / "x.svs").exists()


def test_scene_layout_is_seeded():
    a, b = make_scene(4000, 3000, seed=9), make_scene(4000, 3000, seed=9)
    assert all(np.array_equal(i.outline, j.outline) for i, j in zip(a.islands, b.islands))
    assert len(make_scene(4000, 3000, islands=7).islands) == 7


# ---- memory ---------------------------------------------------------------------------------------------------

# The child's own peak: VmHWM belongs to the memory map execve created, whereas getrusage's ru_maxrss carries
# over the parent's resident size at fork (the whole pytest process, hundreds of MB once slides are decoded).
_PEAK = textwrap.dedent("""
    import resource, sys
    from slidetiles.slides import write_synthetic_slide
    w, h = int(sys.argv[2]), int(sys.argv[3])
    write_synthetic_slide(sys.argv[1], w, h, kind="aperio")
    try:
        with open("/proc/self/status") as f:
            print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024)
    except OSError:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024))
    """)


def _peak_rss(path, width, height) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path), str(width), str(height)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return int(out.stdout.split()[-1])


@pytest.mark.slow
def test_memory_stays_flat_in_slide_size(tmp_path):
    small = _peak_rss(tmp_path / "small.svs", 2048, 1536)
    big = _peak_rss(tmp_path / "big.svs", 16000, 12000)
    raw = 16000 * 12000 * 3
    # The 576 MB slide is written in well under half its raw size, and only a few tile rows above a tiny slide.
    assert big < raw / 2, (big, raw)
    assert big - small < 64 << 20, (small, big)
    with tifffile.TiffFile(tmp_path / "big.svs") as tf:
        assert [lv.shape[:2] for lv in tf.series[0].levels] == [(12000, 16000), (3000, 4000), (750, 1000)]
