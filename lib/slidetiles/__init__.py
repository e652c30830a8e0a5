"""slidetiles: Slideflow-compatible TFRecords, indexes, datasets, reproducible splits and loaders.

>>> import slidetiles
>>> tfr = slidetiles.TFRecord("slide1.tfrecords")  # doctest: +SKIP
"""

from slidetiles import errors, io, tfrecord
from slidetiles.tfrecord import TFRecord, multi_tfrecord_loader, tfrecord_loader

__version__ = "0.1.0"

__all__ = ["TFRecord", "errors", "io", "multi_tfrecord_loader", "tfrecord", "tfrecord_loader", "__version__"]
