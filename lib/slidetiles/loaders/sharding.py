"""Which records each loader shard reads, in which order: the framework-free core of the training loaders.

Shards
------
With ``world_size`` ranks (GPUs) of ``W`` loader workers each (``num_workers=0`` counts as one worker: the main
process), there are ``n = world_size * W`` shards and worker ``w`` of rank ``r`` reads shard ``r * W + w``.
(Slideflow's torch loaders use ``r + w``, so with several GPUs the workers of neighbouring ranks read the same
shard; here every (rank, worker) pair has its own.)

Shards split the records *within each file*, contiguously: shard ``g`` of a file with ``t`` tiles (after clip)
reads records ``[g*t//n, (g+1)*t//n)`` (:func:`slidetiles.tfrecord.loaders.shard_bounds`). We chose this over
giving whole files to shards because:

- every shard sees every slide, so each worker's batches mix slides the way the weights say, and the
  per-worker streams are statistically alike (whole files per shard would give one worker the big slides);
- shard sizes differ by at most one record per file, whatever the slide sizes (whole-file shards can differ by
  a whole slide, which leaves DDP ranks with different step counts);
- reads stay sequential within a file (one ``pread`` per batch of consecutive records).

In finite mode the shards are disjoint and together read every tile (after clip) exactly once per epoch. In
infinite mode a file with fewer tiles than shards is read whole by every shard (an empty range would silently
drop the slide from those shards and skew the sampling weights); there is no exactly-once promise there.

Order within an epoch
---------------------
Every random choice of a shard comes from ``numpy.random.SeedSequence([seed, epoch], spawn_key=(shard,))``:
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
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from slidetiles.errors import (
    InvalidExampleError,
    TFRecordError,
    TruncatedRecordError,
)
from slidetiles.io.example import parse_example
from slidetiles.io.framing import fast_tile_fields
from slidetiles.tfrecord.loaders import MAX_BATCH_BYTES, read_batch, shard_bounds
from slidetiles.loaders.sources import LoaderError, SourceChangedError, TileSource

log = logging.getLogger(__name__)

__all__ = [
    "RawTile",
    "ShardPlan",
    "epoch_rngs",
    "iter_shard",
    "resolve_seed",
    "shard_range",
    "shard_sizes",
]

#: Read-ahead held by one shard reader across all its files (each file reads up to 1 MiB at a time).
SHARD_MEMORY_BUDGET = 64 << 20
#: Random draws are made this many at a time: one Generator call per block instead of one per record.
_BLOCK = 1024
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class ShardPlan:
    """The shard layout of a run: ``world_size`` ranks of ``num_workers`` loader workers each.

    Example:
        >>> plan = ShardPlan(rank=1, world_size=2, num_workers=3)
        >>> plan.n_shards, [plan.shard_id(w) for w in range(3)]
        (6, [3, 4, 5])
        >>> ShardPlan(num_workers=0).n_shards  # the main process is the one worker
        1
    """

    rank: int = 0
    world_size: int = 1
    num_workers: int = 0

    def __post_init__(self):
        for name in ("rank", "world_size", "num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise LoaderError(f"{name} must be an integer, got {value!r}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise LoaderError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={self.rank}, world_size={self.world_size}")
        if self.num_workers < 0:
            raise LoaderError(f"num_workers must be >= 0, got {self.num_workers}")

    @property
    def workers_per_rank(self) -> int:
        return max(1, int(self.num_workers))

    @property
    def n_shards(self) -> int:
        return int(self.world_size) * self.workers_per_rank

    def shard_id(self, worker: int = 0) -> int:
        if not 0 <= worker < self.workers_per_rank:
            raise LoaderError(f"worker {worker} out of range for {self.workers_per_rank} worker(s) per rank")
        return int(self.rank) * self.workers_per_rank + int(worker)

    def shard_ids(self) -> list[int]:
        """The shards this rank's workers read."""
        return [self.shard_id(w) for w in range(self.workers_per_rank)]


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or fresh entropy when None (drawn once, so every worker of a loader shares it)."""
    # The library's one seed check (splits use it too), raising the loaders' error.
    from slidetiles.splits.spec import check_seed

    seed = check_seed(seed, error=LoaderError, none_ok=True)
    if seed is None:
        return int(np.random.SeedSequence().entropy % (1 << 63))
    return seed


def epoch_rngs(seed: int, epoch: int, shard_id: int) -> tuple[np.random.Generator, np.random.Generator]:
    """``(order, augment)`` generators of one shard in one epoch.

    Two independent streams, so turning augmentation on or off does not change which records come in which order.
    """
    sequence = np.random.SeedSequence([int(seed), int(epoch)], spawn_key=(int(shard_id),))
    order, augment = sequence.spawn(2)
    return np.random.default_rng(order), np.random.default_rng(augment)


def shard_range(n_tiles: int, shard_id: int, n_shards: int, infinite: bool = False) -> tuple[int, int]:
    """Records ``[lo, hi)`` of a file with ``n_tiles`` tiles (after clip) that shard ``shard_id`` reads.

    Example:
        >>> [shard_range(5, g, 3) for g in range(3)]
        [(0, 1), (1, 3), (3, 5)]
        >>> shard_range(2, 2, 3), shard_range(2, 2, 3, infinite=True)
        ((1, 2), (0, 2))
        >>> shard_range(1, 0, 3), shard_range(1, 0, 3, infinite=True)
        ((0, 0), (0, 1))
    """
    if infinite and n_tiles < n_shards:
        return 0, n_tiles
    return shard_bounds(n_tiles, (shard_id, n_shards))


def shard_sizes(sources: Sequence[TileSource], n_shards: int) -> np.ndarray:
    """Tiles each of ``n_shards`` shards reads per finite epoch (int64 array; sums to the sources' tiles).

    Example:
        >>> s = [TileSource("a.tfrecords", "a", n_records=5), TileSource("b.tfrecords", "b", n_records=10, clip=4)]
        >>> shard_sizes(s, 3).tolist()
        [2, 3, 4]
    """
    tiles = np.asarray([s.n_tiles for s in sources], dtype=np.int64)
    g = np.arange(n_shards + 1, dtype=np.int64)
    bounds = (g[:, None] * tiles[None, :]) // n_shards
    return (bounds[1:] - bounds[:-1]).sum(axis=1)


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


SkipHandler = Callable[[Exception, int], None]


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
        from slidetiles.io.tfrecord2idx import build_index, read_index

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


def _file_tiles(source_id, path, arr_0, lo, hi, start, cycle, verify, batch_bytes, on_skip, rng) -> Iterator[RawTile]:
    """Tiles of records ``start..hi-1`` then ``lo..start-1`` of one file; over and over when ``cycle``.

    Records come one ``pread`` batch at a time (up to 1 MiB of consecutive records); each batch is parsed and
    yielded in a random order, which mixes neighbouring tiles of a slide at no memory cost.

    Records are located through the index, so a damaged record (bad CRC, bad length field, unparsable) spoils
    only itself: when ``on_skip`` skips, reading resumes at the next record. A file cut short loses everything
    after the cut. A pass that yields nothing ends the stream, so an infinite loader cannot spin on a file whose
    every record is damaged.
    """
    skipped: list | None = [] if on_skip is not _raise else None
    tile_fields = fast_tile_fields()
    while True:
        produced = False
        for run_lo, run_hi in ((start, hi), (lo, start)):
            pos = run_lo
            while pos < run_hi:
                try:
                    pos, items = read_batch(path, arr_0, pos, run_hi, verify, batch_bytes, skipped)
                except TFRecordError as error:
                    if isinstance(error, TruncatedRecordError) or error.record is None:
                        on_skip(error, run_hi - (error.record if error.record is not None else pos))
                        pos = run_hi
                    else:
                        on_skip(error, 1)
                        pos = error.record + 1
                    continue
                if skipped:
                    for error in skipped:
                        on_skip(error, 1)
                    skipped.clear()
                tiles = []
                for item in items:
                    try:
                        tiles.append(_parse(path, source_id, item, tile_fields))
                    except TFRecordError as error:
                        on_skip(error, 1)
                del items  # the views pin the batch; the parsed tiles hold copies
                if not tiles:
                    continue
                produced = True
                if len(tiles) == 1:
                    yield tiles[0]
                else:
                    for j in rng.permutation(len(tiles)).tolist():
                        yield tiles[j]
        if not cycle or not produced:
            return


def _parse(path: str, source: int, item, tile_fields) -> RawTile:
    # Both paths copy the image out of the read batch (so a tile does not pin its batch). The C parser takes
    # ~1 us a tile against ~11 us through upb's message objects.
    record, offset, payload = item
    if tile_fields is not None:
        fields = tile_fields(payload)
        if fields is not None:
            return RawTile(source, record, offset, *fields)
    example = parse_example(payload, decode_slide=False, path=path, record=record, offset=offset)
    image = example.get("image_raw")
    if not isinstance(image, bytes):
        raise InvalidExampleError(path, "the record has no single 'image_raw' bytes feature", record, offset)
    loc_x = example.get("loc_x", -1)
    loc_y = example.get("loc_y", -1)
    if not isinstance(loc_x, int) or not isinstance(loc_y, int):
        loc_x = loc_y = -1
    return RawTile(source, record, offset, image, loc_x, loc_y)


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
        seed, epoch: what the order is drawn from (see :func:`epoch_rngs`); ``rng`` overrides them.
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
    weights = np.asarray([s.weight for s in sources], dtype=np.float64)
    if infinite:
        active = [i for i, (lo, hi) in enumerate(ranges) if hi > lo and weights[i] > 0]
        if not active:
            if not any(hi > lo for lo, hi in ranges):
                raise LoaderError("infinite loader over sources with no tiles: nothing to sample")
            raise LoaderError("every source with tiles has weight 0: nothing could ever be sampled")
    else:
        active = [i for i, (lo, hi) in enumerate(ranges) if hi > lo]
    # Random rotation per file, drawn up front for every file so the draw does not depend on the order files
    # are first visited in.
    spans = np.asarray([hi - lo for lo, hi in ranges], dtype=np.int64)
    starts = (rng.random(len(sources)) * np.maximum(spans, 1)).astype(np.int64) + np.asarray(
        [lo for lo, _ in ranges], dtype=np.int64
    )
    batch_bytes = int(min(MAX_BATCH_BYTES, max(1, SHARD_MEMORY_BUDGET // max(len(active), 1))))
    tiles = _interleave(sources, ranges, starts, weights, active, infinite, rng, verify, batch_bytes, on_skip, indexes)
    if shuffle_buffer and shuffle_buffer > 1:
        tiles = _shuffle(tiles, int(shuffle_buffer), rng)
    return tiles


def _interleave(sources, ranges, starts, weights, active, infinite, rng, verify, batch_bytes, on_skip, indexes):
    streams: dict[int, Iterator] = {}

    def read(i):
        """Next tile of file i, or None when it has no more (exhausted, or everything left was skipped)."""
        stream = streams.get(i)
        if stream is None:
            lo, hi = ranges[i]
            arr_0 = indexes.get(sources[i])
            stream = streams[i] = _file_tiles(
                i, sources[i].path, arr_0, lo, hi, int(starts[i]), infinite, verify, batch_bytes, on_skip, rng
            )
        return next(stream, None)

    if infinite:
        pool = np.asarray(active, dtype=np.int64)
        while len(pool):
            p = weights[pool] / weights[pool].sum()
            for i in rng.choice(pool, size=_BLOCK, p=p).tolist():
                tile = read(i)
                if tile is None:
                    # Nothing readable left in this file: drop it and redraw with the others' weights.
                    streams.pop(i, None)
                    pool = pool[pool != i]
                    break
                yield tile
        return

    remaining = np.zeros(len(sources), dtype=np.int64)
    for i in active:
        lo, hi = ranges[i]
        remaining[i] = hi - lo
    while True:
        left = int(remaining.sum())
        if left == 0:
            return
        counts = rng.multivariate_hypergeometric(remaining, min(_BLOCK, left))
        remaining -= counts
        order = np.repeat(np.arange(len(sources)), counts)
        rng.shuffle(order)
        for i in order.tolist():
            tile = read(i)
            if tile is None:
                # Fewer records than planned (some skipped as damaged): forget the rest of this file.
                remaining[i] = 0
                streams[i] = iter(())
                continue
            yield tile


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
