"""Input pipeline at scale: batches read from the dataset's own files, decoded in background threads, prefetched.

No split is held whole in memory. A `datasets.Dataset` is a memory-mapped Arrow table (random access to encoded
images without loading them), and a TFDS data source is random-access too, so a `Stream` only keeps a seeded
permutation of its indices plus at most `prefetch` decoded batches: memory is bounded by
`prefetch × batch × S² × 3` bytes whatever the dataset's size. Why threads and `datasets` rather than grain:
decoding (PIL) and resizing release the GIL for most of their time, the Arrow file is already the dataset's own
storage, and neither grain's worker processes nor its extra dependency are needed to keep 2-16 cores busy
(bench/pipeline.py measures it).

The interface training consumes (not wired into `mu2hub.train` yet):
- `Stream(source, batch_size, image_size, seed=...)`: iterating yields `(uint8 [B, S, S, 3], int32 [B])`, epochs
  concatenated (each a fresh permutation) as `mu2hub.data.pp.batches` does, so a resumed run that rebuilds the
  stream with the same seed sees the same sequence; `.skip(n)` fast-forwards.
- `.shard(process_index, process_count)`: this host's disjoint stride of every permutation (every host draws the
  same permutation, so the union of the hosts' batches is one global batch sequence).
- `validation_subset(source, max_examples, image_size)`: the fixed, cached validation subset (the reference's
  `validation_examples_max`), in memory as a `Split`.

`source` is anything with `len()` and `example(i) -> (image, label)`: a catalog `SplitRef`, or `ArraySource` /
`DatasetSource` below.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
from PIL import Image

from mu2hub.data.registry import Split, to_rgb_uint8


class Source(Protocol):
    def __len__(self) -> int: ...

    def example(self, i: int) -> tuple[Any, int]: ...


class DatasetSource:
    """A `datasets.Dataset` split (memory-mapped Arrow) by image and label column names."""

    def __init__(self, dataset: Any, image: str = "image", label: str = "label"):
        self.dataset, self.image, self.label = dataset, image, label

    def __len__(self) -> int:
        return len(self.dataset)

    def example(self, i: int) -> tuple[Any, int]:
        row = self.dataset[int(i)]
        return row[self.image], int(row[self.label])


def decode(image: Any, image_size: int) -> np.ndarray:
    """Any image -> uint8 RGB [S, S, 3] (PIL bilinear, antialiased when shrinking); same-size images pass through."""
    rgb = to_rgb_uint8(image)
    if rgb.shape[:2] == (image_size, image_size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((image_size, image_size), Image.Resampling.BILINEAR))


class Stream:
    """Seeded, sharded, prefetched batches of one split; see the module docstring for the contract."""

    def __init__(self, source: Source, batch_size: int, image_size: int, *, seed: int, shuffle: bool = True,
                 repeat: bool = True, workers: int = 2, prefetch: int = 4, process_index: int = 0, process_count: int = 1):
        if batch_size < 1 or len(source) == 0 or not 0 <= process_index < process_count:
            raise ValueError(f"need batch_size >= 1, a non-empty source and 0 <= process_index < process_count; got "
                             f"{batch_size}, {len(source)} examples, {process_index}/{process_count}")
        self.source, self.batch_size, self.image_size = source, batch_size, image_size
        self.seed, self.shuffle, self.repeat = seed, shuffle, repeat
        self.workers, self.prefetch = workers, prefetch
        self.process_index, self.process_count = process_index, process_count
        self._skip = 0

    def shard(self, process_index: int, process_count: int) -> "Stream":
        """This host's part: indices process_index, process_index + count, … of every permutation."""
        return Stream(self.source, self.batch_size, self.image_size, seed=self.seed, shuffle=self.shuffle,
                      repeat=self.repeat, workers=self.workers, prefetch=self.prefetch,
                      process_index=process_index, process_count=process_count)

    def skip(self, batches: int) -> "Stream":
        """Start `batches` batches later (resuming mid-child); nothing is decoded for the skipped ones."""
        self._skip = batches
        return self

    def _indices(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        n = len(self.source)
        pending = np.zeros(0, np.int64)
        for epoch in itertools.count():
            if epoch and not self.repeat:
                break
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            pending = np.concatenate([pending, order[self.process_index::self.process_count]])
            while len(pending) >= self.batch_size:
                yield pending[:self.batch_size]
                pending = pending[self.batch_size:]

    def _batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.empty((len(idx), self.image_size, self.image_size, 3), np.uint8)
        labels = np.empty(len(idx), np.int32)
        for j, i in enumerate(idx):
            image, labels[j] = self.source.example(int(i))
            images[j] = decode(image, self.image_size)
        return images, labels

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        indices = itertools.islice(self._indices(), self._skip, None)
        with ThreadPoolExecutor(self.workers) as pool:
            queue: collections.deque[Future] = collections.deque()
            try:
                for idx in indices:
                    queue.append(pool.submit(self._batch, idx))
                    if len(queue) >= self.prefetch:
                        yield queue.popleft().result()
                while queue:
                    yield queue.popleft().result()
            finally:
                for f in queue:
                    f.cancel()


def validation_subset(source: Source, max_examples: int | None, image_size: int, *, workers: int = 2) -> Split:
    """The first `max_examples` examples, decoded once and kept (the reference's fixed, cached validation subset)."""
    n = len(source) if max_examples is None else min(len(source), max_examples)
    stream = Stream(source, n, image_size, seed=0, shuffle=False, repeat=False, workers=workers, prefetch=1)
    images, labels = next(iter(stream))
    return Split(images, labels)
