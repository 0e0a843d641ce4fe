"""Training one µ2Net child (munet_spec.md §3.4): SGD with a bf16 momentum trace, K validations, best snapshot.

A child is a path whose components are split into `frozen` (shared, read-only) and `trainable` (its own
clones), both `{slot: {tensor: array}}`. The jitted step differentiates w.r.t. `trainable` only and merges
`{**frozen, **trainable}` inside, so frozen components are never copied or touched. Preprocessing (the
train augmentations) runs inside the step on the device; the host only ships uint8 batches. The optimizer
state is fresh per child, but each trainable component's momentum trace can be inherited from the
component it was cloned from (`init_opt_state`), and is handed back for storage (`momentum_traces`).

Devices: the reference trains one child per device (§6): pass `mesh=data_parallel_mesh([device])`. A mesh of
several devices trains one child data-parallel (batch split on a "data" axis, params replicated). Without a
mesh, a 1-device mesh on the default device (`jax.default_device` is honoured; else the first device of this
process) is used: one code path. A mesh may span processes (multi-host): each process then feeds and reads
only its rows of every batch (`data.shard.Shard`), in the order one process would draw.

Data: a split is in memory (`Split`) or streamed from its files (`data.stream.StreamedSplit`, decoded in background
threads a few batches ahead); both are read in one order (`pp.index_batches` from the seed), so a child trains on
the same batches either way.

Speed (docs/PERFORMANCE.md): the learning rate is data, so children differing only in it share one compiled
step; a small train split is uploaded once and batches are gathered on the device; `prefix_cache=` serves a
child's frozen lowest blocks from activations computed once per dataset (mu2hub/inference/prefix.py); and
`train_children` trains several children of the same shape in one vmapped step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Hashable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..data.pp import Augment, eval_batches, preprocess_eval, preprocess_train, spec_options
from ..data.registry import Split
from ..data.shard import Shard
from ..data.stream import AnySplit, Stream, StreamedSplit, eval_stream, materialise
from ..format.system import Structure
from ..model import classify, embed, encode, resolve_attention
from ..inference.prefix import PrefixCache, cache_key, cacheable_depth, prefix_slots, split_fingerprint, tensors_fingerprint

Tree = Mapping[str, Mapping[str, Any]]
StaticHparams = tuple[tuple[str, Any], ...]
Pixels = tuple[bool, float]  # (antialias, pixel_scale) of the resize: a task's stored preprocessing
DEFAULT_PIXELS: Pixels = (True, 1.0)


def pixels_of(preprocessing: Mapping[str, Any] | None) -> Pixels:
    """(antialias, pixel_scale) of a task's stored preprocessing spec (`pp.spec_options`); defaults without one.

    Fine-tuning a republished reference task trains and evaluates as the task file says it is served (the
    reference's non-antialiased `tf.image.resize`, dSprites' 0/1 pixels × 255), not with mu2hub's defaults.
    """
    if not preprocessing:
        return DEFAULT_PIXELS
    _, antialias, scale = spec_options(preprocessing)
    return bool(antialias), float(scale)

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


MOMENTUM_DTYPES = ("auto", "bfloat16", "float32")


def momentum_dtype(choice: str | None = None) -> str:
    """The momentum accumulator's dtype name for `choice` ("auto" / None, "bfloat16", "float32").

    "auto" is the reference's bfloat16 where the default backend computes in bf16 natively (GPU, TPU) and
    float32 on a CPU, which has no bf16 arithmetic: there every step's bf16 conversions of the whole trace cost
    more than the halved memory saves (BENCHMARKS.md, `bench/gpu.py`: 1.14-1.5x faster ViT-B/16 child training).

    Raises:
        ValueError: another choice.
    """
    choice = "auto" if choice is None else choice
    if choice not in MOMENTUM_DTYPES:
        raise ValueError(f"momentum_dtype {choice!r}; expected one of {MOMENTUM_DTYPES}")
    if choice == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return choice


def make_optimizer(hparams: Mapping[str, Any], total_steps: int, *, steps_per_validation: int | None = None,
                   variant: str = "mu2net", momentum: str | None = None) -> optax.GradientTransformation:
    """clip_by_global_norm(1.0) → SGD(schedule, momentum, nesterov) with a bfloat16 momentum accumulator (float32
    on a CPU unless `momentum="bfloat16"`: `momentum_dtype`).

    `opt_momentum=None` (in µ2Net's v1 range) means plain SGD: no trace, nothing to inherit or store.
    Cached on the optimizer hparams, so children with equal settings share one object and hence one
    compiled train step (the optimizer is a static argument of `train_step`).
    """
    opt = {k: hparams.get(k, _OPT_DEFAULTS.get(k)) for k in ("opt_lr", *_OPT_DEFAULTS)}
    return _make_optimizer(tuple(sorted(opt.items())), int(total_steps), steps_per_validation, variant,
                           momentum_dtype(momentum))


@functools.lru_cache(maxsize=64)
def _make_optimizer(opt: StaticHparams, total_steps: int, steps_per_validation: int | None,
                    variant: str, accumulator: str) -> optax.GradientTransformation:
    hp = dict(opt)
    schedule = make_schedule(hp, total_steps, steps_per_validation=steps_per_validation, variant=variant)
    momentum = None if hp["opt_momentum"] is None else float(hp["opt_momentum"])
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.sgd(schedule, momentum=momentum, nesterov=bool(hp["opt_nesterov"]),
                  accumulator_dtype=jnp.dtype(accumulator)),
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
            trace[slot] = {k: jax.device_put(np.asarray(v).astype(trace[slot][k].dtype), trace[slot][k].sharding)
                           for k, v in tensors.items()}
        return ts._replace(trace=trace)

    return jax.tree_util.tree_map(lambda s: overwrite(s) if _is_trace(s) else s, state, is_leaf=_is_trace)


def momentum_traces(opt_state: optax.OptState) -> dict[str, dict[str, jax.Array]]:
    """The momentum trace per trainable slot, in bf16 whatever the accumulator (stored traces are the
    reference's bf16 on every backend), on device; `{}` when the optimizer has no momentum."""
    found = _trace_states(opt_state)
    return {slot: {k: v.astype(jnp.bfloat16) for k, v in t.items()} for slot, t in found[0].trace.items()} \
        if found else {}


# ---------------------------------------------------------------------------------------------------
# The jitted core
# ---------------------------------------------------------------------------------------------------


def data_hparams(hparams: Mapping[str, Any]) -> Augment:
    """The augmentation the `ds_*` hparams ask for, a static argument of `train_step`: normalised, so children
    whose hparams differ only in settings that change nothing (a crop area with cropping off) share a step."""
    return Augment.from_hparams(hparams)


def _logits(structure: Structure, params: Tree, x: jax.Array, *, start: int | None, dtype: Any,
            attention: str | None) -> jax.Array:
    """Logits from preprocessed images (`start=None`) or from the activations entering block `start`."""
    if start is None:
        x, start = embed(structure, params, x, dtype=dtype), 0
    x = encode(structure, params, x, start=start, dtype=dtype, attention=attention)
    return classify(structure, params, x, dtype=dtype)


def _update(structure: Structure, frozen: Tree, trainable: Tree, opt_state: optax.OptState, x: jax.Array,
            labels: jax.Array, lr: jax.Array | None, *, tx: optax.GradientTransformation, dtype: Any,
            attention: str | None, start: int | None) -> tuple[Tree, optax.OptState, dict]:
    def loss_fn(params: Tree) -> jax.Array:
        logits = _logits(structure, {**frozen, **params}, x, start=start, dtype=dtype, attention=attention)
        return optax.softmax_cross_entropy(logits, jax.nn.one_hot(labels, logits.shape[-1])).mean()

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    if lr is not None:  # the lr as data: `tx` was built for lr 1, and every schedule is linear in the lr
        updates = jax.tree.map(lambda u: u * lr, updates)
    trainable = optax.apply_updates(trainable, updates)
    return trainable, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def _train_inputs(inputs: jax.Array, image_size: int, augment: Augment, key: jax.Array, start: int | None,
                  pixels: Pixels) -> jax.Array:
    if start is not None:
        return inputs
    return preprocess_train(inputs, image_size, augment, key, antialias=pixels[0], pixel_scale=pixels[1])


_STEP_STATIC = ("structure", "hparams_static", "tx", "dtype", "attention", "start", "pixels")


@functools.partial(jax.jit, static_argnames=_STEP_STATIC, donate_argnames=("trainable", "opt_state"))
def train_step(structure: Structure, frozen: Tree, trainable: Tree, opt_state: optax.OptState, inputs: jax.Array,
               labels: jax.Array, key: jax.Array, hparams_static: Augment, *, tx: optax.GradientTransformation,
               dtype: Any = None, attention: str | None = None, start: int | None = None,
               lr: jax.Array | None = None, pixels: Pixels = DEFAULT_PIXELS) -> tuple[Tree, optax.OptState, dict]:
    """One SGD step: softmax cross-entropy, update `trainable` only.

    `inputs` are uint8 images, augmented on device (`start=None`), or, with `start=k`, the cached activations
    entering block k (frozen-prefix caching; then `frozen` needs only the slots from block k on).
    `lr`, when given, multiplies the updates of a `tx` built for lr 1 (`train_child` does so: one compiled
    step serves every learning rate). `trainable` and `opt_state` are donated (updated in place on the
    device); `frozen` is read-only. Returns (trainable, opt_state, {"loss", "grad_norm"}), the norm taken
    before clipping. `pixels`: (antialias, pixel_scale) of the resize (`pixels_of` a task's stored preprocessing).
    """
    x = _train_inputs(inputs, structure.image_size, hparams_static, key, start, pixels)
    return _update(structure, frozen, trainable, opt_state, x, labels, lr, tx=tx, dtype=dtype,
                   attention=attention, start=start)


@functools.partial(jax.jit, static_argnames=_STEP_STATIC, donate_argnames=("trainable", "opt_state"))
def train_step_many(structure: Structure, frozen: Tree, frozen_each: Tree, trainable: Tree,
                    opt_state: optax.OptState, lr: jax.Array, inputs: jax.Array, labels: jax.Array, key: jax.Array,
                    hparams_static: Augment, *, tx: optax.GradientTransformation, dtype: Any = None,
                    attention: str | None = None, start: int | None = None,
                    pixels: Pixels = DEFAULT_PIXELS) -> tuple[Tree, optax.OptState, dict]:
    """`train_step` for C children at once, vmapped over a leading axis C of `frozen_each`, `trainable`,
    `opt_state` and `lr` (per-child learning rates; `tx` built for lr 1). `frozen` (shared by all) and the
    batch are not batched, so the shared frozen computation and the augmentation run once for all.
    """
    x = _train_inputs(inputs, structure.image_size, hparams_static, key, start, pixels)

    def one(fe: Tree, tr: Tree, st: optax.OptState, lr_: jax.Array):
        return _update(structure, {**frozen, **fe}, tr, st, x, labels, lr_, tx=tx, dtype=dtype, attention=attention,
                       start=start)

    return jax.vmap(one)(frozen_each, trainable, opt_state, lr)


def _eval_inputs(inputs: jax.Array, image_size: int, start: int | None, pixels: Pixels) -> jax.Array:
    if start is not None:
        return inputs
    return preprocess_eval(inputs, image_size, antialias=pixels[0], pixel_scale=pixels[1])


_EVAL_STATIC = ("structure", "dtype", "attention", "start", "pixels")


# Frozen and trainable slots arrive as one tree: which slots a child trains does not change its evaluation, so
# children with different partitions share one compiled evaluation.
@functools.partial(jax.jit, static_argnames=_EVAL_STATIC)
def _correct(structure: Structure, params: Tree, inputs: jax.Array, labels: jax.Array, mask: jax.Array,
             dtype: Any = None, attention: str | None = None, start: int | None = None,
             pixels: Pixels = DEFAULT_PIXELS) -> jax.Array:
    logits = _logits(structure, params, _eval_inputs(inputs, structure.image_size, start, pixels), start=start,
                     dtype=dtype, attention=attention)
    return jnp.sum((logits.argmax(-1) == labels) & mask)


@functools.partial(jax.jit, static_argnames=_EVAL_STATIC)
def _correct_many(structure: Structure, shared: Tree, each: Tree, inputs: jax.Array, labels: jax.Array,
                  mask: jax.Array, dtype: Any = None, attention: str | None = None,
                  start: int | None = None, pixels: Pixels = DEFAULT_PIXELS) -> jax.Array:
    x = _eval_inputs(inputs, structure.image_size, start, pixels)

    def one(own: Tree) -> jax.Array:
        logits = _logits(structure, {**shared, **own}, x, start=start, dtype=dtype, attention=attention)
        return jnp.sum((logits.argmax(-1) == labels) & mask)

    return jax.vmap(one)(each)


def _evaluate(structure: Structure, frozen: Tree, trainable: Tree, split: Any, batch_size: int, *, dtype: Any,
              mesh: Mesh, attention: str | None = None, start: int | None = None,
              frozen_each: Tree | None = None, pixels: Pixels = DEFAULT_PIXELS) -> Any:
    """Accuracy over every example once (an array over children with `frozen_each`); one fetch at the end."""
    kw = dict(dtype=dtype, attention=attention, start=start, pixels=pixels)
    counts = [_correct(structure, {**frozen, **trainable}, *_put_batch(batch, mesh), **kw) if frozen_each is None else
              _correct_many(structure, frozen, {**frozen_each, **trainable}, *_put_batch(batch, mesh), **kw)
              for batch in eval_stream(split, batch_size, shard=process_shard(mesh))]
    total = np.sum(np.asarray(jax.device_get(counts)), axis=0)
    return int(total) / len(split) if frozen_each is None else total / len(split)


def evaluate_params(structure: Structure, params: Tree, split: Any, batch_size: int, *, dtype: Any = None,
                    mesh: Mesh | None = None, attention: str | None = None,
                    preprocessing: Mapping[str, Any] | None = None) -> float:
    """Validation/test accuracy of a path on `split` (every example exactly once; the last batch is masked).

    `split` is in memory (`Split`) or streamed (`StreamedSplit`: read batch by batch, decoded in background threads).
    `preprocessing`: a task's stored spec, whose resize options apply (`pixels_of`); mu2hub's defaults without one.
    """
    mesh = _default_mesh() if mesh is None else mesh
    return _evaluate(structure, _put_params(params, mesh), {}, split, batch_size, dtype=dtype, mesh=mesh,
                     attention=attention, pixels=pixels_of(preprocessing))


@functools.partial(jax.jit, static_argnames=("structure", "stop", "dtype", "attention"))
def _prefix_batch(structure: Structure, frozen: Tree, images_uint8: jax.Array, *, stop: int, dtype: Any = None,
                  attention: str | None = None) -> jax.Array:
    x = embed(structure, frozen, preprocess_eval(images_uint8, structure.image_size), dtype=dtype)
    return encode(structure, frozen, x, stop=stop, dtype=dtype, attention=attention)


def prefix_activations(structure: Structure, frozen: Tree, split: Any, stop: int, *, batch_size: int,
                       dtype: Any = None, attention: str | None = None, mesh: Mesh | None = None) -> np.ndarray:
    """The activations entering block `stop` of every example of `split`, in order: (N, tokens, hidden) on
    the host, in the compute dtype. Eval preprocessing (= train preprocessing with augmentation off)."""
    mesh = _default_mesh() if mesh is None else mesh
    frozen_d = _put_params({s: dict(frozen[s]) for s in prefix_slots(structure, stop)}, mesh)
    out = np.empty((len(split), structure.seq_len, structure.dims.hidden_size), np.dtype(dtype or np.float32))
    pending: list[tuple[int, jax.Array]] = []
    for i, (images, _, _) in enumerate(eval_batches(split, batch_size)):
        pending.append((i * batch_size, _prefix_batch(structure, frozen_d, *_put_batch((images,), mesh), stop=stop,
                                                      dtype=dtype, attention=attention)))
        while len(pending) > (2 if i + 1 < math.ceil(len(split) / batch_size) else 0):  # keep 2 in flight
            at, acts = pending.pop(0)
            out[at:at + batch_size] = np.asarray(acts)[:len(split) - at]
    return out


# ---------------------------------------------------------------------------------------------------
# Devices and inputs
# ---------------------------------------------------------------------------------------------------


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: this process's devices).

    For one child over every device of a multi-host job pass `jax.devices()`: they are ordered by process, so
    each process's devices hold one contiguous block of every batch (the rows it feeds, `process_shard`).
    """
    devices = sorted(devices or jax.local_devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), ("data",))


def process_shard(mesh: Mesh) -> Shard:
    """The rows of each batch this process feeds on `mesh`: all of them unless the mesh spans processes."""
    owners = [d.process_index for d in mesh.devices.flat]
    procs = list(dict.fromkeys(owners))
    if len(procs) == 1:
        return Shard()
    per = len(owners) // len(procs)
    if owners != [p for p in procs for _ in range(per)]:
        raise ValueError(f"a mesh spanning processes must hold each process's devices contiguously and equally many; "
                         f"got process indices {owners} (build it with data_parallel_mesh)")
    return Shard(procs.index(jax.process_index()), len(procs))


def _default_mesh() -> Mesh:
    """The current default device alone; honours `with jax.default_device(d)` (one child per device).

    Without one, the first device of *this* process: in a multi-host job `jax.devices()[0]` belongs to process 0.
    """
    device = jax.config.jax_default_device
    if device is None or isinstance(device, str):
        device = jax.local_devices(backend=device)[0]
    return data_parallel_mesh([device])


def _put_params(tree: Any, mesh: Mesh, *, copy: bool = False) -> Any:
    """Replicated over the mesh; `copy` forces fresh buffers (they will be donated, the caller's must not be)."""
    return jax.device_put(tree, NamedSharding(mesh, P()), may_alias=False if copy else None)


def _put_batch(arrays: tuple[np.ndarray, ...], mesh: Mesh) -> tuple[jax.Array, ...]:
    """This process's rows of one batch, split over the mesh's "data" axis (a global array across processes)."""
    shard = process_shard(mesh)
    if (len(arrays[0]) * shard.count) % mesh.size:
        raise ValueError(f"batch size {len(arrays[0]) * shard.count} is not divisible by the {mesh.size} devices "
                         "of the mesh")
    sharding = NamedSharding(mesh, P("data"))
    if shard.count == 1:
        return tuple(jax.device_put(a, sharding) for a in arrays)
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a)) for a in arrays)


@functools.lru_cache(maxsize=16)
def _gather(sharding: NamedSharding) -> Callable[[jax.Array, jax.Array], jax.Array]:
    return jax.jit(lambda a, idx: jnp.take(a, idx, axis=0), out_shardings=sharding)


@dataclasses.dataclass
class _Inputs:
    """What the steps eat: uint8 images (`start` None) or the cached activations entering block `start`."""

    train: AnySplit  # in memory (images or activations) or streamed from its files
    validation: Split
    start: int | None = None
    resident_bytes: int = 0  # train inputs up to this size are uploaded once and batches gathered on device
    prefix: tuple[str, ...] = ()  # the slots whose work the cached activations already hold
    prefix_time: float = 0.0

    def stream(self, batch_size: int, seed: int, mesh: Mesh) -> Iterator[tuple[jax.Array, jax.Array]]:
        """(inputs, labels) batches on the mesh, in the order of `pp.index_batches(len(train), batch_size, seed=seed)`.

        One order, two ways to feed it: a small in-memory split on one process is uploaded once and each batch
        gathered on the device; anything else is read batch by batch (`data.stream.Stream`: this process's rows
        only; a streamed split decoded in background threads, a few batches ahead), and JAX's async dispatch
        overlaps the transfer with the running step.
        """
        shard, train = process_shard(mesh), self.train
        if isinstance(train, StreamedSplit) or shard.count > 1 or train.images.nbytes > self.resident_bytes:
            return (_put_batch(b, mesh) for b in Stream(train, batch_size, seed=seed, shard=shard))
        resident = jax.device_put(np.asarray(train.images), NamedSharding(mesh, P()))
        take = _gather(NamedSharding(mesh, P("data")))
        batches = (_put_batch((idx.astype(np.int32), train.labels[idx]), mesh)
                   for idx in shard.order(len(train), batch_size, seed=seed))
        return ((take(resident, i), y) for i, y in batches)


def _inputs(structure: Structure, frozen: Tree, data: Any, hparams: Mapping[str, Any], *, cache: PrefixCache | None,
            component_ids: Mapping[str, str] | None, batch_size: int, dtype: Any, attention: str | None, mesh: Mesh,
            resident_bytes: int) -> _Inputs:
    """Cached prefix activations when the cache can serve this child (see mu2hub/inference/prefix.py), else the images.

    A streamed validation split is decoded once here (the loop hands over its fixed subset already decoded).
    """
    validation = materialise(data.validation)
    plain = _Inputs(data.train, validation, resident_bytes=resident_bytes)
    # The cache holds a whole split's activations on the host: not for a mesh spanning processes (each reads only
    # its shard), nor for a streamed train split (which is streamed because it is too big to hold).
    local = process_shard(mesh).count == 1 and isinstance(data.train, Split)
    depth = cacheable_depth(structure, list(frozen), hparams) if cache is not None and local else 0
    if depth == 0:
        return plain
    slots = prefix_slots(structure, depth)
    ids = {s: (component_ids or {}).get(s) or tensors_fingerprint(frozen[s]) for s in slots}
    impl = resolve_attention(attention, dtype, structure.dims.hidden_size // structure.dims.num_heads)
    per_example = structure.seq_len * structure.dims.hidden_size * np.dtype(dtype or np.float32).itemsize
    splits = {"train": data.train, "validation": validation}
    if not all(cache.admits(len(s) * per_example) for s in splits.values()):
        return plain
    t0 = time.perf_counter()
    acts = {name: cache.get_or_compute(
        cache_key(ids, split_fingerprint(split), structure.image_size, dtype, impl), len(split) * per_example,
        lambda split=split: prefix_activations(structure, frozen, split, depth, batch_size=batch_size, dtype=dtype,
                                               attention=attention, mesh=mesh))
        for name, split in splits.items()}
    return _Inputs(Split(acts["train"], data.train.labels), Split(acts["validation"], validation.labels), depth,
                   cache.device_max_bytes, tuple(slots), time.perf_counter() - t0)


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
    cached_blocks: int = 0  # lowest blocks served from the prefix cache (0: the plain path)
    prefix_time: float = 0.0  # seconds spent getting those activations (computing them on a cache miss)


def _to_host(tree: Tree) -> dict[str, dict[str, np.ndarray]]:
    """float32 numpy copies (bf16 traces widen losslessly; format.py stores F32, not BF16).

    Copies, because a zero-copy view of a buffer that the next step donates would change under us.
    """
    return {s: {k: np.array(v, np.float32) for k, v in t.items()} for s, t in jax.device_get(dict(tree)).items()}


class _Validations:
    """One child's validation record: history, and the best snapshot whenever the score reaches the bar."""

    def __init__(self, best_score: float, score_fn: Callable[[float], float]):
        self.best_score, self.score_fn = best_score, score_fn
        self.best: tuple[dict, dict] | None = None
        self.best_seen = -math.inf
        self.history: list[dict[str, float]] = []

    def record(self, step: int, accuracy: float, loss: Any, snapshot: Callable[[], tuple[dict, dict]]) -> None:
        score = float(self.score_fn(accuracy))
        self.best_seen = max(self.best_seen, score)
        self.history.append({"step": step, "val_accuracy": float(accuracy), "score": score, "loss": float(loss)})
        if score >= self.best_score:
            self.best, self.best_score = snapshot(), score

    def result(self, train_time: float, compile_time: float, examples: int, inputs: _Inputs) -> ChildResult:
        return ChildResult(
            improved=self.best is not None,
            quality=max((h["val_accuracy"] for h in self.history), default=float("nan")),
            score=self.best_score if self.best is not None else self.best_seen,
            params=self.best[0] if self.best else None,
            traces=self.best[1] if self.best else None,
            history=self.history, train_time=train_time, compile_time=compile_time, examples_seen=examples,
            cached_blocks=inputs.start or 0, prefix_time=inputs.prefix_time,
        )


def _drive(total: int, steps_per_validation: int, stream: Iterator, step: Callable[[int, Any, Any], Any],
           validate: Callable[[int], None]) -> tuple[float, float]:
    """`total` steps with a validation every `steps_per_validation`; returns (elapsed, compile seconds).

    The stream is closed at the end (a streamed split's decoding threads stop then, not at garbage collection).
    """
    start = time.perf_counter()
    compile_time = 0.0
    try:
        for i in range(total):
            out = step(i, *next(stream))
            if i == 0:
                jax.block_until_ready(out)
                compile_time += time.perf_counter() - start
            if (i + 1) % steps_per_validation:
                continue
            first_eval = i + 1 == steps_per_validation
            if first_eval:  # time the first validation alone (mostly its compilation), not the queued steps
                jax.block_until_ready(out)
                t0 = time.perf_counter()
            validate(i + 1)
            if first_eval:
                compile_time += time.perf_counter() - t0
    finally:
        stream.close()
    return time.perf_counter() - start, compile_time


def _check_partition(structure: Structure, frozen: Tree, trainable: Tree) -> None:
    slots, overlap = set(structure.slots()), sorted(set(frozen) & set(trainable))
    missing, extra = sorted(slots - set(frozen) - set(trainable)), sorted((set(frozen) | set(trainable)) - slots)
    if overlap or missing or extra:
        raise ValueError(f"frozen/trainable must partition the path's slots: both {overlap}, in neither "
                         f"{missing}, not in the path {extra}")


def train_child(structure: Structure, frozen: Tree, trainable: Tree, data: Any, hparams: Mapping[str, Any], *,
                num_validations: int, steps_per_validation: int, batch_size: int, seed: int,
                dtype: Any = None, inherited_traces: Tree | None = None, best_score: float = -math.inf,
                score_fn: Callable[[float], float] = lambda quality: quality,
                progress: Callable[[int, int, dict], None] | None = None, mesh: Mesh | None = None,
                variant: str = "mu2net", attention: str | None = None, prefix_cache: PrefixCache | None = None,
                component_ids: Mapping[str, str] | None = None, resident_bytes: int = 1 << 30,
                preprocessing: Mapping[str, Any] | None = None, momentum: str | None = None) -> ChildResult:
    """Train a child for `num_validations` × `steps_per_validation` steps and keep its best validation snapshot.

    Args:
        structure (`Structure`): the child's static shape.
        frozen, trainable (`{slot: {tensor: array}}`): a partition of `structure.slots()`; only `trainable`
            is updated. The caller's arrays are never modified (training works on device copies).
        data (`TaskData` or `data.stream.StreamedTask`): `train` and `validation` splits of uint8 images, in
            memory or streamed from their files (the same batches either way, `data.stream`).
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
        attention (`str`, *optional*): "xla", "cudnn" or None (cuDNN where it runs, see `model.apply_path`).
        prefix_cache (`PrefixCache`, *optional*): with augmentation off and the embedding and lowest k >= 1
            blocks frozen, their activations come from this cache (computed on a miss) and only the rest
            runs per step. Same result as without (up to float rounding); `ChildResult.cached_blocks` says k.
        component_ids (`{slot: id}`, *optional*): ids of the frozen components, naming the cache entries;
            without them the frozen tensors are hashed (once per array object).
        resident_bytes (`int`, defaults to 1 GiB): a train split of uint8 images up to this size is uploaded
            to the device once and batches are gathered there (cached activations: the cache's
            `device_max_bytes`).
        preprocessing (`Mapping`, *optional*): a task's stored preprocessing spec (`tasks/<task>.json`), whose resize
            options (antialias, pixel_scale) training and validation then use, as inference does; mu2hub's defaults
            without one. The prefix cache serves only the defaults.
        momentum (`str`, *optional*): the momentum accumulator's dtype, "auto" (None), "bfloat16" or "float32"
            (`momentum_dtype`: auto is bf16 where bf16 is native, float32 on a CPU).

    Raises:
        ValueError: `frozen` and `trainable` do not partition the structure's slots, or bad hparams.
    """
    _check_partition(structure, frozen, trainable)
    total = num_validations * steps_per_validation
    # Built for lr 1, the lr passed as data: children differing only in lr share one compiled step.
    tx = make_optimizer({**hparams, "opt_lr": 1.0}, total, steps_per_validation=steps_per_validation, variant=variant,
                        momentum=momentum)
    lr = jnp.asarray(float(hparams["opt_lr"]), jnp.float32)
    static = data_hparams(hparams)
    mesh = _default_mesh() if mesh is None else mesh
    pixels = pixels_of(preprocessing)
    inputs = _inputs(structure, frozen, data, hparams, cache=prefix_cache if pixels == DEFAULT_PIXELS else None,
                     component_ids=component_ids, batch_size=batch_size, dtype=dtype, attention=attention, mesh=mesh,
                     resident_bytes=resident_bytes)
    frozen_d = _put_params({s: dict(t) for s, t in frozen.items() if s not in inputs.prefix}, mesh)
    params = _put_params({s: dict(t) for s, t in trainable.items()}, mesh, copy=True)
    state = {"params": params, "opt": _put_params(init_opt_state(tx, params, inherited_traces), mesh), "metrics": {}}
    base_key = jax.random.key(seed)
    kw = dict(dtype=dtype, attention=attention, start=inputs.start, pixels=pixels)
    validations = _Validations(best_score, score_fn)

    def step(i: int, x: jax.Array, labels: jax.Array) -> Tree:
        state["params"], state["opt"], state["metrics"] = train_step(
            structure, frozen_d, state["params"], state["opt"], x, labels, jax.random.fold_in(base_key, i), static,
            tx=tx, lr=lr, **kw)
        if progress is not None:
            progress(i + 1, total, state["metrics"])
        return state["params"]

    def validate(at: int) -> None:
        accuracy = _evaluate(structure, frozen_d, state["params"], inputs.validation, batch_size, mesh=mesh, **kw)
        validations.record(at, accuracy, state["metrics"]["loss"],
                           lambda: (_to_host(state["params"]), _to_host(momentum_traces(state["opt"]))))

    elapsed, compile_time = _drive(total, steps_per_validation, inputs.stream(batch_size, seed, mesh), step, validate)
    return validations.result(elapsed - compile_time, compile_time, total * batch_size, inputs)


# ---------------------------------------------------------------------------------------------------
# Several children in one compiled step
# ---------------------------------------------------------------------------------------------------


def batch_key(structure: Structure, frozen: Tree, trainable: Tree, hparams: Mapping[str, Any]) -> Hashable:
    """Children with equal keys can be trained together by `train_children`.

    That is: the same structure, the same trainable slots, frozen tensors of the same shapes (a frozen
    position embedding may have any grid), and the same hparams except `opt_lr` (which becomes data).
    """
    shapes = tuple((s, k, tuple(np.shape(v))) for s in sorted(frozen) for k, v in sorted(frozen[s].items()))
    others = tuple(sorted((k, v) for k, v in hparams.items() if k != "opt_lr" and (k.startswith(("opt_", "ds_")))))
    return structure, tuple(sorted(trainable)), shapes, others


def _shared_slots(frozen: Sequence[Tree], ids: Sequence[Mapping[str, str]] | None) -> set[str]:
    """Frozen slots holding the same component in every child (equal ids, else the very same arrays)."""
    def same(slot: str) -> bool:
        if ids is not None and all(slot in i for i in ids):
            return len({i[slot] for i in ids}) == 1
        return all(f[slot].keys() == frozen[0][slot].keys() and all(f[slot][k] is frozen[0][slot][k] for k in f[slot])
                   for f in frozen[1:])
    return {s for s in frozen[0] if same(s)}


def _stack(trees: Sequence[Tree]) -> Tree:
    plain = [{s: dict(t) for s, t in tree.items()} for tree in trees]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *plain)


def train_children(structure: Structure, frozen: Sequence[Tree], trainable: Sequence[Tree], data: Any,
                   hparams: Sequence[Mapping[str, Any]], *, num_validations: int, steps_per_validation: int,
                   batch_size: int, seed: int, dtype: Any = None, inherited_traces: Sequence[Tree | None] | None = None,
                   best_scores: Sequence[float] | None = None,
                   score_fns: Sequence[Callable[[float], float]] | None = None,
                   progress: Callable[[int, int, dict], None] | None = None, mesh: Mesh | None = None,
                   variant: str = "mu2net", attention: str | None = None, prefix_cache: PrefixCache | None = None,
                   component_ids: Sequence[Mapping[str, str]] | None = None,
                   resident_bytes: int = 1 << 30, preprocessing: Mapping[str, Any] | None = None,
                   momentum: str | None = None) -> list[ChildResult]:
    """Train C children in one compiled step (`jax.vmap` over them), each as `train_child` would.

    For children too small to fill the device alone. They must share `batch_key` (same structure, trainable
    slots and hparams except `opt_lr`) and see the same batches (one `seed`, as siblings of a generation do).
    Frozen components held by every child (equal `component_ids`, else identical array objects) are passed
    once and their computation runs once; other frozen slots are stacked. Arguments are those of
    `train_child`, one per child where plural; `progress` gets metrics with a leading axis of C. Each result's
    `train_time` / `compile_time` is the batch's divided by C.

    Raises:
        ValueError: children that do not share `batch_key`, or lists of different lengths.
    """
    n = len(trainable)
    inherited_traces = list(inherited_traces or [None] * n)
    best_scores = list(best_scores if best_scores is not None else [-math.inf] * n)
    score_fns = list(score_fns or [lambda quality: quality] * n)
    if not n or {len(frozen), len(hparams), len(inherited_traces), len(best_scores), len(score_fns)} != {n}:
        raise ValueError(f"need one frozen, trainable, hparams (and traces, scores) per child; got {n} trainable")
    for f, t in zip(frozen, trainable):
        _check_partition(structure, f, t)
    keys = [batch_key(structure, f, t, h) for f, t, h in zip(frozen, trainable, hparams)]
    if len(set(keys)) > 1:
        raise ValueError("these children cannot share a step (structure, trainable slots, frozen shapes or hparams "
                         "other than opt_lr differ); group them by train.batch_key")
    total = num_validations * steps_per_validation
    tx = make_optimizer({**hparams[0], "opt_lr": 1.0}, total, steps_per_validation=steps_per_validation, variant=variant,
                        momentum=momentum)
    lr = jnp.asarray([float(h["opt_lr"]) for h in hparams], jnp.float32)
    static = data_hparams(hparams[0])
    mesh = _default_mesh() if mesh is None else mesh
    shared = _shared_slots(frozen, component_ids)
    pixels = pixels_of(preprocessing)
    inputs = _inputs(structure, {s: frozen[0][s] for s in shared}, data, hparams[0],
                     cache=prefix_cache if pixels == DEFAULT_PIXELS else None,
                     component_ids=component_ids[0] if component_ids else None, batch_size=batch_size, dtype=dtype,
                     attention=attention, mesh=mesh, resident_bytes=resident_bytes)
    frozen_d = _put_params({s: dict(frozen[0][s]) for s in shared - set(inputs.prefix)}, mesh)
    each = _put_params(_stack([{s: f[s] for s in f if s not in shared} for f in frozen]), mesh)
    params = _put_params(_stack(trainable), mesh, copy=True)
    opt = jax.tree.map(lambda *xs: jnp.stack(xs), *[init_opt_state(tx, t, it) for t, it in zip(trainable, inherited_traces)])
    state = {"params": params, "opt": _put_params(opt, mesh), "metrics": {}}
    base_key = jax.random.key(seed)
    kw = dict(dtype=dtype, attention=attention, start=inputs.start, pixels=pixels)
    validations = [_Validations(b, f) for b, f in zip(best_scores, score_fns)]

    def step(i: int, x: jax.Array, labels: jax.Array) -> Tree:
        state["params"], state["opt"], state["metrics"] = train_step_many(
            structure, frozen_d, each, state["params"], state["opt"], lr, x, labels, jax.random.fold_in(base_key, i),
            static, tx=tx, **kw)
        if progress is not None:
            progress(i + 1, total, state["metrics"])
        return state["params"]

    def validate(at: int) -> None:
        accuracies = _evaluate(structure, frozen_d, state["params"], inputs.validation, batch_size, mesh=mesh,
                               frozen_each=each, **kw)
        losses = np.asarray(state["metrics"]["loss"])
        for c, v in enumerate(validations):
            v.record(at, accuracies[c], losses[c], lambda c=c: (
                _to_host(jax.tree.map(lambda a: a[c], state["params"])),
                _to_host(jax.tree.map(lambda a: a[c], momentum_traces(state["opt"])))))

    elapsed, compile_time = _drive(total, steps_per_validation, inputs.stream(batch_size, seed, mesh), step, validate)
    return [v.result((elapsed - compile_time) / n, compile_time / n, total * batch_size, inputs) for v in validations]
