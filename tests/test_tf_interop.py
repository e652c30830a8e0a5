"""Interop with real TensorFlow, both ways, with TensorFlow checking the CRCs."""

import numpy as np

from slidetiles.io import iter_records, tfrecord2idx
from slidetiles.tfrecord import TFRecord

from helpers import write_tiles


def test_tensorflow_writes_we_read(tmp_path, tf, jpeg_tiles):
    path = str(tmp_path / "from_tf.tfrecords")
    expected = []
    with tf.io.TFRecordWriter(path) as writer:
        for i, tile in enumerate(jpeg_tiles):
            feature = {
                "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tile])),
                "slide": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"tf_slide"])),
                "loc_x": tf.train.Feature(int64_list=tf.train.Int64List(value=[i * 299])),
                "loc_y": tf.train.Feature(int64_list=tf.train.Int64List(value=[-i])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
            expected.append({"image_raw": tile, "slide": "tf_slide", "loc_x": i * 299, "loc_y": -i})
    assert list(iter_records(path)) == expected
    tfr = TFRecord(path)
    assert len(tfr) == len(jpeg_tiles) and tfr.img_format == "jpeg"
    assert tfr.locations == [(i * 299, -i) for i in range(len(jpeg_tiles))]
    assert tfr.get_record_by_xy(299 * 3, -3) == ("tf_slide", jpeg_tiles[3])
    # The index we build from TensorFlow's file matches the frame layout TensorFlow wrote.
    arr_0 = tfrecord2idx.load_index(path)
    assert arr_0[-1].sum() == (tmp_path / "from_tf.tfrecords").stat().st_size


def test_we_write_tensorflow_reads(tmp_path, tf, jpeg_tiles):
    path = str(tmp_path / "ours.tfrecords")
    locs = write_tiles(path, jpeg_tiles, slide="ours")
    spec = {
        "image_raw": tf.io.FixedLenFeature([], tf.string),
        "slide": tf.io.FixedLenFeature([], tf.string),
        "loc_x": tf.io.FixedLenFeature([], tf.int64),
        "loc_y": tf.io.FixedLenFeature([], tf.int64),
    }
    # TFRecordDataset checks both CRCs of every record and raises DataLossError on a mismatch.
    got = [tf.io.parse_single_example(raw, spec) for raw in tf.data.TFRecordDataset(path)]
    assert [g["image_raw"].numpy() for g in got] == jpeg_tiles
    assert {g["slide"].numpy() for g in got} == {b"ours"}
    assert [(int(g["loc_x"]), int(g["loc_y"])) for g in got] == locs
    decoded = tf.io.decode_jpeg(got[0]["image_raw"]).numpy()
    from slidetiles.io import decode_image

    assert np.array_equal(decoded.shape, decode_image(jpeg_tiles[0]).shape)


def test_tensorflow_rejects_what_we_reject(tmp_path, tf, jpeg_tiles):
    """Sanity check of the shared CRC definition: a damaged payload fails in TensorFlow as in slidetiles."""
    import pytest

    from slidetiles.errors import CorruptRecordError

    path = tmp_path / "bad.tfrecords"
    write_tiles(path, jpeg_tiles[:2])
    data = bytearray(path.read_bytes())
    data[100] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))
    with pytest.raises(CorruptRecordError):
        list(iter_records(path))
