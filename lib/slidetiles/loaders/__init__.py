"""Training loaders: TFRecord tiles to PyTorch ``DataLoader`` s and ``tf.data`` pipelines.

Framework-free pieces (no torch or TensorFlow import):

- :mod:`~slidetiles.loaders.sources`: :class:`TileSource` (one TFRecord: path, slide, label, record count,
  clip, weight), :func:`sources_from_table`, label encoding and the checks done before the first batch;
- :mod:`~slidetiles.loaders.sharding`: which shard reads which records, in which seeded order;
- :mod:`~slidetiles.loaders.augment`: seeded numpy augmentations (Slideflow's letters) and standardisation.

Framework loaders, imported on first use so that neither framework is imported for the other:

- :func:`make_torch_loader` / :class:`TileIterableDataset` (:mod:`~slidetiles.loaders.torch_loader`);
- :func:`make_tf_dataset` (:mod:`~slidetiles.loaders.tf_loader`).

Example:
    >>> from slidetiles.loaders import TileSource, make_torch_loader
    >>> sources = TileSource.from_paths(paths, labels={"s1": "tumor", "s2": "normal"})  # doctest: +SKIP
    >>> loader = make_torch_loader(sources, batch_size=64, num_workers=2, labels=True)  # doctest: +SKIP
"""

import importlib

from slidetiles.loaders.augment import AUGMENTATIONS, Augmenter, parse_augment, standardize
from slidetiles.loaders.sharding import ShardPlan, iter_shard, shard_range, shard_sizes
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
