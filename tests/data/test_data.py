"""mu2hub.data: task registry, built-in tasks (learnable for real), HF / imagefolder loading, preprocessing."""

from __future__ import annotations

import functools
import os

import datasets
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from mu2hub.data import (
    Split,
    TaskData,
    apply_pp_spec_numpy,
    batches,
    builtin,
    eval_batches,
    get_task,
    list_data_tasks,
    load_hf_task,
    load_imagefolder,
    pp,
    pp_spec,
    preprocess_eval,
    preprocess_train,
    register_task,
    registry,
    task_from_dataset_dict,
    to_rgb_uint8,
)
from mu2hub.errors import Mu2hubError

SMALL = dict(n_train=300, n_validation=50, n_test=100)


def _split(n: int, num_classes: int = 2, size: int = 4) -> Split:
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return Split(images, np.arange(n, dtype=np.int32) % num_classes)


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------
def test_list_tasks_is_sorted_and_filters_by_glob():
    assert list_data_tasks() == sorted(list_data_tasks())
    assert {
        "digits",
        "shapes/label_shape",
        "shapes/label_orientation",
        "shapes/label_x_position",
        "shapes/label_scale",
    } <= set(list_data_tasks())
    assert list_data_tasks("shapes/*") == [
        "shapes/label_orientation",
        "shapes/label_scale",
        "shapes/label_shape",
        "shapes/label_x_position",
    ]
    assert list_data_tasks("nothing*") == []


def test_unknown_task_is_a_key_error_listing_known_tasks():
    with pytest.raises(KeyError) as info:
        get_task("shapez")
    assert "shapez" in str(info.value) and "digits" in str(info.value)
    assert "shapes/label_shape" in str(info.value)


def test_register_refuses_duplicates_and_reserved_names(monkeypatch):
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    tiny = TaskData("tiny", ["a", "b"], _split(4), _split(2), _split(2))
    register_task("test/tiny")(lambda: tiny)
    assert get_task("test/tiny") is tiny
    with pytest.raises(ValueError, match="already registered"):
        register_task("test/tiny")(lambda: tiny)
    with pytest.raises(ValueError, match="':'"):
        register_task("hf:mine")
    register_task("test/not_data")(lambda: "oops")
    with pytest.raises(TypeError, match="expected TaskData"):
        get_task("test/not_data")


def test_task_data_validation_names_task_and_problem():
    good = _split(4)
    with pytest.raises(ValueError, match=r"'one'.*at least 2 classes"):
        TaskData("one", ["a"], good, good, good)
    empty = Split(np.zeros((0, 4, 4, 3), np.uint8), np.zeros(0, np.int32))
    with pytest.raises(ValueError, match=r"'e'.*validation split is empty"):
        TaskData("e", ["a", "b"], good, empty, good)
    floats = Split(np.zeros((4, 4, 4, 3), np.float32), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match=r"'f'.*test images must be uint8 \[N, H, W, 3\], got float32"):
        TaskData("f", ["a", "b"], good, good, floats)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        TaskData("l", ["a", "b"], _split(4, num_classes=3), good, good)
    with pytest.raises(ValueError, match="train images are"):
        TaskData("s", ["a", "b"], good, _split(2, size=5), good)


def test_split_converts_grayscale_and_rgba_batches():
    gray = Split(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), [0, 1])
    assert gray.images.shape == (2, 3, 3, 3) and gray.labels.dtype == np.int32
    np.testing.assert_array_equal(gray.images[..., 0], gray.images[..., 2])
    rgba = Split(np.full((2, 3, 3, 4), 7, np.uint8), np.array([0, 1]))
    assert rgba.images.shape == (2, 3, 3, 3)


def test_chance_is_majority_class_share_of_test():
    test = Split(np.zeros((4, 4, 4, 3), np.uint8), [1, 1, 1, 0])
    assert TaskData("c", ["a", "b"], _split(4), _split(2), test).chance == 0.75


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_to_rgb_uint8_accepts_every_pil_mode(mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    if mode in ("I;16", "I", "F"):
        scale = {"I;16": 257, "I": 1, "F": 1 / 255}[mode]
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        image = Image.fromarray((np.asarray(base.convert("L")).astype(np.float64) * scale).astype(dtype))
        assert image.mode == mode
    else:
        image = base.convert(mode)
    out = to_rgb_uint8(image)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    if mode in ("L", "I;16", "I", "F"):
        np.testing.assert_array_equal(out[..., 0], np.asarray(base.convert("L")))


def test_to_rgb_uint8_arrays():
    gray = np.array([[0, 128], [255, 3]], np.uint8)
    assert to_rgb_uint8(gray).shape == (2, 2, 3)
    assert to_rgb_uint8(gray[..., None]).shape == (2, 2, 3)
    assert to_rgb_uint8(np.zeros((2, 2, 4), np.uint8)).shape == (2, 2, 3)
    assert to_rgb_uint8(np.zeros((5, 2, 2, 1), np.uint8)).shape == (5, 2, 2, 3)
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[0.0, 1.0]]))[0, :, 0], [0, 255])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_rgb_uint8(np.array([[0.0, 200.0]]))
    with pytest.raises(ValueError, match="C in"):
        to_rgb_uint8(np.zeros((2, 2, 2)))


# ---------------------------------------------------------------------------------------------------------
# Built-in tasks
# ---------------------------------------------------------------------------------------------------------
def _rows(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels, strict=True))


def test_digits_splits_partition_the_dataset_stratified():
    from sklearn.datasets import load_digits

    task = get_task("digits")
    assert task.labels == [str(d) for d in range(10)] and task.image_shape == (8, 8, 3)
    assert (len(task.train), len(task.validation), len(task.test)) == (1258, 180, 359)
    # Every original example lands in exactly one split.
    parts = [task.train, task.validation, task.test]
    ours = _rows(np.concatenate([p.images[..., 0] for p in parts]), np.concatenate([p.labels for p in parts]))
    raw = load_digits()
    original = np.round(raw.images * 255 / 16).astype(np.uint8)
    assert ours == _rows(original, raw.target)
    # Each class is spread in proportion.
    per_class = np.bincount(raw.target)
    np.testing.assert_allclose(np.bincount(task.test.labels), 0.2 * per_class, atol=1)
    np.testing.assert_allclose(np.bincount(task.validation.labels), 0.1 * per_class, atol=1)


def test_digits_is_deterministic_per_seed():
    a, b = builtin._digits(3), builtin._digits.__wrapped__(3)
    np.testing.assert_array_equal(a.test.images, b.test.images)
    assert not np.array_equal(a.test.labels, get_task("digits", seed=4).test.labels)


def test_shapes_generation_is_deterministic_and_seeded():
    factors = builtin.sample_factors(500, seed=7)
    np.testing.assert_array_equal(factors, builtin.sample_factors(500, seed=7))
    assert not np.array_equal(factors, builtin.sample_factors(500, seed=8))
    np.testing.assert_array_equal(builtin.render(factors[:50]), builtin.render(factors[:50]))
    first = builtin._generate.__wrapped__((0, 1, 2), (20, 5, 5), 1, 32)
    second = builtin._generate.__wrapped__((0, 1, 2), (20, 5, 5), 1, 32)
    for (f1, i1), (f2, i2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(f1, f2)
        np.testing.assert_array_equal(i1, i2)


def test_shapes_splits_never_share_a_latent_combination():
    factors = builtin.sample_factors(3500, seed=0)
    assert len(np.unique(factors, axis=0)) == 3500
    hearts = builtin.sample_factors(1000, seed=0, shapes=(2,))
    assert set(hearts[:, 0]) == {2}


def test_shapes_tasks_shapes_sizes_and_balance():
    for name in list_data_tasks("shapes/*"):
        task = get_task(name, image_size=24, **SMALL)
        assert task.image_shape == (24, 24, 3)
        assert (len(task.train), len(task.validation), len(task.test)) == (300, 50, 100)
        counts = np.bincount(task.train.labels, minlength=task.num_classes)
        expected = len(task.train) / task.num_classes
        assert counts.min() > 0.5 * expected and counts.max() < 1.5 * expected, (name, counts)
        assert task.train.images.max() == 255 and task.train.images.min() == 0
    assert get_task("shapes/label_shape").num_classes == 3
    assert get_task("shapes/label_scale", **SMALL).num_classes == 6
    assert get_task("shapes/label_orientation", **SMALL).num_classes == 8


def test_cached_arrays_are_read_only():
    task = get_task("shapes/label_shape", **SMALL)
    assert get_task("shapes/label_shape", **SMALL).train.images is task.train.images
    with pytest.raises(ValueError):
        task.train.images[0, 0, 0, 0] = 1


def _centred(images: np.ndarray, half: int = 7) -> np.ndarray:
    """Crops around each image's centre of mass: a translation-invariant view for a pixel probe."""
    gray = images[..., 0].astype(np.float32) / 255.0
    ys, xs = np.mgrid[: gray.shape[1], : gray.shape[2]]
    mass = gray.sum((1, 2))
    cy = np.round((gray * ys).sum((1, 2)) / mass).astype(int)
    cx = np.round((gray * xs).sum((1, 2)) / mass).astype(int)
    padded = np.pad(gray, ((0, 0), (half, half), (half, half)))
    crops = [padded[i, y : y + 2 * half, x : x + 2 * half] for i, (y, x) in enumerate(zip(cy, cx, strict=True))]
    return np.stack(crops).reshape(len(images), -1)


def _raw(images: np.ndarray) -> np.ndarray:
    return images[..., 0].reshape(len(images), -1) / 255.0


def _column_profile(images: np.ndarray) -> np.ndarray:
    """Brightness per image column: where the mass sits left to right."""
    return images[..., 0].sum(axis=1) / 255.0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # accuracy is what counts
@pytest.mark.parametrize(
    "name, features, model",
    [
        ("digits", _raw, "linear"),
        ("shapes/label_shape", _centred, "mlp"),
        ("shapes/label_orientation", _centred, "linear"),
        ("shapes/label_scale", _centred, "linear"),
        ("shapes/label_x_position", _column_profile, "linear"),
    ],
)
def test_task_is_learnable_well_above_chance(name, features, model):
    """The honest check that labels are real: a plain scikit-learn probe beats chance by a wide margin."""
    task = get_task(name) if name == "digits" else get_task(name, n_train=1000, n_validation=50, n_test=500)
    clf = LogisticRegression(max_iter=200) if model == "linear" else MLPClassifier((64,), max_iter=300, random_state=0)
    with threadpool_limits(1):  # BLAS threads fighting over 2 busy cores made this 10x slower
        clf.fit(features(task.train.images), task.train.labels)
        accuracy = clf.score(features(task.test.images), task.test.labels)
    assert accuracy > task.chance + 0.5, (name, accuracy, task.chance)


# ---------------------------------------------------------------------------------------------------------
# Hugging Face datasets and image folders
# ---------------------------------------------------------------------------------------------------------
def _write_imagefolder(root, splits=("train", "test"), per_class=6):
    rng = np.random.default_rng(0)
    modes = ["RGB", "RGBA", "L", "P", "LA"]
    for split in splits:
        for c, cls in enumerate(["cat", "dog"]):
            os.makedirs(root / split / cls)
            for i in range(per_class):
                size = (9 + i, 12 + 3 * c)  # mixed sizes
                pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
                Image.fromarray(pixels, "RGBA").convert(modes[i % len(modes)]).save(root / split / cls / f"{i}.png")


def test_imagefolder_mixed_modes_and_sizes(tmp_path):
    _write_imagefolder(tmp_path / "data")
    with pytest.raises(ValueError, match="different sizes; pass decode_size="):
        load_imagefolder(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    task = load_imagefolder(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), decode_size=40)
    assert task.name == f"imagefolder:{tmp_path / 'data'}"
    assert task.labels == ["cat", "dog"]
    assert task.image_shape == (15, 15, 3)  # sizes differ -> decode_size, never above the largest side (15 px)
    smaller = load_imagefolder(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), decode_size=10)
    assert smaller.image_shape == (10, 10, 3)
    # train 12 images: no validation split, so 5% (at least 1) is carved from train
    assert (len(task.train), len(task.validation), len(task.test)) == (11, 1, 12)
    assert sorted(np.bincount(task.test.labels).tolist()) == [6, 6]
    again = get_task(f"imagefolder:{tmp_path / 'data'}", image_size=16, cache_dir=str(tmp_path / "cache"))
    assert again.image_shape == (16, 16, 3)
    np.testing.assert_array_equal(again.validation.labels, task.validation.labels)  # seeded carving


@pytest.mark.parametrize("option", [{"decode_size": 0}, {"decode_size": -3}, {"decode_size": 10**9}, {"decode_size": "16"},
                                    {"decode_size": 1.5}, {"decode_size": True}, {"image_size": 0}, {"image_size": -1},
                                    {"image_size": 2.0}, {"bogus_option": 1}])
def test_bad_data_options_are_named_errors(tmp_path, option):
    """Sizes and options a user passes (`--image-size`, `--data-kwargs`) get a Mu2hubError naming them, never a
    PIL ValueError or a TypeError from deep inside a loader."""
    _write_imagefolder(tmp_path / "data", per_class=2)
    with pytest.raises(Mu2hubError, match=next(iter(option))):
        get_task(f"imagefolder:{tmp_path / 'data'}", cache_dir=str(tmp_path / "cache"), **option)


def test_a_dataset_that_cannot_be_loaded_is_a_data_source_error(monkeypatch):
    """Offline (or a wrong id), `datasets` raises ConnectionError after its retries: say what to pass instead."""
    from mu2hub.errors import DataSourceError

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataSourceError, match="hf:no-such-org/no-such-dataset: the dataset cannot be loaded.*local folder"):
        load_hf_task("no-such-org/no-such-dataset")


def test_imagefolder_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_imagefolder(str(tmp_path / "nope"))


def _dataset(n=40, num_classes=2, **extra_columns) -> datasets.Dataset:
    """Image i is filled with value i, so tests can tell which example went where."""
    images = [Image.fromarray(np.full((6, 6, 3), i, np.uint8)) for i in range(n)]
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "y": datasets.ClassLabel(num_classes=num_classes),
            **{k: v for k, (v, _) in extra_columns.items()},
        }
    )
    data = {
        "img": images,
        "y": [i % num_classes for i in range(n)],
        **{k: values for k, (_, values) in extra_columns.items()},
    }
    return datasets.Dataset.from_dict(data, features=features)


def test_dataset_dict_columns_detected_and_missing_splits_carved():
    task = task_from_dataset_dict("toy", datasets.DatasetDict({"train": _dataset(100)}))
    assert task.labels == ["0", "1"] and task.image_shape == (6, 6, 3)
    ids = [set(s.images[:, 0, 0, 0].tolist()) for s in (task.train, task.validation, task.test)]
    assert [len(i) for i in ids] == [90, 5, 5]
    assert set.union(*ids) == set(range(100)) and sum(len(i) for i in ids) == 100
    again = task_from_dataset_dict("toy", datasets.DatasetDict({"train": _dataset(100)}), seed=1)
    assert set(again.test.images[:, 0, 0, 0].tolist()) != ids[2]


def test_dataset_dict_with_undecoded_images():
    undecoded = _dataset(40).cast_column("img", datasets.Image(decode=False))
    task = task_from_dataset_dict("toy", datasets.DatasetDict({"train": undecoded}))
    assert task.image_shape == (6, 6, 3) and len(task.train) == 36


def test_dataset_dict_split_mapping_and_max_examples():
    dd = datasets.DatasetDict({"train": _dataset(50), "valid": _dataset(10), "eval": _dataset(12)})
    task = task_from_dataset_dict(
        "toy", dd, splits={"train": "train", "validation": "valid", "test": "eval"}, max_examples=8
    )
    assert (len(task.train), len(task.validation), len(task.test)) == (8, 8, 8)
    with pytest.raises(ValueError, match=r"no split \['nope'\].*\['eval', 'train', 'valid'\]"):
        task_from_dataset_dict("toy", dd, splits={"train": "nope"})


def test_dataset_dict_column_errors_list_the_columns():
    text = _dataset(10, caption=(datasets.Value("string"), ["x"] * 10))
    with pytest.raises(ValueError, match=r"no column 'image'; columns are \{'img': Image, 'y': ClassLabel"):
        task_from_dataset_dict("toy", datasets.DatasetDict({"train": text}), image_column="image")
    no_image = text.remove_columns("img")
    with pytest.raises(ValueError, match=r"found no Image columns; columns are .*'caption': Value.*image_column"):
        task_from_dataset_dict("toy", datasets.DatasetDict({"train": no_image}))
    two_labels = _dataset(10, coarse=(datasets.ClassLabel(num_classes=2), [0] * 10))
    with pytest.raises(ValueError, match=r"found 2 \(\['y', 'coarse'\]\) ClassLabel columns.*label_column"):
        task_from_dataset_dict("toy", datasets.DatasetDict({"train": two_labels}))
    task = task_from_dataset_dict("toy", datasets.DatasetDict({"train": two_labels}), label_column="y")
    assert task.num_classes == 2
    with pytest.raises(ValueError, match="class_encode_column"):
        task_from_dataset_dict("toy", datasets.DatasetDict({"train": text}), label_column="caption")


def test_dataset_dict_one_class_and_unlabeled_are_refused():
    with pytest.raises(ValueError, match="at least 2 classes"):
        task_from_dataset_dict("one", datasets.DatasetDict({"train": _dataset(40, num_classes=1)}))
    unlabeled = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (4, 4))] * 3, "y": [-1] * 3},
        features=datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(num_classes=2)}),
    )
    dd = datasets.DatasetDict({"train": _dataset(40), "test": unlabeled})
    with pytest.raises(ValueError, match=r"'test' has unlabeled examples"):
        task_from_dataset_dict("toy", dd)


def test_load_hf_task_from_saved_dataset(tmp_path):
    datasets.DatasetDict({"train": _dataset(60), "test": _dataset(20)}).save_to_disk(tmp_path / "saved")
    task = get_task(f"hf:{tmp_path / 'saved'}")
    assert task.name == f"hf:{tmp_path / 'saved'}"
    assert (len(task.train), len(task.validation), len(task.test)) == (57, 3, 20)
    single = load_hf_task(str(tmp_path / "saved"), max_examples=10)
    assert len(single.train) == 10


# ---------------------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------------------
AUGMENTATIONS = {
    "crop": dict(ds_crop=True, ds_area_range_min=0.05, ds_aspect_ratio_range_min=0.75),
    "flip": dict(ds_flip_left_right=True),
    "brightness": dict(ds_brightness_delta=0.2),
    "contrast": dict(ds_contrast_delta=0.2),
    "saturation": dict(ds_saturation_delta=0.2),
    "hue": dict(ds_hue_delta=0.2),
}


@functools.cache
def _colour_images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 12, 10, 3), dtype=np.uint8)


def test_preprocess_eval_range_shape_and_endpoints():
    out = preprocess_eval(_colour_images(), 16)
    assert out.shape == (6, 16, 16, 3) and out.dtype == np.float32
    assert -1.0 <= float(out.min()) and float(out.max()) <= 1.0
    ends = np.stack([np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)])
    np.testing.assert_array_equal(np.asarray(preprocess_eval(ends, 8))[:, 0, 0, 0], [-1.0, 1.0])


@pytest.mark.parametrize("source, size", [(8, 32), (64, 24), (32, 32), (30, 7)])
def test_numpy_spec_matches_preprocess_eval(source, size):
    images = np.random.default_rng(source).integers(0, 256, (3, source, source + 3, 3), dtype=np.uint8)
    spec = pp_spec(size)
    expected = np.asarray(preprocess_eval(images, size))
    np.testing.assert_allclose(apply_pp_spec_numpy(images, spec), expected, atol=1e-5)
    np.testing.assert_allclose(apply_pp_spec_numpy(images[0], spec), expected[0], atol=1e-5)
    pil = [Image.fromarray(image) for image in images]
    np.testing.assert_allclose(apply_pp_spec_numpy(pil, spec), expected, atol=1e-5)


def test_unsupported_spec_is_refused():
    with pytest.raises(ValueError, match="unsupported preprocessing spec"):
        apply_pp_spec_numpy(np.zeros((4, 4, 3), np.uint8), {**pp_spec(8), "value_range": [0, 1]})


def test_augmentation_changes_images_only_when_enabled():
    images, key = _colour_images(), jax.random.key(0)
    plain = np.asarray(preprocess_eval(images, 16))
    np.testing.assert_array_equal(np.asarray(preprocess_train(images, 16, {}, key)), plain)
    off = dict(ds_crop=False, ds_area_range_min=0.05, ds_flip_left_right=False, ds_hue_delta=0.0)
    np.testing.assert_array_equal(np.asarray(preprocess_train(images, 16, off, key)), plain)
    for name, hparams in AUGMENTATIONS.items():
        out = np.asarray(preprocess_train(images, 16, hparams, key))
        assert out.shape == plain.shape and -1.0 <= out.min() and out.max() <= 1.0, name
        assert not np.allclose(out, plain, atol=1e-3), name


def test_augmentation_is_per_example_and_deterministic_per_key():
    images = np.repeat(_colour_images()[:1], 8, axis=0)
    everything = {k: v for hparams in AUGMENTATIONS.values() for k, v in hparams.items()}
    step = jax.jit(functools.partial(preprocess_train, image_size=16, hparams=everything))  # in a user jit
    a, b = np.asarray(step(images, key=jax.random.key(1))), np.asarray(step(images, key=jax.random.key(1)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.asarray(step(images, key=jax.random.key(2))))
    assert len({row.tobytes() for row in a}) == 8  # identical inputs, different augmentations


def test_flip_mirrors_or_keeps_each_example():
    images = _colour_images()
    plain = np.asarray(preprocess_eval(images, 16))
    out = np.asarray(preprocess_train(images, 16, AUGMENTATIONS["flip"], jax.random.key(0)))
    flipped = [np.array_equal(o, p[:, ::-1]) for o, p in zip(out, plain, strict=True)]
    kept = [np.array_equal(o, p) for o, p in zip(out, plain, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped)


def test_crop_zooms_into_a_box_of_the_image():
    ramp = np.broadcast_to((np.arange(32) * 8).astype(np.uint8)[None, None, :, None], (4, 32, 32, 3))
    hparams = dict(ds_crop=True, ds_area_range_min=0.1, ds_aspect_ratio_range_min=1.0)
    out = np.asarray(preprocess_train(ramp, 32, hparams, jax.random.key(3)))[..., 0]
    full = np.asarray(preprocess_eval(ramp, 32))[..., 0]
    assert (np.diff(out, axis=2) >= -1e-6).all()  # still a left-to-right ramp: not flipped or transposed
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1], out.shape), atol=1e-6)  # rows stay identical
    spans = out[:, 0, -1] - out[:, 0, 0]
    assert (spans < 0.95 * (full[0, 0, -1] - full[0, 0, 0])).all()  # a zoom, each by its own amount
    assert len(set(np.round(spans, 4))) == 4


def test_colour_jitter_keeps_gray_gray_and_hsv_round_trips():
    gray = np.repeat(np.random.default_rng(1).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8), 3, axis=-1)
    hparams = {**AUGMENTATIONS["saturation"], **AUGMENTATIONS["hue"]}
    np.testing.assert_allclose(
        np.asarray(preprocess_train(gray, 8, hparams, jax.random.key(0))),
        np.asarray(preprocess_eval(gray, 8)),
        atol=1e-6,
    )
    shift_hue = jax.jit(lambda rgb, hue: pp._hsv_to_rgb(pp._rgb_to_hsv(rgb) + jnp.array([hue, 0.0, 0.0])))
    rgb = np.random.default_rng(2).random((64, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(shift_hue(rgb, 0.0)), rgb, atol=1e-6)
    np.testing.assert_allclose(np.asarray(shift_hue(np.array([1.0, 0.0, 0.0]), 1 / 3)), [0.0, 1.0, 0.0], atol=1e-6)


def test_unsupported_or_invalid_augmentation_is_refused_not_ignored():
    with pytest.raises(ValueError, match="ds_quality_delta"):
        preprocess_train(_colour_images(), 8, {"ds_quality_delta": 0.1}, jax.random.key(0))
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        preprocess_train(_colour_images(), 8, {"ds_aspect_ratio_range_min": 0.0}, jax.random.key(0))


# ---------------------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------------------
def test_batches_deterministic_per_seed_and_cross_epochs():
    split = _split(10, num_classes=10)

    def take(seed, k=7):
        stream = batches(split, 4, seed=seed)
        return [labels.tolist() for _, labels in (next(stream) for _ in range(k))]

    assert take(0) == take(0) and take(0) != take(1)
    flat = [label for batch in take(0, k=5) for label in batch]  # 20 labels = exactly two epochs, each a permutation
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    images, labels = next(batches(split, 4, seed=0))
    np.testing.assert_array_equal(images, split.images[labels])  # images travel with their labels


def test_batches_single_pass_and_remainder():
    split = _split(10, num_classes=10)
    kept = [labels for _, labels in batches(split, 4, seed=0, repeat=False, drop_remainder=False)]
    assert [len(b) for b in kept] == [4, 4, 2] and sorted(np.concatenate(kept).tolist()) == list(range(10))
    dropped = [labels for _, labels in batches(split, 4, seed=0, repeat=False)]
    assert [len(b) for b in dropped] == [4, 4]
    ordered = [labels.tolist() for _, labels in batches(split, 5, seed=0, shuffle=False, repeat=False)]
    assert ordered == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("n, batch_size", [(10, 4), (8, 4), (3, 8)])
def test_eval_batches_cover_every_example_once(n, batch_size):
    split = _split(n, num_classes=n)
    seen = []
    for images, labels, mask in eval_batches(split, batch_size):
        assert images.shape == (batch_size, 4, 4, 3) and labels.shape == mask.shape == (batch_size,)
        seen.extend(labels[mask].tolist())
        np.testing.assert_array_equal(images[mask], split.images[labels[mask]])
    assert seen == list(range(n))
