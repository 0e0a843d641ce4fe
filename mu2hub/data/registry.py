"""Task registry: named recipes that return in-memory `TaskData` (timm / big_vision style).

A task is a function registered under a name with `@register_task(name)`; `get_task(name, **kwargs)` calls
it and validates the result. Two name prefixes are sources rather than registered tasks:
`hf:<dataset>` (a Hugging Face dataset) and `imagefolder:<path>` (a local folder), both in `hf.py`.
This module imports no source: each registers itself when imported (`register_task`, `register_source`,
`register_resolver`), and `mu2hub.data` imports them all, as timm's model modules register themselves.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from mu2hub.errors import CorruptImageError, DataError, ImageInputError, TaskNotFoundError

SOURCE_PREFIXES = ("hf:", "imagefolder:")
SPLITS = ("train", "validation", "test")
#: Largest image accepted (pixels): PIL's own decompression-bomb limit, 2x its 89M-pixel warning level.
MAX_PIXELS = 2 * 89_478_485
#: Longest side an image is decoded to anywhere (an upload before preprocessing, a training decode): far above any
#: path's image size, so results barely change, while a 10,000-pixel photo never becomes a multi-gigabyte array.
MAX_SIDE = 1024

_TASKS: dict[str, Callable[..., TaskData]] = {}
_SOURCES: dict[str, Callable[..., TaskData]] = {}
_RESOLVERS: list[tuple[Callable[[str], bool], Callable[..., TaskData]]] = []


# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------
def to_rgb_uint8(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any image, or a batch of them, as uint8 RGB: the one entry point every loader and `predict` share.

    Accepts a PIL image of any mode, an array [H, W], [H, W, C] or a batch [N, H, W, C] with C in {1, 3, 4}.
    Grayscale is replicated to three channels; an alpha channel is dropped (as PIL's `convert("RGB")`
    does). Values: uint8 as is, bool as {0, 255}, uint16 scaled by 1/257, other integers must lie in
    [0, 255], floats must lie in [0, 1] (a 0-255 float array is refused rather than guessed at).

    Returns:
        `np.ndarray` uint8 [H, W, 3] (or [N, H, W, 3] for a batch).

    Raises:
        ImageInputError (a ValueError): another shape, a zero-sized or oversized image (more than `MAX_PIXELS`),
            an unsupported dtype, a non-finite or out-of-range value.
    """
    if isinstance(image, Image.Image):
        check_size(image.height, image.width)
        return _pil_to_rgb(image)
    try:
        array = np.asarray(image)
    except (TypeError, ValueError) as e:  # ragged nested lists, objects numpy cannot hold
        raise ImageInputError(f"not an image array: {e}") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim not in (3, 4) or array.shape[-1] not in (1, 3, 4):
        raise ImageInputError(
            f"expected an image [H, W], [H, W, C] or a batch [N, H, W, C] with C in (1, 3, 4); "
            f"got shape {list(array.shape)}"
        )
    if array.ndim == 4 and array.shape[0] == 0:
        raise ImageInputError("the batch holds no images")
    check_size(array.shape[-3], array.shape[-2])
    array = _to_uint8(array)
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def check_size(height: int, width: int) -> None:
    """An empty image, or one over `MAX_PIXELS` (a decompression bomb), is an `ImageInputError`."""
    if height < 1 or width < 1:
        raise ImageInputError(f"the image is empty ({width}x{height} pixels)")
    if height * width > MAX_PIXELS:
        raise ImageInputError(f"the image is {width}x{height} pixels; the limit is {MAX_PIXELS:,} pixels")


def open_image(path: str | os.PathLike | BinaryIO, *, name: str | None = None) -> np.ndarray:
    """Decode an image file (or a binary stream called `name`) to uint8 RGB [H, W, 3]; a file that cannot be
    decoded names itself.

    Raises:
        CorruptImageError: not an image, truncated, or a decompression bomb (more than `MAX_PIXELS` pixels).
        ImageInputError: an empty image.
    """
    name = name or str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise CorruptImageError(name, f"{im.width}x{im.height} pixels, over the {MAX_PIXELS:,}-pixel "
                                            "limit (a decompression bomb?)")
                im.load()
                return to_rgb_uint8(im)
    except Image.DecompressionBombError as e:
        raise CorruptImageError(name, str(e)) from None
    except ImageInputError as e:
        if isinstance(e, CorruptImageError):
            raise
        raise ImageInputError(f"{name}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL: UnidentifiedImageError, "Truncated File Read", ...
        raise CorruptImageError(name, f"{type(e).__name__}: {e}") from None


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """PIL handles palette/CMYK/LA etc.; 16-bit and float modes go through the array rules instead."""
    if image.mode.startswith("I;16"):
        return to_rgb_uint8(np.asarray(image).astype(np.uint16))
    if image.mode in ("I", "F"):
        return to_rgb_uint8(np.asarray(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns when converting a transparent palette straight to RGB
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ImageInputError(
                f"integer images must lie in [0, 255]; got {array.dtype} in [{array.min()}, {array.max()}]"
            )
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not np.isfinite(array).all():
            raise ImageInputError(f"the {array.dtype} image holds NaN or Inf values")
        if array.size and not (array.min() >= 0.0 and array.max() <= 1.0):
            raise ImageInputError(
                f"float images must lie in [0, 1]; got {array.dtype} in [{array.min()}, {array.max()}] "
                "(cast 0-255 data to uint8 first)"
            )
        return np.round(array * 255.0).astype(np.uint8)
    raise ImageInputError(f"unsupported image dtype {array.dtype} (use uint8, uint16, bool, integers or floats)")


# ---------------------------------------------------------------------------------------------------------
# Task data
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Split:
    """One split, fully in memory: images uint8 [N, H, W, 3], labels int32 [N].

    Grayscale batches ([N, H, W] or [N, H, W, 1]) and RGBA uint8 batches are converted to RGB on
    construction, so every loader can hand over what it has; anything else is left for `TaskData` to reject
    with the task's name in the message.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.dtype == np.uint8 and images.ndim == 3:
            images = images[..., None]
        if images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] in (1, 4):
            images = to_rgb_uint8(images)
        object.__setattr__(self, "images", images)
        labels = np.asarray(self.labels)
        if np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.int32:
            labels = labels.astype(np.int32)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:  # the default would print every pixel
        return f"Split(images={self.images.dtype}{list(self.images.shape)}, labels={self.labels.dtype}[{len(self)}])"


@dataclasses.dataclass(frozen=True, eq=False)
class TaskData:
    """A task's three splits and label names; validated on construction so no bad task reaches training."""

    name: str
    labels: list[str]
    train: Split
    validation: Split
    test: Split
    carved: tuple[str, ...] = ()  # splits cut out of train because the source had none (data.hf)

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise DataError(f"task {self.name!r} is invalid: " + "; ".join(problems))

    def _problems(self) -> Iterator[str]:
        if len(self.labels) < 2:
            yield f"it needs at least 2 classes, got {len(self.labels)} ({self.labels})"
        if len(set(self.labels)) != len(self.labels):
            yield f"label names are not unique: {self.labels}"
        image_hw = None
        for split_name in SPLITS:
            split = getattr(self, split_name)
            images, labels = split.images, split.labels
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                yield (f"{split_name} images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
                continue
            if len(images) == 0:
                yield f"{split_name} split is empty"
                continue
            if labels.dtype != np.int32 or labels.shape != (len(images),):
                yield (f"{split_name} labels must be int32 [{len(images)}], got {labels.dtype} {list(labels.shape)}")
                continue
            if labels.min() < 0 or labels.max() >= len(self.labels):
                yield (
                    f"{split_name} labels must lie in [0, {len(self.labels) - 1}], got [{labels.min()}, {labels.max()}]"
                )
            if image_hw is None:
                image_hw = images.shape[1:3]
            elif images.shape[1:3] != image_hw:
                yield f"{split_name} images are {images.shape[1:3]}, train images are {image_hw}"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) as stored; the path's preprocessing resizes to its own image size."""
        return tuple(self.train.images.shape[1:])

    @property
    def chance(self) -> float:
        """Test accuracy of always predicting the test split's majority class: the floor to beat."""
        counts = np.bincount(self.test.labels, minlength=self.num_classes)
        return float(counts.max() / counts.sum())


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------
def register_task(name: str) -> Callable[[Callable[..., TaskData]], Callable[..., TaskData]]:
    """Register `fn(**kwargs) -> TaskData` under `name`. Duplicate names and source prefixes are refused."""
    if ":" in name:
        raise ValueError(f"task name {name!r} may not contain ':' (reserved for {SOURCE_PREFIXES} sources)")

    def decorator(fn: Callable[..., TaskData]) -> Callable[..., TaskData]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered (by {_TASKS[name].__module__})")
        _TASKS[name] = fn
        return fn

    return decorator


def register_source(prefix: str, loader: Callable[..., TaskData]) -> None:
    """Route names starting with `prefix` (`hf:`, `imagefolder:`) to `loader(rest, decode_size=..., **kwargs)`."""
    if prefix not in SOURCE_PREFIXES or prefix in _SOURCES:
        raise ValueError(f"source prefix {prefix!r} is not one of {SOURCE_PREFIXES} or is already registered")
    _SOURCES[prefix] = loader


def register_resolver(accepts: Callable[[str], bool], loader: Callable[..., TaskData]) -> None:
    """Names no registered task holds but `accepts(name)` does go to `loader(name, decode_size=..., **kwargs)`
    (the µ2Net paper's tasks, `mu2hub.data.catalog`)."""
    _RESOLVERS.append((accepts, loader))


def list_data_tasks(pattern: str = "*") -> list[str]:
    """Registered task names matching a glob `pattern` (fnmatch), sorted. Sources (`hf:`…) are not listed."""
    return sorted(name for name in _TASKS if fnmatch.fnmatchcase(name, pattern))


def get_task(name: str, *, decode_size: int | None = None, **kwargs: Any) -> TaskData:
    """Build a task's data.

    Args:
        name (`str`): a registered name (see `list_data_tasks()`), one of the µ2Net paper's tasks
            (`mu2hub.data.catalog`, e.g. `cifar10`, `clevr/count_all`, `dtd/1k`), `hf:<dataset id or path>` or
            `imagefolder:<folder>`.
        decode_size (`int`, *optional*): the size images of varying sizes are decoded to, never above the largest
            image's side (a dataset source's images; registered tasks generate theirs at a fixed size and ignore it).
        **kwargs: forwarded to the task function (e.g. `seed`, `image_size`, `n_train`), to
            `load_hf_task` / `load_imagefolder`, or to `catalog.load` (`sources`, `data_dir`, `max_examples`).

    Returns:
        `TaskData`, validated.

    Raises:
        TaskNotFoundError (a `KeyError`): unknown name; the message lists the registered tasks.
        ValueError: the task's data is invalid (fewer than 2 classes, an empty split, bad image arrays).

    >>> get_task("digits").num_classes
    10
    """
    prefix = next((p for p in _SOURCES if name.startswith(p)), None)
    if prefix is not None:
        fn, args, kwargs = _SOURCES[prefix], (name.removeprefix(prefix),), dict(kwargs, decode_size=decode_size)
    elif name in _TASKS:
        fn, args = _TASKS[name], ()
    else:
        fn = next((load for accepts, load in _RESOLVERS if accepts(name)), None)
        if fn is None:
            raise TaskNotFoundError(name, list(_TASKS))
        args, kwargs = (name,), dict(kwargs, decode_size=decode_size)
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as e:  # an option this source does not take (e.g. skip_corrupt for generated data, a typo)
        raise DataError(f"task {name!r}: {e}") from None
    task = fn(*args, **kwargs)
    if not isinstance(task, TaskData):
        raise TypeError(f"task function for {name!r} returned {type(task).__name__}, expected TaskData")
    return task
