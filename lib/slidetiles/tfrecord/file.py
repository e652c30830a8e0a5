"""``slidetiles.TFRecord``: one slide's TFRecord with random access through its index."""

from __future__ import annotations

import os
from collections.abc import Iterator

from slidetiles.io.example import parse_example
from slidetiles.io.framing import read_frame_at
from slidetiles.io.images import detect_image_format
from slidetiles.io.reader import iter_records
from slidetiles.io.tfrecord2idx import TFRecordIndex, build_index, read_index


class TFRecord:
    """A TFRecord of tile images, opened through its index.

    The index (``<slide>.index.npz``) is created on first use unless ``create_index=False``, in which case a
    missing index is built in memory only. Every read checks the record's CRCs unless ``verify=False``.

    Example:
        >>> tfr = TFRecord("/data/299px_302um/slide1.tfrecords")  # doctest: +SKIP
        >>> tfr.fields, tfr.img_format, len(tfr)  # doctest: +SKIP
        (['image_raw', 'slide', 'loc_x', 'loc_y'], 'jpeg', 1000)
        >>> slide, image = tfr.get_record_by_xy(768, 256)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, create_index: bool = True, verify: bool = True):
        self.path = os.fspath(path)
        self.verify = verify
        index = read_index(self.path, create=create_index, verify=verify)
        self.index: TFRecordIndex = index if index is not None else build_index(self.path, verify=verify)
        self._fd: int | None = None
        self._by_xy: dict[tuple[int, int], int] | None = None
        self._first: dict | None = None

    # -- what the file holds -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    @property
    def length(self) -> int:
        """Number of records (tiles)."""
        return len(self.index)

    @property
    def locations(self) -> list[tuple[int, int]] | None:
        """``(loc_x, loc_y)`` tile centre of every record, or None when the records carry no locations."""
        if self.index.locations is None:
            return None
        return [tuple(row) for row in self.index.locations.tolist()]

    def _first_record(self) -> dict:
        if self._first is None:
            self._first = self[0]
        return self._first

    @property
    def fields(self) -> list[str]:
        """Feature names of the records (read from the first record)."""
        return list(self._first_record().keys()) if len(self) else []

    @property
    def img_format(self) -> str | None:
        """``'jpeg'`` or ``'png'``: the format of the first record's ``image_raw`` (None if unknown or empty)."""
        if not len(self):
            return None
        image = self._first_record().get("image_raw")
        return detect_image_format(image) if isinstance(image, bytes) else None

    # -- reading ---------------------------------------------------------------------------------------------------
    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def read_payload(self, i: int) -> bytes:
        """Serialised Example of record ``i`` (CRCs checked unless ``verify=False``)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range for {self.path} ({n} records)")
        i %= n
        offset, framed = (int(v) for v in self.index.arr_0[i])
        return read_frame_at(self._descriptor(), self.path, offset, framed, verify=self.verify, record=i)

    def __getitem__(self, i: int) -> dict:
        """Record ``i`` as ``{'image_raw': bytes, 'slide': str, 'loc_x': int, 'loc_y': int}``."""
        if not isinstance(i, (int,)) and not hasattr(i, "__index__"):
            raise TypeError(f"TFRecord indices must be integers, not {type(i).__name__}")
        i = int(i)
        payload = self.read_payload(i)
        offset = int(self.index.arr_0[i % len(self), 0])
        return parse_example(payload, path=self.path, record=i % len(self), offset=offset)

    def __iter__(self) -> Iterator[dict]:
        return iter_records(self.path, verify=self.verify)

    def get_record_by_xy(self, x: int, y: int) -> tuple[str, bytes]:
        """``(slide, image bytes)`` of the tile centred at ``(x, y)``, found in constant time.

        Raises KeyError if no tile has that location (or the records carry no locations).
        """
        if self._by_xy is None:
            if self.index.locations is None:
                raise KeyError(f"{self.path} has no tile locations (records carry no loc_x/loc_y)")
            locations = list(map(tuple, self.index.locations.tolist()))
            # Filled back to front so that, as in a linear search, the first of duplicate locations wins.
            self._by_xy = {locations[i]: i for i in range(len(locations) - 1, -1, -1)}
        try:
            i = self._by_xy[(int(x), int(y))]
        except KeyError:
            raise KeyError(f"no tile at location ({x}, {y}) in {self.path}") from None
        record = self[i]
        return record["slide"], record["image_raw"]

    # -- housekeeping ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        # File descriptors do not survive pickling (DataLoader workers); reopen lazily on the other side.
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def __repr__(self) -> str:
        return f"TFRecord({self.path!r}, length={len(self)})"
