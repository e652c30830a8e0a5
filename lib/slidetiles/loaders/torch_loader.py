"""PyTorch training loader: an ``IterableDataset`` over :class:`TileSource` s, and a ``DataLoader`` around it.

Each DataLoader worker reads its own shard (:mod:`slidetiles.loaders.sharding`: worker ``w`` of rank ``r``
reads shard ``r * num_workers + w`` of ``world_size * num_workers``; each pass starts with
:func:`~slidetiles.loaders.tile_stream.start_pass`, as the TensorFlow loader's do), decodes JPEGs with simplejpeg
(libjpeg-turbo, the fastest decoder measured in ``slidetiles.io.images``), augments and standardises in numpy,
all inside the worker process.

Batches are assembled in the workers (``make_torch_loader`` passes ``batch_size`` to the dataset and
``batch_size=None`` to the DataLoader): each tile is decoded straight into its slot of a batch tensor in shared
memory, so there is no per-tile tensor and no collate copy. Each worker recycles a small ring of such buffers
(``prefetch_factor + 3``, ~17 MB each for 64 tiles of 299 px) that the main process maps once, so a batch
crosses as a few hundred bytes saying which buffer holds it (:mod:`~slidetiles.loaders.shared_batches` says
what that saves and how a buffer is known to be free again).
Images come as ``(N, 3, H, W)`` uint8 (float32 with ``standardize``), laid out channels-last in memory (the
layout convolutions run fastest on; ``.contiguous()`` gives NCHW-contiguous).

Epochs: as with ``DistributedSampler``, call ``set_epoch(epoch)`` (on the loader or the dataset) before
iterating each epoch to reshuffle; iterating again without it repeats the same order. The epoch lives in a
shared-memory tensor that every worker re-reads at the start of each pass, so it also reaches persistent
workers (``worker_init_fn`` runs only once per worker, and a worker's copy of a plain attribute never
changes).

Example:
    >>> loader = make_torch_loader(sources, batch_size=64, num_workers=2, labels=True, infinite=False,
    ...                            augment="xyr", seed=42)  # doctest: +SKIP
    >>> for epoch in range(3):  # doctest: +SKIP
    ...     loader.set_epoch(epoch)
    ...     for images, labels in loader:
    ...         ...
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from slidetiles.errors import SlidetilesError, TileImageError
from slidetiles.io.images import decode_image
from slidetiles.loaders.augment import standardize
from slidetiles.loaders.options import LoaderOptions, loader_sources
from slidetiles.loaders.shared_batches import BatchRing, assemble, shared_empty
from slidetiles.loaders.sharding import ShardPlan, shard_sizes
from slidetiles.loaders.sources import LabelEncoding, TileSource, check_sources, encode_labels
from slidetiles.loaders.tile_stream import IndexCache, RawTile, decode_tile_into, start_pass, tile_where

log = logging.getLogger(__name__)

__all__ = ["TileDataLoader", "TileIterableDataset", "make_torch_loader"]

#: Slots of the shared skipped-records counter; worker w counts in slot w % _SLOTS.
_SLOTS = 64


def torch_options(*, rank: int | None = None, world_size: int | None = None, **fields) -> LoaderOptions:
    """:class:`~slidetiles.loaders.options.LoaderOptions` with ``rank`` and ``world_size`` defaulting to
    ``torch.distributed``'s when it is initialised (else 0 and 1)."""
    if rank is None or world_size is None:
        initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
        if rank is None:
            rank = torch.distributed.get_rank() if initialised else 0
        if world_size is None:
            world_size = torch.distributed.get_world_size() if initialised else 1
    return LoaderOptions(rank=rank, world_size=world_size, **fields)


class TileIterableDataset(IterableDataset):
    """Tiles of the given TFRecords, sharded across ranks and DataLoader workers.

    Yields ``(image, label[, slide][, loc_x, loc_y])`` per tile, or the same as batches when ``batch_size`` is
    set (then use it with ``DataLoader(batch_size=None)``, as :func:`make_torch_loader` does). The order follows
    Slideflow's ``Dataset.torch()``; with labels off the label is 0, as in Slideflow.

    Args:
        sources: the TFRecords (:class:`~slidetiles.loaders.sources.TileSource`).
        options: a :class:`~slidetiles.loaders.options.LoaderOptions`; or give its fields as keywords
            (``batch_size``, ``infinite``, ``augment``, ``seed``, ``on_error``...: see there; with both, the
            keywords replace those fields). ``rank`` and ``world_size`` default to ``torch.distributed``'s when
            it is initialised, else 0 and 1. ``num_workers`` is used only for ``len()`` (``make_torch_loader``
            sets it to the DataLoader's).
        labels: None/False: no labels (0); True: each source's ``label``; a ``{slide: label}`` mapping.
            Every slide needs one (checked here, before any batch): see
            :func:`~slidetiles.loaders.sources.encode_labels` for the encoding; ``label_map`` gives the
            category names of string labels.

    With ``on_error='skip'``, damaged records and undecodable images are logged, skipped and counted in
    :attr:`skipped`.
    """

    def __init__(
        self,
        sources: Sequence[TileSource],
        options: LoaderOptions | None = None,
        *,
        labels: bool | Mapping[str, Any] | None = None,
        **option_fields,
    ):
        super().__init__()
        if options is None:
            options = torch_options(**option_fields)
        elif option_fields:
            options = dataclasses.replace(options, **option_fields)
        self.options = options
        self.sources = loader_sources(sources, options)
        if labels is None or labels is False:
            self.labels: LabelEncoding | None = None
        else:
            self.labels = encode_labels(self.sources, None if labels is True else labels)
        # Shared with every worker, whatever the start method: the epoch each pass reads, and skip counts.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._skipped = torch.zeros(_SLOTS, dtype=torch.int64).share_memory_()
        #: Set by make_torch_loader: workers send batches through a ring of ``ring_size`` recycled shared-memory
        #: buffers (:mod:`~slidetiles.loaders.shared_batches`). Off for a plain DataLoader, whose collate_fn
        #: would see SharedBatch objects instead of tuples.
        self.recycle_batches = False
        self.ring_size = 5
        self._ring = BatchRing()
        self._indexes = IndexCache()

    # -- epochs, counters, length --------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call before each epoch; seen by workers, persistent ones included)."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    @property
    def skipped(self) -> int:
        """Records skipped as damaged or undecodable so far (``on_error='skip'``), over all workers and epochs."""
        return int(self._skipped.sum())

    def skipped_per_worker(self) -> list[int]:
        """Skipped records by worker slot (worker ``w`` counts in slot ``w % 64``; the main process in 0)."""
        return self._skipped.tolist()

    @property
    def label_map(self) -> list[str] | None:
        """Category names of string labels (label ``i`` is ``label_map[i]``), else None."""
        return None if self.labels is None else self.labels.label_map

    def shard_plan(self, num_workers: int | None = None) -> ShardPlan:
        return self.options.shard_plan(num_workers)

    def __len__(self) -> int:
        """Items (tiles, or batches with ``batch_size``) this rank yields per finite epoch.

        Counts each worker's partial last batch, so it is exact only when ``num_workers`` matches the
        DataLoader's. An infinite loader has no length (TypeError).
        """
        options = self.options
        if options.infinite:
            raise TypeError("an infinite loader has no length; count steps instead, or use infinite=False")
        plan = self.shard_plan()
        sizes = shard_sizes(self.sources, plan.n_shards)[plan.shard_ids()]
        if options.batch_size is None:
            return int(sizes.sum())
        if options.drop_last:
            return int((sizes // options.batch_size).sum())
        return int((-(-sizes // options.batch_size)).sum())

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_indexes"] = IndexCache()  # a spawned worker loads what it reads
        return state

    def __repr__(self) -> str:
        o = self.options
        return (
            f"TileIterableDataset({len(self.sources)} TFRecords, {sum(s.n_tiles for s in self.sources)} tiles, "
            f"infinite={o.infinite}, batch_size={o.batch_size}, augment={o.augment!r}, "
            f"standardize={o.standardize}, rank={o.rank}/{o.world_size}, seed={o.seed})"
        )

    # -- iteration ------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        if info is not None and self.__dict__.get("forward_errors"):
            return _forward_errors(lambda: self._items(info), info.id)
        return self._items(info)

    def _items(self, info) -> Iterator:
        worker, num_workers = (0, 0) if info is None else (info.id, info.num_workers)
        slot = worker % _SLOTS

        def count(n: int) -> None:
            self._skipped[slot] += n

        shard_pass = start_pass(
            self.sources, self.options, epoch=self.epoch, worker=worker, num_workers=num_workers,
            indexes=self._indexes, count=count,
        )
        if self.options.batch_size is None:
            return self._samples(*shard_pass)
        return self._batches(*shard_pass)

    def _decode(self, tile: RawTile) -> np.ndarray:
        path = self.sources[tile.source].path
        return decode_image(tile.image, name=tile_where(path, tile))

    def _label_of(self, source: int):
        if self.labels is None:
            return torch.tensor(0)
        return torch.from_numpy(np.array(self.labels.values[source]))

    def _samples(self, tiles, augments, on_skip) -> Iterator[tuple]:
        method, incl_slidenames, incl_loc = self.options.standardize, self.options.incl_slidenames, self.options.incl_loc
        for tile in tiles:
            try:
                image = self._decode(tile)
            except TileImageError as error:
                on_skip(error, 1)
                continue
            if augments is not None:
                image = augments.apply(image)
            if method:
                image = standardize(image, method)
            tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
            item = [tensor, self._label_of(tile.source)]
            if incl_slidenames:
                item.append(self.sources[tile.source].slide)
            if incl_loc:
                item += [tile.loc_x, tile.loc_y]
            yield tuple(item)

    def _batches(self, tiles, augments, on_skip) -> Iterator:
        options = self.options
        size = options.batch_size
        shape = None
        buffer = place = target = scratch = staging = None
        sources: list[int] = []
        locations: list[tuple[int, int]] = []
        for tile in tiles:
            if shape is None:
                try:
                    shape = self._decode(tile).shape
                except TileImageError as error:
                    on_skip(error, 1)
                    continue
                scratch = np.empty(shape, np.uint8)
                if options.standardize or not options.channels_last:
                    # The batch handed out is float32 or NCHW: tiles are decoded into this reused uint8 NHWC
                    # staging batch first and converted once per batch.
                    staging = np.empty((size, *shape), np.uint8)
            if buffer is None:
                buffer, place = self._allocate((size, *shape))
                target = staging if staging is not None else buffer.numpy()
            try:
                decode_tile_into(tile, target[len(sources)], self.sources[tile.source].path, augments, scratch)
            except TileImageError as error:
                on_skip(error, 1)
                continue
            sources.append(tile.source)
            locations.append((tile.loc_x, tile.loc_y))
            if len(sources) == size:
                yield self._finish(buffer, place, staging, sources, locations)
                buffer, sources, locations = None, [], []
        if sources and not options.drop_last:
            yield self._finish(buffer, place, staging, sources, locations)

    def _allocate(self, nhwc: tuple) -> tuple[torch.Tensor, tuple | None]:
        """The tensor a batch of ``nhwc`` tiles is handed out in, and where it sits in this worker's ring."""
        standardized, channels_last = self.options.standardize is not None, self.options.channels_last
        dtype = torch.float32 if standardized else torch.uint8
        shape = nhwc if channels_last else (nhwc[0], nhwc[3], nhwc[1], nhwc[2])
        info = get_worker_info()
        if info is None:
            # In this process, numpy's memory: glibc hands a freed batch's pages back for the next one, so
            # there are no page faults (a fresh torch.empty costs ~8 per tile, +30 us).
            return torch.from_numpy(np.empty(shape, dtype=np.float32 if standardized else np.uint8)), None
        ring = self._ring.worker_ring(info.id, self.ring_size) if self.recycle_batches else None
        if ring is None:
            return shared_empty(shape, dtype), None
        buffer, k, token = ring.take(shape, dtype)
        return buffer, (ring, k, token)

    def _finish(self, buffer, place, staging, sources, locations):
        options = self.options
        n = len(sources)
        if staging is not None:
            result = staging[:n]
            if options.standardize:
                result = standardize(result, options.standardize, out=buffer.numpy()[:n] if options.channels_last else None)
            if not options.channels_last:
                buffer[:n].copy_(torch.from_numpy(result).permute(0, 3, 1, 2))
        labels = np.zeros(n, np.int64) if self.labels is None else self.labels.values[sources]
        rest: list = [labels]
        if options.incl_slidenames:
            rest.append([self.sources[i].slide for i in sources])
        if options.incl_loc:
            loc = np.array(locations, dtype=np.int64).reshape(n, 2).T
            rest += [loc[0], loc[1]]
        if place is not None:
            ring, k, token = place
            return ring.package(buffer, k, token, n, options.channels_last, tuple(rest))
        return assemble(buffer[:n], options.channels_last, rest)


class TileDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`TileIterableDataset`, with its epoch, counters and label names at hand.

    When an epoch fails (a damaged record in ``on_error='raise'`` mode, an error in a worker), the worker
    processes are stopped before the error propagates; iterating again starts fresh ones. Left alone, they
    would be stopped whenever the garbage collector frees the failed iterator, and a DataLoader iterator freed
    by the collector (a kept traceback puts it in a reference cycle) closes its queues before telling its
    workers to stop, so torch waits 5 s per worker at some unrelated later moment.
    """

    def __iter__(self):
        dataset = self.dataset
        if (
            self.num_workers > 0
            and isinstance(dataset, TileIterableDataset)
            and (not self.persistent_workers or self.__dict__.get("_iterator") is None)
        ):
            # New worker processes start below: they get a ring of their own (tickets table and receiver), so
            # workers of another pass still running (two iterators of one loader, a DataLoader sharing the
            # dataset) never share a ticket with them, and the tickets of batches that an interrupted pass never
            # delivered die with that pass.
            dataset._ring = BatchRing()
        ring = getattr(dataset, "_ring", None)  # held while this pass's batches may still arrive
        forward = isinstance(dataset, TileIterableDataset)
        if forward:
            # Seen by the workers that super().__iter__() starts (forked, or pickled for spawn), and only by them:
            # a plain DataLoader over the same dataset must not receive WorkerFailure items.
            dataset.forward_errors = True
        try:
            iterator = super().__iter__()
        finally:
            if forward:
                dataset.forward_errors = False
        try:
            for batch in iterator:
                if type(batch) is WorkerFailure:
                    batch.reraise()
                # DataLoader's default_convert (no workers) and pin_memory turn tuples into lists.
                yield batch if type(batch) is tuple else tuple(batch)
        except GeneratorExit:  # the caller stopped early (break): the workers stay for the next epoch
            raise
        except BaseException:
            self._stop(iterator, ring)
            raise
        if not self.persistent_workers and ring is not None:
            ring.forget()  # this pass's workers are gone; batches still held keep their buffers

    def _stop(self, iterator, ring) -> None:
        _stop_workers(iterator)
        if self.__dict__.get("_iterator") is iterator:
            self._iterator = None
        if ring is not None:
            ring.forget()

    def close(self) -> None:
        """Stop persistent worker processes now rather than when the loader is freed; the next epoch starts new ones."""
        iterator = self.__dict__.get("_iterator")
        if iterator is not None:
            self._stop(iterator, getattr(self.dataset, "_ring", None))

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch``; call before iterating each epoch, as with ``DistributedSampler``."""
        self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    @property
    def skipped(self) -> int:
        """Records skipped so far with ``on_error='skip'`` (all workers of this process)."""
        return self.dataset.skipped

    @property
    def label_map(self) -> list[str] | None:
        return self.dataset.label_map


class WorkerFailure:
    """A slidetiles error raised in a DataLoader worker, sent to the main process as an item and raised there.

    torch re-raises a worker's exception by calling its class with a single message, which our errors (they take
    the file, record and offset) do not accept: they arrived as a bare ``RuntimeError``. Sent this way, the main
    process raises the same class with the same attributes as a loader without workers, the worker's traceback
    attached as a note.
    """

    __slots__ = ("error", "worker", "trace")

    def __init__(self, error: SlidetilesError, worker: int, trace: str):
        self.error = error
        self.worker = worker
        self.trace = trace

    def __reduce__(self):
        return (WorkerFailure, (self.error, self.worker, self.trace))

    def reraise(self):
        self.error.add_note(f"Raised in DataLoader worker process {self.worker}:\n{self.trace.rstrip()}")
        raise self.error


def _forward_errors(make_items, worker: int) -> Iterator:
    """The items of ``make_items()``; a slidetiles error ends them as a :class:`WorkerFailure` item."""
    try:
        yield from make_items()
    except SlidetilesError as error:
        failure = WorkerFailure(error, worker, traceback.format_exc())
        try:
            pickle.loads(pickle.dumps(failure))
        except Exception:
            # An item that cannot cross the queue would be dropped there and the pass would end short, silently;
            # torch's RuntimeError at least stops it.
            raise error from None
        yield failure


def _stop_workers(iterator) -> None:
    shutdown = getattr(iterator, "_shutdown_workers", None)  # only multi-process iterators have workers
    if shutdown is not None:
        shutdown()


def make_torch_loader(
    sources: Sequence[TileSource],
    *,
    batch_size: int,
    num_workers: int = 0,
    labels: bool | Mapping[str, Any] | None = None,
    infinite: bool = True,
    augment: bool | str | None = False,
    color_jitter: float = 0.1,
    standardize: bool | str = False,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int | None = None,
    incl_slidenames: bool = False,
    incl_loc: bool = False,
    on_error: str = "raise",
    verify: bool = True,
    shuffle_buffer: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
    multiprocessing_context=None,
    channels_last: bool = True,
    check: bool = True,
    **dataloader_kwargs,
) -> TileDataLoader:
    """A ``DataLoader`` yielding ``(images, labels[, slides][, loc_x, loc_y])`` batches of the sources' tiles.

    The options are :class:`~slidetiles.loaders.options.LoaderOptions`' (``labels``: as in
    :class:`TileIterableDataset`); in addition:

    Args:
        persistent_workers: keep workers between epochs (default: True when ``num_workers > 0``; the epoch
            still reaches them, see the module docstring).
        check: refuse sources whose TFRecords are missing or changed since they were counted, now rather than
            in a worker (:func:`~slidetiles.loaders.sources.check_sources`; reads each index once).
        pin_memory, prefetch_factor, multiprocessing_context, **dataloader_kwargs: passed to ``DataLoader``.
            Any start method works (fork, spawn, forkserver): the dataset pickles without its caches.

    Example:
        >>> loader = make_torch_loader(sources, batch_size=32, num_workers=2, labels=True,
        ...                            infinite=False, seed=0)  # doctest: +SKIP
        >>> images, labels = next(iter(loader))  # doctest: +SKIP
        >>> images.shape, images.dtype  # doctest: +SKIP
        (torch.Size([32, 3, 299, 299]), torch.uint8)
    """
    options = torch_options(
        batch_size=batch_size, num_workers=num_workers, infinite=infinite, augment=augment, color_jitter=color_jitter,
        standardize=standardize, rank=rank, world_size=world_size, seed=seed, incl_slidenames=incl_slidenames,
        incl_loc=incl_loc, on_error=on_error, verify=verify, shuffle_buffer=shuffle_buffer, drop_last=drop_last,
        channels_last=channels_last,
    )
    num_workers = options.num_workers
    dataset = TileIterableDataset(sources, options, labels=labels)
    dataset.recycle_batches = True
    dataset.ring_size = (2 if prefetch_factor is None else int(prefetch_factor)) + 3
    if check:
        check_sources(dataset.sources)
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    kwargs = dict(dataloader_kwargs)
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            kwargs["multiprocessing_context"] = multiprocessing_context
    return TileDataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **kwargs)
