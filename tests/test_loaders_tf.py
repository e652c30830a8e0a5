"""Training loaders, TensorFlow side: a real tf.data pipeline over real TFRecords of real JPEG tiles."""

from collections import Counter

import numpy as np
import pytest

from helpers import LOADER_LABELS, LOADER_SIZES, all_ids, loc_x, write_corpus
from slidetiles.io.images import decode_image
from slidetiles.loaders import (
    LoaderError,
    MissingLabelError,
    SourceChangedError,
    TileSource,
    shard_sizes,
    sources_from_table,
)

SIZES, LABELS = LOADER_SIZES, LOADER_LABELS

tf = pytest.importorskip("tensorflow")
from slidetiles.loaders import make_tf_dataset  # noqa: E402  (needs TensorFlow)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("tf_loaders"), SIZES, seed=12, px=32)


@pytest.fixture
def sources(corpus):
    return TileSource.from_paths(corpus[0], labels=LABELS)


def ids_of(dataset):
    out = []
    for batch in dataset:
        slides, xs = batch[2].numpy(), batch[3].numpy()
        out += [(s.decode(), int(x)) for s, x in zip(slides, xs)]
    return out


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_finite_epoch_reads_every_tile_exactly_once(sources, world_size):
    sources = [s if s.slide != "s3" else TileSource(s.path, s.slide, s.label, s.n_records, clip=17) for s in sources]
    seen = []
    for rank in range(world_size):
        ds = make_tf_dataset(sources, batch_size=4, rank=rank, world_size=world_size, infinite=False, labels=True,
                             seed=3, incl_slidenames=True, incl_loc=True)
        seen += ids_of(ds)
    counts = Counter(seen)
    assert set(counts) == all_ids(sources) and max(counts.values()) == 1


def test_pixels_labels_shapes(corpus, sources):
    ds = make_tf_dataset(sources, batch_size=6, labels=True, infinite=False, seed=1, incl_slidenames=True, incl_loc=True)
    images_spec = ds.element_spec[0]
    assert images_spec.shape.as_list() == [None, 32, 32, 3] and images_spec.dtype == tf.uint8
    assert ds.slidetiles_label_map == ["normal", "stroma", "tumor"]
    n = 0
    for images, labels, slides, xs, ys in ds:
        for image, label, slide, x in zip(images.numpy(), labels.numpy(), slides.numpy(), xs.numpy()):
            slide = slide.decode()
            k, i = int(slide[1:]), (int(x) - 50) // 100
            # tf.io.decode_jpeg with the accurate IDCT gives exactly simplejpeg's pixels.
            assert np.array_equal(image, decode_image(corpus[1][k][i]))
            assert ds.slidetiles_label_map[int(label)] == LABELS[slide]
            n += 1
    assert n == sum(SIZES)


def test_passes_reshuffle_and_seeds_repeat(sources):
    def make(seed):
        return make_tf_dataset(sources, batch_size=4, infinite=False, seed=seed, incl_slidenames=True, incl_loc=True)

    ds = make(5)
    first, second = ids_of(ds), ids_of(ds)
    assert first != second and sorted(first) == sorted(second)  # each pass is the next epoch
    assert ids_of(make(5)) == first and ids_of(make(6)) != first
    assert ds.slidetiles_stats.epochs_started == 2
    assert ids_of(make_tf_dataset(sources, batch_size=4, infinite=False, seed=5, epoch=1, incl_slidenames=True,
                                  incl_loc=True)) == second


def test_same_tiles_and_augmentations_as_the_torch_loader(sources):
    torch_loader = pytest.importorskip("slidetiles.loaders.torch_loader")
    kwargs = dict(batch_size=8, labels=True, infinite=True, seed=21, augment="xyrdjb", color_jitter=0.3,
                  incl_slidenames=True, incl_loc=True)
    ours = make_tf_dataset(sources, **kwargs)
    theirs = torch_loader.make_torch_loader(sources, num_workers=0, **kwargs)
    for (ti, tl, ts, tx, ty), (fi, fl, fs, fx, fy) in zip(theirs, ours.take(6)):
        assert np.array_equal(ti.permute(0, 2, 3, 1).numpy(), fi.numpy())
        assert np.array_equal(tl.numpy(), fl.numpy()) and list(ts) == [s.decode() for s in fs.numpy()]
        assert np.array_equal(tx.numpy(), fx.numpy())


def test_standardize(sources):
    images = next(iter(make_tf_dataset(sources, batch_size=8, standardize=True, seed=0)))[0].numpy()
    assert images.dtype == np.float32
    flat = images.reshape(8, -1)
    assert np.abs(flat.mean(1)).max() < 1e-4 and np.abs(flat.std(1) - 1).max() < 1e-3


def test_infinite_frequencies_follow_weights(sources):
    weights = [1.0, 2.0, 0.5, 4.0, 0.0]
    weighted = [TileSource(s.path, s.slide, s.label, s.n_records, weight=w) for s, w in zip(sources, weights)]
    ds = make_tf_dataset(weighted, batch_size=100, seed=9, world_size=3, rank=1, incl_slidenames=True)
    counts = Counter(s.decode() for batch in ds.take(40) for s in batch[2].numpy())
    n = sum(counts.values())
    assert n == 4000 and counts["s4"] == 0
    p = np.asarray(weights) / sum(weights)
    for k, slide in enumerate(["s0", "s1", "s2", "s3"]):
        assert abs(counts[slide] / n - p[k]) < 4.5 * np.sqrt(p[k] * (1 - p[k]) / n), slide


def corrupt_copy(tmp_path, source, record):
    import os
    import shutil

    from slidetiles.io import tfrecord2idx

    path = str(tmp_path / "s3.tfrecords")
    shutil.copy2(source.path, path)
    shutil.copy2(tfrecord2idx.index_path(source.path), tfrecord2idx.index_path(path))
    offset = int(tfrecord2idx.read_index(path).arr_0[record, 0])
    stat = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset + 52)
        byte = f.read(1)
        f.seek(offset + 52)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return TileSource(path, source.slide, source.label, source.n_records), offset


def test_corrupt_record_fails_naming_file_and_offset(tmp_path, sources):
    bad, offset = corrupt_copy(tmp_path, sources[3], record=4)
    ds = make_tf_dataset(sources[:3] + [bad], batch_size=4, infinite=False, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in ds:
            pass
    assert f"{bad.path}, record 4 at byte offset {offset}" in str(info.value) and "CRC" in str(info.value)


def test_corrupt_record_skipped_and_counted(tmp_path, sources):
    bad, _ = corrupt_copy(tmp_path, sources[3], record=4)
    mixed = sources[:3] + [bad] + sources[4:]
    ds = make_tf_dataset(mixed, batch_size=4, infinite=False, seed=0, on_error="skip", incl_slidenames=True,
                         incl_loc=True)
    seen = ids_of(ds)
    assert sorted(seen) == sorted(all_ids(sources) - {("s3", loc_x(4))})
    assert ds.slidetiles_stats.skipped == 1


def test_refusals_before_the_first_batch(sources):
    with pytest.raises(MissingLabelError, match="s3"):
        make_tf_dataset(sources, batch_size=4, labels={k: v for k, v in LABELS.items() if k != "s3"})
    stale = sources_from_table([{"path": sources[0].path, "total": 9}])
    with pytest.raises(SourceChangedError, match="9 when counted"):
        make_tf_dataset(stale, batch_size=4)
    with pytest.raises(LoaderError):
        make_tf_dataset(sources, batch_size=4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="stain"):
        make_tf_dataset(sources, batch_size=4, augment="n")


# -- num_workers > 0: worker processes decode whole batches into shared memory, tf.data takes them as they are ------


def expected_pixels(corpus, slide, x):
    return decode_image(corpus[1][int(slide[1:])][(int(x) - 50) // 100])


@pytest.mark.parametrize("world_size,num_workers,deterministic", [(1, 1, True), (1, 2, True), (2, 2, True),
                                                                  (3, 1, True), (2, 2, False)])
def test_workers_read_every_tile_exactly_once(sources, world_size, num_workers, deterministic):
    sources = [s if s.slide != "s3" else TileSource(s.path, s.slide, s.label, s.n_records, clip=17) for s in sources]
    seen = []
    for rank in range(world_size):
        ds = make_tf_dataset(sources, batch_size=4, rank=rank, world_size=world_size, infinite=False, labels=True,
                             seed=3, incl_slidenames=True, incl_loc=True, num_workers=num_workers,
                             deterministic=deterministic)
        seen += ids_of(ds)
    counts = Counter(seen)
    assert set(counts) == all_ids(sources) and max(counts.values()) == 1


def test_workers_pixels_labels_shapes(corpus, sources):
    ds = make_tf_dataset(sources, batch_size=6, labels=True, infinite=False, seed=1, incl_slidenames=True,
                         incl_loc=True, num_workers=2)
    shapes = [tuple(s.shape.as_list()) for s in ds.element_spec]
    assert shapes == [(None, 32, 32, 3), (None,), (None,), (None,), (None,)]
    assert ds.element_spec[0].dtype == tf.uint8 and ds.slidetiles_label_map == ["normal", "stroma", "tumor"]
    n = 0
    for images, labels, slides, xs, ys in ds:
        for image, label, slide, x, y in zip(images.numpy(), labels.numpy(), slides.numpy(), xs.numpy(), ys.numpy()):
            slide = slide.decode()
            assert np.array_equal(image, expected_pixels(corpus, slide, x))  # simplejpeg = accurate-IDCT decode_jpeg
            assert ds.slidetiles_label_map[int(label)] == LABELS[slide]
            assert int(y) == 1000 - 7 * ((int(x) - 50) // 100)
            n += 1
    assert n == sum(SIZES)


def test_workers_give_the_torch_loaders_batches(sources):
    torch_loader = pytest.importorskip("slidetiles.loaders.torch_loader")
    kwargs = dict(batch_size=4, labels=True, infinite=False, seed=21, augment="xyrdjb", color_jitter=0.3,
                  incl_slidenames=True, incl_loc=True, num_workers=2)
    ours = list(make_tf_dataset(sources, **kwargs))
    theirs = list(torch_loader.make_torch_loader(sources, **kwargs))
    # Each worker's shard ends in its own partial batch, as in torch.
    assert len(ours) == len(theirs) == sum(-(-int(n) // 4) for n in shard_sizes(sources, 2))
    for (ti, tl, ts, tx, ty), (fi, fl, fs, fx, fy) in zip(theirs, ours):
        assert np.array_equal(ti.permute(0, 2, 3, 1).numpy(), fi.numpy())
        assert np.array_equal(tl.numpy(), fl.numpy()) and list(ts) == [s.decode() for s in fs.numpy()]
        assert np.array_equal(tx.numpy(), fx.numpy()) and np.array_equal(ty.numpy(), fy.numpy())


def test_workers_passes_reshuffle_and_seeds_repeat(sources):
    def make(seed, **kwargs):
        return make_tf_dataset(sources, batch_size=4, infinite=False, seed=seed, incl_slidenames=True,
                               incl_loc=True, num_workers=2, **kwargs)

    ds = make(5)
    first, second = ids_of(ds), ids_of(ds)
    assert first != second and sorted(first) == sorted(second)
    pids = ds.slidetiles_workers.pids()
    assert len(pids) == 2 and ids_of(ds) != second and ds.slidetiles_workers.pids() == pids  # workers persist
    assert ids_of(make(5)) == first and ids_of(make(6)) != first
    assert ids_of(make(5, epoch=1)) == second
    ds.slidetiles_workers.close()
    assert ds.slidetiles_workers.pids() == [] and ids_of(ds) != first  # epoch 3 on fresh workers


def test_workers_same_tiles_as_in_process_path(corpus, sources):
    """Same tiles and pixels as num_workers=0 (whose order follows one shard per rank, not one per worker)."""

    def tiles(num_workers):
        ds = make_tf_dataset(sources, batch_size=5, infinite=False, seed=2, incl_slidenames=True, incl_loc=True,
                             num_workers=num_workers, standardize=True)
        out = {}
        for images, _, slides, xs, _ in ds:
            for image, slide, x in zip(images.numpy(), slides.numpy(), xs.numpy()):
                out[(slide.decode(), int(x))] = image
        return out

    in_process, workers = tiles(0), tiles(2)
    assert in_process.keys() == workers.keys() and len(workers) == sum(SIZES)
    for key, image in workers.items():
        assert image.dtype == np.float32 and np.allclose(image, in_process[key], atol=1e-5)


def test_workers_batches_held_by_the_consumer_stay_intact(corpus, sources):
    """Keeping every batch (more than the workers' buffers) must not let a worker overwrite one in use."""
    ds = make_tf_dataset(sources, batch_size=2, infinite=False, seed=4, incl_slidenames=True, incl_loc=True,
                         num_workers=1)
    held = list(ds)  # 28 batches, 6 buffers
    assert len(held) == 28
    for images, _, slides, xs, _ in held:
        for image, slide, x in zip(images.numpy(), slides.numpy(), xs.numpy()):
            assert np.array_equal(image, expected_pixels(corpus, slide.decode(), x))
    del held, images
    import gc

    gc.collect()
    ids_of(ds)  # the next pass runs (and tf.data releases the last tensors it held)
    assert ds.slidetiles_workers.in_use() <= 6


def test_workers_stopping_early_then_the_next_pass(sources):
    ds = make_tf_dataset(sources, batch_size=3, infinite=True, seed=8, incl_slidenames=True, incl_loc=True,
                         num_workers=2)
    assert len([b for b in ds.take(7)]) == 7
    assert len([b for b in ds.take(50)]) == 50  # a new pass after one cut short
    finite = make_tf_dataset(sources, batch_size=3, infinite=False, seed=8, incl_slidenames=True, incl_loc=True,
                             num_workers=2)
    for _ in finite.take(2):
        pass
    assert Counter(ids_of(finite)) == Counter(all_ids(sources))


def test_workers_single_tiles_and_drop_remainder(sources):
    ds = make_tf_dataset(sources, batch_size=None, infinite=False, seed=1, incl_slidenames=True, num_workers=2)
    assert ds.element_spec[0].shape.as_list() == [32, 32, 3]
    assert sum(1 for _ in ds) == sum(SIZES)
    ds = make_tf_dataset(sources, batch_size=4, infinite=False, seed=1, drop_remainder=True, num_workers=2)
    assert ds.element_spec[0].shape.as_list() == [4, 32, 32, 3]
    assert all(int(b[0].shape[0]) == 4 for b in ds)


def test_workers_corrupt_record_fails_after_the_batches_before_it(tmp_path, sources):
    bad, offset = corrupt_copy(tmp_path, sources[3], record=4)
    ds = make_tf_dataset(sources[:3] + [bad], batch_size=4, infinite=False, seed=0, num_workers=2)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in ds:
            pass
    message = str(info.value)  # the worker's CorruptRecordError, through tf.data
    assert f"CorruptRecordError: {bad.path}, record 4 at byte offset {offset}" in message and "CRC" in message
    assert ids_of(make_tf_dataset(sources, batch_size=4, infinite=False, seed=0, num_workers=2,
                                  incl_slidenames=True, incl_loc=True))  # the workers' error did not stick


def test_workers_corrupt_record_skipped_and_counted(tmp_path, sources):
    bad, _ = corrupt_copy(tmp_path, sources[3], record=4)
    mixed = sources[:3] + [bad] + sources[4:]
    ds = make_tf_dataset(mixed, batch_size=4, infinite=False, seed=0, on_error="skip", incl_slidenames=True,
                         incl_loc=True, num_workers=2)
    seen = ids_of(ds)
    assert sorted(seen) == sorted(all_ids(sources) - {("s3", loc_x(4))})
    assert ds.slidetiles_stats.skipped == 1


def test_workers_refusals(sources):
    with pytest.raises(LoaderError, match="num_workers"):
        make_tf_dataset(sources, batch_size=4, num_workers=-1)
    with pytest.raises(LoaderError):
        make_tf_dataset(sources, batch_size=4, rank=2, world_size=2, num_workers=2)


def test_workers_stop_when_the_dataset_is_dropped(sources):
    import gc
    import os

    ds = make_tf_dataset(sources, batch_size=4, infinite=True, seed=0, num_workers=2)
    for _ in ds.take(3):  # cut short: the pass ends with its iterator
        pass
    pids = ds.slidetiles_workers.pids()
    assert len(pids) == 2
    del ds
    gc.collect()
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # stopped and reaped, though TF keeps the generator function
            os.kill(pid, 0)
