"""TensorFlow training loader: a ``tf.data.Dataset`` over :class:`TileSource` s, in two ways.

With ``num_workers=n > 0`` (the fast one; what ``make_torch_loader`` does for torch)::

    n worker processes (slidetiles.loaders.batch_workers): each reads its shard (CRC-checked), decodes with
        simplejpeg straight into a recycled shared-memory batch buffer, augments in numpy
    from_generator(batches, round-robin over the workers)     the buffer becomes the tensor: no copy
    [.map(standardize)] [.unbatch()] .prefetch(2)

With ``num_workers=0`` (default; everything in this process)::

    from_generator(our shard reader)  blocks of 64 raw records: CRC-checked encoded bytes, label, slide, location,
                                      and the augmentation parameters drawn for each tile (Python, one thread)
    .unbatch()
    .map(decode + augment + standardize, num_parallel_calls=AUTOTUNE, deterministic)   TF ops, no GIL
    .batch(batch_size).prefetch(AUTOTUNE)

Why two: decoding is ~90% of the work. ``tf.io.decode_jpeg`` runs in tf.data's threads without the GIL but is
~1.37x slower than simplejpeg per tile (``benchmarks/bench_decode.py``), and tf.data adds per-element overhead;
simplejpeg holds the GIL, so it can only run in parallel in separate processes. Measured on 2 cores
(``benchmarks/bench_loaders.py --tf-only``, tf.data in the same process, epochs interleaved, on a machine shared
with other jobs; figures in the README): the worker path needs 0.60-0.69x the CPU time per tile of a tuned
``TFRecordDataset`` + ``decode_jpeg`` pipeline (CRCs checked, accurate IDCT), i.e. ~1.5x its throughput where
both keep the same cores busy, and its fastest epochs ran at 1.18-1.36x tf.data's; the in-process path needs
1.02-1.16x tf.data's CPU time (its Python reader shares the cores with tf.data's decoding).

Pixels: both decode with libjpeg-turbo's accurate integer IDCT (``dct_method='INTEGER_ACCURATE'`` in-process,
simplejpeg in the workers), so tiles are identical either way (TF's default, the fast IDCT, differs by up to 5
levels). Augmentations are numpy in the workers and TF ops in-process, on the same per-tile rows: flips,
rotations and JPEG agree exactly, colour jitter and blur to within one grey level.

Shards and seeds follow :mod:`slidetiles.loaders.sharding`. In process there is one shard per rank (rank ``r`` of
``world_size`` reads shard ``r``), and with the same seed, epoch and ``world_size`` the loader yields the same
tiles in the same order as the torch loader with ``num_workers=0``, with the same augmentation choices. With
``num_workers=n``, worker ``w`` reads shard ``r * n + w`` of ``world_size * n`` and batches come round-robin from
the workers: the same batches as ``make_torch_loader(..., num_workers=n)``. Either way a finite epoch reads every
tile exactly once across ranks (and workers).

Epochs: each pass over the returned dataset (a new iterator, or the next round of ``.repeat()`` / ``fit(epochs=)``)
uses the next epoch, starting at ``epoch``: the order is reshuffled every pass, deterministically.

Errors: a damaged record stops iteration with a ``tf.errors.InvalidArgumentError`` whose message starts with our
error's class (``CorruptRecordError: ...``) and names the file, record and byte offset. With ``on_error='skip'``
damaged records and undecodable images are skipped and counted in ``dataset.slidetiles_stats`` (in process, an
image that passes the cheap check (JPEG/PNG header and end marker) but still fails to decode is dropped by
tf.data's ``ignore_errors``: logged by TensorFlow, not counted; the workers count it).

Example:
    >>> ds = make_tf_dataset(sources, batch_size=64, labels=True, infinite=False, seed=0)  # doctest: +SKIP
    >>> for images, labels in ds:  # doctest: +SKIP
    ...     ...  # images: (64, 299, 299, 3) uint8
    >>> fast = make_tf_dataset(sources, batch_size=64, labels=True, num_workers=2, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from slidetiles.errors import TileImageError
from slidetiles.io.images import check_image, decode_image
from slidetiles.loaders.augment import BLUR_SIGMAS, GRAY, IDENTITY, gaussian_kernel
from slidetiles.loaders.batch_workers import BatchSpec, BatchWorkers
from slidetiles.loaders.options import LoaderOptions, loader_sources
from slidetiles.loaders.sources import TileSource, check_sources, encode_labels
from slidetiles.loaders.tile_stream import IndexCache, start_pass
from slidetiles.tfrecord.loaders import tfrecord_loader

log = logging.getLogger(__name__)

__all__ = ["LoaderStats", "make_tf_dataset"]

#: Records per generator call: one Python round trip per block instead of per tile.
_GENERATOR_BLOCK = 64


class LoaderStats:
    """Counters of a TF loader (the reader runs in this process, so plain attributes suffice).

    Attributes:
        skipped: records skipped with ``on_error='skip'`` so far, over all passes.
        epochs_started: passes begun (the next pass uses epoch ``epoch + epochs_started``).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.skipped = 0
        self.epochs_started = 0

    def count(self, n: int) -> None:
        with self._lock:
            self.skipped += int(n)

    def next_pass(self) -> int:
        with self._lock:
            self.epochs_started += 1
            return self.epochs_started - 1

    def __repr__(self) -> str:
        return f"LoaderStats(skipped={self.skipped}, epochs_started={self.epochs_started})"


def _probe_shape(sources: Sequence[TileSource]) -> tuple[int, int, int] | None:
    """Tile shape from the first record of the first source with tiles, so batches get a static shape."""
    for source in sources:
        if source.n_tiles:
            record = next(iter(tfrecord_loader(source.path, None, clip=1)), None)
            # Records come as Slideflow's loaders give them: image_raw is a uint8 array of the encoded bytes.
            if record is not None and "image_raw" in record:
                try:
                    return tuple(decode_image(bytes(record["image_raw"])).shape)
                except TileImageError:
                    return None
            return None
    return None


def _decode(data):
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")
    return tf.cond(
        is_jpeg,
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_png(data, channels=3, dtype=tf.uint8),
    )


def _tf_blur(image, sigma):
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    h, w = tf.shape(image)[0], tf.shape(image)[1]

    def blurred():
        x = tf.cast(image, tf.float32)
        padded = tf.pad(x, [[radius, radius], [0, 0], [0, 0]], mode="REFLECT")
        x = sum(float(kernel[k]) * padded[k : k + h] for k in range(len(kernel)))
        padded = tf.pad(x, [[0, 0], [radius, radius], [0, 0]], mode="REFLECT")
        x = sum(float(kernel[k]) * padded[:, k : k + w] for k in range(len(kernel)))
        return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)

    # Same rule as the numpy path: a tile no larger than the radius is left as is.
    return tf.cond(tf.logical_and(h > radius, w > radius), blurred, lambda: image)


def _tf_augment(image, params, letters: str, shape):
    """TF version of :func:`slidetiles.loaders.augment.apply_params` (same row, same result)."""
    if "x" in letters:
        image = tf.cond(params[0] > 0, lambda: tf.reverse(image, [1]), lambda: image)
    if "y" in letters:
        image = tf.cond(params[1] > 0, lambda: tf.reverse(image, [0]), lambda: image)
    if "r" in letters:
        k = tf.cast(params[2], tf.int32)
        square = tf.equal(tf.shape(image)[0], tf.shape(image)[1])
        k = tf.where(square, k, tf.where(k % 2 == 1, 2, 0))
        image = tf.image.rot90(image, k)
        if shape is not None:
            image = tf.ensure_shape(image, shape)
    if "d" in letters:
        b, c, s = params[3], params[4], params[5]
        gray = tf.constant(GRAY)

        def jitter():
            x = tf.cast(image, tf.float32)
            x = tf.where(tf.not_equal(b, 1), tf.clip_by_value(x * b, 0, 255), x)
            mean = tf.reduce_mean(tf.reduce_sum(x * gray, axis=-1))
            x = tf.where(tf.not_equal(c, 1), tf.clip_by_value((x - mean) * c + mean, 0, 255), x)
            g = tf.reduce_sum(x * gray, axis=-1, keepdims=True)
            x = tf.where(tf.not_equal(s, 1), tf.clip_by_value((x - g) * s + g, 0, 255), x)
            return tf.cast(tf.round(x), tf.uint8)

        changed = tf.reduce_any(tf.not_equal(params[3:6], 1))
        image = tf.cond(changed, jitter, lambda: image)
    if "j" in letters:
        quality = tf.cast(params[6], tf.int32)

        def recompress():
            encoded = tf.raw_ops.EncodeJpegVariableQuality(images=image, quality=quality)
            return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")

        image = tf.cond(quality > 0, recompress, lambda: image)
    if "b" in letters:
        # sigma is 0 (none) or one of BLUR_SIGMAS = 0.5, 1.0, 1.5, 2.0: branch index = 2 * sigma.
        index = tf.cast(tf.round(params[7] * 2), tf.int32)
        branches = [lambda: image] + [lambda s=float(s): _tf_blur(image, s) for s in BLUR_SIGMAS]
        image = tf.switch_case(index, branches)
    if shape is not None:
        image = tf.ensure_shape(image, shape)
    return image


def make_tf_dataset(
    sources: Sequence[TileSource],
    *,
    batch_size: int | None,
    labels: bool | Mapping[str, Any] | None = None,
    infinite: bool = True,
    augment: bool | str | None = False,
    color_jitter: float = 0.1,
    standardize: bool | str = False,
    rank: int = 0,
    world_size: int = 1,
    seed: int | None = None,
    epoch: int = 0,
    incl_slidenames: bool = False,
    incl_loc: bool = False,
    on_error: str = "raise",
    verify: bool = True,
    shuffle_buffer: int = 0,
    drop_remainder: bool = False,
    num_parallel_calls: int | None = None,
    deterministic: bool = True,
    check: bool = True,
    stats: LoaderStats | None = None,
    num_workers: int = 0,
    multiprocessing_context=None,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(images, labels[, slides][, loc_x, loc_y])`` batches of the sources' tiles.

    The options are :class:`~slidetiles.loaders.options.LoaderOptions`' (``labels``: as in
    :class:`~slidetiles.loaders.torch_loader.TileIterableDataset`), except:

    Args:
        batch_size: tiles per batch; None yields single tiles.
        epoch: the epoch of the first pass; each later pass uses the next.
        drop_remainder: drop the last, partial batch (gives batches a static first dimension); LoaderOptions'
            ``drop_last``.
        num_parallel_calls: parallel decode calls (default ``tf.data.AUTOTUNE``).
        deterministic: keep the order reproducible (default); False lets a slow tile be overtaken.
        stats: a :class:`LoaderStats` to count into (one is made otherwise); also ``dataset.slidetiles_stats``.
        num_workers: 0 (default): read in this process and decode with tf.data (the pipeline in the module
            docstring). ``n > 0``: ``n`` worker processes read, check and decode with simplejpeg into shared
            memory and hand whole batches to tf.data without a copy (:mod:`slidetiles.loaders.batch_workers`):
            faster, and the shards, order and augmentations are then those of ``make_torch_loader`` with the same
            ``num_workers``. ``num_parallel_calls`` does not apply there; ``deterministic=False`` takes each
            batch from whichever worker has one ready (the batches are the same, their order depends on timing).
            The workers persist between passes; ``dataset.slidetiles_workers.close()`` stops them sooner than
            the dataset's garbage collection.
        multiprocessing_context: start method of the workers (default ``'fork'`` on Linux: the training script
            is not re-imported, and the workers never call TensorFlow); ``'spawn'``/``'forkserver'`` work too.

    Images are NHWC (TensorFlow's layout), uint8, or float32 with ``standardize``. The returned dataset also
    carries ``slidetiles_label_map`` (category names of string labels, or None).

    Example:
        >>> ds = make_tf_dataset(sources, batch_size=32, labels=True, augment="xyr", seed=1)  # doctest: +SKIP
        >>> images, labels = next(iter(ds))  # doctest: +SKIP
    """
    options = LoaderOptions(
        batch_size=batch_size, num_workers=num_workers, infinite=infinite, augment=augment, color_jitter=color_jitter,
        standardize=standardize, rank=rank, world_size=world_size, seed=seed, incl_slidenames=incl_slidenames,
        incl_loc=incl_loc, on_error=on_error, verify=verify, shuffle_buffer=shuffle_buffer, drop_last=drop_remainder,
    )
    sources = loader_sources(sources, options)
    encoding = None if labels is None or labels is False else encode_labels(sources, None if labels is True else labels)
    if check:
        check_sources(sources)
    stats = stats if stats is not None else LoaderStats()
    shape = _probe_shape(sources)
    label_values = encoding.values if encoding is not None else np.zeros(len(sources), dtype=np.int64)
    label_spec = tf.TensorSpec([None, *label_values.shape[1:]], tf.as_dtype(label_values.dtype))
    slide_names = np.asarray([s.slide.encode("utf-8") for s in sources], dtype=object)
    if options.num_workers > 0:
        if shape is not None:
            dataset = _worker_dataset(
                sources, options, shape, label_values, label_spec, slide_names, stats, multiprocessing_context,
                epoch=int(epoch), deterministic=deterministic,
            )
            dataset.slidetiles_label_map = encoding.label_map if encoding is not None else None
            return dataset
        log.warning("make_tf_dataset: the tile size could not be read from the first record; "
                    "decoding in this process (num_workers ignored)")
    dataset = _in_process_dataset(
        sources, options, shape, label_values, label_spec, slide_names, stats, epoch=int(epoch),
        num_parallel_calls=num_parallel_calls, deterministic=deterministic,
    )
    dataset.slidetiles_label_map = encoding.label_map if encoding is not None else None
    return dataset


def _in_process_dataset(
    sources, options: LoaderOptions, shape, label_values, label_spec, slide_names, stats: LoaderStats, *, epoch: int,
    num_parallel_calls, deterministic: bool,
) -> tf.data.Dataset:
    """The ``num_workers=0`` pipeline: blocks of raw records from this process's shard, decoded by tf.data."""
    indexes = IndexCache()
    paths = [s.path for s in sources]

    def generate():
        pass_epoch = epoch + stats.next_pass()
        tiles, augments, on_skip = start_pass(sources, options, epoch=pass_epoch, indexes=indexes, count=stats.count)
        images, index, loc, params = [], [], [], []
        for tile in tiles:
            try:
                # Cheap: header and end-of-image marker. It lets a broken image fail (or be skipped) here, with
                # its file and offset, instead of deep inside a tf.data map.
                check_image(tile.image, f"{paths[tile.source]}, record {tile.record} at byte offset {tile.offset}")
            except TileImageError as error:
                on_skip(error, 1)
                continue
            images.append(tile.image)
            index.append(tile.source)
            loc.append((tile.loc_x, tile.loc_y))
            params.append(augments.next_params() if augments is not None else IDENTITY)
            if len(images) == _GENERATOR_BLOCK:
                yield _block(images, index, loc, params)
                images, index, loc, params = [], [], [], []
        if images:
            yield _block(images, index, loc, params)

    def _block(images, index, loc, params):
        index = np.asarray(index, dtype=np.int64)
        return (
            np.asarray(images, dtype=object),
            label_values[index],
            slide_names[index],
            np.asarray(loc, dtype=np.int64).reshape(-1, 2),
            np.asarray(params, dtype=np.float32).reshape(-1, len(IDENTITY)),
        )

    signature = (
        tf.TensorSpec([None], tf.string),
        label_spec,
        tf.TensorSpec([None], tf.string),
        tf.TensorSpec([None, 2], tf.int64),
        tf.TensorSpec([None, len(IDENTITY)], tf.float32),
    )
    letters, method = options.augment, options.standardize
    incl_slidenames, incl_loc = options.incl_slidenames, options.incl_loc

    @tf.autograph.experimental.do_not_convert
    def process(data, label, slide, loc, row):
        image = _decode(data)
        if shape is not None:
            image = tf.ensure_shape(image, shape)
        if letters:
            image = _tf_augment(image, row, letters, shape)
        if method == "image":
            image = tf.image.per_image_standardization(image)
        elif method == "scale":
            image = tf.cast(image, tf.float32) * np.float32(1 / 127.5) - 1
        out = [image, label]
        if incl_slidenames:
            out.append(slide)
        if incl_loc:
            out += [loc[0], loc[1]]
        return tuple(out)

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
    dataset = dataset.map(
        process,
        num_parallel_calls=tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls,
        deterministic=deterministic,
    )
    if options.on_error == "skip":
        dataset = dataset.ignore_errors(log_warning=True)
    if options.batch_size is not None:
        dataset = dataset.batch(options.batch_size, drop_remainder=options.drop_last)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    dataset.slidetiles_stats = stats
    return dataset


#: Tiles per worker batch when the dataset yields single tiles (``batch_size=None``).
_WORKER_BLOCK = 64
#: Batches tf.data asks the workers for ahead of the training step; each holds a worker buffer until released.
_WORKER_PREFETCH = 2


def _finish_images(images, method):
    if method == "image":
        return tf.image.per_image_standardization(images)
    if method == "scale":
        return tf.cast(images, tf.float32) * np.float32(1 / 127.5) - 1
    return images


def _worker_dataset(
    sources, options: LoaderOptions, shape, label_values, label_spec, slide_names, stats: LoaderStats,
    multiprocessing_context, *, epoch: int, deterministic: bool,
) -> tf.data.Dataset:
    """The ``num_workers > 0`` pipeline: whole uint8 batches from worker processes, standardised in the graph.

    ``from_generator`` takes each batch's numpy view of the shared buffer without copying it; the buffer is
    recycled once TensorFlow drops the last tensor over it (see :mod:`slidetiles.loaders.batch_workers`).
    """
    batch_size = options.batch_size
    # Single tiles still come from the workers in batches (of _WORKER_BLOCK), unbatched here; only a real batch
    # size drops its remainder.
    block = _WORKER_BLOCK if batch_size is None else batch_size
    worker_options = dataclasses.replace(options, batch_size=block, drop_last=options.drop_last and batch_size is not None)
    spec = BatchSpec(sources, tuple(int(x) for x in shape), worker_options)
    num_workers, method = options.num_workers, options.standardize
    incl_slidenames, incl_loc = options.incl_slidenames, options.incl_loc

    def start() -> BatchWorkers:
        return BatchWorkers(spec, num_workers, ring_size=_WORKER_PREFETCH + 4,
                            multiprocessing_context=multiprocessing_context)

    workers = start()
    # TensorFlow keeps a from_generator's generator function for the life of the process, so the function holds
    # the persistent workers only weakly: they stop when the dataset is dropped. A pass that finds them gone (an
    # iterator outliving its dataset) runs on workers of its own.
    persistent = weakref.ref(workers)

    def generate():
        pass_epoch = epoch + stats.next_pass()
        pool = persistent()
        temporary = pool is None
        if temporary:
            pool = start()
        try:
            for images, index, loc in pool.batches(pass_epoch, stats.count, ordered=deterministic):
                out = [images, label_values[index]]
                if incl_slidenames:
                    out.append(slide_names[index])
                if incl_loc:
                    out += [loc[:, 0], loc[:, 1]]
                yield tuple(out)
        finally:
            if temporary:
                pool.close()

    static = block if worker_options.drop_last else None
    signature = [
        tf.TensorSpec([static, *spec.shape], tf.uint8),
        tf.TensorSpec([static, *label_spec.shape[1:]], label_spec.dtype),
    ]
    if incl_slidenames:
        signature.append(tf.TensorSpec([static], tf.string))
    if incl_loc:
        signature += [tf.TensorSpec([static], tf.int64)] * 2
    dataset = tf.data.Dataset.from_generator(generate, output_signature=tuple(signature))
    if method is not None:
        dataset = dataset.map(lambda images, *rest: (_finish_images(images, method), *rest))
    if batch_size is None:
        dataset = dataset.unbatch()
    dataset = dataset.prefetch(_WORKER_PREFETCH)
    dataset.slidetiles_stats = stats
    dataset.slidetiles_workers = workers
    return dataset
