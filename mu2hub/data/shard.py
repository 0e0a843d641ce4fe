"""A process's share of the input when one child trains data-parallel over several hosts: which examples it reads.

The batch order is global: `pp.index_batches` over the whole split, from the generation's seed, exactly as one
process would draw it. Each of `count` processes feeds the contiguous rows `[index·b, (index+1)·b)` of every
global batch (b = batch / count) — the rows its devices hold in a mesh whose "data" axis lists the processes'
devices in process order — and reads only those examples. So a run gives the same batches, hence the same
child, whatever the number of hosts.

This is the whole contract between training and its data: `len(split)`, the global order, and this process's
rows of each batch, as example indices (`Shard.order`, `Shard.eval_order`). Reading those examples — from an
in-memory `Split` or from a streamed one's files, in background threads — is `mu2hub.data.stream`'s job.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mu2hub.data.pp import index_batches


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

    def order(self, n: int, batch_size: int, *, seed: int) -> Iterator[np.ndarray]:
        """This process's example indices of each global training batch (`pp.index_batches(n, batch_size, seed=)`),
        epochs concatenated, without end."""
        rows = self.rows(batch_size)
        for idx in index_batches(n, batch_size, seed=seed):
            yield idx[rows]

    def eval_order(self, n: int, batch_size: int) -> Iterator[np.ndarray]:
        """This process's example indices of each global eval batch: every example once, in order. The last batch's
        rows may be fewer than `batch_size / count` (or none): the reader pads them and masks the padding."""
        rows = self.rows(batch_size)
        for start in range(0, n, batch_size):
            yield np.arange(min(start + rows.start, n), min(start + rows.stop, n))
