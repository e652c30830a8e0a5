"""Slide QC (Otsu, blur) and background filters (whitespace, grayspace): Slideflow's rules, and how they fare
against the ground truth of a synthetic slide."""

import types

import numpy as np
import pytest
import skimage.color
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from slidetiles.errors import QCError
from slidetiles.slides import make_scene, write_synthetic_slide
from slidetiles.slides.background import (
    DEFAULT_GRAYSPACE_FRACTION,
    DEFAULT_GRAYSPACE_THRESHOLD,
    DEFAULT_WHITESPACE_FRACTION,
    DEFAULT_WHITESPACE_THRESHOLD,
    background_fractions,
    background_keep,
    background_reasons,
    filter_downsample,
)
from slidetiles.slides.qc import (
    blur_mask,
    glass_rgb,
    od_mask,
    otsu_level,
    otsu_mask,
    qc_mask,
    qc_masks,
    tile_keep_from_mask,
)

W, H, MPP = 4096, 3072, 0.5
LEVELS = (1, 4, 16)
TILE = 128  # level-0 px: 64 um tiles, a 32 x 24 grid


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A small Aperio slide (seed 1: black ink, so its pen stroke is low-saturation) read back through JPEG."""
    s = write_synthetic_slide(tmp_path_factory.mktemp("qc") / "s.svs", W, H, mpp=MPP, levels=LEVELS, seed=1)
    with tifffile.TiffFile(s.path) as tf:
        levels = [lvl.asarray() for lvl in tf.series[0].levels]
    return types.SimpleNamespace(slide=s, levels=levels)


@pytest.fixture(scope="module")
def grid(slide):
    """Tile boxes and each tile's ground truth at the Otsu level (downsample 4)."""
    d = LEVELS[otsu_level(slide.slide.level_dimensions)]
    xs, ys = np.meshgrid(np.arange(0, W - TILE + 1, TILE), np.arange(0, H - TILE + 1, TILE))
    boxes = np.stack([xs.ravel(), ys.ravel(), xs.ravel() + TILE, ys.ravel() + TILE], axis=1)
    tissue, pen, blur = (getattr(slide.slide, f"{k}_mask")(d) for k in ("tissue", "pen", "blur"))

    def share(truth):  # fraction of each tile's footprint where ``truth`` holds, via the no-threshold rule
        return np.array([truth[y0 // d : y1 // d, x0 // d : x1 // d].mean() for x0, y0, x1, y1 in boxes])

    t, p, b = share(tissue), share(pen), share(blur)
    return types.SimpleNamespace(
        d=d, boxes=boxes, thumb=slide.levels[LEVELS.index(d)],
        all_tissue=(t == 1) & (p == 0), all_glass=(t == 0) & (p == 0),
        sharp_tissue=(t == 1) & (p == 0) & (b == 0), blurred=b >= 0.9, pen_on_glass=(p >= 0.5) & (t == 0),
    )


# ---- Slideflow's constants and rules --------------------------------------------------------------------------


def test_defaults_are_slideflows(slideflow):
    import importlib

    utils = importlib.import_module("slideflow.slide.utils")
    assert DEFAULT_WHITESPACE_THRESHOLD == utils.DEFAULT_WHITESPACE_THRESHOLD == 230
    assert DEFAULT_WHITESPACE_FRACTION == utils.DEFAULT_WHITESPACE_FRACTION == 1.0
    assert DEFAULT_GRAYSPACE_THRESHOLD == utils.DEFAULT_GRAYSPACE_THRESHOLD == 0.05
    assert DEFAULT_GRAYSPACE_FRACTION == utils.DEFAULT_GRAYSPACE_FRACTION == 0.6


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.just(3))))
def test_background_fractions_are_slideflows_pixel_rules(tiles):
    white, gray = background_fractions(tiles)
    # Whitespace: RGB mean strictly above 230, i.e. integer sum above 690. Grayspace: skimage saturation < 0.05.
    sums = tiles.astype(int).sum(axis=-1)
    assert np.array_equal(white, (sums > 690).mean(axis=(1, 2)))
    sat = skimage.color.rgb2hsv(tiles)[..., 1]
    assert np.array_equal(gray, (sat < 0.05).mean(axis=(1, 2)))
    assert ((0 <= white) & (white <= 1) & (0 <= gray) & (gray <= 1)).all()


def test_grayspace_agrees_with_skimage_for_every_channel_extreme_pair():
    # Saturation depends on a pixel's max and min channel only: all 256 x 256 pairs, the third channel anywhere
    # between them, channels in every order, at thresholds whose float edge cases differ.
    rng = np.random.default_rng(0)
    hi, lo = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    hi, lo = hi[hi >= lo], lo[hi >= lo]
    mid = lo + (rng.random(hi.size) * (hi - lo + 1)).astype(int).clip(max=hi - lo)
    px = np.stack([hi, mid, lo], axis=-1).astype(np.uint8)
    px = np.take_along_axis(px, np.argsort(rng.random(px.shape), axis=-1), axis=-1)
    sat = skimage.color.rgb2hsv(px)[:, 1]
    for threshold in (0.05, 0.1, 1 / 3, 0.0, 1.0):
        _, gray = background_fractions(px[:, None, None, :], 230, threshold)  # each pixel a 1 x 1 tile
        assert np.array_equal(gray, (sat < threshold).astype(float))


def test_background_threshold_edges():
    # Mean exactly 230 is not whitespace, 230.33 is; saturation 0 is grayspace, 0.1 is not. (At exactly 1/20 the
    # answer is whatever skimage's float arithmetic gives, e.g. 10/200 -> 0.04999..., as in Slideflow.)
    px = np.array([[[[230, 230, 230], [231, 230, 230], [200, 200, 200], [200, 180, 200]]]], np.uint8)
    white, gray = background_fractions(px)
    assert white.tolist() == [0.25]
    assert gray.tolist() == [0.75]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=20),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_background_keep_is_strictly_greater_whitespace_first(fracs, ws_limit, gs_limit):
    white, gray = np.array(fracs).T
    reasons = background_reasons(white, gray, ws_limit, gs_limit)
    keep = background_keep(white, gray, ws_limit, gs_limit)
    assert np.array_equal(keep, (white <= ws_limit) & (gray <= gs_limit))
    assert np.array_equal(reasons == "whitespace", white > ws_limit)
    assert np.array_equal(reasons == "grayspace", (white <= ws_limit) & (gray > gs_limit))
    assert np.array_equal(keep, reasons == "")


def test_background_input_errors():
    with pytest.raises(QCError):
        background_fractions(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(QCError):
        background_keep(np.zeros(2), np.zeros(2), whitespace_fraction=1.5)
    with pytest.raises(QCError):
        qc_mask(np.zeros((8, 8, 3), np.uint8), "sharpness")


def test_filter_downsample_is_slideflows_18px_patch():
    assert filter_downsample((1, 4, 16), 299) == (2, 16)
    assert filter_downsample((1, 4, 16, 64), 299, level=1) == (3, 16)  # 64 // 4
    assert filter_downsample((1, 4, 16), 12) == (1, 4)
    assert filter_downsample((1,), 1) == (0, 1)
    assert filter_downsample((1, 4, 6), 64, level=1) == (1, 1)  # 6 // 4 == 1: judged at the read level
    assert filter_downsample((1, 4, 16), 2, level=2) == (2, 1)  # no coarser level below 2 px


def test_otsu_level_is_slideflows(slideflow):
    import importlib

    otsu = importlib.import_module("slideflow.slide.qc.otsu")

    def theirs(dims):
        levels = [{"dimensions": d, "level": i} for i, d in enumerate(dims)]
        return otsu._get_level_for_otsu(types.SimpleNamespace(levels=levels))

    for dims in ([(4096, 3072), (1024, 768), (256, 192)], [(90000, 60000), (22500, 15000), (5625, 3750), (1406, 937)],
                 [(1200, 900)], [(1200, 900), (600, 450)]):
        assert otsu_level(dims) == theirs(dims)
    # A slide under 500 px everywhere: Slideflow means to use the full image (its comment) but indexes its sorted
    # levels twice and gets the smallest; we use the full image.
    assert otsu_level([(400, 300), (100, 75)]) == 0 and theirs([(400, 300), (100, 75)]) == 1


# ---- QC masks agree with Slideflow's own code on the same thumbnail -------------------------------------------


def test_otsu_and_blur_masks_equal_slideflows(slideflow, grid, monkeypatch):
    import importlib

    qc = importlib.import_module("slideflow.slide.qc")
    # Slideflow's QC classes test isinstance(x, sf.WSI), a name its full __init__ exports.
    monkeypatch.setattr(slideflow, "WSI", importlib.import_module("slideflow.slide").WSI, raising=False)
    # Slideflow's masks are True where it filters out.
    assert np.array_equal(otsu_mask(grid.thumb), ~qc.Otsu()(grid.thumb))
    assert np.array_equal(blur_mask(grid.thumb), ~qc.Gaussian()(grid.thumb))
    assert np.array_equal(blur_mask(grid.thumb, 2, 0.03), ~qc.Gaussian(sigma=2, threshold=0.03)(grid.thumb))


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24))),
    st.sampled_from([1.0, 3.0, 4.0, 7.5, 16.0]),
    st.integers(4, 80),
    st.sampled_from([0.0, 0.25, 0.6, 0.9]),
    st.data(),
)
def test_tile_keep_equals_slideflows_apply_qc_mask(slideflow, keep, d, extract_px, threshold, data):
    import importlib

    wsi = importlib.import_module("slideflow.slide.wsi")
    h, w = keep.shape
    n = data.draw(st.integers(1, 12))
    xy = data.draw(hnp.arrays(np.int64, (n, 2), elements=st.integers(0, int(max(w, h) * d))))
    grid_shape = (n, 1)
    # Just enough of a WSI for Slideflow's own apply_qc_mask: tile origins, their grid cells, the slide width.
    fake = types.SimpleNamespace(
        dimensions=(w * d, h * d), full_extract_px=extract_px, qc_masks=[], qc_mask=~keep,
        coord=[(int(x), int(y), i, 0) for i, (x, y) in enumerate(xy)], grid=np.ones(grid_shape, bool),
    )
    wsi.WSI.apply_qc_mask(fake, ~keep, filter_threshold=threshold)
    boxes = np.concatenate([xy, xy + extract_px], axis=1)
    ours = tile_keep_from_mask(keep, (w * d) / w, boxes, threshold)
    assert np.array_equal(ours, fake.grid[:, 0])


def test_tile_keep_min_fraction_is_the_complement():
    keep = np.zeros((10, 10), bool)
    keep[:, :4] = True  # a 10 x 10 tile with 40 % kept, 60 % flagged: kept at 0.6 (strictly more drops it)
    box = np.array([[0, 0, 10, 10]])
    assert tile_keep_from_mask(keep, 1, box).tolist() == [True]
    assert tile_keep_from_mask(keep, 1, box, min_fraction=0.4).tolist() == [True]
    assert tile_keep_from_mask(keep, 1, box, min_fraction=0.5).tolist() == [False]
    assert tile_keep_from_mask(keep, 1, np.array([[200, 200, 210, 210]])).tolist() == [True]  # off the mask


def test_both_is_blur_then_otsu_on_the_blacked_out_thumbnail(grid):
    masks = qc_masks(grid.thumb, "both")
    assert list(masks) == ["blur", "otsu"]
    assert np.array_equal(masks["blur"], blur_mask(grid.thumb))
    assert np.array_equal(masks["otsu"], otsu_mask(grid.thumb * masks["blur"][..., None].astype(np.uint8)))
    assert np.array_equal(qc_mask(grid.thumb, "both"), masks["blur"] & masks["otsu"])
    assert qc_mask(grid.thumb, None).all()
    # Slideflow judges tiles on each mask in turn; judging them once on the AND drops the same tiles.
    one_by_one = [tile_keep_from_mask(m, grid.d, grid.boxes) for m in masks.values()]
    at_once = tile_keep_from_mask(qc_mask(grid.thumb, "both"), grid.d, grid.boxes)
    assert np.array_equal(one_by_one[0] & one_by_one[1], at_once)
    # Slideflow's WSI.qc keyword names reach the blur filter.
    assert np.array_equal(qc_masks(grid.thumb, "blur", blur_radius=2, blur_threshold=0.03)["blur"],
                          blur_mask(grid.thumb, 2, 0.03))


# ---- against the synthetic slide's ground truth ---------------------------------------------------------------


def test_grid_has_enough_of_each_kind(grid):
    # The checks below are meaningless on a handful of tiles.
    assert grid.all_tissue.sum() >= 100 and grid.all_glass.sum() >= 100
    assert grid.blurred.sum() >= 5 and grid.sharp_tissue.sum() >= 80


def test_otsu_keeps_no_glass(grid):
    keep = tile_keep_from_mask(qc_mask(grid.thumb, "otsu"), grid.d, grid.boxes)
    assert not keep[grid.all_glass].any()


@pytest.mark.xfail(
    strict=True,
    reason="the IHC texture is bimodal in saturation and Otsu splits it, not glass from tissue: on this thumbnail "
    "glass is a spike at 5/255 (after the median blur), tissue has a pale mode at ~10-20 (the photograph's "
    "unstained stroma and lumina, neutral grey: 38 % of its pixels under 30/255) and a stained one at ~60-120; Otsu "
    "puts its threshold at ~47, under which fall 47 % of tissue pixels, so ~56 % of all-tissue 64-um tiles survive. "
    "Realistic for lightly counterstained IHC; scaling the stain density (Beer-Lambert) does not lift neutral stroma. "
    "Our 'od' method meets the target (test_od_keeps_95_percent_of_tissue_tiles_and_no_glass)",
)
def test_otsu_keeps_95_percent_of_tissue_tiles(grid):
    keep = tile_keep_from_mask(qc_mask(grid.thumb, "otsu"), grid.d, grid.boxes)
    assert keep[grid.all_tissue].mean() >= 0.95


def test_od_keeps_95_percent_of_tissue_tiles_and_no_glass(grid):
    # Issue #11's target, met by judging tissue by its density against the glass rather than by its colour.
    keep = tile_keep_from_mask(qc_mask(grid.thumb, "od"), grid.d, grid.boxes)
    assert keep[grid.all_tissue].mean() >= 0.95
    assert not keep[grid.all_glass].any()
    # ... but any ink is dense: density alone keeps black ink over glass, which Otsu on saturation removes.
    assert keep[grid.pen_on_glass].all()


def test_od_blur_keeps_sharp_tissue_and_removes_glass_ink_and_blur(grid):
    masks = qc_masks(grid.thumb, "od+blur")
    assert list(masks) == ["blur", "od"]
    assert np.array_equal(masks["od"], od_mask(grid.thumb))  # judged on the whole thumbnail, not a blacked-out one
    keep = tile_keep_from_mask(qc_mask(grid.thumb, "od+blur"), grid.d, grid.boxes)
    assert keep[grid.sharp_tissue].mean() >= 0.95
    assert not keep[grid.all_glass].any() and not keep[grid.pen_on_glass].any()
    assert keep[grid.blurred].mean() <= 0.2


def test_od_glass_reference(grid):
    from slidetiles.slides.synthetic import GLASS_RGB

    # The brightest 1 % of the thumbnail is its glass; an explicit reference gives the same mask.
    ref = glass_rgb(grid.thumb)
    assert np.abs(ref - GLASS_RGB).max() <= 2
    assert np.array_equal(od_mask(grid.thumb), od_mask(grid.thumb, glass=ref))
    # Uniform glass is never tissue, a uniformly darker field (every channel 10 % down) always is.
    glass = np.full((32, 32, 3), GLASS_RGB, np.uint8)
    assert not od_mask(glass).any()
    assert od_mask((glass * 0.9).astype(np.uint8), glass=GLASS_RGB).all()


def test_otsu_removes_black_ink_outside_tissue(slide, grid):
    # Black ink is barely saturated (~32/255), below the threshold Otsu finds between glass and stain.
    assert slide.slide.scene.pen.ink == "black"
    mask = qc_mask(grid.thumb, "otsu")
    ink_on_glass = slide.slide.pen_mask(grid.d) & ~slide.slide.tissue_mask(grid.d)
    assert ink_on_glass.sum() > 1000
    assert mask[ink_on_glass].mean() <= 0.01
    keep = tile_keep_from_mask(mask, grid.d, grid.boxes)
    assert grid.pen_on_glass.sum() >= 2 and not keep[grid.pen_on_glass].any()


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(
            "otsu",
            marks=pytest.mark.xfail(
                strict=True,
                reason="Slideflow's Otsu keeps saturated ink, as its docstring warns: blue ink's saturation (~140/255) "
                "is far above the glass/stain threshold (56), so ink over glass passes as tissue (here 3 of 12 "
                "tissue-free tiles with ink kept, ~99 % of the ink's pixels away from tissue)",
            ),
        ),
        "both",
        "od+blur",
    ],
)
def test_coloured_ink_is_removed(method):
    # Slideflow's remedy is blur first: the ink lies on the coverslip, out of the scanner's focal plane, so the
    # blur filter flags it and 'both' blacks it out before Otsu.
    from scipy.ndimage import distance_transform_edt

    from slidetiles.slides.qc import BLUR_SIGMA

    scene = make_scene(W, H, mpp=MPP, seed=0)
    assert scene.pen.ink == "blue"
    d = 4
    thumb = scene.render(d, 0, 0, W // d, H // d)
    truth = scene.masks(d, 0, 0, W // d, H // d)
    keep = qc_mask(thumb, method)
    # Tiles: every 64-um tile with ink and no tissue is dropped.
    xs, ys = np.meshgrid(np.arange(0, W - TILE + 1, TILE), np.arange(0, H - TILE + 1, TILE))
    boxes = np.stack([xs.ravel(), ys.ravel(), xs.ravel() + TILE, ys.ravel() + TILE], axis=1)
    span = [np.s_[y0 // d : y1 // d, x0 // d : x1 // d] for x0, y0, x1, y1 in boxes]
    inked = np.array([truth["pen"][b].any() and not truth["tissue"][b].any() for b in span])
    assert inked.sum() >= 5
    assert not tile_keep_from_mask(keep, d, boxes)[inked].any()
    # Pixels: the ink over glass is flagged, but within the reach of the blur filter's smoothing (3 sigma) of
    # sharp tissue, where the tissue's edges make the ink look sharp too.
    far = truth["pen"] & (distance_transform_edt(~truth["tissue"]) > 3 * BLUR_SIGMA)
    assert far.sum() > 1000
    assert keep[far].mean() <= 0.05


def test_blur_removes_the_blurred_patch_and_keeps_sharp_tissue(grid):
    keep = tile_keep_from_mask(qc_mask(grid.thumb, "blur"), grid.d, grid.boxes)
    assert keep[grid.blurred].mean() <= 0.2
    assert keep[grid.sharp_tissue].mean() >= 0.95


def test_background_filters_remove_glass_keep_tissue(slide, grid):
    # Slideflow's judging resolution for 128-px level-0 tiles of a (1, 4, 16) pyramid: 8-px patches of level 2.
    level, ratio = filter_downsample(LEVELS, TILE)
    assert (level, ratio) == (2, 16)
    lvl = slide.levels[level]
    p = TILE // ratio
    corners = grid.boxes[:, :2] // ratio
    patches = np.stack([lvl[y : y + p, x : x + p] for x, y in corners])
    white, gray = background_fractions(patches)
    # Defaults: whitespace filtering is off, glass goes by its low saturation.
    reasons = background_reasons(white, gray)
    assert (reasons[grid.all_glass] == "grayspace").all()
    assert (reasons[grid.all_tissue] == "").mean() >= 0.95
    # With whitespace filtering on, glass goes as whitespace first.
    reasons = background_reasons(white, gray, whitespace_fraction=0.6)
    assert (reasons[grid.all_glass] == "whitespace").all()
    assert (reasons[grid.all_tissue] == "").mean() >= 0.95


def test_blur_judged_on_a_finer_thumbnail(slide, grid):
    # Slideflow's blur thumbnail (4x the tile's mpp) need not be the Otsu level: here level 0 halved, its mask
    # brought to the Otsu thumbnail's size.
    finer = slide.slide.render(0, 0, W // 2, H // 2, downsample=2)
    masks = qc_masks(grid.thumb, "both", blur_rgb=finer)
    assert masks["blur"].shape == masks["otsu"].shape == grid.thumb.shape[:2]
    assert np.array_equal(masks["blur"], blur_mask(finer)[::2, ::2])  # OpenCV nearest neighbour, 2:1
    keep = tile_keep_from_mask(qc_mask(grid.thumb, "blur", blur_rgb=finer), grid.d, grid.boxes)
    assert keep[grid.blurred].mean() <= 0.2
    assert keep[grid.sharp_tissue].mean() >= 0.95
