"""The streaming input pipeline: the in-memory order, host shards, resume by skipping, bounded read-ahead, sizes."""

from __future__ import annotations

import itertools

import datasets
import numpy as np
import pytest
from PIL import Image

from mu2hub.data.pp import batches
from mu2hub.data.registry import Split
from mu2hub.data.shard import Shard
from mu2hub.data.decode import target_shape, training_decode_size
from mu2hub.data.registry import MAX_SIDE
from mu2hub.data.stream import (DatasetSource, Stream, StreamedSplit, decode_shape, eval_stream, materialise,
                                validation_subset)
from mu2hub.errors import StreamReadError, VaryingImageSizesError


class Counted:
    """A source of n examples whose label and pixel value are its index; counts how many examples were read."""

    def __init__(self, n, sizes=((6, 9), (12, 5))):
        self.n, self.sizes, self.reads = n, sizes, 0

    def __len__(self):
        return self.n

    def example(self, i):
        self.reads += 1
        h, w = self.sizes[i % len(self.sizes)]
        return np.full((h, w, 3), i % 256, np.uint8), i


def _labels(stream, n_batches):
    return np.concatenate([y for _, y in itertools.islice(stream, n_batches)])


def test_the_stream_is_the_in_memory_order_and_epochs_cover_everything():
    split = StreamedSplit(Counted(50, sizes=((8, 8),)), (8, 8))
    streamed = list(itertools.islice(Stream(split, 10, seed=3), 10))
    in_memory = list(itertools.islice(batches(materialise(split), 10, seed=3), 10))
    for (a, ya), (b, yb) in zip(streamed, in_memory):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ya, yb)
    first = np.concatenate([y for _, y in streamed])
    assert sorted(first[:50]) == list(range(50)) and sorted(first[50:]) == list(range(50))
    assert not np.array_equal(first[:50], first[50:])  # a fresh permutation per epoch
    images, _ = next(iter(Stream(StreamedSplit(Counted(50), (8, 8)), 4, seed=0)))
    assert images.shape == (4, 8, 8, 3) and images.dtype == np.uint8  # every size decoded to the split's


def test_host_shards_are_the_rows_of_the_global_batches():
    split = StreamedSplit(Counted(60), (4, 4))
    whole = list(itertools.islice(Stream(split, 6, seed=1), 10))
    parts = [list(itertools.islice(Stream(split, 6, seed=1, shard=Shard(i, 3)), 10)) for i in range(3)]
    for b, (images, labels) in enumerate(whole):  # process i feeds rows [2i, 2i+2) of every global batch
        np.testing.assert_array_equal(np.concatenate([p[b][1] for p in parts]), labels)
        np.testing.assert_array_equal(np.concatenate([p[b][0] for p in parts]), images)
    with pytest.raises(ValueError, match="not divisible by the 4 processes"):
        Stream(split, 6, seed=1, shard=Shard(0, 4))


def test_skip_resumes_the_same_sequence_without_reading_the_skipped():
    full = _labels(Stream(StreamedSplit(Counted(40), (4, 4)), 8, seed=2), 9)
    src = Counted(40)
    resumed = _labels(Stream(StreamedSplit(src, (4, 4)), 8, seed=2, prefetch=1).skip(5), 4)
    np.testing.assert_array_equal(resumed, full[40:72])
    assert src.reads <= 5 * 8  # the 4 batches asked for, plus at most one prefetched


def test_read_ahead_is_bounded_by_prefetch():
    src = Counted(100_000)
    it = iter(Stream(StreamedSplit(src, (4, 4)), 16, seed=0, prefetch=3, workers=2))
    next(it)
    assert src.reads <= 4 * 16  # never more than prefetch + 1 batches, whatever the dataset's size
    it.close()


@pytest.mark.parametrize("count", [1, 2])
def test_eval_stream_counts_every_example_once_over_the_processes(count):
    split = StreamedSplit(Counted(23), (4, 4))
    seen, masked = [], 0
    for i in range(count):
        for images, labels, mask in eval_stream(split, 8, shard=Shard(i, count)):
            assert images.shape == (8 // count, 4, 4, 3) and len(labels) == len(mask) == 8 // count
            seen += labels[mask].tolist()
            masked += int((~mask).sum())
            assert not images[~mask].any()  # padding is zeros
    assert sorted(seen) == list(range(23)) and masked == 1
    in_memory = [y[m].tolist() for _, y, m in eval_stream(materialise(split), 8)]
    assert sum(in_memory, []) == list(range(23))


def test_arrow_dataset_source_and_the_seeded_validation_subset(tmp_path):
    images = [Image.new("RGB", (10 + i % 3, 7), (i, 0, 0)) for i in range(30)]
    ds = datasets.Dataset.from_dict({"img": images, "y": [i % 4 for i in range(30)]},
                                    features=datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(num_classes=4)}))
    ds.save_to_disk(str(tmp_path / "d"))
    source = DatasetSource(datasets.load_from_disk(str(tmp_path / "d")), image="img", label="y")  # memory-mapped
    split = StreamedSplit(source, (6, 6))
    np.testing.assert_array_equal(split.labels(), np.arange(30) % 4)  # read from the column, nothing decoded
    val = validation_subset(split, 20, seed=[0, 7])
    assert isinstance(val, Split) and val.images.shape == (20, 6, 6, 3)
    # the same sample as the in-memory split's: the subset does not depend on how the data is held
    same = validation_subset(materialise(split), 20, seed=[0, 7])
    np.testing.assert_array_equal(val.images, same.images)
    np.testing.assert_array_equal(val.labels, same.labels)
    assert np.all(np.diff(val.images[:, 0, 0, 0].astype(int)) > 0)  # in index order (pixel value = index)
    assert validation_subset(split, 100, seed=0).images.shape == (30, 6, 6, 3)  # no more than the cap: all of it


def test_decode_shape_keeps_one_shared_size_else_decodes_to_the_decode_size():
    assert decode_shape("t", [Counted(10, sizes=((7, 5),))], decode_size=16) == (7, 5)  # kept; the device resizes
    assert decode_shape("t", [Counted(10, sizes=((7, 5),)), Counted(4, sizes=((8, 8),))], decode_size=6) == (6, 6)
    # never above the largest image's own side: upsampling at decode would only cost memory
    assert decode_shape("t", [Counted(10, sizes=((7, 5),)), Counted(4, sizes=((8, 8),))], decode_size=16) == (8, 8)
    assert decode_shape("t", [Counted(10)], image_size=4) == (4, 4)
    with pytest.raises(VaryingImageSizesError, match="decode_size"):
        decode_shape("t", [Counted(10)])


def test_training_decodes_above_every_size_a_path_can_reach():
    assert training_decode_size([8]) == 16  # twice the path size: a crop of half the side keeps full resolution
    assert training_decode_size([384, 224]) == 768  # the largest size the search space reaches counts
    assert training_decode_size([224, 640]) == MAX_SIDE == 1024  # capped: in-memory data stays bounded
    # the in-memory loaders share the rule (`hf.load_imagefolder` and the streamed splits)
    assert target_shape("t", [(8, 8), (12, 12), (16, 16)], decode_size=training_decode_size([8])) == (16, 16)
    assert target_shape("t", [(8, 8), (12, 12)], decode_size=16) == (12, 12)
    assert target_shape("t", [(8, 8)], decode_size=16) is None and target_shape("t", [], image_size=5) == (5, 5)


def test_an_unreadable_example_names_its_split_and_index(tmp_path):
    rows = {"image": [{"bytes": b"not an image", "path": None}] * 3, "label": [0, 1, 0]}
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features({"image": datasets.Image(),
                                                                       "label": datasets.ClassLabel(num_classes=2)}))
    split = StreamedSplit(DatasetSource(ds), (4, 4), "broken train")
    with pytest.raises(StreamReadError, match=r"broken train: example [0-2] cannot be read: UnidentifiedImageError"):
        next(iter(Stream(split, 2, seed=0)))


def test_streams_a_catalog_split_without_decoding_it_whole(tmp_path):
    from mu2hub.data.catalog import open_task

    names = [f"t{i}" for i in range(47)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    rows = {"image": [Image.new("RGB", (5 + i % 4, 6), (i, i, i)) for i in range(60)], "label": [i % 47 for i in range(60)]}
    datasets.DatasetDict({s: datasets.Dataset.from_dict(rows, features=feats) for s in ("train", "validation", "test")}
                         ).save_to_disk(str(tmp_path / "dtd"))
    task = open_task("dtd/1k", sources={"dtd": str(tmp_path / "dtd")}, decode_size=8)  # train[:800] of 60
    assert task.train.shape == (8, 8) and task.data == "local:dtd"  # a local stand-in, not a Hub id
    images, labels = next(iter(eval_stream(task.train, 60)))[:2]
    assert images.shape == (60, 8, 8, 3)
    np.testing.assert_array_equal(labels, np.arange(60) % 47)
    assert task.chance == pytest.approx(2 / 60) and task.decoded_bytes() == 60 * 3 * 8 * 8 * 3
