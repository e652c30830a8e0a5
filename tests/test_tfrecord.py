"""slidetiles.TFRecord: attributes, random access, constant-time lookup by location."""

import os
import pickle

import pytest

import slidetiles
from slidetiles.errors import CorruptRecordError
from slidetiles.io import tfrecord2idx

from helpers import write_tiles


def test_attributes(tile_tfrecord):
    path, tiles, locs = tile_tfrecord
    tfr = slidetiles.TFRecord(path)
    assert os.path.exists(tfrecord2idx.index_path(path))  # created on first use
    assert tfr.fields == ["image_raw", "slide", "loc_x", "loc_y"]
    assert tfr.img_format == "jpeg"
    assert tfr.length == len(tfr) == len(tiles)
    assert tfr.locations == locs


def test_getitem_and_iteration(tile_tfrecord):
    path, tiles, locs = tile_tfrecord
    tfr = slidetiles.TFRecord(path)
    assert tfr[0] == {"image_raw": tiles[0], "slide": "slide1", "loc_x": locs[0][0], "loc_y": locs[0][1]}
    assert tfr[-1]["image_raw"] == tiles[-1]
    assert [r["image_raw"] for r in tfr] == tiles
    with pytest.raises(IndexError):
        tfr[len(tiles)]


def test_get_record_by_xy(tile_tfrecord):
    path, tiles, locs = tile_tfrecord
    tfr = slidetiles.TFRecord(path)
    for i in (0, 5, len(tiles) - 1):
        assert tfr.get_record_by_xy(*locs[i]) == ("slide1", tiles[i])
    with pytest.raises(KeyError, match=r"no tile at location \(1, 2\)"):
        tfr.get_record_by_xy(1, 2)


def test_no_locations(tmp_path, jpeg_tiles):
    path = str(tmp_path / "n.tfrecords")
    write_tiles(path, jpeg_tiles[:2], locations=False)
    tfr = slidetiles.TFRecord(path)
    assert tfr.locations is None and tfr.fields == ["image_raw", "slide"]
    with pytest.raises(KeyError, match="no tile locations"):
        tfr.get_record_by_xy(0, 0)


def test_create_index_false_writes_nothing(tile_tfrecord):
    path, tiles, _ = tile_tfrecord
    tfr = slidetiles.TFRecord(path, create_index=False)
    assert len(tfr) == len(tiles)
    assert tfrecord2idx.find_index(path) is None


def test_random_access_checks_crc(tile_tfrecord):
    path, tiles, _ = tile_tfrecord
    tfr = slidetiles.TFRecord(path)
    offset = int(tfr.index.arr_0[3, 0])
    tfr.close()
    stat = os.stat(path)
    data = bytearray(open(path, "rb").read())
    data[offset + 40] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(data)
    # Silent bit rot: same size and modification time, so the index still looks current.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    tfr = slidetiles.TFRecord(path)
    assert tfr[2]["image_raw"] == tiles[2]
    with pytest.raises(CorruptRecordError) as info:
        tfr[3]
    assert info.value.record == 3 and info.value.offset == offset


def test_pickles_for_worker_processes(tile_tfrecord):
    path, tiles, _ = tile_tfrecord
    tfr = slidetiles.TFRecord(path)
    tfr[0]
    clone = pickle.loads(pickle.dumps(tfr))
    assert clone[1]["image_raw"] == tiles[1]
