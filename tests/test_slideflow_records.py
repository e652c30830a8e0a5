"""Round trips with Slideflow 3.0.2's own functions, record by record.

- TFRecords and indexes we write, read by Slideflow's ``TFRecord``, ``tfrecord_loader`` and
  ``multi_tfrecord_loader``: the same records as ours give, in the same types.
- TFRecords and indexes Slideflow's writers write, read by ours: the same records as Slideflow's readers give.
- Our ``example_pb2.Example`` and Slideflow's parse each other's payloads to the same message.
"""

from collections import Counter

import numpy as np
import pytest

import slidetiles
from slidetiles.io import create_text_index, tfrecord2idx
from slidetiles.tfrecord import TFRecord, multi_tfrecord_loader, tfrecord_loader

from helpers import write_tiles

SIZES = {"s0": 12, "s1": 5, "s2": 7}


def assert_same_record(ours: dict, theirs: dict, where: str):
    """Same features, dtypes, shapes and values (dict order aside: Slideflow's follows the protobuf map)."""
    assert sorted(ours) == sorted(theirs), where
    for name, value in theirs.items():
        assert isinstance(ours[name], np.ndarray) and isinstance(value, np.ndarray), (where, name)
        assert ours[name].dtype == value.dtype and ours[name].shape == value.shape, (where, name)
        assert np.array_equal(ours[name], value), (where, name)


def assert_same_records(ours, theirs, where: str):
    ours, theirs = list(ours), list(theirs)
    assert len(ours) == len(theirs), where
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_same_record(a, b, f"{where}, record {k}")


def as_key(record: dict) -> tuple:
    return tuple((name, record[name].tobytes()) for name in sorted(record))


@pytest.fixture
def our_files(tmp_path, jpeg_tiles):
    """Three TFRecords written and indexed by us (12, 5 and 7 JPEG tiles with distinct locations)."""
    paths = []
    for slide, n in SIZES.items():
        path = tmp_path / f"{slide}.tfrecords"
        write_tiles(path, jpeg_tiles[:n], slide=slide)
        tfrecord2idx.create_index(path)
        paths.append(str(path))
    return paths


def test_our_tfrecords_read_by_slideflow_tfrecord(slideflow, our_files):
    sf = slideflow
    for path in our_files:
        theirs, ours = sf.TFRecord(path), TFRecord(path)
        assert theirs.fields == ours.fields == ["image_raw", "slide", "loc_x", "loc_y"]
        assert theirs.img_format == ours.img_format == "jpeg"
        assert len(theirs) == len(ours) == ours.length
        assert theirs.locations == ours.locations and len(ours.locations) == len(ours)
        for i in range(len(ours)):
            assert theirs[i] == ours[i]  # {'image_raw': bytes, 'slide': str, 'loc_x': int, 'loc_y': int}
        x, y = ours.locations[-1]
        assert theirs.get_record_by_xy(x, y) == ours.get_record_by_xy(x, y)


def test_our_tfrecords_read_by_slideflow_loaders(slideflow, our_files):
    sf = slideflow
    for path in our_files:
        their_index = sf.util.tfrecord2idx.load_index(path)
        our_index = tfrecord2idx.load_index(path)
        assert np.array_equal(their_index, our_index)
        assert_same_records(tfrecord_loader(path, our_index), sf.tfrecord_loader(path, their_index), path)
        for description in (["image_raw", "loc_y"], {"slide": "byte", "loc_x": "int"}):
            assert_same_records(
                tfrecord_loader(path, our_index, description),
                sf.tfrecord_loader(path, their_index, description),
                f"{path} {description}",
            )
        # Shards: Slideflow cuts with np.array_split, we with i*n//k; the two agree when k divides n.
        n = len(our_index)
        for k in (k for k in (2, 3, 4) if n % k == 0):
            for i in range(k):
                assert_same_records(
                    tfrecord_loader(path, our_index, shard=(i, k)),
                    sf.tfrecord_loader(path, their_index, shard=(i, k)),
                    f"{path} shard {(i, k)}",
                )
        # Our text index, loaded as Slideflow loads a text `.index`, drives Slideflow's reader too.
        text = np.loadtxt(create_text_index(path), dtype=np.int64)
        assert_same_records(tfrecord_loader(path, text), sf.tfrecord_loader(path, text), f"{path} text index")

    # Slideflow's multi loader takes bytes paths; a finite pass reads every record once, as ours does.
    indices = [sf.util.tfrecord2idx.load_index(p) for p in our_files]
    theirs = sf.multi_tfrecord_loader([p.encode() for p in our_files], indices, None, infinite=False)
    ours = multi_tfrecord_loader([p.encode() for p in our_files], indices, None, infinite=False, seed=0)
    their_counts = Counter(as_key(r) for r in theirs)
    assert Counter(as_key(r) for r in ours) == their_counts and sum(their_counts.values()) == sum(SIZES.values())


def write_with_slideflow(sf, path, tiles, slide, locations):
    """A TFRecord by Slideflow's TensorFlow-backend writer and record serialiser, indexed by Slideflow."""
    writer = sf.io.TFRecordWriter(str(path))
    for tile, (x, y) in zip(tiles, locations):
        writer.write(sf.io.serialized_record(slide.encode("utf-8"), tile, x, y))
    writer.close()
    return sf.util.tfrecord2idx.create_index(str(path))


def test_slideflow_tfrecords_read_by_ours(slideflow, tmp_path, jpeg_tiles):
    sf = slideflow
    paths = []
    for k, n in enumerate((9, 4)):
        path = tmp_path / f"sf{k}.tfrecords"
        index_file = write_with_slideflow(sf, path, jpeg_tiles[:n], f"sf{k}", [(10 * i, 3 * i + k) for i in range(n)])
        assert index_file.endswith(".index.npz")
        paths.append(str(path))
    for path in paths:
        index = tfrecord2idx.load_index(path)  # Slideflow's index file, read (and checked) by us
        assert np.array_equal(index, sf.util.tfrecord2idx.load_index(path))
        assert_same_records(tfrecord_loader(path), sf.tfrecord_loader(path, index), path)
        assert_same_records(tfrecord_loader(path.encode(), index, ["loc_x"]), sf.tfrecord_loader(path, index, ["loc_x"]), path)
        theirs, ours = sf.TFRecord(path), TFRecord(path)
        assert ours.locations == theirs.locations and ours.fields == theirs.fields
        assert [ours[i] for i in range(len(ours))] == [theirs[i] for i in range(len(theirs))]
    # Our reads left Slideflow's index files as they were: no rewrite of someone else's index.
    assert sorted(p.name for p in tmp_path.iterdir() if "index" in p.name) == ["sf0.index.npz", "sf1.index.npz"]
    their_counts = Counter(
        as_key(r) for r in sf.multi_tfrecord_loader([p.encode() for p in paths], None, None, infinite=False)
    )
    assert Counter(as_key(r) for r in multi_tfrecord_loader(paths, infinite=False, seed=1)) == their_counts


def test_slideflow_folder_writer_read_by_ours(slideflow, tmp_path, jpeg_tiles):
    # Slideflow's write_tfrecords_single: tiles from a folder, in shuffled order, every location (0, 0).
    sf = slideflow
    folder = tmp_path / "tiles"
    folder.mkdir()
    for i, tile in enumerate(jpeg_tiles[:6]):
        (folder / f"t{i}.jpg").write_bytes(tile)
    sf.io.write_tfrecords_single(str(folder), str(tmp_path), "slideA.tfrecords", "slideA")
    path = str(tmp_path / "slideA.tfrecords")
    ours = list(tfrecord_loader(path))
    assert sorted(bytes(r["image_raw"]) for r in ours) == sorted(jpeg_tiles[:6])
    assert {bytes(r["slide"]) for r in ours} == {b"slideA"} and all(r["loc_x"].tolist() == [0] for r in ours)
    assert_same_records(ours, sf.tfrecord_loader(path, tfrecord2idx.load_index(path)), path)


def test_example_pb2_is_interchangeable(slideflow, our_files):
    theirs = slideflow.util.example_pb2.Example
    ours = slidetiles.util.example_pb2.Example
    payload = slidetiles.io.tile_example(b"\xff\xd8\xffjpeg", "s0", 768, 256)
    a, b = ours.FromString(payload), theirs.FromString(payload)
    for name in ("image_raw", "slide"):
        assert a.features.feature[name].bytes_list.value == b.features.feature[name].bytes_list.value
    assert a.features.feature["loc_x"].int64_list.value[0] == b.features.feature["loc_x"].int64_list.value[0] == 768
    assert ours.FromString(b.SerializeToString()) == a
    assert slidetiles.util.tfrecord2idx is slidetiles.io.tfrecord2idx
