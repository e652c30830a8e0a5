"""TFRecord files of tiles: the :class:`TFRecord` object and the record loaders."""

from slidetiles.tfrecord.file import TFRecord
from slidetiles.tfrecord.loaders import (
    FeatureTypeError,
    MissingFeatureError,
    RecordLoader,
    multi_tfrecord_loader,
    shard_bounds,
    tfrecord_loader,
)

__all__ = [
    "FeatureTypeError",
    "MissingFeatureError",
    "RecordLoader",
    "TFRecord",
    "multi_tfrecord_loader",
    "shard_bounds",
    "tfrecord_loader",
]
