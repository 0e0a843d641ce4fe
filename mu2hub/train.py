"""Training one µ2Net child (munet_spec.md §3.4): SGD with a bf16 momentum trace, K validations, best snapshot.

A child is a path whose components are split into `frozen` (shared, read-only) and `trainable` (its own
clones), both `{slot: {tensor: array}}`. The jitted step differentiates w.r.t. `trainable` only and merges
`{**frozen, **trainable}` inside, so frozen components are never copied or touched. Preprocessing (the
train augmentations) runs inside the step on the device; the host only ships uint8 batches. The optimizer
state is fresh per child, but each trainable component's momentum trace can be inherited from the
component it was cloned from (`init_opt_state`), and is handed back for storage (`momentum_traces`).

Devices: the reference trains one child per device (§6): pass `mesh=data_parallel_mesh([device])`. A mesh of
several devices trains one child data-parallel (batch split on a "data" axis, params replicated). Without a
mesh, a 1-device mesh on the default device (`jax.default_device` is honoured) is used: one code path.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .data.pp import batches, eval_batches, preprocess_eval, preprocess_train
from .format import Structure
from .model import apply_path

Tree = Mapping[str, Mapping[str, Any]]
StaticHparams = tuple[tuple[str, Any], ...]

# ---------------------------------------------------------------------------------------------------
# Schedules and optimizer (exactly the reference's: clip 1.0, SGD + bf16 momentum, no weight decay)
# ---------------------------------------------------------------------------------------------------

SCHEDULES = ("constant", "cosine", "restarts", "linear")
_OPT_DEFAULTS = {"opt_lr_schedule": "cosine", "opt_lr_warmup_ratio": 0.0, "opt_momentum": 0.9, "opt_nesterov": False}


def make_schedule(hparams: Mapping[str, Any], total_steps: int, *, steps_per_validation: int | None = None,
                  variant: str = "mu2net") -> optax.Schedule:
    """The learning rate per step for `hparams["opt_lr_schedule"]`.

    `cosine`: warmup from lr/100 to lr over `opt_lr_warmup_ratio` × total steps, cosine to 0 at the end.
    `constant`: 0.5 × lr (the same average). `restarts`: SGDR, one warmup-cosine cycle per validation
    interval (needs `steps_per_validation`). `variant="mu3net"` starts warmups at lr/1000 instead and adds
    `linear` (linear warmup to lr, linear decay to lr/1000), as µ3Net's notebook does.
    """
    if variant not in ("mu2net", "mu3net"):
        raise ValueError(f"unknown variant {variant!r}; expected 'mu2net' or 'mu3net'")
    lr = float(hparams["opt_lr"])
    kind = hparams.get("opt_lr_schedule", "cosine")
    ratio = float(hparams.get("opt_lr_warmup_ratio", 0.0))
    low = lr / (100.0 if variant == "mu2net" else 1000.0)
    if kind == "constant":
        return optax.constant_schedule(0.5 * lr)
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(low, lr, int(ratio * total_steps), total_steps)
    if kind == "restarts":
        if not steps_per_validation:
            raise ValueError("the 'restarts' schedule needs steps_per_validation (one cycle per validation interval)")
        cycle = dict(init_value=low, peak_value=lr, warmup_steps=int(ratio * steps_per_validation),
                     decay_steps=steps_per_validation)
        return optax.sgdr_schedule([cycle] * max(1, math.ceil(total_steps / steps_per_validation)))
    if kind == "linear" and variant == "mu3net":
        warmup = int(ratio * total_steps)
        return optax.join_schedules([optax.linear_schedule(low, lr, warmup),
                                     optax.linear_schedule(lr, low, total_steps - warmup)], [warmup])
    if kind == "linear":
        raise ValueError("the 'linear' schedule is µ3Net's; pass variant='mu3net'")
    raise ValueError(f"unknown opt_lr_schedule {kind!r}; expected one of {SCHEDULES}")


def make_optimizer(hparams: Mapping[str, Any], total_steps: int, *, steps_per_validation: int | None = None,
                   variant: str = "mu2net") -> optax.GradientTransformation:
    """clip_by_global_norm(1.0) → SGD(schedule, momentum, nesterov) with a bfloat16 momentum accumulator.

    `opt_momentum=None` (in µ2Net's v1 range) means plain SGD: no trace, nothing to inherit or store.
    Cached on the optimizer hparams, so children with equal settings share one object and hence one
    compiled train step (the optimizer is a static argument of `train_step`).
    """
    opt = {k: hparams.get(k, _OPT_DEFAULTS.get(k)) for k in ("opt_lr", *_OPT_DEFAULTS)}
    return _make_optimizer(tuple(sorted(opt.items())), int(total_steps), steps_per_validation, variant)


@functools.lru_cache(maxsize=64)
def _make_optimizer(opt: StaticHparams, total_steps: int, steps_per_validation: int | None,
                    variant: str) -> optax.GradientTransformation:
    hp = dict(opt)
    schedule = make_schedule(hp, total_steps, steps_per_validation=steps_per_validation, variant=variant)
    momentum = None if hp["opt_momentum"] is None else float(hp["opt_momentum"])
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.sgd(schedule, momentum=momentum, nesterov=bool(hp["opt_nesterov"]), accumulator_dtype=jnp.bfloat16),
    )


# ---------------------------------------------------------------------------------------------------
# Momentum traces: fresh state per child, inherited traces written in, read back out for storage
# ---------------------------------------------------------------------------------------------------


def _is_trace(x: Any) -> bool:
    return isinstance(x, optax.TraceState)


def _trace_states(opt_state: Any) -> list[optax.TraceState]:
    found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_trace) if _is_trace(s)]
    if len(found) > 1:
        raise ValueError(f"optimizer state holds {len(found)} momentum traces; expected at most one")
    return found


def init_opt_state(tx: optax.GradientTransformation, trainable: Tree,
                   inherited_traces: Tree | None = None) -> optax.OptState:
    """`tx.init(trainable)`, with each trainable slot's momentum trace replaced by its inherited one.

    Inherited traces must name trainable slots and match their tensor names and shapes (they are cast to
    the accumulator dtype). Without momentum there is no trace and `inherited_traces` is ignored.

    Raises:
        ValueError: a trace for a slot that is not trainable, or whose tensors do not match.
    """
    state = tx.init(trainable)
    if not inherited_traces or not _trace_states(state):
        return state
    extra = sorted(set(inherited_traces) - set(trainable))
    if extra:
        raise ValueError(f"inherited traces for slots that are not trainable in this child: {extra}")

    def overwrite(ts: optax.TraceState) -> optax.TraceState:
        trace = dict(ts.trace)
        for slot, tensors in inherited_traces.items():
            want = {k: tuple(np.shape(v)) for k, v in trace[slot].items()}
            have = {k: tuple(np.shape(v)) for k, v in tensors.items()}
            if want != have:
                raise ValueError(f"inherited trace of {slot!r} has tensors {have}, the component has {want}")
            trace[slot] = {k: jax.device_put(jnp.asarray(v, trace[slot][k].dtype), trace[slot][k].sharding)
                           for k, v in tensors.items()}
        return ts._replace(trace=trace)

    return jax.tree_util.tree_map(lambda s: overwrite(s) if _is_trace(s) else s, state, is_leaf=_is_trace)


def momentum_traces(opt_state: optax.OptState) -> dict[str, dict[str, jax.Array]]:
    """The momentum trace per trainable slot (bf16, on device); `{}` when the optimizer has no momentum."""
    found = _trace_states(opt_state)
    return {slot: dict(t) for slot, t in found[0].trace.items()} if found else {}


# ---------------------------------------------------------------------------------------------------
# The jitted core
# ---------------------------------------------------------------------------------------------------


def data_hparams(hparams: Mapping[str, Any]) -> StaticHparams:
    """The `ds_*` hparams as a hashable tuple: a static argument of `train_step` (read at trace time)."""
    return tuple(sorted((k, v) for k, v in hparams.items() if k.startswith("ds_")))


@functools.partial(jax.jit, static_argnames=("structure", "hparams_static", "tx", "dtype"),
                   donate_argnames=("trainable", "opt_state"))
def train_step(structure: Structure, frozen: Tree, trainable: Tree, opt_state: optax.OptState,
               images_uint8: jax.Array, labels: jax.Array, key: jax.Array, hparams_static: StaticHparams, *,
               tx: optax.GradientTransformation, dtype: Any = None) -> tuple[Tree, optax.OptState, dict]:
    """One SGD step on uint8 images: augment on device, softmax cross-entropy, update `trainable` only.

    `trainable` and `opt_state` are donated (updated in place on the device); `frozen` is read-only.
    Returns (trainable, opt_state, {"loss", "grad_norm"}), the norm taken before clipping.
    """
    images = preprocess_train(images_uint8, structure.image_size, dict(hparams_static), key)

    def loss_fn(params: Tree) -> jax.Array:
        logits = apply_path(structure, {**frozen, **params}, images, dtype=dtype)
        onehot = jax.nn.one_hot(labels, logits.shape[-1])
        return optax.softmax_cross_entropy(logits, onehot).mean()

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return trainable, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


@functools.partial(jax.jit, static_argnames=("structure", "dtype"))
def _correct(structure: Structure, frozen: Tree, trainable: Tree, images_uint8: jax.Array, labels: jax.Array,
             mask: jax.Array, dtype: Any = None) -> jax.Array:
    logits = apply_path(structure, {**frozen, **trainable}, preprocess_eval(images_uint8, structure.image_size),
                        dtype=dtype)
    return jnp.sum((logits.argmax(-1) == labels) & mask)


def _evaluate(structure: Structure, frozen: Tree, trainable: Tree, split: Any, batch_size: int, *,
              dtype: Any, mesh: Mesh) -> float:
    """Accuracy over every example once; counts are summed on device and fetched once at the end."""
    counts = [_correct(structure, frozen, trainable, *_put_batch(batch, mesh), dtype=dtype)
              for batch in eval_batches(split, batch_size)]
    return int(sum(jax.device_get(counts))) / len(split)


def evaluate(structure: Structure, params: Tree, split: Any, batch_size: int, *, dtype: Any = None,
             mesh: Mesh | None = None) -> float:
    """Validation/test accuracy of a path on `split` (every example exactly once; the last batch is masked)."""
    mesh = _default_mesh() if mesh is None else mesh
    return _evaluate(structure, _put_params(params, mesh), {}, split, batch_size, dtype=dtype, mesh=mesh)


# ---------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: all local devices)."""
    return Mesh(np.asarray(list(devices or jax.local_devices())), ("data",))


def _default_mesh() -> Mesh:
    """The current default device alone; honours `with jax.default_device(d)` (one child per device)."""
    device = jax.config.jax_default_device
    if device is None or isinstance(device, str):
        device = jax.devices(device)[0]
    return data_parallel_mesh([device])


def _put_params(tree: Any, mesh: Mesh, *, copy: bool = False) -> Any:
    """Replicated over the mesh; `copy` forces fresh buffers (they will be donated, the caller's must not be)."""
    return jax.device_put(tree, NamedSharding(mesh, P()), may_alias=False if copy else None)


def _put_batch(arrays: tuple[np.ndarray, ...], mesh: Mesh) -> tuple[jax.Array, ...]:
    if len(arrays[0]) % mesh.size:
        raise ValueError(f"batch size {len(arrays[0])} is not divisible by the {mesh.size} devices of the mesh")
    return tuple(jax.device_put(a, NamedSharding(mesh, P("data"))) for a in arrays)


# ---------------------------------------------------------------------------------------------------
# Training a child
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ChildResult:
    """What a child's training produced. `params`/`traces`: the best snapshot (host float32), or None."""

    improved: bool
    quality: float  # max validation accuracy over the K validations
    score: float  # score_fn of the best snapshot (or the best seen, when not improved)
    params: dict[str, dict[str, np.ndarray]] | None
    traces: dict[str, dict[str, np.ndarray]] | None
    history: list[dict[str, float]]
    train_time: float  # seconds of training and validation after the first step
    compile_time: float  # seconds to the end of the first step and first validation (compilation, if new)
    examples_seen: int


def _to_host(tree: Tree) -> dict[str, dict[str, np.ndarray]]:
    """float32 numpy copies (bf16 traces widen losslessly; format.py stores F32, not BF16).

    Copies, because a zero-copy view of a buffer that the next step donates would change under us.
    """
    return {s: {k: np.array(v, np.float32) for k, v in t.items()} for s, t in jax.device_get(dict(tree)).items()}


def train_child(structure: Structure, frozen: Tree, trainable: Tree, data: Any, hparams: Mapping[str, Any], *,
                num_validations: int, steps_per_validation: int, batch_size: int, seed: int,
                dtype: Any = None, inherited_traces: Tree | None = None, best_score: float = -math.inf,
                score_fn: Callable[[float], float] = lambda quality: quality,
                progress: Callable[[int, int, dict], None] | None = None, mesh: Mesh | None = None,
                variant: str = "mu2net") -> ChildResult:
    """Train a child for `num_validations` × `steps_per_validation` steps and keep its best validation snapshot.

    Args:
        structure (`Structure`): the child's static shape.
        frozen, trainable (`{slot: {tensor: array}}`): a partition of `structure.slots()`; only `trainable`
            is updated. The caller's arrays are never modified (training works on device copies).
        data (`TaskData`): `train` and `validation` splits of uint8 images.
        hparams (`Mapping`): the child's `opt_*` and `ds_*` hparams.
        seed (`int`): data order and augmentation; children of one generation share it (common random numbers).
        inherited_traces (*optional*): momentum traces per trainable slot, from the cloned components.
        best_score (`float`, defaults to -inf): a snapshot is taken when `score_fn(accuracy) >= best_score`
            (the caller passes the parent's score for a same-task parent), which then rises to that score.
        progress (*optional*): `progress(step, total, metrics)` after each step; metrics stay on device
            (reading them forces a host sync).
        mesh (*optional*): the devices, batch split over the "data" axis (see `data_parallel_mesh`); defaults
            to the current default device alone (so `with jax.default_device(d):` places the child on d).
        variant (`str`): "mu2net" or "mu3net" learning-rate schedules.

    Raises:
        ValueError: `frozen` and `trainable` do not partition the structure's slots, or bad hparams.
    """
    slots, overlap = set(structure.slots()), sorted(set(frozen) & set(trainable))
    missing, extra = sorted(slots - set(frozen) - set(trainable)), sorted((set(frozen) | set(trainable)) - slots)
    if overlap or missing or extra:
        raise ValueError(f"frozen/trainable must partition the path's slots: both {overlap}, in neither "
                         f"{missing}, not in the path {extra}")
    total = num_validations * steps_per_validation
    tx = make_optimizer(hparams, total, steps_per_validation=steps_per_validation, variant=variant)
    static = data_hparams(hparams)
    mesh = _default_mesh() if mesh is None else mesh
    frozen_d = _put_params({s: dict(t) for s, t in frozen.items()}, mesh)
    params = _put_params({s: dict(t) for s, t in trainable.items()}, mesh, copy=True)
    opt_state = _put_params(init_opt_state(tx, params, inherited_traces), mesh)
    stream: Iterator = batches(data.train, batch_size, seed=seed)
    base_key = jax.random.key(seed)

    start = time.perf_counter()
    compile_time = 0.0
    history: list[dict[str, float]] = []
    best: tuple[dict, dict] | None = None
    best_seen = -math.inf
    for step in range(total):
        images, labels = _put_batch(next(stream), mesh)
        params, opt_state, metrics = train_step(structure, frozen_d, params, opt_state, images, labels,
                                                jax.random.fold_in(base_key, step), static, tx=tx, dtype=dtype)
        if step == 0:
            jax.block_until_ready(params)
            compile_time += time.perf_counter() - start
        if progress is not None:
            progress(step + 1, total, metrics)
        if (step + 1) % steps_per_validation:
            continue
        first_eval = step + 1 == steps_per_validation
        if first_eval:  # time the first validation alone (mostly its compilation), not the queued steps
            jax.block_until_ready(params)
            t0 = time.perf_counter()
        accuracy = _evaluate(structure, frozen_d, params, data.validation, batch_size, dtype=dtype, mesh=mesh)
        if first_eval:
            compile_time += time.perf_counter() - t0
        score = float(score_fn(accuracy))
        best_seen = max(best_seen, score)
        history.append({"step": step + 1, "val_accuracy": accuracy, "score": score, "loss": float(metrics["loss"])})
        if score >= best_score:
            best, best_score = (_to_host(params), _to_host(momentum_traces(opt_state))), score
    elapsed = time.perf_counter() - start
    return ChildResult(
        improved=best is not None,
        quality=max((h["val_accuracy"] for h in history), default=float("nan")),
        score=best_score if best is not None else best_seen,
        params=best[0] if best else None,
        traces=best[1] if best else None,
        history=history,
        train_time=elapsed - compile_time,
        compile_time=compile_time,
        examples_seen=total * batch_size,
    )
