"""Regions of interest: Slideflow's ROI CSV files, and which tiles they keep.

A ROI file is ``<roi_dir>/<slide name>.csv`` with the columns ``roi_name, x_base, y_base`` and an optional
``label`` (headers in any case, other columns ignored): one row per vertex, in level-0 pixels, the rows of one
polygon sharing a name. This is what Slideflow reads and what its QuPath export script writes.

We follow Slideflow 3.0.2 (``slideflow.slide.WSI.load_csv_roi`` and ``_find_and_process_holes``, and the tile
grid of ``WSI._build_coord``) wherever it decides something, so that the same CSV keeps the same tiles:

- coordinates are truncated to whole pixels (``int(float(x))``);
- a self-intersecting polygon is repaired with ``shapely.make_valid``, which may split it into several parts;
- a polygon lying inside another polygon of the same label is a hole in it; a polygon inside a hole is an island
  of ROI again, and so on, alternately;
- ``roi_method``: ``'auto'`` is ``'inside'`` when the slide has ROIs and keeps every tile otherwise; ``'ignore'``
  keeps every tile; ``'inside'``/``'outside'`` without any ROI is an error;
- ``roi_filter_method='center'`` keeps a tile by its centre; a number ``f`` keeps it when at least ``f`` of its
  area is inside (``'inside'``) or outside (``'outside'``) the ROIs. A centre exactly on an edge is decided as
  GDAL's rasterizer, which Slideflow uses, decides it (see :func:`_on_boundary_inside`).

Where Slideflow only approximates (it rasterises the polygons onto the tile grid, ignoring the grid's origin and
using cell centres that drift from the tile centres when tiles overlap; fractions are counted on a 50 x 50 raster
per tile) we compute the exact geometry, which is what Slideflow's approximation aims at.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import shapely

from slidetiles.errors import MissingROIError, ROIError

__all__ = ["ROI", "ROI_METHODS", "find_roi_file", "load_rois", "roi_keep_mask"]

#: The values of ``roi_method`` Slideflow documents.
ROI_METHODS = ("auto", "inside", "outside", "ignore")

_REQUIRED = ("roi_name", "x_base", "y_base")


@dataclass(frozen=True)
class ROI:
    """One region of interest: a polygon in level-0 pixels, possibly with holes.

    A named polygon of the CSV that ``make_valid`` splits, or that its holes cut apart, gives one ROI per part,
    all with the same name and label.

    Example:
        >>> import shapely
        >>> roi = ROI("tumour", shapely.box(0, 0, 100, 50), label="T")
        >>> roi.polygon.area
        5000.0
    """

    name: str
    polygon: shapely.Polygon
    label: str | None = None


def find_roi_file(slide_name: str, roi_dir: str | os.PathLike | None) -> Path | None:
    """The ROI file of a slide, ``<roi_dir>/<slide_name>.csv``, or None when there is none.

    Example:
        >>> find_roi_file("TCGA-01", "/nonexistent") is None
        True
    """
    if roi_dir is None:
        return None
    path = Path(roi_dir) / f"{slide_name}.csv"
    return path if path.is_file() else None


# --------------------------------------------------------------------------------------------------------------
# Reading


@dataclass
class _Named:
    """The rows of one roi_name: where it starts in the file, its label, its vertices."""

    name: str
    label: str | None
    line: int
    points: list


def _read_rows(path: Path) -> list[_Named]:
    try:
        # utf-8-sig: spreadsheet programs put a byte-order mark before the header.
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ROIError(f"cannot open the ROI file ({exc.strerror or exc})", path) from exc
    named: dict[str, _Named] = {}
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise ROIError("the file is empty; a ROI CSV needs the header roi_name,x_base,y_base", path, 1)
            columns = [h.strip().lower() for h in header]
            missing = [c for c in _REQUIRED if c not in columns]
            if missing:
                raise ROIError(
                    f"the header {','.join(header)!r} lacks {', '.join(missing)}; a ROI CSV needs the columns "
                    "roi_name, x_base, y_base (any case) and optionally label",
                    path,
                    reader.line_num,
                )
            i_name, i_x, i_y = (columns.index(c) for c in _REQUIRED)
            i_label = columns.index("label") if "label" in columns else None
            width = max(i for i in (i_name, i_x, i_y, i_label) if i is not None) + 1
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) < width:
                    raise ROIError(
                        f"the row has {len(row)} field(s), the header asks for at least {width}; "
                        "fix or remove the row",
                        path,
                        line,
                    )
                x, y = _coordinate(row[i_x], "x_base", path, line), _coordinate(row[i_y], "y_base", path, line)
                name = row[i_name]
                if name not in named:
                    # As Slideflow: a ROI's label is the one on its first row; an empty label is no label.
                    label = row[i_label] if i_label is not None else None
                    named[name] = _Named(name, label or None, line, [])
                named[name].points.append((x, y))
        except csv.Error as exc:
            raise ROIError(f"not a readable CSV ({exc})", path, reader.line_num) from exc
        except UnicodeDecodeError as exc:
            raise ROIError(f"not UTF-8 text ({exc.reason}); save the CSV as UTF-8", path) from exc
    return list(named.values())


def _coordinate(text: str, column: str, path: Path, line: int) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ROIError(f"{column} is {text!r}, not a number; coordinates are level-0 pixels", path, line) from None
    if not math.isfinite(value):
        raise ROIError(f"{column} is {text!r}; coordinates must be finite level-0 pixels", path, line)
    # Slideflow truncates to whole pixels; doing the same keeps tile decisions identical at the edges.
    return int(value)


def _area_of(item: _Named, path: Path) -> shapely.Polygon | shapely.MultiPolygon | None:
    """The polygonal area a named ROI's vertices enclose after repair; None when it encloses none."""
    if len(set(item.points)) < 3:
        raise ROIError(
            f"ROI {item.name!r} has {len(set(item.points))} distinct point(s); a polygon needs at least 3",
            path,
            item.line,
        )
    repaired = shapely.make_valid(shapely.Polygon(item.points))
    # A repaired outline may shed zero-area lines and points: only its polygons are ROI area.
    parts = [g for g in shapely.get_parts(repaired) if isinstance(g, shapely.Polygon) and not g.is_empty]
    if not parts:
        raise ROIError(f"ROI {item.name!r} encloses no area (its points lie on one line)", path, item.line)
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _nest(items: list[_Named], areas: list) -> list[tuple[int, list[int]]]:
    """Which ROIs are outer areas and which are their holes, as Slideflow's ``_find_and_process_holes``.

    Largest first, a polygon contained by no other of its label is outer; one whose smallest container is outer
    is a hole of it; one whose smallest container is a hole is an island, outer again. Returns (outer, holes)
    pairs of indices in file order.
    """
    order = sorted(range(len(items)), key=lambda i: areas[i].area, reverse=True)
    holes: dict[int, list[int]] = {}
    for label in dict.fromkeys(items[i].label for i in order):
        group = [i for i in order if items[i].label == label]
        geoms = [areas[i] for i in group]
        tree = shapely.STRtree(geoms)
        for k, i in enumerate(group):
            # `!=` is shapely's structural inequality, as in Slideflow: an exact duplicate is no container.
            containers = [j for j in tree.query(geoms[k]) if geoms[j] != geoms[k] and geoms[j].contains(geoms[k])]
            if not containers:
                holes[i] = []
                continue
            smallest = min(containers, key=lambda j: geoms[j].area)
            # Slideflow finds the container back by equality, i.e. the first equal polygon in its list.
            outer = group[next(j for j, g in enumerate(geoms) if g == geoms[smallest])]
            if outer in holes:
                holes[outer].append(i)
            else:
                holes[i] = []
    return [(i, holes[i]) for i in sorted(holes)]


def load_rois(path: str | os.PathLike, *, skip_invalid: bool = False) -> list[ROI]:
    """Read a Slideflow ROI CSV: one :class:`ROI` per polygon, holes cut out.

    Args:
        path: the CSV (``roi_name, x_base, y_base[, label]``, headers in any case, one row per vertex).
        skip_invalid: leave out, with a warning, a ROI with fewer than 3 distinct points or no area, as
            Slideflow does, instead of raising.

    Returns:
        The ROIs in the order their names first appear; a polygon inside another of the same label is not a ROI
        of its own but a hole in it.

    Raises:
        ROIError: the file cannot be read, lacks a column, or a row or a polygon is malformed; the message names
            the file and the 1-based line.

    Example:
        >>> rois = load_rois("rois/slide1.csv")  # doctest: +SKIP
        >>> [(r.name, r.label, len(r.polygon.interiors)) for r in rois]  # doctest: +SKIP
        [('tumour', None, 1)]
    """
    path = Path(path)
    items, areas = [], []
    for item in _read_rows(path):
        try:
            area = _area_of(item, path)
        except ROIError as exc:
            if not skip_invalid:
                raise
            warnings.warn(f"skipping an invalid ROI: {exc}", stacklevel=2)
            continue
        items.append(item)
        areas.append(area)
    rois = []
    for outer, holes in _nest(items, areas):
        geom = areas[outer]
        for hole in holes:
            geom = geom.difference(areas[hole])
        item = items[outer]
        rois += [ROI(item.name, p, item.label) for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon)]
    return rois


# --------------------------------------------------------------------------------------------------------------
# Filtering


def _check_arguments(method, filter_method) -> None:
    if not isinstance(method, str) or method not in ROI_METHODS:
        raise ROIError(f"roi_method is {method!r}; use one of {', '.join(map(repr, ROI_METHODS))}")
    if isinstance(filter_method, str):
        if filter_method != "center":
            raise ROIError(
                f"roi_filter_method is {filter_method!r}; use 'center' or a fraction of the tile between 0 and 1"
            )
        return
    if isinstance(filter_method, (bool, np.bool_)) or not isinstance(filter_method, (int, float, np.number)):
        raise ROIError(
            f"roi_filter_method is {filter_method!r}; use 'center' or a fraction of the tile between 0 and 1"
        )
    if not 0 <= filter_method <= 1:
        raise ROIError(f"roi_filter_method is {filter_method!r}; a fraction of the tile must be between 0 and 1")


def _check_boxes(tile_boxes) -> np.ndarray:
    boxes = np.asarray(tile_boxes, dtype=float)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ROIError(f"tile_boxes has shape {boxes.shape}; it must be (N, 4): level-0 x0, y0, x1, y1 per tile")
    if not np.isfinite(boxes).all():
        raise ROIError("tile_boxes holds a NaN or infinite coordinate")
    bad = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    if bad.size:
        raise ROIError(f"tile box {bad[0]} is {boxes[bad[0]].tolist()}; it needs x1 > x0 and y1 > y0")
    return boxes


def _edges(area) -> tuple[np.ndarray, np.ndarray]:
    """Every ring's edges of a (multi)polygon as rows x1, y1, x2, y2, and whether each edge's ring is clockwise."""
    rows, clockwise = [], []
    for ring in shapely.get_rings(shapely.get_parts(area)):
        xy = shapely.get_coordinates(ring)
        rows.append(np.hstack([xy[:-1], xy[1:]]))
        clockwise.append(np.full(len(xy) - 1, not shapely.is_ccw(ring)))
    return np.vstack(rows), np.concatenate(clockwise)


def _on_boundary_inside(area, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """For points on the ROI boundary: inside or not, as GDAL's rasterizer (which Slideflow uses) decides.

    Slideflow rasterises the ROIs with ``rasterio`` and a cell is in when its centre is; a centre on an edge is
    decided by GDAL's scanline fill (``GDALdllImageFilledPolygon``): on each scanline it pairs the crossings of
    edges whose y range is half-open ``[ymin, ymax)`` and fills from right after one crossing up to and including
    the next, so a centre on an edge counts when the point just left of it (and just below, in y) is inside. On
    top of that it burns the horizontal edges that run towards -x once it has turned every ring clockwise, that
    is the edges with their ring's inside towards +y: the top edge of an outline and the top edge of a hole too.
    We evaluate that exactly, with cross products instead of divisions, a few thousand points at a time.
    """
    edges, clockwise = _edges(area)
    x1, y1, x2, y2 = (edges[:, k][None, :] for k in range(4))
    low, high = np.minimum(y1, y2), np.maximum(y1, y2)
    # Orient every edge upwards so the sign test below means "crossing left of the point".
    flip = y1 > y2
    ax, ay = np.where(flip, x2, x1), np.where(flip, y2, y1)
    bx, by = np.where(flip, x1, x2), np.where(flip, y1, y2)
    burnt = (y1 == y2) & ((x2 < x1) == clockwise[None, :])
    left_x, right_x = np.minimum(x1, x2), np.maximum(x1, x2)
    result = np.empty(len(x), dtype=bool)
    step = max(1, 1_000_000 // len(edges))
    for start in range(0, len(x), step):
        px, py = x[start : start + step, None], y[start : start + step, None]
        spans = (low <= py) & (py < high)
        left = (py - ay) * (bx - ax) < (px - ax) * (by - ay)
        crossed = (spans & left).sum(axis=1) % 2 == 1
        on_burnt = (burnt & (py == y1) & (left_x < px) & (px <= right_x)).any(axis=1)
        result[start : start + step] = crossed | on_burnt
    return result


def _centres_inside(area, boxes: np.ndarray) -> np.ndarray:
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    y = (boxes[:, 1] + boxes[:, 3]) / 2
    shapely.prepare(area)
    inside = shapely.contains_xy(area, x, y)
    edge = shapely.intersects_xy(area, x, y) & ~inside
    if edge.any():
        inside[edge] = _on_boundary_inside(area, x[edge], y[edge])
    return inside


def _fractions_inside(area, boxes: np.ndarray) -> np.ndarray:
    """Share of each tile's area that lies inside the ROIs, exactly (Slideflow counts it on a 50 x 50 raster)."""
    share = np.zeros(len(boxes))
    x0, y0, x1, y1 = shapely.bounds(area)
    near = np.flatnonzero((boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0))
    if not near.size:
        return share
    b = boxes[near]
    tiles = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
    # A tile the boundary misses is wholly in or out, as its centre; only the others need an intersection,
    # the costly step.
    boundary = shapely.boundary(area)
    shapely.prepare(boundary)
    crossing = shapely.intersects(boundary, tiles)
    near_share = _centres_inside(area, b).astype(float)
    sizes = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    near_share[crossing] = _areas_inside(area, b[crossing], tiles[crossing]) / sizes[crossing]
    share[near] = np.clip(near_share, 0.0, 1.0)
    return share


def _areas_inside(area, b: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    """Area of each tile inside ``area``; the tiles all cross its boundary.

    Intersecting a tile with a polygon costs time in the polygon's vertices, and hand-drawn outlines have
    thousands: so the area is first cut along a coarse grid of cells (a few tiles wide) where these tiles lie, and
    each tile is intersected only with the small pieces it meets. The pieces do not overlap, so their areas
    add up.
    """
    if len(tiles) < 64 or shapely.get_num_coordinates(area) < 256:
        return shapely.area(shapely.intersection(area, tiles))
    side = 8 * float(np.max(b[:, 2:] - b[:, :2]))
    x0, y0 = b[:, 0].min(), b[:, 1].min()
    first = np.floor((b[:, :2] - (x0, y0)) / side).astype(int)
    last = np.floor((b[:, 2:] - (x0, y0)) / side).astype(int)
    # Every cell a tile reaches (a tile spans at most two cells a side), not only those the boundary crosses.
    used = np.zeros(tuple(last.max(axis=0) + 1), dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            used[np.minimum(first[:, 0] + dx, last[:, 0]), np.minimum(first[:, 1] + dy, last[:, 1])] = True
    cx, cy = np.nonzero(used)
    cells = shapely.box(x0 + cx * side, y0 + cy * side, x0 + (cx + 1) * side, y0 + (cy + 1) * side)
    pieces = shapely.intersection(area, cells)
    pieces = pieces[~shapely.is_empty(pieces)]
    tile_idx, piece_idx = shapely.STRtree(pieces).query(tiles, predicate="intersects")
    parts = shapely.area(shapely.intersection(pieces[piece_idx], tiles[tile_idx]))
    return np.bincount(tile_idx, weights=parts, minlength=len(tiles))


def roi_keep_mask(
    tile_boxes,
    rois: Sequence[ROI],
    method: str = "auto",
    filter_method: str | float = "center",
) -> np.ndarray:
    """Which tiles the ROIs keep, as Slideflow's ``roi_method`` and ``roi_filter_method`` decide.

    Args:
        tile_boxes: (N, 4) level-0 ``x0, y0, x1, y1`` of each tile.
        rois: the slide's ROIs (:func:`load_rois`); their union is the ROI area, holes excluded.
        method: ``'auto'`` (``'inside'`` when there are ROIs, else keep all), ``'inside'``, ``'outside'`` or
            ``'ignore'`` (keep all).
        filter_method: ``'center'``: a tile is inside when its centre is; a fraction ``f`` in [0, 1]:
            ``'inside'`` keeps tiles with at least ``f`` of their area inside, ``'outside'`` those with at least
            ``f`` outside.

    Returns:
        Boolean array of length N, True for the tiles to keep.

    Raises:
        MissingROIError: ``method`` is ``'inside'`` or ``'outside'`` and there is no ROI.
        ROIError: an argument Slideflow would not accept, or malformed boxes.

    Example:
        >>> import shapely
        >>> rois = [ROI("a", shapely.box(0, 0, 256, 256))]
        >>> boxes = np.array([[0, 0, 128, 128], [256, 0, 384, 128]], dtype=float)
        >>> roi_keep_mask(boxes, rois).tolist()
        [True, False]
        >>> roi_keep_mask(boxes, rois, "outside").tolist()
        [False, True]
    """
    _check_arguments(method, filter_method)
    boxes = _check_boxes(tile_boxes)
    if method == "ignore" or (method == "auto" and not rois):
        return np.ones(len(boxes), dtype=bool)
    if not rois:
        raise MissingROIError(f"roi_method {method!r} needs ROIs and the slide has none; use 'auto' or 'ignore'")
    if method == "auto":
        method = "inside"
    if not len(boxes):
        return np.zeros(0, dtype=bool)
    area = shapely.union_all([roi.polygon for roi in rois])
    if filter_method == "center":
        inside = _centres_inside(area, boxes)
        return inside if method == "inside" else ~inside
    share = _fractions_inside(area, boxes)
    # Slideflow drops a tile when the share of it that is "wrong" exceeds 1 - f; the same comparison, same ties.
    wrong = 1.0 - share if method == "inside" else share
    return ~(wrong > 1.0 - float(filter_method))
