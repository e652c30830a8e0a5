"""tfrecord_loader / multi_tfrecord_loader: sharding, weighting, determinism, finite and infinite modes."""

import itertools
from collections import Counter

import numpy as np
import pytest

from slidetiles.errors import CorruptRecordError
from slidetiles.io import tfrecord2idx
from slidetiles.tfrecord import multi_tfrecord_loader, shard_bounds, tfrecord_loader
from slidetiles.io.writer import TFRecordWriter


def make_file(path, slide, n):
    with TFRecordWriter(path) as writer:
        for i in range(n):
            writer.write_tile(f"{slide}:{i}".encode(), slide, i, 0)
    tfrecord2idx.create_index(path)
    return str(path)


@pytest.fixture
def files(tmp_path):
    return [make_file(tmp_path / f"s{k}.tfrecords", f"s{k}", n) for k, n in enumerate([7, 13, 1, 30])]


def keys(records):
    return [r["image_raw"] for r in records]


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
    record = next(iter(tfrecord_loader(files[0], None)))
    assert record == {"image_raw": b"s0:0", "slide": b"s0", "loc_x": 0, "loc_y": 0}
    assert bytes(record["slide"]).decode("utf-8") == "s0"


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
    counts = Counter(r["slide"] for r in sample)
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
    paths = [make_file(tmp_path / f"m{k}.tfrecords", f"m{k}", 3) for k in range(300)]
    got = keys(multi_tfrecord_loader(paths, infinite=False, seed=1))
    assert len(got) == 900
