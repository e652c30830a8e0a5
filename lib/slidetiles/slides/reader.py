"""Open a whole-slide image and read regions of its pyramid levels as RGB numpy arrays.

The reader was chosen by measurement (benchmarks/bench_slide_readers.py: random 302-px region reads on a synthetic
24,000 x 18,000 Aperio slide): libvips (pyvips-binary 8.18, its TIFF loader) read 1.9-2.7x as many regions per
second as OpenSlide 4.0.1 and tiffslide 0.64-0.84x OpenSlide. So TIFF-family slides (Aperio SVS, generic tiled
pyramidal TIFF, OME-TIFF with SubIFD or page pyramids, and the other TIFF-based formats whose pyramid tifffile
recognises) are read by libvips, with the pyramid's levels found by tifffile, which knows each vendor's page layout
(Aperio's thumbnail and label pages, OME SubIFDs, reduced-resolution pages). pyvips-binary has no OpenSlide loader,
so the other formats OpenSlide 4.0 opens are read through OpenSlide (openslide-bin): Hamamatsu NDPI/VMS/VMU, MIRAX
(.mrxs), Leica SCN, Ventana BIF, Philips TIFF, Sakura SVSLIDE and DICOM WSI (.dcm). Only the TIFF-based ones that
tifffile flags go there directly (:data:`OPENSLIDE_TIFF_FLAGS`); a Trestle or Ventana .tif that tifffile reads as
a plain pyramid is read by libvips as one. Their JPEG-compressed tiled levels are decoded by
:mod:`slidetiles.slides.tiffjpeg` instead (each source tile once, the pixels checked against libvips' per level).

Example:
    >>> reader = open_slide("slide1.svs")  # doctest: +SKIP
    >>> reader.level_downsamples, reader.mpp  # doctest: +SKIP
    ((1.0, 4.0, 16.0), 0.25)
    >>> reader.read(1, 100, 50, 302, 302).shape  # level-1 pixels  # doctest: +SKIP
    (302, 302, 3)
"""

from __future__ import annotations

import logging
import os
import struct
import threading

import numpy as np
import openslide
import pyvips
import tifffile

from slidetiles.errors import SlideFormatError
from slidetiles.slides import mpp as mpp_sources
from slidetiles.slides.tiffjpeg import JpegLevels, jpeg_level

log = logging.getLogger(__name__)

#: TIFF-based vendor formats (tifffile's flags) whose layout OpenSlide knows and libvips' TIFF loader does not
#: (NDPI's 64-bit offsets and strip JPEGs, Leica SCN collections, Philips' DICOM-in-TIFF levels, Ventana BIF).
OPENSLIDE_TIFF_FLAGS = ("ndpi", "scn", "philips", "bif")
#: Padding of regions past the slide's edge (Slideflow pads edge tiles; white reads as background).
PAD_VALUE = 255


def _downsample(w0: int, h0: int, w: int, h: int) -> float:
    # OpenSlide's definition: the mean of both axes' ratios, so every backend reports the same levels.
    return (w0 / w + h0 / h) / 2


class SlideReader:
    """One open slide: level geometry, MPP, vendor properties, and region reads. Use :func:`open_slide`."""

    backend: str = ""
    path: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    #: MPP recorded in the file (None when it records none).
    mpp: float | None
    properties: dict

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB ``(height, width, 3)`` uint8 pixels of ``level`` from level pixel ``(x, y)``; white past the edges."""
        lw, lh = self.level_dimensions[level]
        out = None
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, lw), min(y + height, lh)
        if x0 >= x1 or y0 >= y1:
            return np.full((height, width, 3), PAD_VALUE, np.uint8)
        inner = self._read(level, x0, y0, x1 - x0, y1 - y0)
        if (x0, y0, x1, y1) == (x, y, x + width, y + height):
            return inner
        out = np.full((height, width, 3), PAD_VALUE, np.uint8)
        out[y0 - y : y1 - y, x0 - x : x1 - x] = inner
        return out

    def read_vips(self, level: int, x: int, y: int, width: int, height: int):
        """The same region as a ``pyvips.Image`` (for resizing in libvips without a round trip through numpy)."""
        return pyvips.Image.new_from_array(self.read(level, x, y, width, height), interpretation="srgb")

    def to_array(self, image, what: str) -> np.ndarray:
        """Pixels of a ``pyvips.Image`` made from this slide; a read failure names the slide and ``what``."""
        try:
            data = image.write_to_memory()
        except pyvips.Error as exc:
            raise self.format_error(f"cannot read {what}", exc) from None
        return np.frombuffer(data, np.uint8).reshape(image.height, image.width, image.bands)

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def format_error(self, message: str, exc: BaseException | None = None) -> SlideFormatError:
        """A :class:`SlideFormatError` naming this slide: ``message``, then the cause ``exc`` in brackets."""
        detail = f" ({exc})" if exc is not None else ""
        return SlideFormatError(self.path, f"{message}{detail}")


class VipsTiffReader(SlideReader):
    """TIFF-family slides: levels from tifffile, pixels from libvips' TIFF loader."""

    backend = "libvips"

    def __init__(self, path: str, tif):
        self.path = path
        series = tif.series[0]
        page0 = series.levels[0].keyframe
        if page0.dtype != np.uint8 or page0.samplesperpixel not in (3, 4) or series.levels[0].shape[-1] not in (3, 4):
            raise SlideFormatError(
                path,
                f"not an RGB brightfield slide (first image: shape {series.levels[0].shape}, {page0.dtype}); "
                "only 8-bit RGB(A) whole-slide images can be tiled",
            )
        top = {p.offset: i for i, p in enumerate(tif.pages)}
        subifds = list(tif.pages[0].subifds or ())
        self._loads = []
        dims = []
        jpeg = {}
        for level in series.levels:
            kf = level.keyframe
            if kf.offset in top:
                self._loads.append({"page": top[kf.offset]})
            elif kf.offset in subifds:
                self._loads.append({"page": 0, "subifd": subifds.index(kf.offset)})
            else:
                break  # a level we cannot address by page: read the finer ones only
            dims.append((int(kf.imagewidth), int(kf.imagelength)))
            fast = None if os.environ.get("SLIDETILES_VIPS_ONLY") else jpeg_level(kf)
            if fast is not None:
                jpeg[len(dims) - 1] = fast
        w0, h0 = dims[0]
        self.level_dimensions = tuple(dims)
        self.level_downsamples = tuple(_downsample(w0, h0, w, h) for w, h in dims)
        self.mpp = mpp_sources.mpp_from_tiff_page(page0)
        self.vendor = "aperio" if tif.is_svs else "ome" if tif.is_ome else "generic-tiff"
        self.properties = {"slidetiles.vendor": self.vendor, "tiff.ImageDescription": page0.description or ""}
        self._images = {}
        self._pyvips = pyvips
        # JPEG levels are read by decoding each source tile once (slidetiles.slides.tiffjpeg), the rest by libvips.
        self._jpeg = JpegLevels(path, jpeg)
        self._checked = {}
        self._check_lock = threading.Lock()

    def _image(self, level: int):
        image = self._images.get(level)
        if image is None:
            try:
                # fail_on="error": a damaged JPEG tile is an error, not a silently grey tile in a training set.
                image = self._pyvips.Image.tiffload(self.path, access="random", fail_on="error", **self._loads[level])
            except self._pyvips.Error as exc:
                raise self.format_error(f"libvips cannot open pyramid level {level}", exc) from None
            if image.bands == 4:
                image = image.flatten(background=[PAD_VALUE] * 3)
            self._images[level] = image
        return image

    def _fast(self, level: int) -> bool:
        """Whether ``level`` is read through :mod:`slidetiles.slides.tiffjpeg`: a level it accepts whose most
        detailed tile (the most JPEG bytes) it decodes to libvips' very pixels, checked once per level."""
        if level not in self._jpeg:
            return False
        with self._check_lock:
            if level not in self._checked:
                info = self._jpeg.levels[level]
                index = int(np.argmax(info["counts"]))
                x = (index % info["across"]) * info["tile_width"]
                y = (index // info["across"]) * info["tile_height"]
                w, h = min(info["tile_width"], info["width"] - x), min(info["tile_height"], info["height"] - y)
                if not self._jpeg.decodable(level, index):  # a JPEG kind simplejpeg is not used for (4:1:1...)
                    same = False
                else:
                    # A damaged tile raises here (SlideFormatError, naming it): libvips would give wrong pixels.
                    fast = self._jpeg.read(level, x, y, w, h)
                    try:
                        same = np.array_equal(fast, self._vips_read(level, x, y, w, h))
                    except SlideFormatError as exc:
                        log.debug("%s: level %d left to libvips, which cannot read it (%s)", self.path, level, exc)
                        same = False
                if not same:
                    log.info("%s: level %d left to libvips (its pixels differ from tiffjpeg's)", self.path, level)
                    self._jpeg.drop(level)
                self._checked[level] = same
        return self._checked[level]

    def _read(self, level, x, y, width, height):
        if self._fast(level):
            return self._jpeg.read(level, x, y, width, height)
        return self._vips_read(level, x, y, width, height)

    def _vips_read(self, level, x, y, width, height):
        image = self._image(level)
        try:
            data = image.crop(x, y, width, height).write_to_memory()
        except self._pyvips.Error as exc:
            raise self.format_error(f"cannot read the region at level {level}, ({x}, {y}) {width}x{height}", exc) from None
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)

    def read_vips(self, level, x, y, width, height):
        lw, lh = self.level_dimensions[level]
        if self._fast(level):
            region = self.read(level, x, y, width, height)
            return self._pyvips.Image.new_from_memory(region.data, width, height, 3, "uchar")  # sRGB, as tiffload
        if x >= 0 and y >= 0 and x + width <= lw and y + height <= lh:
            return self._image(level).crop(x, y, width, height)
        return super().read_vips(level, x, y, width, height)

    def close(self):
        self._jpeg.close()
        self._images.clear()


class OpenSlideReader(SlideReader):
    """Formats libvips' TIFF loader does not read: OpenSlide (openslide-bin)."""

    backend = "openslide"

    def __init__(self, path: str):
        self.path = path
        try:
            self._slide = openslide.OpenSlide(path)
        except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as exc:
            raise self.format_error("OpenSlide cannot open the slide", exc) from None
        self._openslide = openslide
        self.level_dimensions = tuple(tuple(int(v) for v in d) for d in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        self.properties = dict(self._slide.properties)
        self.vendor = self.properties.get("openslide.vendor", "")
        self.mpp = mpp_sources.mpp_from_properties(self.properties)

    def _read(self, level, x, y, width, height):
        ds = self.level_downsamples[level]
        try:
            rgba = np.asarray(self._slide.read_region((int(round(x * ds)), int(round(y * ds))), level, (width, height)))
        except self._openslide.OpenSlideError as exc:
            raise self.format_error(f"cannot read the region at level {level}, ({x}, {y}) {width}x{height}", exc) from None
        # OpenSlide gives premultiplied RGBA with alpha 0 where nothing was scanned: white there, as glass.
        alpha = rgba[..., 3:4].astype(np.uint16)
        rgb = rgba[..., :3].astype(np.uint16) + (PAD_VALUE * (255 - alpha) + 127) // 255
        return np.minimum(rgb, 255).astype(np.uint8)

    def close(self):
        self._slide.close()


def open_slide(path: str | os.PathLike) -> SlideReader:
    """Open a slide with the reader that serves its format (libvips for TIFF pyramids, else OpenSlide).

    Raises :class:`~slidetiles.errors.SlideFormatError` naming the slide when the file is missing, damaged or in no
    format a reader opens.

    Example:
        >>> open_slide("slides/s1.svs").level_dimensions  # doctest: +SKIP
        ((24000, 18000), (6000, 4500), (1500, 1125))
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SlideFormatError(path, "no such slide file (check the path and the source's slides folder)")
    tiff_problem = None
    try:
        with tifffile.TiffFile(path) as tif:
            vendor = [flag for flag in OPENSLIDE_TIFF_FLAGS if getattr(tif, f"is_{flag}", False)]
            if vendor:
                tiff_problem = f"a {vendor[0]} TIFF, read by OpenSlide"
            elif tif.series and tif.series[0].levels:
                return VipsTiffReader(path, tif)
            else:
                tiff_problem = "tifffile finds no image series in it"
    except SlideFormatError:
        raise
    except tifffile.TiffFileError as exc:
        tiff_problem = f"not a readable TIFF: {exc}"
    except (OSError, ValueError, IndexError, KeyError, struct.error) as exc:
        tiff_problem = f"damaged TIFF: {exc}"
    if openslide.OpenSlide.detect_format(path) is None:
        raise SlideFormatError(
            path,
            f"unsupported or corrupt slide file ({tiff_problem}; OpenSlide does not recognise it either). "
            "Supported: Aperio SVS, generic tiled TIFF, OME-TIFF and the formats OpenSlide reads "
            "(NDPI, MRXS, SCN, BIF, VMS/VMU, SVSLIDE, Philips TIFF, DICOM); re-export or re-copy the slide",
        )
    return OpenSlideReader(path)

