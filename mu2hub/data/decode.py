"""The size images are decoded to: one rule for the in-memory loaders (`hf`), streamed splits (`stream`) and the
training entry points (the evolution loop, `finetune`, `add_task`).

Images that share one size are kept at it (the path's preprocessing resizes on the device). Images of varying
sizes must be decoded to one size before they can be batched; which size matters for training. The reference
crops at full resolution and resizes afterwards (munet_spec.md §4): decoding at the path's own size first throws
away what the random crop would use, and a path whose `ds_image_size` mutates upward is then upsampled.
`bench/decode_size.py` measured it (BENCHMARKS.md "Decode size"): add_task on generated 8/12/16 px shapes
with 8 px paths reached 0.589 mean test accuracy (3 seeds) decoded at 8 px, 0.726 at 16 px; upsampling further
(32, 64) moved it within the seed noise. So training decodes at `training_decode_size` (twice the largest size a path can reach, capped at
`MAX_SIDE`), never above the largest image's own side: upsampling at decode would only cost memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image

from mu2hub.data.registry import MAX_SIDE, to_rgb_uint8
from mu2hub.errors import ArgumentError, VaryingImageSizesError
from mu2hub.format.schema import MAX_IMAGE_SIZE

#: How far above the largest reachable path size training decodes: a crop covering a quarter of the image
#: (half its side) still sees full path resolution, while memory stays within 4x of decoding at the path size.
DECODE_MULTIPLE = 2


def training_decode_size(image_sizes: Iterable[int]) -> int:
    """The side images of varying sizes are decoded to for training paths of `image_sizes` (every size a path may
    take: its own, and those its search space can mutate it to): `DECODE_MULTIPLE` x the largest, capped at
    `MAX_SIDE` so an in-memory dataset stays bounded (streamed sources decode per batch anyway)."""
    return min(DECODE_MULTIPLE * max(int(s) for s in image_sizes), MAX_SIDE)


def target_shape(name: str, shapes: Iterable[tuple[int, int]], *, image_size: int | None = None,
                 decode_size: int | None = None) -> tuple[int, int] | None:
    """(H, W) to decode `name`'s images of these `shapes` to, or None to keep them (they share one size).

    `image_size` when given; else, when sizes vary, `decode_size`, but never above the largest image's side.

    Raises:
        ArgumentError: `image_size` or `decode_size` is not a whole number of pixels in 1..`MAX_IMAGE_SIZE` (what a
            task file may record).
        VaryingImageSizesError: sizes vary and no `decode_size` was given.
    """
    for key, value in (("image_size", image_size), ("decode_size", decode_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or not 1 <= value <= MAX_IMAGE_SIZE):
            raise ArgumentError(f"{name}: {key}={value!r}: expected a whole number of pixels from 1 to {MAX_IMAGE_SIZE}")
    if image_size is not None:
        return image_size, image_size
    shapes = set(shapes)
    if len(shapes) <= 1:
        return None
    if decode_size is None:
        raise VaryingImageSizesError(f"{name}: images have {len(shapes)} different sizes; pass decode_size= (the path's "
                                     "image size) or image_size= to resize them")
    side = min(decode_size, max(max(s) for s in shapes))
    return side, side


def decode(image: Any, shape: tuple[int, int] | None) -> np.ndarray:
    """Any image -> uint8 RGB [H, W, 3] of `shape` (PIL bilinear, antialiased when shrinking); an image of that size,
    or any image when `shape` is None, passes through at its own size."""
    if isinstance(image, Image.Image) and image.mode in ("RGB", "L"):  # resized by PIL as it is: no array round trip
        if shape is not None and image.size != (shape[1], shape[0]):
            image = image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
        return to_rgb_uint8(image)
    rgb = to_rgb_uint8(image)
    if shape is None or rgb.shape[:2] == tuple(shape):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
