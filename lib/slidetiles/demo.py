"""Deterministic, realistic demo data: whole-slide images for the pipeline's embedded demo, tiles for benchmarks.

:func:`write_demo_slides` writes the demo cohort the pipeline starts from: small synthetic whole-slide images
(:func:`slidetiles.slides.write_synthetic_slide`: tissue islands on glass, pen marks, out-of-focus patches, in
the three formats slidetiles reads) and an annotations CSV. :func:`write_demo_tiles` writes folders of loose
tiles instead, for the tile-folder path and the benchmarks; the tiles are described below.

The tiles are cut from a real photograph of immunohistochemically stained tissue that scikit-image ships in its
wheel (``skimage/data/ihc.png``, 512 x 512 RGB), so they compress and decode like real whole-slide-image tiles,
which synthetic noise or gradients do not. Nothing is downloaded and nothing is shipped with slidetiles.

Each tile is a random square crop (side 0.6-1.6 x the tile size, clamped to the source), resized to ``px`` x
``px``, turned by one of the 8 flips/90-degree rotations, given a mild per-channel gain and brightness shift, and
encoded with Pillow at JPEG quality 85. The photo is grainy enough that no added noise is needed: at 299 px this
gives about 25 KB per tile (``iter_tiles(0, 20000)``: mean 25.5 KB, median 26.7 KB, 5th-95th percentile
19.5-29.4 KB, extremes 18.2-30.7 KB), in the range of real 299-px tissue tiles.

Same arguments, same bytes: every random choice comes from the ``numpy.random.Generator`` passed in, and
Pillow's resize and JPEG encoder are single-threaded and deterministic for a given Pillow/libjpeg build. (Numpy
does not promise the same random stream across major versions, and another libjpeg may encode differently.)
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DEFAULT_QUALITY = 85
#: Level-0 microns per pixel assumed for the demo slides (a 20x scan), used to place tiles on the slide.
DEMO_MPP = 0.5
# A tile's random crop + resize costs ~2 ms, the flip/colour/encode ~0.65 ms; iter_tiles keeps this many resized
# crops (capped at ~64 MB) and re-finishes them, so 20,000 tiles take ~12 s instead of ~45 s.
_POOL_SIZE = 256
_POOL_BYTES = 64 << 20
_LABELS = ("tumor", "normal")


@functools.cache
def _source():
    """The IHC photograph as a loaded RGB Pillow image (read once per process)."""
    from PIL import Image  # imported on use, as below: the workflow imports this module while parsing

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "slidetiles.demo cuts its tiles from the IHC image shipped with scikit-image; "
            "install it with: pip install scikit-image"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "ihc.png"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scikit-image is installed but lacks its bundled data/ihc.png")
    with Image.open(path) as im:
        im = im.convert("RGB")
    im.load()
    return im


def _crop(rng: np.random.Generator, px: int):
    from PIL import Image

    src = _source()
    width, height = src.size
    side = min(int(round(px * rng.uniform(0.6, 1.6))), width, height)
    x = int(rng.integers(0, width - side + 1))
    y = int(rng.integers(0, height - side + 1))
    # Resizing straight from the box avoids materialising the crop.
    return src.resize((px, px), Image.Resampling.BICUBIC, box=(x, y, x + side, y + side))


_RAMP = np.arange(256, dtype=np.float64)


def _finish(rng: np.random.Generator, im, quality: int) -> bytes:
    # 0 = as is, 1..7 = Pillow's Transpose members (flips, rotations, transpose, transverse): all 8 symmetries.
    turn = int(rng.integers(8))
    if turn:
        im = im.transpose(turn - 1)
    # Stain intensity varies between slides and scanners; a per-channel gain plus a brightness offset mimics it.
    # Applied as a lookup table, which is ~10x cheaper than float arithmetic on the pixels.
    gain = rng.normal(1.0, 0.04, 3)
    offset = rng.normal(0.0, 6.0)
    lut = np.clip(np.rint(_RAMP[None, :] * gain[:, None] + offset), 0, 255).astype(np.uint8)
    im = im.point(lut.ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def tile_jpeg(rng: np.random.Generator, px: int = 299, quality: int | None = None) -> bytes:
    """One random ``px`` x ``px`` RGB JPEG tile cut from the IHC photograph.

    Args:
        rng: the only source of randomness: the same generator state gives the same bytes.
        px: tile side in pixels.
        quality: JPEG quality (default 85, ~26 KB at 299 px).
    """
    if px < 1:
        raise ValueError(f"px must be positive, got {px}")
    return _finish(rng, _crop(rng, px), DEFAULT_QUALITY if quality is None else quality)


def iter_tiles(seed: int, n: int, px: int = 299, quality: int | None = None) -> Iterator[bytes]:
    """Yield ``n`` demo JPEG tiles, deterministically from ``seed``.

    The first tiles are exactly those of repeated :func:`tile_jpeg` calls; once a pool of resized crops is full,
    later tiles re-use a random crop from it with a fresh flip/rotation and colour shift, so they are still
    distinct bytes, at ~1,600 tiles/s instead of ~460 (299 px, one core).
    """
    quality = DEFAULT_QUALITY if quality is None else quality
    rng = np.random.default_rng(seed)
    pool_size = max(16, min(_POOL_SIZE, _POOL_BYTES // (3 * px * px)))
    pool = []
    for _ in range(n):
        if len(pool) < pool_size:
            pool.append(_crop(rng, px))
            base = pool[-1]
        else:
            base = pool[int(rng.integers(pool_size))]
        yield _finish(rng, base, quality)


def _write_atomic(path: Path, data: bytes) -> None:
    # A reader (or a pipeline rerun after a crash) never sees a half-written file. Imported here: slidetiles.io
    # pulls in protobuf, which planning the workflow (discovery imports this module) does not need.
    from slidetiles.io.writer import atomic_write

    with atomic_write(path) as f:
        f.write(data)


def _annotations(rng: np.random.Generator, n_slides: int, n_sites: int):
    import pandas as pd  # heavy (~0.5 s); only the annotations job needs it

    # Slides of one patient share its site and label, as in real cohorts; about a third of the patients
    # have two slides so that patient-level splitting matters.
    slides_per_patient = []
    remaining = n_slides
    while remaining:
        k = 2 if remaining >= 2 and rng.random() < 0.5 else 1
        slides_per_patient.append(k)
        remaining -= k
    n_patients = len(slides_per_patient)
    # Round-robin sites, then alternate labels within each site, so every site has both labels when it can.
    sites = [i % n_sites for i in range(n_patients)]
    rng.shuffle(sites)
    labels = [0] * n_patients
    for site in range(n_sites):
        members = [p for p in range(n_patients) if sites[p] == site]
        start = int(rng.integers(2))
        for j, p in enumerate(members):
            labels[p] = (start + j) % 2
    rows = []
    for p, k in enumerate(slides_per_patient):
        for _ in range(k):
            rows.append(
                {
                    "patient": f"patient_{p + 1:03d}",
                    "slide": f"slide_{len(rows) + 1:03d}",
                    "site": f"site_{chr(ord('A') + sites[p])}",
                    "label": _LABELS[labels[p]],
                }
            )
    return pd.DataFrame(rows, columns=["patient", "slide", "site", "label"])


def _tile_centres(rng: np.random.Generator, n: int, stride: int) -> list[tuple[int, int]]:
    """``n`` distinct grid positions forming one compact, irregular patch, like a piece of tissue."""
    side = int(np.ceil(np.sqrt(n))) * 2
    gy, gx = np.mgrid[0:side, 0:side]
    cy, cx = rng.uniform(side * 0.3, side * 0.7, 2)
    # Jittered distance from a random centre gives a blob with a ragged edge rather than a perfect disc.
    dist = np.hypot(gy - cy, gx - cx) + rng.uniform(0, 1.5, gy.shape)
    cells = np.argsort(dist, axis=None, kind="stable")[:n]
    cells.sort()
    offset = rng.integers(0, 40, 2)
    return [
        (int((gx.flat[c] + offset[0] + 0.5) * stride), int((gy.flat[c] + offset[1] + 0.5) * stride))
        for c in cells
    ]


def write_demo_tiles(
    out_dir: str | os.PathLike,
    *,
    n_slides: int = 30,
    n_sites: int = 3,
    tiles_per_slide: tuple[int, int] = (20, 40),
    seed: int = 0,
    px: int = 299,
    tile_um: float = 302,
    mpp: float = DEMO_MPP,
):
    """Write a small demo cohort of tile folders and its annotations; same arguments, byte-identical files.

    Layout::

        <out_dir>/annotations.csv                 columns patient, slide, site, label
        <out_dir>/tiles/<slide>/<slide>-<x>-<y>.jpg

    ``x``, ``y`` are tile centres in level-0 pixels, on a grid whose step is one tile
    (``round(tile_um / mpp)`` level-0 pixels, 604 by default), distinct within a slide. Slide names are
    ``slide_001``..., patients ``patient_001``..., sites ``site_A``..., labels ``tumor``/``normal``; every slide
    gets a number of tiles drawn from ``tiles_per_slide`` (inclusive). Files are written atomically; existing
    files of the same names are replaced, others in ``out_dir`` are left alone.

    Returns:
        The annotations as a pandas DataFrame (the rows of annotations.csv).
    """
    if n_slides < 1 or n_sites < 1:
        raise ValueError("n_slides and n_sites must be at least 1")
    lo, hi = tiles_per_slide
    if not 1 <= lo <= hi:
        raise ValueError(f"tiles_per_slide must be (low, high) with 1 <= low <= high, got {tiles_per_slide}")
    stride = int(round(tile_um / mpp))
    if stride < 1:
        raise ValueError(f"tile_um / mpp must be at least one pixel, got {tile_um} / {mpp}")

    rng = np.random.default_rng(seed)
    table = _annotations(rng, n_slides, n_sites)
    counts = [int(c) for c in rng.integers(lo, hi + 1, n_slides)]
    centres = [_tile_centres(rng, c, stride) for c in counts]

    out = Path(out_dir)
    # Tile pixels come from their own stream, so the layout does not shift if the tile recipe changes.
    tiles = iter_tiles(int(rng.integers(2**63)), sum(counts), px)
    for slide, slide_centres in zip(table["slide"], centres):
        folder = out / "tiles" / slide
        folder.mkdir(parents=True, exist_ok=True)
        for x, y in slide_centres:
            _write_atomic(folder / f"{slide}-{x}-{y}.jpg", next(tiles))
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "annotations.csv", table.to_csv(index=False, lineterminator="\n").encode())
    return table


#: Level-0 size range of the demo slides (a 20x scan at :data:`DEMO_MPP`): 9-12 x 6-10 tiles of 302 um, so
#: extracting one takes well under a second; writing it one to two.
DEMO_SLIDE_WIDTH = (5800, 7400)
DEMO_SLIDE_ASPECT = (0.68, 0.82)
# Every eighth slide (from the fourth) is an OME-TIFF, every eighth (from the seventh) a plain tiled TIFF, the
# rest Aperio SVS: the demo exercises the three formats slidetiles reads.
_KIND_OF = {3: ("ome", ".ome.tiff"), 6: ("plain", ".tiff")}


def demo_slide_files(n_slides: int) -> list[str]:
    """File names of the ``n_slides`` demo slides (``slide_001.svs``, ..., some ``.ome.tiff`` and ``.tiff``).

    The names follow from ``n_slides`` alone, so the pipeline can plan the demo's extraction before the slides
    exist.

    >>> demo_slide_files(8)[2:]
    ['slide_003.svs', 'slide_004.ome.tiff', 'slide_005.svs', 'slide_006.svs', 'slide_007.tiff', 'slide_008.svs']
    """
    return [f"slide_{i + 1:03d}{_KIND_OF.get(i % 8, ('aperio', '.svs'))[1]}" for i in range(n_slides)]


def write_demo_slide(out_dir: str | os.PathLike, file: str, *, seed: int = 0):
    """Write one demo slide, ``<out_dir>/slides/<file>`` (a name from :func:`demo_slide_files`), atomically.

    Its size, tissue islands (2-4), pen mark and blurred patch follow from ``seed`` and the slide's number alone,
    so slides can be written in any order, in parallel, byte-identical every time.

    Returns:
        The :class:`slidetiles.slides.synthetic.SyntheticSlide` written (with its ground-truth masks).
    """
    from slidetiles.slides.synthetic import write_synthetic_slide  # scipy, tifffile: only demo_slide jobs need them

    stem = file.split(".")[0]
    if not stem.startswith("slide_") or not stem[6:].isdigit():
        raise ValueError(f"{file!r} is not a demo slide file name (slide_001.svs ...)")
    index = int(stem[6:]) - 1
    kind, extension = _KIND_OF.get(index % 8, ("aperio", ".svs"))
    if file != stem + extension:
        raise ValueError(f"demo slide {stem} is written as {stem + extension}, not {file!r}")
    rng = np.random.default_rng([seed, index, 0x736C6964])
    width = int(rng.integers(DEMO_SLIDE_WIDTH[0], DEMO_SLIDE_WIDTH[1] + 1))
    height = int(width * rng.uniform(*DEMO_SLIDE_ASPECT))
    return write_synthetic_slide(
        Path(out_dir) / "slides" / file,
        width,
        height,
        mpp=DEMO_MPP,
        magnification=10 / DEMO_MPP,
        kind=kind,
        islands=int(rng.integers(2, 5)),
        pen=bool(rng.random() < 0.5),
        blur=bool(rng.random() < 0.5),
        seed=int(rng.integers(2**31)),
    )


def write_demo_annotations(out_dir: str | os.PathLike, *, n_slides: int = 30, n_sites: int = 3, seed: int = 0):
    """Write ``<out_dir>/annotations.csv`` of the demo cohort (patient, slide, site, label) and return it.

    The same table :func:`write_demo_tiles` writes for the same ``n_slides``, ``n_sites`` and ``seed``: slides
    of one patient share its site and label, about a third of the patients have two slides.
    """
    if n_slides < 1 or n_sites < 1:
        raise ValueError("n_slides and n_sites must be at least 1")
    table = _annotations(np.random.default_rng(seed), n_slides, n_sites)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "annotations.csv", table.to_csv(index=False, lineterminator="\n").encode())
    return table


def write_demo_slides(out_dir: str | os.PathLike, *, n_slides: int = 30, n_sites: int = 3, seed: int = 0):
    """Write the whole demo cohort: ``<out_dir>/slides/<file>`` for every :func:`demo_slide_files` name and
    ``<out_dir>/annotations.csv``. The pipeline writes the same files one slide per job.

    Example:
        >>> table = write_demo_slides("resources/demo", n_slides=4)  # doctest: +SKIP
        >>> sorted(os.listdir("resources/demo/slides"))  # doctest: +SKIP
        ['slide_001.svs', 'slide_002.svs', 'slide_003.svs', 'slide_004.ome.tiff']

    Returns:
        The annotations as a pandas DataFrame.
    """
    table = write_demo_annotations(out_dir, n_slides=n_slides, n_sites=n_sites, seed=seed)
    for file in demo_slide_files(n_slides):
        write_demo_slide(out_dir, file, seed=seed)
    return table
