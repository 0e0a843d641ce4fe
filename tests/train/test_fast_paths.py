"""Every fast path against the plain float32 path, on CPU: bf16 compute, padded (cuDNN-shaped) attention,
fused q/k/v, frozen-prefix caching, several children in one vmapped step. No timings are asserted here."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from mu2hub import model as vit
from mu2hub.train import child as train
from mu2hub.data import Split, get_task, preprocess_eval
from mu2hub.format.system import Dims, Structure
from mu2hub.inference.prefix import PrefixCache, augmentation_off, cacheable_depth, prefix_depth, prefix_slots

DIMS = Dims(32, 2, 64, 4)
HP = dict(opt_lr=0.1, opt_lr_schedule="cosine", opt_lr_warmup_ratio=0.1, opt_momentum=0.9, opt_nesterov=False,
          ds_crop=False, ds_flip_left_right=False)
KW = dict(num_validations=2, steps_per_validation=4, batch_size=32, seed=3)


def _rel(a, b) -> float:
    a, b = _flat(a), _flat(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _flat(x) -> np.ndarray:
    if isinstance(x, dict):
        return np.concatenate([_flat(x[k]) for k in sorted(x)])
    return np.asarray(x, np.float32).ravel()


@pytest.fixture(scope="module")
def task():
    d = get_task("digits")
    return dataclasses.replace(d, train=Split(d.train.images[:256], d.train.labels[:256]),
                               validation=Split(d.validation.images[:70], d.validation.labels[:70]))


@pytest.fixture(scope="module")
def structure(task):
    return Structure(DIMS, 16, 4, task.num_classes, adapter_layers=(1,), adapter_dim=8)


@pytest.fixture(scope="module")
def params(structure):
    p = vit.init_path(structure, jax.random.key(0))
    # A non-zero head and adapter so that every part of the forward matters.
    rng = np.random.default_rng(0)
    p["head"]["kernel"] = rng.normal(0, 0.2, p["head"]["kernel"].shape).astype(np.float32)
    p["adapter.1"]["up.kernel"] = rng.normal(0, 0.1, p["adapter.1"]["up.kernel"].shape).astype(np.float32)
    return p


@pytest.fixture(scope="module")
def images(task):
    return preprocess_eval(task.validation.images[:8], 16)


# ---------------------------------------------------------------------------------------------------
# Forward: bf16, padded attention, fused q/k/v
# ---------------------------------------------------------------------------------------------------


def test_bf16_compute_matches_float32(task):
    # bf16 operands cost ~0.5% relative error per block on these random paths (tests/train/test_fast_paths.py's
    # numbers are in docs/PERFORMANCE.md), so the 1e-2 bound is checked on a 2-block path, 128 wide.
    s = Structure(Dims(128, 4, 512, 4), 16, 2, task.num_classes)
    p = vit.init_path(s, jax.random.key(0))
    p["head"]["kernel"] = np.random.default_rng(0).normal(0, 0.2, p["head"]["kernel"].shape).astype(np.float32)
    x = preprocess_eval(task.validation.images[:64], 16)
    plain = vit.apply_path_jit(s, p, x, attention="xla", fuse_qkv=False)
    fast = vit.apply_path_jit(s, p, x, dtype=jnp.bfloat16, fuse_qkv=True)  # auto attention (XLA on a CPU)
    assert fast.dtype == jnp.float32
    assert _rel(fast, plain) < 1e-2
    assert np.mean(np.argmax(fast, -1) == np.argmax(plain, -1)) >= 0.95


def test_bf16_prefix_cached_training_matches_float32(structure, params, task):
    frozen, trainable = _split_top(params, structure, trainable_from=3)
    plain = train.train_child(structure, frozen, trainable, task, HP, **KW)
    fast = train.train_child(structure, frozen, trainable, task, HP, dtype=jnp.bfloat16, prefix_cache=PrefixCache(),
                             **KW)
    assert fast.cached_blocks == 3
    x = preprocess_eval(task.validation.images, 16)
    logits = lambda p: vit.apply_path_jit(structure, {**frozen, **p}, x)  # noqa: E731
    assert _rel(logits(fast.params), logits(plain.params)) < 1e-2


def test_momentum_accumulators_match(structure, params, task):
    """The CPU default (float32 trace) against the reference's bf16 trace: within bf16 rounding of each other;
    float32 asked for explicitly is the CPU default exactly."""
    frozen, trainable = _split_top(params, structure, trainable_from=2)
    f32 = train.train_child(structure, frozen, trainable, task, HP, **KW)
    bf16 = train.train_child(structure, frozen, trainable, task, HP, momentum="bfloat16", **KW)
    explicit = train.train_child(structure, frozen, trainable, task, HP, momentum="float32", **KW)
    assert _rel(explicit.params, f32.params) < 1e-5
    moved = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), f32.params, trainable)
    assert np.linalg.norm(_flat(moved)) > 0  # training moved the parameters: the comparison below is not vacuous
    assert _rel(bf16.params, f32.params) < 1e-2
    # traces are handed back for storage as the reference keeps them, bf16 values (widened to float32 on the host)
    for t in (t for r in (f32, bf16) for tensors in r.traces.values() for t in tensors.values()):
        np.testing.assert_array_equal(t, t.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_fused_qkv_matches_separate(structure, params, images):
    fused = vit.apply_path_jit(structure, params, images, fuse_qkv=True)
    separate = vit.apply_path_jit(structure, params, images, fuse_qkv=False)
    assert _rel(fused, separate) < 1e-5

    def grad(fuse):
        return jax.jit(jax.grad(lambda p: vit.apply_path(structure, p, images, fuse_qkv=fuse).sum()))(params)

    assert _rel(grad(True)["block.0"], grad(False)["block.0"]) < 1e-5


def test_padded_attention_matches_unpadded_forward_and_gradient():
    # The cuDNN path's padding (to a multiple of 64) and length masks, computed by XLA so it runs on a CPU.
    q, k, v = jax.random.normal(jax.random.key(1), (3, 2, 17, 2, 16))
    plain = vit.attend(q, k, v, implementation="xla")
    padded = vit.attend(q, k, v, implementation="xla", pad_multiple=64)
    assert padded.shape == plain.shape and _rel(padded, plain) < 1e-5
    loss = lambda pad: lambda q, k, v: (vit.attend(q, k, v, implementation="xla", pad_multiple=pad) ** 2).sum()  # noqa: E731
    grads = [jax.jit(jax.grad(loss(pad), (0, 1, 2)))(q, k, v) for pad in (64, None)]
    for g_pad, g_plain in zip(*grads):
        assert np.all(np.isfinite(g_pad)) and _rel(g_pad, g_plain) < 1e-5


def test_attention_choice(structure):
    assert vit.resolve_attention(None, jnp.bfloat16, 64) == "xla"  # no GPU here: never cuDNN on a CPU
    assert vit.resolve_attention(None, None, 64) == "xla"  # float32: cuDNN attention needs bf16/fp16
    assert vit.resolve_attention("cudnn", None, 64) == "cudnn"  # an explicit choice is kept
    with pytest.raises(ValueError, match="unknown attention"):
        vit.resolve_attention("flash", None, 64)


# ---------------------------------------------------------------------------------------------------
# Frozen-prefix caching
# ---------------------------------------------------------------------------------------------------


def _split_top(params, structure, trainable_from: int):
    top = [s for s in structure.slots() if s.split(".")[0] in ("norm", "head")
           or (s.split(".")[0] in ("block", "adapter") and int(s.split(".")[1]) >= trainable_from)]
    return {s: t for s, t in params.items() if s not in top}, {s: t for s, t in params.items() if s in top}


def test_prefix_rules(structure):
    slots = structure.slots()
    assert prefix_depth(structure, [s for s in slots if s not in ("block.3", "norm", "head")]) == 3
    assert prefix_depth(structure, [s for s in slots if s != "adapter.1"]) == 1  # a trainable adapter before block 1
    assert prefix_depth(structure, [s for s in slots if s != "cls"]) == 0
    assert prefix_slots(structure, 2) == ["patch_embed", "cls", "pos_embed", "block.0", "adapter.1", "block.1"]
    assert augmentation_off(HP) and augmentation_off({"ds_crop": True})  # area_range_min defaults to 1: no crop
    assert not augmentation_off({**HP, "ds_flip_left_right": True})
    assert not augmentation_off({"ds_crop": True, "ds_area_range_min": 0.5})
    top3 = [s for s in slots if s not in ("block.3", "norm", "head")]
    assert cacheable_depth(structure, top3, HP) == 3  # what train_child(prefix_cache=...) serves from the cache
    assert cacheable_depth(structure, top3, {**HP, "ds_flip_left_right": True}) == 0


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_prefix_cached_training_matches_plain(structure, params, task, tmp_path, where):
    frozen, trainable = _split_top(params, structure, trainable_from=3)
    plain = train.train_child(structure, frozen, trainable, task, HP, **KW)
    cache = (PrefixCache(max_bytes=1 << 30) if where == "memory" else
             PrefixCache(max_bytes=1000, directory=tmp_path / "prefix", device_max_bytes=0))  # disk, host gathers
    cached = train.train_child(structure, frozen, trainable, task, HP, prefix_cache=cache, **KW)
    assert plain.cached_blocks == 0 and cached.cached_blocks == 3
    assert _rel(cached.params, plain.params) < 1e-5 and _rel(plain.params, trainable) > 1e-3  # it did train
    assert _rel(cached.traces, plain.traces) < 1e-2  # bf16 momentum
    assert [h["val_accuracy"] for h in cached.history] == [h["val_accuracy"] for h in plain.history]
    x = preprocess_eval(task.validation.images, 16)
    logits = lambda p: vit.apply_path_jit(structure, {**frozen, **p}, x)  # noqa: E731
    assert _rel(logits(cached.params), logits(plain.params)) < 1e-5
    assert cache.misses == 2 and (cache.disk_bytes > 0) == (where == "disk")
    again = train.train_child(structure, frozen, trainable, task, HP, prefix_cache=cache, **KW)
    assert cache.hits == 2 and again.cached_blocks == 3
    assert _rel(again.params, cached.params) < 1e-6


def test_prefix_cache_bounds_and_bf16_files(tmp_path):
    cache = PrefixCache(max_bytes=250, directory=tmp_path, max_disk_bytes=900)
    a = np.arange(25, dtype=np.float32).reshape(5, 5)  # 100 bytes each
    for i in range(3):
        cache.put(f"k{i}", a + i)
    assert list(cache._memory) == ["k1", "k2"] and list(cache._disk) == ["k0"]  # LRU out of memory, onto disk
    np.testing.assert_array_equal(cache.get("k0"), a)
    b = np.linspace(-3, 3, 300, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(3, 100)  # 600 bytes: disk only
    cache.put("bf", b)
    back = cache.get("bf")
    assert isinstance(back, np.memmap) and back.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(back.astype(np.float32), b.astype(np.float32))
    assert cache.disk_bytes <= 900 and "k0" not in cache._disk  # the older file made room
    assert cache.get_or_compute("huge", 10_000, lambda: pytest.fail("computed an inadmissible entry")) is None
    reopened = PrefixCache(max_bytes=0, directory=tmp_path)  # a resumed run finds the files
    np.testing.assert_array_equal(reopened.get("bf").astype(np.float32), b.astype(np.float32))


# ---------------------------------------------------------------------------------------------------
# Several children in one vmapped step
# ---------------------------------------------------------------------------------------------------


def test_vmapped_children_match_separate_training(structure, params, task):
    frozen, trainable = _split_top(params, structure, trainable_from=2)
    rng = np.random.default_rng(1)
    trainables = [{s: {k: v + rng.normal(0, 0.01, v.shape).astype(np.float32) for k, v in t.items()}
                   for s, t in trainable.items()} for _ in range(3)]
    hps = [{**HP, "opt_lr": lr} for lr in (0.1, 0.03, 0.2)]
    traces = [None, {"head": {k: np.full(v.shape, 0.1, np.float32) for k, v in trainable["head"].items()}}, None]
    best = [-np.inf, 0.0, 2.0]  # the last never reaches its bar
    alone = [train.train_child(structure, frozen, t, task, h, inherited_traces=tr, best_score=b, **KW)
             for t, h, tr, b in zip(trainables, hps, traces, best)]
    together = train.train_children(structure, [frozen] * 3, trainables, task, hps, inherited_traces=traces,
                                    best_scores=best, **KW)
    for a, t in zip(alone, together):
        assert a.improved == t.improved and [h["val_accuracy"] for h in a.history] == [h["val_accuracy"] for h in t.history]
        np.testing.assert_allclose([h["loss"] for h in t.history], [h["loss"] for h in a.history], rtol=1e-5)
        if a.improved:
            assert _rel(t.params, a.params) < 1e-5 and _rel(t.traces, a.traces) < 1e-2
    assert together[2].params is None
    # Stacked (different) frozen components and the prefix cache together.
    other = {**frozen, "block.1": {k: v * 0.5 for k, v in frozen["block.1"].items()}}
    cache = PrefixCache()
    mixed = train.train_children(structure, [frozen, other], trainables[:2], task, hps[:2], prefix_cache=cache, **KW)
    ref = train.train_child(structure, other, trainables[1], task, hps[1], **KW)
    assert mixed[1].cached_blocks == 1 and _rel(mixed[1].params, ref.params) < 1e-5


def test_batch_key_groups_children(structure, params):
    frozen, trainable = _split_top(params, structure, trainable_from=2)
    key = lambda hp, t=trainable: train.batch_key(structure, frozen, t, hp)  # noqa: E731
    assert key(HP) == key({**HP, "opt_lr": 0.5})  # the learning rate is data
    assert key(HP) != key({**HP, "opt_momentum": 0.8})
    assert key(HP) != key(HP, {**trainable, "block.1": frozen["block.1"]})
    with pytest.raises(ValueError, match="batch_key"):
        train.train_children(structure, [frozen, frozen], [trainable, trainable], None,
                             [HP, {**HP, "opt_nesterov": True}], **KW)
