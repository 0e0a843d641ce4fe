"""Images from wherever users have them: files, folders of files, datasets — decoded safely, converted to RGB.

Used by `mu2hub predict` (files, folders, `hf:` / `imagefolder:` datasets, in batches) and by the demo Space
(arbitrary uploads). JAX-free: decoding and listing never wait for the model.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from .registry import MAX_SIDE, check_size, to_rgb_uint8
from ..errors import ArgumentError, ImageInputError, InputNotFoundError

#: What a folder given to `predict` is searched for (lower-case suffixes).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DATASET_PREFIXES = ("hf:", "imagefolder:")


def load_image(image: Any, *, max_side: int = MAX_SIDE) -> Image.Image:
    """Any upload (file path, PIL image or array) -> an RGB PIL image no larger than `max_side`.

    Why here and not in `TaskModel.preprocess`: the Space receives arbitrary files; a JPEG is decoded at a
    reduced scale (`draft`) and anything large is thumbnailed before the float pipeline sees it.

    Raises:
        ImageInputError (a ValueError): no image, an unreadable file, or one too large to decode safely (readable messages).
    """
    if image is None or (isinstance(image, str) and not image):
        raise ImageInputError("No image: upload an image (or pick an example) first.")
    opened = isinstance(image, (str, os.PathLike))
    if opened:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(image)
        except Image.DecompressionBombError as e:
            raise ImageInputError(f"The image is too large to decode safely ({e}).") from e
        except (OSError, ValueError) as e:
            raise ImageInputError(f"Could not read the upload as an image: {e}") from e
    elif isinstance(image, Image.Image):
        im = image
    else:
        try:
            im = Image.fromarray(to_rgb_uint8(np.asarray(image)))
        except (TypeError, ValueError) as e:
            raise ImageInputError(f"Not an image: {e}") from e
    try:
        return _fit(im, max_side, copy=not opened)
    except (OSError, ValueError) as e:
        raise ImageInputError(f"Could not decode the image: {e}") from e
    finally:
        if opened:
            im.close()


def _fit(im: Image.Image, max_side: int, *, copy: bool) -> Image.Image:
    w, h = im.size
    check_size(h, w)
    if max(w, h) > max_side:
        if im.format == "JPEG":
            im.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale: no full-size buffer
        if im.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
            im = Image.fromarray(to_rgb_uint8(im))
        elif copy:
            im = im.copy()  # thumbnail() works in place; never resize the caller's image
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return Image.fromarray(to_rgb_uint8(im))  # grayscale, palette, RGBA, 16-bit -> RGB uint8 (tiny ones included)


# ---------------------------------------------------------------------------------------------------
# Inputs of `predict`: files, folders, datasets
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputImage:
    """One image to classify: a display name (the file, or `hf:x[test][12]`) and how to get its pixels."""

    name: str
    load: Callable[[], Image.Image | np.ndarray]


def expand_inputs(specs: list[str], *, split: str = "test", data_kwargs: dict | None = None,
                  decode_size: int | None = None) -> list[InputImage]:
    """Files, folders (every image below them, sorted) and datasets (`hf:<id>`, `imagefolder:<folder>`: every image
    of `split`) -> the images to classify, in order. A missing file or folder fails here, before any prediction.
    A dataset's images of varying sizes are decoded at `decode_size` (the task's image size), as fine-tuning does.
    """
    out: list[InputImage] = []
    for spec in specs:
        if spec.startswith(DATASET_PREFIXES):
            out.extend(_dataset_images(spec, split, {"decode_size": decode_size, **(data_kwargs or {})}))
        elif os.path.isdir(spec):
            files = sorted(p for p in Path(spec).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputNotFoundError(spec, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            out.extend(InputImage(str(p), _opener(str(p))) for p in files)
        elif os.path.isfile(spec):
            out.append(InputImage(spec, _opener(spec)))
        else:
            raise InputNotFoundError(spec)
    return out


def _opener(path: str) -> Callable[[], Image.Image]:
    return lambda: load_image(path)


def _dataset_images(spec: str, split: str, data_kwargs: dict) -> Iterator[InputImage]:
    from .resolve import resolve_data

    part = getattr(resolve_data(spec, **data_kwargs), split)
    for i in range(len(part)):
        yield InputImage(f"{spec}[{split}][{i}]", lambda i=i: part.images[i])


def predict_in_batches(predict: Callable[[list], list], items: list[InputImage], *, batch_size: int = 64,
                       progress: Callable[[int], Any] | None = None) -> Iterator[tuple[InputImage, list | None, str | None]]:
    """`(item, predictions, None)` or `(item, None, why it could not be read)` for every item, in order.

    Images are decoded and classified `batch_size` at a time, so a folder of any size never sits in memory at once;
    one unreadable file is reported and the rest still answered.
    """
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        loaded: list[Any] = []
        errors: dict[int, str] = {}
        for i, item in enumerate(chunk):
            try:
                loaded.append(item.load())
            except (OSError, ValueError) as e:
                errors[i] = str(e)
        answers = iter(predict(loaded) if loaded else [])
        for i, item in enumerate(chunk):
            yield (item, None, errors[i]) if i in errors else (item, next(answers), None)
        if progress is not None:
            progress(len(chunk))

