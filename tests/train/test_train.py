"""Child training: schedules, frozen/trainable split, momentum inheritance, learning, snapshots, data parallel."""

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mu2hub import model as vit
from mu2hub.train import child as train
from mu2hub.data import get_task, preprocess_eval
from mu2hub.format.system import Dims, Structure

from locations import REPO

DIMS = Dims(32, 2, 64, 4)
HP = dict(opt_lr=0.1, opt_lr_schedule="cosine", opt_lr_warmup_ratio=0.05, opt_momentum=0.9, opt_nesterov=False,
          ds_area_range_min=1.0, ds_flip_left_right=False)


@pytest.fixture(scope="module")
def digits():
    return get_task("digits")


@pytest.fixture(scope="module")
def structure(digits):
    return Structure(DIMS, 16, 2, digits.num_classes)


@pytest.fixture(scope="module")
def init(structure):
    return vit.init_path(structure, jax.random.key(0))


@pytest.fixture(scope="module")
def learned(structure, init, digits):
    """A tiny ViT trained from random init on digits upsampled to 16×16: 3 validations × 100 steps of 64."""
    return train.train_child(structure, {}, init, digits, HP, num_validations=3, steps_per_validation=100,
                             batch_size=64, seed=0)


def _copy(tree):
    return {s: {k: np.array(v) for k, v in t.items()} for s, t in tree.items()}


# ---------------------------------------------------------------------------------------------------
# Schedules and optimizer
# ---------------------------------------------------------------------------------------------------


def test_cosine_schedule_warms_up_from_lr_over_100_and_decays_to_zero():
    s = train.make_schedule(dict(opt_lr=0.2, opt_lr_schedule="cosine", opt_lr_warmup_ratio=0.1), 1000)
    assert math.isclose(s(0), 0.002, rel_tol=1e-5)
    assert math.isclose(s(100), 0.2, rel_tol=1e-5)
    assert s(1000) == pytest.approx(0.0, abs=1e-7)
    values = [float(s(t)) for t in range(100, 1001, 50)]
    assert values == sorted(values, reverse=True)


def test_constant_restarts_and_mu3net_schedules():
    hp = dict(opt_lr=0.2, opt_lr_warmup_ratio=0.2)
    const = train.make_schedule({**hp, "opt_lr_schedule": "constant"}, 1000)
    assert math.isclose(const(0), 0.1) and math.isclose(const(999), 0.1)
    sgdr = train.make_schedule({**hp, "opt_lr_schedule": "restarts"}, 300, steps_per_validation=100)
    for start in (0, 100, 200):  # one warmup-cosine cycle per validation interval
        assert math.isclose(sgdr(start), 0.002, rel_tol=1e-4)
        assert math.isclose(sgdr(start + 20), 0.2, rel_tol=1e-4)
        assert sgdr(start + 99) < 0.01
    cos3 = train.make_schedule({**hp, "opt_lr_schedule": "cosine"}, 1000, variant="mu3net")
    assert math.isclose(cos3(0), 0.0002, rel_tol=1e-4)
    lin3 = train.make_schedule({**hp, "opt_lr_schedule": "linear"}, 1000, variant="mu3net")
    assert math.isclose(lin3(200), 0.2, rel_tol=1e-5) and math.isclose(lin3(1000), 0.0002, rel_tol=1e-4)
    with pytest.raises(ValueError, match="steps_per_validation"):
        train.make_schedule({**hp, "opt_lr_schedule": "restarts"}, 300)
    with pytest.raises(ValueError, match="mu3net"):
        train.make_schedule({**hp, "opt_lr_schedule": "linear"}, 300)
    with pytest.raises(ValueError, match="unknown opt_lr_schedule"):
        train.make_schedule({**hp, "opt_lr_schedule": "step"}, 300)


def test_optimizer_momentum_dtype_or_none(init):
    tx = train.make_optimizer(HP, 10)
    assert tx is train.make_optimizer(dict(HP), 10)  # cached: equal settings share one compiled step
    assert tx is train.make_optimizer(HP, 10, momentum="auto")
    # auto: float32 on this CPU (no bf16 arithmetic), the reference's bf16 where native or when asked for
    assert train.momentum_dtype() == "float32" and train.momentum_dtype("bfloat16") == "bfloat16"
    for choice, held in (("auto", jnp.float32), ("bfloat16", jnp.bfloat16), ("float32", jnp.float32)):
        state = train.make_optimizer(HP, 10, momentum=choice).init(init)
        assert train._trace_states(state)[0].trace["head"]["kernel"].dtype == held
        traces = train.momentum_traces(state)  # stored as the reference stores them, whatever the accumulator
        assert set(traces) == set(init) and traces["head"]["kernel"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="momentum_dtype 'fp8'"):
        train.make_optimizer(HP, 10, momentum="fp8")
    plain = train.make_optimizer({**HP, "opt_momentum": None}, 10)
    state = train.init_opt_state(plain, init, {"head": init["head"]})  # nothing to inherit into: ignored
    assert train.momentum_traces(state) == {}


# ---------------------------------------------------------------------------------------------------
# Frozen vs trainable, momentum inheritance
# ---------------------------------------------------------------------------------------------------


def test_only_trainable_components_change(structure, init, digits):
    frozen = {k: v for k, v in init.items() if k != "head"}
    trainable = {"head": init["head"]}
    before_frozen, before_head = _copy(frozen), _copy(trainable)
    r = train.train_child(structure, frozen, trainable, digits, HP, num_validations=1, steps_per_validation=5,
                          batch_size=32, seed=1)
    assert set(r.params) == {"head"} and set(r.traces) == {"head"}
    assert np.abs(r.params["head"]["kernel"]).max() > 0  # the zero-initialised head moved
    for slot, tensors in before_frozen.items():  # blocks, norm, embeddings: bit-identical
        for name, value in tensors.items():
            np.testing.assert_array_equal(np.asarray(frozen[slot][name]), value)
    np.testing.assert_array_equal(trainable["head"]["kernel"], before_head["head"]["kernel"])  # caller's copy
    with pytest.raises(ValueError, match="partition"):
        train.train_child(structure, frozen, init, digits, HP, num_validations=1, steps_per_validation=1,
                          batch_size=8, seed=0)


def test_inherited_momentum_changes_the_first_step(structure, init, digits):
    params = {**init, "head": {k: np.random.default_rng(0).normal(0, 0.1, v.shape).astype(np.float32)
                               for k, v in init["head"].items()}}
    frozen = {k: v for k, v in params.items() if k not in ("head", "norm")}
    trainable = {k: params[k] for k in ("head", "norm")}
    tx = train.make_optimizer(HP, 10)
    inherited = {"head": {k: np.full(v.shape, 0.5, np.float32) for k, v in trainable["head"].items()}}
    fresh = train.init_opt_state(tx, trainable)
    given = train.init_opt_state(tx, trainable, inherited)
    traces = train.momentum_traces(given)
    assert np.all(np.asarray(traces["head"]["kernel"], np.float32) == 0.5)
    assert np.all(np.asarray(traces["norm"]["scale"], np.float32) == 0.0)  # not inherited: fresh zeros
    images, labels = digits.train.images[:16], digits.train.labels[:16]
    step = lambda state: train.train_step(  # noqa: E731
        structure, frozen, jax.tree.map(jnp.array, trainable), state, images, labels, jax.random.key(0),
        train.data_hparams(HP), tx=tx)
    a, state_a, _ = step(fresh)
    b, _, _ = step(given)
    assert not np.allclose(a["head"]["kernel"], b["head"]["kernel"])
    np.testing.assert_array_equal(a["norm"]["scale"], b["norm"]["scale"])  # same grads, no inherited trace
    out = train.momentum_traces(state_a)
    assert {s: {k: v.shape for k, v in t.items()} for s, t in out.items()} == \
        {s: {k: np.shape(v) for k, v in t.items()} for s, t in trainable.items()}
    with pytest.raises(ValueError, match="not trainable"):
        train.init_opt_state(tx, trainable, {"block.0": init["block.0"]})
    with pytest.raises(ValueError, match="tensors"):
        train.init_opt_state(tx, trainable, {"head": {"kernel": np.zeros((3, 3))}})


# ---------------------------------------------------------------------------------------------------
# Learning, evaluation, best snapshot
# ---------------------------------------------------------------------------------------------------


def test_tiny_vit_learns_digits(learned):
    accuracies = [h["val_accuracy"] for h in learned.history]
    assert [h["step"] for h in learned.history] == [100, 200, 300]
    assert learned.quality == max(accuracies) > 0.5  # chance is 0.1
    assert learned.improved and learned.examples_seen == 300 * 64
    assert all(np.isfinite(h["loss"]) for h in learned.history)


def test_snapshot_is_the_best_validation_and_evaluate_counts_each_example_once(structure, learned, digits):
    # Identity score and >=: the snapshot is the last validation reaching the maximum accuracy.
    assert train.evaluate_params(structure, learned.params, digits.validation, 64) == pytest.approx(learned.quality)
    split = digits.validation
    assert len(split) % 7  # so the last batch is padded
    logits = vit.apply_path_jit(structure, learned.params, preprocess_eval(split.images, 16))
    expected = float(np.mean(np.asarray(logits).argmax(-1) == split.labels))
    assert train.evaluate_params(structure, learned.params, split, 7) == pytest.approx(expected, abs=1e-12)


def test_best_score_threshold_decides_improved(structure, init, digits):
    kw = dict(num_validations=2, steps_per_validation=3, batch_size=32, seed=0)
    seen = []
    never = train.train_child(structure, {}, init, digits, HP, best_score=2.0, progress=lambda *a: seen.append(a[:2]),
                              **kw)
    assert not never.improved and never.params is None and never.traces is None and len(never.history) == 2
    assert seen == [(i, 6) for i in range(1, 7)]
    always = train.train_child(structure, {}, init, digits, HP, score_fn=lambda q: q - 10.0, **kw)
    assert always.improved and always.score == pytest.approx(max(h["score"] for h in always.history))
    assert always.traces["head"]["kernel"].shape == init["head"]["kernel"].shape
    one = train.train_child(structure, {}, init, digits, HP, score_fn=lambda q: q - 10.0,
                            mesh=train.data_parallel_mesh(jax.devices()[:1]), **kw)
    for slot, tensors in always.params.items():  # an explicit 1-device mesh is the default code path
        for name, value in tensors.items():
            np.testing.assert_array_equal(one.params[slot][name], value)


# ---------------------------------------------------------------------------------------------------
# Data parallel over 4 simulated CPU devices
# ---------------------------------------------------------------------------------------------------

_DP_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from mu2hub import model as vit
    from mu2hub.train import child as train
    from mu2hub.data import get_task
    from mu2hub.format.system import Dims, Structure
    assert len(jax.devices()) == 4, jax.devices()
    task = get_task("digits")
    s = Structure(Dims(32, 2, 64, 4), 16, 2, task.num_classes)
    p = vit.init_path(s, jax.random.key(0))
    frozen = {"patch_embed": p["patch_embed"]}
    trainable = {k: v for k, v in p.items() if k != "patch_embed"}
    hp = dict(opt_lr=0.1, opt_lr_schedule="constant", opt_momentum=0.9, ds_area_range_min=0.5,
              ds_flip_left_right=True)
    kw = dict(num_validations=2, steps_per_validation=3, batch_size=16, seed=0)
    r = {n: train.train_child(s, frozen, trainable, task, hp, mesh=m, **kw)
         for n, m in {"none": None, "four": train.data_parallel_mesh()}.items()}
    flat = lambda t: np.concatenate([t[sl][k].ravel() for sl in sorted(t) for k in sorted(t[sl])])
    ref, init = flat(r["none"].params), flat(trainable)
    np.testing.assert_allclose(flat(r["four"].params), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flat(r["four"].traces), flat(r["none"].traces), rtol=1e-2, atol=1e-4)
    moved = np.linalg.norm(ref - init)
    assert np.linalg.norm(flat(r["four"].params) - ref) < 1e-3 * moved, "difference not small vs the update"
    assert [h["val_accuracy"] for h in r["four"].history] == [h["val_accuracy"] for h in r["none"].history]
    seen = set()  # with no mesh, the child runs on the current default device (one child per device)
    with jax.default_device(jax.devices()[2]):
        on2 = train.train_child(s, frozen, trainable, task, hp, **kw,
                                progress=lambda i, n, m: seen.update(m["loss"].devices()))
    assert seen == {jax.devices()[2]}, seen
    np.testing.assert_array_equal(flat(on2.params), ref)
    print("OK", moved)
""")


def test_data_parallel_matches_single_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _DP_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]
