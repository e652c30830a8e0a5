"""slidetiles: Slideflow-compatible TFRecords, indexes, datasets, reproducible splits and loaders.

>>> import slidetiles
>>> tfr = slidetiles.TFRecord("slide1.tfrecords")  # doctest: +SKIP

Names are imported on first use, so that a per-slide pipeline job or ``slidetiles index`` that needs only the
TFRecord layer does not pay for pandas and the Dataset (about half a second per process).
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Dataset": "slidetiles.dataset",
    "load_project": "slidetiles.dataset",
    "loaders_from_artifacts": "slidetiles.dataset.artifacts",
    "TFRecord": "slidetiles.tfrecord",
    "tfrecord_loader": "slidetiles.tfrecord",
    "multi_tfrecord_loader": "slidetiles.tfrecord",
    "WSI": "slidetiles.slides.wsi",
}
_MODULES = ("errors", "io", "tfrecord", "dataset", "splits", "loaders", "pipeline", "demo", "util", "slides")

__all__ = sorted([*_LAZY, "errors", "io", "tfrecord", "util", "__version__"])


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"slidetiles.{name}")
    else:
        raise AttributeError(f"module 'slidetiles' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_MODULES))
