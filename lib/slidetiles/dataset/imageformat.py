"""The image format of a TFRecord, from its first record only."""

from __future__ import annotations

import os

from slidetiles.errors import TruncatedRecordError
from slidetiles.io.example import parse_example
from slidetiles.io.framing import FRAME_OVERHEAD, HEADER, HEADER_SIZE, read_frame_at
from slidetiles.io.images import detect_image_format


def first_image_format(path: str) -> str | None:
    """``'jpeg'``/``'png'`` of the first record's ``image_raw`` (CRCs checked), None for an empty TFRecord or an
    unknown format. Reads one record, never the whole file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.pread(fd, HEADER_SIZE, 0)
        if len(head) < HEADER_SIZE:
            return None
        length, _ = HEADER.unpack(head)
        # A damaged length must not make pread allocate gigabytes before the short read is noticed.
        if length + FRAME_OVERHEAD > os.fstat(fd).st_size:
            raise TruncatedRecordError(path, f"the first record claims {length} bytes, more than the file holds", 0, 0)
        payload = read_frame_at(fd, path, 0, length + FRAME_OVERHEAD, record=0)
    finally:
        os.close(fd)
    image = parse_example(payload, path=path, record=0, offset=0).get("image_raw")
    return detect_image_format(image) if isinstance(image, (bytes, bytearray, memoryview)) else None
