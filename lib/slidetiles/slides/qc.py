"""Slide-level quality control on a thumbnail: Otsu's tissue mask, the blur mask, and which tiles survive them.

Follows Slideflow 3.0.2 (``slideflow/slide/qc/otsu.py``, ``gaussian.py``, ``gaussian_v2.py`` and
``WSI.qc``/``WSI.apply_qc_mask`` in ``wsi.py``), with one convention flipped: our masks are True where a pixel is
*kept* (tissue, in focus); Slideflow's are True where it is filtered out.

- ``'otsu'``: saturation of the thumbnail (OpenCV HSV, 0-255), 7-px median blur, Otsu's threshold; pixels at or
  below the threshold are background. Slideflow computes it on a pyramid level, the smallest one whose smaller
  side exceeds 500 px (:func:`otsu_level`); we use the same rule.
- ``'blur'``: grey image (scikit-image ``rgb2gray``), absolute Laplacian, Gaussian of sigma 3 px; pixels whose
  smoothed edge strength is at or below 0.02 are blurry (flat glass is "blurry" too, so this filter also removes
  background). Slideflow computes it at 4x the tile's microns per pixel (:func:`blur_mpp`), in 512-px tiles with
  6-px overlaps stitched together; we filter the whole thumbnail at once, which differs only within a few pixels
  of its tile seams.
- ``'both'``: blur first; Otsu is then computed on the thumbnail with the blurry pixels blacked out (black has
  saturation 0, so they count as background), as Slideflow does. Slideflow then drops a tile when either mask
  flags more than 60 % of it; as the blacked-out Otsu mask contains the blur mask (but for a few pixels the
  median blur moves), that is the AND of the two keep masks judged once, which is what :func:`qc_mask` returns.
  :func:`qc_masks` gives them one by one, for a report of how many tiles each filter removed.

Two methods of ours, not Slideflow's, judge tissue by how much light it absorbs rather than by its colour:

- ``'od'``: optical density against the slide's own glass (:func:`od_mask`): a pixel is tissue when, after the same
  7-px median blur, its density summed over R, G and B exceeds :data:`OD_THRESHOLD` (0.1: ~7.5 % less light in every
  channel than the glass). Saturation misses colourless tissue: unstained stroma and lumina of an IHC slide are as
  grey as glass, and on a stain with two saturation modes (hematoxylin-only stroma, DAB) Otsu's threshold falls
  between the stain's modes rather than between glass and tissue, dropping the pale half (on the synthetic slides
  ~45 % of all-tissue 64-um tiles). Density sees every tissue, but also ink of any colour (black ink included,
  which Otsu on saturation removes) and dark debris.
- ``'od+blur'``: ``'od'`` and the blur mask, both required. Ink lies on the coverslip, out of the scanner's focal
  plane, so the blur filter removes it over glass (and the blurry tissue, as in ``'both'``); the density is judged
  on the whole thumbnail, not a blacked-out one (black is the densest of all).

Tiles and masks meet in :func:`tile_keep_from_mask`: the tile's footprint in the mask, with Slideflow's rounding,
and the tile is dropped when strictly more than ``filter_threshold`` (0.6) of that footprint is flagged.

Example:
    >>> from slidetiles.slides.synthetic import make_scene
    >>> scene = make_scene(4096, 3072, mpp=0.5, seed=1)
    >>> thumb = scene.render(4, 0, 0, 1024, 768)
    >>> keep = qc_mask(thumb, "otsu")
    >>> boxes = np.array([[0, 0, 256, 256], [512, 512, 768, 768]])  # glass, then tissue
    >>> tile_keep_from_mask(keep, 4, boxes).tolist()
    [False, True]
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import skimage.color
import skimage.filters

from slidetiles.errors import QCError

#: Values ``method`` may take: Slideflow's, then ours (optical density against the glass, alone or with blur).
QC_METHODS = (None, "otsu", "blur", "both", "od", "od+blur")
#: The methods that use the blur mask (and so a thumbnail at :func:`blur_mpp`, if the caller has one).
BLUR_METHODS = ("blur", "both", "od+blur")
#: ``'od'``: summed optical density (base 10, R + G + B) above the glass's at which a pixel is tissue. Glass scatters
#: around 0 (its noise is gone after the median blur); 0.1 is every channel ~7.5 % darker than glass, a quarter of
#: the density of the palest hematoxylin-counterstained stroma of the synthetic slides.
OD_THRESHOLD = 0.1
#: ``'od'``'s glass: each channel's value at this percentile of the median-blurred thumbnail, i.e. its brightest
#: pixels, which are glass on any slide with more than 1 % of glass in view (pass ``glass=`` otherwise).
GLASS_PERCENTILE = 99
#: Slideflow's Otsu thumbnail: the smallest pyramid level whose smaller side is above this many pixels.
OTSU_MIN_SIZE = 500
#: Median-blur kernel applied to the saturation channel before Otsu's threshold.
OTSU_MEDIAN_KERNEL = 7
#: Slideflow's blur defaults: Gaussian sigma (thumbnail pixels), threshold, and thumbnail mpp as a multiple of
#: the tile's mpp.
BLUR_SIGMA = 3
BLUR_THRESHOLD = 0.02
BLUR_MPP_FACTOR = 4
#: A tile is dropped when strictly more than this fraction of its footprint in a QC mask is flagged.
FILTER_THRESHOLD = 0.6


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim == 3 and rgb.shape[-1] == 4:
        rgb = rgb[..., :3]
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise QCError(f"a QC thumbnail must be uint8 RGB of shape (h, w, 3), got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def otsu_level(level_dimensions: Sequence[tuple[int, int]], min_size: int = OTSU_MIN_SIZE) -> int:
    """The pyramid level Slideflow runs Otsu's thresholding on: the smallest whose smaller side exceeds ``min_size``.

    A slide smaller than that everywhere uses its largest level.

    Example:
        >>> otsu_level([(4096, 3072), (1024, 768), (256, 192)])
        1
    """
    smallest = np.array([min(d) for d in level_dimensions])
    order = np.argsort(smallest, kind="stable")
    above = np.flatnonzero(smallest[order] > min_size)
    return int(order[above[0]] if above.size else order[-1])


def blur_mpp(tile_px: int, tile_um: float, factor: float = BLUR_MPP_FACTOR) -> float:
    """Microns per pixel of Slideflow's blur thumbnail: ``factor`` times the tile's own.

    Example:
        >>> blur_mpp(299, 302)
        4.040133779264214
    """
    return tile_um / tile_px * factor


def otsu_mask(rgb: np.ndarray) -> np.ndarray:
    """Tissue mask by Otsu's threshold on the median-blurred HSV saturation: True = tissue (keep).

    Args:
        rgb: uint8 RGB (or RGBA) thumbnail, shape (h, w, 3).

    Example:
        >>> img = np.full((64, 64, 3), 240, np.uint8); img[16:48, 16:48] = (180, 90, 140)
        >>> m = otsu_mask(img); bool(m[32, 32]), bool(m[2, 2])
        (True, False)
    """
    rgb = _as_rgb(rgb)
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[:, :, 1]
    smoothed = cv2.medianBlur(saturation, OTSU_MEDIAN_KERNEL)
    threshold, _ = cv2.threshold(smoothed, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # THRESH_BINARY sets pixels strictly above the threshold: exactly the pixels Slideflow's BINARY_INV clears.
    return smoothed > threshold


def glass_rgb(rgb: np.ndarray, percentile: float = GLASS_PERCENTILE) -> np.ndarray:
    """The glass's colour on a thumbnail: each channel at ``percentile`` of the 7-px median-blurred image (float).

    Example:
        >>> img = np.full((64, 64, 3), 240, np.uint8); img[16:48, 16:48] = (180, 90, 140)
        >>> glass_rgb(img).tolist()
        [240.0, 240.0, 240.0]
    """
    smoothed = cv2.medianBlur(_as_rgb(rgb), OTSU_MEDIAN_KERNEL)
    return np.percentile(smoothed.reshape(-1, 3), percentile, axis=0)


def od_mask(rgb: np.ndarray, threshold: float = OD_THRESHOLD, glass: Sequence[float] | None = None) -> np.ndarray:
    """Tissue mask by optical density against the glass: True = tissue (keep). Not Slideflow's (see the module).

    Each channel of the 7-px median-blurred thumbnail gives ``log10((glass + 1) / (value + 1))`` (0 where brighter
    than the glass); a pixel is tissue when their sum exceeds ``threshold``.

    Args:
        rgb: uint8 RGB (or RGBA) thumbnail, shape (h, w, 3).
        threshold: summed optical density above which a pixel is tissue (:data:`OD_THRESHOLD`).
        glass: the glass's RGB; default :func:`glass_rgb` of ``rgb``.

    Example:
        >>> img = np.full((64, 96, 3), 240, np.uint8)
        >>> img[16:48, 16:40] = (200, 200, 204); img[16:48, 56:80] = (150, 90, 60)  # grey stroma, brown stain
        >>> od_mask(img)[[2, 32, 32], [2, 28, 68]].tolist()  # glass, stroma, stain
        [False, True, True]
        >>> otsu_mask(img)[[2, 32, 32], [2, 28, 68]].tolist()  # Otsu's threshold falls between stroma and stain
        [False, False, True]
    """
    rgb = _as_rgb(rgb)
    smoothed = cv2.medianBlur(rgb, OTSU_MEDIAN_KERNEL)
    ref = glass_rgb(rgb) if glass is None else np.asarray(glass, np.float64).reshape(3)
    # One 256-entry table per channel: the density of every 8-bit value against that channel's glass.
    values = np.arange(256, dtype=np.float64)
    od = np.zeros(rgb.shape[:2], np.float32)
    for c in range(3):
        table = np.maximum(np.log10((ref[c] + 1.0) / (values + 1.0)), 0.0).astype(np.float32)
        od += table[smoothed[..., c]]
    return od > threshold


def blur_mask(rgb: np.ndarray, sigma: float = BLUR_SIGMA, threshold: float = BLUR_THRESHOLD) -> np.ndarray:
    """Focus mask: True where the Gaussian-smoothed absolute Laplacian of the grey image is above ``threshold``.

    Blurry tissue and flat glass are False. ``sigma`` is in pixels of ``rgb``, so the result depends on its
    resolution: Slideflow uses 4x the tile's microns per pixel (:func:`blur_mpp`).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8); img[:, 32:] = 200
        >>> m = blur_mask(img); bool(m[32, 8]), bool(m[32, 60])
        (True, False)
    """
    rgb = _as_rgb(rgb)
    edges = np.abs(skimage.filters.laplace(skimage.color.rgb2gray(rgb)))
    return skimage.filters.gaussian(edges, sigma=sigma) > threshold


def _check_method(method) -> None:
    if method not in QC_METHODS:
        raise QCError(f"qc method must be one of {QC_METHODS}, got {method!r}")


def qc_masks(
    rgb: np.ndarray,
    method: str | None,
    *,
    blur_rgb: np.ndarray | None = None,
    blur_radius: float = BLUR_SIGMA,
    blur_threshold: float = BLUR_THRESHOLD,
) -> dict[str, np.ndarray]:
    """The keep masks of ``method``, one per filter, in the order Slideflow applies them (blur, then otsu or od).

    ``blur_radius`` (the Gaussian's sigma, in pixels of the blur thumbnail) and ``blur_threshold`` keep the names
    of Slideflow's ``WSI.qc``. Every mask has ``rgb``'s height and width. ``blur_rgb``, when given, is the
    thumbnail to judge focus on (Slideflow's is at :func:`blur_mpp`); its mask is resized to ``rgb``'s size by
    nearest neighbour, as Slideflow resizes a previous mask before blacking it out for Otsu. (Slideflow judges
    tiles on the blur mask at its own resolution; judging them on it resized to ``rgb``'s can move a tile's
    flagged fraction by the resampling error at the mask's edges.)

    Example:
        >>> img = np.full((64, 64, 3), 240, np.uint8)
        >>> list(qc_masks(img, "both"))
        ['blur', 'otsu']
    """
    _check_method(method)
    rgb = _as_rgb(rgb)
    out: dict[str, np.ndarray] = {}
    if method in BLUR_METHODS:
        sharp = blur_mask(rgb if blur_rgb is None else blur_rgb, blur_radius, blur_threshold)
        if sharp.shape != rgb.shape[:2]:
            sharp = cv2.resize(sharp.astype(np.uint8), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
        out["blur"] = sharp
    if method in ("otsu", "both"):
        thumb = rgb
        if "blur" in out:
            thumb = rgb * out["blur"][:, :, None].astype(np.uint8)
        out["otsu"] = otsu_mask(thumb)
    if method in ("od", "od+blur"):
        out["od"] = od_mask(rgb)
    return out


def qc_mask(rgb: np.ndarray, method: str | None, **kwargs) -> np.ndarray:
    """One keep mask for ``method`` (None, ``'otsu'``, ``'blur'``, ``'both'``, ``'od'`` or ``'od+blur'``): True = keep.

    ``'both'`` is the AND of the blur and Otsu masks (Otsu computed with blurry pixels blacked out), ``'od+blur'``
    the AND of the blur and optical-density masks; None keeps everything. Keyword arguments go to :func:`qc_masks`.

    Example:
        >>> img = np.full((32, 32, 3), 240, np.uint8)
        >>> bool(qc_mask(img, None).all()), bool(qc_mask(img, "blur").any())
        (True, False)
    """
    masks = qc_masks(rgb, method, **kwargs)
    keep = np.ones(np.shape(rgb)[:2], bool)
    for m in masks.values():
        keep &= m
    return keep


def tile_keep_from_mask(
    mask: np.ndarray,
    mask_downsample: float,
    tile_boxes: np.ndarray,
    filter_threshold: float = FILTER_THRESHOLD,
    *,
    min_fraction: float | None = None,
) -> np.ndarray:
    """Which tiles survive a keep mask, by Slideflow's rule: dropped when > ``filter_threshold`` of it is flagged.

    A tile's footprint is ``mask[round(y0/d) : round(y0/d) + round((y1-y0)/d), round(x0/d) : ...]`` (numpy's
    round-half-to-even, as Slideflow), clipped to the mask; a footprint entirely outside the mask keeps its
    tile. Slideflow takes ``d`` as level-0 width over mask width, so pass that for identical results.

    Args:
        mask: 2-D bool, True = keep (e.g. from :func:`qc_mask`).
        mask_downsample: level-0 pixels per mask pixel.
        tile_boxes: (N, 4) level-0 ``[x0, y0, x1, y1]`` (x1, y1 exclusive).
        filter_threshold: fraction of flagged footprint above which a tile is dropped (Slideflow's 0.6).
        min_fraction: alternatively, the kept fraction a tile needs (``1 - filter_threshold``).

    Returns:
        bool (N,), True = keep.

    Example:
        >>> m = np.zeros((4, 8), bool); m[:, :3] = True
        >>> tile_keep_from_mask(m, 16, np.array([[0, 0, 64, 64], [16, 0, 80, 64], [64, 0, 128, 64]])).tolist()
        [True, True, False]
    """
    if min_fraction is not None:
        filter_threshold = 1.0 - min_fraction
    if not 0.0 <= filter_threshold <= 1.0:
        raise QCError(f"filter_threshold must be between 0 and 1, got {filter_threshold!r}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise QCError(f"a QC mask must be 2-D, got shape {mask.shape}")
    if not mask_downsample > 0:
        raise QCError(f"mask_downsample must be positive, got {mask_downsample!r}")
    boxes = np.asarray(tile_boxes, np.float64).reshape(-1, 4)
    h, w = mask.shape
    # Summed-area table of flagged pixels, one row and column of zeros in front: any footprint's count in O(1).
    flagged = np.zeros((h + 1, w + 1), np.int64)
    np.cumsum(np.cumsum(~mask.astype(bool), axis=0), axis=1, out=flagged[1:, 1:])
    ratio = 1.0 / mask_downsample  # multiplied, not divided, like Slideflow: the two can round differently
    x0 = np.round(boxes[:, 0] * ratio).astype(np.int64)
    y0 = np.round(boxes[:, 1] * ratio).astype(np.int64)
    xs = x0 + np.round((boxes[:, 2] - boxes[:, 0]) * ratio).astype(np.int64)
    ys = y0 + np.round((boxes[:, 3] - boxes[:, 1]) * ratio).astype(np.int64)
    x0, xs = np.clip(x0, 0, w), np.clip(xs, 0, w)
    y0, ys = np.clip(y0, 0, h), np.clip(ys, 0, h)
    xs, ys = np.maximum(xs, x0), np.maximum(ys, y0)
    size = (xs - x0) * (ys - y0)
    count = flagged[ys, xs] - flagged[y0, xs] - flagged[ys, x0] + flagged[y0, x0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = count / size
    return ~((size > 0) & (frac > filter_threshold))
