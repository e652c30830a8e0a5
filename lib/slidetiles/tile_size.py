"""Tile sizes and the label folders Slideflow names from them.

A tile size is ``tile_px`` (pixels per side) and ``tile_um`` (microns per side, or a magnification such as
``'10x'``). :func:`tile_label` turns the pair into the sub-folder name Slideflow gives TFRecords and tiles
(``299px_302um``, ``299px_10x``). Both the slide grid and the Dataset use these, so they live below both.
"""

from __future__ import annotations

import numbers
import re

from slidetiles.errors import DatasetError

_MAGNIFICATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*x\s*$", re.IGNORECASE)
_MICRONS = re.compile(r"^\s*(\d+)\s*(?:um)?\s*$", re.IGNORECASE)


def parse_tile_px(tile_px) -> int:
    """``tile_px`` as a positive int, or a :class:`DatasetError` naming the bad value."""
    if isinstance(tile_px, bool) or not isinstance(tile_px, numbers.Integral) or tile_px <= 0:
        raise DatasetError(f"tile_px={tile_px!r} is not a tile size: give a positive number of pixels, e.g. 299")
    return int(tile_px)


def parse_tile_um(tile_um) -> int | str:
    """Normalise a tile size in microns (int) or a magnification string.

    ``302`` and ``'302'``/``'302um'`` give ``302``; ``'10x'``, ``'10X'``, ``' 2.5x'`` give ``'10x'``, ``'10x'``,
    ``'2.5x'`` (lower case, stripped, digits kept as written, since they name folders on disk). Anything else is a
    :class:`DatasetError` naming the value.

    >>> parse_tile_um('10X'), parse_tile_um(302)
    ('10x', 302)
    """
    hint = "give microns as an int (e.g. 302) or a magnification string (e.g. '10x', '2.5x')"
    if isinstance(tile_um, bool):
        raise DatasetError(f"tile_um={tile_um!r} is not a tile size: {hint}")
    if isinstance(tile_um, numbers.Integral):
        if tile_um <= 0:
            raise DatasetError(f"tile_um={tile_um!r} must be positive: {hint}")
        return int(tile_um)
    if isinstance(tile_um, str):
        mag = _MAGNIFICATION.match(tile_um)
        if mag:
            if float(mag.group(1)) <= 0:
                raise DatasetError(f"tile_um={tile_um!r}: a magnification must be above 0x; {hint}")
            return f"{mag.group(1)}x"
        microns = _MICRONS.match(tile_um)
        if microns and int(microns.group(1)) > 0:
            return int(microns.group(1))
    raise DatasetError(f"tile_um={tile_um!r} is not a tile size: {hint}")


def tile_label(tile_px, tile_um) -> str:
    """The sub-folder name of TFRecords and tiles at this tile size, as Slideflow names it.

    >>> tile_label(299, '10x'), tile_label(299, 302)
    ('299px_10x', '299px_302um')
    """
    px = parse_tile_px(tile_px)
    um = parse_tile_um(tile_um)
    return f"{px}px_{um}um" if isinstance(um, int) else f"{px}px_{um}"
