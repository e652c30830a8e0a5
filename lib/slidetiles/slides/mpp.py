"""Microns per pixel of a whole-slide image, from every place a scanner or converter records it.

Sources, first found wins (the order runs from the most specific record to the most generic):

1. OpenSlide's normalised property ``openslide.mpp-x`` (when the slide was opened with OpenSlide);
2. the Aperio image description, ``... |MPP = 0.2527|...``;
3. OME-XML ``PhysicalSizeX`` with its ``PhysicalSizeXUnit`` (micrometres when absent, as the schema says);
4. the TIFF ``XResolution``/``ResolutionUnit`` tags, in inches, centimetres, or the millimetre and micrometre units
   some vendors write (a unit of "none" says nothing about size and is skipped).

Unlike Slideflow's parser (which only accepts ``MPP = 0.x``), any positive value is read: a 1.0 um/px slide has an
MPP too.

Example:
    >>> mpp_from_aperio("Aperio Image Library v12 |AppMag = 40|MPP = 0.2527|Filename = s1")
    0.2527
    >>> mpp_from_resolution(40000.0, 3)  # 40,000 pixels per centimetre
    0.25
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")
# ResolutionUnit tag values: 2 and 3 are baseline TIFF; 4 and 5 are the vendor extensions tifffile also knows.
_MICRONS_PER_UNIT = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
# OME's UnitsLength spellings for the sizes a pixel can have.
_OME_UNITS = {
    "µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "pm": 1e-6,
}


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def mpp_from_aperio(description: str | None) -> float | None:
    """The ``MPP = x`` value of an Aperio image description, or None."""
    if not description or "Aperio" not in description:
        return None
    match = _APERIO_MPP.search(description)
    return _positive(match.group(1)) if match else None


def mpp_from_ome(xml: str | bytes | None) -> float | None:
    """``PhysicalSizeX`` of the first OME ``Pixels`` element, in microns, or None."""
    if not xml:
        return None
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8", "replace")
    if "<OME" not in xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "Pixels":
            size = _positive(element.get("PhysicalSizeX"))
            scale = _OME_UNITS.get(element.get("PhysicalSizeXUnit", "µm"))
            return size * scale if size is not None and scale is not None else None
    return None


def mpp_from_resolution(x_resolution, unit) -> float | None:
    """Microns per pixel from TIFF ``XResolution`` (pixels per unit) and ``ResolutionUnit``, or None."""
    if isinstance(x_resolution, tuple):  # a raw RATIONAL (numerator, denominator)
        x_resolution = x_resolution[0] / x_resolution[1] if x_resolution[1] else None
    per_unit = _positive(x_resolution)
    microns = _MICRONS_PER_UNIT.get(int(unit)) if unit is not None else None
    if per_unit is None or microns is None:
        return None
    return microns / per_unit


def mpp_from_properties(properties: Mapping[str, object]) -> float | None:
    """``openslide.mpp-x`` of an OpenSlide property map, else its Aperio/TIFF fields, or None."""
    for key in ("openslide.mpp-x", "aperio.MPP"):
        value = _positive(properties.get(key))
        if value is not None:
            return value
    return mpp_from_aperio(str(properties.get("tiff.ImageDescription") or "")) or mpp_from_ome(
        str(properties.get("tiff.ImageDescription") or "")
    )


def mpp_from_tiff_page(page) -> float | None:
    """MPP of a :class:`tifffile.TiffPage`: its Aperio or OME description, then its resolution tags."""
    description = page.description or ""
    found = mpp_from_aperio(description) or mpp_from_ome(description)
    if found is not None:
        return found
    tag = page.tags.get("XResolution")
    unit = page.tags.get("ResolutionUnit")
    if tag is None:
        return None
    return mpp_from_resolution(tag.value, unit.value if unit is not None else 2)
