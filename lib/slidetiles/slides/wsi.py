"""``WSI``: a whole-slide image with its tile grid, Slideflow's ``sf.WSI`` names and defaults.

Example:
    >>> import slidetiles as sf
    >>> wsi = sf.WSI("slides/s1.svs", tile_px=299, tile_um=302)  # doctest: +SKIP
    >>> wsi.qc("otsu")  # doctest: +SKIP
    >>> wsi.extract_tiles(tfrecord_dir="tfrecords/299px_302um").num_tiles  # doctest: +SKIP
    412
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
from PIL import Image

from slidetiles.errors import MagnificationError, MissingMPPError, MissingROIError, SlideError, SlideTooSmallError
from slidetiles.slides import grid
from slidetiles.slides import qc as qc_module  # `qc` and `roi` are also WSI's method and argument names
from slidetiles.slides import roi as roi_module
from slidetiles.slides.extract import extract_tiles
from slidetiles.slides.reader import open_slide

log = logging.getLogger(__name__)

ROI_METHODS = ("auto", "inside", "outside", "ignore")


#: Two-part extensions Slideflow strips whole (``path_to_name``; compared case-sensitively, as Slideflow does).
_DOUBLE_EXTENSIONS = ("ome.tif", "ome.tiff")


def slide_name(path: str | os.PathLike) -> str:
    """The slide's name as Slideflow derives it: the file name without its extension (``.ome.tiff`` whole).

    >>> slide_name("/data/slides/TCGA-01.svs"), slide_name("s2.ome.tiff"), slide_name("a.b.svs")
    ('TCGA-01', 's2', 'a.b')
    """
    parts = os.path.basename(os.fspath(path)).split(".")
    if len(parts) == 1:
        return parts[0]
    if len(parts) > 2 and ".".join(parts[-2:]) in _DOUBLE_EXTENSIONS:
        return ".".join(parts[:-2])
    return ".".join(parts[:-1])


class WSI:
    """A slide opened for tiling: reader, microns per pixel, tile size and the grid of tiles to extract.

    Args (Slideflow's):
        path: the slide file. tile_px: output tile side. tile_um: microns (int) or magnification (``'20x'``).
        stride_div: 1 for no overlap, 2 for half-tile steps... origin: grid start (level-0 px) or ``'random'``.
        rois, roi_dir, roi_method, roi_filter_method: regions of interest (see :mod:`slidetiles.slides.roi`).
        mpp: microns per pixel, overriding (or standing in for) what the file records.
        use_edge_tiles: also tiles that cross the slide's right/bottom edge, padded white.
        enable_downsample: read from coarser pyramid levels (default); False reads level 0 only.

    Raises:
        SlideFormatError: the file is missing, corrupt or unsupported. MissingMPPError: no MPP in the file and
        none given. SlideTooSmallError: no tile fits in the slide.

    Example:
        >>> wsi = WSI("s1.svs", 256, "20x", stride_div=2)  # doctest: +SKIP
        >>> wsi.coord[:2]  # top-left x, y, grid x, grid y  # doctest: +SKIP
        array([[  0,   0,   0,   0],
               [256,   0,   1,   0]])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tile_px: int,
        tile_um: int | str,
        stride_div: int = 1,
        *,
        enable_downsample: bool = True,
        roi_dir: str | os.PathLike | None = None,
        rois=None,
        roi_method: str = "auto",
        roi_filter_method: str | float = "center",
        origin=(0, 0),
        pb=None,
        verbose: bool = True,
        use_edge_tiles: bool = False,
        mpp: float | None = None,
        simplify_roi_tolerance: float | None = None,
        artifact_labels=None,
        disable_grid: bool = False,
        **reader_kwargs,
    ):
        self.path = os.fspath(path)
        self.name = slide_name(self.path)
        self.shortname = self.name
        if roi_method not in ROI_METHODS:
            raise ValueError(f"roi_method={roi_method!r}: use one of {ROI_METHODS}")
        if roi_filter_method != "center" and not (
            isinstance(roi_filter_method, (int, float)) and 0 <= roi_filter_method <= 1
        ):
            raise ValueError(f"roi_filter_method={roi_filter_method!r}: use 'center' or a fraction between 0 and 1")
        if isinstance(origin, str):
            if origin != "random":
                raise ValueError(f"origin={origin!r}: use 'random' or a tuple of two ints")
        elif len(tuple(origin)) != 2:
            raise ValueError(f"origin={origin!r}: a tuple (x, y) of level-0 pixels")
        self.reader = open_slide(self.path)
        if mpp is not None:
            if not float(mpp) > 0:
                raise SlideError(self.path, f"mpp={mpp!r} must be a positive number of microns per pixel")
            self.mpp = float(mpp)
        elif self.reader.mpp is not None:
            self.mpp = float(self.reader.mpp)
        else:
            raise MissingMPPError(
                self.path,
                f"slide {self.name} records no microns per pixel (no OpenSlide/Aperio MPP, OME PhysicalSizeX or "
                "TIFF resolution tags); give it as WSI(..., mpp=0.25) (your scanner's um/px)",
            )
        self.tile_px = int(tile_px)
        self.stride_div = stride_div
        self.enable_downsample = enable_downsample
        self.use_edge_tiles = use_edge_tiles
        if isinstance(tile_um, str):
            finest = 10 / self.mpp
            asked = 10 / grid.magnification_mpp(tile_um)
            # A level serves a magnification within 2 % of its own; anything finer than level 0 would be upsampled,
            # inventing detail the scan does not have.
            if asked > finest * (1 + grid.LEVEL_MATCH):
                raise MagnificationError(
                    self.path,
                    f"slide {self.name} is scanned at {finest:g}x ({self.mpp:g} um/px at its finest level); "
                    f"tile_um={tile_um!r} would upsample it. Use a magnification of {finest:g}x or lower, or tile_um "
                    "in microns",
                )
        self.size = grid.tile_size(
            tile_px, tile_um, self.mpp, self.reader.level_downsamples, stride_div, enable_downsample
        )
        self.tile_um = self.size.tile_um if isinstance(self.size.tile_um, int) else self.size.tile_um_actual
        self.full_extract_px = self.size.full_extract_px
        self.full_stride = self.size.stride_px
        self.downsample_level = self.size.level
        self.downsample_factor = self.size.level_downsample
        self.extract_px = self.size.extract_px
        if origin == "random":
            origin = (random.randint(0, self.full_stride - 1), random.randint(0, self.full_stride - 1))
        self.origin = tuple(int(v) for v in origin)
        self._corners = grid.grid_corners(
            self.dimensions, self.full_extract_px, self.full_stride, self.origin, use_edge_tiles
        )
        if not len(self._corners) and not disable_grid:
            w, h = self.dimensions
            raise SlideTooSmallError(
                self.path,
                f"slide {self.name} ({w} x {h} px) is smaller than one tile ({self.full_extract_px} level-0 px for "
                f"{self.tile_px}px at {tile_um!r}, {self.mpp} um/px); use a smaller tile_um or use_edge_tiles=True",
            )
        self._keep = {"roi": np.ones(len(self._corners), bool), "qc": np.ones(len(self._corners), bool)}
        self.rois = []
        self.roi_method = roi_method
        self.roi_filter_method = roi_filter_method
        self._load_rois(rois, roi_dir)

    # -- geometry ---------------------------------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.reader.dimensions

    @property
    def level_dimensions(self):
        return self.reader.level_dimensions

    @property
    def level_downsamples(self):
        return self.reader.level_downsamples

    @property
    def properties(self) -> dict:
        return self.reader.properties

    @property
    def vendor(self) -> str:
        return self.reader.vendor

    @property
    def tile_label(self) -> str:
        """The tile-size folder name, ``299px_302um`` or ``299px_10x``."""
        return self.size.label

    @property
    def coord(self) -> np.ndarray:
        """Slideflow's ``WSI.coord``: ``[x, y, grid_x, grid_y]`` of every grid tile, top-left level-0 corners."""
        c = self._corners
        if not len(c):
            return np.zeros((0, 4), np.int64)
        gx = (c[:, 0] - self.origin[0]) // self.full_stride
        gy = (c[:, 1] - self.origin[1]) // self.full_stride
        return np.column_stack([c, gx, gy])

    @property
    def estimated_num_tiles(self) -> int:
        return int(self._kept().sum())

    def _kept(self) -> np.ndarray:
        return self._keep["roi"] & self._keep["qc"]

    def kept_corners(self) -> np.ndarray:
        """Top-left level-0 corners ``(N, 2)`` of the tiles that survive ROI and QC filtering, in grid order."""
        return self._corners[self._kept()]

    def removed_counts(self) -> dict:
        """Tiles removed by the ROI and the QC filters (each tile counted by the first filter that removed it)."""
        roi = int((~self._keep["roi"]).sum())
        return {"roi": roi, "qc": int((self._keep["roi"] & ~self._keep["qc"]).sum())}

    def removed_corners(self) -> dict:
        """Top-left level-0 corners ``(N, 2)`` of the tiles :meth:`removed_counts` counts, by reason, in grid order.

        Example:
            >>> {reason: len(c) for reason, c in wsi.removed_corners().items()}  # doctest: +SKIP
            {'roi': 120, 'qc': 14}
        """
        return {"roi": self._corners[~self._keep["roi"]], "qc": self._corners[self._keep["roi"] & ~self._keep["qc"]]}

    def centres(self, corners: np.ndarray | None = None) -> np.ndarray:
        """``loc_x``/``loc_y`` (tile centres, level-0) of ``corners`` (default: the kept tiles)."""
        return grid.tile_centres(self.kept_corners() if corners is None else corners, self.full_extract_px)

    def tile_boxes(self, corners: np.ndarray | None = None) -> np.ndarray:
        """``[x0, y0, x1, y1]`` level-0 boxes of ``corners`` (default: every grid tile)."""
        c = self._corners if corners is None else np.asarray(corners)
        return np.column_stack([c, c + self.full_extract_px]).astype(np.int64)

    # -- ROIs and QC ------------------------------------------------------------------------------------------------
    def _load_rois(self, rois, roi_dir) -> None:
        if self.roi_method == "ignore" or (rois is None and roi_dir is None):
            if self.roi_method in ("inside", "outside"):
                self._missing_roi()
            return
        found = []
        if roi_dir is not None:
            path = roi_module.find_roi_file(self.name, roi_dir)
            if path is not None:
                found.append(path)
        if not found and rois is not None:
            paths = [rois] if isinstance(rois, (str, os.PathLike)) else list(rois)
            found = [p for p in paths if slide_name(p) == self.name][:1]
        for path in found:
            self.rois.extend(roi_module.load_rois(path))
        if not self.rois:
            if self.roi_method in ("inside", "outside"):
                self._missing_roi()
            log.info("%s: no ROI found, using the whole slide", self.name)
            return
        self._keep["roi"] = np.asarray(
            roi_module.roi_keep_mask(self.tile_boxes(), self.rois, self.roi_method, self.roi_filter_method), bool
        )

    def _missing_roi(self):
        raise MissingROIError(
            f"roi_method={self.roi_method!r} needs an ROI for slide {self.name}, and none was found; "
            "give rois=[...] or roi_dir=..., or use roi_method='auto'",
            path=self.path,
        )

    def thumb(self, mpp: float | None = None, width: int | None = None):
        """A PIL thumbnail of the whole slide at ``mpp`` microns per pixel or ``width`` pixels (default 512 wide).

        Example:
            >>> wsi.thumb(width=1024).size  # doctest: +SKIP
            (1024, 768)
        """
        return Image.fromarray(self._thumbnail_array(mpp, width)[0])

    thumbnail = thumb

    def _thumbnail_array(self, mpp: float | None = None, width: int | None = None, level: int | None = None):
        w0, h0 = self.dimensions
        if level is not None:
            lw, lh = self.level_dimensions[level]
            return self.reader.read(level, 0, 0, lw, lh), self.level_downsamples[level]
        if mpp is not None:
            ds = float(mpp) / self.mpp
        else:
            ds = w0 / float(width or 512)
        level = grid.best_level(self.level_downsamples, ds)
        lw, lh = self.level_dimensions[level]
        image = self.reader.read_vips(level, 0, 0, lw, lh)
        scale = self.level_downsamples[level] / ds
        if abs(scale - 1) > 1e-6:
            image = image.resize(scale, kernel="lanczos3")
        return self.reader.to_array(image, "the thumbnail"), w0 / image.width

    def qc(self, method: str | None = "otsu", filter_threshold: float | None = None, **kwargs):
        """Quality control: drop tiles that Otsu's tissue mask and/or the blur mask flag (Slideflow's ``WSI.qc``).

        ``method``: Slideflow's ``'otsu'``, ``'blur'``, ``'both'``; slidetiles' ``'od'`` (optical density against
        the slide's own glass: keeps the pale, unstained tissue saturation-Otsu drops, but also keeps ink) and
        ``'od+blur'`` (that and the blur mask: ink and out-of-focus areas go too); or None (removes an earlier QC).
        Returns the QC mask (see :mod:`slidetiles.slides.qc`).

        Example:
            >>> wsi.qc("both"); wsi.estimated_num_tiles  # doctest: +SKIP
            380
        """
        if method is None:
            self._keep["qc"] = np.ones(len(self._corners), bool)
            return None
        rgb, mask_ds = self._thumbnail_array(level=qc_module.otsu_level(self.level_dimensions))
        blur_rgb = None
        if method in qc_module.BLUR_METHODS:
            blur_rgb, _ = self._thumbnail_array(mpp=qc_module.blur_mpp(self.tile_px, self.size.tile_um_actual))
        mask = qc_module.qc_mask(rgb, method, blur_rgb=blur_rgb, **kwargs)
        threshold = qc_module.FILTER_THRESHOLD if filter_threshold is None else filter_threshold
        self._keep["qc"] = np.asarray(
            qc_module.tile_keep_from_mask(mask, self.dimensions[0] / rgb.shape[1], self.tile_boxes(), threshold), bool
        )
        return mask

    def remove_qc(self) -> None:
        """Forget an earlier :meth:`qc`."""
        self._keep["qc"] = np.ones(len(self._corners), bool)

    # -- extraction -------------------------------------------------------------------------------------------------
    def extract_tiles(self, tfrecord_dir=None, tiles_dir=None, img_format: str = "jpg", report: bool = True, **kwargs):
        """Write the kept tiles to ``tfrecord_dir/<slide>.tfrecords`` (+ index) and/or ``tiles_dir/<slide>/``.

        Keyword arguments as :func:`slidetiles.slides.extract.extract_tiles` (Slideflow's: ``whitespace_fraction``,
        ``whitespace_threshold``, ``grayspace_fraction``, ``grayspace_threshold``, ``max_tiles``, ``dry_run``;
        ours: ``quality``). A ``qc=`` argument runs :meth:`qc` first. Returns an
        :class:`~slidetiles.slides.extract.ExtractionReport` (None with ``report=False``).

        Example:
            >>> wsi.extract_tiles(tfrecord_dir="out/299px_302um", qc="otsu").tfrecord  # doctest: +SKIP
            'out/299px_302um/s1.tfrecords'
        """
        qc = kwargs.pop("qc", None)
        if qc is not None:
            self.qc(qc)
        return extract_tiles(self, tfrecord_dir, tiles_dir, img_format, report, **kwargs)

    def __repr__(self) -> str:
        return (
            f"WSI({self.path!r}, tile_px={self.tile_px}, tile_um={self.size.tile_um!r}, mpp={self.mpp}, "
            f"tiles={self.estimated_num_tiles})"
        )
