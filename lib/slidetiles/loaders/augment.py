"""Seeded augmentations and standardisation of uint8 RGB tiles, in numpy only (no torch in the workers).

``augment`` takes Slideflow's letters (``True`` means ``'xyrjb'``, as in Slideflow; ``False``/``None``/``''``
means none). They are applied in this fixed order, whatever the order of the letters:

====  ===========================================================================================
x     horizontal flip, p = 0.5
y     vertical flip, p = 0.5
r     rotation by 0/90/180/270 degrees, uniform (a non-square tile is only turned 0 or 180: shape kept)
d     colour jitter: brightness, contrast and saturation factors each uniform in [1 - s, 1 + s],
      ``s = color_jitter`` (default 0.1, small, for stain/scanner variation). Slideflow's ``'d'`` is
      the much stronger SimCLR distortion (0.8, plus 20% grayscale); pass ``color_jitter=0.8`` for
      similar strength. Brightness scales the pixels, contrast blends with the mean gray level,
      saturation with each pixel's gray level (torchvision's formulas), clipped after each step.
j     JPEG re-compression, p = 0.5, quality uniform in 50..100 (4:2:0 chroma, as Slideflow and TF)
b     Gaussian blur, p = 0.1, sigma 0.5/1.0/1.5/2.0 with weights 8:4:2:1 (Slideflow's weights)
====  ===========================================================================================

Slideflow's ``'n'`` (stain augmentation; needs a stain normaliser) and ``'c'``/``'s'``/``'p'`` (colour
profile, sharpen, posterize) are refused with a clear error rather than ignored.

Reproducibility: the random decisions for each tile are drawn up front by :class:`AugmentStream` from the
shard's augmentation Generator (``epoch_rngs(seed, epoch, shard)[1]``), 256 tiles at a time, into a row of
:data:`PARAM_COLUMNS`; applying a row is then deterministic. The torch loader applies rows with numpy here and
the TensorFlow loader with TF ops on the same rows, so both make the same choices for the same seed (flips,
rotations and JPEG give identical pixels; jitter and blur agree to within one grey level).

Example:
    >>> import numpy as np
    >>> image = np.zeros((8, 8, 3), np.uint8); image[0, 0] = 255
    >>> stream = AugmentStream(Augmenter("xy"), np.random.default_rng(0))
    >>> out = stream.apply(image)
    >>> out.shape, int(out.sum()) == 3 * 255
    ((8, 8, 3), True)
"""

from __future__ import annotations

import io
import math

import numpy as np

__all__ = [
    "AUGMENTATIONS",
    "PARAM_COLUMNS",
    "AugmentStream",
    "Augmenter",
    "apply_params",
    "parse_augment",
    "standardize",
    "standardize_method",
    "STANDARDIZE_METHODS",
]

#: Supported letters and what they do (see the module docstring for the parameters).
AUGMENTATIONS = {
    "x": "random horizontal flip",
    "y": "random vertical flip",
    "r": "random 90-degree rotation",
    "d": "random colour jitter (brightness, contrast, saturation)",
    "j": "random JPEG re-compression",
    "b": "random Gaussian blur",
}
#: What ``augment=True`` means (Slideflow's default set).
DEFAULT_AUGMENT = "xyrjb"
_ORDER = "xyrdjb"
_REFUSED = {
    "n": "stain augmentation needs a stain normaliser, which slidetiles does not provide",
    "c": "random colour profiles are not supported; 'd' is a colour jitter",
    "s": "random sharpening is not supported",
    "p": "random posterisation is not supported",
}

#: Columns of a parameter row; identity values: 0, 0, 0, 1, 1, 1, 0, 0.
PARAM_COLUMNS = ("flip_x", "flip_y", "rot90", "brightness", "contrast", "saturation", "jpeg_quality", "blur_sigma")
FLIP_X, FLIP_Y, ROT90, BRIGHTNESS, CONTRAST, SATURATION, JPEG_QUALITY, BLUR_SIGMA = range(len(PARAM_COLUMNS))
IDENTITY = np.asarray([0, 0, 0, 1, 1, 1, 0, 0], dtype=np.float32)

JPEG_P, JPEG_QUALITY_RANGE = 0.5, (50, 100)
BLUR_P = 0.1
BLUR_SIGMAS = np.asarray([0.5, 1.0, 1.5, 2.0])
BLUR_WEIGHTS = np.asarray([8.0, 4.0, 2.0, 1.0]) / 15.0
#: ITU-R 601 luma, as torchvision and PIL use for grayscale.
GRAY = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
_STREAM_BLOCK = 256

STANDARDIZE_METHODS = ("image", "scale")


def parse_augment(augment) -> str:
    """Normalise an ``augment`` option to its letters in application order.

    Example:
        >>> parse_augment(True), parse_augment("jyx"), parse_augment(False)
        ('xyrjb', 'xyj', '')
    """
    if augment is None or augment is False:
        return ""
    if augment is True:
        augment = DEFAULT_AUGMENT
    if not isinstance(augment, str):
        raise ValueError(f"augment must be a string of letters or a bool, got {augment!r}")
    for letter in augment:
        if letter in _REFUSED:
            raise ValueError(f"augment={augment!r}: '{letter}': {_REFUSED[letter]}")
        if letter not in AUGMENTATIONS:
            known = ", ".join(f"'{k}' ({v})" for k, v in AUGMENTATIONS.items())
            raise ValueError(f"augment={augment!r}: unknown letter '{letter}'; use {known}")
    return "".join(letter for letter in _ORDER if letter in augment)


def standardize_method(standardize) -> str | None:
    """The ``standardize`` option as ``'image'``, ``'scale'`` or None (no standardisation); ValueError otherwise."""
    if standardize is None or standardize is False:
        return None
    if standardize is True:
        return "image"
    if standardize in STANDARDIZE_METHODS:
        return standardize
    raise ValueError(f"standardize must be a bool or one of {STANDARDIZE_METHODS}, got {standardize!r}")


class Augmenter:
    """The augmentations of one loader: draws parameter rows, and applies a row to an image.

    Picklable and stateless (all randomness comes from the Generator given to :meth:`draw`).

    Example:
        >>> aug = Augmenter("xyr")
        >>> aug.draw(np.random.default_rng(1), 2).shape
        (2, 8)
    """

    def __init__(self, augment=True, *, color_jitter: float = 0.1):
        self.letters = parse_augment(augment)
        if not 0 <= float(color_jitter) < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter!r}")
        self.color_jitter = float(color_jitter)

    def __bool__(self) -> bool:
        return bool(self.letters)

    def __repr__(self) -> str:
        return f"Augmenter({self.letters!r}, color_jitter={self.color_jitter})"

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Parameter rows (float32, ``(n, 8)``, columns :data:`PARAM_COLUMNS`) for the next ``n`` tiles."""
        params = np.tile(IDENTITY, (n, 1))
        letters = self.letters
        if "x" in letters:
            params[:, FLIP_X] = rng.random(n) < 0.5
        if "y" in letters:
            params[:, FLIP_Y] = rng.random(n) < 0.5
        if "r" in letters:
            params[:, ROT90] = rng.integers(0, 4, n)
        if "d" in letters:
            s = self.color_jitter
            params[:, BRIGHTNESS : SATURATION + 1] = rng.uniform(1 - s, 1 + s, (n, 3))
        if "j" in letters:
            apply = rng.random(n) < JPEG_P
            quality = rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1, n)
            params[:, JPEG_QUALITY] = np.where(apply, quality, 0)
        if "b" in letters:
            apply = rng.random(n) < BLUR_P
            sigma = rng.choice(BLUR_SIGMAS, size=n, p=BLUR_WEIGHTS)
            params[:, BLUR_SIGMA] = np.where(apply, sigma, 0)
        return params

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one uint8 HWC image with fresh draws from ``rng`` (for use outside the loaders)."""
        return apply_params(image, self.draw(rng, 1)[0])


class AugmentStream:
    """One parameter row per tile, drawn ``256`` at a time from ``rng``.

    Drawing in fixed blocks (not per batch) keeps the rows independent of the batch size and of which loader
    consumes them, so the torch and TF loaders agree for the same seed.
    """

    def __init__(self, augmenter: Augmenter, rng: np.random.Generator):
        self.augmenter = augmenter
        self.rng = rng
        self._block = np.empty((0, len(PARAM_COLUMNS)), np.float32)
        self._used = 0

    def next_params(self) -> np.ndarray:
        if self._used == len(self._block):
            self._block = self.augmenter.draw(self.rng, _STREAM_BLOCK)
            self._used = 0
        row = self._block[self._used]
        self._used += 1
        return row

    def apply(self, image: np.ndarray) -> np.ndarray:
        return apply_params(image, self.next_params())


def _jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    x = image.astype(np.float32)
    if brightness != 1:
        x = np.clip(x * np.float32(brightness), 0, 255)
    if contrast != 1:
        mean = np.float32((x @ GRAY).mean(dtype=np.float32))
        x = np.clip((x - mean) * np.float32(contrast) + mean, 0, 255)
    if saturation != 1:
        gray = (x @ GRAY)[..., None]
        x = np.clip((x - gray) * np.float32(saturation) + gray, 0, 255)
    return np.rint(x).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    # Pillow's encoder, because it produces the same file as TensorFlow's EncodeJpegVariableQuality (the TF
    # loader's op): simplejpeg's encoder differs by up to 15 grey levels at the same quality. Decoding with
    # simplejpeg (accurate IDCT) matches tf.io.decode_jpeg(dct_method='INTEGER_ACCURATE') exactly.
    # Imported here: only the 'j' augmentation needs Pillow (io.images imports it), and a loader without it,
    # or the framework-free `import slidetiles.loaders`, should not pay for it.
    from PIL import Image

    from slidetiles.io.images import decode_image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=int(quality))
    return decode_image(buffer.getvalue())


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian kernel of radius ``ceil(2 * sigma)`` (float32)."""
    radius = max(1, int(math.ceil(2 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2 * sigma * sigma))
    return (kernel / kernel.sum()).astype(np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    h, w = image.shape[:2]
    if h <= radius or w <= radius:
        return image  # reflect padding needs more pixels than the radius; a tile this small is not blurred
    x = image.astype(np.float32)
    padded = np.pad(x, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    x = sum(kernel[k] * padded[k : k + h] for k in range(len(kernel)))
    padded = np.pad(x, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    x = sum(kernel[k] * padded[:, k : k + w] for k in range(len(kernel)))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def apply_params(image: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Apply one parameter row to a uint8 HWC image; returns a new array or a view (never modifies ``image``)."""
    out = image
    if params[FLIP_X]:
        out = out[:, ::-1]
    if params[FLIP_Y]:
        out = out[::-1]
    k = int(params[ROT90])
    if k:
        if out.shape[0] != out.shape[1]:
            k = 2 if k % 2 else 0
        if k:
            out = np.rot90(out, k)
    if params[BRIGHTNESS] != 1 or params[CONTRAST] != 1 or params[SATURATION] != 1:
        out = _jitter(out, float(params[BRIGHTNESS]), float(params[CONTRAST]), float(params[SATURATION]))
    if params[JPEG_QUALITY]:
        out = _jpeg(out, int(params[JPEG_QUALITY]))
    if params[BLUR_SIGMA]:
        out = _blur(out, float(params[BLUR_SIGMA]))
    return out


def standardize(images: np.ndarray, method="image", out: np.ndarray | None = None) -> np.ndarray:
    """uint8 image(s), HWC or NHWC, to float32.

    - ``'image'`` (or True): per image, subtract the mean and divide by ``max(std, 1/sqrt(pixels*channels))``,
      exactly as ``tf.image.per_image_standardization`` (Slideflow's TensorFlow loaders): mean 0, std 1.
    - ``'scale'``: ``x / 127.5 - 1``, to [-1, 1] (what Slideflow's torch loaders call standardising).

    Example:
        >>> x = standardize(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
        >>> x.dtype, abs(float(x.mean())) < 1e-6, round(float(x.std()), 4)
        (dtype('float32'), True, 1.0)
    """
    method = standardize_method(method)
    if method is None:
        raise ValueError("standardize(): method must be 'image', 'scale' or True")
    batched = images.ndim == 4
    x = images if batched else images[None]
    result = out if out is not None else np.empty(x.shape, np.float32)
    target = result if batched else result[None]
    np.copyto(target, x, casting="unsafe")
    if method == "scale":
        target *= np.float32(1 / 127.5)
        target -= np.float32(1)
        return result
    flat = target.reshape(len(target), -1)
    n = flat.shape[1]
    mean = flat.mean(axis=1, dtype=np.float32, keepdims=True)
    flat -= mean
    std = np.sqrt(np.einsum("ij,ij->i", flat, flat, dtype=np.float32) / np.float32(n))[:, None]
    flat /= np.maximum(std, np.float32(1 / math.sqrt(n)))
    return result
