"""Whitespace and grayspace: the per-tile background filters Slideflow applies while it extracts tiles.

Slideflow 3.0.2 (``slideflow/slide/utils.py`` for the defaults, ``slideflow/slide/backends/cucim.py`` and
``vips.py`` ``tile_worker`` for the rule) judges each tile on its pixels:

- a pixel is *whitespace* when the mean of its R, G and B is strictly above ``whitespace_threshold``
  (0-255, default 230);
- a pixel is *grayspace* when its HSV saturation (0-1, scikit-image's ``rgb2hsv``) is strictly below
  ``grayspace_threshold`` (default 0.05);
- a tile is dropped when its whitespace fraction is strictly above ``whitespace_fraction`` (default 1.0, which
  can never be exceeded: whitespace filtering is off by default), otherwise when its grayspace fraction is
  strictly above ``grayspace_fraction`` (default 0.6). Whitespace is checked first, so a tile that fails both is
  reported as whitespace. (Slideflow's log line says "exclude if >=", but its code compares with ``>``; we follow
  the code.)

We follow the cuCIM backend's arithmetic (floating-point mean and saturation). The libvips backend rounds the
band mean and the saturation to 8-bit integers first, so near the thresholds it can disagree by one grey level.

Which pixels are judged is the caller's choice: the tile itself, or a fixed downsample of it. Slideflow reads the
filter patch from the deepest pyramid level whose downsample is below the tile's size in level-0 pixels, so a
299-px tile at level 0 of a (1, 4, 16) pyramid is judged on a 299 // 16 = 18-px patch; these functions accept
patches of any size.

Example:
    >>> import numpy as np
    >>> glass = np.full((1, 18, 18, 3), 240, np.uint8)
    >>> white, gray = background_fractions(glass)
    >>> background_keep(white, gray).tolist(), background_reasons(white, gray).tolist()
    ([False], ['grayspace'])
"""

from __future__ import annotations

import functools

import numpy as np
import skimage.color

from slidetiles.errors import QCError

#: Slideflow's defaults (slideflow/slide/utils.py).
DEFAULT_WHITESPACE_THRESHOLD = 230
DEFAULT_WHITESPACE_FRACTION = 1.0
DEFAULT_GRAYSPACE_THRESHOLD = 0.05
DEFAULT_GRAYSPACE_FRACTION = 0.6

#: Reason codes of :func:`background_reasons`; a kept tile's reason is the empty string.
WHITESPACE = "whitespace"
GRAYSPACE = "grayspace"

# Tiles judged at a time: bounds the (chunk, h, w) temporaries to a few MB per array.
_CHUNK_PIXELS = 1 << 20


@functools.lru_cache(maxsize=16)
def _grayspace_table(threshold: float) -> np.ndarray:
    """``table[max, min]``: is a pixel with these channel extremes grayspace, by scikit-image's own arithmetic?

    HSV saturation depends only on a pixel's largest and smallest channel, so the 65,536 pairs, run once through
    ``skimage.color.rgb2hsv``, give bit-identical answers at the cost of a lookup (rgb2hsv itself costs ~0.5 us a
    pixel, most of it on the hue we do not need).
    """
    hi, lo = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    table = skimage.color.rgb2hsv(np.stack([hi, lo, lo], axis=-1))[..., 1] < threshold
    table.setflags(write=False)
    return table


def _as_tiles(tiles: np.ndarray) -> np.ndarray:
    tiles = np.asarray(tiles)
    if tiles.ndim == 3:
        tiles = tiles[None]
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
        raise QCError(f"tiles must be uint8 RGB of shape (N, h, w, 3), got {tiles.dtype} {tiles.shape}")
    return tiles


def background_fractions(
    tiles: np.ndarray,
    whitespace_threshold: float = DEFAULT_WHITESPACE_THRESHOLD,
    grayspace_threshold: float = DEFAULT_GRAYSPACE_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of whitespace and of grayspace pixels in each tile.

    Args:
        tiles: uint8 RGB, shape (N, h, w, 3) (a single (h, w, 3) tile counts as N = 1); any patch size.
        whitespace_threshold: a pixel whose RGB mean is above this (0-255) is whitespace.
        grayspace_threshold: a pixel whose HSV saturation is below this (0-1) is grayspace.

    Returns:
        (white_frac, gray_frac), float64 arrays of shape (N,).

    Example:
        >>> tiles = np.zeros((2, 8, 8, 3), np.uint8); tiles[0] = 255; tiles[1] = (200, 40, 90)
        >>> [f.tolist() for f in background_fractions(tiles)]
        [[1.0, 0.0], [1.0, 0.0]]
    """
    tiles = _as_tiles(tiles)
    n = tiles.shape[0]
    per_tile = int(np.prod(tiles.shape[1:3])) or 1
    step = max(1, _CHUNK_PIXELS // per_tile)
    white = np.empty(n, np.float64)
    gray = np.empty(n, np.float64)
    for i in range(0, n, step):
        chunk = tiles[i : i + step]
        r, g, b = chunk[..., 0], chunk[..., 1], chunk[..., 2]
        # Slideflow's cuCIM worker takes np.mean over the channels: the integer sum over 3.0, as here.
        brightness = (r.astype(np.uint16) + g + b) / 3.0
        white[i : i + step] = np.mean(brightness > whitespace_threshold, axis=(1, 2))
        table = _grayspace_table(float(grayspace_threshold))
        hi, lo = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
        gray[i : i + step] = np.mean(table[hi, lo], axis=(1, 2))
    return white, gray


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise QCError(f"{name} must be between 0 and 1, got {value!r}")


def background_reasons(
    white_frac: np.ndarray,
    gray_frac: np.ndarray,
    whitespace_fraction: float = DEFAULT_WHITESPACE_FRACTION,
    grayspace_fraction: float = DEFAULT_GRAYSPACE_FRACTION,
) -> np.ndarray:
    """Why each tile is dropped: ``"whitespace"``, ``"grayspace"``, or ``""`` for a kept tile.

    Whitespace is checked first, as Slideflow does, so each dropped tile is counted once.

    Example:
        >>> background_reasons(np.array([1.0, 0.0, 0.9]), np.array([1.0, 0.0, 0.7]), 0.8).tolist()
        ['whitespace', '', 'whitespace']
    """
    _check_fraction("whitespace_fraction", whitespace_fraction)
    _check_fraction("grayspace_fraction", grayspace_fraction)
    white_frac = np.asarray(white_frac, np.float64)
    gray_frac = np.asarray(gray_frac, np.float64)
    if white_frac.shape != gray_frac.shape:
        raise QCError(f"white_frac {white_frac.shape} and gray_frac {gray_frac.shape} differ in shape")
    out = np.full(white_frac.shape, "", dtype="<U10")
    out[gray_frac > grayspace_fraction] = GRAYSPACE
    out[white_frac > whitespace_fraction] = WHITESPACE
    return out


def background_keep(
    white_frac: np.ndarray,
    gray_frac: np.ndarray,
    whitespace_fraction: float = DEFAULT_WHITESPACE_FRACTION,
    grayspace_fraction: float = DEFAULT_GRAYSPACE_FRACTION,
) -> np.ndarray:
    """Which tiles pass the background filters: True = keep (Slideflow's strict ``>`` rule).

    Example:
        >>> background_keep(np.array([0.2, 0.2]), np.array([0.6, 0.61])).tolist()
        [True, False]
    """
    return background_reasons(white_frac, gray_frac, whitespace_fraction, grayspace_fraction) == ""


def filter_downsample(level_downsamples, extract_px: int, level: int = 0) -> tuple[int, int]:
    """Slideflow's choice of where to judge background: ``(filter_level, ratio)``.

    The filter level is the deepest pyramid level whose downsample is below ``extract_px`` (the tile's side in
    pixels of ``level``, the level tiles are read from); the patch judged is ``extract_px // ratio`` pixels wide,
    ``ratio`` being the integer part of the two levels' downsample ratio. A ratio of 1 or less (a filter level no
    coarser than ``level``, or less than twice as coarse) means the tile is judged as read: ``(level, 1)``.

    Example:
        >>> filter_downsample((1, 4, 16), 299)
        (2, 16)
        >>> 299 // 16
        18
    """
    downsamples = np.asarray(level_downsamples, np.float64)
    below = np.flatnonzero(downsamples < extract_px)
    if below.size == 0:
        return level, 1
    filter_level = int(below.max())
    ratio = int(downsamples[filter_level] // downsamples[level])
    # Slideflow only reads the filter level when the ratio is above 1; otherwise it judges the tile as read.
    return (filter_level, ratio) if ratio > 1 else (level, 1)
