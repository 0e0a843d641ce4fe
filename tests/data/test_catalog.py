"""The paper's 69 tasks: every distinct split rule on a small generated dataset with the real dataset's features."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image

from mu2hub.data import get_task
from mu2hub.data.catalog import BENCHMARKS, SOURCES, SPLIT_RULES, TASKS, load, lookup, resolve, slice_indices, stream
from mu2hub.data.vtab import kitti_closest_object_distance, kitti_closest_vehicle_distance, kitti_count_vehicles
from mu2hub.errors import DataSourceError, LabelMismatchError

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n, size=4, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _classified(path, sizes, names, image="image", label="label", size=4):
    """A DatasetDict like a Hub / TFDS image-classification dataset: image + ClassLabel, saved locally."""
    feats = datasets.Features({image: datasets.Image(), label: datasets.ClassLabel(names=names)})
    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({image: _images(n, size, i), label: [j % len(names) for j in range(n)]}, features=feats)
        for i, (split, n) in enumerate(sizes.items())})
    dd.save_to_disk(str(path))
    return str(path)


def _dsprites(path, n):
    feats = datasets.Features({"image": datasets.Image(), "label_x_position": datasets.ClassLabel(num_classes=32),
                               "label_orientation": datasets.ClassLabel(num_classes=40)})
    rows = {"image": _images(n), "label_x_position": [i % 32 for i in range(n)], "label_orientation": [i % 40 for i in range(n)]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=feats)}).save_to_disk(str(path))
    return str(path)


def _clevr(path, sizes):
    """TFDS clevr's features: objects is a sequence of {shape, size, pixel_coords}."""
    obj = datasets.Sequence({"shape": datasets.ClassLabel(names=["cube", "sphere", "cylinder"]),
                             "size": datasets.ClassLabel(names=["small", "large"]),
                             "pixel_coords": datasets.Sequence(datasets.Value("float32"), length=3)})
    feats = datasets.Features({"image": datasets.Image(), "objects": obj})
    out = {}
    for split, n in sizes.items():
        counts = [3 + i % 8 for i in range(n)]
        objects = [{"shape": [k % 3 for k in range(c)], "size": [0] * c, "pixel_coords": [[1.0, 2.0, 9.2]] * c} for c in counts]
        out[split] = datasets.Dataset.from_dict({"image": _images(n), "objects": objects}, features=feats)
    datasets.DatasetDict(out).save_to_disk(str(path))
    return str(path)


def test_the_table_is_the_reference_stream():
    assert len(TASKS) == 69 and len(stream()) == 69
    counts = {b: sum(t.benchmark == b for t in TASKS.values()) for b in BENCHMARKS}
    assert counts == {"vit": 3, "vtab": 23, "vdd": 10, "chars": 8, "vtab1k": 25}
    assert stream()[:3] == ["imagenet2012", "cifar100", "cifar10"]
    assert "smallnorb/label_elevation/1k" in TASKS and "smallnorb/label_azimuth/1k" in TASKS  # the reference's typos fixed
    assert {t.rule for t in TASKS.values()} == set(SPLIT_RULES)  # every rule is used (and tested below)


def test_the_table_carries_what_republishing_needs():
    """One table for training and republishing: class counts, the reference's names, pixel scale and typos."""
    assert (TASKS["dsprites/label_x_position"].num_classes, TASKS["dsprites/label_orientation/1k"].num_classes) == (32, 40)
    assert {n for n, t in TASKS.items() if t.pixel_scale != 1} == {
        "dsprites/label_x_position", "dsprites/label_orientation", "dsprites/label_x_position/1k",
        "dsprites/label_orientation/1k"}  # VTAB's `tile(image, 3) * 255` on dSprites' 0/1 pixels
    for name, task in TASKS.items():  # every name list the table keeps fits its head
        known = task.label_names
        assert known is None or (len(known[0]) == task.num_classes and len(set(known[0])) == task.num_classes), name
    assert TASKS["cifar10"].label_names == (tuple(CIFAR10), "TFDS ClassLabel names")
    assert TASKS["kitti/closest_vehicle_distance"].label_names[0] == ("<= 8 m", "(8, 20] m", "(20, 999] m", "no vehicle")
    assert TASKS["sun397"].label_names is None  # TFDS metadata not reproduced: a republish needs them given
    assert lookup("smallnorb/label_azimuth/1") is TASKS["smallnorb/label_azimuth/1k"]  # the reference's typo
    assert lookup("not/a/task") is None
    assert SOURCES["kitti"].tfds == "kitti:3.2.0" and SOURCES["cifar10"].tfds == "cifar10:3.*.*"


def test_percent_slices_floor_like_task_adaptation():
    assert slice_indices(73257, ["90%:"]) == range(65931, 73257)  # 90 * 73257 // 100 = 65931 (VTAB svhn "train")
    assert slice_indices(100, ["60%:80%"]) == range(60, 80)
    assert slice_indices(2500, ["90%:", ":200"]) == range(2250, 2450)


RULE_CASES = [  # task, builder(tmp) -> sources, expected (train, validation, test)
    ("imagenet2012", lambda p: {"imagenet2012": _classified(p / "in", {"train": 50, "validation": 20}, [f"n{i}" for i in range(1000)]),
                                "imagenet_v2": _classified(p / "v2", {"test": 10}, [f"n{i}" for i in range(1000)])}, (50, 10, 20)),
    ("cifar10", lambda p: {"cifar10": _classified(p / "c10", {"train": 100, "test": 40}, CIFAR10, image="img"),
                           "cifar10_1": _classified(p / "c101", {"test": 30}, CIFAR10)}, (100, 30, 40)),
    ("cifar100", lambda p: {"cifar100": _classified(p / "c100", {"train": 100, "test": 10}, [f"c{i}" for i in range(100)],
                                                    image="img", label="fine_label")}, (98, 2, 10)),
    ("visual_domain_decathlon/dtd", lambda p: {"visual_domain_decathlon/dtd": _classified(
        p / "vdd", {"train": 30, "validation": 20}, [f"t{i}" for i in range(47)])}, (30, 10, 10)),
    ("cmaterdb/bangla", lambda p: {"cmaterdb/bangla": _classified(p / "cm", {"train": 50, "test": 10}, list("0123456789"))}, (40, 10, 10)),
    ("omniglot", lambda p: {"omniglot": _classified(p / "om", {"train": 30, "small1": 10, "small2": 12},
                                                    [f"a{i}" for i in range(1623)])}, (30, 10, 12)),
    ("mnist", lambda p: {"mnist": _classified(p / "mn", {"train": 100, "test": 10}, list("0123456789"))}, (95, 5, 10)),
    ("caltech101", lambda p: {"caltech101": _classified(p / "ca", {"train": 100, "test": 20}, [f"k{i}" for i in range(102)])}, (90, 10, 20)),
    ("oxford_iiit_pet", lambda p: {"oxford_iiit_pet": _classified(p / "pet", {"train": 100, "test": 20}, [f"p{i}" for i in range(37)])},
     (80, 20, 20)),
    ("dtd", lambda p: {"dtd": _classified(p / "dtd", {"train": 30, "validation": 20, "test": 10}, [f"t{i}" for i in range(47)])},
     (30, 20, 10)),
    ("eurosat", lambda p: {"eurosat": _classified(p / "eu", {"train": 100}, [f"e{i}" for i in range(10)])}, (60, 20, 20)),
    ("dsprites/label_x_position", lambda p: {"dsprites": _dsprites(p / "ds", 100)}, (80, 10, 10)),
    ("clevr/count_all", lambda p: {"clevr": _clevr(p / "cl", {"train": 100, "validation": 20})}, (90, 10, 20)),
    ("smallnorb/label_azimuth", lambda p: {"smallnorb": _smallnorb(p / "sn", {"train": 40, "test": 20})}, (40, 10, 10)),
    ("caltech101/1k", lambda p: {"caltech101": _classified(p / "ca1k", {"train": 2500, "test": 30}, [f"k{i}" for i in range(102)],
                                                           size=2)}, (800, 200, 30)),
]


def _smallnorb(path, sizes):
    names = ["label_category", "label_lighting", "label_azimuth", "label_elevation"]
    k = {"label_category": 5, "label_lighting": 6, "label_azimuth": 18, "label_elevation": 9}
    feats = datasets.Features({"image": datasets.Image(), **{n: datasets.ClassLabel(num_classes=k[n]) for n in names}})
    out = {s: datasets.Dataset.from_dict({"image": _images(n), **{f: [i % k[f] for i in range(n)] for f in names}}, features=feats)
           for s, n in sizes.items()}
    datasets.DatasetDict(out).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("task, build, expected", RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_split_rule_sizes(tmp_path, task, build, expected):
    r = resolve(task, sources=build(tmp_path))
    assert tuple(r.sizes()[s] for s in ("train", "validation", "test")) == expected
    assert len(r.labels) == TASKS[task].num_classes


def test_splits_are_the_right_slices_and_labels(tmp_path):
    sources = {"cifar10": _classified(tmp_path / "c10", {"train": 100, "test": 40}, CIFAR10, image="img"),
               "cifar10_1": _classified(tmp_path / "c101", {"test": 30}, CIFAR10, size=8)}  # another size: decoded to one
    data = get_task("cifar10", sources=sources, decode_size=4)
    assert data.labels == CIFAR10 and data.image_shape == (4, 4, 3)
    np.testing.assert_array_equal(data.train.labels, np.arange(100) % 10)
    assert (len(data.train), len(data.validation), len(data.test)) == (100, 30, 40)
    clevr = load("clevr/count_all", sources={"clevr": _clevr(tmp_path / "cl", {"train": 100, "validation": 20})})
    np.testing.assert_array_equal(clevr.train.labels, np.arange(90) % 8)  # 3..10 objects -> 0..7
    assert clevr.labels[0] == "3" and len(clevr.labels) == 8
    cyl = load("clevr/count_cylinders", sources={"clevr": str(tmp_path / "cl")})
    np.testing.assert_array_equal(cyl.test.labels, [(3 + i % 8 + 0) // 3 for i in range(20)])  # shape id 2 every 3rd object
    xpos = load("dsprites/label_x_position", sources={"dsprites": _dsprites(tmp_path / "ds", 100)})
    np.testing.assert_array_equal(xpos.train.labels, np.arange(80) % 32)  # µ2Net keeps all 32 positions (no bins)
    orientation = load("dsprites/label_orientation", sources={"dsprites": str(tmp_path / "ds")})
    np.testing.assert_array_equal(orientation.test.labels, np.arange(90, 100) % 40)  # and all 40 orientations
    assert (len(xpos.labels), len(orientation.labels)) == (32, 40)
    one_k = resolve("dtd/1k", sources={"dtd": _classified(tmp_path / "dtd", {"train": 900, "validation": 300, "test": 5},
                                                         [f"t{i}" for i in range(47)], size=2)})
    assert one_k.sizes() == {"train": 800, "validation": 200, "test": 5}
    assert one_k.splits["validation"].split == "validation" and one_k.splits["validation"].indices == range(200)


def test_kitti_derivations_on_tfds_features():
    row = {"objects": {"type": [0, 3, 2, 7], "location": [[0, 0, 30.0], [0, 0, 4.0], [0, 0, 12.0], [0, 0, 50.0]]}}
    assert kitti_count_vehicles(row) == 2  # types 0 (Car) and 2 (Truck)
    assert kitti_closest_object_distance(row) == 0  # 4.0 m (a pedestrian) <= 5.6
    assert kitti_closest_vehicle_distance(row) == 1  # the truck at 12 m: (8, 20]
    assert kitti_closest_vehicle_distance({"objects": {"type": [4], "location": [[0, 0, 3.0]]}}) == 3  # no vehicle


def test_missing_validation_source_is_named(tmp_path):
    sources = {"cifar10": _classified(tmp_path / "c10", {"train": 20, "test": 10}, CIFAR10, image="img")}
    with pytest.raises(DataSourceError, match=r"task 'cifar10' \(validation = cifar10_1/test\).*cifar10_1.*mu2hub\[tfds\]"):
        resolve("cifar10", sources=sources)
    with pytest.raises(DataSourceError, match=r"imagenet_v2"):
        resolve("imagenet2012", sources={"imagenet2012": _classified(tmp_path / "in", {"train": 5, "validation": 5},
                                                                      [f"n{i}" for i in range(1000)])})


def test_label_column_that_does_not_match_the_table(tmp_path):
    five = {"cifar10": _classified(tmp_path / "five", {"train": 20, "test": 10}, list("abcde"), image="img"),
            "cifar10_1": _classified(tmp_path / "c101", {"test": 5}, CIFAR10)}
    with pytest.raises(LabelMismatchError, match=r"task 'cifar10' \(train\).*'label' has 5 classes.*has 10"):
        resolve("cifar10", sources=five)
    renamed = {"cifar10": _classified(tmp_path / "ren", {"train": 20, "test": 10}, CIFAR10, image="img", label="coarse"),
               "cifar10_1": five["cifar10_1"]}
    with pytest.raises(LabelMismatchError, match=r"no label column 'label'; columns are \['img', 'coarse'\]"):
        resolve("cifar10", sources=renamed)


def test_a_tfds_source_read_from_a_local_data_dir(tmp_path):
    """The TFDS branch for real, in a subprocess with TFDS on its path (see tests/support/tfds_reference.py)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    site = Path(os.environ.get("MU2HUB_TFDS_SITE", Path(sys.prefix) / "tfds-site"))
    if not (site / "tensorflow_datasets").is_dir():
        pytest.fail(f"tensorflow_datasets is not installed at {site}: run `make test` (the Makefile's tfds-site line)")
    from locations import REPO, SUPPORT

    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{site}")
    proc = subprocess.run([sys.executable, str(SUPPORT / "tfds_reference.py"), str(tmp_path / "tfds")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "cmaterdb/bangla" in out["missing"] and "not available" in out["missing"]  # before it is prepared
    assert out["sizes"] == [40, 10, 10] and out["classes"] == 10 and out["pixels_are_labels"]  # train[20%:] / [:20%]


def test_lineage_data_names_the_real_dataset_only_when_it_was_read():
    from mu2hub.data.catalog import data_spec
    from mu2hub.format.datasource import data_source

    hub = data_source("cifar10", {"data": data_spec(SOURCES["cifar10"], {})})
    assert hub.kind == "hub" and hub.hub_id == "uoft-cs/cifar10"  # the card's `datasets:` lists the Hub id
    assert data_spec(SOURCES["dtd"], {}) == "tfds:dtd"
    local = data_source("cifar10", {"data": data_spec(SOURCES["cifar10"], {"cifar10": "/data/my-copy"})})
    assert local.hub_id is None and "/data" not in local.description  # a local stand-in: no Hub id, no local path
