"""slidetiles: Slideflow-compatible TFRecords, indexes, datasets, reproducible splits and loaders.

>>> import slidetiles
>>> tfr = slidetiles.TFRecord("slide1.tfrecords")  # doctest: +SKIP
"""

from slidetiles import errors, io, tfrecord
from slidetiles.tfrecord import TFRecord, multi_tfrecord_loader, tfrecord_loader
from slidetiles.dataset import Dataset, load_project
from slidetiles.dataset.loading import loaders_from_artifacts

__version__ = "0.1.0"

__all__ = ["Dataset", "TFRecord", "errors", "io", "load_project", "loaders_from_artifacts", "multi_tfrecord_loader", "tfrecord", "tfrecord_loader", "__version__"]
