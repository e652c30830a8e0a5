"""The record stream under every reader: a read plan, each file's records, and the interleaving of files.

A record travels::

    file --index (arr_0)--> read_batch       one pread of up to batch_bytes of consecutive records, frames checked
         --> file_records                    one file's range of the plan, batch by batch; each record handed to
                                             the caller's parse (a dict, a RawTile...); damaged records raised or
                                             skipped as the plan says; over and over when infinite
         --> interleave                      the next file drawn by the plan's rule, one record at a time

Both record readers are thin adapters over this module: the Slideflow-compatible loaders
(:mod:`slidetiles.tfrecord.loaders`: ``tfrecord_loader``, ``multi_tfrecord_loader``; records as dicts) and the
training loaders' shards (:mod:`slidetiles.loaders.tile_stream`: tiles on their way to a batch). What differs
between them is data in the :class:`ReadPlan` (ranges, weights, draw rule, error policy), not code.

Reads go through the index, so a damaged record spoils only itself, and no file stays open between batches:
interleaving thousands of TFRecords holds neither thousands of file descriptors nor a large buffer per file
(the plan's ``memory_budget`` is shared by the files it reads).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import numpy as np

from slidetiles.errors import CorruptLengthError, CorruptRecordError, TFRecordError, TruncatedRecordError
from slidetiles.io.framing import FOOTER, HEADER, HEADER_SIZE, SCAN_ROW, fast_scanner, masked_crc32c

__all__ = ["DRAWS", "MAX_BATCH_BYTES", "ReadPlan", "file_records", "interleave", "read_batch", "shard_bounds"]

#: Largest read for one file at a time; with many files interleaved it shrinks to fit the plan's memory budget.
MAX_BATCH_BYTES = 1 << 20
#: Records considered for one batch: enough for 1 MiB of realistic tiles, few enough that finding the batch's end
#: costs nothing next to reading it, however long the file.
_BATCH_WINDOW = 1024
#: Files are drawn this many at a time: one Generator call per block instead of one per record.
_BLOCK = 1024

T = TypeVar("T")
#: ``on_skip(error, n_records)``: told of each damaged record (or run of records) reading resumes after; it may raise.
SkipHandler = Callable[[Exception, int], None]
#: ``parse(file, record, offset, payload)``: what a reader makes of one record's payload (a view into its batch).
Parse = Callable[[int, int, int, memoryview], T]


def shard_bounds(n_records: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """Record range ``[lo, hi)`` of shard ``(i, n)``: contiguous, disjoint, and together covering every record."""
    if shard is None:
        return 0, n_records
    try:
        shard_id, n_shards = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be a pair (shard_id, n_shards), got {shard!r}") from None
    if n_shards < 1 or not 0 <= shard_id < n_shards:
        raise ValueError(f"shard {shard!r}: need n_shards >= 1 and 0 <= shard_id < n_shards")
    return shard_id * n_records // n_shards, (shard_id + 1) * n_records // n_shards


def read_batch(
    path: str, arr_0: np.ndarray, lo: int, hi: int, verify: bool = True, batch_bytes: int = MAX_BATCH_BYTES,
    skipped: list | None = None,
) -> tuple[int, list[tuple[int, int, memoryview]]]:
    """Read the next batch of records ``lo..`` (below ``hi``) of ``path`` with one ``pread``.

    Returns ``(next record, [(record, offset, payload view), ...])``: at most ``batch_bytes`` (at least one
    record), stopping before a damaged record so that the good ones before it are delivered first; the damaged
    record is raised when it heads the batch (a payload failing its CRC is appended to ``skipped`` instead, when
    given). The frames are checked by the C walker in one call where it is available, else record by record.
    """
    window = arr_0[lo : min(hi, lo + _BATCH_WINDOW)]
    ends_array = window[:, 0] + window[:, 1]
    start = int(window[0, 0])
    j = min(max(int(np.searchsorted(ends_array, start + batch_bytes, side="right")), 1), len(window))
    offsets = window[:j, 0].tolist()
    ends = ends_array[:j].tolist()
    stop = ends[-1]
    with open(path, "rb", buffering=0) as f:
        data = os.pread(f.fileno(), stop - start, start)
    if len(data) < stop - start:
        bad = next(k for k in range(j) if ends[k] - start > len(data))
        if bad:
            j, offsets, ends = bad, offsets[:bad], ends[:bad]
        else:
            raise TruncatedRecordError(
                path, "the file ends inside this record; it is shorter than its index says", lo, offsets[0]
            )
    view = memoryview(data)
    items = []
    k = 0
    fast = fast_scanner(verify)
    if fast is not None:
        _, rows, _ = fast(data, 0, len(data), start, verify, False)
        for offset, framed, _, _ in SCAN_ROW.iter_unpack(rows):
            if k >= j or offset != offsets[k] or offset + framed != ends[k]:
                break
            rel = offset - start
            items.append((lo + k, offset, view[rel + HEADER_SIZE : rel + framed - 4]))
            k += 1
    # What the C walker stopped at (or everything, without it), one record at a time.
    for k in range(k, j):
        offset = offsets[k]
        rel = offset - start
        framed = ends[k] - offset
        length, length_crc = HEADER.unpack_from(data, rel)
        record = lo + k
        error = None
        if length + 16 != framed:
            error = CorruptLengthError(
                path,
                f"the record header says {length} payload bytes, the index {framed - 16}: the length is "
                "damaged or the index is stale (rebuild it with `slidetiles index --force`)",
                record,
                offset,
            )
        elif verify and masked_crc32c(view[rel : rel + 8]) != length_crc:
            error = CorruptLengthError(path, "the record length fails its CRC", record, offset)
        payload = view[rel + HEADER_SIZE : rel + HEADER_SIZE + length]
        if error is None and verify and masked_crc32c(payload) != FOOTER.unpack_from(data, rel + HEADER_SIZE + length)[0]:
            error = CorruptRecordError(path, f"the {length}-byte payload fails its CRC", record, offset)
            if skipped is not None:
                skipped.append(error)
                continue
        if error is not None:
            if items:
                return record, items
            raise error
        items.append((record, offset, payload))
    return lo + j, items


#: How :func:`interleave` draws the next file (see :class:`ReadPlan`).
DRAWS = ("weights", "slideflow", "once")


@dataclass(frozen=True, eq=False)
class ReadPlan:
    """What one pass reads: which records of which files, in which kind of order, and what a damaged record does.

    Attributes:
        paths: the TFRecords.
        index_of: ``index_of(i)`` is the ``arr_0`` index of file ``i`` (``[start, framed length]`` per record);
            called when the file is first read, so a loader can load indexes lazily.
        ranges: the records ``[lo, hi)`` read of each file (its shard, after clip).
        weights: one per file, for the weighted draws (need not be normalised).
        draw: how the next file is drawn, one of :data:`DRAWS`:

            - ``'weights'``: blocks of 1024 files drawn by weight (``Generator.choice``); what the training
              loaders' infinite mode samples with.
            - ``'slideflow'``: each record draws its file by weight from uniform draws made 1024 at a time, as
              ``multi_tfrecord_loader`` always has. The same distribution as ``'weights'``; kept apart because
              it fixes the sequence a seed gives that loader's users.
            - ``'once'``: every record of every range exactly once, the files in a uniformly random interleaving
              (multivariate hypergeometric blocks of 1024); weights play no part.

        infinite: an exhausted file starts over (a pass over it that yields nothing ends it for good).
        starts: where each file's reading starts in its range (wrapping round to ``lo``); None: at ``lo``.
        shuffle_batches: yield each read batch's records in a random order (from the pass's Generator).
        verify: check both CRCs of every record.
        on_skip: None: a damaged record raises. Otherwise it is called as ``on_skip(error, n_records)`` with
            every damaged record (or run of records lost to a truncation), and reading goes on after it; it may
            raise to stop after all.
        memory_budget: read-ahead bytes shared by the files read at once (each reads at most
            :data:`MAX_BATCH_BYTES` at a time).
    """

    paths: Sequence[str]
    index_of: Callable[[int], np.ndarray]
    ranges: Sequence[tuple[int, int]]
    weights: np.ndarray
    draw: str = "weights"
    infinite: bool = False
    starts: Sequence[int] | None = None
    shuffle_batches: bool = False
    verify: bool = True
    on_skip: SkipHandler | None = None
    memory_budget: int = MAX_BATCH_BYTES

    def __post_init__(self):
        if self.draw not in DRAWS:
            raise ValueError(f"draw must be one of {DRAWS}, got {self.draw!r}")

    @cached_property
    def active(self) -> list[int]:
        """The files with records to read (and, for the weighted draws, a weight above 0)."""
        weighted = self.draw != "once"
        return [i for i, (lo, hi) in enumerate(self.ranges) if hi > lo and (not weighted or self.weights[i] > 0)]

    @cached_property
    def batch_bytes(self) -> int:
        """Largest read of one file: the memory budget shared by the active files, at most 1 MiB."""
        return int(min(MAX_BATCH_BYTES, max(1, self.memory_budget // max(len(self.active), 1))))


def file_records(plan: ReadPlan, i: int, parse: Parse, rng: np.random.Generator | None = None) -> Iterator:
    """``parse(i, record, offset, payload)`` of each record of file ``i``'s range: ``start..hi-1`` then
    ``lo..start-1``, over and over when ``plan.infinite``.

    Records come one ``pread`` batch at a time (up to ``plan.batch_bytes`` of consecutive records). With
    ``plan.shuffle_batches`` each batch is parsed whole and yielded in an order drawn from ``rng`` (which mixes
    neighbouring tiles at no memory cost); otherwise each record is parsed when it is reached.

    A damaged record (bad CRC, bad length field, or a :class:`~slidetiles.errors.TFRecordError` from ``parse``)
    spoils only itself: it goes to ``plan.on_skip`` and reading resumes at the next record; a file cut short
    loses everything after the cut. A pass that yields nothing ends the stream, so an infinite reader cannot spin
    on a file whose every record is damaged.
    """
    path = plan.paths[i]
    lo, hi = plan.ranges[i]
    start = lo if plan.starts is None else int(plan.starts[i])
    arr_0 = plan.index_of(i)
    on_skip = plan.on_skip
    skipped: list | None = [] if on_skip is not None else None
    verify, batch_bytes, shuffle = plan.verify, plan.batch_bytes, plan.shuffle_batches
    while True:
        produced = False
        for run_lo, run_hi in ((start, hi), (lo, start)):
            pos = run_lo
            while pos < run_hi:
                try:
                    pos, items = read_batch(path, arr_0, pos, run_hi, verify, batch_bytes, skipped)
                except TFRecordError as error:
                    if on_skip is None:
                        raise
                    if isinstance(error, TruncatedRecordError) or error.record is None:
                        on_skip(error, run_hi - (error.record if error.record is not None else pos))
                        pos = run_hi
                    else:
                        on_skip(error, 1)
                        pos = error.record + 1
                    continue
                if skipped:
                    for error in skipped:
                        on_skip(error, 1)
                    skipped.clear()
                if not shuffle:
                    for record, offset, payload in items:
                        try:
                            value = parse(i, record, offset, payload)
                        except TFRecordError as error:
                            if on_skip is None:
                                raise
                            on_skip(error, 1)
                            continue
                        produced = True
                        yield value
                    continue
                values = []
                for record, offset, payload in items:
                    try:
                        values.append(parse(i, record, offset, payload))
                    except TFRecordError as error:
                        if on_skip is None:
                            raise
                        on_skip(error, 1)
                del items  # the payload views pin the batch; parse keeps copies of what it needs
                if not values:
                    continue
                produced = True
                if len(values) == 1:
                    yield values[0]
                else:
                    for j in rng.permutation(len(values)).tolist():
                        yield values[j]
        if not plan.infinite or not produced:
            return


def interleave(plan: ReadPlan, parse: Parse, rng: np.random.Generator) -> Iterator:
    """The records of the plan's files (each read by :func:`file_records`) in one stream, the next file drawn by
    ``plan.draw`` with ``rng``. Ends when every file is done: exhausted (finite), or nothing readable left."""
    draws = _DRAWERS[plan.draw](plan, rng)
    streams: dict[int, Iterator] = {}
    end = _END
    while True:
        block = draws.next_block()
        if block is None:
            return
        for position, i in enumerate(block):
            stream = streams.get(i)
            if stream is None:
                stream = streams[i] = file_records(plan, i, parse, rng)
            item = next(stream, end)
            if item is end:
                streams[i] = iter(())
                if draws.drop(i, position + 1):
                    break
                continue
            yield item


_END = object()


class _Weights:
    """``draw='weights'``: blocks of files drawn by weight; a file with nothing left leaves the pool, and the rest
    of its block is redrawn with the others' weights."""

    def __init__(self, plan: ReadPlan, rng: np.random.Generator):
        self.rng = rng
        self.weights = np.asarray(plan.weights, dtype=np.float64)
        self.pool = np.asarray(plan.active, dtype=np.int64)

    def next_block(self) -> list[int] | None:
        pool = self.pool
        if not len(pool):
            return None
        p = self.weights[pool] / self.weights[pool].sum()
        return self.rng.choice(pool, size=_BLOCK, p=p).tolist()

    def drop(self, i: int, used: int) -> bool:
        self.pool = self.pool[self.pool != i]
        return True


class _Slideflow:
    """``draw='slideflow'``: one uniform draw per record against the cumulative weights of the files left. The
    draws do not depend on the weights, so a block of them stays valid when a file leaves: the rest of the block
    is mapped again onto the files left."""

    def __init__(self, plan: ReadPlan, rng: np.random.Generator):
        self.rng = rng
        self.weights = np.asarray(plan.weights, dtype=np.float64)
        self.active = list(plan.active)
        self.cumulative = np.cumsum(self.weights[self.active])
        self.draws = np.empty(0)
        self.used = 0  # draws consumed, up to the start of the block handed out
        self.block_start = 0

    def next_block(self) -> list[int] | None:
        if not self.active:
            return None
        if self.used == len(self.draws):
            self.draws = self.rng.random(_BLOCK)
            self.used = 0
        cumulative = self.cumulative
        slots = np.searchsorted(cumulative, self.draws[self.used :] * cumulative[-1], side="right")
        self.block_start, self.used = self.used, len(self.draws)
        return np.asarray(self.active)[np.minimum(slots, len(self.active) - 1)].tolist()

    def drop(self, i: int, used: int) -> bool:
        self.used = self.block_start + used
        self.active.remove(i)
        self.cumulative = np.cumsum(self.weights[self.active]) if self.active else np.empty(0)
        return True


class _Once:
    """``draw='once'``: blocks drawn by the records each file has left (a multivariate hypergeometric draw, then
    shuffled), so the whole pass is a uniformly random interleaving of every record, in bounded memory."""

    def __init__(self, plan: ReadPlan, rng: np.random.Generator):
        self.rng = rng
        self.remaining = np.zeros(len(plan.ranges), dtype=np.int64)
        for i in plan.active:
            lo, hi = plan.ranges[i]
            self.remaining[i] = hi - lo

    def next_block(self) -> list[int] | None:
        left = int(self.remaining.sum())
        if left == 0:
            return None
        counts = self.rng.multivariate_hypergeometric(self.remaining, min(_BLOCK, left))
        self.remaining -= counts
        order = np.repeat(np.arange(len(self.remaining)), counts)
        self.rng.shuffle(order)
        return order.tolist()

    def drop(self, i: int, used: int) -> bool:
        # Fewer records than planned (some skipped as damaged): the rest of this file's draws read nothing.
        self.remaining[i] = 0
        return False


_DRAWERS = {"weights": _Weights, "slideflow": _Slideflow, "once": _Once}
