"""Pictures of a slide's extraction: its thumbnail with the kept tiles and the removed ones, coloured by reason.

Slideflow's ``WSI.preview`` draws the tiles it would extract on the slide's thumbnail. Here the removed tiles are
drawn too, one colour per reason (``roi``, ``qc``, ``whitespace``, ``grayspace``, ``max_tiles``), with a legend
of counts in a strip below the slide, so one look tells whether a filter took tissue it should have kept. Each
tile is filled with its colour at :data:`FILL_ALPHA` over the slide and outlined in it, kept tiles drawn last
(on top where tiles overlap, ``stride_div`` > 1).

PNG files are palette images (:data:`PNG_COLOURS` colours, Pillow's fast octree): a third of the bytes of an
RGB PNG and quicker to write, which counts at 10,000 slides, and the drawn colours keep their exact values in
practice. They hold no timestamp or other metadata: the same slide and report give the same bytes.

Example:
    >>> report = wsi.extract_tiles("tfrecords/299px_302um", qc="otsu")  # doctest: +SKIP
    >>> draw_extraction(wsi, report, "s1.png").size  # doctest: +SKIP
    (512, 420)
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from slidetiles.errors import SlideError
from slidetiles.io.writer import atomic_write
from slidetiles.slides import grid
from slidetiles.slides.reader import open_slide

#: RGB of the kept tiles and of each removal reason (Okabe-Ito colours, told apart with colour-vision deficiency).
COLOURS = {
    "kept": (0, 158, 115),
    "roi": (0, 114, 178),
    "qc": (230, 159, 0),
    "whitespace": (86, 180, 233),
    "grayspace": (204, 121, 167),
    "max_tiles": (213, 94, 0),
}
#: Colour of a reason this module does not know (a newer filter): drawn, never dropped.
OTHER_COLOUR = (120, 120, 120)
#: Opacity of a tile's fill over the slide (its 1-pixel outline is opaque).
FILL_ALPHA = 0.35
#: Height of one row of the legend strip below the slide, in pixels.
LEGEND_ROW = 18
DEFAULT_WIDTH = 512
#: Colours of the saved PNG's palette.
PNG_COLOURS = 256
_TEXT = (40, 40, 40)
_PAD = 4


def draw_extraction(wsi, report, path: str | os.PathLike | None = None, *, width: int = DEFAULT_WIDTH,
                    note: str | None = None):
    """``wsi``'s thumbnail, ``width`` pixels wide, with ``report``'s kept and removed tiles drawn, as a PIL image.

    ``report`` is the :class:`~slidetiles.slides.extract.ExtractionReport` that ``wsi.extract_tiles`` returned
    (kept ``locations``, ``removed_locations`` by reason). Below the slide, a legend: the slide's name, then each
    colour with its count; ``note`` (e.g. why the slide was skipped) is added to it. Saved as PNG to ``path``
    when given. The slide part keeps the slide's aspect; the legend adds :data:`LEGEND_ROW` pixel rows.

    Example:
        >>> image = draw_extraction(wsi, wsi.extract_tiles(dry_run=True), "preview.png", width=1024)  # doctest: +SKIP
    """
    thumb = wsi.thumb(width=width).convert("RGB")
    w0, h0 = wsi.dimensions
    scale = (thumb.width / w0, thumb.height / h0)
    side = int(wsi.full_extract_px)
    layers = [(reason, np.asarray(centres).reshape(-1, 2)) for reason, centres in report.removed_locations.items()]
    layers.append(("kept", np.asarray(report.locations).reshape(-1, 2)))

    overlay = Image.new("RGBA", thumb.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    fill_alpha = round(255 * FILL_ALPHA)
    for reason, centres in layers:
        colour = COLOURS.get(reason, OTHER_COLOUR)
        for box in _boxes(centres, side, scale).tolist():
            draw.rectangle(box, fill=(*colour, fill_alpha), outline=(*colour, 255))
    slide = Image.alpha_composite(thumb.convert("RGBA"), overlay).convert("RGB")

    entries = [(COLOURS["kept"], f"kept {len(layers[-1][1])}")]
    entries += [(COLOURS.get(r, OTHER_COLOUR), f"{r} {len(c)}") for r, c in layers[:-1] if len(c)]
    title = f"{wsi.name}: {len(layers[-1][1])} of {sum(len(c) for _, c in layers)} grid tiles kept"
    image = _with_legend(slide, title, entries, note)
    if path is not None:
        save_png(image, path)
    return image


def draw_note(path: str | os.PathLike | None, text: str, *, slide_path: str | os.PathLike | None = None,
              width: int = DEFAULT_WIDTH):
    """A picture saying ``text`` (e.g. why a slide was skipped), over the slide's plain thumbnail if it opens.

    For slides that have no extraction to draw: unreadable, no microns per pixel, smaller than a tile. A slide
    that cannot be opened gives the text alone. Saved as PNG to ``path`` when given.

    Example:
        >>> draw_note("damaged.png", "cannot open damaged.svs", slide_path="damaged.svs").width  # doctest: +SKIP
        512
    """
    slide = None
    if slide_path is not None:
        slide = _plain_thumbnail(slide_path, width)
    if slide is None:
        slide = Image.new("RGB", (width, LEGEND_ROW), (255, 255, 255))
    image = _with_legend(slide, None, [], text)
    if path is not None:
        save_png(image, path)
    return image


def save_png(image, path: str | os.PathLike) -> None:
    """``image`` as a palette PNG at ``path``, written atomically, with no metadata (the same picture, the same
    bytes)."""
    buffer = io.BytesIO()
    image.convert("RGB").quantize(PNG_COLOURS, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG")
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def _boxes(centres: np.ndarray, side: int, scale) -> np.ndarray:
    """``[x0, y0, x1, y1]`` thumbnail pixel boxes (inclusive) of tiles of ``side`` level-0 px at ``centres``.

    Rounded edge by edge, so tiles that touch on the slide touch on the thumbnail without sharing a pixel.
    """
    if not len(centres):
        return np.zeros((0, 4), np.int64)
    corners = centres.astype(np.float64) - side // 2  # the inverse of grid.tile_centres
    sx, sy = scale
    x0 = np.round(corners[:, 0] * sx)
    y0 = np.round(corners[:, 1] * sy)
    x1 = np.maximum(x0, np.round((corners[:, 0] + side) * sx) - 1)
    y1 = np.maximum(y0, np.round((corners[:, 1] + side) * sy) - 1)
    return np.column_stack([x0, y0, x1, y1]).astype(np.int64)


def _plain_thumbnail(slide_path, width: int):
    """The slide's thumbnail ``width`` pixels wide, or None when the file cannot be read as a slide."""
    try:
        with open_slide(slide_path) as reader:
            w0, _ = reader.dimensions
            level = grid.best_level(reader.level_downsamples, w0 / float(width))
            lw, lh = reader.level_dimensions[level]
            image = reader.read_vips(level, 0, 0, lw, lh)
            image = image.resize(width / image.width, kernel="lanczos3")
            return Image.fromarray(reader.to_array(image, "the thumbnail")).convert("RGB")
    except (SlideError, OSError, ValueError):
        return None


def _font():
    try:
        return ImageFont.load_default(size=12)
    except (TypeError, ImportError, OSError):  # a Pillow without FreeType: its small bitmap font
        return ImageFont.load_default()


def _with_legend(slide, title: str | None, entries: list, note: str | None):
    """``slide`` above a white strip: ``title``, then ``entries`` (colour, label) flowing in rows, then ``note``."""
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = slide.width
    swatch = LEGEND_ROW - 2 * _PAD
    # Lay out first (row of each item and its x), then draw on a strip of the height that needs.
    items: list[tuple[int, int, tuple | None, str]] = []
    row = 0
    if title:
        for line in _wrap(title, font, width - 2 * _PAD, measure):
            items.append((row, _PAD, None, line))
            row += 1
    x = _PAD
    for colour, label in entries:
        size = swatch + 4 + int(measure.textlength(label, font=font)) + 12
        if x > _PAD and x + size > width:
            row, x = row + 1, _PAD
        items.append((row, x, colour, label))
        x += size
    row += 1 if entries else 0
    for line in _wrap(note or "", font, width - 2 * _PAD, measure):
        items.append((row, _PAD, None, line))
        row += 1
    image = Image.new("RGB", (width, slide.height + max(1, row) * LEGEND_ROW), (255, 255, 255))
    image.paste(slide, (0, 0))
    draw = ImageDraw.Draw(image)
    for item_row, x, colour, label in items:
        top = slide.height + item_row * LEGEND_ROW
        if colour is not None:
            draw.rectangle([x, top + _PAD, x + swatch - 1, top + _PAD + swatch - 1], fill=colour)
            x += swatch + 4
        draw.text((x, top + 2), label, fill=_TEXT, font=font)
    return image


def _wrap(text: str, font, width: int, measure) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels; a word wider than that (a long path) is cut where it must."""
    lines: list[str] = []
    for paragraph in text.splitlines():
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if measure.textlength(candidate, font=font) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:
                if line and measure.textlength(line + char, font=font) > width:
                    lines.append(line)
                    line = ""
                line += char
        if line:
            lines.append(line)
    return lines
