"""``tf.train.Example`` and its parts without TensorFlow, under the name Slideflow uses (``sf.util.example_pb2``).

The classes are those of :mod:`slidetiles.io.example` (wire-identical to TensorFlow's ``example.proto``), so
``Example.FromString(payload).features.feature['slide'].bytes_list.value`` reads a tile record as with Slideflow.
``SequenceExample`` and ``FeatureLists`` are not provided: tile TFRecords hold plain Examples.
"""

from slidetiles.io.example import BytesList, Example, Feature, Features, FloatList, Int64List

__all__ = ["BytesList", "Example", "Feature", "Features", "FloatList", "Int64List"]
