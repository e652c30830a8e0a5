"""Reading TFRecords sequentially into dicts, and checking whole files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from slidetiles.errors import InvalidExampleError, TFRecordError
from slidetiles.io.example import parse_example
from slidetiles.io.framing import scan_frames


def iter_records(
    path: str | os.PathLike,
    *,
    verify: bool = True,
    decode_slide: bool = True,
    start: int = 0,
    stop: int | None = None,
    first_record: int = 0,
    skipped: list | None = None,
) -> Iterator[dict]:
    """Yield every record of ``path`` (or of the byte range ``[start, stop)``) as a dict.

    Both CRCs of every record are checked unless ``verify=False``. Tile records come out as
    ``{'image_raw': bytes, 'slide': str, 'loc_x': int, 'loc_y': int}``. Memory use is flat whatever the file size.
    With ``skipped`` (a list), records whose payload fails its CRC are collected there instead of raised.
    """
    path = os.fspath(path)
    for record, offset, payload in scan_frames(
        path, verify=verify, start=start, stop=stop, first_record=first_record, skipped=skipped
    ):
        yield parse_example(payload, decode_slide=decode_slide, path=path, record=record, offset=offset)


@dataclass
class VerifyReport:
    """What :func:`verify_tfrecord` found in one file."""

    path: str
    records: int = 0
    errors: list[TFRecordError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def verify_tfrecord(path: str | os.PathLike) -> VerifyReport:
    """Check every CRC and that every record parses as a ``tf.train.Example``.

    Damaged payloads are all listed (the frames around them are intact); a damaged length or a truncated file
    ends the check at that record, since nothing after it can be located.
    """
    report = VerifyReport(os.fspath(path))
    try:
        for record, offset, payload in scan_frames(report.path, skipped=report.errors):
            try:
                parse_example(payload, path=report.path, record=record, offset=offset)
            except InvalidExampleError as exc:
                report.errors.append(exc)
                continue
            report.records += 1
    except TFRecordError as exc:
        report.errors.append(exc)
    report.errors.sort(key=lambda e: (e.offset is None, e.offset or 0))
    return report
