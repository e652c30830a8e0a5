"""Regions of JPEG-compressed tiled TIFF levels, each source tile decoded once (libjpeg-turbo via simplejpeg).

libvips' TIFF loader, with its operation cache off (as extraction runs it, so that memory stays flat), decodes
every source JPEG tile a region touches each time a region is read: neighbouring tile rows, and the tiles of the
next run on a row, decode the same source tiles again. Here the raw tile bytes are read with ``os.pread`` at the
offsets tifffile lists, decoded by simplejpeg (libjpeg-turbo with its accurate DCT and fancy upsampling, as
libvips decodes them), kept in a small LRU cache bounded in bytes (:data:`CACHE_BYTES`, whatever the slide's
size), and regions are assembled in numpy. The reader checks, on each level's most detailed tile, that the pixels
are libvips' own before using a level (tests/test_slides_fast_read.py compares whole levels on every synthetic
slide kind, Aperio-style RGB JPEGs with shared JPEGTables included); a level :func:`jpeg_level` does not accept,
or that fails the check, is left to libvips. ``SLIDETILES_VIPS_ONLY=1`` turns this path off.

A damaged tile raises :class:`~slidetiles.errors.SlideFormatError` naming the slide, the level and the tile:
bytes past the end of the file, a stream libjpeg-turbo refuses, and also one it would decode with a warning
(cut short, corrupt entropy data: simplejpeg's ``strict`` mode), which libvips' loader turns into grey or shifted
pixels without an error.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np
import simplejpeg

from slidetiles.errors import SlideFormatError

#: Most bytes of decoded source tiles kept per slide (all levels together): 8 MB, ~40 tiles of 256 x 256 RGB. Reads
#: go down the slide (grid rows in order), so rows of source tiles above the one before a read's first are let go
#: at once (:meth:`JpegLevels.read`): what stays is the band being read, the tissue part of ~2 rows of source tiles.
#: Past the bound a tile may be decoded twice; memory stays bounded whatever the slide's size.
CACHE_BYTES = 8 << 20
#: TIFF tag values this path reads (anything else goes to libvips).
_JPEG, _CONTIG, _RGB, _YCBCR = 7, 1, 2, 6
#: An Adobe APP14 segment with colour transform 0: "the three components are R, G, B". TIFF JPEG tiles of
#: photometric RGB (Aperio's) are untransformed RGB without saying so in the stream; libtiff and tifffile tell
#: libjpeg so, and simplejpeg has no such option, so the stream is told in JPEG's own words (JPEG's Adobe marker).
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def _says_colour_space(data: bytes) -> bool:
    """Whether a JPEG stream carries a JFIF (APP0) or Adobe (APP14) marker before its scan: then libjpeg does
    not guess its colour space."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: no more headers
            return False
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if (marker == 0xE0 and data[pos + 4 : pos + 8] == b"JFIF") or (
            marker == 0xEE and data[pos + 4 : pos + 9] == b"Adobe"
        ):
            return True
        pos += 2 + length
    return False


#: Luma sampling factors (chroma 1 x 1) of the baseline JPEGs this path decodes: 4:4:4, 4:2:2, 4:4:0, 4:2:0, which
#: TurboJPEG (simplejpeg) decodes as libjpeg does. Others (4:1:1, progressive, 12-bit...) are left to libvips.
_SAMPLINGS = {(1, 1), (2, 1), (1, 2), (2, 2)}


def _decodable(data: bytes) -> bool:
    """Whether a JPEG stream is baseline or extended sequential, 8-bit, 3 components in a sampling of
    :data:`_SAMPLINGS` (read from its frame header)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xC0, 0xC1):
            frame = data[pos + 4 : pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")]
            if len(frame) < 15 or frame[0] != 8 or frame[5] != 3:
                return False
            luma, cb, cr = ((frame[7 + 3 * i] >> 4, frame[7 + 3 * i] & 15) for i in range(3))
            return luma in _SAMPLINGS and cb == cr == (1, 1)
        if marker == 0xDA or 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return False  # a scan before a sequential frame header, or another kind of frame
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False


def jpeg_level(page) -> dict | None:
    """What :class:`JpegLevels` needs of one tifffile page, or None when libvips should read it instead.

    Accepted: tiled, 8-bit, 3 samples (no alpha), chunky, JPEG (compression 7) with RGB or YCbCr photometric, every
    tile present (a byte count of 0, a sparse tile, is left to libvips' handling).
    """
    try:
        if not (
            page.is_tiled
            and int(page.compression) == _JPEG
            and int(page.photometric) in (_RGB, _YCBCR)
            and int(page.planarconfig) == _CONTIG
            and page.samplesperpixel == 3
            and not page.extrasamples
            and page.bitspersample == 8
            and page.tiledepth == 1
        ):
            return None
        counts = np.asarray(page.databytecounts, np.int64)
        offsets = np.asarray(page.dataoffsets, np.int64)
        across = -(-int(page.imagewidth) // int(page.tilewidth))
        down = -(-int(page.imagelength) // int(page.tilelength))
        if len(counts) != across * down or len(offsets) != len(counts) or not np.all(counts > 0):
            return None
        tables = page.jpegtables
        return {
            "width": int(page.imagewidth),
            "height": int(page.imagelength),
            "tile_width": int(page.tilewidth),
            "tile_height": int(page.tilelength),
            "across": across,
            "offsets": offsets,
            "counts": counts,
            # A whole JPEG from a tile's abbreviated stream: the level's tables (SOI, DQT/DHT, no EOI), then the
            # tile's segments after its SOI, as libtiff feeds them to libjpeg.
            "prefix": bytes(tables[:-2]) if tables and len(tables) > 4 else b"",
            "rgb": int(page.photometric) == _RGB,
        }
    except (AttributeError, TypeError, ValueError):
        return None


class JpegLevels:
    """Regions of the accepted levels of one slide file (``levels``: level index -> :func:`jpeg_level`'s dict).

    Thread-safe: ``os.pread`` has no shared file position, and the cache is locked (two threads wanting the same
    tile at once may both decode it; the first one stored is kept).
    """

    def __init__(self, path: str, levels: dict, cache_bytes: int = CACHE_BYTES):
        self.path = path
        self.levels = levels
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()
        self._fd = None
        self._top = {}  # level -> the lowest first source-tile row of a read so far
        self.decoded = 0  # source tiles decoded so far (for tests and benchmarks)

    def __contains__(self, level: int) -> bool:
        return level in self.levels

    def drop(self, level: int) -> None:
        """Stop serving ``level`` (its reads go back to libvips); its cached tiles are let go."""
        with self._lock:
            self.levels = {k: v for k, v in self.levels.items() if k != level}
            for key in [key for key in self._cache if key[0] == level]:
                self._cached -= self._cache.pop(key).nbytes

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with self._lock:
            self._cache.clear()
            self._cached = 0
            self._top.clear()

    def _file(self) -> int:
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return self._fd

    def _error(self, level: int, index: int, message: str) -> SlideFormatError:
        info = self.levels[level]
        column, row = index % info["across"], index // info["across"]
        x, y = column * info["tile_width"], row * info["tile_height"]
        return SlideFormatError(
            self.path, f"level {level}, JPEG tile {index} (column {column}, row {row}, level pixels from ({x}, {y})): "
            f"{message}; the file is damaged (re-copy or re-export the slide)"
        )

    def tile(self, level: int, index: int) -> np.ndarray:
        """Decoded ``(tile_height, tile_width, 3)`` pixels of source tile ``index`` of ``level`` (read-only)."""
        key = (level, index)
        with self._lock:
            tile = self._cache.get(key)
            if tile is not None:
                self._cache.move_to_end(key)
                return tile
        data = self._stream(level, index)
        shape = (self.levels[level]["tile_height"], self.levels[level]["tile_width"], 3)
        try:
            tile = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except Exception as exc:  # ValueError from libjpeg-turbo's errors and (strict) warnings
            raise self._error(level, index, f"not a decodable JPEG ({exc})") from None
        if tile.shape != shape:
            raise self._error(level, index, f"decodes to {tile.shape}, not the level's {shape} tile")
        tile.flags.writeable = False
        with self._lock:
            self.decoded += 1
            if key not in self._cache:
                self._cache[key] = tile
                self._cached += tile.nbytes
                while self._cached > self.cache_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cached -= old.nbytes
            return self._cache[key]

    def decodable(self, level: int, index: int) -> bool:
        """Whether tile ``index`` of ``level`` is a JPEG of the kind decoded here (its frame header says so)."""
        return _decodable(self._stream(level, index))

    def _stream(self, level: int, index: int) -> bytes:
        """Tile ``index``'s bytes as one whole JPEG stream, as libjpeg is to read it."""
        info = self.levels[level]
        count = int(info["counts"][index])
        try:
            data = os.pread(self._file(), count, int(info["offsets"][index]))
        except OSError as exc:
            raise self._error(level, index, f"cannot read its {count} bytes ({exc})") from None
        if len(data) != count:
            raise self._error(level, index, f"{count} bytes listed, {len(data)} in the file (truncated)")
        if info["prefix"]:
            data = info["prefix"] + data[2:]
        if info["rgb"] and not _says_colour_space(data):
            data = data[:2] + _ADOBE_RGB + data[2:]
        return data

    def _forget_above(self, level: int, row: int) -> None:
        """Let go of ``level``'s cached tiles in source-tile rows above ``row`` (once per new row reached): reads
        going down the slide will not want them again (one that does decodes them again, same pixels)."""
        if row <= self._top.get(level, 0):
            return
        across = self.levels[level]["across"]
        with self._lock:
            self._top[level] = row
            for key in [key for key in self._cache if key[0] == level and key[1] // across < row]:
                self._cached -= self._cache.pop(key).nbytes

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB ``(height, width, 3)`` pixels from level pixel ``(x, y)``, a region inside the level."""
        info = self.levels[level]
        tw, th, across = info["tile_width"], info["tile_height"], info["across"]
        if x < 0 or y < 0 or x + width > info["width"] or y + height > info["height"] or width < 1 or height < 1:
            raise ValueError(f"region ({x}, {y}) {width}x{height} is not inside level {level}")
        self._forget_above(level, y // th - 1)
        out = np.empty((height, width, 3), np.uint8)
        for row in range(y // th, (y + height - 1) // th + 1):
            top, bottom = max(y, row * th), min(y + height, (row + 1) * th)
            for column in range(x // tw, (x + width - 1) // tw + 1):
                left, right = max(x, column * tw), min(x + width, (column + 1) * tw)
                tile = self.tile(level, row * across + column)
                out[top - y : bottom - y, left - x : right - x] = tile[
                    top - row * th : bottom - row * th, left - column * tw : right - column * tw
                ]
        return out
