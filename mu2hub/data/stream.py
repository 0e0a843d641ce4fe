"""Input pipeline at scale: batches read from the dataset's own files, decoded in background threads, prefetched.

No split need be held whole in memory. A `datasets.Dataset` is a memory-mapped Arrow table (random access to encoded
images without loading them), and a TFDS data source is random-access too, so a `StreamedSplit` is a view — the
source, the size its images are decoded to, nothing decoded — and a `Stream` over it keeps a seeded order plus at
most `prefetch` decoded batches: memory is bounded by `prefetch × batch × H × W × 3` bytes whatever the dataset's
size. Training (`mu2hub.train.child`) reads every split through this module, in memory or streamed alike:

- `Stream(split, batch_size, seed=..., shard=...)`: `(uint8 [b, H, W, 3], int32 [b])` batches, this process's rows of
  every global batch in the order `pp.index_batches` gives (`data.shard.Shard.order`): the same sequence as an
  in-memory split of the same examples, so a child trains on the same batches either way, every child of a
  generation sees the same ones (one seed), and a resumed run that rebuilds the stream sees them again;
  `.skip(n)` fast-forwards without decoding.
- `eval_stream(split, batch_size, shard=...)`: every example once, in order, padded and masked.
- `validation_subset(split, max_examples, seed=...)`: the fixed validation subset (the reference's
  `validation_examples_max`), a seeded sample decoded once into memory (a `Split`).
- `StreamedTask`: a task's three splits as views (`catalog.open_task`); `.load()` decodes them into a `TaskData`
  through the same reader, so a small task held in memory sees exactly the pixels its stream would.

Why threads (bench/pipeline.py, BENCHMARKS.md "Input pipeline"): on 2 cores two decoding threads read 193 images/s
at 224 px where grain's two worker processes read 182, its read threads 149 and `datasets`' iterable dataset 86 (it
decodes in the consuming thread, so nothing overlaps the step); threads start at once for every child's stream,
read the Arrow / TFDS files in place and need no dependency. The Python work around PIL's decoding is kept small
(`decode` resizes a PIL image in PIL: 1.7x faster than through numpy). An in-memory `Split` is read synchronously.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
from PIL import Image

from mu2hub.data.decode import decode, target_shape
from mu2hub.data.registry import SPLITS, Split, TaskData
from mu2hub.data.shard import Shard
from mu2hub.errors import StreamReadError


class StreamSource(Protocol):
    """Random access to a split's examples: a catalog `SplitRef`, a `DatasetSource`, anything with these two."""

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

    def labels(self) -> np.ndarray:
        """Every label, read from the Arrow column without decoding an image."""
        return np.asarray(self.dataset[self.label], np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedSplit:
    """One split read from its source on demand, every image decoded to `shape` (H, W); nothing is held."""

    source: StreamSource
    shape: tuple[int, int]
    name: str = "split"  # "<task> <split>", for error messages

    def __len__(self) -> int:
        return len(self.source)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Examples `indices`, decoded: (uint8 [k, H, W, 3], int32 [k]).

        Raises:
            StreamReadError: an example cannot be read or decoded (names the split and the example).
        """
        images = np.empty((len(indices), *self.shape, 3), np.uint8)
        labels = np.empty(len(indices), np.int32)
        for j, i in enumerate(indices):
            try:
                image, labels[j] = self.source.example(int(i))
                images[j] = decode(image, self.shape)
            except (OSError, ValueError, KeyError, TypeError, SyntaxError) as e:  # PIL raises all of these
                raise StreamReadError(f"{self.name}: example {int(i)} cannot be read: {type(e).__name__}: {e}") from e
        return images, labels

    def labels(self) -> np.ndarray:
        """Every label in order; without decoding images where the source can (`source.labels()`)."""
        if hasattr(self.source, "labels"):
            return np.asarray(self.source.labels(), np.int32)
        return np.asarray([self.source.example(i)[1] for i in range(len(self.source))], np.int32)


AnySplit = Split | StreamedSplit


def read(split: AnySplit, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples `indices` of an in-memory or a streamed split: (images, labels)."""
    if isinstance(split, StreamedSplit):
        return split.read(indices)
    return split.images[indices], split.labels[indices]


def _prefetched(split: AnySplit, orders: Iterable[np.ndarray], *, workers: int,
                prefetch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches `orders` names, in order; a streamed split's decoded `prefetch` batches ahead by `workers` threads."""
    if not isinstance(split, StreamedSplit):
        yield from (read(split, idx) for idx in orders)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="mu2hub-decode") as pool:
        queue: collections.deque[Future] = collections.deque()
        try:
            for idx in orders:
                queue.append(pool.submit(split.read, idx))
                if len(queue) >= prefetch:
                    yield queue.popleft().result()
            while queue:
                yield queue.popleft().result()
        finally:
            for f in queue:
                f.cancel()


class Stream:
    """Seeded, sharded, prefetched training batches of one split; see the module docstring for the contract."""

    def __init__(self, split: AnySplit, batch_size: int, *, seed: int, shard: Shard = Shard(), workers: int = 2,
                 prefetch: int = 4):
        if batch_size < 1 or len(split) == 0 or workers < 1 or prefetch < 1:
            raise ValueError(f"need batch_size >= 1, a non-empty split, workers >= 1 and prefetch >= 1; got {batch_size}, "
                             f"{len(split)} examples, {workers}, {prefetch}")
        shard.rows(batch_size)  # a batch the processes cannot share fails here, not in a worker
        self.split, self.batch_size, self.seed, self.shard = split, batch_size, seed, shard
        self.workers, self.prefetch = workers, prefetch
        self._skip = 0

    def skip(self, batches: int) -> "Stream":
        """Start `batches` batches later (resuming mid-child); nothing is decoded for the skipped ones."""
        self._skip = batches
        return self

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = itertools.islice(self.shard.order(len(self.split), self.batch_size, seed=self.seed), self._skip, None)
        return _prefetched(self.split, order, workers=self.workers, prefetch=self.prefetch)


def eval_stream(split: AnySplit, batch_size: int, *, shard: Shard = Shard(), workers: int = 2,
                prefetch: int = 4) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """This process's rows of each padded global eval batch: (images, labels, mask), every example once, in order.

    Each batch has `batch_size / shard.count` rows, so jitted eval sees one shape; padded rows are zeros with mask
    False, and `sum(correct & mask)` summed over processes counts each example exactly once.
    """
    rows = shard.rows(batch_size)
    per = rows.stop - rows.start
    for images, labels in _prefetched(split, shard.eval_order(len(split), batch_size), workers=workers, prefetch=prefetch):
        n = len(labels)
        if n < per:
            images = np.concatenate([images, np.zeros((per - n, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(per - n, labels.dtype)])
        yield images, labels, np.arange(per) < n


def materialise(split: AnySplit, indices: np.ndarray | None = None, *, workers: int = 2, chunk: int = 256) -> Split:
    """Examples `indices` (default: all) decoded into memory as a `Split`, in order, `workers` threads at a time
    (an in-memory split: itself, or those rows)."""
    if not isinstance(split, StreamedSplit):
        return split if indices is None else Split(*read(split, np.asarray(indices, np.int64)))
    indices = np.arange(len(split)) if indices is None else np.asarray(indices, np.int64)
    images = np.empty((len(indices), *split.shape, 3), np.uint8)
    labels = np.empty(len(indices), np.int32)
    chunks = [indices[i:i + chunk] for i in range(0, len(indices), chunk)]
    for start, (im, y) in zip(range(0, len(indices), chunk), _prefetched(split, chunks, workers=workers, prefetch=workers + 1)):
        images[start:start + len(y)], labels[start:start + len(y)] = im, y
    return Split(images, labels)


def validation_subset(split: AnySplit, max_examples: int | None, *, seed: int | Sequence[int]) -> AnySplit:
    """The fixed validation subset (the reference's `validation_examples_max`): a seeded sample of `max_examples`
    in index order, decoded once into memory; the split itself when it has no more than that (a streamed one is
    then decoded whole). Sampled, not the first N: a split may be sorted by class, and the reference's first N of
    a pre-shuffled TFDS split are a random sample too."""
    if not max_examples or len(split) <= max_examples:
        return materialise(split) if isinstance(split, StreamedSplit) else split
    pick = np.random.default_rng(seed)
    return materialise(split, np.sort(pick.choice(len(split), max_examples, replace=False)))


def decode_shape(name: str, sources: Sequence[StreamSource], *, image_size: int | None = None,
                 decode_size: int | None = None, sample: int = 16) -> tuple[int, int]:
    """The (H, W) a task's images are decoded to, by the in-memory loaders' rule (`decode.target_shape`) on a sample.

    `image_size` when given; else the images' own size when every sampled image (up to `sample` per split, evenly
    spaced) has the same one; else `decode_size` (never above the largest sampled side). An image of another size
    that the sample missed is resized to it.

    Raises:
        VaryingImageSizesError: sizes vary and no `decode_size` was given.
    """
    shapes = set()
    for source in ([] if image_size is not None else sources):
        for i in np.unique(np.linspace(0, len(source) - 1, min(len(source), sample)).astype(np.int64)):
            image = source.example(int(i))[0]
            shapes.add(tuple(image.size[::-1]) if isinstance(image, Image.Image) else tuple(np.shape(image)[:2]))
    shape = target_shape(name, shapes, image_size=image_size, decode_size=decode_size)
    return shape or next(iter(shapes), (decode_size or 1, decode_size or 1))


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedTask:
    """A task whose splits are read on demand (`StreamedSplit`s), or in memory (`Split`s) once decoded.

    Offers what training and publishing read from a `TaskData`: `name`, `labels`, `num_classes`, the splits and
    `chance`; `load()` decodes it into a `TaskData`.
    """

    name: str
    labels: list[str]
    train: AnySplit
    validation: AnySplit
    test: AnySplit
    data: str | None = None  # where the data came from, as `lineage.data` records it (`mu2hub.format.datasource`)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def chance(self) -> float:
        """Test accuracy of always predicting the test split's majority class (its labels read, no image decoded)."""
        labels = self.test.labels() if isinstance(self.test, StreamedSplit) else self.test.labels
        counts = np.bincount(labels, minlength=self.num_classes)
        return float(counts.max() / counts.sum())

    def decoded_bytes(self) -> int:
        """Bytes of the three splits decoded (uint8)."""
        return sum(len(s) * _example_bytes(s) for s in (self.train, self.validation, self.test))

    def load(self, *, workers: int = 2) -> TaskData:
        """Every split decoded into memory, validated as a `TaskData`."""
        return TaskData(self.name, list(self.labels), *(materialise(getattr(self, s), workers=workers) for s in SPLITS))


#: What training reads a task's data from: decoded into memory, or streamed.
TrainingData = TaskData | StreamedTask


def _example_bytes(split: AnySplit) -> int:
    return split.shape[0] * split.shape[1] * 3 if isinstance(split, StreamedSplit) else split.images[0].nbytes
