"""tfrecord_loader / multi_tfrecord_loader: record shape, description, sharding, weighting, determinism, modes."""

import itertools
from collections import Counter

import numpy as np
import pytest

from slidetiles.errors import CorruptRecordError
from slidetiles.io import tfrecord2idx
from slidetiles.tfrecord import multi_tfrecord_loader, shard_bounds, tfrecord_loader
from slidetiles.tfrecord.loaders import FeatureTypeError, MissingFeatureError
from slidetiles.io.writer import TFRecordWriter

from helpers import write_named_records


@pytest.fixture
def files(tmp_path):
    return [write_named_records(tmp_path / f"s{k}.tfrecords", f"s{k}", n) for k, n in enumerate([7, 13, 1, 30])]


def keys(records):
    return [bytes(r["image_raw"]) for r in records]


@pytest.mark.parametrize("n_shards", [1, 2, 3, 4, 5])
def test_shards_are_disjoint_and_complete(files, n_shards):
    for path in files:
        index = tfrecord2idx.load_index(path)
        everything = keys(tfrecord_loader(path, index))
        shards = [keys(tfrecord_loader(path, index, shard=(i, n_shards))) for i in range(n_shards)]
        union = list(itertools.chain.from_iterable(shards))
        assert union == everything  # contiguous shards, in order, nothing twice
        assert len(set(union)) == len(union)


def test_shard_bounds_validation():
    assert shard_bounds(10, (2, 3)) == (6, 10)
    for bad in [(3, 3), (-1, 2), (0, 0), "x"]:
        with pytest.raises(ValueError):
            shard_bounds(10, bad)


def test_loader_record_format(files):
    # Slideflow's shape: bytes features as uint8 arrays, int features as int64 arrays of their values.
    record = next(iter(tfrecord_loader(files[1], None)))
    assert list(record) == ["image_raw", "slide", "loc_x", "loc_y"]
    assert record["image_raw"].dtype == np.uint8 and record["slide"].dtype == np.uint8
    assert bytes(record["image_raw"]) == b"s1:0"
    assert bytes(record["slide"]).decode("utf-8") == "s1"
    assert record["loc_x"].dtype == np.int64 and record["loc_x"].shape == (1,)
    assert record["loc_x"][0] == 0 and record["loc_y"][0] == 0
    third = list(tfrecord_loader(files[1], None))[2]
    assert third["loc_x"].tolist() == [2]


def test_float_and_multi_value_features(tmp_path):
    from slidetiles.io.example import build_example

    path = tmp_path / "f.tfrecords"
    with TFRecordWriter(path) as writer:
        writer.write(build_example({"image_raw": [b"ab", b"cd"], "score": [0.5, 1.5], "ids": [3, 4, 5]}))
    record = next(iter(tfrecord_loader(path)))
    # Slideflow keeps only the first value of a bytes list; numeric lists stay whole, floats as float32.
    assert bytes(record["image_raw"]) == b"ab"
    assert record["score"].dtype == np.float32 and record["score"].tolist() == [0.5, 1.5]
    assert record["ids"].tolist() == [3, 4, 5]


def test_description_selects_and_checks_features(files):
    record = next(iter(tfrecord_loader(files[1], None, ["image_raw", "loc_x"])))
    assert list(record) == ["image_raw", "loc_x"]
    record = next(iter(tfrecord_loader(files[1], None, description={"slide": "byte", "loc_y": "int"})))
    assert bytes(record["slide"]) == b"s1" and record["loc_y"][0] == 0
    for everything in (None, [], {}):
        assert list(next(iter(tfrecord_loader(files[1], None, everything)))) == ["image_raw", "slide", "loc_x", "loc_y"]
    with pytest.raises(MissingFeatureError, match=r"s1.tfrecords, record 0 .*no feature 'label'") as info:
        next(iter(tfrecord_loader(files[1], None, ["image_raw", "label"])))
    assert isinstance(info.value, KeyError)  # what Slideflow raises, so old except clauses still work
    with pytest.raises(FeatureTypeError, match="'loc_x' is stored as 'int', description asks for 'float'") as info:
        next(iter(tfrecord_loader(files[1], None, {"loc_x": "float"})))
    assert isinstance(info.value, TypeError)
    with pytest.raises(ValueError, match="'bytes'"):
        tfrecord_loader(files[1], None, {"slide": "bytes"})
    multi = multi_tfrecord_loader(files, None, None, ["slide"], infinite=False, seed=0)
    assert {bytes(r["slide"]) for r in multi} == {b"s0", b"s1", b"s2", b"s3"}


def test_paths_as_bytes(files):
    # Slideflow's multi_tfrecord_loader needs bytes paths (it decodes them); ours takes bytes, str and PathLike.
    as_bytes = [p.encode() for p in files]
    records = keys(multi_tfrecord_loader(as_bytes, [tfrecord2idx.load_index(p) for p in files], infinite=False, seed=0))
    assert len(records) == 7 + 13 + 1 + 30
    weights = {p: 1.0 for p in as_bytes}
    assert len(keys(multi_tfrecord_loader(as_bytes, weights=weights, infinite=False, seed=0))) == 51
    assert keys(tfrecord_loader(files[0].encode())) == [f"s0:{i}".encode() for i in range(7)]


def test_loaders_are_reiterable(files):
    # As Slideflow's: each iter() is a new pass from the start, so `next(iter(loader))` then `for r in loader`
    # reads the first record twice.
    loader = tfrecord_loader(files[0], None)
    first = bytes(next(iter(loader))["image_raw"])
    assert keys(loader) == keys(loader) and keys(loader)[0] == first
    multi = multi_tfrecord_loader(files, infinite=False, seed=5)
    assert keys(multi) == keys(multi)
    loader.close()


def test_unsupported_slideflow_options_are_clear_errors(files):
    with pytest.raises(ValueError, match="SequenceExample"):
        tfrecord_loader(files[0], None, sequence_description=["x"])
    with pytest.raises(ValueError, match="decompress"):
        multi_tfrecord_loader(files, compression_type="gzip")


def test_one_record_text_index_shape(files):
    # np.loadtxt of a one-line text index is a flat pair; Slideflow accepts it, so do we.
    arr_0 = tfrecord2idx.load_index(files[2])
    assert keys(tfrecord_loader(files[2], arr_0.reshape(-1))) == [b"s2:0"]


def test_clip_then_shard(files):
    got = keys(tfrecord_loader(files[3], None, shard=(1, 2), clip=10))
    assert got == [f"s3:{i}".encode() for i in range(5, 10)]


def test_finite_multi_reads_every_record_once(files):
    records = keys(multi_tfrecord_loader(files, None, infinite=False, seed=3))
    expected = set(itertools.chain.from_iterable(keys(tfrecord_loader(p, None)) for p in files))
    assert len(records) == len(expected) and set(records) == expected


@pytest.mark.parametrize("n_shards", [2, 3])
def test_finite_multi_shards_cover_everything_once(files, n_shards):
    union = []
    for i in range(n_shards):
        union += keys(multi_tfrecord_loader(files, None, infinite=False, shard=(i, n_shards), seed=i))
    assert len(union) == len(set(union)) == 7 + 13 + 1 + 30


def test_same_seed_same_sequence(files):
    a = keys(itertools.islice(multi_tfrecord_loader(files, seed=42), 200))
    b = keys(itertools.islice(multi_tfrecord_loader(files, seed=42), 200))
    c = keys(itertools.islice(multi_tfrecord_loader(files, seed=43), 200))
    assert a == b and a != c


def test_weights_drive_file_choice(files):
    weights = [0.1, 0.6, 0.0, 0.3]
    sample = itertools.islice(multi_tfrecord_loader(files, weights=weights, seed=0), 20_000)
    counts = Counter(bytes(r["slide"]) for r in sample)
    assert counts[b"s2"] == 0
    for slide, w in zip([b"s0", b"s1", b"s3"], [0.1, 0.6, 0.3]):
        # 20,000 draws: a binomial standard deviation is below 0.004, so 0.015 is > 3.5 sigma.
        assert abs(counts[slide] / 20_000 - w) < 0.015


def test_weights_validation(files):
    with pytest.raises(ValueError, match="one value per TFRecord"):
        multi_tfrecord_loader(files, weights=[1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        multi_tfrecord_loader(files, weights=[1, -1, 1, 1])
    with pytest.raises(ValueError, match="sum to 0"):
        multi_tfrecord_loader(files, weights=[0, 0, 0, 0])


def test_infinite_restarts_exhausted_files(files):
    sample = list(itertools.islice(multi_tfrecord_loader([files[2]], seed=0), 5))
    assert keys(sample) == [b"s2:0"] * 5


def test_infinite_with_empty_shards_ends(files):
    # File s2 has one record: shard (1, 2) of it is empty, so an infinite loader over it alone yields nothing.
    assert list(multi_tfrecord_loader([files[2]], shard=(0, 2), seed=0)) == []


def test_corrupt_record_raises_or_is_skipped(files):
    path = files[1]
    arr_0 = tfrecord2idx.load_index(path)
    data = bytearray(open(path, "rb").read())
    data[int(arr_0[4, 0]) + 14] ^= 0x01
    with open(path, "r+b") as f:
        f.write(data)
    with pytest.raises(CorruptRecordError) as info:
        list(tfrecord_loader(path, arr_0))
    assert info.value.record == 4 and info.value.offset == int(arr_0[4, 0])
    skipped = []
    got = keys(tfrecord_loader(path, arr_0, skipped=skipped))
    assert len(got) == 12 and [e.record for e in skipped] == [4]


def test_interleaving_many_files_keeps_memory_bounded(tmp_path):
    paths = [write_named_records(tmp_path / f"m{k}.tfrecords", f"m{k}", 3) for k in range(300)]
    got = keys(multi_tfrecord_loader(paths, infinite=False, seed=1))
    assert len(got) == 900
