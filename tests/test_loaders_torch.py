"""Training loaders, PyTorch side: real TFRecords of real JPEG tiles, real DataLoader worker processes.

Tiles are identified by (slide, loc_x): every file is one slide and the helper writes a distinct loc_x per record.
"""

import os
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import LOADER_LABELS, LOADER_SIZES, all_ids, loc_x, write_corpus, write_tiles
from slidetiles.errors import CorruptRecordError, TileImageError
from slidetiles.io.images import decode_image
from slidetiles.loaders import (
    Augmenter,
    LoaderError,
    MissingLabelError,
    ShardPlan,
    SourceChangedError,
    TileIterableDataset,
    TileSource,
    encode_labels,
    make_torch_loader,
    shard_sizes,
    sources_from_table,
    standardize,
)
from slidetiles.loaders.augment import AugmentStream, apply_params, parse_augment

SIZES, LABELS = LOADER_SIZES, LOADER_LABELS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Five TFRecords of 32-px JPEG tiles (7, 13, 1, 30, 4 records) with indexes. Returns (paths, tiles)."""
    return write_corpus(tmp_path_factory.mktemp("loaders"), SIZES, seed=11, px=32)


@pytest.fixture
def sources(corpus):
    paths, _ = corpus
    return TileSource.from_paths(paths, labels=LABELS)


def ids_of(batches):
    out = []
    for batch in batches:
        slides, xs = batch[2], batch[3]
        out += list(zip(slides, xs.tolist()))
    return out


def run_epoch(loader):
    return [tuple(batch) for batch in loader]


# -- exactly once, across ranks and workers ------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 1, 2])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_finite_epoch_reads_every_tile_exactly_once(sources, world_size, num_workers):
    sources = [s if s.slide != "s3" else TileSource(s.path, s.slide, s.label, s.n_records, clip=17) for s in sources]
    seen = []
    for rank in range(world_size):
        loader = make_torch_loader(
            sources, batch_size=4, num_workers=num_workers, rank=rank, world_size=world_size, infinite=False,
            labels=True, seed=3, incl_slidenames=True, incl_loc=True,
        )
        batches = run_epoch(loader)
        assert len(batches) == len(loader)  # __len__ counts each worker's partial batch
        seen += ids_of(batches)
    counts = Counter(seen)
    assert set(counts) == all_ids(sources)
    assert max(counts.values()) == 1
    assert len(seen) == sum(s.n_tiles for s in sources) == sum(SIZES) - 13


def test_shard_ids_do_not_overlap_across_ranks():
    # Slideflow's torch loader gives worker w of rank r the shard r + w, so ranks overlap; ours is r * W + w.
    ids = [ShardPlan(rank, 3, 2).shard_ids() for rank in range(3)]
    assert ids == [[0, 1], [2, 3], [4, 5]]
    assert ShardPlan(1, 2, 0).shard_ids() == [1]
    with pytest.raises(LoaderError):
        ShardPlan(2, 2, 1)


def test_shard_sizes_cover_everything(sources):
    for n in range(1, 8):
        sizes = shard_sizes(sources, n)
        assert sizes.sum() == sum(SIZES) and sizes.max() - sizes.min() <= len(SIZES)


def test_plain_dataloader_batching_single_tiles(sources):
    dataset = TileIterableDataset(sources, labels=True, infinite=False, seed=0, incl_slidenames=True, incl_loc=True)
    loader = DataLoader(dataset, batch_size=5, num_workers=2)
    batches = list(loader)
    images = batches[0][0]
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8
    seen = [(s, int(x)) for b in batches for s, x in zip(b[2], b[3])]
    assert sorted(seen) == sorted(all_ids(sources))


# -- what comes out -------------------------------------------------------------------------------------------


def test_pixels_and_labels_are_those_of_the_records(corpus, sources):
    _, per_file = corpus
    loader = make_torch_loader(sources, batch_size=6, num_workers=1, labels=True, infinite=False, seed=1,
                               incl_slidenames=True, incl_loc=True)
    label_map = loader.label_map
    assert label_map == ["normal", "stroma", "tumor"]
    n = 0
    for images, labels, slides, xs, ys in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
        for image, label, slide, x in zip(images, labels, slides, xs.tolist()):
            k, i = int(slide[1:]), (x - 50) // 100
            expected = decode_image(per_file[k][i])
            assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(expected))
            assert label_map[int(label)] == LABELS[slide]
            n += 1
    assert n == sum(SIZES)


def test_labels_off_gives_zero_and_optional_fields(sources):
    batch = next(iter(make_torch_loader(sources, batch_size=4, num_workers=0, seed=0)))
    assert len(batch) == 2 and batch[1].tolist() == [0, 0, 0, 0]


def test_label_encodings(sources):
    assert encode_labels(sources).label_map == ["normal", "stroma", "tumor"]
    floats = encode_labels(sources, {s.slide: float(i) / 2 for i, s in enumerate(sources)})
    assert floats.values.dtype == np.float32 and floats.label_map is None
    vectors = encode_labels(sources, {s.slide: [i, 1.5] for i, s in enumerate(sources)})
    assert vectors.shape == (2,)
    batch = next(iter(make_torch_loader(sources, batch_size=3, labels={s.slide: [i, 0.5] for i, s in enumerate(sources)}, seed=0)))
    assert batch[1].shape == (3, 2) and batch[1].dtype == torch.float32
    with pytest.raises(LoaderError, match="mix"):
        encode_labels(sources, {s.slide: ("a" if i else 1) for i, s in enumerate(sources)})


def test_missing_label_is_an_error_before_the_first_batch(sources):
    partial = dict(LABELS)
    del partial["s2"], partial["s4"]
    with pytest.raises(MissingLabelError, match="s2, s4") as info:
        make_torch_loader(sources, batch_size=4, num_workers=2, labels=partial)
    assert info.value.slides == ["s2", "s4"]
    unlabelled = [TileSource(s.path, s.slide, None if s.slide == "s1" else s.label, s.n_records) for s in sources]
    with pytest.raises(MissingLabelError, match="s1"):
        TileIterableDataset(unlabelled, labels=True)
    with pytest.raises(MissingLabelError, match="s0"):
        encode_labels(sources, {**LABELS, "s0": float("nan")})


def test_clip_is_respected(sources):
    clipped = [TileSource(s.path, s.slide, s.label, s.n_records, clip=3) for s in sources]
    seen = ids_of(run_epoch(make_torch_loader(clipped, batch_size=4, num_workers=2, infinite=False, seed=0,
                                              incl_slidenames=True, incl_loc=True)))
    assert sorted(seen) == sorted((s.slide, loc_x(i)) for s in sources for i in range(min(3, s.n_records)))


def test_sources_from_table_and_changed_tfrecords(corpus, sources):
    rows = [{"path": s.path, "total": s.n_records, "clipped": min(s.n_records, 5), "weight": 1.0} for s in sources]
    table = sources_from_table(rows, labels=LABELS)
    assert [s.clip for s in table] == [5, 5, None, 5, None] and table[0].label == "tumor"
    # A manifest that counted 8 records where the file now has 7: refused up front...
    stale = sources_from_table([{**rows[0], "total": 8, "clipped": 8}] + rows[1:])
    with pytest.raises(SourceChangedError, match="s0.tfrecords: 7 records now, 8 when counted"):
        make_torch_loader(stale, batch_size=4)
    # ...and by the worker when the check is skipped.
    error = epoch_error(make_torch_loader(stale, batch_size=4, infinite=False, check=False))
    assert isinstance(error, SourceChangedError) and "changed since" in str(error)
    gone = sources_from_table([{"path": str(corpus[0][0]) + ".gone", "total": 3}])
    with pytest.raises(SourceChangedError, match="no longer exist"):
        make_torch_loader(gone, batch_size=4)


# -- seeds and epochs -----------------------------------------------------------------------------------------


def first_batches(loader, n=3):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def same_batches(a, b):
    return len(a) == len(b) and all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and list(x[2]) == list(y[2]) for x, y in zip(a, b)
    )


@pytest.mark.parametrize("infinite", [False, True])
def test_same_seed_same_first_batches(sources, infinite):
    def make(seed):
        return make_torch_loader(sources, batch_size=4, num_workers=2, labels=True, infinite=infinite, seed=seed,
                                 augment="xyrdjb", incl_slidenames=True)

    a, b, c = first_batches(make(7)), first_batches(make(7)), first_batches(make(8))
    assert same_batches(a, b)
    assert not same_batches(a, c)


def test_epochs_reshuffle_deterministically_with_persistent_workers(sources):
    loader = make_torch_loader(sources, batch_size=4, num_workers=2, infinite=False, seed=5,
                               incl_slidenames=True, incl_loc=True)
    assert loader.persistent_workers
    epoch0 = ids_of(run_epoch(loader))
    again = ids_of(run_epoch(loader))  # no set_epoch: same order, like DistributedSampler
    loader.set_epoch(1)
    epoch1 = ids_of(run_epoch(loader))
    loader.set_epoch(0)
    back = ids_of(run_epoch(loader))
    assert epoch0 == again == back
    assert epoch1 != epoch0 and sorted(epoch1) == sorted(epoch0)


# -- weighted sampling -----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_infinite_frequencies_follow_weights(sources):
    weights = [1.0, 2.0, 0.5, 4.0, 0.0]
    weighted = [TileSource(s.path, s.slide, s.label, s.n_records, weight=w) for s, w in zip(sources, weights)]
    # 3 workers: more shards than s2 has records, which must not skew its share.
    loader = make_torch_loader(weighted, batch_size=100, num_workers=3, infinite=True, seed=9, incl_slidenames=True)
    counts = Counter()
    for i, batch in enumerate(loader):
        counts.update(batch[2])
        if i == 59:
            break
    n = sum(counts.values())
    assert n == 6000 and counts["s4"] == 0
    p = np.asarray(weights) / sum(weights)
    for k, slide in enumerate(["s0", "s1", "s2", "s3"]):
        tolerance = 4.5 * np.sqrt(p[k] * (1 - p[k]) / n)
        assert abs(counts[slide] / n - p[k]) < tolerance, (slide, counts[slide] / n, p[k])


def test_infinite_loader_has_no_length_and_needs_weights(sources):
    with pytest.raises(TypeError):
        len(make_torch_loader(sources, batch_size=4))
    zero = [TileSource(s.path, s.slide, n_records=s.n_records, weight=0) for s in sources]
    with pytest.raises(LoaderError, match="weight"):
        make_torch_loader(zero, batch_size=4)


# -- damaged records -----------------------------------------------------------------------------------------------


def corrupt_copy(tmp_path, source, record, where="payload"):
    """Copy ``source``'s file and index, then damage one record as bit rot would (same size, same mtime).

    ``where``: ``'payload'`` (fails its CRC) or ``'length'`` (the length field no longer matches the index).
    """
    import shutil

    from slidetiles.io import tfrecord2idx

    path = str(tmp_path / os.path.basename(source.path))
    shutil.copy2(source.path, path)
    shutil.copy2(tfrecord2idx.index_path(source.path), tfrecord2idx.index_path(path))
    offset = int(tfrecord2idx.read_index(path).arr_0[record, 0])
    position = offset + (12 + 40 if where == "payload" else 1)
    stat = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x10]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return TileSource(path, source.slide, source.label, source.n_records), offset


def epoch_error(loader):
    """The exception an epoch raises, without its traceback.

    A traceback kept alive (as pytest.raises keeps it) holds the DataLoader iterator in a reference cycle; when
    the garbage collector breaks such a cycle it closes the worker queues before the iterator's __del__ sends
    the workers their stop signal, and torch then waits 5 s per worker.
    """
    try:
        run_epoch(loader)
    except Exception as error:
        error.__traceback__ = None
        return error
    raise AssertionError("the epoch raised nothing")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_record_fails_naming_file_and_offset(tmp_path, sources, num_workers):
    bad, offset = corrupt_copy(tmp_path, sources[3], record=11)
    mixed = sources[:3] + [bad] + sources[4:]
    loader = make_torch_loader(mixed, batch_size=4, num_workers=num_workers, infinite=False, seed=0)
    error = epoch_error(loader)
    # The same class and attributes whether the record was read in this process or in a worker.
    assert type(error) is CorruptRecordError
    assert error.path == bad.path and error.offset == offset and error.record == 11
    text = str(error)
    assert bad.path in text and f"record 11 at byte offset {offset}" in text and "CRC" in text
    if num_workers:
        assert any("DataLoader worker process" in note for note in error.__notes__)
    # The failed epoch stopped its workers; the next one starts fresh ones and meets the same record.
    again = epoch_error(loader)
    assert type(again) is CorruptRecordError and str(again) == text


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_record_skipped_and_counted(tmp_path, sources, num_workers):
    bad, _ = corrupt_copy(tmp_path, sources[3], record=11)
    mixed = sources[:3] + [bad] + sources[4:]
    loader = make_torch_loader(mixed, batch_size=4, num_workers=num_workers, infinite=False, seed=0,
                               on_error="skip", incl_slidenames=True, incl_loc=True)
    seen = ids_of(run_epoch(loader))
    assert sorted(seen) == sorted(all_ids(sources) - {("s3", loc_x(11))})
    assert loader.skipped == 1
    run_epoch(loader)
    assert loader.skipped == 2  # cumulative over epochs


def test_damaged_length_skips_only_that_record(tmp_path, sources):
    bad, offset = corrupt_copy(tmp_path, sources[3], record=20, where="length")
    loader = make_torch_loader([bad], batch_size=4, infinite=False, seed=0, incl_slidenames=True, incl_loc=True)
    error = epoch_error(loader)
    assert isinstance(error, ValueError) and f"record 20 at byte offset {offset}" in str(error)
    loader = make_torch_loader([bad], batch_size=4, infinite=False, seed=0, on_error="skip",
                               incl_slidenames=True, incl_loc=True)
    seen = ids_of(run_epoch(loader))
    assert sorted(seen) == sorted(("s3", loc_x(i)) for i in range(30) if i != 20) and loader.skipped == 1


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("augment", [None, "xy"])
def test_a_tile_of_another_size_is_named_or_skipped(tmp_path, sources, corpus, num_workers, augment):
    """A 48-px tile among 32-px ones: an error naming its file and record, or (on_error='skip') left out, counted."""
    from slidetiles.demo import iter_tiles

    odd = str(tmp_path / "odd.tfrecords")
    write_tiles(odd, corpus[1][0][:2] + list(iter_tiles(seed=3, n=1, px=48)) + corpus[1][0][2:4], slide="odd")
    mixed = [sources[0], *TileSource.from_paths([odd], labels={"odd": "tumor"})]
    options = dict(batch_size=4, num_workers=num_workers, infinite=False, seed=0, incl_slidenames=True,
                   incl_loc=True, augment=augment)
    error = epoch_error(make_torch_loader(mixed, **options))
    assert isinstance(error, TileImageError), error
    assert f"{odd}: record 2 at byte offset" in str(error) and "the tile is 48x48 px" in str(error)
    assert "a loader needs tiles of one size" in str(error)
    loader = make_torch_loader(mixed, on_error="skip", **options)
    seen = ids_of(run_epoch(loader))
    assert sorted(seen) == sorted([("s0", loc_x(i)) for i in range(7)] + [("odd", loc_x(i)) for i in (0, 1, 3, 4)])
    assert loader.skipped == 1


def test_truncated_tfrecord_is_refused_as_changed(tmp_path, sources):
    import shutil

    from slidetiles.io import tfrecord2idx

    path = str(tmp_path / "s3.tfrecords")
    shutil.copy2(sources[3].path, path)
    shutil.copy2(tfrecord2idx.index_path(sources[3].path), tfrecord2idx.index_path(path))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    cut = [TileSource(path, "s3", n_records=30)]
    with pytest.raises(SourceChangedError, match="changed"):
        make_torch_loader(cut, batch_size=4)


# -- augmentation and standardisation ------------------------------------------------------------------------------


def test_augment_letters():
    assert parse_augment(True) == "xyrjb" and parse_augment("bjx") == "xjb" and parse_augment(None) == ""
    with pytest.raises(ValueError, match="stain"):
        parse_augment("xn")
    with pytest.raises(ValueError, match="unknown letter 'q'"):
        parse_augment("xq")


@pytest.mark.parametrize("letters", ["x", "y", "r", "d", "j", "b", "xyrdjb"])
def test_augmentations_are_seeded_and_keep_shape(corpus, letters):
    image = decode_image(corpus[1][3][5])
    aug = Augmenter(letters, color_jitter=0.3)
    rows = aug.draw(np.random.default_rng(4), 64)
    assert np.array_equal(rows, aug.draw(np.random.default_rng(4), 64))
    outs = [apply_params(image, row) for row in rows]
    again = [apply_params(image, row) for row in rows]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    assert all(np.array_equal(a, b) for a, b in zip(outs, again))
    assert any(not np.array_equal(o, image) for o in outs)  # 64 draws: something happened
    tall = np.ascontiguousarray(image[:, :20])
    assert all(apply_params(tall, row).shape == tall.shape for row in rows)


def test_flip_and_rotation_are_exact(corpus):
    image = decode_image(corpus[1][0][0])
    stream = AugmentStream(Augmenter("xyr"), np.random.default_rng(0))
    for _ in range(16):
        row = stream.next_params()
        expected = image
        if row[0]:
            expected = expected[:, ::-1]
        if row[1]:
            expected = expected[::-1]
        expected = np.rot90(expected, int(row[2]))
        assert np.array_equal(apply_params(image, row), expected)


def test_augmented_loader_is_deterministic_and_changes_pixels(sources):
    def first(augment, seed=1):
        loader = make_torch_loader(sources, batch_size=8, augment=augment, seed=seed, infinite=False)
        return next(iter(loader))[0]

    plain, a, b = first(False), first("xyrdjb"), first("xyrdjb")
    assert torch.equal(a, b) and a.shape == plain.shape and not torch.equal(a, plain)


def test_standardize(sources):
    images = next(iter(make_torch_loader(sources, batch_size=8, standardize=True, seed=0, num_workers=1)))[0]
    assert images.dtype == torch.float32 and images.shape == (8, 3, 32, 32)
    flat = images.reshape(8, -1)
    assert flat.mean(1).abs().max() < 1e-4 and (flat.std(1, unbiased=False) - 1).abs().max() < 1e-3
    scaled = next(iter(make_torch_loader(sources, batch_size=8, standardize="scale", seed=0)))[0]
    raw = next(iter(make_torch_loader(sources, batch_size=8, seed=0)))[0]
    assert torch.allclose(scaled, raw.float() / 127.5 - 1, atol=1e-6)
    assert scaled.min() >= -1 and scaled.max() <= 1
    single = standardize(np.full((4, 4, 3), 7, np.uint8))
    assert np.all(single == 0)  # constant image: no division by zero


# -- start methods and pickling ---------------------------------------------------------------------------------------


def test_spawned_workers_give_the_same_batches(sources):
    kwargs = dict(batch_size=4, num_workers=1, labels=True, infinite=False, seed=2, augment="xyr", incl_slidenames=True)
    forked = run_epoch(make_torch_loader(sources, **kwargs))
    spawned = run_epoch(make_torch_loader(sources, multiprocessing_context="spawn", **kwargs))
    assert same_batches(forked, spawned)


def test_channels_last_layout_and_contiguous_option(sources):
    images = next(iter(make_torch_loader(sources, batch_size=4, seed=0)))[0]
    assert images.is_contiguous(memory_format=torch.channels_last)
    dense = next(iter(make_torch_loader(sources, batch_size=4, seed=0, channels_last=False)))[0]
    assert dense.is_contiguous() and torch.equal(dense, images)


def test_drop_last(sources):
    loader = make_torch_loader(sources, batch_size=4, num_workers=2, infinite=False, seed=0, drop_last=True)
    batches = run_epoch(loader)
    assert all(len(b[0]) == 4 for b in batches) and len(batches) == len(loader)


# -- recycled batch buffers ------------------------------------------------------------------------------------------


def check_batch(batch, per_file):
    images, _, slides, xs = batch[0], batch[1], batch[2], batch[3]
    for image, slide, x in zip(images, slides, xs.tolist()):
        expected = decode_image(per_file[int(slide[1:])][(x - 50) // 100])
        assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(expected)), (slide, x)


def test_held_batches_are_never_overwritten(corpus, sources):
    # A consumer that keeps every batch: the workers must not reuse any of their buffers.
    loader = make_torch_loader(sources * 4, batch_size=3, num_workers=2, infinite=False, seed=0,
                               incl_slidenames=True, incl_loc=True)
    held = list(loader)
    assert len(held) > 2 * loader.dataset.ring_size
    for batch in held:
        check_batch(batch, corpus[1])


def test_released_buffers_are_recycled_and_tickets_freed(corpus, sources):
    import gc

    loader = make_torch_loader(sources * 4, batch_size=3, num_workers=2, infinite=False, seed=0,
                               incl_slidenames=True, incl_loc=True)
    seen = set()
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            tickets = loader.dataset._ring.tickets  # the persistent workers' ring, made when they started
            check_batch(batch, corpus[1])  # a recycled buffer holds this batch's tiles, not an older one's
            seen.update((slot, token) for slot, token in enumerate(tickets.tolist()) if token)
    slots = {slot for slot, _ in seen}
    # Every handout has its own token; far more handouts than buffers means buffers were reused.
    assert len(slots) <= 2 * loader.dataset.ring_size and len(seen) > 3 * len(slots)
    # Cut an epoch short: the batches the DataLoader drains when the next epoch starts are claimed too.
    for i, batch in enumerate(loader):
        if i == 3:
            break
    del batch
    run_epoch(loader)
    gc.collect()
    assert loader.dataset._ring.in_use() == 0  # every buffer handed out came back


def test_each_buffer_crosses_once(corpus, sources):
    # The point of the ring: a batch crosses as a reference to a buffer the main process already maps.
    loader = make_torch_loader(sources * 4, batch_size=3, num_workers=2, infinite=False, seed=0,
                               incl_slidenames=True, incl_loc=True)
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            check_batch(batch, corpus[1])
    batches, mapped = loader.dataset._ring.received()
    assert batches == 3 * len(loader) and mapped <= 2 * loader.dataset.ring_size


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("standardize", [False, True])
def test_layouts_and_dtypes_through_the_ring(sources, channels_last, standardize):
    kwargs = dict(batch_size=5, infinite=False, seed=3, standardize=standardize, channels_last=channels_last)
    in_process = run_epoch(make_torch_loader(sources, **kwargs))
    # One worker reads the same shard as no worker: same batches, in the same order.
    workers = run_epoch(make_torch_loader(sources, num_workers=1, persistent_workers=False, **kwargs))
    assert len(workers) == len(in_process)
    for a, b in zip(in_process, workers):
        assert a[0].dtype == b[0].dtype == (torch.float32 if standardize else torch.uint8)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert b[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_concurrent_passes_have_rings_of_their_own(corpus, sources):
    # Two live iterators of one loader (non-persistent workers): two sets of workers with the same worker ids.
    loader = make_torch_loader(sources * 2, batch_size=3, num_workers=2, infinite=False, seed=0, persistent_workers=False,
                               incl_slidenames=True, incl_loc=True)
    first, second = iter(loader), iter(loader)
    a, b = [next(first)], [next(second)]
    a += list(first)
    b += list(second)
    for batch in a + b:
        check_batch(batch, corpus[1])
    assert ids_of(a) == ids_of(b) and len(a) == len(loader)


def test_interrupted_passes_leak_no_tickets(sources):
    loader = make_torch_loader(sources * 4, batch_size=2, num_workers=2, infinite=False, seed=0, persistent_workers=False)
    for _ in range(4):
        for i, batch in enumerate(loader):
            if i == 2:
                break  # batches still queued are dropped with the workers
    del batch
    for batch in loader:  # a whole pass, dropping each batch: the ring is never short of free buffers
        pass
    del batch
    batches, buffers = loader.dataset._ring.received()
    assert batches == len(loader) and buffers <= 2 * loader.dataset.ring_size
    assert loader.dataset._ring.in_use() == 0


def test_close_stops_persistent_workers_and_the_next_pass_starts_afresh(corpus, sources):
    loader = make_torch_loader(sources, batch_size=4, num_workers=2, infinite=False, seed=0, incl_slidenames=True,
                               incl_loc=True)
    first = [b for b in loader]
    workers, ring = list(loader._iterator._workers), loader.dataset._ring
    loader.close()
    assert not any(w.is_alive() for w in workers) and not ring._receiver.buffers
    second = [b for b in loader]
    assert loader.dataset._ring is not ring and ids_of(first) == ids_of(second)
    for batch in first + second:
        check_batch(batch, corpus[1])  # batches of the closed pass keep their memory


def test_non_persistent_workers_leave_no_buffers_mapped(sources):
    loader = make_torch_loader(sources, batch_size=4, num_workers=2, infinite=False, seed=0, persistent_workers=False)
    for _ in range(2):
        kept = run_epoch(loader)
    assert not loader.dataset._ring._receiver.buffers  # unmapped once the epoch's workers were gone
    assert sum(len(b[0]) for b in kept) == sum(SIZES)  # batches still held keep their memory
    del kept


def test_c_tile_parser_and_protobuf_give_the_same_batches(sources, monkeypatch):
    kwargs = dict(batch_size=4, infinite=False, seed=1, labels=True, incl_slidenames=True, incl_loc=True)
    fast = run_epoch(make_torch_loader(sources, **kwargs))
    monkeypatch.setenv("SLIDETILES_PURE_PYTHON", "1")
    assert same_batches(fast, run_epoch(make_torch_loader(sources, **kwargs)))


def test_plain_dataloader_over_batches_has_no_ticket(sources):
    dataset = TileIterableDataset(sources, batch_size=4, infinite=False, seed=0, labels=True)
    batches = list(DataLoader(dataset, batch_size=None, num_workers=2))
    assert all(len(b) == 2 for b in batches) and sum(len(b[0]) for b in batches) == sum(SIZES)
