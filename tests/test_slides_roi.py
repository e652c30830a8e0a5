"""Regions of interest: reading Slideflow ROI CSVs and keeping tiles as Slideflow does.

The reference is Slideflow 3.0.2 itself: its WSI class reading the same CSV on a real (synthetic) slide, and
rasterio, the rasterizer it decides tile centres with.
"""

import importlib
import pickle

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidetiles.errors import MissingROIError, ROIError
from slidetiles.slides import ROI, find_roi_file, load_rois, roi_keep_mask

TILE = 64


def write_csv(path, text: str, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def grid_boxes(width: int, height: int, tile: int = TILE, stride: int | None = None) -> np.ndarray:
    stride = stride or tile
    xs, ys = np.meshgrid(np.arange(0, width - tile + 1, stride), np.arange(0, height - tile + 1, stride))
    x, y = xs.ravel().astype(float), ys.ravel().astype(float)
    return np.stack([x, y, x + tile, y + tile], axis=1)


def square(name, x0, y0, x1, y1, label=None):
    tail = "" if label is None else f",{label}"
    return "".join(f"{name},{x},{y}{tail}\n" for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


# ---- reading --------------------------------------------------------------------------------------------------


def test_qupath_export_any_header_case_extra_columns(tmp_path):
    # QuPath's Slideflow export script writes ROI_name,X_base,Y_base; spreadsheets add a byte-order mark.
    text = "ROI_Name,Extra,X_BASE,y_base\n" + "".join(
        f"{name},z,{x},{y}\n"
        for name, x, y in [
            ("a", 0, 0),
            ("b", 500, 500),
            ("a", 100, 0),
            ("b", 700, 500),
            ("a", 100, 100),
            ("b", 700, 700),
            ("a", 0, 100),
        ]
    )
    rois = load_rois(write_csv(tmp_path / "s.csv", "\ufeff" + text))
    assert [r.name for r in rois] == ["a", "b"]
    assert rois[0].polygon.equals(shapely.box(0, 0, 100, 100))
    # "b" has three vertices: a triangle.
    assert rois[1].polygon.area == pytest.approx(200 * 200 / 2)
    assert all(r.label is None for r in rois)


def test_labels_first_row_wins_and_empty_is_none(tmp_path):
    text = "roi_name,x_base,y_base,label\n" + square("t", 0, 0, 10, 10, "tumor") + square("n", 20, 0, 30, 10, "")
    rois = load_rois(write_csv(tmp_path / "s.csv", text))
    assert [(r.name, r.label) for r in rois] == [("t", "tumor"), ("n", None)]


def test_coordinates_truncated_to_pixels_as_slideflow(tmp_path):
    text = "roi_name,x_base,y_base\na,0.9,0.9\na,10.99,0\na,10.5,1e1\na,-0.7,10\n"
    (roi,) = load_rois(write_csv(tmp_path / "s.csv", text))
    assert roi.polygon.equals(shapely.box(0, 0, 10, 10))


def test_nested_polygon_is_a_hole_and_island_in_hole_is_roi(tmp_path):
    text = "roi_name,x_base,y_base\n" + square("hole", 100, 100, 900, 900) + square("outer", 0, 0, 1000, 1000)
    text += square("island", 400, 400, 600, 600) + square("in_island", 450, 450, 550, 550)
    rois = load_rois(write_csv(tmp_path / "s.csv", text))
    by_name = {r.name: r.polygon for r in rois}
    assert sorted(by_name) == ["island", "outer"]
    assert by_name["outer"].equals(shapely.box(0, 0, 1000, 1000).difference(shapely.box(100, 100, 900, 900)))
    # Depth 3 is a hole again, of the island.
    assert len(by_name["island"].interiors) == 1
    assert by_name["island"].area == 200 * 200 - 100 * 100


def test_polygons_of_other_labels_are_not_holes(tmp_path):
    text = (
        "roi_name,x_base,y_base,label\n" + square("o", 0, 0, 100, 100, "stroma") + square("i", 20, 20, 40, 40, "tumor")
    )
    rois = load_rois(write_csv(tmp_path / "s.csv", text))
    assert [len(r.polygon.interiors) for r in rois] == [0, 0]


def test_identical_polygons_are_not_holes_of_each_other(tmp_path):
    # Slideflow skips containers equal to the polygon itself, so an exact duplicate stays a ROI of its own.
    text = "roi_name,x_base,y_base\n" + square("a", 0, 0, 100, 100) + square("b", 0, 0, 100, 100)
    text += square("c", 10, 10, 20, 20)
    rois = load_rois(write_csv(tmp_path / "s.csv", text))
    assert [(r.name, len(r.polygon.interiors)) for r in rois] == [("a", 1), ("b", 0)]


def test_self_intersecting_polygon_repaired_into_parts(tmp_path):
    # A bow tie: make_valid gives its two triangles, each a ROI of the same name.
    text = "roi_name,x_base,y_base\nbow,0,0\nbow,100,100\nbow,100,0\nbow,0,100\n"
    rois = load_rois(write_csv(tmp_path / "s.csv", text))
    assert [r.name for r in rois] == ["bow", "bow"]
    assert all(r.polygon.is_valid for r in rois)
    assert sum(r.polygon.area for r in rois) == pytest.approx(2 * 50 * 100 / 2)


def test_header_only_gives_no_rois_and_blank_lines_skipped(tmp_path):
    assert load_rois(write_csv(tmp_path / "a.csv", "roi_name,x_base,y_base\n")) == []
    text = "roi_name,x_base,y_base\n\n" + square("a", 0, 0, 5, 5) + "\n"
    assert len(load_rois(write_csv(tmp_path / "b.csv", text))) == 1


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("", 1, "empty"),
        ("name,x,y\na,1,2\n", 1, "lacks roi_name, x_base, y_base"),
        ("roi_name,x_base\na,1\n", 1, "lacks y_base"),
        ("roi_name,x_base,y_base\na,1,2\na,3,4\na,x5,6\n", 4, "x_base is 'x5', not a number"),
        ("roi_name,x_base,y_base\na,1,2\na,3\n", 3, "has 2 field(s)"),
        ("roi_name,x_base,y_base\na,1,nan\n", 2, "must be finite"),
        ("roi_name,x_base,y_base\nb,0,0\nb,0,0\nb,5,5\nb,5,5\n", 2, "2 distinct point(s)"),
        (
            "roi_name,x_base,y_base\n" + square("z", 0, 0, 9, 9) + "line,0,0\nline,5,5\nline,10,10\n",
            6,
            "encloses no area",
        ),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, text, line, words):
    path = write_csv(tmp_path / "slide.csv", text)
    with pytest.raises(ROIError) as info:
        load_rois(path)
    assert str(path) in str(info.value) and f"line {line}:" in str(info.value) and words in str(info.value)
    assert (info.value.path, info.value.line) == (str(path), line)
    assert isinstance(info.value, ValueError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)


def test_not_utf8_and_missing_file(tmp_path):
    path = write_csv(tmp_path / "s.csv", "roi_name,x_base,y_base\nstr\u00f6ma,1,2\n", encoding="utf-16")
    with pytest.raises(ROIError, match="UTF-8|readable|lacks"):
        load_rois(path)
    with pytest.raises(ROIError, match="cannot open"):
        load_rois(tmp_path / "absent.csv")


def test_skip_invalid_warns_and_keeps_the_rest(tmp_path):
    text = "roi_name,x_base,y_base\ndot,5,5\n" + square("a", 0, 0, 10, 10)
    path = write_csv(tmp_path / "s.csv", text)
    with pytest.warns(UserWarning, match="line 2"):
        rois = load_rois(path, skip_invalid=True)
    assert [r.name for r in rois] == ["a"]


def test_find_roi_file(tmp_path):
    write_csv(tmp_path / "slide-1.csv", "roi_name,x_base,y_base\n")
    (tmp_path / "dir.csv").mkdir()
    assert find_roi_file("slide-1", tmp_path) == tmp_path / "slide-1.csv"
    assert find_roi_file("slide-2", tmp_path) is None
    assert find_roi_file("dir", tmp_path) is None
    assert find_roi_file("slide-1", None) is None


# ---- keeping tiles --------------------------------------------------------------------------------------------


def test_methods_on_a_square():
    rois = [ROI("a", shapely.box(0, 0, 128, 128))]
    boxes = grid_boxes(256, 128)  # two columns inside, two outside
    inside = np.array([True, True, False, False] * 2)
    assert roi_keep_mask(boxes, rois).tolist() == inside.tolist()
    assert roi_keep_mask(boxes, rois, "inside").tolist() == inside.tolist()
    assert roi_keep_mask(boxes, rois, "outside").tolist() == (~inside).tolist()
    assert roi_keep_mask(boxes, rois, "ignore").all()
    assert roi_keep_mask(boxes, [], "auto").all() and roi_keep_mask(boxes, [], "ignore").all()
    assert roi_keep_mask(np.zeros((0, 4)), rois, "inside").shape == (0,)


def test_fraction_thresholds():
    rois = [ROI("a", shapely.box(0, 0, 100, 64))]
    boxes = np.array([[0, 0, 64, 64], [64, 0, 128, 64], [100, 0, 164, 64]], dtype=float)  # 1, 36/64, 0 inside
    assert roi_keep_mask(boxes, rois, "inside", 0.5).tolist() == [True, True, False]
    assert roi_keep_mask(boxes, rois, "inside", 0.6).tolist() == [True, False, False]
    assert roi_keep_mask(boxes, rois, "inside", 0).tolist() == [True, True, True]
    assert roi_keep_mask(boxes, rois, "inside", 1).tolist() == [True, False, False]
    # 'outside' keeps tiles with at least f of their area outside.
    assert roi_keep_mask(boxes, rois, "outside", 0.4).tolist() == [False, True, True]
    assert roi_keep_mask(boxes, rois, "outside", 0.5).tolist() == [False, False, True]
    # A tile half inside passes 0.5 either way, as Slideflow's "> 1 - f" comparison does.
    half = np.array([[36, 0, 164, 64]], dtype=float)
    assert roi_keep_mask(half, rois, "inside", 0.5).tolist() == [True]
    assert roi_keep_mask(half, rois, "outside", 0.5).tolist() == [True]


def test_holes_excluded_from_area():
    ring = shapely.box(0, 0, 256, 256).difference(shapely.box(64, 64, 192, 192))
    boxes = grid_boxes(256, 256)
    keep = roi_keep_mask(boxes, [ROI("r", ring)], "inside").reshape(4, 4)
    assert keep.tolist() == [[True] * 4, [True, False, False, True], [True, False, False, True], [True] * 4]
    share = roi_keep_mask(boxes + 32, [ROI("r", ring)], "inside", 0.5).reshape(4, 4)
    assert share[1, 1] == False and share[0, 0] == True  # noqa: E712


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(method="Inside"), "roi_method is 'Inside'"),
        (dict(method=None), "roi_method is None"),
        (dict(filter_method="centre"), "'center' or a fraction"),
        (dict(filter_method=1.5), "between 0 and 1"),
        (dict(filter_method=-0.1), "between 0 and 1"),
        (dict(filter_method=float("nan")), "between 0 and 1"),
        (dict(filter_method=True), "'center' or a fraction"),
        (dict(filter_method=None), "'center' or a fraction"),
    ],
)
def test_bad_arguments(kwargs, words):
    with pytest.raises(ROIError, match=words.replace("(", r"\(")):
        roi_keep_mask(grid_boxes(128, 128), [ROI("a", shapely.box(0, 0, 9, 9))], **kwargs)


@pytest.mark.parametrize("boxes", [np.zeros((3, 3)), np.zeros(4), [[0, 0, 0, 5]], [[0, 0, np.inf, 5]]])
def test_bad_boxes(boxes):
    with pytest.raises(ROIError, match="tile"):
        roi_keep_mask(boxes, [ROI("a", shapely.box(0, 0, 9, 9))], "inside")


@pytest.mark.parametrize("method", ["inside", "outside"])
def test_inside_or_outside_without_rois_is_an_error(method):
    with pytest.raises(MissingROIError, match=method):
        roi_keep_mask(grid_boxes(128, 128), [], method)


def test_hundred_thousand_tiles_with_a_detailed_ring():
    # Sized like a real slide: 100,000 overlapping tiles and a 4096-vertex ring with a hole (the vectorised path
    # decides this in well under a second; per-tile Python would take minutes, which a test run would show).
    disk = shapely.Point(5000, 5000).buffer(4000, 1024).difference(shapely.Point(5000, 5000).buffer(1500, 1024))
    boxes = grid_boxes(10016, 10400, stride=32)[:100_000]
    rois = [ROI("d", disk)]
    centre = roi_keep_mask(boxes, rois, "inside")
    share = roi_keep_mask(boxes, rois, "inside", 0.5)
    assert len(centre) == 100_000 and 0 < centre.sum() < len(centre)
    # Away from the boundary the centre and the share agree exactly.
    tiles, boundary = shapely.box(*boxes.T), disk.boundary
    shapely.prepare([disk, boundary])
    crossing = shapely.intersects(boundary, tiles)
    assert 0 < crossing.sum() < len(boxes) // 10
    assert (centre == share)[~crossing].all()
    whole = shapely.contains(disk, tiles)
    assert centre[whole].all() and (centre.sum() - whole.sum()) < crossing.sum()


# ---- properties -----------------------------------------------------------------------------------------------

coords = st.integers(0, 40).map(lambda v: v * 16)


@st.composite
def nested_squares(draw):
    """An outer square, a hole square inside it and maybe an island inside the hole, as CSV rows."""
    x0, y0 = draw(coords), draw(coords)
    size = draw(st.integers(12, 30)) * 16
    inset = draw(st.integers(1, size // 16 // 2 - 4)) * 16
    hole = (x0 + inset, y0 + inset, x0 + size - inset, y0 + size - inset)
    island = None
    if draw(st.booleans()) and hole[2] - hole[0] > 96:
        island = (hole[0] + 32, hole[1] + 32, hole[2] - 32, hole[3] - 32)
    return (x0, y0, x0 + size, y0 + size), hole, island


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nested_squares(), st.integers(0, 63), st.integers(0, 63), st.sampled_from([0.25, 0.5, 1.0]))
def test_inside_outside_complementary_and_agree_on_whole_tiles(tmp_path, squares, dx, dy, fraction):
    outer, hole, island = squares
    text = "roi_name,x_base,y_base\n" + square("outer", *outer) + square("hole", *hole)
    if island:
        text += square("island", *island)
    rois = load_rois(write_csv(tmp_path / "p.csv", text))
    truth = shapely.box(*outer).difference(shapely.box(*hole))
    if island:
        truth = truth.union(shapely.box(*island))
    assert shapely.union_all([r.polygon for r in rois]).symmetric_difference(truth).area == 0

    boxes = grid_boxes(1200, 1200) + np.array([dx, dy, dx, dy])
    tiles = shapely.box(*boxes.T)
    whole_in, whole_out = shapely.within(tiles, truth), shapely.disjoint(tiles, truth)
    inside_c, outside_c = roi_keep_mask(boxes, rois, "inside"), roi_keep_mask(boxes, rois, "outside")
    assert (inside_c ^ outside_c).all()
    for mask_in, mask_out in [
        (inside_c, outside_c),
        (roi_keep_mask(boxes, rois, "inside", fraction), roi_keep_mask(boxes, rois, "outside", fraction)),
    ]:
        assert mask_in[whole_in].all() and not mask_in[whole_out].any()
        assert mask_out[whole_out].all() and not mask_out[whole_in].any()
    # A tile kept for any fraction is kept for every smaller one.
    assert (roi_keep_mask(boxes, rois, "inside", fraction) <= roi_keep_mask(boxes, rois, "inside", 0.1)).all()


@st.composite
def rectilinear(draw):
    """A union of axis-parallel rectangles with corners on pixel edges and centres (half pixels)."""
    half = st.integers(0, 24).map(lambda v: v / 2)
    rects = []
    for _ in range(draw(st.integers(1, 3))):
        x = sorted(draw(st.lists(half, min_size=2, max_size=2, unique=True)))
        y = sorted(draw(st.lists(half, min_size=2, max_size=2, unique=True)))
        rects.append(shapely.box(x[0], y[0], x[1], y[1]))
    area = shapely.union_all(rects)
    if draw(st.booleans()):
        area = area.difference(shapely.box(3.5, 3.5, 6.5, 7))
    return area


@st.composite
def rectilinear_with_holes(draw):
    area = draw(rectilinear())
    # Rectangles cut out of the inside are holes whose edges run through pixel centres too.
    for _ in range(draw(st.integers(0, 2))):
        x = draw(st.integers(0, 20)) / 2
        y = draw(st.integers(0, 20)) / 2
        area = area.difference(shapely.box(x, y, x + draw(st.integers(1, 6)) / 2, y + draw(st.integers(1, 6)) / 2))
    return area


simple_polygon = (
    st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24)), min_size=3, max_size=6)
    .map(lambda pts: shapely.Polygon([(x / 2, y / 2) for x, y in pts]))
    .filter(lambda p: p.is_valid and p.area > 0)
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(rectilinear_with_holes(), simple_polygon).filter(lambda a: a.area > 0))
def test_centre_rule_matches_slideflows_rasterizer(slideflow, area):
    # Slideflow keeps a tile by centre by rasterising the ROIs with rasterio onto the tile grid (a cell per tile).
    # With vertices on pixel edges and centres, many centres lie exactly on edges: the half-open rule decides.
    rasterio_features = importlib.import_module("rasterio.features")
    n = 12
    raster = rasterio_features.rasterize([area], out_shape=(n, n), all_touched=False).astype(bool)
    boxes = grid_boxes(n, n, tile=1)
    ours = roi_keep_mask(boxes, [ROI("p", p) for p in shapely.get_parts(area)], "inside")
    assert ours.reshape(n, n).tolist() == raster.tolist()


# ---- against Slideflow's own WSI -------------------------------------------------------------------------------

SLIDE_W, SLIDE_H = 1024, 768


@pytest.fixture(scope="module")
def slide_with_rois(tmp_path_factory):
    from slidetiles.slides import write_synthetic_slide

    root = tmp_path_factory.mktemp("roi-slide")
    slide = write_synthetic_slide(root / "s1.svs", SLIDE_W, SLIDE_H, levels=(1, 4), islands=1, pen=False, blur=False)
    rois = root / "rois"
    rois.mkdir()
    # QuPath-style export: an outer polygon with slanted edges, a hole whose edges run through tile centres, an
    # island in it, another label overlapping, a bow tie, and fractional coordinates Slideflow truncates.
    text = "ROI_name,X_base,Y_base,label\n"
    text += "".join(f"outer,{x},{y},t\n" for x, y in [(40.7, 30), (990, 70.2), (930, 700), (60, 740.9), (20, 400)])
    text += square("hole", 224, 160, 672, 544, "t") + square("island", 352, 288, 480, 416, "t")
    text += square("other", 600, 500, 1000, 760, "s")
    text += "".join(f"bow,{x},{y},\n" for x, y in [(700, 20), (1010, 300), (1010, 20), (700, 300)])
    write_csv(rois / "s1.csv", text)
    return slide.path, rois


def slideflow_wsi(slideflow, slide_with_rois, **kwargs):
    path, roi_dir = slide_with_rois
    sf_slide = importlib.import_module("slideflow.slide")
    # 64 px tiles at 0.25 um/px: the tile grid maps onto the slide by powers of two, so Slideflow's rasterised
    # centre test is exact, not approximate.
    return sf_slide.WSI(
        str(path), tile_px=TILE, tile_um=16, roi_dir=str(roi_dir), origin=(0, 0), verbose=False, **kwargs
    )


def slideflow_keep(wsi):
    coord = np.asarray(wsi.coord)
    boxes = np.stack(
        [coord[:, 0], coord[:, 1], coord[:, 0] + wsi.full_extract_px, coord[:, 1] + wsi.full_extract_px], 1
    )
    return boxes.astype(float), wsi.grid[coord[:, 2], coord[:, 3]].astype(bool)


def test_same_roi_area_as_slideflow(slideflow, slide_with_rois):
    wsi = slideflow_wsi(slideflow, slide_with_rois)
    theirs = shapely.union_all([r.poly for r in wsi.rois])
    ours = load_rois(find_roi_file("s1", slide_with_rois[1]))
    assert shapely.union_all([r.polygon for r in ours]).symmetric_difference(theirs).area < 1e-6
    assert {r.name for r in ours} == {r.name for r in wsi.rois} == {"outer", "island", "other", "bow"}
    holes = {r.name: len(r.holes) for r in wsi.rois}
    assert {r.name: len(r.polygon.interiors) for r in ours} == holes == {"outer": 1, "island": 0, "other": 0, "bow": 0}


@pytest.mark.parametrize("method", ["auto", "inside", "outside", "ignore"])
def test_centre_decisions_same_as_slideflow(slideflow, slide_with_rois, method):
    wsi = slideflow_wsi(slideflow, slide_with_rois, roi_method=method)
    boxes, theirs = slideflow_keep(wsi)
    ours = roi_keep_mask(boxes, load_rois(slide_with_rois[1] / "s1.csv"), method)
    assert 0 < theirs.sum() < len(theirs) or method == "ignore"
    assert ours.tolist() == theirs.tolist()


@pytest.mark.parametrize("method, fraction", [("inside", 0.5), ("inside", 0.9), ("outside", 0.3), ("outside", 0.75)])
def test_fraction_decisions_same_as_slideflow(slideflow, slide_with_rois, method, fraction):
    wsi = slideflow_wsi(slideflow, slide_with_rois, roi_method=method, roi_filter_method=fraction)
    boxes, theirs = slideflow_keep(wsi)
    rois = load_rois(slide_with_rois[1] / "s1.csv")
    ours = roi_keep_mask(boxes, rois, method, fraction)
    area = shapely.union_all([r.polygon for r in rois])
    share = shapely.area(shapely.intersection(shapely.box(*boxes.T), area)) / TILE**2
    assert ((share > 0) & (share < 1)).sum() > 20 and (share == 0.5).any()
    # Slideflow counts the share on a 50 x 50 raster per tile, which could tip a tile within a few percent of the
    # threshold; here the edges fall on that raster's lines, so every tile, ties at exactly f included, agrees.
    assert ours.tolist() == theirs.tolist()
