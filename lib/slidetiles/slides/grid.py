"""Tile-size arithmetic and the extraction grid, with Slideflow's numbers.

A tile of ``tile_px`` pixels covers ``full_extract_px`` level-0 pixels:

- ``tile_um`` in microns (int): ``int(tile_um / mpp)``, as Slideflow computes it;
- ``tile_um`` a magnification (``'10x'`` is 1.0 um/px, ``'20x'`` 0.5, ``'40x'`` 0.25: Slideflow's
  ``10 / (downsample * mpp)``): when a pyramid level has that magnification (within 2 %, which absorbs the
  rounding of level sizes), ``int(level_downsample * tile_px)`` exactly as Slideflow; when none has it (a 20x
  request on a 40x/10x/2.5x pyramid, which Slideflow refuses), ``int(tile_px * 10 / (mag * mpp))``, read from
  the next finer level and resized.

The grid's top-left corners start at ``origin`` and step by ``round(full_extract_px / stride_div)`` level-0
pixels; only tiles entirely inside the slide unless ``use_edge_tiles``. Locations stored in TFRecords are tile
centres, ``int(x + full_extract_px / 2)``.

Example:
    >>> size = tile_size(299, 302, mpp=0.25, level_downsamples=(1.0, 4.0, 16.0))
    >>> size.full_extract_px, size.level, size.label
    (1208, 1, '299px_302um')
    >>> grid_corners((5000, 3000), size.full_extract_px, size.stride_px)[:2].tolist()
    [[0, 0], [1208, 0]]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slidetiles.tile_size import parse_tile_um, tile_label

_MAG = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*[xX]\s*$")
# A level "has" a magnification when its own is this close (relative): Aperio level sizes are rounded down, so a
# 4x level of a 24,001-px slide has downsample 4.0002.
LEVEL_MATCH = 0.02
# Downsamples this close to a level's count as that level (float noise in width ratios).
_EPS = 1e-6


@dataclass(frozen=True)
class TileSize:
    """How one tile is cut: its level-0 extent, the pyramid level read, the stride.

    Attributes:
        tile_px: output tile side.
        tile_um: microns (int) or magnification string, as given (normalised: ``'10x'``).
        tile_um_actual: microns a tile really spans (``int``, as Slideflow reports it).
        full_extract_px: level-0 pixels a tile covers.
        stride_px: level-0 step between tiles, ``round(full_extract_px / stride_div)``.
        level: pyramid level read; ``level_downsample`` its downsample.
        extract_px: level pixels read per tile (resized to ``tile_px``).
        label: the tile-size folder name (``299px_302um``, ``299px_10x``).
    """

    tile_px: int
    tile_um: int | str
    tile_um_actual: int
    full_extract_px: int
    stride_px: int
    level: int
    level_downsample: float
    extract_px: int
    label: str


def magnification_mpp(tile_um: str) -> float:
    """Microns per pixel of a magnification string, Slideflow's ``10 / magnification``.

    >>> magnification_mpp('20x'), magnification_mpp('2.5X')
    (0.5, 4.0)
    """
    match = _MAG.match(tile_um)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"tile_um={tile_um!r} is not a magnification such as '10x', '20x' or '2.5x'")
    return 10.0 / float(match.group(1))


def best_level(level_downsamples: Sequence[float], downsample: float) -> int:
    """The coarsest level whose downsample does not exceed ``downsample`` (never level 0 when a coarser serves)."""
    best = 0
    for i, d in enumerate(level_downsamples):
        if d <= downsample * (1 + _EPS) and d >= level_downsamples[best]:
            best = i
    return best


def tile_size(
    tile_px: int,
    tile_um: int | str,
    mpp: float,
    level_downsamples: Sequence[float] = (1.0,),
    stride_div: int = 1,
    enable_downsample: bool = True,
) -> TileSize:
    """Compute how tiles of ``tile_px`` pixels and ``tile_um`` microns/magnification are cut from a slide.

    Example:
        >>> tile_size(256, '20x', mpp=0.25, level_downsamples=(1.0, 4.0, 16.0)).full_extract_px  # no 20x level
        512
    """
    tile_px = int(tile_px)
    if tile_px <= 0:
        raise ValueError(f"tile_px={tile_px!r} must be a positive number of pixels")
    if not (isinstance(stride_div, (int, float)) and stride_div > 0):
        raise ValueError(f"stride_div={stride_div!r} must be positive (1: no overlap, 2: half-tile steps)")
    tile_um = parse_tile_um(tile_um)
    downsamples = [float(d) for d in level_downsamples]
    if isinstance(tile_um, str):
        target = magnification_mpp(tile_um) / mpp
        matching = [d for d in downsamples if abs(d - target) <= LEVEL_MATCH * target]
        downsample = min(matching, key=lambda d: abs(d - target)) if matching else target
        full = int(downsample * tile_px + _EPS)
        actual = int(downsample * mpp * tile_px)
    else:
        matching = []
        full = int(tile_um / mpp)
        actual = tile_um
    if full <= 0:
        raise ValueError(f"a tile of {tile_um} at {mpp} um/px is less than one level-0 pixel")
    if matching and enable_downsample:
        # Slideflow reads a magnification's own level, tile_px pixels of it, whatever rounding its size carries.
        level = downsamples.index(downsample)
        extract = tile_px
    else:
        level = best_level(downsamples, full / tile_px) if enable_downsample else 0
        extract = max(1, int(full // downsamples[level]))  # Slideflow floors it: a level pixel less at most
    level_ds = downsamples[level]
    return TileSize(
        tile_px=tile_px,
        tile_um=tile_um,
        tile_um_actual=actual,
        full_extract_px=full,
        stride_px=int(np.round(full / stride_div)),
        level=level,
        level_downsample=level_ds,
        extract_px=extract,
        label=tile_label(tile_px, tile_um),
    )


def grid_corners(
    dimensions: tuple[int, int],
    full_extract_px: int,
    stride_px: int,
    origin: tuple[int, int] = (0, 0),
    use_edge_tiles: bool = False,
) -> np.ndarray:
    """Top-left corners ``(N, 2)`` of the grid, rows of y then x (Slideflow's order), level-0 pixels.

    Full in-bounds tiles only unless ``use_edge_tiles``: then every corner up to the far edge inclusive, as
    Slideflow lays them, the part past the edge padded white.
    """
    width, height = (int(v) for v in dimensions)
    x0, y0 = (int(v) for v in origin)
    edge = 0 if use_edge_tiles else full_extract_px
    xs = np.arange(x0, width + 1 - edge, stride_px, dtype=np.int64)
    ys = np.arange(y0, height + 1 - edge, stride_px, dtype=np.int64)
    xs, ys = xs[xs >= 0], ys[ys >= 0]
    gx, gy = np.meshgrid(xs, ys)
    return np.column_stack([gx.ravel(), gy.ravel()])


def tile_centres(corners: np.ndarray, full_extract_px: int) -> np.ndarray:
    """Slideflow's stored ``loc_x``/``loc_y``: ``int(corner + full_extract_px / 2)``."""
    return (np.asarray(corners, np.int64) + math.floor(full_extract_px / 2)).astype(np.int64)
