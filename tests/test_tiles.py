"""Tile folders -> TFRecords: coordinates from names, formats, bad input."""

import io
import os

import numpy as np
import pytest
from PIL import Image

import slidetiles
from slidetiles.errors import TileImageError
from slidetiles.io import decode_image, iter_records, tfrecord2idx, write_tfrecords_multi, write_tfrecords_single


def make_slide(folder, tiles, names):
    os.makedirs(folder, exist_ok=True)
    for tile, name in zip(tiles, names):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(tile)


def test_single_parses_coordinates_and_writes_index(tmp_path, jpeg_tiles):
    names = ["A-768-256.jpg", "A-1068-256.JPG", "A-768-556.jpeg"]
    make_slide(tmp_path / "in", jpeg_tiles[:3], names)
    path = write_tfrecords_single(tmp_path / "in", tmp_path / "out", "A", "A")
    assert path == str(tmp_path / "out" / "A.tfrecords")
    records = list(iter_records(path))
    # Sorted by file name: A-1068-256.JPG, A-768-256.jpg, A-768-556.jpeg
    assert [(r["loc_x"], r["loc_y"]) for r in records] == [(1068, 256), (768, 256), (768, 556)]
    assert [r["image_raw"] for r in records] == [jpeg_tiles[1], jpeg_tiles[0], jpeg_tiles[2]]
    assert {r["slide"] for r in records} == {"A"}
    assert os.path.exists(tfrecord2idx.index_path(path))
    assert slidetiles.TFRecord(path).get_record_by_xy(768, 556) == ("A", jpeg_tiles[2])


def test_custom_coordinate_pattern(tmp_path, jpeg_tiles):
    make_slide(tmp_path / "in", jpeg_tiles[:2], ["tile_x10_y20.jpg", "tile_x30_y40.jpg"])
    path = write_tfrecords_single(
        tmp_path / "in", tmp_path / "out", "s", "s", coord_pattern=r"x(?P<x>\d+)_y(?P<y>\d+)"
    )
    assert slidetiles.TFRecord(path).locations == [(10, 20), (30, 40)]


def test_names_without_coordinates_store_no_locations(tmp_path, jpeg_tiles):
    make_slide(tmp_path / "in", jpeg_tiles[:2], ["a.jpg", "b.jpg"])
    path = write_tfrecords_single(tmp_path / "in", tmp_path / "out", "s", "s")
    assert slidetiles.TFRecord(path).locations is None


def test_mixed_names_are_an_error(tmp_path, jpeg_tiles):
    make_slide(tmp_path / "in", jpeg_tiles[:2], ["s-1-2.jpg", "odd.jpg"])
    with pytest.raises(TileImageError, match="odd.jpg"):
        write_tfrecords_single(tmp_path / "in", tmp_path / "out", "s", "s")
    assert not os.path.exists(tmp_path / "out" / "s.tfrecords")


def test_png_stored_as_is_and_tiff_reencoded_losslessly(tmp_path, jpeg_tiles):
    pixels = decode_image(jpeg_tiles[0])
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    png = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="TIFF")
    make_slide(tmp_path / "in", [png, buffer.getvalue()], ["s-0-0.png", "s-1-1.TIFF"])
    path = write_tfrecords_single(tmp_path / "in", tmp_path / "out", "s", "s")
    records = list(iter_records(path))
    assert records[0]["image_raw"] == png
    assert records[1]["image_raw"].startswith(b"\x89PNG")
    assert np.array_equal(decode_image(records[1]["image_raw"]), pixels)


def test_unreadable_image_is_named(tmp_path, jpeg_tiles):
    make_slide(tmp_path / "in", [jpeg_tiles[0], jpeg_tiles[1][:-200]], ["s-0-0.jpg", "s-1-1.jpg"])
    with pytest.raises(TileImageError, match="s-1-1.jpg"):
        write_tfrecords_single(tmp_path / "in", tmp_path / "out", "s", "s")
    assert not os.path.exists(tmp_path / "out" / "s.tfrecords")
    assert [f for f in os.listdir(tmp_path / "out") if f.startswith(".")] == []


def test_empty_slide_folder_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not a tile")
    with pytest.raises(TileImageError, match="no tile images"):
        write_tfrecords_single(tmp_path / "in", tmp_path / "out", "s", "s")


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_tfrecords_single(tmp_path / "nope", tmp_path / "out", "s", "s")


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "", " padded"])
def test_escaping_names_are_refused(tmp_path, jpeg_tiles, name):
    make_slide(tmp_path / "in", jpeg_tiles[:1], ["s-0-0.jpg"])
    with pytest.raises(ValueError, match="escape the output folder"):
        write_tfrecords_single(tmp_path / "in", tmp_path / "out", name or "x", name)


def test_duplicate_locations_are_refused(tmp_path, jpeg_tiles):
    make_slide(tmp_path / "in", jpeg_tiles[:2], ["s-5-5.jpg", "s-5-5.png"])
    with pytest.raises(TileImageError, match="same tile location"):
        write_tfrecords_single(tmp_path / "in", tmp_path / "out", "s", "s", check_images=False)


def test_multi_one_tfrecord_per_subfolder(tmp_path, jpeg_tiles):
    make_slide(tmp_path / "in" / "s1", jpeg_tiles[:2], ["s1-0-0.jpg", "s1-0-1.jpg"])
    make_slide(tmp_path / "in" / "s2", jpeg_tiles[2:5], ["s2-0-0.jpg", "s2-0-1.jpg", "s2-0-2.jpg"])
    (tmp_path / "in" / ".hidden").mkdir()
    written = write_tfrecords_multi(tmp_path / "in", tmp_path / "out")
    assert sorted(written) == ["s1", "s2"]
    assert [len(slidetiles.TFRecord(written[s])) for s in ("s1", "s2")] == [2, 3]
    assert slidetiles.TFRecord(written["s2"])[0]["slide"] == "s2"
