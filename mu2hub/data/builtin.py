"""Built-in tasks that need no download: scikit-learn's bundled digits and dSprites-style generated shapes.

These are what the quickstart, the embedded default and the tests train on, so their labels must be real:
`tests/data/test_data.py` checks that a plain scikit-learn model learns each of them well above chance.

Shapes follow dSprites (Matthey et al. 2017): latent factors shape (square, ellipse, heart), scale (6 values
in [0.5, 1]), orientation (40 values over [0, 2π), endpoint excluded so no two values draw the same image),
x and y position (32 values each); a white shape on black. Each image draws one combination of factors
uniformly without replacement, so train, validation and test never share a combination. VTAB uses the
same factors as tasks; here:

- `shapes/label_shape`: the shape, 3 classes.
- `shapes/label_scale`: the scale, 6 classes.
- `shapes/label_x_position`: x position binned into 8 columns (VTAB bins dSprites x into 16; 8 keeps
  2 px per class at the default 32×32).
- `shapes/label_orientation`: hearts only, orientation binned into 8 sectors of 45°. A square looks the
  same every 90° and an ellipse every 180°, so on those the raw orientation factor is partly unobservable
  (VTAB's dSprites orientation task has that ceiling); the heart has no rotational symmetry, so every
  label is visible in the image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from mu2hub.data.registry import Split, TaskData, register_task

SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
NUM_ORIENTATIONS = 40
NUM_POSITIONS = 32
FACTOR_SIZES = (len(SHAPES), len(SCALES), NUM_ORIENTATIONS, NUM_POSITIONS, NUM_POSITIONS)
ORIENTATION_BINS = 8
X_POSITION_BINS = 8

#: Circumradius of a scale-1 shape, and the margin that keeps every shape inside the image (unit = image).
_MAX_RADIUS = 0.25
_SUPERSAMPLE = 4

DEFAULT_SIZES = {"n_train": 2000, "n_validation": 500, "n_test": 1000}


# ---------------------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------------------
@register_task("digits")
def digits(*, seed: int = 0) -> TaskData:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images), stratified 70/10/20 by `seed`."""
    return _digits(seed)


@functools.lru_cache(maxsize=4)
def _digits(seed: int) -> TaskData:
    from mu2hub.utils.extras import require

    bunch = require("sklearn.datasets").load_digits()
    gray = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
    images = np.repeat(gray[..., None], 3, axis=-1)
    labels = bunch.target.astype(np.int32)
    parts = _stratified_split(labels, (0.7, 0.1, 0.2), seed)
    splits = [Split(_readonly(images[idx]), _readonly(labels[idx])) for idx in parts]
    return TaskData("digits", [str(d) for d in range(10)], *splits)


def _stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Index arrays, one per fraction, with each class spread in proportion (rounded) and shuffled."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, bounds[:-1]), strict=True):
            part.append(chunk)
    return [rng.permutation(np.concatenate(part)) for part in parts]


# ---------------------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------------------
@register_task("shapes/label_shape")
def shapes_label_shape(**kwargs) -> TaskData:
    """Which of square / ellipse / heart. kwargs: n_train, n_validation, n_test, seed, image_size."""
    return _shapes_task("shapes/label_shape", list(SHAPES), lambda f: f[:, 0], **kwargs)


@register_task("shapes/label_scale")
def shapes_label_scale(**kwargs) -> TaskData:
    """The shape's scale, 6 classes from 0.5 to 1.0."""
    names = [f"{s:.1f}" for s in SCALES]
    return _shapes_task("shapes/label_scale", names, lambda f: f[:, 1], **kwargs)


@register_task("shapes/label_x_position")
def shapes_label_x_position(**kwargs) -> TaskData:
    """The shape's centre column, 8 bins of 4 position values each, left to right."""
    per_bin = NUM_POSITIONS // X_POSITION_BINS
    names = [f"x{i} of {X_POSITION_BINS}" for i in range(X_POSITION_BINS)]
    return _shapes_task("shapes/label_x_position", names, lambda f: f[:, 3] // per_bin, **kwargs)


@register_task("shapes/label_orientation")
def shapes_label_orientation(**kwargs) -> TaskData:
    """A heart's rotation, 8 sectors of 45° counter-clockwise from upright (see the module docstring)."""
    per_bin = NUM_ORIENTATIONS // ORIENTATION_BINS
    width = 360 // ORIENTATION_BINS
    names = [f"{i * width}-{(i + 1) * width}deg" for i in range(ORIENTATION_BINS)]
    return _shapes_task(
        "shapes/label_orientation",
        names,
        lambda f: f[:, 2] // per_bin,
        shapes=(SHAPES.index("heart"),),
        **kwargs,
    )


def _shapes_task(
    name: str,
    label_names: list[str],
    label_fn: Callable[[np.ndarray], np.ndarray],
    *,
    shapes: tuple[int, ...] = (0, 1, 2),
    n_train: int = DEFAULT_SIZES["n_train"],
    n_validation: int = DEFAULT_SIZES["n_validation"],
    n_test: int = DEFAULT_SIZES["n_test"],
    seed: int = 0,
    image_size: int = 32,
) -> TaskData:
    """The shared body of the shape tasks: generate (cached), then label each split with `label_fn(factors)`."""
    sizes = (n_train, n_validation, n_test)
    if min(sizes) < 1:
        raise ValueError(f"{name}: n_train, n_validation and n_test must be at least 1, got {sizes}")
    splits = []
    for factors, images in _generate(shapes, sizes, seed, image_size):
        splits.append(Split(images, _readonly(label_fn(factors).astype(np.int32))))
    return TaskData(name, label_names, *splits)


@functools.lru_cache(maxsize=8)
def _generate(
    shapes: tuple[int, ...], sizes: tuple[int, int, int], seed: int, image_size: int
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(factors [n, 5], images [n, S, S, 3]) per split; cached because all shape tasks share the render."""
    factors = sample_factors(sum(sizes), seed, shapes=shapes)
    images = render(factors, image_size)
    bounds = np.cumsum(sizes)[:-1]
    return tuple(
        (_readonly(f), _readonly(i)) for f, i in zip(np.split(factors, bounds), np.split(images, bounds), strict=True)
    )


def sample_factors(n: int, seed: int, *, shapes: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """`n` distinct latent combinations [shape, scale, orientation, x, y] (indices), drawn uniformly."""
    sizes = (len(shapes), *FACTOR_SIZES[1:])
    total = int(np.prod(sizes))
    if not 0 < n <= total:
        raise ValueError(f"can draw between 1 and {total} distinct shape images, asked for {n}")
    flat = np.random.default_rng(seed).choice(total, size=n, replace=False)
    factors = np.stack(np.unravel_index(flat, sizes), axis=1)
    factors[:, 0] = np.asarray(shapes)[factors[:, 0]]
    return factors.astype(np.int64)


def render(factors: np.ndarray, image_size: int = 32) -> np.ndarray:
    """White shapes on black, uint8 [n, S, S, 3]; anti-aliased by drawing at 4× and box-averaging down."""
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 to draw a shape, got {image_size}")
    canvas = image_size * _SUPERSAMPLE
    out = np.empty((len(factors), image_size, image_size), np.uint8)
    angles = 2 * np.pi * np.arange(NUM_ORIENTATIONS) / NUM_ORIENTATIONS
    centres = _MAX_RADIUS + np.arange(NUM_POSITIONS) / (NUM_POSITIONS - 1) * (1 - 2 * _MAX_RADIUS)
    for i, (shape, scale, orientation, x, y) in enumerate(factors):
        theta = angles[orientation]
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        uv = _OUTLINES[shape] @ rotation.T * (SCALES[scale] * _MAX_RADIUS)
        # Image rows grow downwards, so y position 0 is the top and the outline's +v points up.
        points = np.stack([centres[x] + uv[:, 0], centres[y] - uv[:, 1]], axis=1) * canvas
        image = Image.new("L", (canvas, canvas), 0)
        ImageDraw.Draw(image).polygon([tuple(p) for p in points], fill=255)
        out[i] = np.asarray(image.reduce(_SUPERSAMPLE))
    return np.repeat(out[..., None], 3, axis=-1)


def _outlines() -> tuple[np.ndarray, ...]:
    """Polygon outlines [k, 2] (u right, v up), centred and scaled to circumradius 1."""
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    square = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) / np.sqrt(2)
    ellipse = np.stack([np.cos(t), 0.5 * np.sin(t)], axis=1)
    heart = np.stack(
        [16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)], axis=1
    )  # the classic heart curve, tip down
    heart -= (heart.max(0) + heart.min(0)) / 2
    heart /= np.linalg.norm(heart, axis=1).max()
    return square, ellipse, heart


_OUTLINES = _outlines()


def _readonly(array: np.ndarray) -> np.ndarray:
    """Cached arrays are shared between callers; make accidental in-place edits fail loudly."""
    array.flags.writeable = False
    return array
