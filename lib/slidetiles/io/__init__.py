"""Reading, writing and indexing TFRecords of tile images (Slideflow's ``sf.io``)."""

from slidetiles.io import tfrecord2idx
from slidetiles.io.example import build_example, parse_example, tile_example
from slidetiles.io.images import decode_image, detect_image_format
from slidetiles.io.reader import iter_records, verify_tfrecord
from slidetiles.io.text_index import create_text_index
from slidetiles.io.tiles import write_tfrecords_multi, write_tfrecords_single
from slidetiles.io.writer import TFRecordWriter

__all__ = [
    "TFRecordWriter",
    "build_example",
    "create_text_index",
    "decode_image",
    "detect_image_format",
    "iter_records",
    "parse_example",
    "tfrecord2idx",
    "tile_example",
    "verify_tfrecord",
    "write_tfrecords_multi",
    "write_tfrecords_single",
]
