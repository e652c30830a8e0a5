"""Worker processes that read, check, decode and augment a loader's batches into recycled shared memory.

Framework-free (numpy and simplejpeg only; no torch, no TensorFlow is imported here or in the workers): the
TensorFlow loader's ``num_workers`` path uses it, and any other consumer can (:meth:`BatchWorkers.batches`
yields plain numpy arrays).

Why processes: decoding is ~90% of a loader's work, and the fastest decoder measured here (simplejpeg, 1.37x
Pillow and ``tf.io.decode_jpeg`` on one core) holds the GIL while it decodes, so threads of one process decode no
faster than one thread. ``tf.data``'s own parallel ``decode_jpeg`` runs without the GIL but with the slower
decoder and per-element overhead; worker processes decoding with simplejpeg beat it (``bench_loaders.py``).

Shards and order are the torch loader's with the same ``num_workers``: worker ``w`` of rank ``r`` reads shard
``r * W + w`` of ``world_size * W`` (:mod:`slidetiles.loaders.sharding`), each pass starting with the same
:func:`~slidetiles.loaders.tile_stream.start_pass`, decodes its batches with the same code path (simplejpeg into
the batch slot, numpy augmentations from the shard's seeded stream), and batches are taken
from the workers round-robin, skipping a worker once its shard is done, as a ``DataLoader`` does. So a finite
epoch reads every tile exactly once across ranks and workers, and the same seed, epoch, ``world_size`` and
``num_workers`` give the same batches as ``make_torch_loader``.

Hand-over: each worker owns ``ring_size`` batch buffers in one shared mapping (``memfd``) made by the consumer
before the workers start; a batch crosses the pipe as a few hundred bytes (its buffer, tile count, sources and
locations), and the consumer hands out a numpy view of the buffer. A table of states in the same mapping says
who may touch each buffer:

- 0 free: only its worker may take it (0 -> 1);
- 1 filled and sent, not yet received: only the consumer moves it on (1 -> 2 on receipt, or 1 -> 0 when it
  drains a pass that was cut short);
- 2 handed out: a finalizer on the view handed out sets 0 once the last array over the batch is gone (TensorFlow
  keeps the view alive as long as any tensor over it, as it takes numpy arrays without copying).

A worker with no free buffer waits while some of its batches are still unreceived (the consumer is just slower),
and otherwise (every buffer held by the consumer, e.g. ``list(dataset)``) sends a one-off array through the
pipe, so correctness never depends on the consumer letting go.

Passes: each :meth:`BatchWorkers.batches` call is one pass (epoch) over the workers' shards. The workers persist
between passes. A pass cut short (the consumer stopped iterating) tells the workers to stop through the shared
table, then drains what they had sent. A second pass started while one is still running gets a temporary set of
workers of its own, stopped when it ends.

Errors raised in a worker (a damaged record, a tile that fails to decode, with ``on_error='raise'``) are sent
to the consumer and raised there, in order: after every batch before it. A worker that dies is reported as a
:class:`~slidetiles.loaders.sources.LoaderError` naming its exit code; the next pass starts new workers.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import multiprocessing.connection
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import reduction

import numpy as np

from slidetiles.errors import TileImageError
from slidetiles.loaders.options import LoaderOptions
from slidetiles.loaders.sources import LoaderError, TileSource
from slidetiles.loaders.tile_stream import IndexCache, decode_tile_into, start_pass

log = logging.getLogger(__name__)

__all__ = ["BatchSpec", "BatchWorkers"]

_PAGE = mmap.PAGESIZE
#: int64 entries before the state table: [0] the pass the workers should be running (0: none).
_HEADER = 8
FREE, SENT, HANDED_OUT = 0, 1, 2
#: Seconds between liveness checks while waiting on a worker.
_POLL = 1.0


class _Cancelled(Exception):
    """The pass a worker runs is no longer the consumer's (cut short, or a new one began)."""


@dataclass(frozen=True)
class BatchSpec:
    """What the workers read and how they batch it (picklable: sent to spawned workers as is).

    Attributes:
        sources: the TFRecords.
        shape: (H, W, C) of every tile (uint8); batches are ``(options.batch_size, H, W, C)``.
        options: the loader's options; the workers use ``batch_size`` (required), ``rank``, ``world_size``
            (shards are ``rank * num_workers + w`` of ``world_size * num_workers``), ``seed`` (each pass adds
            its epoch), ``infinite``, ``shuffle_buffer``, ``verify``, ``on_error``, the augmentations (numpy, in
            the workers) and ``drop_last``. ``num_workers`` is :class:`BatchWorkers`'.
    """

    sources: Sequence[TileSource]
    shape: tuple[int, int, int]
    options: LoaderOptions

    def __post_init__(self):
        if self.options.batch_size is None:
            raise LoaderError("BatchSpec: the workers need options.batch_size (tiles per batch)")

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def batch_bytes(self) -> int:
        return int(self.batch_size) * int(np.prod(self.shape))


class _Fd:
    """A file descriptor that survives every start method: inherited by forked workers, duplicated into spawned
    and forkserver ones by multiprocessing when the worker's arguments are pickled."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        return _rebuild_fd, (reduction.DupFd(self.fd),)


def _rebuild_fd(dup) -> _Fd:
    return _Fd(dup.detach())


def _shared_file(size: int) -> int:
    """A file descriptor of ``size`` bytes of shared memory that no path names (nothing to leak or unlink).

    ``memfd_create`` is not bound by the size of ``/dev/shm`` (64 MiB in a default Docker container, where named
    shared memory fails with a bus error); elsewhere an unlinked temporary file.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("slidetiles-batches", os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux
        handle = tempfile.TemporaryFile()
        fd = os.dup(handle.fileno())
        handle.close()
    os.ftruncate(fd, size)
    return fd


class _Layout:
    """Where things live in the shared mapping: the header and state table (one page), then page-aligned batch
    buffers, worker-major (page alignment also lets TensorFlow take a buffer without copying it)."""

    def __init__(self, n_workers: int, ring_size: int, batch_bytes: int):
        self.n_workers, self.ring_size = n_workers, ring_size
        table = (_HEADER + n_workers * ring_size) * 8
        self.table_bytes = -(-table // _PAGE) * _PAGE
        self.slot_bytes = -(-batch_bytes // _PAGE) * _PAGE
        self.size = self.table_bytes + n_workers * ring_size * self.slot_bytes

    def table(self, buffer) -> np.ndarray:
        return np.ndarray((_HEADER + self.n_workers * self.ring_size,), np.int64, buffer, 0)

    def slots(self, buffer, spec: BatchSpec) -> np.ndarray:
        """Every buffer as ``(n_workers * ring_size, batch_size, H, W, C)`` uint8."""
        h, w, c = (int(x) for x in spec.shape)
        shape = (self.n_workers * self.ring_size, int(spec.batch_size), h, w, c)
        return np.ndarray(shape, np.uint8, buffer, self.table_bytes, (self.slot_bytes, h * w * c, w * c, c, 1))


# -- the worker process -------------------------------------------------------------------------------------------


def _worker_main(spec: BatchSpec, worker: int, layout: _Layout, conn, shared: _Fd, parent: int) -> None:
    """A worker's life: map the shared buffers, then run each pass the consumer asks for until told to stop."""
    try:
        memory = mmap.mmap(shared.fd, layout.size)
        os.close(shared.fd)
        table = layout.table(memory)
        states = table[_HEADER + worker * layout.ring_size : _HEADER + (worker + 1) * layout.ring_size]
        slots = layout.slots(memory, spec)[worker * layout.ring_size : (worker + 1) * layout.ring_size]
        indexes = IndexCache()  # kept across passes
        while True:
            try:
                command = conn.recv()
            except EOFError:
                return  # the consumer is gone
            if command is None:
                return
            _, pass_id, epoch = command
            try:
                _run_pass(spec, worker, layout.n_workers, pass_id, epoch, table, states, slots, conn, indexes, parent)
            except _Cancelled:
                conn.send(("end", pass_id, 0))
            except (BrokenPipeError, ConnectionResetError):
                return
            except Exception as error:  # noqa: BLE001 - every error goes to the consumer, raised there in order
                try:
                    conn.send(("error", pass_id, error))
                except Exception:  # noqa: BLE001 - unpicklable: its text still says what and where
                    conn.send(("error", pass_id, LoaderError(f"{type(error).__name__}: {error}")))
    except KeyboardInterrupt:
        return  # Ctrl-C reaches the whole process group; the consumer reports it


def _take(states: np.ndarray, table: np.ndarray, pass_id: int, parent: int) -> int:
    """A free buffer of this worker (marked SENT from now on), or -1: every buffer is held by the consumer."""
    delay = 0.0002
    while True:
        free = np.flatnonzero(states == FREE)
        if free.size:
            k = int(free[0])
            states[k] = SENT
            return k
        if table[0] != pass_id:
            raise _Cancelled
        if not (states == SENT).any():
            return -1  # the consumer keeps every batch it received: do not wait for it
        if os.getppid() != parent:
            raise SystemExit(0)  # the consumer died without closing the pipe
        time.sleep(delay)
        delay = min(delay * 2, 0.005)


def _run_pass(spec, worker, n_workers, pass_id, epoch, table, states, slots, conn, indexes, parent) -> None:
    skipped = [0]

    def count(n: int) -> None:
        skipped[0] += n

    tiles, augments, on_skip = start_pass(
        spec.sources, spec.options, epoch=epoch, worker=worker, num_workers=n_workers, indexes=indexes, count=count
    )
    size, shape = int(spec.batch_size), tuple(spec.shape)
    scratch = np.empty(shape, np.uint8) if augments is not None else None
    k, out = None, None
    sources: list[int] = []
    locations: list[tuple[int, int]] = []

    def send(n):
        message = (
            "batch", pass_id, k, n, np.asarray(sources, np.int64), np.asarray(locations, np.int64).reshape(n, 2),
            out[:n] if k < 0 else None, skipped[0],
        )
        skipped[0] = 0
        conn.send(message)

    try:
        for tile in tiles:
            if out is None:
                k = _take(states, table, pass_id, parent)
                out = slots[k] if k >= 0 else np.empty((size, *shape), np.uint8)
            try:
                decode_tile_into(tile, out[len(sources)], spec.sources[tile.source].path, augments, scratch)
            except TileImageError as error:
                on_skip(error, 1)
                continue
            sources.append(tile.source)
            locations.append((tile.loc_x, tile.loc_y))
            if len(sources) == size:
                send(size)
                k, out, sources, locations = None, None, [], []
                if table[0] != pass_id:
                    raise _Cancelled
        if sources and not spec.options.drop_last:
            send(len(sources))
            k = None
    finally:
        if k is not None and k >= 0:
            states[k] = FREE  # taken but never sent
    conn.send(("end", pass_id, skipped[0]))


# -- the consumer's side ------------------------------------------------------------------------------------------


def _release(states: np.ndarray, entry: int) -> None:
    if states[entry] == HANDED_OUT:
        states[entry] = FREE


def _shutdown(processes, conns) -> None:
    """Stop workers: ask, then wait a little, then terminate (a forked sibling may hold a copy of a pipe, so a
    closed pipe alone does not always reach a worker)."""
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 5
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.terminate()
            process.join(1)
    for conn in conns:
        conn.close()


class _Pool:
    """One set of started workers and their shared buffers."""

    def __init__(self, spec: BatchSpec, n_workers: int, ring_size: int, context):
        self.spec = spec
        self.layout = _Layout(n_workers, ring_size, spec.batch_bytes)
        fd = _shared_file(self.layout.size)
        try:
            self.memory = mmap.mmap(fd, self.layout.size)
            self.table = self.layout.table(self.memory)
            self.slots = self.layout.slots(self.memory, spec)
            self.processes, self.conns = [], []
            try:
                for worker in range(n_workers):
                    ours, theirs = context.Pipe(duplex=True)
                    self.conns.append(ours)
                    process = context.Process(
                        target=_worker_main,
                        args=(spec, worker, self.layout, theirs, _Fd(fd), os.getpid()),
                        name=f"slidetiles-batches-{worker}",
                        daemon=True,
                    )
                    process.start()
                    theirs.close()
                    self.processes.append(process)
            except BaseException:
                _shutdown(self.processes, self.conns)  # the ones already started
                raise
        finally:
            os.close(fd)  # the mapping and the workers' copies keep the memory
        self.passes = 0
        self.broken = False
        # The buffers are not unmapped here: batches handed out keep the mapping alive as long as they live.
        self._finalizer = weakref.finalize(self, _shutdown, self.processes, self.conns)

    @property
    def states(self) -> np.ndarray:
        return self.table[_HEADER:]

    def close(self) -> None:
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _died(self, worker: int) -> LoaderError:
        self.broken = True
        process = self.processes[worker]
        process.join(1)
        return LoaderError(
            f"loader worker {worker} (pid {process.pid}) died with exit code {process.exitcode}; "
            "the next pass starts new workers"
        )

    def _recv(self, worker: int):
        conn, process = self.conns[worker], self.processes[worker]
        try:
            while not conn.poll(_POLL):
                if not process.is_alive():
                    raise self._died(worker)
            return conn.recv()
        except (EOFError, OSError):
            raise self._died(worker) from None

    def alive(self) -> bool:
        return not self.broken and all(p.is_alive() for p in self.processes)

    def _receive(self, worker: int, message) -> tuple:
        _, _, k, n, sources, locations, array, _ = message
        if k < 0:
            return array, sources, locations
        entry = worker * self.layout.ring_size + k
        self.states[entry] = HANDED_OUT
        view = self.slots[entry][:n]  # a new array object: its lifetime is the batch's
        weakref.finalize(view, _release, self.states, entry)
        return view, sources, locations

    def _discard(self, worker: int, message) -> None:
        if message[0] == "batch" and message[2] >= 0:
            self.states[worker * self.layout.ring_size + message[2]] = FREE

    def _next_ready(self, active: list[int]) -> int:
        """A worker of ``active`` with a message waiting (the first one found)."""
        conns = {self.conns[w]: w for w in active}
        while True:
            ready = multiprocessing.connection.wait(list(conns), _POLL)
            if ready:
                return conns[ready[0]]
            for worker in active:
                if not self.processes[worker].is_alive():
                    raise self._died(worker)

    def run(self, epoch: int, count, ordered: bool = True) -> Iterator[tuple]:
        """One pass: ``(images, sources, locations)`` per batch, round-robin over the workers (``ordered``) or
        from whichever worker has a batch ready first."""
        self.passes += 1
        pass_id = self.passes
        self.table[0] = pass_id
        for worker, conn in enumerate(self.conns):
            try:
                conn.send(("pass", pass_id, int(epoch)))
            except OSError:
                raise self._died(worker) from None
        active = list(range(len(self.conns)))
        done: set[int] = set()
        position = 0
        try:
            while active:
                worker = active[position] if ordered else self._next_ready(active)
                message = self._recv(worker)
                if message[1] != pass_id:  # left over from an earlier pass (should have been drained)
                    self._discard(worker, message)
                    continue
                count(message[-1] if message[0] != "error" else 0)
                if message[0] == "end":
                    done.add(worker)
                    active.remove(worker)
                    position = position % len(active) if active else 0
                    continue
                if message[0] == "error":
                    done.add(worker)
                    raise message[2]
                yield self._receive(worker, message)
                if ordered:
                    position = (position + 1) % len(active)
        finally:
            self._end(pass_id, done, count)

    def _end(self, pass_id: int, done: set[int], count) -> None:
        """Stop the pass in every worker still in it and drain what they sent (freeing their buffers)."""
        self.table[0] = 0
        if self.broken:
            return
        try:
            for worker in range(len(self.conns)):
                while worker not in done:
                    message = self._recv(worker)
                    if message[1] == pass_id and message[0] in ("end", "error"):
                        done.add(worker)
                    if message[0] != "error":
                        count(message[-1])
                    self._discard(worker, message)
        except (LoaderError, OSError):
            self.broken = True


class BatchWorkers:
    """Worker processes producing the batches of :class:`BatchSpec` for one consumer (see the module docstring).

    Args:
        spec: what to read and how to batch it.
        num_workers: worker processes (>= 1).
        ring_size: batch buffers per worker (the consumer may hold ``num_workers * ring_size`` batches before
            workers fall back to one-off arrays).
        multiprocessing_context: start method or context (default ``'fork'`` where available: no re-import of
            the training script, and the workers never touch TensorFlow; ``'spawn'`` and ``'forkserver'`` work).

    Example:
        >>> spec = BatchSpec(sources, (299, 299, 3), LoaderOptions(batch_size=64, seed=0))  # doctest: +SKIP
        >>> workers = BatchWorkers(spec, num_workers=2)  # doctest: +SKIP
        >>> for images, sources, locations in workers.batches(epoch=0):  # doctest: +SKIP
        ...     ...  # images: (n, 299, 299, 3) uint8 view of a shared buffer, valid while referenced
        >>> workers.close()  # doctest: +SKIP
    """

    def __init__(self, spec: BatchSpec, num_workers: int, *, ring_size: int = 6, multiprocessing_context=None):
        if isinstance(num_workers, bool) or int(num_workers) < 1:
            raise LoaderError(f"num_workers must be >= 1 for worker processes, got {num_workers!r}")
        spec.options.shard_plan(int(num_workers))  # validates
        self.spec = spec
        self.num_workers = int(num_workers)
        self.ring_size = max(1, int(ring_size))
        context = multiprocessing_context
        if context is None:
            context = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        self.context = multiprocessing.get_context(context) if context is None or isinstance(context, str) else context
        self._lock = threading.Lock()
        self._pool: _Pool | None = None
        self._busy = False
        self.skipped = 0

    def _count(self, n: int) -> None:
        with self._lock:
            self.skipped += int(n)

    def _acquire(self) -> tuple[_Pool, bool]:
        with self._lock:
            if not self._busy:
                self._busy = True
                try:
                    if self._pool is None or not self._pool.alive():
                        if self._pool is not None:
                            if not self._pool.broken:
                                log.warning("a loader worker died between passes; starting new workers")
                            self._pool.close()
                        self._pool = _Pool(self.spec, self.num_workers, self.ring_size, self.context)
                except BaseException:
                    self._busy = False
                    raise
                return self._pool, False
        # Another pass is running on the persistent workers: this one gets its own.
        return _Pool(self.spec, self.num_workers, self.ring_size, self.context), True

    def batches(
        self, epoch: int, count=None, *, ordered: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One pass over the workers' shards in ``epoch``'s order: ``(images, sources, locations)`` per batch.

        Batches come round-robin from the workers (``ordered``, reproducible), or from whichever worker has one
        ready first (``ordered=False``: a worker that the OS runs less often does not hold the others up; each
        worker's batches keep their order, and a finite pass still reads every tile once).

        ``images`` is ``(n, H, W, C)`` uint8 (a view of a shared buffer, recycled once no array refers to it),
        ``sources`` the index of each tile's source, ``locations`` ``(n, 2)`` int64 tile centres (-1: none).
        ``count(n)`` is called with records skipped (``on_error='skip'``), also counted in :attr:`skipped`.

        Raises:
            TFRecordError, TileImageError: from a worker, with ``on_error='raise'`` (after every batch before it).
            LoaderError: a worker died.
        """

        def counting(n: int) -> None:
            if n:
                self._count(n)
                if count is not None:
                    count(n)

        pool, temporary = self._acquire()
        try:
            yield from pool.run(epoch, counting, ordered)
        finally:
            if temporary:
                pool.close()
            else:
                with self._lock:
                    self._busy = False

    def pids(self) -> list[int]:
        """Process ids of the live persistent workers (none before the first pass; tests and diagnostics)."""
        pool = self._pool
        if pool is None or pool.closed:
            return []
        return [p.pid for p in pool.processes if p.is_alive()]

    def in_use(self) -> int:
        """Batch buffers not free (held by the consumer, or in flight)."""
        pool = self._pool
        return 0 if pool is None else int(np.count_nonzero(pool.states))

    def close(self) -> None:
        """Stop the persistent workers now (the next pass starts new ones); batches handed out stay valid."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
