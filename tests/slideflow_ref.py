"""Slideflow 3.0.2's own modules, loaded for compatibility tests.

Slideflow's top-level ``__init__`` imports its models, GUI and torchvision, none of which install on a CPU-only
machine without a matching CUDA build; the modules that read and write TFRecords, indexes, datasets and splits
don't need them. So we register a bare ``slideflow`` package whose path is the installed wheel's folder and import
the real submodules into it: every function a test calls is Slideflow's own code, unchanged. The TensorFlow
backend is chosen because its loaders need only TensorFlow (the torch backend needs torchvision).

Use the ``slideflow`` fixture (tests/conftest.py), which skips when the wheel is missing unless
SLIDETILES_REQUIRE_SLIDEFLOW=1 (as `make test` sets), so a missing install can never pass silently in CI.
"""

import importlib
import importlib.util
import os
import sys
import tempfile
import types

SLIDEFLOW_VERSION = "3.0.2"
_MODULES = ("slideflow.errors", "slideflow.util", "slideflow.io", "slideflow.tfrecord", "slideflow.dataset")


def load():
    """Import Slideflow's data modules without its top-level import; returns the ``slideflow`` package.

    Raises ImportError when slideflow is not installed (``pip install --no-deps slideflow==3.0.2``).
    """
    sf = sys.modules.get("slideflow")
    if sf is not None and getattr(sf, "_slidetiles_ref", False):
        return sf
    spec = importlib.util.find_spec("slideflow")
    if spec is None or spec.origin is None:
        raise ImportError("slideflow is not installed: pip install --no-deps slideflow==" + SLIDEFLOW_VERSION)
    os.environ.setdefault("SF_BACKEND", "tensorflow")
    sf = types.ModuleType("slideflow")
    sf.__path__ = [os.path.dirname(spec.origin)]
    sf.__file__ = spec.origin
    sf.__version__ = SLIDEFLOW_VERSION
    sf._slidetiles_ref = True
    sys.modules["slideflow"] = sf
    try:
        backend = importlib.import_module("slideflow._backend")
        sf.backend, sf.slide_backend = backend.backend, backend.slide_backend
        # Importing slideflow.util opens "slideflow.log" in the working directory: keep it out of the checkout.
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory(prefix="slideflow-log-") as scratch:
            os.chdir(scratch)
            try:
                util = importlib.import_module("slideflow.util")
            finally:
                os.chdir(cwd)
        # What Slideflow's __init__ re-exports from util and its submodules then use as sf.<name>.
        for name in ("log", "getLoggingLevel", "setLoggingLevel", "about"):
            setattr(sf, name, getattr(util, name))
        for module in _MODULES:
            importlib.import_module(module)
        sf.Dataset = sf.dataset.Dataset
        sf.TFRecord = sf.tfrecord.TFRecord
        sf.tfrecord_loader = sf.tfrecord.tfrecord_loader
        sf.multi_tfrecord_loader = sf.tfrecord.multi_tfrecord_loader
    except BaseException:
        for name in [m for m in sys.modules if m == "slideflow" or m.startswith("slideflow.")]:
            del sys.modules[name]
        raise
    return sf
