"""One shard's tiles for one epoch: the record stream of :mod:`slidetiles.tfrecord.stream`, as encoded tiles.

From the file to a batch::

    TileSource s + LoaderOptions + (epoch, worker)
      --> start_pass              the worker's shard (sharding.ShardPlan), its epoch's Generators (epoch_rngs),
                                  the skip handler, and:
      --> iter_shard              a ReadPlan over the shard's record ranges, read by stream.interleave; each record
                                  parsed to a RawTile (encoded image bytes, location), optional shuffle buffer
      --> the framework loader    decodes, augments (ShardPass.augments) and batches: torch_loader (DataLoader
                                  workers), batch_workers (TensorFlow's worker processes), tf_loader (in process)

Order within an epoch
---------------------
Every random choice of a shard comes from its epoch's Generators (:func:`~slidetiles.loaders.sharding.epoch_rngs`):
the same seed, epoch and shard plan give the same records in the same order, and the same augmentations.
A new epoch (``set_epoch``) reshuffles.

- Each file's range is read starting at a random record and wrapping around, one ``pread`` batch (up to
  1 MiB, ~40 tiles of 299 px) at a time, and each batch is yielded in random order: the order within a slide
  changes every epoch and neighbouring tiles are mixed, while reads stay sequential and nothing extra is held.
- Finite mode: the next file is drawn with probability proportional to the records it has left, i.e. the
  file sequence is a uniformly random interleaving of all records (drawn in blocks of 1024 with a multivariate
  hypergeometric draw, so memory does not grow with the epoch length). Weights play no part: every tile is read
  once, and weighting a finite epoch would only move heavy slides to its start.
- Infinite mode: the next file is drawn with probability proportional to its ``weight`` (``balance()``); an
  exhausted file starts over, so tile frequencies per file follow the weights.
- Then an optional shuffle buffer (``shuffle_buffer`` records of encoded bytes, ~25 KB each at 299 px; off by
  default). It mixes tiles of one slide across more than one read batch only when it is much larger than
  ``n_files x ~40`` records, so the in-batch permutation above gives most of its effect for free; it costs
  memory and ~10 us per tile (measured), a few percent of decoding.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from slidetiles.errors import InvalidExampleError, TileImageError
from slidetiles.io.example import parse_example
from slidetiles.io.framing import fast_tile_fields
from slidetiles.io.images import decode_image_into
from slidetiles.io.tfrecord2idx import build_index, read_index
from slidetiles.loaders.augment import AugmentStream
from slidetiles.loaders.options import ON_ERROR, LoaderOptions
from slidetiles.loaders.sharding import epoch_rngs, shard_range
from slidetiles.loaders.sources import LoaderError, SourceChangedError, TileSource
from slidetiles.tfrecord.stream import ReadPlan, SkipHandler, interleave

log = logging.getLogger(__name__)

__all__ = [
    "IndexCache",
    "RawTile",
    "ShardPass",
    "decode_tile_into",
    "iter_shard",
    "skip_handler",
    "start_pass",
    "tile_where",
]

#: Read-ahead held by one shard reader across all its files (each file reads up to 1 MiB at a time).
SHARD_MEMORY_BUDGET = 64 << 20
#: Shuffle-buffer picks are drawn this many at a time: one Generator call per block instead of one per record.
_BLOCK = 1024


class RawTile(NamedTuple):
    """One record as read from its TFRecord, not yet decoded."""

    #: Position of its file in the sources list.
    source: int
    #: 0-based record number in the file, and the byte offset of its frame (for error messages).
    record: int
    offset: int
    #: The encoded image (JPEG/PNG file bytes).
    image: bytes
    #: Tile centre in level-0 pixels; -1 when the record has none.
    loc_x: int
    loc_y: int


def tile_where(path: str, tile: RawTile) -> str:
    """``'<path>, record 12 at byte offset 3456'``: how error messages name a tile."""
    return f"{path}, record {tile.record} at byte offset {tile.offset}"


def _wrong_size_error(path: str, tile: RawTile, got, expected) -> TileImageError:
    """The error for a tile of shape ``got`` in a loader whose batches hold ``expected``-shaped tiles."""
    return TileImageError(
        path,
        f"record {tile.record} at byte offset {tile.offset}: the tile is {got[1]}x{got[0]} px but this loader's "
        f"batches hold {expected[1]}x{expected[0]} px tiles; a loader needs tiles of one size",
    )


def decode_tile_into(
    tile: RawTile, out: np.ndarray, path: str, augments: AugmentStream | None = None, scratch: np.ndarray | None = None
) -> None:
    """Decode ``tile`` (read from ``path``) into ``out``, one HWC slot of a batch, augmented by ``augments`` when
    given (decoded into ``scratch``, an array of ``out``'s shape, first). A :class:`TileImageError` naming the file
    and record when the tile cannot be decoded or is of another size than ``out``."""
    decoded = out if augments is None else scratch
    shape = decode_image_into(tile.image, decoded, name=tile_where(path, tile))
    if shape != decoded.shape:
        raise _wrong_size_error(path, tile, shape, decoded.shape)
    if augments is not None:
        augmented = augments.apply(scratch)
        if augmented.shape != out.shape:
            raise _wrong_size_error(path, tile, augmented.shape, out.shape)
        out[...] = augmented


def _raise(error: Exception, n_records: int) -> None:
    raise error


def skip_handler(on_error: str, count: Callable[[int], None] | None = None) -> SkipHandler:
    """The handler for ``on_error``: ``'raise'`` re-raises; ``'skip'`` logs the error and counts the records lost."""
    if on_error not in ON_ERROR:
        raise LoaderError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if on_error == "raise":
        return _raise

    def skip(error: Exception, n_records: int) -> None:
        log.warning("skipping %d record(s): %s", n_records, error)
        if count is not None:
            count(n_records)

    return skip


class IndexCache:
    """The ``arr_0`` index of each source's file, loaded on first use and checked against ``n_records``.

    Kept per process (one per loader worker) across epochs; dropped when a dataset is pickled for a spawned
    worker, which reloads what it reads.
    """

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, source: TileSource) -> np.ndarray:
        arr_0 = self._arrays.get(source.path)
        if arr_0 is None:
            arr_0 = self._load(source)
            self._arrays[source.path] = arr_0
        return arr_0

    @staticmethod
    def _load(source: TileSource) -> np.ndarray:
        if not os.path.isfile(source.path):
            raise SourceChangedError([source.path], f"{source.path}: the TFRecord no longer exists")
        # Workers never write indexes (several would race to); a missing one is built in memory.
        index = read_index(source.path, create=False)
        if index is None:
            index = build_index(source.path)
        if len(index) != source.n_records:
            raise SourceChangedError(
                [source.path],
                f"{source.path}: holds {len(index)} records but was counted with {source.n_records}: the TFRecord "
                "changed since the manifest/dataset was built; rebuild it from the current files",
            )
        return index.arr_0


def iter_shard(
    sources: Sequence[TileSource],
    shard_id: int,
    n_shards: int,
    *,
    seed: int,
    epoch: int = 0,
    infinite: bool = False,
    shuffle_buffer: int = 0,
    verify: bool = True,
    on_skip: SkipHandler = _raise,
    indexes: IndexCache | None = None,
    rng: np.random.Generator | None = None,
) -> Iterator[RawTile]:
    """The records of shard ``shard_id`` of ``n_shards`` for one epoch, in this epoch's order (module docstring).

    Args:
        sources: the TFRecords.
        seed, epoch: what the order is drawn from (see :func:`~slidetiles.loaders.sharding.epoch_rngs`); ``rng``
            overrides them.
        infinite: sample files by weight forever (restarting exhausted files) instead of reading everything once.
        shuffle_buffer: mix records through a buffer of this many (0 or 1: no buffer).
        verify: check both CRCs of every record.
        on_skip: what to do with a damaged record: :func:`skip_handler` (default: raise it).
        indexes: a cache of loaded indexes to reuse across epochs.

    Raises:
        TFRecordError (a subclass naming the file, record and byte offset): a damaged record, unless skipped.
        SourceChangedError: a file no longer matches its ``n_records``.
        LoaderError: infinite mode with nothing to sample (no tiles, or every weight 0).

    Example:
        >>> for tile in iter_shard(sources, 0, 1, seed=0):  # doctest: +SKIP
        ...     image = decode_image(tile.image)
    """
    if not 0 <= shard_id < n_shards:
        raise LoaderError(f"shard {shard_id} out of range for {n_shards} shards")
    if rng is None:
        rng, _ = epoch_rngs(seed, epoch, shard_id)
    indexes = indexes if indexes is not None else IndexCache()
    ranges = [shard_range(s.n_tiles, shard_id, n_shards, infinite) for s in sources]
    # Random rotation per file, drawn up front for every file so the draw does not depend on the order files
    # are first visited in.
    spans = np.asarray([hi - lo for lo, hi in ranges], dtype=np.int64)
    starts = (rng.random(len(sources)) * np.maximum(spans, 1)).astype(np.int64) + np.asarray(
        [lo for lo, _ in ranges], dtype=np.int64
    )
    plan = ReadPlan(
        paths=[s.path for s in sources],
        index_of=lambda i: indexes.get(sources[i]),
        ranges=ranges,
        weights=np.asarray([s.weight for s in sources], dtype=np.float64),
        draw="weights" if infinite else "once",
        infinite=infinite,
        starts=starts.tolist(),
        shuffle_batches=True,
        verify=verify,
        on_skip=None if on_skip is _raise else on_skip,
        memory_budget=SHARD_MEMORY_BUDGET,
    )
    if infinite and not plan.active:
        if not any(hi > lo for lo, hi in ranges):
            raise LoaderError("infinite loader over sources with no tiles: nothing to sample")
        raise LoaderError("every source with tiles has weight 0: nothing could ever be sampled")
    tiles = interleave(plan, _tile_parser(plan.paths), rng)
    if shuffle_buffer and shuffle_buffer > 1:
        tiles = _shuffle(tiles, int(shuffle_buffer), rng)
    return tiles


def _tile_parser(paths: Sequence[str]):
    """The stream's ``parse`` for tiles: the image bytes and location of a record, as a :class:`RawTile`."""
    tile_fields = fast_tile_fields()

    def parse(source: int, record: int, offset: int, payload) -> RawTile:
        # Both paths copy the image out of the read batch (so a tile does not pin its batch). The C parser takes
        # ~1 us a tile against ~11 us through upb's message objects.
        if tile_fields is not None:
            fields = tile_fields(payload)
            if fields is not None:
                return RawTile(source, record, offset, *fields)
        path = paths[source]
        example = parse_example(payload, decode_slide=False, path=path, record=record, offset=offset)
        image = example.get("image_raw")
        if not isinstance(image, bytes):
            raise InvalidExampleError(path, "the record has no single 'image_raw' bytes feature", record, offset)
        loc_x = example.get("loc_x", -1)
        loc_y = example.get("loc_y", -1)
        if not isinstance(loc_x, int) or not isinstance(loc_y, int):
            loc_x = loc_y = -1
        return RawTile(source, record, offset, image, loc_x, loc_y)

    return parse


def _shuffle(tiles: Iterator[RawTile], size: int, rng: np.random.Generator) -> Iterator[RawTile]:
    buffer: list[RawTile] = []
    picks: list[int] = []
    used = 0
    for tile in tiles:
        if len(buffer) < size:
            buffer.append(tile)
            continue
        if used == len(picks):
            picks = rng.integers(0, size, _BLOCK).tolist()
            used = 0
        j = picks[used]
        used += 1
        yield buffer[j]
        buffer[j] = tile
    for j in rng.permutation(len(buffer)).tolist():
        yield buffer[j]


class ShardPass(NamedTuple):
    """What a loader worker needs for one epoch of its shard (see :func:`start_pass`)."""

    #: The shard's tiles in this epoch's order.
    tiles: Iterator[RawTile]
    #: One augmentation row per tile, drawn from the shard's augmentation Generator; None without augmentation.
    augments: AugmentStream | None
    #: The ``on_error`` handler: call ``on_skip(error, 1)`` for a tile that fails to decode.
    on_skip: SkipHandler


def start_pass(
    sources: Sequence[TileSource],
    options: LoaderOptions,
    *,
    epoch: int,
    worker: int = 0,
    num_workers: int = 0,
    indexes: IndexCache | None = None,
    count: Callable[[int], None] | None = None,
) -> ShardPass:
    """One epoch of worker ``worker`` of ``num_workers`` (0: the calling process) of this rank: the same for
    every framework, so the torch loader, the batch workers and the in-process TF loader read and augment alike.

    ``count(n)`` is told of records skipped (``options.on_error='skip'``).
    """
    plan = options.shard_plan(num_workers)
    shard = plan.shard_id(worker)
    on_skip = skip_handler(options.on_error, count)
    order_rng, augment_rng = epoch_rngs(options.seed, epoch, shard)
    tiles = iter_shard(
        sources,
        shard,
        plan.n_shards,
        seed=options.seed,
        infinite=options.infinite,
        shuffle_buffer=options.shuffle_buffer,
        verify=options.verify,
        on_skip=on_skip,
        indexes=indexes,
        rng=order_rng,
    )
    augments = AugmentStream(options.augmenter, augment_rng) if options.augmenter else None
    return ShardPass(tiles, augments, on_skip)
