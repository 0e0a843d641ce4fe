"""Input pipelines as µ2Net has them: numpy batching on the host, preprocessing in JAX on the device.

Preprocessing (munet_spec.md §4): uint8 RGB -> float; for training only a distorted-bbox random crop, a
random horizontal flip and colour jitter; resize to S×S; scale to [-1, 1] and clip. Here everything runs in
JAX so it can sit inside a jitted train step; the `ds_*` hparams and `image_size` are static.

Choices that differ from the reference's TF ops, on purpose:
- The crop is fused with the resize: one `jax.image.scale_and_translate` samples the crop box straight
  to S×S (bilinear, antialiased), so no variable-size intermediate exists. The box is sampled like
  `tf.image.sample_distorted_bounding_box` (area fraction ~ U(area_min, 1), aspect w/h ~ U(r, 1/r)), but a
  box that does not fit is clipped to the image instead of retried 100 times.
- Colour jitter runs after the resize (cheaper at S×S; these are global colour ops, so the order barely
  matters). Its deltas mean what they mean in the reference, which jitters [-1, 1] values (a brightness
  delta d moves a pixel by up to d on that scale); the HSV ops see the image clipped to [0, 1].
- Every example's randomness comes from its own key, folded with a fixed id per op, so turning one op on
  or off does not change the draws of the others.
- `preprocess_train` reads the `ds_*` hparams into a hashable tuple and jits on it, so calling it outside
  a jitted step compiles once per distinct setting (µ2Net shares one setting per generation).

Eval preprocessing is stored with each task as `pp_spec(image_size)`; `apply_pp_spec_numpy` reproduces
`preprocess_eval` on the host without JAX (same triangle-kernel weights as `jax.image.resize`). A republished
reference task stores `antialias: false` (the reference's `tf.image.resize`) and, for dSprites, `pixel_scale: 255`;
both paths honour them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mu2hub.data.registry import Split, to_rgb_uint8
from mu2hub.errors import FormatError

_CROP, _FLIP, _BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(6)


# ---------------------------------------------------------------------------------------------------------
# On-device preprocessing
# ---------------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("image_size", "antialias", "pixel_scale"))
def preprocess_eval(images: jax.Array | np.ndarray, image_size: int, *, antialias: bool = True,
                    pixel_scale: float = 1.0) -> jax.Array:
    """uint8 [B, H, W, 3] -> float32 [B, S, S, 3] in [-1, 1]: bilinear resize, no randomness.

    `antialias` and `pixel_scale` are a task's stored spec (`spec_options`): the reference resizes with
    `tf.image.resize`, which does not antialias, and scales dSprites' 0/1 pixels by 255.
    """
    return _to_value_range(_resize(_to_unit(images, pixel_scale), image_size, antialias))


class Augment(NamedTuple):
    """The augmentation settings, hashable so each distinct one is a static jit argument.

    Settings that change nothing are normalised away (`from_hparams`): hparams that differ only in those
    compile one preprocessing (and one train step), not several.
    """

    area_min: float  # 1.0: no crop
    aspect_min: float
    flip: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> "Augment":
        """The settings `preprocess_train` applies for a path's `ds_*` hparams (raises as it documents)."""
        if hparams.get("ds_quality_delta", 0.0) > 0:
            raise ValueError("ds_quality_delta (JPEG-quality jitter, µ3Net+) is not implemented; set it to 0")
        area_min = float(hparams.get("ds_area_range_min", 1.0))
        aspect_min = float(hparams.get("ds_aspect_ratio_range_min", 1.0))
        if not (0.0 < area_min <= 1.0 and 0.0 < aspect_min <= 1.0):
            raise ValueError(
                f"ds_area_range_min and ds_aspect_ratio_range_min must lie in (0, 1]; got {area_min}, {aspect_min}"
            )
        crop = bool(hparams.get("ds_crop", True)) and area_min < 1.0
        return cls(
            area_min=area_min if crop else 1.0,
            aspect_min=aspect_min if crop else 1.0,
            flip=bool(hparams.get("ds_flip_left_right", False)),
            brightness=float(hparams.get("ds_brightness_delta", 0.0)),
            contrast=float(hparams.get("ds_contrast_delta", 0.0)),
            saturation=float(hparams.get("ds_saturation_delta", 0.0)),
            hue=float(hparams.get("ds_hue_delta", 0.0)),
        )


def preprocess_train(
    images: jax.Array | np.ndarray, image_size: int, hparams: Mapping[str, Any] | Augment, key: jax.Array, *,
    antialias: bool = True, pixel_scale: float = 1.0
) -> jax.Array:
    """uint8 [B, H, W, 3] -> float32 [B, S, S, 3] in [-1, 1] with the augmentations `hparams` turn on.

    Args:
        images: uint8 [B, H, W, 3].
        image_size (`int`): S.
        hparams (`Mapping`): a path's hparams, Python values (read at trace time; each distinct setting
            compiles once). Keys used: `ds_crop` (default True) with `ds_area_range_min` (default 1.0,
            i.e. no crop) and `ds_aspect_ratio_range_min` (default 1.0); `ds_flip_left_right` (default
            False); `ds_brightness_delta`, `ds_contrast_delta`, `ds_saturation_delta`, `ds_hue_delta`
            (default 0.0 = off). Other keys are ignored. Or their `Augment.from_hparams`.
        key: a PRNG key; split per example.
        antialias, pixel_scale: the task's stored resize (`spec_options`), as `preprocess_eval`; the crop's
            resampling follows `antialias` too.

    With every augmentation off this computes exactly `preprocess_eval` (with the same options). Works inside a jitted step too.

    Raises:
        ValueError: `ds_quality_delta` > 0 (µ3Net's JPEG-quality jitter is not implemented); an area or
            aspect minimum outside (0, 1].
    """
    augment = hparams if isinstance(hparams, Augment) else Augment.from_hparams(hparams)
    return _preprocess_train(images, key, image_size, augment, bool(antialias), float(pixel_scale))


@functools.partial(jax.jit, static_argnames=("image_size", "augment", "antialias", "pixel_scale"))
def _preprocess_train(images: jax.Array, key: jax.Array, image_size: int, augment: Augment, antialias: bool = True,
                      pixel_scale: float = 1.0) -> jax.Array:
    x = _to_unit(images, pixel_scale)
    keys = jax.random.split(key, x.shape[0])
    if augment.area_min < 1.0:
        x = jax.vmap(lambda im, k: _random_crop_resize(im, k, image_size, augment.area_min, augment.aspect_min,
                                                       antialias))(x, keys)
    else:
        x = _resize(x, image_size, antialias)
    if augment.flip:
        flip = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, _FLIP)))(keys)
        x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    if augment.brightness or augment.contrast or augment.saturation or augment.hue:
        x = jax.vmap(lambda im, k: _color_jitter(im, k, augment))(x, keys)
    return _to_value_range(x)


def _to_unit(images: jax.Array | np.ndarray, pixel_scale: float = 1.0) -> jax.Array:
    x = jnp.asarray(images).astype(jnp.float32)
    return (x * pixel_scale if pixel_scale != 1 else x) / 255.0


def _to_value_range(x: jax.Array) -> jax.Array:
    return jnp.clip(x * 2.0 - 1.0, -1.0, 1.0)


def _resize(x: jax.Array, image_size: int, antialias: bool = True) -> jax.Array:
    return jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[-1]), "bilinear", antialias=antialias)


def _random_crop_resize(
    image: jax.Array, key: jax.Array, image_size: int, area_min: float, aspect_min: float, antialias: bool = True
) -> jax.Array:
    """Sample a box (area fraction in [area_min, 1], aspect w/h in [r, 1/r]) and resample it to S×S."""
    height, width = image.shape[:2]
    k_area, k_aspect, k_y, k_x = jax.random.split(jax.random.fold_in(key, _CROP), 4)
    area = jax.random.uniform(k_area, minval=area_min, maxval=1.0) * height * width
    aspect = jax.random.uniform(k_aspect, minval=aspect_min, maxval=1.0 / aspect_min)
    box_h = jnp.minimum(jnp.sqrt(area / aspect), height)
    box_w = jnp.minimum(jnp.sqrt(area * aspect), width)
    top = jax.random.uniform(k_y) * (height - box_h)
    left = jax.random.uniform(k_x) * (width - box_w)
    scale = jnp.stack([image_size / box_h, image_size / box_w])
    return jax.image.scale_and_translate(
        image,
        (image_size, image_size, image.shape[-1]),
        (0, 1),
        scale,
        -jnp.stack([top, left]) * scale,
        "bilinear",
        antialias=antialias,
    )


def _color_jitter(image: jax.Array, key: jax.Array, augment: Augment) -> jax.Array:
    """tf.image.random_{brightness,contrast,saturation,hue} on one [S, S, 3] image in [0, 1], with the deltas on
    the reference's scale: it jitters images already in [-1, 1], so a brightness delta d shifts by up to d there,
    i.e. by d/2 in [0, 1] (contrast is the same on either scale). Saturation and hue run on [0, 1] values: the
    reference's HSV ops on [-1, 1] input would also clip every negative channel, which is not what they mean.
    """

    def draw(op: int, low: float, high: float) -> jax.Array:
        return jax.random.uniform(jax.random.fold_in(key, op), minval=low, maxval=high)

    if augment.brightness:
        image = image + draw(_BRIGHTNESS, -augment.brightness, augment.brightness) / 2.0
    if augment.contrast:
        mean = image.mean(axis=(0, 1), keepdims=True)
        image = (image - mean) * draw(_CONTRAST, 1 - augment.contrast, 1 + augment.contrast) + mean
    if augment.saturation or augment.hue:
        hue, saturation, value = jnp.moveaxis(_rgb_to_hsv(jnp.clip(image, 0.0, 1.0)), -1, 0)
        if augment.saturation:
            factor = draw(_SATURATION, 1 - augment.saturation, 1 + augment.saturation)
            saturation = jnp.clip(saturation * factor, 0.0, 1.0)
        if augment.hue:
            hue = jnp.mod(hue + draw(_HUE, -augment.hue, augment.hue), 1.0)
        image = _hsv_to_rgb(jnp.stack([hue, saturation, value], axis=-1))
    return jnp.clip(image, 0.0, 1.0)


def _rgb_to_hsv(rgb: jax.Array) -> jax.Array:
    """[..., 3] RGB in [0, 1] -> HSV with hue in [0, 1) (tf.image.rgb_to_hsv convention)."""
    r, g, b = jnp.moveaxis(rgb, -1, 0)
    value = rgb.max(-1)
    delta = value - rgb.min(-1)
    saturation = jnp.where(value > 0, delta / jnp.where(value > 0, value, 1.0), 0.0)
    safe = jnp.where(delta > 0, delta, 1.0)
    hue = jnp.where(value == r, (g - b) / safe, jnp.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = jnp.where(delta > 0, jnp.mod(hue / 6.0, 1.0), 0.0)
    return jnp.stack([hue, saturation, value], axis=-1)


def _hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    hue, saturation, value = jnp.moveaxis(hsv, -1, 0)
    k = jnp.mod(jnp.array([5.0, 3.0, 1.0]) + hue[..., None] * 6.0, 6.0)
    return value[..., None] * (1 - saturation[..., None] * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))


# ---------------------------------------------------------------------------------------------------------
# The stored eval preprocessing, reproduced on the host
# ---------------------------------------------------------------------------------------------------------
def pp_spec(image_size: int, *, antialias: bool = True, pixel_scale: float = 1) -> dict[str, Any]:
    """The eval preprocessing a path was trained with, as JSON-ready data for `tasks/<task>.json`.

    `antialias=False` is `tf.image.resize`'s bilinear resize (the µ2Net reference); `pixel_scale` multiplies raw
    pixel values first (VTAB's dSprites stores 0/1 pixels and scales them by 255), written only when not 1.
    """
    spec: dict[str, Any] = {
        "resize": int(image_size),
        "method": "bilinear",
        "antialias": bool(antialias),
        "value_range": [-1, 1],
        "channels": "rgb",
    }
    if pixel_scale != 1:
        spec["pixel_scale"] = pixel_scale
    return spec


def spec_options(spec: Mapping[str, Any]) -> tuple[int, bool, float]:
    """(resize, antialias, pixel_scale) of a stored spec; `antialias` absent means True (specs written before it).

    Raises:
        FormatError (a ValueError): a spec this version cannot reproduce (the message shows what it supports).
    """
    size, antialias, scale = spec.get("resize"), spec.get("antialias", True), spec.get("pixel_scale", 1)
    valid = (isinstance(size, int) and not isinstance(size, bool) and size >= 1 and isinstance(antialias, bool)
             and isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < float("inf"))
    given = {"antialias": True, **{k: v for k, v in spec.items() if (k, v) != ("pixel_scale", 1)}}
    if not valid or given != pp_spec(size, antialias=antialias, pixel_scale=scale):
        raise FormatError(
            f"unsupported preprocessing spec {dict(spec)}; this version supports {pp_spec(224)} with any positive "
            "integer 'resize', 'antialias' true or false, and an optional positive 'pixel_scale'"
        )
    return size, antialias, float(scale)


def apply_pp_spec_numpy(images: Any, spec: Mapping[str, Any]) -> np.ndarray:
    """`preprocess_eval` in numpy, driven by a stored spec (matches it within 1e-5).

    Args:
        images: one image or a batch, in any form `to_rgb_uint8` accepts, or a list of such images
            (sizes may differ).
        spec (`Mapping`): from `pp_spec`.

    Returns:
        float32 [S, S, 3] for one image, [N, S, S, 3] for a batch or list.

    Raises:
        FormatError (a ValueError): a spec this version cannot reproduce (the message shows what it supports).
        ImageInputError (a ValueError): an image `to_rgb_uint8` refuses (empty, huge, non-finite, out of range).
    """
    size, antialias, scale = spec_options(spec)
    if isinstance(images, (list, tuple)):
        return np.stack([apply_pp_spec_numpy(image, spec) for image in images])
    rgb = to_rgb_uint8(images)
    batch = rgb[None] if rgb.ndim == 3 else rgb
    x = batch.astype(np.float32)
    x = (x * np.float32(scale) if scale != 1 else x) / np.float32(255.0)
    x = np.einsum("nhwc,hH->nHwc", x, _resize_weights(x.shape[1], size, antialias))
    x = np.einsum("nhwc,wW->nhWc", x, _resize_weights(x.shape[2], size, antialias))
    out = np.clip(x * np.float32(2.0) - np.float32(1.0), -1.0, 1.0).astype(np.float32)
    return out[0] if rgb.ndim == 3 else out


def _resize_weights(in_size: int, out_size: int, antialias: bool = True) -> np.ndarray:
    """[in, out] weights of `jax.image.resize(..., "bilinear", antialias=antialias)` along one axis.

    Without antialias a downscale samples the two nearest pixels (`tf.image.resize`, half-pixel centres);
    with it the triangle kernel is widened by the scale factor, averaging every pixel it covers.
    """
    if in_size == out_size:  # jax skips an axis whose size does not change
        return np.eye(in_size, dtype=np.float32)
    inv_scale = in_size / out_size
    sample = (np.arange(out_size) + 0.5) * inv_scale - 0.5  # input coordinate of each output pixel centre
    width = max(inv_scale, 1.0) if antialias else 1.0
    distance = np.abs(sample[None, :] - np.arange(in_size)[:, None]) / width
    weights = np.maximum(0.0, 1.0 - distance)
    return (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Host-side batching
# ---------------------------------------------------------------------------------------------------------
def batches(
    split: Split, batch_size: int, *, seed: int, shuffle: bool = True, repeat: bool = True, drop_remainder: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images uint8 [B, H, W, 3], labels int32 [B]) batches, the same sequence for the same seed.

    With `repeat`, epochs (each a fresh permutation when `shuffle`) are concatenated before batching, as
    `dataset.repeat().batch()` does, so no example is skipped at epoch ends and the stream never ends.
    Without it, one pass; a short last batch is dropped when `drop_remainder`.
    """
    for idx in index_batches(len(split), batch_size, seed=seed, shuffle=shuffle, repeat=repeat,
                             drop_remainder=drop_remainder):
        yield split.images[idx], split.labels[idx]


def index_batches(
    n: int, batch_size: int, *, seed: int, shuffle: bool = True, repeat: bool = True, drop_remainder: bool = True
) -> Iterator[np.ndarray]:
    """The example indices of `batches`' batches over a split of `n` examples: the order, without the data.

    Why apart: a streamed split (`mu2hub.data.stream`) reads the examples of each batch from its files, in
    exactly the order an in-memory split of the same examples would be batched.
    """
    if n == 0 or batch_size < 1:
        raise ValueError(f"need a non-empty split and batch_size >= 1; got {n} examples, batch_size {batch_size}")
    rng = np.random.default_rng(seed)
    pending = np.zeros(0, np.int64)
    epochs = 0
    while True:
        while len(pending) < batch_size and (repeat or epochs == 0):
            pending = np.concatenate([pending, rng.permutation(n) if shuffle else np.arange(n)])
            epochs += 1
        if len(pending) == 0 or (len(pending) < batch_size and drop_remainder):
            return
        idx, pending = pending[:batch_size], pending[batch_size:]
        yield idx


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, labels, mask) batches covering every example once, in order, all of shape `batch_size`.

    The last batch is padded with zeros and `mask` is False there, so jitted eval sees one shape and
    `sum(correct * mask) / sum(mask)` counts each example exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split)
    for start in range(0, n, batch_size):
        images, labels = split.images[start : start + batch_size], split.labels[start : start + batch_size]
        pad = batch_size - len(labels)
        mask = np.arange(batch_size) < len(labels)
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
        yield images, labels, mask
