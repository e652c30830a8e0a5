"""Shared fixtures: real JPEG tiles, TFRecords written by us, the Dataset tests' cohort, and a quiet real TensorFlow.

Plain helper functions are in helpers.py.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from helpers import build_cohort, write_tiles


@pytest.fixture(scope="session")
def jpeg_tiles():
    """Twelve small, real, distinct JPEG tiles cut from a histology image."""
    from slidetiles.demo import iter_tiles

    return list(iter_tiles(seed=7, n=12, px=64))


@pytest.fixture
def tile_tfrecord(tmp_path, jpeg_tiles):
    """A TFRecord of 12 JPEG tiles with locations, no index yet. Returns (path, tiles, locations)."""
    path = tmp_path / "slide1.tfrecords"
    locs = write_tiles(path, jpeg_tiles)
    return str(path), jpeg_tiles, locs


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The Dataset tests' cohort on disk (helpers.build_cohort), shared by a module's tests: they must not modify it.

    Modules that define their own ``cohort`` fixture use theirs.
    """
    return build_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def cohort_ds(cohort):
    """The Dataset of :func:`cohort`: 299 px tiles at 10x, its annotations CSV."""
    from slidetiles import Dataset

    return Dataset(tfrecords=cohort["tfrecords"], tile_px=299, tile_um="10x", annotations=cohort["csv"])


@pytest.fixture(scope="session")
def tf():
    import tensorflow

    return tensorflow


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def slideflow():
    """Slideflow 3.0.2's own data modules (tests/slideflow_ref.py), for round trips against its real functions."""
    import slideflow_ref

    try:
        return slideflow_ref.load()
    except ImportError as exc:
        if os.environ.get("SLIDETILES_REQUIRE_SLIDEFLOW") == "1":
            raise
        pytest.skip(f"Slideflow {slideflow_ref.SLIDEFLOW_VERSION} is not installed ({exc}); make install adds it")
