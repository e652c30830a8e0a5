"""Synthetic whole-slide images: pyramidal tiled TIFFs with real tissue texture and a ground truth.

:func:`write_synthetic_slide` writes a slide as an Aperio SVS (OpenSlide and tiffslide identify it as Aperio and
report its MPP and magnification from the description; libvips reads its pages), an OME-TIFF (SubIFD pyramid, OME-XML with
``PhysicalSizeX``) or a plain tiled pyramidal TIFF (resolution tags only). The picture is a scene, not an image:

- glass: near-white with fine sensor noise, which averages out on the lower levels as in a real pyramid;
- tissue islands: irregular seeded blobs laid out on a grid, filled with the immunohistochemistry photograph
  scikit-image ships (``skimage.data.immunohistochemistry()``, the source of :mod:`slidetiles.demo` too),
  mirrored into a seamless period, each island with its own offset, orientation and stain gain;
- a pen mark: a tapered ink stroke that circles one island, in and out of its tissue, out of focus (it lies on
  the coverslip);
- an out-of-focus patch: a disc inside another island where the tissue is Gaussian-blurred.

Every pixel of every level is computed from that geometry at the pixel's centre, so a level is drawn directly at
its own resolution (no level 0 in memory to downsample), tiles are streamed into :mod:`tifffile` a row of tiles
at a time, and memory stays flat whatever the slide size. The same geometry gives the ground-truth masks
(:meth:`SyntheticSlide.tissue_mask`, :meth:`~SyntheticSlide.pen_mask`, :meth:`~SyntheticSlide.blur_mask`) at any
downsample, and :meth:`SyntheticSlide.render` gives the exact pixels a level holds before JPEG compression.

Same arguments, same bytes: all randomness comes from ``seed``, and JPEG encoding is deterministic for a given
libjpeg build (imagecodecs).

Example:
    >>> from slidetiles.slides import write_synthetic_slide
    >>> slide = write_synthetic_slide("demo.svs", 24000, 18000)  # doctest: +SKIP
    >>> slide.level_dimensions  # doctest: +SKIP
    ((24000, 18000), (6000, 4500), (1500, 1125))
    >>> round(float(slide.tissue_mask(16).mean()), 2)  # doctest: +SKIP
    0.24
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("aperio", "ome", "plain")
#: The microns per pixel the IHC photograph is taken to have: the demo tiles assume the same 20x scan.
TEXTURE_MPP = 0.5
#: Glass colour (RGB) and the standard deviation of its per-pixel noise, in 8-bit levels.
GLASS_RGB = (243.0, 242.0, 239.0)
GLASS_NOISE = 1.6
#: Mean fraction of the ink's full absorption a pen stroke lays down (it varies by +-5 % with the glass noise,
#: before the defocus blur).
INK_DENSITY = 0.92
#: Sigma of the pen stroke's defocus blur, as a fraction of its half width. Ink sits on the coverslip, ~170 um
#: above the section the scanner focuses on, so real pen marks are imaged out of focus: soft-edged and without
#: pixel-scale grain. The blur scales with the stroke, as the whole scene does with the slide: on the 24,000 x
#: 18,000 px, 0.25-um benchmark slide sigma is ~20 um, a conservative defocus at that depth.
PEN_DEFOCUS = 0.25
# Transmittance of the inks a pathologist marks slides with: what fraction of each channel passes the ink.
_INKS = {
    "green": (0.22, 0.55, 0.38),
    "blue": (0.25, 0.33, 0.78),
    "black": (0.18, 0.18, 0.22),
}
# Tiles are rendered a row at a time in blocks of this many tiles: numpy works on ~0.5 Mpx arrays (few
# Python-level steps per pixel, ~10 MB of temporaries) whatever the slide width.
_BLOCK_TILES = 8
# Vertices of an island's outline and of the pen stroke's: at the 24,000-px benchmark slide an island outline
# vertex every ~15 px, far finer than the ~900-px wavelength of its finest harmonic.
_OUTLINE_VERTICES = 2048
_PEN_VERTICES = 1024
_APERIO_HEADER = "Aperio Image Library v12.0.0 \r\n"
_SOURCE_PERIOD = 1024  # the 512-px photograph mirrored once each way


@dataclass(frozen=True)
class Island:
    """One tissue island: a closed outline (level-0 pixels) and how its texture is laid."""

    #: (N, 2) polygon vertices (x, y) in level-0 pixels; a pixel is tissue when its centre is inside.
    outline: np.ndarray = field(repr=False)
    centre: tuple[float, float]
    #: Radius of the largest disc about ``centre`` inside the outline (a lower bound).
    inner_radius: float
    gain: tuple[float, float, float]
    texture_offset: tuple[float, float]
    #: One of the 8 flips/rotations of the texture (bit 0: flip x, bit 1: flip y, bit 2: transpose).
    texture_turn: int
    #: Smooth warp of the texture, in source pixels: x shifts by ``amp * sin(2 pi y / wavelength + phase)`` with
    #: the first three values, y by the same in x with the last three.
    texture_warp: tuple[float, float, float, float, float, float] = (0.0, 1.0, 0.0, 0.0, 1.0, 0.0)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return _bbox(self.outline)


@dataclass(frozen=True)
class PenMark:
    """A tapered ink stroke arcing around island ``island``, in and out of its tissue."""

    island: int
    #: (N, 2) polygon of the stroke's outline in level-0 pixels.
    outline: np.ndarray = field(repr=False)
    half_width: float
    ink: str
    transmittance: tuple[float, float, float]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return _bbox(self.outline)


@dataclass(frozen=True)
class BlurPatch:
    """An out-of-focus disc (level-0 pixels) inside island ``island``, Gaussian-blurred by ``sigma_um`` microns."""

    island: int
    cx: float
    cy: float
    radius: float
    sigma_um: float


def _bbox(poly: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = poly.min(0), poly.max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _rasterize(poly: np.ndarray, d: float, x: int, y: int, width: int, height: int) -> np.ndarray:
    """Pixels of a region of the level at downsample ``d`` whose centres lie inside ``poly`` (even-odd rule).

    Scanline filling in numpy: for every pixel row, the crossings of its centre line with the polygon's edges
    toggle inside/outside from the first pixel whose centre is past them. Exact for any float coordinates, and
    the same pixel gets the same answer whichever region it is computed in, so tiles and masks always agree.
    """
    px = poly[:, 0] / d - x
    py = poly[:, 1] / d - y
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    keep = (np.maximum(py, qy) >= 0) & (np.minimum(py, qy) <= height) & (np.minimum(px, qx) <= width)
    px, py, qx, qy = px[keep], py[keep], qx[keep], qy[keep]
    out = np.zeros((height, width + 1), np.uint8)
    if px.size:
        yc = np.arange(height) + 0.5
        # Half-open in y, so a vertex exactly on a row's centre line is crossed once, not twice.
        rows, e = np.nonzero((py[None, :] <= yc[:, None]) != (qy[None, :] <= yc[:, None]))
        xc = px[e] + (yc[rows] - py[e]) * (qx[e] - px[e]) / (qy[e] - py[e])
        first = np.clip(np.ceil(xc - 0.5), 0, width).astype(np.intp)
        np.add.at(out, (rows, first), 1)
        # uint8 wraps at 256 crossings but keeps their parity, which is all even-odd needs.
        np.cumsum(out, axis=1, dtype=np.uint8, out=out)
        out &= 1
    return out[:, :width].view(bool)


def _soft(poly: np.ndarray, d: float, x: int, y: int, width: int, height: int) -> np.ndarray:
    """Coverage of a region in ninths (uint8 0..9): how many of each pixel's 3 x 3 neighbourhood are inside.

    Used as the blending weight, so edges are anti-aliased at every level and stay within one pixel of the
    truth mask.
    """
    m = _rasterize(poly, d, x - 1, y - 1, width + 2, height + 2).view(np.uint8)
    rows = m[:-2] + m[1:-1] + m[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def _pixel_box(bbox, d: float, x: int, y: int, width: int, height: int):
    """Slices of a region's pixels (level at downsample d) that can touch a level-0 bbox, or None."""
    # Two pixels of margin: one for a centre just inside the box, one for the anti-aliasing of its neighbour.
    x0 = max(x, math.floor(bbox[0] / d) - 2)
    x1 = min(x + width, math.ceil(bbox[2] / d) + 2)
    y0 = max(y, math.floor(bbox[1] / d) - 2)
    y1 = min(y + height, math.ceil(bbox[3] / d) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0 - y, y1 - y), slice(x0 - x, x1 - x)


def _centres(d: float, x: int, y: int, width: int, height: int):
    """Level-0 coordinates of the centres of level pixels x..x+width, y..y+height at downsample d."""
    xs = (np.arange(x, x + width, dtype=np.float64) + 0.5) * d
    ys = (np.arange(y, y + height, dtype=np.float64) + 0.5) * d
    return xs, ys


@dataclass(frozen=True)
class Scene:
    """The geometry of a synthetic slide, in level-0 pixels. Pure data: everything is drawn from it."""

    width: int
    height: int
    mpp: float
    seed: int
    islands: tuple[Island, ...]
    pen: PenMark | None
    blur: BlurPatch | None

    def masks(self, downsample: float, x: int, y: int, width: int, height: int) -> dict[str, np.ndarray]:
        """Boolean truth masks ``tissue``, ``pen`` and ``blur`` of a region of the level at ``downsample``."""
        d = float(downsample)
        out = {k: np.zeros((height, width), bool) for k in ("tissue", "pen", "blur")}
        for isl in self.islands:
            box = _pixel_box(isl.bbox, d, x, y, width, height)
            if box is not None:
                out["tissue"][box] |= _rasterize(isl.outline, d, x + box[1].start, y + box[0].start, *_size(box))
        if self.pen is not None:
            box = _pixel_box(self.pen.bbox, d, x, y, width, height)
            if box is not None:
                out["pen"][box] = _rasterize(self.pen.outline, d, x + box[1].start, y + box[0].start, *_size(box))
        if self.blur is not None:
            out["blur"] = self._blur_disc(d, x, y, width, height) & out["tissue"]
        return out

    def _blur_disc(self, d: float, x: int, y: int, width: int, height: int) -> np.ndarray:
        b = self.blur
        xs, ys = _centres(d, x, y, width, height)
        return (xs[None, :] - b.cx) ** 2 + (ys[:, None] - b.cy) ** 2 < b.radius**2

    def render_packed(self, downsample: float, x: int, y: int, width: int, height: int) -> np.ndarray:
        """:meth:`render`'s pixels packed one uint32 (R, G, B, 0 in memory order) per pixel."""
        # Pixels travel packed as one uint32 (RGB + a spare byte): gathers and masked copies move one element
        # per pixel instead of three, and only the few pixels on an edge are blended in floating point.
        d = float(downsample)
        glass = _glass_tile(self.seed, d)[0]
        n = glass.shape[0]
        shifted = np.roll(glass, (-(y % n), -(x % n)), axis=(0, 1))
        img = np.ascontiguousarray(np.tile(shifted, (-(-height // n), -(-width // n)))[:height, :width])

        for i, isl in enumerate(self.islands):
            box = _pixel_box(isl.bbox, d, x, y, width, height)
            if box is None:
                continue
            bx, by = x + box[1].start, y + box[0].start
            bw, bh = _size(box)
            cover = _soft(isl.outline, d, bx, by, bw, bh)
            if not cover.any():
                continue
            xs, ys = _centres(d, bx, by, bw, bh)
            tissue = self._texture(isl, d, xs, ys, blurred=False)
            if self.blur is not None and self.blur.island == i:
                self._defocus(tissue, isl, d, xs, ys)
            sub = img[box]
            np.copyto(sub, tissue, where=cover == 9)
            edge = np.nonzero((cover > 0) & (cover < 9))
            if edge[0].size:
                under = _unpack(sub[edge])
                weight = cover[edge].astype(np.float32)[:, None] * np.float32(1 / 9)
                sub[edge] = _pack(under + (_unpack(tissue[edge]) - under) * weight)

        if self.pen is not None:
            self._ink(img, d, x, y, width, height)
        return img

    def _ink(self, img: np.ndarray, d: float, x: int, y: int, width: int, height: int) -> None:
        """Lay the pen stroke over packed ``img`` (in place): the glass or tissue seen through the ink."""
        layer = self._ink_layer(d, x, y, width, height)
        if layer is None:
            return
        # Below 1/1024 of the ink's absorption a pixel changes by under a quarter of a grey level.
        inked = np.nonzero(layer >= 1 / 1024)
        if inked[0].size:
            absorbed = 1.0 - np.asarray(self.pen.transmittance, np.float32)
            img[inked] = _pack(_unpack(img[inked]) * (1.0 - layer[inked][:, None] * absorbed))

    def _ink_layer(self, d: float, x: int, y: int, width: int, height: int) -> np.ndarray | None:
        """Fraction of the ink's full absorption over each pixel of a region (float32), None if nowhere.

        The ink lies on the coverslip, far above the focal plane the scanner keeps on the section, so it is
        imaged out of focus: the stroke's density (anti-aliased outline times its uneven laying-down) blurred by a
        Gaussian of ``PEN_DEFOCUS`` times the stroke's half width. A wide blur is computed on a coarser grid
        (2-4 of its pixels per sigma) and interpolated bilinearly: smooth either way, and cheap at level 0.
        Every pixel's value depends on the scene and its own position only, whatever region it is drawn in.
        """
        pen = self.pen
        sigma = PEN_DEFOCUS * pen.half_width / d  # in pixels of this level
        grow = (4.0 * sigma + 3.0) * d
        x0, y0, x1, y1 = pen.bbox
        if x1 + grow < x * d or x0 - grow > (x + width) * d or y1 + grow < y * d or y0 - grow > (y + height) * d:
            return None
        if sigma > 4.0:
            k = int(sigma / 2.0)
            # Pixel i's centre, (i + 0.5) * d, in pixels of the grid at downsample d * k, whose centres are (j + 0.5).
            u = (np.arange(x, x + width) + 0.5) / k - 0.5
            v = (np.arange(y, y + height) + 0.5) / k - 0.5
            ju, iv = np.floor(u).astype(np.intp), np.floor(v).astype(np.intp)
            fu, fv = (u - ju).astype(np.float32), (v - iv).astype(np.float32)
            j0, i0 = int(ju[0]), int(iv[0])
            coarse = self._ink_layer(d * k, j0, i0, int(ju[-1]) - j0 + 2, int(iv[-1]) - i0 + 2)
            if coarse is None:
                return None
            ju -= j0
            iv -= i0
            rows = coarse[iv] * (1 - fv)[:, None] + coarse[iv + 1] * fv[:, None]
            return rows[:, ju] * (1 - fu) + rows[:, ju + 1] * fu
        r = int(4.0 * sigma + 0.5) if sigma >= 0.25 else 0  # scipy's kernel radius at truncate=4
        cover = _soft(pen.outline, d, x - r, y - r, width + 2 * r, height + 2 * r)
        if not cover.any():
            return None
        noise = _glass_tile(self.seed, d)[1]
        n = noise.shape[0]
        grain = noise[np.ix_(np.arange(y - r, y + height + r) % n, np.arange(x - r, x + width + r) % n)]
        # Ink is laid down unevenly: its density follows the glass noise pattern a little.
        layer = cover.astype(np.float32) * np.float32(1 / 9) * (np.float32(INK_DENSITY) + np.float32(0.05) * grain)
        if r:
            import scipy.ndimage  # heavy (~0.5 s) and only for pen strokes with a blurred edge

            layer = scipy.ndimage.gaussian_filter(layer, sigma, mode="constant", truncate=4.0)
        return layer[r : r + height, r : r + width]

    def render(self, downsample: float, x: int, y: int, width: int, height: int) -> np.ndarray:
        """The RGB uint8 pixels of a region of the level at ``downsample`` (level pixel coordinates)."""
        return _rgb(self.render_packed(downsample, x, y, width, height))

    def _defocus(self, tissue: np.ndarray, isl: Island, d: float, xs: np.ndarray, ys: np.ndarray) -> None:
        """Blend the blurred texture into packed ``tissue`` (in place) over the blur disc."""
        b = self.blur
        # Focus falls off over a couple of sigma rather than at a hard line, as it does under a scanner.
        ramp = max(2.0 * b.sigma_um / self.mpp, d)
        reach = b.radius + ramp / 2
        ci = np.searchsorted(xs, (b.cx - reach, b.cx + reach))
        ri = np.searchsorted(ys, (b.cy - reach, b.cy + reach))
        if ci[0] == ci[1] or ri[0] == ri[1]:
            return
        cs, rs = slice(int(ci[0]), int(ci[1])), slice(int(ri[0]), int(ri[1]))
        dist = np.hypot(xs[cs][None, :] - b.cx, ys[rs][:, None] - b.cy)
        beta = np.clip((b.radius - dist) / ramp + 0.5, 0.0, 1.0).astype(np.float32)[..., None]
        sharp = _unpack(tissue[rs, cs])
        blurred = _unpack(self._texture(isl, d, xs[cs], ys[rs], blurred=True))
        tissue[rs, cs] = _pack(sharp + (blurred - sharp) * beta)

    def _texture(self, isl: Island, d: float, xs: np.ndarray, ys: np.ndarray, blurred: bool) -> np.ndarray:
        """Packed tissue texture of ``isl`` at pixel centres xs x ys (level-0 px) of the level at downsample d."""
        sigma = self.blur.sigma_um / (self.mpp * d) if blurred else 0.0
        period = _texture_period(self.mpp, d)
        tex = _packed_texture(period, round(sigma, 3), isl.gain)
        # Level-0 px -> source px -> texture px of this level; mod the period makes the mirrored tile seamless.
        scale = self.mpp / TEXTURE_MPP
        to_px = period / _SOURCE_PERIOD
        a = xs * scale  # source pixels
        b = ys * scale
        # The mirrored period alone repeats like a kaleidoscope across a big island; a smooth shear wave in each
        # direction bends its mirror lines and breaks the repetition, in source pixels so every level agrees.
        ax, lx, px, ay, ly, py = isl.texture_warp
        shift_a = ax * np.sin(2 * np.pi * b / lx + px)  # per row
        shift_b = ay * np.sin(2 * np.pi * a / ly + py)  # per column
        a = a + isl.texture_offset[0]
        b = b + isl.texture_offset[1]
        turn = isl.texture_turn
        if turn & 1:
            a, shift_a = -a, -shift_a
        if turn & 2:
            b, shift_b = -b, -shift_b
        # Everything that varies along one axis only is done on 1-D arrays; the 2-D sums are kept positive
        # (+ period) so truncation is floor, and small enough for float32.
        ra = (np.mod(a, _SOURCE_PERIOD) * to_px).astype(np.float32)
        rb = (np.mod(b, _SOURCE_PERIOD) * to_px).astype(np.float32)
        sa = (shift_a * to_px + period).astype(np.float32)
        sb = (shift_b * to_px + period).astype(np.float32)
        ia = (ra[None, :] + sa[:, None]).astype(np.int32)
        ib = (rb[:, None] + sb[None, :]).astype(np.int32)
        ia %= period
        ib %= period
        if turn & 4:
            ia, ib = ib, ia
        ib *= period
        ib += ia
        return tex.ravel().take(ib)


def _rgb(packed: np.ndarray) -> np.ndarray:
    """Packed uint32 pixels (h, w) to a contiguous (h, w, 3) uint8 RGB array."""
    src = packed.view(np.uint8).reshape(*packed.shape, 4)
    out = np.empty((*packed.shape, 3), np.uint8)
    # Channel by channel: numpy copies 2-D strided planes ~5x faster than a (..., 4) -> (..., 3) slice.
    for c in range(3):
        out[..., c] = src[..., c]
    return out


def _pack(rgb: np.ndarray) -> np.ndarray:
    """Float (..., 3) RGB to packed uint32 pixels, rounded and clipped."""
    out = np.zeros((*rgb.shape[:-1], 4), np.uint8)
    out[..., :3] = np.clip(np.rint(rgb), 0, 255)
    return out.view(np.uint32)[..., 0]


def _unpack(packed: np.ndarray) -> np.ndarray:
    """Packed uint32 pixels to float32 (..., 3) RGB."""
    return np.ascontiguousarray(packed).view(np.uint8).reshape(*packed.shape, 4)[..., :3].astype(np.float32)


def _size(box) -> tuple[int, int]:
    return box[1].stop - box[1].start, box[0].stop - box[0].start


def _texture_period(mpp: float, d: float) -> int:
    return max(1, round(_SOURCE_PERIOD * TEXTURE_MPP / (mpp * d)))


@functools.cache
def _mirrored_source() -> np.ndarray:
    """The IHC photograph mirrored into a seamless 1024 x 1024 period."""
    # The file skimage.data.immunohistochemistry() loads, read without importing skimage.data (~1 s).
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("synthetic slides take their tissue from scikit-image's IHC image: pip install scikit-image")
    with Image.open(Path(spec.submodule_search_locations[0]) / "data" / "ihc.png") as im:
        src = np.asarray(im.convert("RGB"), np.uint8)
    top = np.concatenate([src, src[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


@functools.lru_cache(maxsize=2)
def _texture(period: int, sigma: float) -> np.ndarray:
    """The mirrored photograph resampled to ``period`` px, optionally blurred by ``sigma`` px of that size."""
    src = _mirrored_source()
    if sigma > 0:
        import scipy.fft  # heavy (~0.5 s) and only for blurred textures

        # Blurred at the photograph's own 1024-px period whatever the level: a blurred image has nothing left
        # that resampling could lose, and the FFTs stay small (level 0 of a 0.25-um slide would need ~100 MB).
        # On a periodic image a Gaussian is a product in Fourier space: exact wrap-around.
        n = src.shape[0]
        sig = sigma * n / period
        fy, fx = np.fft.fftfreq(n), np.fft.rfftfreq(n)
        g = np.exp(-2.0 * (np.pi * sig) ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2)).astype(np.float32)
        out = np.empty_like(src)
        for c in range(3):
            plane = scipy.fft.irfft2(scipy.fft.rfft2(src[..., c].astype(np.float32)) * g, s=(n, n))
            out[..., c] = np.clip(np.rint(plane), 0, 255)
        src = out
    if period != src.shape[0]:
        # Lanczos on the mirror-symmetric period: its border extension equals the wrap, so no seams appear.
        src = np.asarray(Image.fromarray(src).resize((period, period), Image.Resampling.LANCZOS))
    return src


# Levels are written one after another, so only one level's textures (one per island, one blurred) need to
# stay cached: at level 0 of a 0.25-um slide with 4 islands, ~80 MB whatever the slide's size.
@functools.lru_cache(maxsize=6)
def _packed_texture(period: int, sigma: float, gain: tuple[float, float, float]) -> np.ndarray:
    """:func:`_texture` with an island's stain gain, packed one uint32 per pixel (16 MB at 2048 px)."""
    tex = _texture(period, sigma)
    lut = np.clip(np.rint(np.arange(256)[:, None] * np.asarray(gain)[None, :]), 0, 255).astype(np.uint8)
    out = np.zeros((period, period, 4), np.uint8)
    for c in range(3):
        out[..., c] = lut[tex[..., c], c]
    out = out.view(np.uint32)[..., 0]
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _glass_tile(seed: int, downsample: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A 256 x 256 periodic patch of glass (packed uint32) at ``downsample`` and its noise (float32).

    The noise is in standard deviations of level 0's: a scanner's lower levels are averages of level 0, so a
    pixel of the level at downsample d holds the mean of d x d independent level-0 samples and its noise has
    1/d of their standard deviation (at d >= 4 under half a grey level: flat glass, as real thumbnails have).
    """
    noise = np.random.default_rng([seed, 0x6C617373]).standard_normal((256, 256)).astype(np.float32)
    noise *= np.float32(1.0 / max(1.0, float(downsample)))
    glass = _pack(noise[..., None] * GLASS_NOISE + np.asarray(GLASS_RGB, np.float32))
    glass.setflags(write=False)
    noise.setflags(write=False)
    return glass, noise


def _frame_to_image(u: np.ndarray, v: np.ndarray, cx, cy, sx, sy, angle) -> np.ndarray:
    """Points of an island's frame (stretched by sx, sy, rotated by angle, about cx, cy) in level-0 pixels."""
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + sx * u * c - sy * v * s, cy + sx * u * s + sy * v * c], axis=1)


def make_scene(
    width: int,
    height: int,
    mpp: float = 0.25,
    *,
    islands: int = 4,
    pen: bool = True,
    blur: bool = True,
    seed: int = 0,
    blur_sigma_um: float = 6.0,
) -> Scene:
    """The geometry of a synthetic slide: ``islands`` tissue blobs on a grid, a pen stroke, a blurred patch.

    Islands are laid out one per cell of a grid shaped like the slide (cells chosen at random when there are
    more cells than islands), each a star-shaped blob: a few random low harmonics shape it, many small high
    ones fray its edge. The pen arcs 200-290 degrees around island 0 along its smoothed outline, wobbling 10 %
    in and out of it; the blur disc lies inside island 1 (island 0 with a single island), clear of its edge.

    Example:
        >>> scene = make_scene(2048, 1536, islands=4, seed=3)
        >>> len(scene.islands), scene.pen.island, scene.blur.island
        (4, 0, 1)
    """
    if width < 16 or height < 16:
        raise ValueError(f"slide must be at least 16 x 16 px, got {width} x {height}")
    if islands < 0:
        raise ValueError(f"islands must be >= 0, got {islands}")
    if (pen or blur) and islands == 0:
        raise ValueError("a pen mark or a blurred patch needs at least one tissue island")
    rng = np.random.default_rng(seed)
    cols = max(1, round(math.sqrt(islands * width / height))) if islands else 1
    rows = max(1, math.ceil(islands / cols)) if islands else 1
    cols = max(cols, math.ceil(islands / rows)) if islands else 1
    cw, ch = width / cols, height / rows
    cells = sorted(rng.choice(rows * cols, size=islands, replace=False).tolist()) if islands else []
    theta = np.linspace(-np.pi, np.pi, _OUTLINE_VERTICES, endpoint=False)

    made, frames = [], []
    for cell in cells:
        r_, c_ = divmod(cell, cols)
        ks = np.arange(2, 40)
        # Low harmonics shape the blob, high ones fray its edge; amplitudes fall with k like real outlines.
        amps = rng.normal(0.0, 1.0, ks.size) * np.where(ks < 7, 0.12 / ks**0.6, 0.25 / ks**1.5)
        total = float(np.abs(amps).sum())
        if total > 0.55:
            amps *= 0.55 / total
        phases = rng.uniform(0, 2 * np.pi, ks.size)
        terms = amps[:, None] * np.cos(ks[:, None] * theta[None, :] + phases[:, None])
        profile = 1.0 + terms.sum(0)
        smooth = 1.0 + terms[ks < 7].sum(0)
        sx, sy = float(rng.uniform(0.8, 1.25)), float(rng.uniform(0.8, 1.25))
        # The pen runs up to 10 % outside its island plus its width: every island leaves room for it in its cell.
        reach = float(profile.max()) * max(sx, sy)
        radius = 0.5 * min(cw, ch) * float(rng.uniform(0.8, 0.95)) / (reach * 1.1)
        extent = radius * reach
        slack_x = max(0.0, cw / 2 - extent * 1.1)
        slack_y = max(0.0, ch / 2 - extent * 1.1)
        cx = (c_ + 0.5) * cw + float(rng.uniform(-0.6, 0.6)) * slack_x
        cy = (r_ + 0.5) * ch + float(rng.uniform(-0.6, 0.6)) * slack_y
        angle = float(rng.uniform(0, np.pi))
        r = radius * profile
        frames.append((cx, cy, sx, sy, angle, radius, smooth))
        made.append(
            Island(
                outline=_frame_to_image(r * np.cos(theta), r * np.sin(theta), cx, cy, sx, sy, angle),
                centre=(cx, cy),
                # Every point closer than radius * min stretch * min profile to the centre is inside.
                inner_radius=radius * min(sx, sy) * float(profile.min()),
                # Darker than the photograph on average: its palest stroma would otherwise pass for glass.
                gain=tuple(float(g) for g in (0.9 * rng.normal(1.0, 0.03, 3)).clip(0.8, 1.0)),
                texture_offset=(float(rng.uniform(0, _SOURCE_PERIOD)), float(rng.uniform(0, _SOURCE_PERIOD))),
                texture_turn=int(rng.integers(8)),
                # Shear at most ~0.37 (amplitude x 2 pi / wavelength): bent, not smeared, cells.
                texture_warp=(
                    float(rng.uniform(80, 140)),
                    float(rng.uniform(2400, 3600)),
                    float(rng.uniform(0, 2 * np.pi)),
                    float(rng.uniform(80, 140)),
                    float(rng.uniform(2400, 3600)),
                    float(rng.uniform(0, 2 * np.pi)),
                ),
            )
        )

    pen_mark = None
    if pen:
        ink = ("green", "blue", "black")[int(rng.integers(3))]
        start = float(rng.uniform(-np.pi, np.pi))
        span = float(rng.uniform(1.1, 1.6) * np.pi)
        freq, phase = float(rng.uniform(2.0, 4.0)), float(rng.uniform(0, 2 * np.pi))
        half = max(4.0, 0.0175 * min(width, height))
        cx, cy, sx, sy, angle, radius, smooth = frames[0]
        t = np.linspace(0.0, span, _PEN_VERTICES)
        ang = start + t
        # The island's smoothed outline, sampled at the stroke's angles (a hand follows the shape, not the fray).
        idx = np.mod(ang + np.pi, 2 * np.pi) / (2 * np.pi) * _OUTLINE_VERTICES
        base = np.interp(idx, np.arange(_OUTLINE_VERTICES + 1), np.append(smooth, smooth[0]))
        rc = radius * base * (1.0 + 0.1 * np.sin(freq * t + phase))
        centre = _frame_to_image(rc * np.cos(ang), rc * np.sin(ang), cx, cy, sx, sy, angle)
        tangent = np.gradient(centre, axis=0)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1) / np.hypot(*tangent.T)[:, None]
        # A marker tip lifts at both ends: the stroke narrows to nothing over its last 0.35 radians.
        hw = half * np.sqrt(np.clip(np.minimum(t, span - t) / 0.35, 0.0, 1.0))
        outline = np.concatenate([centre + normal * hw[:, None], (centre - normal * hw[:, None])[::-1]])
        pen_mark = PenMark(island=0, outline=outline, half_width=half, ink=ink, transmittance=_INKS[ink])
    blur_patch = None
    if blur:
        i = 1 if len(made) > 1 else 0
        isl = made[i]
        ang = float(rng.uniform(0, 2 * np.pi))
        off = 0.2 * isl.inner_radius
        blur_patch = BlurPatch(
            island=i,
            cx=isl.centre[0] + off * math.cos(ang),
            cy=isl.centre[1] + off * math.sin(ang),
            radius=0.6 * isl.inner_radius,
            sigma_um=float(blur_sigma_um),
        )
    return Scene(int(width), int(height), float(mpp), int(seed), tuple(made), pen_mark, blur_patch)


@dataclass(frozen=True)
class SyntheticSlide:
    """A synthetic slide on disk and the scene it was drawn from.

    ``level_dimensions`` are (width, height) per level, level ``i`` holding ``downsamples[i]`` x
    ``downsamples[i]`` level-0 pixels per pixel (dimensions rounded down, as Aperio scanners do).
    """

    path: Path
    kind: str
    width: int
    height: int
    mpp: float
    magnification: float
    downsamples: tuple[int, ...]
    level_dimensions: tuple[tuple[int, int], ...]
    tile: int
    quality: int
    scene: Scene = field(repr=False)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.width, self.height

    def _dims(self, downsample: float) -> tuple[int, int]:
        return max(1, int(self.width // downsample)), max(1, int(self.height // downsample))

    def _mask(self, name: str, downsample: float) -> np.ndarray:
        w, h = self._dims(downsample)
        out = np.empty((h, w), bool)
        step = max(1, (1 << 22) // w)
        for y in range(0, h, step):
            rows = min(step, h - y)
            out[y : y + rows] = self.scene.masks(downsample, 0, y, w, rows)[name]
        return out

    def tissue_mask(self, downsample: float = 16) -> np.ndarray:
        """Ground truth: True where a pixel of the level at ``downsample`` lies in a tissue island.

        Shape (height // downsample, width // downsample), evaluated at pixel centres; pen ink over tissue is
        still tissue. Any downsample works, not only the slide's levels (it is computed in strips, but the result
        is one byte per pixel: downsample 1 of a 24,000 x 18,000 slide is 432 MB).

        Example:
            >>> slide.tissue_mask(16).shape  # a 24,000 x 18,000 slide  # doctest: +SKIP
            (1125, 1500)
        """
        return self._mask("tissue", downsample)

    def pen_mask(self, downsample: float = 16) -> np.ndarray:
        """Ground truth: True where the pen stroke covers a pixel (over glass or tissue)."""
        return self._mask("pen", downsample)

    def blur_mask(self, downsample: float = 16) -> np.ndarray:
        """Ground truth: True on tissue inside the out-of-focus patch."""
        return self._mask("blur", downsample)

    def render(self, x: int, y: int, width: int, height: int, downsample: float = 1) -> np.ndarray:
        """The exact RGB pixels (before JPEG) of a region, in pixel coordinates of the level at ``downsample``."""
        return self.scene.render(downsample, x, y, width, height)


def _tiles(scene: Scene, d: float, dims: tuple[int, int], tile: int) -> Iterator[np.ndarray]:
    """Tiles of one level in TIFF order (rows of tiles, left to right), edge tiles drawn past the edge."""
    w, h = dims
    nx, ny = -(-w // tile), -(-h // tile)
    for ty in range(ny):
        for tx0 in range(0, nx, _BLOCK_TILES):
            n = min(_BLOCK_TILES, nx - tx0)
            block = scene.render(d, tx0 * tile, ty * tile, n * tile, tile)
            for i in range(n):
                yield np.ascontiguousarray(block[:, i * tile : (i + 1) * tile])


def _aperio_description(w0: int, h0: int, tile: int, quality: int, lw: int, lh: int, extra: str = "") -> str:
    head = f"{_APERIO_HEADER}{w0}x{h0} [0,0 {w0}x{h0}] ({tile}x{tile})"
    if (lw, lh) != (w0, h0):
        head += f" -> {lw}x{lh}"
    return f"{head} JPEG/RGB Q={quality}{extra}"


def write_synthetic_slide(
    path: str | os.PathLike,
    width: int,
    height: int,
    mpp: float = 0.25,
    magnification: float = 40,
    levels: Sequence[int] = (1, 4, 16),
    tile: int = 256,
    kind: str = "aperio",
    islands: int = 4,
    pen: bool = True,
    blur: bool = True,
    seed: int = 0,
    quality: int = 90,
    *,
    resolution_unit: str = "centimeter",
    bigtiff: bool | None = None,
    blur_sigma_um: float = 6.0,
) -> SyntheticSlide:
    """Write a synthetic pyramidal whole-slide image and return its description and ground truth.

    Args:
        path: the file to write (replaced atomically: readers never see half a slide; folders are created).
        width, height: level-0 size in pixels; any size, memory use does not grow with it.
        mpp: level-0 microns per pixel; magnification: the objective power recorded (Aperio ``AppMag``).
        levels: downsample of each pyramid level, starting at 1, increasing.
        tile: tile side (a multiple of 16: JPEG tiles with 2x2 chroma subsampling).
        kind: ``"aperio"`` (SVS: description with ``AppMag``/``MPP``, thumbnail page, levels as top-level
            pages, no resolution tags), ``"ome"`` (OME-XML with ``PhysicalSizeX``/``Y`` in microns, lower
            levels in SubIFDs of the first page, resolution tags) or ``"plain"`` (levels as top-level reduced
            pages, resolution tags, no description at all).
        islands, pen, blur, seed: the scene (see :func:`make_scene`).
        quality: JPEG quality of the tiles.
        resolution_unit: unit of the TIFF resolution tags of the ome and plain kinds: ``"centimeter"``,
            ``"inch"``, ``"millimeter"`` or ``"micrometer"`` (the last two are vendor extensions).
        bigtiff: write BigTIFF; default: only when level 0 holds 4 GiB or more of raw pixels.

    Example:
        >>> slide = write_synthetic_slide(tmp / "s.svs", 2048, 1536, seed=1)  # doctest: +SKIP
        >>> import openslide; openslide.OpenSlide(slide.path).properties["openslide.mpp-x"]  # doctest: +SKIP
        '0.25'
    """
    # Only when writing: tifffile is a large import, and slidetiles.io (the writer) pulls in protobuf.
    import tifffile

    from slidetiles.io.writer import atomic_write

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    levels = tuple(int(d) for d in levels)
    if not levels or levels[0] != 1 or any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must start at 1 and increase, got {levels}")
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    unit = {"centimeter": 1e4, "inch": 25400.0, "millimeter": 1e3, "micrometer": 1.0}.get(resolution_unit)
    if unit is None:
        raise ValueError(f"unknown resolution_unit {resolution_unit!r}")

    scene = make_scene(width, height, mpp, islands=islands, pen=pen, blur=blur, seed=seed, blur_sigma_um=blur_sigma_um)
    dims = tuple((max(1, width // d), max(1, height // d)) for d in levels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bigtiff is None:
        bigtiff = width * height * 3 >= 4 << 30

    common = dict(
        dtype=np.uint8,
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": int(quality)},
        tile=(tile, tile),
        software="slidetiles",
        metadata=None,
        # tifffile gathers this many bytes of raw tiles before compressing them (default 256 MiB): the bound on
        # memory while writing, so keep it small.
        buffersize=16 << 20,
        # Encoding in the writing thread: worker threads would overlap only the JPEG step (~15 % of the time)
        # and make the peak memory depend on thread timing (malloc arenas).
        maxworkers=1,
    )

    def res(d: int) -> dict:
        if kind == "aperio":
            return {}
        per_unit = unit / (mpp * d)
        return {"resolution": (per_unit, per_unit), "resolutionunit": resolution_unit.upper()}

    with atomic_write(path) as fh, tifffile.TiffWriter(fh, bigtiff=bigtiff, ome=False) as tw:
        for i, (d, (lw, lh)) in enumerate(zip(levels, dims)):
            kw = dict(common, shape=(lh, lw, 3), **res(d))
            if kind == "aperio":
                extra = ""
                if i == 0:
                    extra = f"|AppMag = {magnification:g}|MPP = {mpp:g}|Filename = {path.stem}"
                kw["description"] = _aperio_description(width, height, tile, quality, lw, lh, extra)
            elif kind == "ome" and i == 0:
                # UTF-8 bytes: TIFF ASCII strings cannot hold the "µm" unit OME-XML spells out.
                kw["description"] = _ome_xml(path.stem, width, height, mpp, magnification).encode()
                if len(levels) > 1:
                    kw["subifds"] = len(levels) - 1
            if i > 0 and kind != "aperio":
                kw["subfiletype"] = 1  # FILETYPE.REDUCEDIMAGE
            tw.write(_tiles(scene, float(d), (lw, lh), tile), **kw)
            if kind == "aperio" and i == 0:
                _write_thumbnail(tw, scene, width, height, tile, quality)

    # Level-0 textures are ~16 MB each: let them go rather than hold them for the rest of the process.
    _packed_texture.cache_clear()
    _texture.cache_clear()
    return SyntheticSlide(
        path=path,
        kind=kind,
        width=int(width),
        height=int(height),
        mpp=float(mpp),
        magnification=float(magnification),
        downsamples=levels,
        level_dimensions=dims,
        tile=int(tile),
        quality=int(quality),
        scene=scene,
    )


def _write_thumbnail(tw, scene: Scene, width: int, height: int, tile: int, quality: int) -> None:
    # OpenSlide takes an Aperio file's second directory, untiled, as its thumbnail; scanners write ~1 Kpx ones.
    d = max(1.0, max(width, height) / 1024)
    tw_, th_ = max(1, int(width // d)), max(1, int(height // d))
    pixels = scene.render(d, 0, 0, tw_, th_)
    tw.write(
        pixels,
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": int(quality)},
        rowsperstrip=16,
        maxworkers=1,
        software="slidetiles",
        metadata=None,
        description=f"{_APERIO_HEADER}{width}x{height} -> {tw_}x{th_} - ",
    )


def _ome_xml(name: str, width: int, height: int, mpp: float, magnification: float) -> str:
    from xml.sax.saxutils import quoteattr  # here: it imports urllib.request, ssl and email, for one function

    # Written by hand rather than by tifffile's OME writer, which has no Instrument/Objective (magnification).
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.openmicroscopy.org/Schemas/OME/2016-06 '
        'http://www.openmicroscopy.org/Schemas/OME/2016-06/ome.xsd" Creator="slidetiles">'
        '<Instrument ID="Instrument:0">'
        f'<Objective ID="Objective:0" NominalMagnification="{magnification:g}"/></Instrument>'
        f'<Image ID="Image:0" Name={quoteattr(name)}>'
        '<InstrumentRef ID="Instrument:0"/><ObjectiveSettings ID="Objective:0"/>'
        f'<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="{width}" SizeY="{height}" '
        f'SizeC="3" SizeZ="1" SizeT="1" Interleaved="true" '
        f'PhysicalSizeX="{mpp:g}" PhysicalSizeXUnit="µm" PhysicalSizeY="{mpp:g}" PhysicalSizeYUnit="µm">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="3"><LightPath/></Channel>'
        '<TiffData IFD="0" PlaneCount="1"/>'
        "</Pixels></Image></OME>"
    )
