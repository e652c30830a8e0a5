"""slidetiles.io.images on real encoded images (Pillow-made and demo tiles); no mocks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from slidetiles.demo import tile_jpeg
from slidetiles.errors import TileImageError
from slidetiles.io.images import check_image, decode_image, decode_image_into, detect_image_format, to_lossless_png


def encode(array_or_image, fmt, **kwargs) -> bytes:
    im = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb():
    # A smooth gradient plus texture: JPEG keeps it close, so round-trip errors stay small.
    y, x = np.mgrid[0:48, 0:64]
    return np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def tile():
    return tile_jpeg(np.random.default_rng(7), px=128)


def pil_decode(data) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_detect_image_format(rgb):
    assert detect_image_format(encode(rgb, "JPEG")) == "jpeg"
    assert detect_image_format(encode(rgb, "PNG")) == "png"
    assert detect_image_format(encode(rgb, "BMP")) is None
    assert detect_image_format(b"") is None
    assert detect_image_format(memoryview(encode(rgb, "PNG"))) == "png"


def test_jpeg_round_trip(rgb, tile):
    data = encode(rgb, "JPEG", quality=95)
    out = decode_image(data)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 3
    # Same pixels as Pillow (accurate IDCT), on a real tile too.
    assert np.array_equal(out, pil_decode(data))
    assert np.array_equal(decode_image(tile), pil_decode(tile))


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)])
def test_buffer_types(tile, wrap):
    assert np.array_equal(decode_image(wrap(tile)), pil_decode(tile))


def test_png_round_trip_is_exact(rgb):
    out = decode_image(encode(rgb, "PNG"))
    assert out.dtype == np.uint8 and np.array_equal(out, rgb)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_grayscale_becomes_three_channels(rgb, fmt):
    gray = rgb[..., 1].copy()
    out = decode_image(encode(gray, fmt, **({"quality": 100} if fmt == "JPEG" else {})))
    assert out.shape == gray.shape + (3,)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    if fmt == "PNG":
        assert np.array_equal(out[..., 0], gray)


def test_rgba_png_drops_alpha(rgb):
    alpha = np.full(rgb.shape[:2], 17, np.uint8)
    out = decode_image(encode(np.dstack([rgb, alpha]), "PNG"))
    assert np.array_equal(out, rgb)  # colour kept as stored, not composited


def test_palette_and_16_bit_png(rgb):
    pal = Image.fromarray(rgb).quantize(16)
    assert np.array_equal(decode_image(encode(pal, "PNG")), np.asarray(pal.convert("RGB")))
    wide = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64)
    out = decode_image(encode(wide, "PNG"))
    assert np.array_equal(out[..., 2], (wide >> 8).astype(np.uint8))


def test_cmyk_jpeg(rgb):
    data = encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    out = decode_image(data)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - pil_decode(data)).max() <= 3


def test_torch_format(tile):
    torch = pytest.importorskip("torch")
    out = decode_image(tile, format="torch")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and tuple(out.shape) == (128, 128, 3)
    assert np.array_equal(out.numpy(), pil_decode(tile))
    assert decode_image(tile, format="torch", device="cpu").device.type == "cpu"


@pytest.mark.parametrize("fmt", ["tf", "tensorflow"])
def test_tf_format(tile, fmt):
    tf = pytest.importorskip("tensorflow")
    out = decode_image(tile, format=fmt)
    assert isinstance(out, tf.Tensor) and out.dtype == tf.uint8 and tuple(out.shape) == (128, 128, 3)
    assert np.array_equal(out.numpy(), pil_decode(tile))


def test_slideflow_keywords(tile):
    """Slideflow's decode_image(image, img_type=..., transform=...) calls run unchanged."""
    expected = pil_decode(tile)
    assert np.array_equal(decode_image(tile, img_type="jpeg"), expected)
    assert np.array_equal(decode_image(tile, img_type="png"), expected)  # a hint only: the bytes decide
    flipped = decode_image(tile, transform=lambda image: image[::-1])
    assert np.array_equal(flipped, expected[::-1])
    with pytest.raises(ValueError, match="img_type"):
        decode_image(tile, img_type="gif")


def test_bad_arguments(tile):
    with pytest.raises(ValueError, match="format"):
        decode_image(tile, format="jax")
    with pytest.raises(ValueError, match="device"):
        decode_image(tile, device="cuda")
    with pytest.raises(TypeError):
        decode_image(np.zeros(10, np.float32))


def corruptions(tile: bytes, png: bytes):
    mid = len(tile) // 2
    return {
        "jpeg cut in half": tile[:mid],
        "jpeg missing last bytes": tile[:-2],
        "jpeg header only": tile[:200],
        "jpeg garbage in scan": tile[:mid] + b"\xff\x7f" * 100 + tile[mid + 200 :],
        "png cut in half": png[: len(png) // 2],
        "not an image": b"<html>404</html>",
        "empty": b"",
    }


def test_corrupt_images_raise(tile, rgb):
    for what, data in corruptions(tile, encode(rgb, "PNG")).items():
        with pytest.raises(TileImageError, match="slide_9-1-2.jpg") as info:
            decode_image(data, name="slide_9-1-2.jpg")
        assert info.value.path == "slide_9-1-2.jpg", what
        with pytest.raises(TileImageError):
            check_image(data, "x", full=True)


def test_check_image_accepts_good_images(tile, rgb):
    assert check_image(tile, "a.jpg") == "jpeg"
    assert check_image(encode(rgb, "PNG"), "a.png") == "png"
    assert check_image(encode(rgb, "JPEG", progressive=True), "p.jpg") == "jpeg"
    assert check_image(tile + b"\x00" * 10, "padded.jpg") == "jpeg"  # data after the end marker is tolerated
    assert check_image(memoryview(tile), "m.jpg", full=True) == "jpeg"


def test_check_image_catches_truncation(tile, rgb):
    png = encode(rgb, "PNG")
    for data in (tile[:-2], tile[: len(tile) // 2], tile[:200], png[:-4], png[: len(png) // 2], b"GIF89a", b""):
        with pytest.raises(TileImageError, match="t.img"):
            check_image(data, "t.img")


def test_check_image_is_not_fooled_by_a_thumbnail(tile):
    # An APP1 segment holding a complete small JPEG (as EXIF thumbnails do) carries its own end marker.
    thumb = tile_jpeg(np.random.default_rng(1), px=16)
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    with_thumb = tile[:2] + app1 + tile[2:]
    assert check_image(with_thumb, "t.jpg") == "jpeg"
    with pytest.raises(TileImageError, match="end-of-image"):
        check_image(with_thumb[: len(with_thumb) - 500], "t.jpg")


def test_check_image_cheap_vs_full(tile):
    # Overwritten scan data keeps the framing intact: only a full decode sees it.
    mid = len(tile) // 2
    damaged = tile[:mid] + b"\xff\x7f" * 100 + tile[mid + 200 :]
    assert check_image(damaged, "d.jpg") == "jpeg"
    with pytest.raises(TileImageError):
        check_image(damaged, "d.jpg", full=True)


def test_to_lossless_png_tiff_is_pixel_identical(tmp_path, rgb):
    path = tmp_path / "tile.tif"
    Image.fromarray(rgb).save(path, compression="tiff_lzw")
    png = to_lossless_png(path)
    assert detect_image_format(png) == "png"
    assert np.array_equal(decode_image(png), rgb)


def test_to_lossless_png_keeps_modes(tmp_path, rgb):
    rgba = np.dstack([rgb, rgb[..., 0]])
    wide = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50)
    for name, array in (("rgba.tif", rgba), ("gray16.tif", wide), ("gray.bmp", rgb[..., 2].copy())):
        Image.fromarray(array).save(tmp_path / name)
        with Image.open(io.BytesIO(to_lossless_png(tmp_path / name))) as im:
            assert np.array_equal(np.asarray(im), array), name
    Image.fromarray(rgb).save(tmp_path / "lossless.webp", lossless=True)
    assert np.array_equal(decode_image(to_lossless_png(tmp_path / "lossless.webp")), rgb)


def test_to_lossless_png_converts_cmyk(tmp_path, rgb):
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    with Image.open(io.BytesIO(to_lossless_png(tmp_path / "cmyk.tif"))) as im:
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), np.asarray(cmyk.convert("RGB")))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's warning on the garbage TIFF
def test_to_lossless_png_errors(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(TileImageError, match="bad.tif"):
        to_lossless_png(bad)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(TileImageError, match="notes.txt"):
        to_lossless_png(text)
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(TileImageError, match="float"):
        to_lossless_png(tmp_path / "float.tif")
    with pytest.raises(FileNotFoundError):
        to_lossless_png(tmp_path / "missing.tif")


# -- decode_image_into: one slot of a batch ---------------------------------------------------------------------------
def test_decode_into_a_slot_gives_decode_images_pixels(tile, rgb):
    out = np.zeros((128, 128, 3), np.uint8)
    assert decode_image_into(tile, out, name="t") == (128, 128, 3)
    assert np.array_equal(out, decode_image(tile))
    png = encode(rgb, "PNG")  # not a JPEG: through decode_image
    slot = np.zeros((48, 64, 3), np.uint8)
    assert decode_image_into(png, slot) == (48, 64, 3) and np.array_equal(slot, rgb)


@pytest.mark.parametrize("px", [96, 160])
def test_decode_into_a_slot_of_another_size_returns_the_images_shape(tile, px):
    out = np.full((px, px, 3), 7, np.uint8)
    assert decode_image_into(tile, out) == (128, 128, 3)  # the caller decides what another size means


def test_decode_into_names_a_damaged_image(tile):
    with pytest.raises(TileImageError, match="^slide.tfrecords, record 3: cannot decode"):
        decode_image_into(tile[: len(tile) // 2], np.zeros((128, 128, 3), np.uint8), name="slide.tfrecords, record 3")
