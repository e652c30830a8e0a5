"""The ``tfrecord`` package's text index: one ``"start length"`` line per record.

The `tfrecord <https://pypi.org/project/tfrecord/>`_ package (and DALI) take an index file of lines
``"<start byte> <framed length>\\n"``, the same two numbers as ``arr_0`` of our ``.index.npz``. We name it
``<slide>.tfindex`` by default, as that package's ``create_indices`` does, and not ``<slide>.index``: Slideflow looks
for a text ``.index`` before ``.index.npz``, and its ``TFRecord()`` then fails on a text file when reading tile
locations, so a text ``.index`` beside a TFRecord would break Slideflow on that folder.
"""

from __future__ import annotations

import os

import numpy as np

import slidetiles.io.tfrecord2idx as tfrecord2idx
from slidetiles.errors import TFRecordIndexError
from slidetiles.io.writer import atomic_write

TEXT_INDEX_SUFFIX = ".tfindex"


def text_index_path(tfrecord: str | os.PathLike) -> str:
    """``/data/slide1.tfrecords`` -> ``/data/slide1.tfindex``."""
    return tfrecord2idx.index_stem(tfrecord) + TEXT_INDEX_SUFFIX


def save_text_index(arr_0: np.ndarray, index_file: str | os.PathLike) -> str:
    """Write ``arr_0`` (``[start, framed length]`` per record) as ``"start length"`` lines, atomically."""
    arr_0 = np.asarray(arr_0, dtype=np.int64).reshape(-1, 2)
    index_file = os.fspath(index_file)
    with atomic_write(index_file, "w") as f:
        f.write("".join(f"{start} {length}\n" for start, length in arr_0.tolist()))
    return index_file


def create_text_index(
    tfrecord: str | os.PathLike, index_file: str | os.PathLike | None = None, *, verify: bool = True
) -> str:
    """Write the ``tfrecord`` package's text index of ``tfrecord`` (default ``<slide>.tfindex``); returns its path.

    The offsets come from the TFRecord's current ``.index.npz`` when it has one that matches the file, else from a
    fresh scan (every CRC checked unless ``verify=False``); no ``.index.npz`` is written.

    Example:
        >>> from slidetiles.io import create_text_index
        >>> create_text_index("/data/299px_302um/slide1.tfrecords")  # doctest: +SKIP
        '/data/299px_302um/slide1.tfindex'
        >>> import tfrecord  # doctest: +SKIP
        >>> loader = tfrecord.tfrecord_loader("/data/299px_302um/slide1.tfrecords", "/data/299px_302um/slide1.tfindex")  # doctest: +SKIP
    """
    path = os.fspath(tfrecord)
    try:
        index = tfrecord2idx.read_index(path, create=False, verify=verify)
    except TFRecordIndexError:
        index = None  # stale or damaged: the file itself is the truth
    if index is None:
        index = tfrecord2idx.build_index(path, verify=verify)
    return save_text_index(index.arr_0, index_file if index_file is not None else text_index_path(path))
