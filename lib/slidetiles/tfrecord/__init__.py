"""TFRecord files of tiles: :class:`TFRecord` (random access), the record stream every reader is built on
(:mod:`~slidetiles.tfrecord.stream`: a read plan, each file's records, the interleaving of files), and
Slideflow's record loaders over it (:mod:`~slidetiles.tfrecord.loaders`)."""

from slidetiles.tfrecord.file import TFRecord
from slidetiles.tfrecord.loaders import (
    FeatureTypeError,
    MissingFeatureError,
    RecordLoader,
    multi_tfrecord_loader,
    tfrecord_loader,
)
from slidetiles.tfrecord.stream import shard_bounds

__all__ = [
    "FeatureTypeError",
    "MissingFeatureError",
    "RecordLoader",
    "TFRecord",
    "multi_tfrecord_loader",
    "shard_bounds",
    "tfrecord_loader",
]
