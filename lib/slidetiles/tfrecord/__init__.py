"""TFRecord files of tiles: the :class:`TFRecord` object and the record loaders."""

from slidetiles.tfrecord.file import TFRecord
from slidetiles.tfrecord.loaders import multi_tfrecord_loader, shard_bounds, tfrecord_loader

__all__ = ["TFRecord", "tfrecord_loader", "multi_tfrecord_loader", "shard_bounds"]
