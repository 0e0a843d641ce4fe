"""The stored preprocessing's resize: antialiased (mu2hub's own tasks) or not (`tf.image.resize`, the reference's),
and `pixel_scale` (dSprites' 0/1 pixels) — on the host and on the device, against an independent resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mu2hub.data.pp import apply_pp_spec_numpy, pp_spec, preprocess_eval, spec_options


def _torch(images: np.ndarray, size: int, antialias: bool, scale: float = 1.0) -> np.ndarray:
    """torch's bilinear `interpolate` (half-pixel centres; with `antialias` the PIL-style widened kernel) on
    x / 127.5 - 1, clipped: `align_corners=False, antialias=False` is what `tf.image.resize` computes."""
    x = torch.from_numpy(images.astype(np.float32) * scale / 127.5 - 1).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    return x.permute(0, 2, 3, 1).clamp(-1, 1).numpy()


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("h, w, size", [(64, 48, 16), (30, 30, 7), (8, 11, 32), (97, 61, 24)])
def test_host_and_device_resize_match_an_independent_one(antialias, h, w, size):
    images = np.random.default_rng(h + w).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    spec = pp_spec(size, antialias=antialias)
    host, device = apply_pp_spec_numpy(images, spec), np.asarray(preprocess_eval(images, size, antialias=antialias))
    peer = _torch(images, size, antialias)
    assert np.abs(host - device).max() < 1e-5 and np.abs(host - peer).max() < 1e-5


def test_antialias_matters_only_when_shrinking():
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    shrink = [apply_pp_spec_numpy(images, pp_spec(16, antialias=a)) for a in (False, True)]
    grow = [apply_pp_spec_numpy(images[:, :8, :8], pp_spec(32, antialias=a)) for a in (False, True)]
    assert np.abs(shrink[0] - shrink[1]).max() > 0.1 and np.abs(grow[0] - grow[1]).max() == 0


def test_pixel_scale_turns_binary_sprites_into_the_reference_input():
    """dSprites' 0/1 pixels ×255 (VTAB) give what a 0/255 image gives without the scale, on both paths."""
    sprites = np.random.default_rng(1).integers(0, 2, (3, 64, 64, 1), dtype=np.uint8)
    spec = pp_spec(24, antialias=False, pixel_scale=255)
    assert spec["pixel_scale"] == 255 and "pixel_scale" not in pp_spec(24)
    host = apply_pp_spec_numpy(sprites, spec)
    np.testing.assert_allclose(host, apply_pp_spec_numpy(sprites * 255, pp_spec(24, antialias=False)), atol=1e-6)
    device = np.asarray(preprocess_eval(np.repeat(sprites, 3, -1), 24, antialias=False, pixel_scale=255.0))
    np.testing.assert_allclose(host, device, atol=1e-5)
    np.testing.assert_allclose(host, _torch(np.repeat(sprites, 3, -1), 24, False, 255.0), atol=1e-5)


def test_specs_without_antialias_are_read_as_before():
    """Task files written before the key existed resized with antialias: absent means true."""
    old = {"resize": 16, "method": "bilinear", "value_range": [-1, 1], "channels": "rgb"}
    assert spec_options(old) == (16, True, 1.0)
    images = np.random.default_rng(2).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_pp_spec_numpy(images, old), apply_pp_spec_numpy(images, pp_spec(16)))


@pytest.mark.parametrize("bad", [{"antialias": "no"}, {"antialias": 0}, {"pixel_scale": 0}, {"pixel_scale": -255},
                                 {"pixel_scale": "255"}, {"pixel_scale": True}, {"pixel_scale": float("inf")},
                                 {"resize": True}, {"method": "bicubic"}, {"extra": 1}])
def test_unsupported_specs_are_refused(bad):
    with pytest.raises(ValueError, match="unsupported preprocessing spec"):
        apply_pp_spec_numpy(np.zeros((4, 4, 3), np.uint8), {**pp_spec(8), **bad})


def test_training_preprocessing_with_augmentation_off_is_the_stored_eval():
    """A task stored without antialias and with a pixel scale trains on what it is served with."""
    from mu2hub.data.pp import preprocess_train
    import jax

    sprites = np.random.default_rng(3).integers(0, 2, (2, 32, 32, 3), dtype=np.uint8)
    kw = dict(antialias=False, pixel_scale=255.0)
    trained = np.asarray(preprocess_train(sprites, 8, {}, jax.random.key(0), **kw))
    np.testing.assert_array_equal(trained, np.asarray(preprocess_eval(sprites, 8, **kw)))
    np.testing.assert_allclose(trained, apply_pp_spec_numpy(sprites, pp_spec(8, antialias=False, pixel_scale=255)),
                               atol=1e-5)
    assert np.abs(trained - np.asarray(preprocess_train(sprites, 8, {}, jax.random.key(0)))).max() > 0.5


def test_device_evaluation_applies_a_task_files_preprocessing():
    """`train.evaluate_params(..., preprocessing=spec)` scores what the public path (the host spec) predicts."""
    import jax

    from mu2hub import model as vit
    from mu2hub.train import child as train
    from mu2hub.data.registry import Split
    from mu2hub.format.system import Dims, Structure

    structure = Structure(Dims(16, 2, 32, 4), 8, 1, 5)
    params = vit.init_path(structure, jax.random.key(1))
    params["head"] = {k: np.random.default_rng(4).normal(0, 1, np.shape(v)).astype(np.float32)
                      for k, v in params["head"].items()}
    sprites = np.random.default_rng(5).integers(0, 2, (40, 24, 24, 3), dtype=np.uint8)
    spec = pp_spec(8, antialias=False, pixel_scale=255)
    labels = np.asarray(vit.apply_path(structure, params, apply_pp_spec_numpy(sprites, spec))).argmax(-1)
    split = Split(sprites, labels)
    assert train.evaluate_params(structure, params, split, 16, preprocessing=spec) == 1.0  # the host path's predictions
    assert train.evaluate_params(structure, params, split, 16) < 1.0  # mu2hub's defaults see other pixels
