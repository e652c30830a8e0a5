"""Tile images: format detection, decoding to uint8 RGB arrays, cheap validation, lossless PNG conversion.

Decoders were chosen by measurement (``benchmarks/bench_decode.py``; figures in the README's Performance
section): JPEGs go through simplejpeg (already a dependency; it bundles libjpeg-turbo with the accurate IDCT and
gives Pillow's pixels, faster), falling back to Pillow for the JPEGs it rejects; PNGs go through Pillow.
OpenCV and TensorFlow were not faster by enough to justify a 50 MB dependency or a TensorFlow import in every
data-loader worker.

torch and tensorflow are imported only when a tensor of theirs is asked for.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import TileImageError

__all__ = ["detect_image_format", "decode_image", "decode_image_into", "check_image", "to_lossless_png"]

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_DEFAULT_NAME = "<image bytes>"

try:  # simplejpeg is a declared dependency, but decoding must still work (more slowly) without it.
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - exercised only in broken installs
    _simplejpeg = None


def detect_image_format(data) -> str | None:
    """``'jpeg'`` or ``'png'`` from the file's magic bytes, else None. Accepts any bytes-like object."""
    head = bytes(memoryview(data).cast("B")[:8])
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    return None


def _as_buffer(data):
    """bytes / bytearray / memoryview / uint8 ndarray -> something the decoders accept, without copying."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"image data as a numpy array must be uint8 bytes, got dtype {data.dtype}")
        return np.ascontiguousarray(data).reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    raise TypeError(f"image data must be bytes-like or a uint8 numpy array, got {type(data).__name__}")


def _pil_to_rgb(im) -> np.ndarray:
    """Pillow image -> writable uint8 HWC RGB array."""
    mode = im.mode
    if mode == "RGB":
        return np.array(im)
    if mode in ("RGBA", "RGBX", "RGBa"):
        # Alpha is dropped, not composited: the colour channels are kept as stored (as tf.io.decode_png with
        # channels=3 does, which is what Slideflow's loaders use).
        return np.array(im)[..., :3].copy()
    if mode in ("L", "LA", "1"):
        gray = np.array(im.convert("L") if mode == "1" else im)
        gray = gray[..., 0] if gray.ndim == 3 else gray
        return np.repeat(gray[..., None], 3, axis=2)
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale PNG (older Pillow opens it as "I"): keep the 8 most significant bits rather than
        # clipping at 255.
        gray = np.clip(np.array(im).astype(np.int64) >> 8, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    # Palette, CMYK, YCbCr, LAB...: Pillow's own conversion (palette transparency is dropped as above).
    return np.array(im.convert("RGB"))


def _decode_pillow(buf, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(buf)) as im:
            im.load()
            return _pil_to_rgb(im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        # Pillow raises OSError for truncated/broken data, SyntaxError for some malformed PNG chunks.
        raise TileImageError(name, f"cannot decode image: {e}") from e


def _decode_numpy(data, name: str) -> np.ndarray:
    buf = _as_buffer(data)
    fmt = detect_image_format(buf)
    if fmt is None:
        raise TileImageError(name, f"not a JPEG or PNG image (starts with {bytes(memoryview(buf)[:8])!r})")
    if fmt == "jpeg" and _simplejpeg is not None:
        try:
            return _simplejpeg.decode_jpeg(buf, colorspace="RGB")
        except ValueError as fast_error:
            # simplejpeg refuses some images Pillow reads (unusual colour transforms, some libjpeg warnings
            # it treats as errors); a second opinion costs nothing on the fast path. Truncated or broken
            # data fails in Pillow too, so corrupt tiles are still reported.
            try:
                return _decode_pillow(buf, name)
            except TileImageError as e:
                raise TileImageError(name, f"cannot decode JPEG: {fast_error}; Pillow: {e.__cause__}") from e
    return _decode_pillow(buf, name)


def decode_image(data, *, format: str = "numpy", device=None, name: str | None = None, img_type: str | None = None,
                 transform=None) -> Any:
    """Decode a JPEG or PNG tile to a uint8 height x width x 3 RGB array or tensor.

    Grayscale images are repeated to 3 channels; an alpha channel (RGBA / LA / palette transparency) is dropped
    without compositing; 16-bit PNGs keep their high byte. JPEGs are decoded by libjpeg-turbo (simplejpeg) with
    the accurate IDCT, so pixels are identical to Pillow's.

    Args:
        data: the encoded file: bytes, bytearray, memoryview, or a 1-D uint8 numpy array of the bytes.
        format: ``'numpy'`` (np.ndarray), ``'torch'`` (torch.uint8 tensor sharing the array's memory) or
            ``'tf'`` / ``'tensorflow'`` (tf.uint8 tensor, a copy).
        device: for ``'torch'``, a device to move the tensor to (e.g. ``'cuda'``); for ``'tf'``, a device
            name to place it on (e.g. ``'/GPU:0'``); must be None for ``'numpy'``.
        name: what to call the image in error messages (a file name, a TFRecord record...).
        img_type: Slideflow's hint (``'jpeg'``/``'jpg'``/``'png'``), accepted so its calls run unchanged; the
            format is always read from the bytes themselves, so a wrong hint cannot mis-decode.
        transform: a callable applied to the decoded array or tensor, as Slideflow's ``transform=``.

    Raises:
        TileImageError: unknown format, or the image cannot be decoded (corrupt, truncated).
        ImportError: torch / tensorflow asked for but not installed.
    """
    name = _DEFAULT_NAME if name is None else name
    if img_type is not None and str(img_type).lower() not in ("jpeg", "jpg", "png"):
        raise ValueError(f"img_type must be 'jpeg', 'jpg', 'png' or None, got {img_type!r}")
    image = _decode_as(data, format, device, name)
    return image if transform is None else transform(image)


def decode_image_into(data, out: np.ndarray, *, name: str | None = None) -> tuple[int, ...]:
    """Decode a JPEG or PNG into ``out`` (a uint8 height x width x 3 array, e.g. one slot of a batch) and return
    the image's shape.

    A JPEG of ``out``'s size is decoded straight into it, with no intermediate array (the training loaders' hot
    path); anything else goes through :func:`decode_image`. When the returned shape is not ``out.shape``, ``out``
    holds no image and the caller decides what a tile of another size means.

    Raises:
        TileImageError: as :func:`decode_image`, naming ``name``.
    """
    if _simplejpeg is not None and data[:3] == _JPEG_MAGIC:
        try:
            return _simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out).shape
        except ValueError:
            pass  # the buffer is too small (a larger tile), or simplejpeg rejects the JPEG: the general path says why
    image = decode_image(data, name=name)
    if image.shape == out.shape:
        out[...] = image
    return image.shape


def _decode_as(data, format: str, device, name: str) -> Any:
    if format == "numpy":
        if device is not None:
            raise ValueError("device only applies to format='torch' or 'tf'")
        return _decode_numpy(data, name)
    if format == "torch":
        try:
            import torch  # optional and heavy: only for format='torch'
        except ImportError as e:
            raise ImportError("decode_image(format='torch') needs PyTorch: pip install torch") from e
        tensor = torch.from_numpy(_decode_numpy(data, name))
        return tensor if device is None else tensor.to(device)
    if format in ("tf", "tensorflow"):
        try:
            import tensorflow as tf  # optional and heavy (seconds): only for format='tf'
        except ImportError as e:
            raise ImportError("decode_image(format='tf') needs TensorFlow: pip install tensorflow") from e
        array = _decode_numpy(data, name)
        if device is None:
            return tf.convert_to_tensor(array, dtype=tf.uint8)
        with tf.device(device):
            return tf.identity(tf.convert_to_tensor(array, dtype=tf.uint8))
    raise ValueError(f"format must be 'numpy', 'torch', 'tf' or 'tensorflow', got {format!r}")


def _jpeg_has_end(buf: bytes) -> bool:
    """Whether an end-of-image marker follows the first start-of-scan of the main image.

    Header segments are skipped by their lengths, so an EXIF thumbnail (a complete JPEG inside APP1) cannot
    supply the marker. Entropy-coded data never contains FF D9 (FF bytes are stuffed with 00), so any FF D9
    after the scan starts is the real end; data appended after it is tolerated.
    """
    pos = 2
    end = len(buf)
    while pos + 4 <= end:
        if buf[pos] != 0xFF:
            return False
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return False  # end of image before any scan
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            return buf.find(b"\xff\xd9", pos + 2 + length) != -1
        pos += 2 + length
    return False


def check_image(data, name: str, *, full: bool = False) -> str:
    """Cheaply validate a tile before it is stored; return its format, ``'jpeg'`` or ``'png'``.

    What the cheap check catches (each raises :class:`TileImageError` naming ``name``):

    * bytes that are neither JPEG nor PNG (HTML error pages, empty files, TIFFs...);
    * a JPEG whose header libjpeg-turbo cannot parse (``simplejpeg.decode_jpeg_header``), e.g. cut short
      before the image data;
    * a JPEG with no end-of-image marker after its image data: the usual trace of an interrupted write/copy;
    * a PNG that fails Pillow's ``verify()`` (bad chunk CRCs, missing chunks, truncation before IEND) or
      lacks its complete final IEND chunk (cut short by a few bytes).

    It does not decompress the pixels, so damage inside the compressed data (bytes overwritten with other
    bytes of the right length) passes; only a full decode is a complete check, and ``full=True`` does one
    (measured: ~11x slower for JPEG tiles, ~30x for PNG).
    """
    buf = _as_buffer(data)
    fmt = detect_image_format(buf)
    if fmt is None:
        head = bytes(memoryview(buf)[:8])
        raise TileImageError(name, "empty file, not an image" if not head else f"not a JPEG or PNG (starts with {head!r})")
    if full:
        _decode_numpy(buf, name)
        return fmt
    if fmt == "jpeg":
        raw = bytes(buf)
        if _simplejpeg is not None:
            try:
                _simplejpeg.decode_jpeg_header(raw)
            except ValueError as e:
                raise TileImageError(name, f"unreadable JPEG header: {e}") from e
        if not _jpeg_has_end(raw):
            raise TileImageError(name, "JPEG has no end-of-image marker: the file is truncated")
    else:
        try:
            with Image.open(io.BytesIO(buf)) as im:
                im.verify()
        except Exception as e:  # verify() raises assorted types (OSError, SyntaxError, struct.error...)
            raise TileImageError(name, f"invalid PNG: {e}") from e
        # verify() stops at the IEND chunk type without needing its CRC, so a file cut in its last 4 bytes
        # passes it; the complete 12-byte IEND chunk is constant.
        if bytes(memoryview(buf)[-4096:]).rfind(_PNG_END) == -1:
            raise TileImageError(name, "PNG has no complete IEND chunk: the file is truncated")
    return fmt


# Modes PNG cannot store, and the nearest mode it can. All lossless except CMYK/YCbCr/LAB/HSV -> RGB, which
# is a colour-space conversion (done by Pillow; CMYK without an ICC transform, so colours are approximate).
_PNG_CONVERSIONS = {
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
    "RGBX": "RGB",  # the 4th byte is padding
    "RGBa": "RGBA",  # premultiplied alpha -> straight alpha
    "La": "LA",
    "PA": "RGBA",
    "I;16L": "I;16",
    "I;16N": "I;16",
}


def to_lossless_png(path: str | os.PathLike) -> bytes:
    """Read an image file Pillow can open (TIFF, BMP, WebP, PNG, GIF...) and return it encoded as PNG.

    Pixels are kept exactly: the mode is kept when PNG can store it (1, L, LA, P, RGB, RGBA, 16-bit
    grayscale); the modes it cannot are converted as listed in ``_PNG_CONVERSIONS``: CMYK, YCbCr, LAB and HSV
    become RGB (not lossless: a colour-space conversion), padding and premultiplied alpha are undone. 32-bit
    integer images are stored as 16-bit when their values fit, float images are refused. Only the first frame
    of a multi-page file is used; an embedded ICC profile is carried over; EXIF orientation is not applied.

    Raises:
        FileNotFoundError: no such file.
        TileImageError: not an image, unreadable, or not storable as PNG (naming the path).
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in _PNG_CONVERSIONS:
                im = im.convert(_PNG_CONVERSIONS[mode])
            elif mode in ("I", "I;16B", "I;16S", "I;32", "I;32S"):
                values = np.asarray(im)
                if values.size and (values.min() < 0 or values.max() > 0xFFFF):
                    raise TileImageError(path, f"{mode} image with values outside 0..65535 cannot be stored as PNG")
                im = Image.fromarray(values.astype(np.uint16))
            elif mode == "F" or mode.startswith("F;"):
                raise TileImageError(path, "floating-point images cannot be stored losslessly as PNG")
            icc = im.info.get("icc_profile")
            buf = io.BytesIO()
            im.save(buf, format="PNG", **({"icc_profile": icc} if icc else {}))
            return buf.getvalue()
    except FileNotFoundError:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        if isinstance(e, TileImageError):
            raise
        raise TileImageError(path, f"cannot convert to PNG: {e}") from e
