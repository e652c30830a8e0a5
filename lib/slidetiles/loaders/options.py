"""The training loaders' options, defaulted and checked in one place.

``make_torch_loader``, :class:`~slidetiles.loaders.torch_loader.TileIterableDataset`, ``make_tf_dataset`` and the
batch workers all take the same options (batch size, shards, seed, augmentation, error policy...). Each entry
point builds one :class:`LoaderOptions` from its keywords; everything below it is handed that object, so an
option is listed, defaulted and validated once. Nothing here imports torch or TensorFlow.

Example:
    >>> options = LoaderOptions(batch_size=64, augment="yx", seed=1)
    >>> options.augment, options.standardize, options.shard_plan().n_shards
    ('xy', None, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from slidetiles.loaders.augment import Augmenter, standardize_method
from slidetiles.loaders.sharding import ShardPlan, resolve_seed
from slidetiles.loaders.sources import LoaderError, TileSource

__all__ = ["ON_ERROR", "LoaderOptions", "loader_sources"]

#: What a damaged record or undecodable image does: stop the loader with an error, or be logged and counted.
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class LoaderOptions:
    """How a training loader reads, orders, augments and batches its tiles (checked and normalised when made).

    Attributes:
        batch_size: tiles per batch (None: single tiles).
        num_workers: worker processes decoding in parallel (0: in the calling process); each reads its own shard.
        infinite: sample files by ``weight`` forever (True, Slideflow's default) or read every tile (after clip)
            exactly once per epoch across all ranks and workers (False).
        augment: letters of :mod:`slidetiles.loaders.augment` (True: ``'xyrjb'``); kept in application order.
        color_jitter: strength of the ``'d'`` augmentation.
        standardize: False/None (uint8), True/``'image'`` (per-image mean 0, std 1, float32) or ``'scale'``
            ([-1, 1]); kept as ``'image'``, ``'scale'`` or None.
        rank, world_size: this process's place among the training processes.
        seed: everything random derives from it and the epoch; None draws one now (shared by the workers).
        incl_slidenames, incl_loc: also yield the slide name, and the tile centre (``loc_x``, ``loc_y``; -1
            when the records have none).
        on_error: ``'raise'``: a damaged record or undecodable image stops the loader with an error naming the
            file, record and byte offset; ``'skip'``: it is logged, skipped and counted.
        verify: check both CRCs of every record (costs ~2% of decoding).
        shuffle_buffer: also mix records through a buffer of this many encoded tiles (~25 KB each at 299 px) per
            worker; 0: the seeded interleaving and in-batch permutation of
            :mod:`~slidetiles.loaders.tile_stream` only.
        drop_last: drop each worker's last, partial batch.
        channels_last: (torch) batches keep the channels-last memory layout; False makes them contiguous NCHW.
        augmenter: the :class:`~slidetiles.loaders.augment.Augmenter` of ``augment`` and ``color_jitter``.
    """

    batch_size: int | None = None
    num_workers: int = 0
    infinite: bool = True
    augment: bool | str | None = False
    color_jitter: float = 0.1
    standardize: bool | str | None = False
    rank: int = 0
    world_size: int = 1
    seed: int | None = None
    incl_slidenames: bool = False
    incl_loc: bool = False
    on_error: str = "raise"
    verify: bool = True
    shuffle_buffer: int = 0
    drop_last: bool = False
    channels_last: bool = True
    augmenter: Augmenter = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: the checked, normalised values replace what was passed
        num_workers = self.num_workers
        if isinstance(num_workers, bool) or int(num_workers) < 0:
            raise LoaderError(f"num_workers must be >= 0, got {num_workers!r}")
        set_(self, "num_workers", int(num_workers))
        batch_size = self.batch_size
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise LoaderError(f"batch_size must be None or >= 1, got {batch_size!r}")
        set_(self, "batch_size", None if batch_size is None else int(batch_size))
        set_(self, "infinite", bool(self.infinite))
        augmenter = Augmenter(self.augment, color_jitter=self.color_jitter)
        set_(self, "augmenter", augmenter)
        set_(self, "augment", augmenter.letters)
        set_(self, "color_jitter", augmenter.color_jitter)
        set_(self, "standardize", standardize_method(self.standardize))
        set_(self, "rank", int(self.rank))
        set_(self, "world_size", int(self.world_size))
        ShardPlan(self.rank, self.world_size, self.num_workers)  # validates
        set_(self, "seed", resolve_seed(self.seed))
        set_(self, "incl_slidenames", bool(self.incl_slidenames))
        set_(self, "incl_loc", bool(self.incl_loc))
        if self.on_error not in ON_ERROR:
            raise LoaderError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        set_(self, "verify", bool(self.verify))
        if int(self.shuffle_buffer) < 0:
            raise LoaderError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        set_(self, "shuffle_buffer", int(self.shuffle_buffer))
        set_(self, "drop_last", bool(self.drop_last))
        set_(self, "channels_last", bool(self.channels_last))

    def shard_plan(self, num_workers: int | None = None) -> ShardPlan:
        """The shards of this rank's ``num_workers`` workers (default: :attr:`num_workers`)."""
        return ShardPlan(self.rank, self.world_size, self.num_workers if num_workers is None else num_workers)


def loader_sources(sources: Sequence[TileSource], options: LoaderOptions) -> list[TileSource]:
    """``sources`` as a list, refused when they are not :class:`TileSource` s or an infinite loader could never
    draw a tile from them."""
    sources = list(sources)
    if not all(isinstance(s, TileSource) for s in sources):
        raise LoaderError("sources must be TileSource objects (see TileSource.from_paths / sources_from_table)")
    if options.infinite and not any(s.n_tiles and s.weight > 0 for s in sources):
        raise LoaderError("infinite loader: no source has both tiles and a weight > 0")
    return sources
