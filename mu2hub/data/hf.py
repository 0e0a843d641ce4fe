"""Tasks from Hugging Face datasets (`hf:<dataset>`) and local image folders (`imagefolder:<path>`).

Everything is decoded into memory as uint8 RGB, which suits the small and medium datasets µ2Net tasks are
(use `max_examples` to cap each split; `mu2hub.data.stream` reads large ones lazily instead). Images that all
share one size are kept at it (the path's preprocessing resizes on the device); images of varying sizes are
resized to `decode_size` at most (`data.decode`: training sets it above the path's image size, so random crops
keep their resolution). `datasets` is imported only when one of these is used.

Splits follow the reference µ2Net notebook's rule for tasks without a custom split: use the dataset's
`train` / `validation` / `test` when present, otherwise carve 5% of train for each missing one. Unlike the
reference's contiguous TFDS slices, the carved 5% are a seeded random sample: an image folder lists its
files class by class, so a contiguous slice would hold one class.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mu2hub.data.decode import decode, target_shape
from mu2hub.data.registry import SPLITS, Split, TaskData, open_image, register_source, to_rgb_uint8
from mu2hub.errors import CorruptImageError, DataError, DataSourceError
from mu2hub.utils.extras import require

if TYPE_CHECKING:
    import datasets

CARVE_FRACTION = 0.05


def load_hf_task(
    path: str,
    *,
    config_name: str | None = None,
    revision: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    splits: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    max_examples: int | None = None,
    image_size: int | None = None,
    decode_size: int | None = None,
    seed: int = 0,
    skip_corrupt: bool = False,
) -> TaskData:
    """Load a Hugging Face dataset as a task, named `hf:<path>`.

    Args:
        path (`str`): a Hub dataset id (`"cifar10"`, `"user/name"`), anything `datasets.load_dataset`
            accepts, or a folder written by `DatasetDict.save_to_disk`.
        config_name (`str`, *optional*): the dataset configuration (`load_dataset`'s `name`).
        revision (`str`, *optional*): branch, tag or commit of the dataset repo.
        image_column, label_column, splits, max_examples, image_size, seed, skip_corrupt: see
            `task_from_dataset_dict`.
        cache_dir (`str`, *optional*): forwarded to `datasets.load_dataset`.

    Returns:
        `TaskData`.

    Raises:
        ValueError: no usable image or label column, a missing split, fewer than 2 classes.
    """
    datasets = require("datasets")

    if os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, marker))
        for marker in ("dataset_dict.json", "state.json")  # save_to_disk output
    ):
        loaded = datasets.load_from_disk(path)
    else:
        try:
            loaded = datasets.load_dataset(path, config_name, revision=revision, cache_dir=cache_dir)
        except (ConnectionError, FileNotFoundError) as e:  # no such dataset, or the Hub out of reach and no copy here
            raise DataSourceError(f"hf:{path}: the dataset cannot be loaded ({type(e).__name__}: {e}). Pass a Hub "
                                  "dataset id that exists, a local folder (imagefolder or save_to_disk), or a "
                                  "registered task name (mu2hub.data.list_data_tasks()); offline, a dataset must "
                                  "already be in the datasets cache (HF_DATASETS_OFFLINE=1)") from e
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return task_from_dataset_dict(
        f"hf:{path}",
        loaded,
        image_column=image_column,
        label_column=label_column,
        splits=splits,
        max_examples=max_examples,
        image_size=image_size,
        decode_size=decode_size,
        seed=seed,
        skip_corrupt=skip_corrupt,
    )


def load_imagefolder(
    path: str,
    *,
    cache_dir: str | None = None,
    max_examples: int | None = None,
    image_size: int | None = None,
    decode_size: int | None = None,
    seed: int = 0,
    skip_corrupt: bool = False,
) -> TaskData:
    """Load `path/[<split>/]<class>/<image>` (the `imagefolder` layout) as a task named `imagefolder:<path>`.

    Images of any mode and size are accepted: converted to RGB and resized to `image_size`×`image_size`
    when given; otherwise kept as they are if all share one size, else resized to `decode_size`. Class names are
    the folder names. See `task_from_dataset_dict` for splits, `max_examples`, `seed` and `skip_corrupt` (a file
    that cannot be decoded raises `CorruptImageError` naming it, or is left out with a warning).
    """
    datasets = require("datasets")

    if not os.path.isdir(path):
        raise FileNotFoundError(f"imagefolder: {path!r} is not a directory")
    loaded = datasets.load_dataset("imagefolder", data_dir=path, cache_dir=cache_dir)
    return task_from_dataset_dict(
        f"imagefolder:{path}", loaded, max_examples=max_examples, image_size=image_size, decode_size=decode_size,
        seed=seed, skip_corrupt=skip_corrupt,
    )


def task_from_dataset_dict(
    name: str,
    dataset_dict: datasets.DatasetDict,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    splits: Mapping[str, str] | None = None,
    max_examples: int | None = None,
    image_size: int | None = None,
    decode_size: int | None = None,
    seed: int = 0,
    skip_corrupt: bool = False,
) -> TaskData:
    """Turn an in-memory `DatasetDict` into `TaskData`; the part of loading that needs no files.

    Args:
        name (`str`): the task name.
        dataset_dict (`datasets.DatasetDict`): needs at least the split that becomes train.
        image_column (`str`, *optional*): defaults to the only `datasets.Image` column.
        label_column (`str`, *optional*): defaults to the only `datasets.ClassLabel` column; label names
            come from it.
        splits (`Mapping[str, str]`, *optional*): our split name (`train`, `validation`, `test`) -> the
            dataset's split name. Defaults to the same names where the dataset has them; a missing
            validation or test split is carved from train (5%, seeded).
        max_examples (`int`, *optional*): keep at most this many examples per split (a seeded sample).
        image_size (`int`, *optional*): resize every image to `image_size`×`image_size`. Defaults to
            keeping the size when all images share one, else `decode_size`.
        decode_size (`int`, *optional*): the size for images of varying sizes when `image_size` is not given,
            never above the largest image's side (training passes `data.decode.training_decode_size`).
        seed (`int`, defaults to 0): seeds carving and sampling.
        skip_corrupt (`bool`, defaults to `False`): leave out (with a warning counting them) images that cannot be
            decoded, instead of raising `CorruptImageError` naming the first.

    Raises:
        CorruptImageError: an image that cannot be decoded (truncated, not an image, a decompression bomb).
        ValueError: a named split is missing; no usable image or label column (the message lists the
            columns there are); unlabeled examples (label -1); fewer than 2 classes; images of varying sizes
            with neither `image_size` nor `decode_size`.
    """
    datasets = require("datasets")

    if max_examples is not None and max_examples < 1:
        raise DataError(f"{name}: max_examples must be at least 1, got {max_examples}")
    parts = _our_splits(name, dataset_dict, splits)

    features = parts["train"].features
    image_column = _pick_column(name, features, image_column, datasets.Image, "image", "cast_column(col, Image())")
    label_column = _pick_column(name, features, label_column, datasets.ClassLabel, "label", "class_encode_column(col)")
    if len(features[label_column].names) < 2:  # before decoding anything
        raise DataError(f"task {name!r} is invalid: it needs at least 2 classes, got {features[label_column].names}")
    for ours, ds in parts.items():
        if ds.features.get(label_column) != features[label_column] or image_column not in ds.features:
            raise DataError(
                f"{name}: split {ours!r} does not have train's {image_column!r} column and "
                f"{label_column!r} classes; its columns are {dict(ds.features)}"
            )
    parts = {  # decoded here, one file at a time, so a bad file names itself
        ours: ds.cast_column(image_column, datasets.Image(decode=False)) if ds.features[image_column].decode else ds
        for ours, ds in parts.items()
    }
    carved = tuple(s for s in ("validation", "test") if s not in parts)
    parts = _carve_missing(name, parts, seed)
    rng = np.random.default_rng(seed)
    if max_examples is not None:
        parts = {
            ours: ds.select(np.sort(rng.choice(len(ds), max_examples, replace=False))) if len(ds) > max_examples else ds
            for ours, ds in parts.items()
        }

    decoded = {ours: _decode(name, ours, ds, image_column, label_column, skip_corrupt) for ours, ds in parts.items()}
    size = target_shape(name, (image.shape[:2] for images, _ in decoded.values() for image in images),
                        image_size=image_size, decode_size=decode_size)
    result = {}
    for ours, (images, labels) in decoded.items():
        resized = [decode(image, size) for image in images]
        result[ours] = Split(np.stack(resized) if resized else np.zeros((0, 1, 1, 3), np.uint8), labels)
    label_names = list(features[label_column].names)
    return TaskData(name, label_names, result["train"], result["validation"], result["test"], carved=carved)


def _our_splits(name: str, dataset_dict: datasets.DatasetDict, splits: Mapping[str, str] | None) -> dict[str, Any]:
    """Our split name -> the dataset's split: `splits`, or the same names where the dataset has them; train needed."""
    mapping = dict(splits) if splits is not None else {s: s for s in SPLITS if s in dataset_dict}
    unknown = set(mapping) - set(SPLITS)
    if unknown or "train" not in mapping:
        raise DataError(
            f"{name}: `splits` must map 'train' (and optionally 'validation', 'test') to the "
            f"dataset's splits; got {mapping}"
        )
    missing = [source for source in mapping.values() if source not in dataset_dict]
    if missing:
        raise DataError(f"{name}: no split {missing}; the dataset has {sorted(dataset_dict)}")
    return {ours: dataset_dict[source] for ours, source in mapping.items()}


def _pick_column(name: str, features: Any, column: str | None, feature_type: type, what: str, fix: str) -> str:
    """The requested column, checked, or the only column of `feature_type`."""
    described = ", ".join(f"{key!r}: {type(value).__name__}" for key, value in features.items())
    if column is not None:
        if column not in features:
            raise DataError(f"{name}: no column {column!r}; columns are {{{described}}}")
        if not isinstance(features[column], feature_type):
            raise DataError(
                f"{name}: {what} column {column!r} is {type(features[column]).__name__}, not "
                f"{feature_type.__name__}; convert it first with dataset.{fix}"
            )
        return column
    candidates = [key for key, value in features.items() if isinstance(value, feature_type)]
    if len(candidates) != 1:
        found = "no" if not candidates else f"{len(candidates)} ({candidates})"
        raise DataError(
            f"{name}: found {found} {feature_type.__name__} columns; columns are {{{described}}}; "
            f"pass {what}_column=..."
        )
    return candidates[0]


def _carve_missing(name: str, parts: dict, seed: int) -> dict:
    """Take seeded, disjoint 5% samples of train for a missing validation and/or test split."""
    wanted = [s for s in ("validation", "test") if s not in parts]
    if not wanted:
        return parts
    parts, train = dict(parts), parts["train"]
    n_carve = max(1, round(CARVE_FRACTION * len(train)))
    if len(train) <= n_carve * len(wanted):
        raise DataError(
            f"{name}: train has {len(train)} examples, too few to carve {wanted} from it; provide those splits"
        )
    order = np.random.default_rng(seed).permutation(len(train))
    for i, split in enumerate(wanted):
        parts[split] = train.select(np.sort(order[i * n_carve : (i + 1) * n_carve]))
    parts["train"] = train.select(np.sort(order[len(wanted) * n_carve :]))
    return parts


def _decode(
    name: str, split: str, ds: Any, image_column: str, label_column: str, skip_corrupt: bool
) -> tuple[list[np.ndarray], np.ndarray]:
    labels = np.asarray(ds[label_column], dtype=np.int32)
    if labels.size and labels.min() < 0:
        raise DataError(
            f"{name}: split {split!r} has unlabeled examples (label -1); map only labeled splits "
            "with splits={'train': ..., 'validation': ...} and the rest is carved from train"
        )
    images, keep, bad = [], [], []
    for i, entry in enumerate(ds[image_column]):
        try:
            images.append(_decode_one(entry, f"{name} {split} example {i}"))
            keep.append(i)
        except CorruptImageError as e:
            if not skip_corrupt:
                raise CorruptImageError(e.filename, e.reason, "; pass skip_corrupt=True (--skip-corrupt-images) "
                                        "to leave such files out") from None
            bad.append(e.filename)
    if bad:
        warnings.warn(f"{name}: left out {len(bad)} {split} image(s) that cannot be decoded: {', '.join(bad[:5])}"
                      + (" ..." if len(bad) > 5 else ""), stacklevel=3)
    return images, labels[keep]


def _decode_one(entry: Any, where: str) -> np.ndarray:
    """One `datasets.Image(decode=False)` entry ({"bytes", "path"}) or an already decoded image, as RGB uint8."""
    if not isinstance(entry, dict):
        return to_rgb_uint8(entry)
    if entry.get("bytes") is not None:
        return open_image(io.BytesIO(entry["bytes"]), name=entry.get("path") or where)
    if not entry.get("path"):
        raise CorruptImageError(where, "no bytes and no path")
    return open_image(entry["path"])


register_source("hf:", load_hf_task)
register_source("imagefolder:", load_imagefolder)
