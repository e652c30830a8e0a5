"""Folders of tile images -> TFRecords (Slideflow's ``write_tfrecords_single`` / ``write_tfrecords_multi``)."""

from __future__ import annotations

import logging
import os
import re

from slidetiles.errors import CoordPatternError, SlideNameError, TileImageError
from slidetiles.io.images import check_image, to_lossless_png
from slidetiles.io.tfrecord2idx import save_index
from slidetiles.io.writer import TFRecordWriter

log = logging.getLogger(__name__)

#: Slideflow names extracted tiles ``<slide>-<x>-<y>.<ext>`` with x, y the tile centre in level-0 pixels.
DEFAULT_COORD_PATTERN = r"^(?P<name>.+)-(?P<x>-?\d+)-(?P<y>-?\d+)\.[A-Za-z0-9]+$"
#: Stored byte for byte.
STORED_AS_IS = frozenset({".jpg", ".jpeg", ".png"})
#: Re-encoded losslessly to PNG (TFRecords of tiles hold JPEG or PNG only).
REENCODED = frozenset({".tif", ".tiff", ".bmp", ".webp"})
TILE_EXTENSIONS = STORED_AS_IS | REENCODED


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

_UNSAFE_NAME = re.compile(r"[/\\{}\x00-\x1f\x7f]")


def check_name(name: str, what: str = "slide name") -> str:
    """Refuse a slide or file name that would leave its folder or break paths; returns it unchanged.

    Refused: empty, ``.``/``..``, surrounding whitespace, path separators, control characters (newlines...),
    and braces, which Snakemake reads as wildcards in file patterns.
    """
    if not name or name in (".", "..") or name != name.strip() or _UNSAFE_NAME.search(name):
        raise SlideNameError(
            f"{what} {name!r} cannot be used as a file name: it is empty, has surrounding spaces, or contains a "
            "path separator, '..', a control character or a brace, and would escape the output folder or break "
            "file patterns. Rename the slide folder."
        )
    return name


def list_tiles(folder: str | os.PathLike) -> list[str]:
    """Tile image files directly in ``folder`` (extensions matched case-insensitively), sorted by name."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: tile folder does not exist or is not a folder")
    with os.scandir(folder) as entries:
        names = [
            e.name
            for e in entries
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in TILE_EXTENSIONS
            and e.is_file()
        ]
    return sorted(names)


def _tile_locations(names: list[str], folder: str, coord_pattern: str | None) -> list[tuple[int, int]] | None:
    if coord_pattern is None:
        return None
    try:
        pattern = re.compile(coord_pattern)
    except re.error as exc:
        raise CoordPatternError(f"coord_pattern {coord_pattern!r} is not a regular expression: {exc}") from None
    if not {"x", "y"} <= set(pattern.groupindex):
        raise CoordPatternError(f"coord_pattern {coord_pattern!r} needs named groups (?P<x>...) and (?P<y>...)")
    matches = [pattern.search(name) for name in names]
    matched = sum(m is not None for m in matches)
    if matched == 0:
        log.warning("%s: no tile name matches %s; writing records without loc_x/loc_y", folder, coord_pattern)
        return None
    if matched < len(names):
        bad = next(name for name, m in zip(names, matches) if m is None)
        raise TileImageError(
            os.path.join(folder, bad),
            f"{matched} of {len(names)} tiles are named <name>-<x>-<y>.<ext> but this one does not match "
            f"{coord_pattern!r}; rename it, remove it, or pass coord_pattern=None to store no locations",
        )
    locations = [(int(m["x"]), int(m["y"])) for m in matches]
    seen: dict[tuple[int, int], str] = {}
    for name, loc in zip(names, locations):
        if not all(_INT64_MIN <= v <= _INT64_MAX for v in loc):
            # tf.train.Example stores int64: protobuf would refuse it with a ValueError naming no file.
            raise TileImageError(
                os.path.join(folder, name),
                f"the tile location {loc} in its name does not fit the 64-bit integers a TFRecord stores; "
                "rename the tile, or pass coord_pattern=None to store no locations",
            )
        if loc in seen:
            raise TileImageError(
                os.path.join(folder, name), f"same tile location {loc} as {seen[loc]}; each tile needs its own"
            )
        seen[loc] = name
    return locations


def _tfrecord_filename(filename: str) -> str:
    check_name(filename, "TFRecord file name")
    return filename if filename.endswith((".tfrecords", ".tfrecord")) else filename + ".tfrecords"


def write_tfrecords_single(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    filename: str,
    slide: str,
    *,
    coord_pattern: str | None = DEFAULT_COORD_PATTERN,
    check_images: bool = True,
    index: bool = True,
    skipped: list | None = None,
) -> str:
    """Write every tile image of ``input_dir`` into one TFRecord ``<output_dir>/<filename>``; returns its path.

    ``.tfrecords`` is appended to ``filename`` unless it ends in ``.tfrecords``/``.tfrecord``. Tiles are taken in
    file-name order; JPEG and PNG are stored byte for byte, TIFF/BMP/WebP re-encoded losslessly as PNG. Each
    record's ``loc_x``/``loc_y`` come from the file name through ``coord_pattern`` (named groups ``x`` and ``y``;
    default ``<name>-<x>-<y>.<ext>``, as Slideflow names extracted tiles); None stores no locations.
    With ``check_images`` every tile is checked (format, JPEG header and end marker, PNG structure) and a bad
    one stops the write with its name; with ``skipped`` (a list) it is appended there and left out instead (a
    slide left with no tile at all is still an error). The file appears only once complete; an index is written
    beside it.

    Example:
        >>> write_tfrecords_single("tiles/slide1", "tfrecords/299px_302um", "slide1", "slide1")  # doctest: +SKIP
        'tfrecords/299px_302um/slide1.tfrecords'
    """
    input_dir, output_dir = os.fspath(input_dir), os.fspath(output_dir)
    check_name(slide)
    target = os.path.join(output_dir, _tfrecord_filename(filename))
    names = list_tiles(input_dir)
    if not names:
        raise TileImageError(
            input_dir, f"no tile images ({', '.join(sorted(TILE_EXTENSIONS))}, any case) in this slide folder"
        )
    locations = _tile_locations(names, input_dir, coord_pattern)
    os.makedirs(output_dir, exist_ok=True)
    with TFRecordWriter(target) as writer:
        for i, name in enumerate(names):
            tile_path = os.path.join(input_dir, name)
            try:
                image = _read_tile(tile_path, check_images)
            except TileImageError as error:
                if skipped is None:
                    raise
                log.warning("skipping %s", error)
                skipped.append(error)
                continue
            loc = locations[i] if locations is not None else (None, None)
            writer.write_tile(image, slide, *loc)
        if not len(writer):
            writer.abort()
            raise TileImageError(input_dir, f"none of the {len(names)} tile images could be read")
    if index:
        arr_0, locs = writer.index_arrays()
        save_index(target, arr_0, locs)
    return target


def _read_tile(tile_path: str, check: bool) -> bytes:
    if os.path.splitext(tile_path)[1].lower() not in STORED_AS_IS:
        return to_lossless_png(tile_path)
    try:
        with open(tile_path, "rb") as f:
            image = f.read()
    except OSError as exc:
        raise TileImageError(tile_path, f"cannot read the tile ({exc.strerror})") from None
    if check:
        check_image(image, tile_path)
    return image


def write_tfrecords_multi(
    input_dir: str | os.PathLike, output_dir: str | os.PathLike, **options
) -> dict[str, str]:
    """One TFRecord per sub-folder of ``input_dir`` (the sub-folder name is the slide name).

    Returns ``{slide: tfrecord path}``. Options are those of :func:`write_tfrecords_single`. Loose files directly
    in ``input_dir`` are ignored (with a warning); hidden folders are skipped.
    """
    input_dir = os.fspath(input_dir)
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"{input_dir}: tiles folder does not exist or is not a folder")
    with os.scandir(input_dir) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    slides = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if e.is_file() and not e.name.startswith(".")]
    if loose:
        log.warning("%s: ignoring %d loose file(s) (tiles belong in one sub-folder per slide)", input_dir, len(loose))
    return {
        slide: write_tfrecords_single(os.path.join(input_dir, slide), output_dir, slide, slide, **options)
        for slide in slides
    }
