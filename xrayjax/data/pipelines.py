"""grain pipelines whose global batches do not depend on the process or worker count.

Every process builds the same global stream (seeded shuffle per epoch, augmentation seeded by
the global position), then reads only its own rows of each global batch: process p of P gets
positions [b·G + p·L, b·G + (p+1)·L) of global batch b, with G the global and L = G/P the
per-process batch. Those rows are exactly where `jax.make_array_from_process_local_data` puts
process p's data, so a run on 1 process × 4 devices and on 2 processes × 2 devices sees the
same global batches, and resuming restores the exact position.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import threading
from collections.abc import Mapping

import grain
import jax
import numpy as np

from data_prep import errors
from xrayjax.data.sources import RecordTable
from xrayjax.data.transforms import Preprocess


def per_process_batch(global_batch: int, process_count: int) -> int:
    """The rows of a global batch that each process loads; it must divide evenly."""
    if global_batch % process_count:
        raise errors.InputError(
            f"global batch {global_batch} does not divide by the {process_count} processes; "
            f"use a multiple of {process_count}"
        )
    return global_batch // process_count


def process_positions(
    local_positions: np.ndarray, global_batch: int, process_index: int, process_count: int
) -> np.ndarray:
    """Global stream positions of a process's consecutive local positions."""
    local = per_process_batch(global_batch, process_count)
    batch, row = np.divmod(np.asarray(local_positions), local)
    return batch * global_batch + process_index * local + row


class _ProcessView(grain.MapDataset):
    """A process's rows of every global batch of a (global) parent stream."""

    def __init__(self, parent, global_batch, process_index, process_count, length):
        super().__init__(parent)
        self._args = (global_batch, process_index, process_count)
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"_ProcessView(global_batch, index, count={self._args})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        position = int(process_positions(np.asarray(index), *self._args))
        return self._parent[position]


@dataclasses.dataclass(frozen=True)
class _Zip:
    names: tuple[str, ...]

    def __call__(self, elements: tuple) -> dict:
        return dict(zip(self.names, elements, strict=True))


@dataclasses.dataclass(frozen=True)
class _Padded:
    """Eval records by position; positions past the table give a blank record, valid=False."""

    table: RecordTable
    preprocess: Preprocess

    def __call__(self, position: int) -> dict:
        out = self.preprocess(self.table[min(position, len(self.table) - 1)])
        if position < len(self.table):
            out["valid"] = np.bool_(True)
            return out
        # A blank copy of a real record keeps every field's dtype, so batches stack.
        out["image"] = np.full_like(out["image"], -1.0)
        out["index"] = np.int64(-1)
        out["valid"] = np.bool_(False)
        return out


def _global_stream(table: RecordTable, preprocess: Preprocess, seed: int) -> grain.MapDataset:
    if len(table) == 0:
        raise errors.InputError(f"no records to train on in {table.names}")
    ds = grain.MapDataset.source(table)
    # Explicit seeds: grain's default seeds depend on the position of a transform in the chain.
    ds = ds.shuffle(seed=seed).repeat()  # a new permutation each epoch
    return ds.random_map(preprocess, seed=seed + 1)


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
    """grain `worker_init_fn`: end this worker as soon as the process that started it dies."""
    del worker_index, worker_count
    parent = multiprocessing.parent_process()
    if parent is None:  # not a multiprocessing child: nobody to outlive
        return
    # A trainer killed outright (SIGKILL, OOM killer) never asks its workers to stop, and grain
    # workers only poll a stop event, so they would run on as orphans holding their memory (and
    # keep multiprocessing's resource tracker alive with them). multiprocessing gives every child
    # a sentinel that the OS closes when its parent dies, however it dies, and on every
    # platform; it is also closed already if the parent died before this runs. We wait on it
    # rather than use Linux's PR_SET_PDEATHSIG: that fires when the *thread* that started the
    # child ends, and grain starts workers from its own prefetch threads, which come and go.
    threading.Thread(
        target=_exit_after, args=(parent,), daemon=True, name="xrayjax-exit-with-parent"
    ).start()


def _exit_after(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns once the parent's sentinel closes
    # At once, without cleanup: exit handlers would wait to flush queues nobody reads any more.
    # Shared memory left behind is unlinked by the resource tracker when it exits after us.
    os._exit(1)


def read_options() -> grain.ReadOptions:
    """How far and with how many threads a process reads ahead of its trainer.

    grain's default (16 threads, 500 elements) counts batched elements here: it would prepare
    up to 500 batches ahead. A short run then preprocesses hundreds of batches it never uses,
    and on a machine with few cores those threads take the cores from the train step. A few
    batches per thread keep every thread busy; the batches and their order are the same.
    """
    threads = max(1, min(16, os.cpu_count() or 1))
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)


def _process_batches(
    stream, global_batch, process_index, process_count, workers, length=sys.maxsize
) -> grain.DatasetIterator:
    """This process's rows of each global batch of `stream`, batched (and prefetched)."""
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    local = per_process_batch(global_batch, process_count)
    view = _ProcessView(stream, global_batch, process_index, process_count, length)
    ds = view.batch(local, drop_remainder=True).to_iter_dataset(read_options())
    if workers > 0:
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers), worker_init_fn=_exit_with_parent
        )
    return iter(ds)


def train_iterator(
    table: RecordTable,
    preprocess: Preprocess,
    *,
    global_batch: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    workers: int = 0,
) -> grain.DatasetIterator:
    """Endless shuffled, augmented batches of this process's rows of each global batch.

    `process_index`/`process_count` default to this process's place in the jax runtime.
    """
    stream = _global_stream(table, preprocess, seed)
    return _process_batches(stream, global_batch, process_index, process_count, workers)


def unpaired_iterator(
    domains: Mapping[str, tuple[RecordTable, Preprocess]],
    *,
    global_batch: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    workers: int = 0,
) -> grain.DatasetIterator:
    """Batches {domain name: batch} from domains shuffled and repeated each on its own."""
    names = tuple(domains)
    streams = [
        _global_stream(table, preprocess, seed + 1000 * i)
        for i, (table, preprocess) in enumerate(domains.values())
    ]
    zipped = grain.experimental.ZipMapDataset(streams).map(_Zip(names))
    return _process_batches(zipped, global_batch, process_index, process_count, workers)


def eval_batches(table: RecordTable, global_batch: int) -> int:
    """How many global batches cover the table (the last one padded)."""
    return -(-len(table) // global_batch)


def eval_iterator(
    table: RecordTable,
    preprocess: Preprocess,
    *,
    global_batch: int,
    process_index: int | None = None,
    process_count: int | None = None,
    workers: int = 0,
) -> grain.DatasetIterator:
    """One pass in table order, unaugmented; the last global batch is padded, with `valid` False."""
    if preprocess.augment:
        preprocess = dataclasses.replace(preprocess, augment=False)
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    padded = eval_batches(table, global_batch) * global_batch
    stream = grain.MapDataset.range(padded).map(_Padded(table, preprocess))
    # A whole number of local batches: every process gets every global batch's rows.
    length = padded // process_count
    return _process_batches(stream, global_batch, process_index, process_count, workers, length)
