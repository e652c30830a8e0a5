"""Worker processes decoding batches into shared memory (slidetiles.loaders.batch_workers), without any framework."""

import os
import signal
import sys
import time
from collections import Counter

import numpy as np
import pytest

from helpers import loc_x, write_corpus, write_tiles
from slidetiles.errors import CorruptRecordError, TFRecordError, TileImageError
from slidetiles.io.images import decode_image
from slidetiles.loaders import LoaderError, TileSource
from slidetiles.loaders.batch_workers import BatchSpec, BatchWorkers
from slidetiles.loaders.options import LoaderOptions

SIZES = [9, 2, 14]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    paths, per_file = write_corpus(tmp_path_factory.mktemp("batch_workers"), SIZES, seed=5, px=24, prefix="w")
    return TileSource.from_paths(paths), per_file


def spec_for(sources, **kwargs):
    return BatchSpec(sources, (24, 24, 3), LoaderOptions(**{"batch_size": 4, "seed": 1, "infinite": False, **kwargs}))


def check_batch(corpus, images, index, locations, files=None):
    """Each tile's pixels are its record's (``files``: the corpus file of each source, default the same)."""
    for image, source, (x, _) in zip(images, index, locations):
        k = source if files is None else files[source]
        assert np.array_equal(image, decode_image(corpus[1][k][(x - 50) // 100]))


def test_a_pass_reads_each_tile_once_with_its_pixels(corpus):
    workers = BatchWorkers(spec_for(corpus[0]), num_workers=2)
    try:
        seen = []
        for images, index, locations in workers.batches(epoch=0):
            assert images.dtype == np.uint8 and images.shape[1:] == (24, 24, 3) and len(images) <= 4
            check_batch(corpus, images, index, locations)
            seen += [(int(i), int(x)) for i, (x, _) in zip(index, locations)]
        assert Counter(seen) == Counter((k, loc_x(i)) for k, n in enumerate(SIZES) for i in range(n))
    finally:
        workers.close()


def test_unordered_pass_gives_the_same_batches(corpus):
    workers = BatchWorkers(spec_for(corpus[0]), num_workers=2)
    try:
        ordered = [(b[1].tolist(), b[2].tolist()) for b in workers.batches(epoch=2)]
        unordered = [(b[1].tolist(), b[2].tolist()) for b in workers.batches(epoch=2, ordered=False)]
        assert sorted(unordered) == sorted(ordered) and len(ordered) == 7  # shards of 12 and 13 tiles
    finally:
        workers.close()


def test_corrupt_record_raises_the_tfrecord_error_naming_the_file(tmp_path, corpus):
    import shutil

    from slidetiles.io import tfrecord2idx

    source = corpus[0][2]
    path = str(tmp_path / "w2.tfrecords")
    shutil.copy2(source.path, path)
    shutil.copy2(tfrecord2idx.index_path(source.path), tfrecord2idx.index_path(path))
    offset = int(tfrecord2idx.read_index(path).arr_0[6, 0])
    stat = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset + 40)
        byte = f.read(1)
        f.seek(offset + 40)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the index stays current: only the CRC can tell
    bad = TileSource(path, source.slide, source.label, source.n_records)
    workers = BatchWorkers(spec_for([corpus[0][0], bad], batch_size=2), num_workers=2)
    try:
        delivered = 0
        with pytest.raises(CorruptRecordError) as info:
            for images, index, locations in workers.batches(epoch=0):
                check_batch(corpus, images, index, locations, files=[0, 2])
                delivered += len(images)
        assert isinstance(info.value, TFRecordError) and info.value.path == path and info.value.offset == offset
        assert delivered < SIZES[0] + SIZES[2]
        # on_error="skip": the same files, one record fewer, counted.
        skipping = BatchWorkers(spec_for([corpus[0][0], bad], on_error="skip"), num_workers=2)
        try:
            counted = []
            n = sum(len(b[0]) for b in skipping.batches(epoch=0, count=counted.append))
            assert n == SIZES[0] + SIZES[2] - 1 and skipping.skipped == 1 and counted == [1]
        finally:
            skipping.close()
        # The workers that raised serve the next pass (which meets the same record).
        pids = workers.pids()
        with pytest.raises(CorruptRecordError, match="record 6 at byte offset"):
            for _ in workers.batches(epoch=1):
                pass
        assert workers.pids() == pids
    finally:
        workers.close()


def test_a_tile_of_another_size_is_named_or_skipped(tmp_path, corpus):
    from slidetiles.demo import iter_tiles

    odd = str(tmp_path / "odd.tfrecords")
    write_tiles(odd, corpus[1][1] + list(iter_tiles(seed=3, n=1, px=32)), slide="odd")  # record 2: 32 px, not 24
    sources = [corpus[0][0], *TileSource.from_paths([odd])]
    workers = BatchWorkers(spec_for(sources, augment="xy"), num_workers=1)
    try:
        with pytest.raises(TileImageError, match="record 2 at byte offset .*: the tile is 32x32 px but this loader's "
                                                 "batches hold 24x24 px tiles; a loader needs tiles of one size"):
            for _ in workers.batches(epoch=0):
                pass
    finally:
        workers.close()
    skipping = BatchWorkers(spec_for(sources, on_error="skip"), num_workers=1)
    try:
        assert sum(len(b[0]) for b in skipping.batches(epoch=0)) == SIZES[0] + 2 and skipping.skipped == 1
    finally:
        skipping.close()


def test_buffers_are_recycled_and_held_batches_kept(corpus):
    workers = BatchWorkers(spec_for(corpus[0], batch_size=2), num_workers=1, ring_size=3)
    try:
        held = list(workers.batches(epoch=0))  # 13 batches through 3 buffers: the rest come as one-off arrays
        assert len(held) == 13
        for batch in held:
            check_batch(corpus, *batch)
        del held, batch
        assert workers.in_use() == 0
        for batch in workers.batches(epoch=1):
            assert workers.in_use() >= 1  # the batch in hand holds its buffer
        del batch
        assert workers.in_use() == 0
    finally:
        workers.close()


def test_cut_short_then_concurrent_passes(corpus):
    workers = BatchWorkers(spec_for(corpus[0], infinite=True), num_workers=2)
    try:
        first = workers.batches(epoch=0)
        next(first)
        pids = workers.pids()
        # A second pass while the first is open gets temporary workers of its own.
        second = [b[1].tolist() for _, b in zip(range(5), workers.batches(epoch=0))]
        assert len(second) == 5 and workers.pids() == pids
        first.close()  # cut short: the persistent workers stop the pass and serve the next one
        again = [b[1].tolist() for _, b in zip(range(5), workers.batches(epoch=0))]
        assert again == second and workers.pids() == pids  # same epoch, same seed: same batches
    finally:
        workers.close()
    assert workers.pids() == []


def test_a_dead_worker_is_reported_and_replaced(corpus):
    workers = BatchWorkers(spec_for(corpus[0], infinite=True), num_workers=2)
    try:
        batches = workers.batches(epoch=0)
        next(batches)
        os.kill(workers.pids()[1], signal.SIGKILL)
        with pytest.raises(LoaderError, match="worker 1 .* died with exit code -9"):
            for _ in range(100):
                next(batches)
        old = workers.pids()
        assert len([b for _, b in zip(range(20), workers.batches(epoch=1))]) == 20
        assert workers.pids() != old  # new workers for the next pass
        # Killed between passes: replaced before the next one starts.
        os.kill(workers.pids()[0], signal.SIGKILL)
        while len(workers.pids()) == 2:
            time.sleep(0.01)
        assert len([b for _, b in zip(range(20), workers.batches(epoch=1))]) == 20
    finally:
        workers.close()


@pytest.mark.skipif(sys.platform != "linux", reason="spawned workers: checked where the default is fork")
def test_spawned_workers_give_the_same_batches(corpus):
    def run(context):
        workers = BatchWorkers(spec_for(corpus[0], augment=False), num_workers=2, multiprocessing_context=context)
        try:
            return [(b[0].copy(), b[1].tolist()) for b in workers.batches(epoch=3)]
        finally:
            workers.close()

    forked, spawned = run(None), run("spawn")
    assert len(forked) == len(spawned)
    for (a, ia), (b, ib) in zip(forked, spawned):
        assert ia == ib and np.array_equal(a, b)


def test_refusals(corpus):
    with pytest.raises(LoaderError, match="num_workers"):
        BatchWorkers(spec_for(corpus[0]), num_workers=0)
    with pytest.raises(LoaderError):
        BatchWorkers(spec_for(corpus[0], rank=1, world_size=1), num_workers=1)
