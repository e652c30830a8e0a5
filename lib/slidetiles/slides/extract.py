"""Cut a slide's tiles and write them as a Slideflow TFRecord with its index (and optionally loose image files).

Each tile is read from the pyramid level :mod:`slidetiles.slides.grid` chose (the coarsest one at least as fine
as the tile needs), resized to ``tile_px`` by libvips with its Lanczos-3 kernel (antialiased when shrinking),
judged for background on the coarser patch Slideflow judges it on
(:func:`slidetiles.slides.background.filter_downsample`), and encoded by OpenCV as Slideflow encodes it (JPEG
quality 95 by default, PNG). Records are Slideflow's (``image_raw``, ``slide``, ``loc_x``, ``loc_y`` = tile centre
in level-0 pixels), written in grid order (rows of y, then x) so the same slide and parameters give the same
bytes.

Work is done in runs of neighbouring tiles: background patches are cut from one band of the filter level per run
of tiles on a grid row, kept tiles from one region of their level per run (each source JPEG tile decoded once per
run; on JPEG-compressed TIFF levels once per slide, :mod:`slidetiles.slides.tiffjpeg`), so the cost follows the
kept tiles and what is held at once is bounded by the run and band sizes (:data:`RUN_TILES`, :data:`BAND_SPAN`) and
the decoded-tile cache, not by the slide's size.

The TFRecord is written to a hidden temporary file renamed into place when complete
(:class:`slidetiles.io.writer.TFRecordWriter`); when no tile is left, nothing appears at the final path and an
:class:`EmptySlideWarning` names the slide.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import pyvips

from slidetiles.io.tfrecord2idx import save_index
from slidetiles.io.writer import TFRecordWriter, atomic_write
from slidetiles.slides import background

log = logging.getLogger(__name__)

#: Slideflow's JPEG quality (OpenCV's default, which Slideflow's ``numpy2jpg`` relies on).
DEFAULT_QUALITY = 95
IMG_FORMATS = ("jpg", "jpeg", "png")
#: Widest band (filter-level pixels) read at once to judge background: bounds memory whatever the slide size.
BAND_SPAN = 4096
#: Most tiles read as one region (a run of neighbours on a grid row): 6 MB of 512-px regions at most.
RUN_TILES = 8
#: Slideflow extraction options about how it schedules work: accepted and not needed here (we keep grid order).
SCHEDULING_OPTIONS = frozenset(
    {"shuffle", "num_processes", "show_progress", "pool", "lazy_iter", "deterministic", "pb", "buffer", "q_size"}
)
#: Slideflow extraction options slidetiles does not implement: refused when set, never silently skipped.
UNSUPPORTED_OPTIONS = frozenset(
    {"normalizer", "normalizer_source", "context_normalize", "full_core", "yolo", "draw_roi", "shard",
     "from_centroids", "apply_masks"}
)


class EmptySlideWarning(UserWarning):
    """No tile of a slide was left after filtering: no TFRecord was written for it."""


@dataclass
class ExtractionReport:
    """What :func:`extract_tiles` did for one slide.

    Attributes:
        slide: slide name; path: the slide file.
        tfrecord: the TFRecord written (None when none was, e.g. no tile left or ``tfrecord_dir=None``).
        num_tiles: tiles kept; locations: their ``(loc_x, loc_y)`` centres, ``(N, 2)`` int64.
        ws_fraction, gs_fraction: whitespace/grayspace fraction of each kept tile (None when not computed).
        removed: tiles removed, by reason (``roi``, ``qc``, ``whitespace``, ``grayspace``, ``max_tiles``).
        removed_locations: the removed tiles' ``(loc_x, loc_y)`` centres, ``(N, 2)`` int64, by the same reasons
        (what :func:`slidetiles.slides.preview.draw_extraction` draws).
    """

    slide: str
    path: str
    tile_px: int
    tile_um: int | str
    tfrecord: str | None
    num_tiles: int
    locations: np.ndarray
    ws_fraction: np.ndarray | None = None
    gs_fraction: np.ndarray | None = None
    removed: dict = field(default_factory=dict)
    removed_locations: dict = field(default_factory=dict)


def encode_tile(rgb: np.ndarray, img_format: str = "jpg", quality: int = DEFAULT_QUALITY) -> bytes:
    """JPEG (``quality``) or PNG bytes of an RGB tile, encoded by OpenCV as Slideflow encodes its tiles.

    Example:
        >>> encode_tile(np.zeros((8, 8, 3), np.uint8))[:2]
        b'\\xff\\xd8'
    """
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    if img_format in ("jpg", "jpeg"):
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif img_format == "png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        raise ValueError(f"img_format={img_format!r}: use 'jpg' or 'png'")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} tile as {img_format}")
    return buf.tobytes()


def resize_tile(image, size):
    """``image`` (``extract_px`` square) resized to ``tile_px`` by libvips' Lanczos-3 kernel, as Slideflow."""
    if size.extract_px != size.tile_px:
        image = image.resize(size.tile_px / size.extract_px, kernel="lanczos3")
        if image.width != size.tile_px or image.height != size.tile_px:
            # libvips rounds the output size; one pixel more or less is cropped or repeated from the edge.
            image = image.gravity("north-west", size.tile_px, size.tile_px, extend="copy")
    return image


def read_tile(wsi, x: int, y: int) -> np.ndarray:
    """RGB ``(tile_px, tile_px, 3)`` pixels of the tile whose top-left level-0 corner is ``(x, y)``.

    The region is read at the tile's pyramid level (``extract_px`` level pixels from ``x // downsample``, as Slideflow)
    and resized to ``tile_px`` with libvips' Lanczos-3 kernel.

    Example:
        >>> read_tile(wsi, 0, 0).shape  # doctest: +SKIP
        (299, 299, 3)
    """
    size = wsi.size
    ds = size.level_downsample
    n = size.extract_px
    image = resize_tile(wsi.reader.read_vips(size.level, int(x // ds), int(y // ds), n, n), size)
    return wsi.reader.to_array(image, f"the tile at level-0 ({x}, {y})")


def read_tiles(wsi, corners: np.ndarray, run_tiles: int = 0) -> np.ndarray:
    """RGB ``(N, tile_px, tile_px, 3)`` pixels of the tiles at ``corners``, each as :func:`read_tile` reads it.

    Tiles that touch, overlap or nearly touch (a quarter tile apart at most) their left neighbour on a grid row
    (up to ``run_tiles``, default :data:`RUN_TILES`) are read as one region of their level: each source JPEG tile
    under the run is decoded once, not once per tile that covers it (on JPEG-compressed TIFF levels, once at all
    while it stays in :mod:`slidetiles.slides.tiffjpeg`'s cache, so the next row's tiles reuse it too). Each tile is
    then cut from that region and resized on its own, by its own libvips evaluation (a pixel's value does not
    depend on the region it is read in, so the bytes are :func:`read_tile`'s).

    Example:
        >>> read_tiles(wsi, wsi.kept_corners()[:4]).shape  # doctest: +SKIP
        (4, 299, 299, 3)
    """
    size = wsi.size
    n, px = size.extract_px, size.tile_px
    corners = np.asarray(corners, np.int64).reshape(-1, 2)
    out = np.empty((len(corners), px, px, 3), np.uint8)
    offsets = (corners[:, 0] // size.level_downsample).astype(np.int64)
    for start, stop, x0, y0, width in _runs(corners, size.level_downsample, n, n * (run_tiles or RUN_TILES), n // 4):
        try:
            # ``source`` stays referenced until the run's pixels are out: when it wraps a numpy region (JPEG levels,
            # slidetiles.slides.tiffjpeg), copy_memory() returns the same pixels without keeping them alive.
            source = wsi.reader.read_vips(size.level, x0, y0, width, n)
            region = source.copy_memory()
        except pyvips.Error as exc:
            where = f"level {size.level}, ({x0}, {y0}) {width}x{n}"
            raise wsi.reader.format_error(f"cannot read the tiles' region at {where}", exc) from None
        # One libvips evaluation per tile: an arrayjoin of the run's resized tiles, evaluated at once, took 1.5-2.5x
        # as long (its output strips span every tile, and each resize recomputes the rows its strips overlap).
        for i, x in enumerate(offsets[start:stop].tolist(), start):
            tile = resize_tile(region.crop(x - x0, 0, n, n), size)
            out[i] = wsi.reader.to_array(tile, f"the tile at level-0 {tuple(corners[i].tolist())}")
        del source, region
    return out


def default_threads() -> int:
    """Threads per slide by default: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def map_ordered(function, items, threads: int, window: int = 64):
    """``map(function, items)`` on ``threads`` threads, results in input order, at most ``window`` per thread
    in flight (libvips, OpenCV and the JPEG codecs release the GIL; the order keeps the output deterministic)."""
    items = list(items)
    if threads <= 1 or len(items) < 2:
        yield from map(function, items)
        return
    step = threads * window
    with ThreadPoolExecutor(threads, thread_name_prefix="slidetiles-extract") as pool:
        for start in range(0, len(items), step):
            yield from pool.map(function, items[start : start + step])


def _runs(corners: np.ndarray, ds: float, n: int, max_span: int, max_gap: int | None = None):
    """Runs of tiles read as one band: same row of level pixels, at most ``max_span`` level pixels wide, and (when
    ``max_gap`` is given) no more than ``max_gap`` pixels between a tile and the one before it.

    Yields ``(start, stop, x0, y0, width)``: corners[start:stop] lie in the band of ``n`` rows from level pixel
    ``y0``, ``width`` pixels from ``x0``.
    """
    px = (corners[:, 0] // ds).astype(np.int64).tolist()
    py = (corners[:, 1] // ds).astype(np.int64).tolist()
    start = 0
    for i in range(1, len(px) + 1):
        if (
            i == len(px)
            or py[i] != py[start]
            or px[i] + n - px[start] > max_span
            or (max_gap is not None and px[i] - (px[i - 1] + n) > max_gap)
        ):
            yield start, i, px[start], py[start], px[i - 1] + n - px[start]
            start = i


def slide_background_fractions(
    wsi, corners: np.ndarray, ws_threshold: float, gs_threshold: float, threads: int = 1, band_span: int = 0
):
    """Whitespace and grayspace fraction of each tile, judged where Slideflow judges them.

    Each tile's patch is the ``n x n`` level pixels from ``(x // ds, y // ds)`` of the filter level, as Slideflow
    reads it. Rather than one read per tile, a run of tiles on one grid row is read as one band of that level
    (a pixel's value does not depend on the region it is read in; past the edge it is white either way), and the
    band's patches are judged together. Bands are at most ``band_span`` (default :data:`BAND_SPAN`) pixels wide,
    so memory does not grow with the slide.
    """
    reader, size = wsi.reader, wsi.size
    level, ratio = background.filter_downsample(reader.level_downsamples, size.extract_px, size.level)
    n = max(1, size.extract_px // ratio)
    ds = reader.level_downsamples[level]
    corners = np.asarray(corners, np.int64).reshape(-1, 2)
    white = np.empty(len(corners), np.float64)
    gray = np.empty(len(corners), np.float64)
    if not len(corners):
        return white, gray
    offsets = (corners[:, 0] // ds).astype(np.int64)

    def judge(chunk):
        start, stop, x0, y0, width = chunk
        band = reader.read(level, x0, y0, width, n)
        patches = np.stack([band[:, x - x0 : x - x0 + n] for x in offsets[start:stop].tolist()])
        white[start:stop], gray[start:stop] = background.background_fractions(patches, ws_threshold, gs_threshold)

    for _ in map_ordered(judge, _runs(corners, ds, n, max(band_span or BAND_SPAN, n)), threads, window=4):
        pass
    return white, gray


def extract_tiles(
    wsi,
    tfrecord_dir: str | os.PathLike | None = None,
    tiles_dir: str | os.PathLike | None = None,
    img_format: str = "jpg",
    report: bool = True,
    *,
    quality: int = DEFAULT_QUALITY,
    whitespace_fraction: float | None = None,
    whitespace_threshold: float | None = None,
    grayspace_fraction: float | None = None,
    grayspace_threshold: float | None = None,
    max_tiles: int | None = None,
    dry_run: bool = False,
    num_threads: int | None = None,
    **ignored,
) -> ExtractionReport | None:
    """Extract ``wsi``'s tiles to ``tfrecord_dir/<slide>.tfrecords`` (+ ``.index.npz``) and/or loose images.

    Loose images go to ``tiles_dir/<slide>/<slide>-<loc_x>-<loc_y>.<img_format>``. Background defaults are
    Slideflow's (whitespace off: fraction 1.0, threshold 230; grayspace fraction 0.6, threshold 0.05).
    ``max_tiles`` keeps the first tiles in grid order. ``num_threads`` (default :func:`default_threads`) reads
    and encodes tiles in parallel; the output is the same for any number.

    Example:
        >>> wsi = slidetiles.WSI("slides/s1.svs", 299, 302)  # doctest: +SKIP
        >>> extract_tiles(wsi, "tfrecords/299px_302um").num_tiles  # doctest: +SKIP
        412
    """
    if img_format not in IMG_FORMATS:
        raise ValueError(f"img_format={img_format!r}: use 'jpg' or 'png'")
    _check_options(ignored)
    ws_f = background.DEFAULT_WHITESPACE_FRACTION if whitespace_fraction is None else whitespace_fraction
    ws_t = background.DEFAULT_WHITESPACE_THRESHOLD if whitespace_threshold is None else whitespace_threshold
    gs_f = background.DEFAULT_GRAYSPACE_FRACTION if grayspace_fraction is None else grayspace_fraction
    gs_t = background.DEFAULT_GRAYSPACE_THRESHOLD if grayspace_threshold is None else grayspace_threshold

    threads = default_threads() if num_threads is None else max(1, int(num_threads))
    with _no_vips_cache():
        return _extract(wsi, tfrecord_dir, tiles_dir, img_format, report, quality, ws_f, ws_t, gs_f, gs_t, max_tiles,
                        dry_run, threads)


@contextlib.contextmanager
def _no_vips_cache():
    """libvips' operation cache off while extracting: every crop is new, so it never hits, and what it holds
    (up to 100 MB of pixels by default) would make the peak memory grow with the number of tiles."""
    previous = pyvips.cache_get_max()
    pyvips.cache_set_max(0)
    try:
        yield
    finally:
        pyvips.cache_set_max(previous)


def _extract(wsi, tfrecord_dir, tiles_dir, img_format, report, quality, ws_f, ws_t, gs_f, gs_t, max_tiles, dry_run,
             threads):
    corners = wsi.kept_corners()
    removed = dict(wsi.removed_counts())
    # Corners of the removed tiles by reason (each tile under the first filter that removed it, as ``removed``).
    removed_corners = dict(wsi.removed_corners())
    white = gray = None
    if ws_f < 1 or gs_f < 1:
        white, gray = slide_background_fractions(wsi, corners, ws_t, gs_t, threads)
        reasons = background.background_reasons(white, gray, ws_f, gs_f)
        for reason in (background.WHITESPACE, background.GRAYSPACE):
            removed[reason] = int(np.sum(reasons == reason))
            removed_corners[reason] = corners[reasons == reason]
        keep = reasons == ""
        corners, white, gray = corners[keep], white[keep], gray[keep]
    if max_tiles is not None and len(corners) > max_tiles:
        removed["max_tiles"] = len(corners) - int(max_tiles)
        removed_corners["max_tiles"] = corners[int(max_tiles) :]
        corners = corners[: int(max_tiles)]
        white = None if white is None else white[: int(max_tiles)]
        gray = None if gray is None else gray[: int(max_tiles)]
    centres = wsi.centres(corners)

    tfrecord = None
    if not dry_run and len(corners) and (tfrecord_dir is not None or tiles_dir is not None):
        tfrecord = _write(wsi, corners, centres, tfrecord_dir, tiles_dir, img_format, quality, threads)
    if not len(corners):
        message = (
            f"{wsi.path}: no tile left after filtering (removed: {removed or 'none'}); no TFRecord written for "
            f"slide {wsi.name}. Loosen the ROI/QC/background options if the slide has tissue."
        )
        log.warning(message)
        warnings.warn(message, EmptySlideWarning, stacklevel=4)
    if not report:
        return None
    return ExtractionReport(
        slide=wsi.name,
        path=wsi.path,
        tile_px=wsi.tile_px,
        tile_um=wsi.tile_um,
        tfrecord=tfrecord,
        num_tiles=len(corners),
        locations=centres,
        ws_fraction=white if ws_f < 1 else None,
        gs_fraction=gray if gs_f < 1 else None,
        removed=removed,
        removed_locations={reason: wsi.centres(c) for reason, c in removed_corners.items()},
    )


def _check_options(options: dict) -> None:
    unknown = sorted(set(options) - SCHEDULING_OPTIONS - UNSUPPORTED_OPTIONS)
    if unknown:
        raise TypeError(f"extract_tiles() got unexpected keyword argument(s) {unknown}")
    unsupported = sorted(k for k in UNSUPPORTED_OPTIONS & set(options) if options[k] not in (None, False))
    if unsupported:
        raise ValueError(
            f"extract_tiles(): {unsupported} not supported by slidetiles (stain normalisation, cell/core modes, "
            "shards); leave them unset"
        )


def _write(wsi, corners, centres, tfrecord_dir, tiles_dir, img_format, quality, threads) -> str | None:
    writer = None
    target = None
    tile_folder = None
    if tfrecord_dir is not None:
        os.makedirs(tfrecord_dir, exist_ok=True)
        target = os.path.join(os.fspath(tfrecord_dir), f"{wsi.name}.tfrecords")
        writer = TFRecordWriter(target)
    if tiles_dir is not None:
        tile_folder = os.path.join(os.fspath(tiles_dir), wsi.name)
        os.makedirs(tile_folder, exist_ok=True)
    try:
        def chunk_bytes(chunk):
            return [encode_tile(tile, img_format, quality) for tile in read_tiles(wsi, chunk)]

        # Work items of a few runs' tiles; several per thread so that threads finish together.
        step = RUN_TILES if threads <= 1 else max(1, min(RUN_TILES, -(-len(corners) // (4 * threads))))
        chunks = [corners[i : i + step] for i in range(0, len(corners), step)]
        encoded = (data for datas in map_ordered(chunk_bytes, chunks, threads, window=2) for data in datas)
        for data, (cx, cy) in zip(encoded, centres.tolist()):
            if writer is not None:
                writer.write_tile(data, wsi.name, cx, cy)
            if tile_folder is not None:
                with atomic_write(os.path.join(tile_folder, f"{wsi.name}-{cx}-{cy}.{img_format}")) as f:
                    f.write(data)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        return None
    writer.close()
    arr_0, locations = writer.index_arrays()
    save_index(target, arr_0, locations)
    return target
