"""The streaming input pipeline: seeded order, host shards, resume by skipping, bounded read-ahead, any image size."""

from __future__ import annotations

import itertools

import datasets
import numpy as np
from PIL import Image

from mu2hub.data.stream import DatasetSource, Stream, validation_subset


class Counted:
    """A source of n examples whose label is its index; counts how many examples were read."""

    def __init__(self, n, sizes=((6, 9), (12, 5))):
        self.n, self.sizes, self.reads = n, sizes, 0

    def __len__(self):
        return self.n

    def example(self, i):
        self.reads += 1
        h, w = self.sizes[i % len(self.sizes)]
        return np.full((h, w, 3), i % 256, np.uint8), i


def _labels(stream, batches):
    return np.concatenate([y for _, y in itertools.islice(stream, batches)])


def test_order_is_seeded_and_epochs_cover_everything():
    a, b = Stream(Counted(50), 10, 8, seed=3), Stream(Counted(50), 10, 8, seed=3)
    first = _labels(a, 10)
    np.testing.assert_array_equal(first, _labels(b, 10))
    assert sorted(first[:50]) == list(range(50)) and sorted(first[50:]) == list(range(50))
    assert not np.array_equal(first[:50], first[50:])  # a fresh permutation per epoch
    images, _ = next(iter(Stream(Counted(50), 4, 8, seed=0)))
    assert images.shape == (4, 8, 8, 3) and images.dtype == np.uint8  # every size decoded to the path's


def test_host_shards_are_disjoint_and_cover_the_epoch():
    base = Stream(Counted(60), 5, 4, seed=1)
    parts = [_labels(base.shard(i, 3), 4) for i in range(3)]
    assert sorted(np.concatenate(parts)) == list(range(60))


def test_skip_resumes_the_same_sequence_without_reading_the_skipped():
    full = _labels(Stream(Counted(40), 8, 4, seed=2), 9)
    src = Counted(40)
    resumed = _labels(Stream(src, 8, 4, seed=2, prefetch=1).skip(5), 4)
    np.testing.assert_array_equal(resumed, full[40:72])
    assert src.reads <= 5 * 8  # the 4 batches asked for, plus at most one prefetched


def test_read_ahead_is_bounded_by_prefetch():
    src = Counted(100_000)
    it = iter(Stream(src, 16, 4, seed=0, prefetch=3, workers=2))
    next(it)
    assert src.reads <= 4 * 16  # never more than prefetch + 1 batches, whatever the dataset's size


def test_arrow_dataset_source_and_validation_subset(tmp_path):
    images = [Image.new("RGB", (10 + i % 3, 7), (i, 0, 0)) for i in range(30)]
    ds = datasets.Dataset.from_dict({"img": images, "y": [i % 4 for i in range(30)]},
                                    features=datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(num_classes=4)}))
    ds.save_to_disk(str(tmp_path / "d"))
    source = DatasetSource(datasets.load_from_disk(str(tmp_path / "d")), image="img", label="y")  # memory-mapped
    val = validation_subset(source, 20, 6)
    assert val.images.shape == (20, 6, 6, 3)
    np.testing.assert_array_equal(val.labels, np.arange(20) % 4)
    assert val.images[5, 0, 0, 0] == 5  # in order, the first 20


def test_streams_a_catalog_split_without_decoding_it_whole(tmp_path):
    from mu2hub.data.catalog import resolve

    names = [f"t{i}" for i in range(47)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    rows = {"image": [Image.new("RGB", (5 + i % 4, 6), (i, i, i)) for i in range(60)], "label": [i % 47 for i in range(60)]}
    datasets.DatasetDict({s: datasets.Dataset.from_dict(rows, features=feats) for s in ("train", "validation", "test")}
                         ).save_to_disk(str(tmp_path / "dtd"))
    ref = resolve("dtd/1k", sources={"dtd": str(tmp_path / "dtd")}).splits["train"]  # train[:800] of 60
    images, labels = next(iter(Stream(ref, 60, 8, seed=0, shuffle=False).shard(0, 1)))
    assert images.shape == (60, 8, 8, 3)
    np.testing.assert_array_equal(labels, np.arange(60) % 47)
