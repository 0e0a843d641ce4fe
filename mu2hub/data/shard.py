"""A process's share of the input when one child trains data-parallel over several hosts.

The batch order is global: `pp.batches` over the whole split, from the generation's seed, exactly as one
process would draw it. Each of `count` processes feeds the contiguous rows `[index·b, (index+1)·b)` of every
global batch (b = batch / count) — the rows its devices hold in a mesh whose "data" axis lists the processes'
devices in process order — and reads only those examples. So a run gives the same batches, hence the same
child, whatever the number of hosts.

This is the whole contract between training and its data: `len(split)`, the global order, and this process's
rows of each batch. A streaming source (one that cannot index a split in memory) plugs in by providing the same
two streams — `Shard.batches` and `Shard.eval_batches` — for its own storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mu2hub.data.pp import batches, eval_batches
from mu2hub.data.registry import Split


@dataclass(frozen=True)
class Shard:
    """Which rows of every global batch this process reads: `Shard()` is one process reading all of them."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in [0, {self.count})")

    def rows(self, batch_size: int) -> slice:
        """This process's rows of a global batch of `batch_size`."""
        if batch_size % self.count:
            raise ValueError(f"batch size {batch_size} is not divisible by the {self.count} processes feeding it")
        per = batch_size // self.count
        return slice(self.index * per, (self.index + 1) * per)

    def batches(self, split: Split, batch_size: int, *, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This process's rows of each global training batch (the order of `pp.batches(split, batch_size, seed=)`)."""
        rows = self.rows(batch_size)
        for idx, labels in self.order(split, batch_size, seed=seed):
            yield split.images[idx[rows]], labels[rows]

    def order(self, split: Split, batch_size: int, *, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(example indices, labels) of every global batch: the order shared by all processes."""
        return batches(Split(np.arange(len(split)), split.labels), batch_size, seed=seed)

    def eval_batches(self, split: Split, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """This process's rows of each padded global eval batch (`pp.eval_batches`): images, labels, mask."""
        if self.count == 1:
            yield from eval_batches(split, batch_size)
            return
        rows = self.rows(batch_size)
        per = rows.stop - rows.start
        for start in range(0, len(split), batch_size):
            lo = start + rows.start
            n = max(min(per, len(split) - lo), 0)
            images = np.zeros((per, *split.images.shape[1:]), split.images.dtype)
            labels = np.zeros(per, split.labels.dtype)
            images[:n], labels[:n] = split.images[lo:lo + n], split.labels[lo:lo + n]
            yield images, labels, np.arange(per) < n
