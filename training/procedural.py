"""Generated pretraining images beyond shapes: font-rendered glyphs and procedural textures.

A root pretrained on shapes alone learned shapes: fine-tuning it lost to training from scratch on texture photographs
(bench/transfer.py, 0.785 vs 0.854 at 10,240 examples). An ImageNet-21k root, which the reference starts from,
knows strokes and surfaces too, so the quickstart's root also learns them here, from images generated offline —
none of them taken from any task the project evaluates on:

- **glyphs**: the 62 characters 0–9, A–Z, a–z drawn in the DejaVu, STIX and Computer Modern fonts matplotlib ships,
  at random size, rotation, slant, stroke weight, position and resolution; label = the character;
- **textures**: ten procedural families in the spirit of "Learning to See by Looking at Noise" (Baradad et al.,
  2021) — power-law noise at three spectral slopes, gratings, directional noise, bricks, blobs, Voronoi cells,
  plaids and scratches — at random scale, orientation, contrast and resolution; label = the family.

Both return uint8 RGB [n, S, S, 3] (grey, repeated) and int labels, deterministic for a seed.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GLYPHS = string.digits + string.ascii_uppercase + string.ascii_lowercase
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
              "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
              "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBol.ttf",
              "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf")
TEXTURES = ("noise-fine", "noise-medium", "noise-smooth", "grating", "directional", "bricks", "blobs", "cells",
            "plaid", "scratches")
_CANVAS = 64  # drawn at 64 px, then reduced: anti-aliased strokes and edges


def font_paths() -> list[Path]:
    """The fonts matplotlib ships (its `figures` extra): real, licensed (DejaVu, STIX, BaKoMa CM), and offline."""
    from mu2hub.utils.extras import require

    matplotlib = require("matplotlib")
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / f for f in FONT_FILES]


def glyphs(n: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` glyph images, white ink on black, and their character index in `GLYPHS`."""
    rng = np.random.default_rng(seed)
    paths = font_paths()
    labels = rng.integers(0, len(GLYPHS), n)
    out = np.empty((n, image_size, image_size), np.uint8)
    fonts: dict[tuple[int, int], ImageFont.FreeTypeFont] = {}
    for i, label in enumerate(labels):
        key = (int(rng.integers(len(paths))), int(rng.integers(28, 52)))
        font = fonts.setdefault(key, ImageFont.truetype(str(paths[key[0]]), key[1]))
        layer = Image.new("L", (_CANVAS, _CANVAS), 0)
        draw = ImageDraw.Draw(layer)
        stroke = int(rng.integers(0, 3))
        x0, y0, x1, y1 = draw.textbbox((0, 0), GLYPHS[label], font=font, stroke_width=stroke)
        jitter = rng.uniform(-6, 6, 2)
        origin = ((_CANVAS - (x1 - x0)) / 2 - x0 + jitter[0], (_CANVAS - (y1 - y0)) / 2 - y0 + jitter[1])
        draw.text(origin, GLYPHS[label], fill=int(rng.integers(160, 256)), font=font, stroke_width=stroke,
                  stroke_fill=int(rng.integers(160, 256)))
        shear = rng.uniform(-0.25, 0.25)
        layer = layer.transform(layer.size, Image.Transform.AFFINE, (1, shear, -shear * _CANVAS / 2, 0, 1, 0),
                                resample=Image.Resampling.BILINEAR)
        layer = layer.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)
        out[i] = _at_resolution(layer, image_size, rng)
    return _rgb(out), labels.astype(np.int32)


def textures(n: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` texture images and their family index in `TEXTURES`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(TEXTURES), n)
    out = np.empty((n, image_size, image_size), np.uint8)
    for i, label in enumerate(labels):
        field = _FAMILIES[label](rng)
        field = (field - field.mean()) / (field.std() + 1e-6)
        field = np.clip(rng.uniform(100, 160) + rng.uniform(25, 60) * field, 0, 255)
        out[i] = _at_resolution(Image.fromarray(field.astype(np.uint8)), image_size, rng)
    return _rgb(out), labels.astype(np.int32)


def _at_resolution(layer: Image.Image, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Reduced to a random resolution between a quarter of `image_size` and it, then to `image_size`: blurry and
    blocky inputs (an 8×8 digit shown at 32 px) are what small image tasks look like."""
    low = int(rng.integers(max(4, image_size // 4), image_size + 1))
    small = layer.resize((low, low), Image.Resampling.BOX)
    return np.asarray(small.resize((image_size, image_size), Image.Resampling.BILINEAR))


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def _grid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle."""
    theta = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float64)
    return x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)


def _power_noise(rng: np.random.Generator, slope: float, directional: bool = False) -> np.ndarray:
    fy, fx = np.meshgrid(np.fft.fftfreq(_CANVAS), np.fft.fftfreq(_CANVAS), indexing="ij")
    if directional:  # energy along one orientation: blades, grain, streaks
        theta = rng.uniform(0, np.pi)
        u, v = fx * np.cos(theta) + fy * np.sin(theta), -fx * np.sin(theta) + fy * np.cos(theta)
        fx, fy = u * rng.uniform(4, 10), v
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius ** (slope / 2)
    spectrum[0, 0] = 0
    return np.real(np.fft.ifft2(spectrum))


def _grating(rng: np.random.Generator) -> np.ndarray:
    u, _ = _grid(rng)
    return np.sin(2 * np.pi * u / rng.uniform(3, 16)) + 0.3 * rng.normal(size=u.shape)


def _bricks(rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(rng)
    height = rng.uniform(5, 14)
    width = height * rng.uniform(1.5, 3)
    row = np.floor(v / height)
    col = np.floor(u / width + 0.5 * (row % 2))
    shade = np.random.default_rng(int(rng.integers(1 << 31))).normal(size=4096)[((row * 61 + col) % 4096).astype(int)]
    mortar = (np.mod(v, height) < 1.5) | (np.mod(u / width + 0.5 * (row % 2), 1) * width < 1.5)
    return np.where(mortar, -3.0, shade) + 0.3 * rng.normal(size=u.shape)


def _blobs(rng: np.random.Generator) -> np.ndarray:
    field = np.zeros((_CANVAS, _CANVAS))
    y, x = np.mgrid[0:_CANVAS, 0:_CANVAS]
    for _ in range(int(rng.integers(10, 60))):
        cx, cy, r = rng.uniform(0, _CANVAS), rng.uniform(0, _CANVAS), rng.uniform(2, 9)
        field[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0.3, 1.0)
    return field + 0.1 * rng.normal(size=field.shape)


def _cells(rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(8, 60))
    seeds = rng.uniform(0, _CANVAS, (k, 2))
    y, x = np.mgrid[0:_CANVAS, 0:_CANVAS]
    d = np.sort(np.hypot(x[..., None] - seeds[:, 0], y[..., None] - seeds[:, 1]), axis=-1)
    return d[..., 1] - d[..., 0]  # bright inside a cell, dark on its edges (Worley F2 - F1)


def _plaid(rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(rng)
    period = rng.uniform(4, 16)
    return np.sign(np.sin(2 * np.pi * u / period)) * np.sign(np.sin(2 * np.pi * v / (period * rng.uniform(0.5, 2))))


def _scratches(rng: np.random.Generator) -> np.ndarray:
    layer = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(5, 30))):
        x, y = rng.uniform(0, _CANVAS, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(8, 40)
        draw.line([(x, y), (x + length * np.cos(angle), y + length * np.sin(angle))],
                  fill=int(rng.integers(100, 256)), width=int(rng.integers(1, 4)))
    return np.asarray(layer, np.float64) + 10 * rng.normal(size=(_CANVAS, _CANVAS))


_FAMILIES = (
    lambda rng: _power_noise(rng, rng.uniform(0.5, 1.5)),
    lambda rng: _power_noise(rng, rng.uniform(1.5, 2.5)),
    lambda rng: _power_noise(rng, rng.uniform(2.5, 3.5)),
    _grating,
    lambda rng: _power_noise(rng, rng.uniform(1.0, 2.5), directional=True),
    _bricks,
    _blobs,
    _cells,
    _plaid,
    _scratches,
)
