"""Exceptions raised by slidetiles.

Every error about a TFRecord names the file and, where it applies, the record number and the byte offset, so a user
with terabytes of files can find the bad one. They all derive from :class:`TFRecordError`, which is a
``ValueError``, so ``except ValueError`` in old code still catches them.
"""

from __future__ import annotations

import os


class SlidetilesError(Exception):
    """Base class of every error slidetiles raises on purpose."""


def listing(items, limit: int = 8, sep: str = ", ") -> str:
    """``"a, b, c"``, or ``"a, b, ... (12 in all)"`` past ``limit`` items: messages stay readable on big cohorts.

    ``sep="\\n  "`` puts one item on each indented line, for long items such as a path and its problem.
    """
    items = [str(i) for i in items]
    if len(items) <= limit:
        return sep.join(items)
    return sep.join(items[:limit]) + f"{sep}... ({len(items)} in all)"


class TFRecordError(SlidetilesError, ValueError):
    """A TFRecord file that cannot be read as it is.

    Attributes:
        path: the file.
        record: 0-based number of the record where the problem was found, or None.
        offset: byte offset of that record's frame in the file, or None.
    """

    #: What the user can do about it; subclasses override.
    hint = ""

    def __init__(self, path: str | os.PathLike, message: str, record: int | None = None, offset: int | None = None):
        self.path = os.fspath(path)
        self.record = record
        self.offset = offset
        self.detail = message
        where = self.path
        if record is not None:
            where += f", record {record}"
        if offset is not None:
            where += f" at byte offset {offset}"
        text = f"{where}: {message}"
        if self.hint:
            text += f" ({self.hint})"
        super().__init__(text)

    def __reduce__(self):
        # Keeps the error picklable across DataLoader worker processes.
        return (self.__class__, (self.path, self.detail, self.record, self.offset))


class EmptyTFRecordError(TFRecordError):
    """The file has no bytes at all: usually an interrupted copy or a slide with no tiles."""

    hint = "re-create or re-copy the file; an empty TFRecord holds no tiles"


class NotATFRecordError(TFRecordError):
    """The file does not start with a TFRecord frame (wrong file, or a GZIP/ZLIB-compressed TFRecord)."""

    hint = "check that this is an uncompressed TFRecord; GZIP/ZLIB TFRecords must be decompressed first"


class CorruptLengthError(TFRecordError):
    """A record's length field does not match its CRC: the framing is damaged from here on."""

    hint = "the file is corrupt from this offset on; re-create or re-copy it"


class CorruptRecordError(TFRecordError):
    """A record's payload does not match its CRC: the tile bytes are damaged."""

    hint = "the record's bytes are damaged; re-create or re-copy the file"


class TruncatedRecordError(TFRecordError):
    """The file ends in the middle of a record: an interrupted write or copy."""

    hint = "the file was cut short; re-create or re-copy it"


class WireError(SlidetilesError):
    """Malformed protobuf wire data met by the hand-written scanner; callers turn it into an InvalidExampleError."""


class InvalidExampleError(TFRecordError):
    """The payload passed its CRC (or CRCs were not checked) but is not a valid tf.train.Example."""

    hint = "the record is not a tf.train.Example; was the file written by another tool?"


class FileError(SlidetilesError, ValueError):
    """A file of the user's that cannot be used as asked. The message starts with the file's path.

    Attributes:
        path: the file.
        detail: the message without the path.
    """

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = os.fspath(path)
        self.detail = message
        super().__init__(f"{self.path}: {message}")

    def __reduce__(self):
        # Picklable across DataLoader worker processes (the default would call __init__ with one argument).
        return (self.__class__, (self.path, self.detail))


class TFRecordIndexError(FileError):
    """An index file that cannot be used for its TFRecord."""


class StaleIndexError(TFRecordIndexError):
    """The TFRecord changed after its index was written, and the index is not ours to rebuild."""


class TileImageError(FileError):
    """A tile image that cannot be read or stored."""


class OutputWriteError(SlidetilesError, OSError):
    """A file could not be written: the disk is full, the file is larger than allowed, the quota is spent...

    Nothing is left at ``path`` (an older file there stays as it was) and the temporary file is removed. It is an
    ``OSError`` with the original ``errno``, so ``except OSError`` still catches it.

    Attributes:
        path: the file that was being written.
    """

    def __init__(self, path: str | os.PathLike, errno: int | None, message: str):
        self.path = os.fspath(path)
        self.detail = message
        super().__init__(errno, f"{self.path}: {message}")

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):
        return (self.__class__, (self.path, self.errno, self.detail))


class SplitError(SlidetilesError, ValueError):
    """A training/validation split that cannot be made as asked (too few patients or sites, bad labels...)."""


class DatasetError(SlidetilesError, ValueError):
    """A Dataset that cannot be built or manipulated as asked (sources, filters, clipping, balancing...)."""


class AnnotationsError(DatasetError):
    """An annotations CSV or DataFrame that cannot be used: missing columns, duplicated or conflicting slides."""


class LoaderError(SlidetilesError, ValueError):
    """A training loader that cannot be built as asked (sources, labels, options)."""


class MissingLabelError(LoaderError):
    """Labels were asked for, but some slides have none.

    Attributes:
        slides: the slides without a label.
    """

    def __init__(self, slides, message: str | None = None):
        self.slides = list(slides)
        if message is None:
            message = (
                f"{len(self.slides)} slide(s) have no label: {listing(self.slides, 10)}. Give every slide a label, "
                "filter those slides out, or build the loader with labels=None"
            )
        super().__init__(message)

    def __reduce__(self):
        return (self.__class__, (self.slides, str(self)))


class SourceChangedError(LoaderError):
    """A TFRecord no longer matches what was counted when its source was described (e.g. in a manifest).

    Attributes:
        paths: the TFRecords that changed or disappeared.
    """

    def __init__(self, paths, message: str):
        self.paths = list(paths)
        super().__init__(message)

    def __reduce__(self):
        return (self.__class__, (self.paths, str(self)))


class ConfigError(SlidetilesError, ValueError):
    """A configuration problem found while planning or running the workflow; the message names the key."""


class SlideNameError(SlidetilesError, ValueError):
    """A slide or file name that cannot be used as a file name (it would escape its folder or break patterns)."""


class CoordPatternError(SlidetilesError, ValueError):
    """A ``coord_pattern`` that is not a regular expression with named groups ``x`` and ``y``."""


class StaleManifestError(SlidetilesError, ValueError):
    """TFRecords changed or disappeared after a manifest counted their tiles.

    Attributes:
        path: the manifest file.
        changed: TFRecords whose size or modification time differ from what the manifest recorded.
        missing: TFRecords the manifest lists that no longer exist.
    """

    def __init__(self, path, changed=(), missing=(), message: str | None = None):
        self.path = os.fspath(path)
        self.changed = list(changed)
        self.missing = list(missing)
        if message is None:
            count = len(self.changed) + len(self.missing)
            message = f"{self.path}: {count} TFRecord(s) changed after the manifest was written"
        super().__init__(message)

    def __reduce__(self):
        return (self.__class__, (self.path, self.changed, self.missing, str(self)))


class SlideError(FileError):
    """A whole-slide image that cannot be tiled as asked. The message starts with the slide's path."""


class SlideFormatError(SlideError):
    """The slide file is corrupt, truncated or in a format no installed reader opens."""


class MissingMPPError(SlideError):
    """The slide records no microns per pixel; pass ``mpp=`` to set it."""


class SlideTooSmallError(SlideError):
    """The slide (or its region) is smaller than one tile."""


class MagnificationError(SlideError):
    """The magnification asked for (``tile_um='40x'``) is finer than the slide's finest level: it would upsample."""


class QCError(SlidetilesError, ValueError):
    """Quality-control or background-filter input that cannot be used (bad thumbnail, method, mask or fraction)."""


class ROIError(SlidetilesError, ValueError):
    """A region-of-interest CSV, or ROI filtering arguments, that cannot be used as given.

    Attributes:
        path: the ROI file, or None when the problem is an argument.
        line: 1-based line of that file where the problem was found, or None.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.detail = message
        where = self.path or ""
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):
        return (self.__class__, (self.detail, self.path, self.line))


class MissingROIError(ROIError):
    """ROI filtering 'inside' or 'outside' was asked for a slide that has no ROI (Slideflow raises the same)."""
