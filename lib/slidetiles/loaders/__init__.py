"""Training loaders: TFRecord tiles to PyTorch ``DataLoader`` s and ``tf.data`` pipelines.

A tile's way from its file to a batch, one module a step:

- :mod:`~slidetiles.loaders.sources`: :class:`TileSource` (one TFRecord: path, slide, label, record count,
  clip, weight), :func:`sources_from_table`, label encoding and the checks done before the first batch;
- :mod:`~slidetiles.loaders.options`: :class:`LoaderOptions`, every loader option defaulted and checked once;
- :mod:`~slidetiles.loaders.sharding`: shard plans, seeds and ranges (which shard reads which records);
- :mod:`~slidetiles.loaders.tile_stream`: one shard's tiles for one epoch (:func:`start_pass`), read through the
  record stream of :mod:`slidetiles.tfrecord.stream`;
- :mod:`~slidetiles.loaders.augment`: seeded numpy augmentations (Slideflow's letters) and standardisation;
- the framework loaders, which decode, augment and batch; imported on first use so that neither framework is
  imported for the other: :func:`make_torch_loader` / :class:`TileIterableDataset`
  (:mod:`~slidetiles.loaders.torch_loader`, batches in shared memory via :mod:`~slidetiles.loaders.shared_batches`)
  and :func:`make_tf_dataset` (:mod:`~slidetiles.loaders.tf_loader`, in process or through the worker processes
  of :mod:`~slidetiles.loaders.batch_workers`).

Everything but the framework loaders is framework-free (no torch or TensorFlow import).

Example:
    >>> from slidetiles.loaders import TileSource, make_torch_loader
    >>> sources = TileSource.from_paths(paths, labels={"s1": "tumor", "s2": "normal"})  # doctest: +SKIP
    >>> loader = make_torch_loader(sources, batch_size=64, num_workers=2, labels=True)  # doctest: +SKIP
"""

import importlib

from slidetiles.loaders.augment import AUGMENTATIONS, Augmenter, parse_augment, standardize
from slidetiles.loaders.options import LoaderOptions
from slidetiles.loaders.sharding import ShardPlan, shard_range, shard_sizes
from slidetiles.loaders.sources import (
    LabelEncoding,
    LoaderError,
    MissingLabelError,
    SourceChangedError,
    TileSource,
    check_sources,
    encode_labels,
    sources_from_table,
)
from slidetiles.loaders.tile_stream import iter_shard, start_pass

_LAZY = {
    "TileIterableDataset": "slidetiles.loaders.torch_loader",
    "TileDataLoader": "slidetiles.loaders.torch_loader",
    "make_torch_loader": "slidetiles.loaders.torch_loader",
    "make_tf_dataset": "slidetiles.loaders.tf_loader",
    "LoaderStats": "slidetiles.loaders.tf_loader",
}

__all__ = [
    "AUGMENTATIONS",
    "Augmenter",
    "LabelEncoding",
    "LoaderError",
    "LoaderOptions",
    "LoaderStats",
    "MissingLabelError",
    "ShardPlan",
    "SourceChangedError",
    "TileDataLoader",
    "TileIterableDataset",
    "TileSource",
    "check_sources",
    "encode_labels",
    "iter_shard",
    "make_tf_dataset",
    "make_torch_loader",
    "parse_augment",
    "shard_range",
    "shard_sizes",
    "sources_from_table",
    "standardize",
    "start_pass",
]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'slidetiles.loaders' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
