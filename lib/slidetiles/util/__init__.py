"""Slideflow's ``sf.util`` names that TFRecord code uses: ``tfrecord2idx`` and ``example_pb2``.

Slideflow's documentation reaches the index functions and the Example message through ``sf.util``
(``sf.util.tfrecord2idx.create_index``, ``sf.util.example_pb2.Example``); these are the same objects as
:mod:`slidetiles.io.tfrecord2idx` and the message classes of :mod:`slidetiles.io.example`, not copies.
"""

import sys

from slidetiles.io import tfrecord2idx
from slidetiles.util import example_pb2

# Registered as a submodule too, so `import slidetiles.util.tfrecord2idx` and `from slidetiles.util.tfrecord2idx
# import create_index` work as they do with Slideflow, and give the one module object.
sys.modules[__name__ + ".tfrecord2idx"] = tfrecord2idx

__all__ = ["example_pb2", "tfrecord2idx"]
