"""Shard plans, seeds and ranges: which records each loader shard reads, and what its randomness derives from.

Shards
------
With ``world_size`` ranks (GPUs) of ``W`` loader workers each (``num_workers=0`` counts as one worker: the main
process), there are ``n = world_size * W`` shards and worker ``w`` of rank ``r`` reads shard ``r * W + w``.
(Slideflow's torch loaders use ``r + w``, so with several GPUs the workers of neighbouring ranks read the same
shard; here every (rank, worker) pair has its own.)

Shards split the records *within each file*, contiguously: shard ``g`` of a file with ``t`` tiles (after clip)
reads records ``[g*t//n, (g+1)*t//n)`` (:func:`slidetiles.tfrecord.stream.shard_bounds`). We chose this over
giving whole files to shards because:

- every shard sees every slide, so each worker's batches mix slides the way the weights say, and the
  per-worker streams are statistically alike (whole files per shard would give one worker the big slides);
- shard sizes differ by at most one record per file, whatever the slide sizes (whole-file shards can differ by
  a whole slide, which leaves DDP ranks with different step counts);
- reads stay sequential within a file (one ``pread`` per batch of consecutive records).

In finite mode the shards are disjoint and together read every tile (after clip) exactly once per epoch. In
infinite mode a file with fewer tiles than shards is read whole by every shard (an empty range would silently
drop the slide from those shards and skew the sampling weights); there is no exactly-once promise there.

Seeds
-----
Every random choice of a shard comes from ``numpy.random.SeedSequence([seed, epoch], spawn_key=(shard,))``
(:func:`epoch_rngs`): the same seed, epoch and shard plan give the same records in the same order, and the same
augmentations. How a shard's records are ordered is :mod:`slidetiles.loaders.tile_stream`'s business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slidetiles.loaders.sources import LoaderError, TileSource
from slidetiles.tfrecord.stream import shard_bounds

__all__ = ["ShardPlan", "epoch_rngs", "resolve_seed", "shard_range", "shard_sizes"]


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
    # The library's one seed check (splits use it too), raising the loaders' error. Imported here, not at the top:
    # importing slidetiles.splits loads pandas and the split strategies (~0.3 s) that a loader never uses.
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
