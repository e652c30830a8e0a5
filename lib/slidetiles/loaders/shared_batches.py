"""Batches from DataLoader workers to the training process through recycled shared-memory buffers.

Why not let torch send each batch tensor: a worker that puts a fresh tensor on the DataLoader's queue pays for
it three times over. Decoding into fresh shared memory costs ~65 page faults per 299-px tile (the kernel zero-fills
every shm page on first touch; measured +220 us per tile on top of a ~310 us decode, and torch's default_collate
allocates the same way). Every tensor, the 64 labels included, crosses as a shared-memory file descriptor handed
over through multiprocessing's resource sharer (a socket connection and an authentication handshake per tensor)
and mapped afresh by the receiver. Measured when this module replaced that, at 64 tiles a batch: worker CPU
446 -> 364 us a tile and training-process CPU 20 -> 8 us a tile in one run; with the C tile parser that came with
it, 394 -> 352 and 16 -> 8 (medians of three alternating before/after runs).

So each worker decodes into a small ring of shared-memory batch buffers, sends each buffer's file descriptor once,
and from then on sends only which buffer holds the batch (plus the labels and locations, by value: a few hundred
bytes). The training process keeps every buffer mapped and hands out a view of it per batch.

A buffer may be reused only once the training process has let go of the batch; the protocol:

- ``tickets``, a shared int64 table (``MAX_WORKERS`` x ``RING``), holds 0 for a free buffer, else the token of
  the batch that holds it. A worker takes a buffer only when it reads 0 and writes a fresh token; the training
  process clears an entry only when it still holds the token of the batch being freed. Each state has one writer,
  so there is no race, and a stale release (a batch of an earlier worker process) cannot free a newer buffer.
- Each batch arrives as a new numpy view of the mapped buffer, wrapped by ``torch.from_numpy``; the tensor's
  storage owns that view, so a finalizer on the view runs when the last tensor (or numpy array) over the batch is
  gone, however the training step slices, permutes or converts it. Every batch is unpickled by the training
  process, including those the DataLoader drains internally when an epoch is cut short, so every buffer
  handed out is eventually released.
- If every buffer is out (a consumer that keeps batches), the worker sends a one-off buffer the way torch would:
  correctness never depends on the consumer.
"""

from __future__ import annotations

import os
import uuid
import weakref
from typing import Any

import numpy as np
import torch

__all__ = ["MAX_WORKERS", "RING", "BatchRing", "SharedBatch", "assemble", "shared_empty"]

#: Worker slots of the tickets table; workers with a higher id send one-off buffers.
MAX_WORKERS = 64
#: Most buffers one worker may cycle through (make_torch_loader uses prefetch_factor + 3: the batches in the
#: queue, the one the training step holds, the one it just dropped, one being filled).
RING = 8

#: Receivers of this process by ring id: where an arriving batch finds its mapped buffers.
_RECEIVERS: "weakref.WeakValueDictionary[str, _Receiver]" = weakref.WeakValueDictionary()


def shared_empty(shape, dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory (sending it to another process then copies nothing)."""
    numel = int(np.prod(shape))
    try:
        elem = torch.empty(0, dtype=dtype)
        storage = elem._typed_storage()._new_shared(numel, device="cpu")
        return elem.new(storage).resize_(shape)
    except (AttributeError, RuntimeError):  # private API gone: torch copies into shared memory at send time
        return torch.empty(shape, dtype=dtype)


class _Receiver:
    """The training process's side: the buffers each worker slot has sent, kept mapped."""

    def __init__(self, tickets: torch.Tensor):
        self.tickets = tickets.numpy()
        self.pids: dict[int, int] = {}
        self.buffers: dict[tuple[int, int], np.ndarray] = {}
        self.batches = self.mapped = 0  # batches received, and buffers mapped on the way (diagnostics)

    def store(self, slot: int, pid: int, k: int, buffer: np.ndarray) -> None:
        if self.pids.get(slot) != pid:  # a new worker process in this slot: its predecessor's buffers are dead
            self.forget(slot)
            self.pids[slot] = pid
        self.buffers[slot, k] = buffer

    def lookup(self, slot: int, pid: int, k: int) -> np.ndarray:
        buffer = self.buffers.get((slot, k))
        if buffer is None or self.pids.get(slot) != pid:
            raise RuntimeError(
                f"a DataLoader worker (pid {pid}) sent batch buffer {k} before sending the buffer itself; "
                "this is a bug in slidetiles, please report it"
            )
        return buffer

    def forget(self, slot: int | None = None) -> None:
        """Unmap the buffers of one worker slot (all with None); batches still held keep theirs."""
        for key in [key for key in self.buffers if slot is None or key[0] == slot]:
            del self.buffers[key]
        if slot is None:
            self.pids.clear()
        else:
            self.pids.pop(slot, None)


def _release(tickets: np.ndarray, entry: int, token: int) -> None:
    if tickets[entry] == token:
        tickets[entry] = 0


def _receive(ring_id, slot, pid, k, token, buffer, n, channels_last, rest) -> tuple:
    """Runs where a batch is unpickled (the training process): the batch as the tuple the loader yields."""
    receiver = _RECEIVERS.get(ring_id)
    if receiver is not None:
        receiver.batches += 1
        receiver.mapped += buffer is not None
    if k < 0:  # a one-off buffer: use it as torch sent it
        images = buffer[:n]
    else:
        if receiver is None:
            raise RuntimeError("a batch arrived for a TileIterableDataset that no longer exists in this process")
        if buffer is not None:
            receiver.store(slot, pid, k, buffer.numpy())
        view = receiver.lookup(slot, pid, k)[:n]  # a new array object: its lifetime is the batch's
        weakref.finalize(view, _release, receiver.tickets, slot * RING + k, token)
        images = torch.from_numpy(view)
    return assemble(images, channels_last, rest)


def assemble(images: torch.Tensor, channels_last: bool, rest) -> tuple:
    """The tuple a loader yields: ``images`` as (N, C, H, W) (a view when stored channels-last) and ``rest``,
    numpy arrays as tensors sharing their memory."""
    if channels_last:
        images = images.permute(0, 3, 1, 2)
    return (images, *(torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in rest))


class SharedBatch:
    """What a worker yields: pickles to the batch buffer's place (and the buffer itself the first time)."""

    __slots__ = ("args",)

    def __init__(self, args: tuple):
        self.args = args

    def __reduce__(self):
        return (_receive, self.args)


class _WorkerRing:
    """One worker's ring of shared-memory batch buffers."""

    def __init__(self, ring: "BatchRing", worker: int, size: int):
        self.ring = ring
        self.slot = worker
        self.row = ring.tickets.numpy()[worker * RING : worker * RING + max(1, min(size, RING))]
        self.buffers: dict[int, torch.Tensor] = {}
        self.sent: set[int] = set()
        self.pid = os.getpid()
        self.count = 0

    def take(self, shape, dtype) -> tuple[torch.Tensor, int, int]:
        """A free buffer of this shape and dtype, its ring index and its token (index -1: a one-off buffer)."""
        for k in np.flatnonzero(self.row == 0).tolist():
            buffer = self.buffers.get(k)
            if buffer is None or tuple(buffer.shape) != tuple(shape) or buffer.dtype != dtype:
                buffer = self.buffers[k] = shared_empty(shape, dtype)
                self.sent.discard(k)
            self.count += 1
            token = ((self.pid & 0x7FFFFFFF) << 32 | (self.count & 0xFFFFFFFF)) or 1
            self.row[k] = token
            return buffer, k, token
        return shared_empty(shape, dtype), -1, 0

    def package(self, buffer: torch.Tensor, k: int, token: int, n: int, channels_last: bool, rest: tuple):
        """The batch in ``buffer[:n]`` (and ``rest``: numpy arrays become tensors on arrival) as a SharedBatch."""
        send = buffer if k < 0 or k not in self.sent else None
        if k >= 0:
            self.sent.add(k)
        return SharedBatch((self.ring.id, self.slot, self.pid, k, token, send, n, channels_last, rest))


class BatchRing:
    """Shared state of one dataset's recycled batch buffers: the tickets table, this process's receiver, and (in a
    worker) that worker's ring. Pickles (to spawned workers) as the table and its id."""

    def __init__(self):
        self.tickets = torch.zeros(MAX_WORKERS * RING, dtype=torch.int64).share_memory_()
        self.id = uuid.uuid4().hex
        self._attach()

    def _attach(self):
        receiver = _RECEIVERS.get(self.id)
        if receiver is None:
            receiver = _RECEIVERS[self.id] = _Receiver(self.tickets)
        self._receiver = receiver  # held here: the WeakValueDictionary entry lives as long as the dataset
        self._worker: _WorkerRing | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tickets": self.tickets, "id": self.id}

    def __setstate__(self, state) -> None:
        self.tickets, self.id = state["tickets"], state["id"]
        self._attach()

    def worker_ring(self, worker: int, size: int) -> _WorkerRing | None:
        """This worker process's ring (None past MAX_WORKERS workers: those send one-off buffers)."""
        if worker >= MAX_WORKERS:
            return None
        if self._worker is None or self._worker.pid != os.getpid():
            self._worker = _WorkerRing(self, worker, size)
        return self._worker

    def in_use(self) -> int:
        """Buffers currently held by batches (tests and diagnostics)."""
        return int(np.count_nonzero(self.tickets.numpy()))

    def received(self) -> tuple[int, int]:
        """(batches received, buffers that came with them: the ring's, once each, and one-off ones) in this process
        (tests and diagnostics)."""
        return self._receiver.batches, self._receiver.mapped

    def forget(self) -> None:
        """Unmap every worker's buffers in this process (after the workers are stopped)."""
        self._receiver.forget()
