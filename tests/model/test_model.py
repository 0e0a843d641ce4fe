"""The path forward: shapes, position-embedding resampling, adapters, bf16, shape checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import zoom

from mu2hub import model as vit
from mu2hub.format.system import Dims, Structure

DIMS = Dims(32, 2, 64, 4)


def _images(n, size, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)), jnp.float32)


def test_forward_shapes_and_purity():
    s = Structure(DIMS, 16, 2, 5)
    p = vit.init_path(s, jax.random.key(0))
    x = _images(3, 16)
    y1 = vit.apply_path_jit(s, p, x)
    y2 = vit.apply_path(s, p, x)
    assert y1.shape == (3, 5) and y1.dtype == jnp.float32
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-6)


def test_new_head_is_zero_so_new_task_starts_uniform():
    s = Structure(DIMS, 16, 2, 4)
    p = vit.init_path(s, jax.random.key(1))
    assert np.all(p["head"]["kernel"] == 0)
    y = vit.apply_path(s, p, _images(2, 16))
    np.testing.assert_allclose(y, 0.0)


def test_zero_initialised_adapter_leaves_function_unchanged():
    s = Structure(DIMS, 16, 2, 4)
    s_ad = Structure(DIMS, 16, 2, 4, adapter_layers=(1,), adapter_dim=8)
    p = vit.init_path(s, jax.random.key(2))
    p["head"] = {k: np.random.default_rng(0).standard_normal(v.shape).astype(np.float32) for k, v in p["head"].items()}
    p_ad = dict(p, **{"adapter.1": vit.init_component("adapter", DIMS, jax.random.key(3), adapter_dim=8)})
    x = _images(2, 16)
    np.testing.assert_allclose(vit.apply_path(s, p, x), vit.apply_path(s_ad, p_ad, x), rtol=1e-6, atol=1e-6)
    # and a trained adapter does change it
    p_ad["adapter.1"] = dict(p_ad["adapter.1"], **{"up.kernel": np.random.default_rng(2).standard_normal((8, 32)).astype(np.float32)})
    assert not np.allclose(vit.apply_path(s, p, x), vit.apply_path(s_ad, p_ad, x))


def test_pos_embed_resize_matches_scipy_zoom_order1_and_keeps_class_token():
    e = np.random.default_rng(0).standard_normal((1, 1 + 4 * 4, 6)).astype(np.float32)
    r = np.asarray(vit.resize_pos_embed(jnp.asarray(e), 7))
    ref = zoom(e[0, 1:].reshape(4, 4, 6), (7 / 4, 7 / 4, 1), order=1)
    np.testing.assert_allclose(r[0, 1:].reshape(7, 7, 6), ref, atol=1e-5)
    np.testing.assert_array_equal(r[0, 0], e[0, 0])


def test_path_runs_at_another_image_size_by_resampling_positions():
    s16 = Structure(DIMS, 16, 1, 3)
    s24 = Structure(DIMS, 24, 1, 3)
    p = vit.init_path(s16, jax.random.key(4))
    assert vit.check_shapes(s24, p) == []
    assert vit.apply_path(s24, p, _images(1, 24)).shape == (1, 3)


def test_bf16_compute_close_to_float32():
    s = Structure(DIMS, 16, 2, 5)
    p = vit.init_path(s, jax.random.key(5))
    p["head"] = {k: np.random.default_rng(1).standard_normal(v.shape).astype(np.float32) for k, v in p["head"].items()}
    x = _images(4, 16)
    f32 = np.asarray(vit.apply_path(s, p, x))
    bf = np.asarray(vit.apply_path(s, p, x, dtype=jnp.bfloat16))
    assert np.abs(bf - f32).max() / np.abs(f32).max() < 3e-2


def test_check_shapes_names_the_slot_and_tensor():
    s = Structure(DIMS, 16, 2, 5)
    p = vit.init_path(s, jax.random.key(6))
    p["block.1"] = dict(p["block.1"], **{"mlp.fc1.kernel": np.zeros((32, 65), np.float32)})
    del p["norm"]
    problems = vit.check_shapes(s, p)
    assert any(q.startswith("block.1") and "mlp.fc1.kernel (32, 65) (expected (32, 64))" in q for q in problems)
    assert "norm: missing" in problems


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown component kind"):
        vit.init_component("wat", DIMS, jax.random.key(0))
