"""The ViT path model in Flax NNX, and the pure forward `apply_path(structure, params, images)`.

Each component kind is one NNX module; its attribute names *are* the tensor names inside the component
file (docs/FORMAT.md), e.g. a block holds `norm1.scale`, `attn.query.kernel`, `mlp.fc2.bias`.
A path's parameters are `{slot: {tensor name: array}}`; the forward rebuilds the modules from those arrays
inside `jit` (nnx.merge on a cached graph definition), so parameters stay plain pytrees that training can
split into frozen and trainable parts and differentiate w.r.t. the trainable ones only.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .format import Dims, Structure

Params = Mapping[str, Mapping[str, jax.Array]]

# ---------------------------------------------------------------------------------------------------
# Component modules (attribute names are the file format: keep them stable)
# ---------------------------------------------------------------------------------------------------


def _dense(din: int, dout: int, *, dtype=None, rngs, zero: bool = False) -> nnx.Linear:
    init = nnx.initializers.zeros_init() if zero else nnx.initializers.xavier_uniform()
    return nnx.Linear(din, dout, kernel_init=init, bias_init=nnx.initializers.zeros_init(), dtype=dtype, rngs=rngs)


def _layer_norm(d: Dims, *, dtype=None, rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(d.hidden_size, epsilon=d.layer_norm_eps, dtype=dtype, rngs=rngs)


class ClassToken(nnx.Module):
    def __init__(self, d: Dims, *, dtype=None, rngs: nnx.Rngs):
        self.token = nnx.Param(jnp.zeros((1, 1, d.hidden_size), jnp.float32))


class PosEmbed(nnx.Module):
    """Learned position embedding for a grid×grid image plus the class token: (1, 1 + grid², hidden)."""

    def __init__(self, d: Dims, grid: int, *, dtype=None, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.embedding = nnx.Param(init(rngs.params(), (1, 1 + grid * grid, d.hidden_size), jnp.float32))


class Attention(nnx.Module):
    def __init__(self, d: Dims, *, dtype=None, rngs: nnx.Rngs):
        self.num_heads = d.num_heads
        self.query = _dense(d.hidden_size, d.hidden_size, dtype=dtype, rngs=rngs)
        self.key = _dense(d.hidden_size, d.hidden_size, dtype=dtype, rngs=rngs)
        self.value = _dense(d.hidden_size, d.hidden_size, dtype=dtype, rngs=rngs)
        self.out = _dense(d.hidden_size, d.hidden_size, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, dm = x.shape
        heads = lambda t: t.reshape(b, n, self.num_heads, dm // self.num_heads)  # noqa: E731
        o = jax.nn.dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return self.out(o.reshape(b, n, dm))


class Mlp(nnx.Module):
    def __init__(self, d: Dims, *, dtype=None, rngs: nnx.Rngs):
        self.fc1 = _dense(d.hidden_size, d.mlp_dim, dtype=dtype, rngs=rngs)
        self.fc2 = _dense(d.mlp_dim, d.hidden_size, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # Exact (erf) GELU, as transformers' ViT: keeps imported checkpoints within 1e-4 of the peer.
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    """Pre-LN transformer encoder block."""

    def __init__(self, d: Dims, *, dtype=None, rngs: nnx.Rngs):
        self.norm1 = _layer_norm(d, dtype=dtype, rngs=rngs)
        self.attn = Attention(d, dtype=dtype, rngs=rngs)
        self.norm2 = _layer_norm(d, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(d, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Adapter(nnx.Module):
    """Residual adapter (µ2Net): LayerNorm → Dense(dim) → GELU → zero-initialised Dense, added to its input."""

    def __init__(self, d: Dims, dim: int, *, dtype=None, rngs: nnx.Rngs):
        self.norm = _layer_norm(d, dtype=dtype, rngs=rngs)
        self.down = _dense(d.hidden_size, dim, dtype=dtype, rngs=rngs)
        self.up = _dense(dim, d.hidden_size, dtype=dtype, rngs=rngs, zero=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.up(jax.nn.gelu(self.down(self.norm(x)), approximate=False))


def _patch_embed(d: Dims, *, dtype=None, rngs: nnx.Rngs) -> nnx.Conv:
    p = d.patch_size
    return nnx.Conv(d.num_channels, d.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=dtype, rngs=rngs)


def _head(d: Dims, num_classes: int, *, dtype=None, rngs: nnx.Rngs) -> nnx.Linear:
    # Zero kernel as the reference: a new task starts from uniform predictions.
    return _dense(d.hidden_size, num_classes, dtype=dtype, rngs=rngs, zero=True)


def _module_ctor(kind: str, dims: Dims, *, grid: int = 0, num_classes: int = 0, adapter_dim: int = 0) -> Callable[..., nnx.Module]:
    ctors: dict[str, Callable[..., nnx.Module]] = {
        "patch_embed": lambda **kw: _patch_embed(dims, **kw),
        "cls": lambda **kw: ClassToken(dims, **kw),
        "pos_embed": lambda **kw: PosEmbed(dims, grid, **kw),
        "block": lambda **kw: Block(dims, **kw),
        "adapter": lambda **kw: Adapter(dims, adapter_dim, **kw),
        "norm": lambda **kw: _layer_norm(dims, **kw),
        "head": lambda **kw: _head(dims, num_classes, **kw),
    }
    if kind not in ctors:
        raise ValueError(f"unknown component kind {kind!r}; known: {sorted(ctors)}")
    return ctors[kind]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        out.update(_flatten(v, name + ".") if isinstance(v, Mapping) else {name: v})
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, v in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def slot_kwargs(structure: Structure, slot: str) -> dict[str, int]:
    """The shape-determining arguments of the module in `slot`."""
    kind = slot.split(".")[0]
    return {
        "pos_embed": {"grid": structure.grid},
        "head": {"num_classes": structure.num_classes},
        "adapter": {"adapter_dim": structure.adapter_dim},
    }.get(kind, {})


def init_component(kind: str, dims: Dims, key: jax.Array, **kwargs: int) -> dict[str, np.ndarray]:
    """Fresh random parameters of one component kind, as host float32 arrays keyed by tensor name."""
    module = _module_ctor(kind, dims, **kwargs)(rngs=nnx.Rngs(params=key))
    return {k: np.asarray(v, np.float32) for k, v in _flatten(nnx.to_pure_dict(nnx.state(module, nnx.Param))).items()}


@functools.lru_cache(maxsize=256)
def _skeleton(kind: str, dims: Dims, dtype: Any, kwargs: tuple[tuple[str, int], ...]) -> tuple[nnx.GraphDef, nnx.State]:
    """Graph definition + abstract state of one module, cached (built once per shape and compute dtype)."""
    module = nnx.eval_shape(lambda: _module_ctor(kind, dims, **dict(kwargs))(dtype=dtype, rngs=nnx.Rngs(0)))
    return nnx.split(module)


def expected_shapes(kind: str, dims: Dims, **kwargs: int) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape for a component kind; used to validate files before running them."""
    _, abstract = _skeleton(kind, dims, None, tuple(sorted(kwargs.items())))
    return {k: tuple(v.shape) for k, v in _flatten(nnx.to_pure_dict(abstract)).items()}


def build_module(kind: str, dims: Dims, tensors: Mapping[str, jax.Array], *, dtype: Any = None, **kwargs: int) -> nnx.Module:
    """Rebuild a component's NNX module around given arrays (traceable: used inside jit)."""
    graphdef, abstract = _skeleton(kind, dims, dtype, tuple(sorted(kwargs.items())))
    state = jax.tree_util.tree_map(lambda x: x, abstract)  # fresh copy: replace_by_pure_dict mutates
    nnx.replace_by_pure_dict(state, _unflatten(tensors))
    return nnx.merge(graphdef, state)


# ---------------------------------------------------------------------------------------------------
# Position-embedding resampling (as the reference: bilinear over the grid, class token kept)
# ---------------------------------------------------------------------------------------------------


def resize_pos_embed(embedding: jax.Array, new_grid: int) -> jax.Array:
    """(1, 1+g², d) -> (1, 1+new², d): bilinear zoom of the grid with corners aligned (scipy `zoom(order=1)`)."""
    n, d = embedding.shape[1] - 1, embedding.shape[2]
    old = int(round(n**0.5))
    if old * old != n:
        raise ValueError(f"position embedding of {n} patch tokens is not a square grid")
    if old == new_grid:
        return embedding
    grid = embedding[0, 1:].reshape(old, old, d)
    coords = jnp.linspace(0.0, old - 1.0, new_grid) if new_grid > 1 else jnp.zeros((1,))
    i0 = jnp.clip(jnp.floor(coords).astype(jnp.int32), 0, old - 1)
    i1 = jnp.clip(i0 + 1, 0, old - 1)
    w = (coords - i0)[:, None]
    rows = grid[i0] * (1 - w)[:, :, None] + grid[i1] * w[:, :, None]  # (new, old, d)
    out = rows[:, i0] * (1 - w)[None, :, :] + rows[:, i1] * w[None, :, :]  # (new, new, d)
    return jnp.concatenate([embedding[:, :1], out.reshape(1, new_grid * new_grid, d)], axis=1)


# ---------------------------------------------------------------------------------------------------
# The pure forward
# ---------------------------------------------------------------------------------------------------


def _module(structure: Structure, params: Params, slot: str, dtype: Any) -> nnx.Module:
    return build_module(slot.split(".")[0], structure.dims, params[slot], dtype=dtype, **slot_kwargs(structure, slot))


def embed(structure: Structure, params: Params, images: jax.Array, *, dtype: Any = None) -> jax.Array:
    """Images (B, S, S, C) in [-1, 1] -> tokens (B, 1 + grid², hidden): patches, class token, positions."""
    d = structure.dims
    x = _module(structure, params, "patch_embed", dtype)(images.astype(dtype or jnp.float32))
    b = x.shape[0]
    x = x.reshape(b, -1, d.hidden_size)
    cls = jnp.broadcast_to(params["cls"]["token"], (b, 1, d.hidden_size)).astype(x.dtype)
    pos = params["pos_embed"]["embedding"]
    if pos.shape[1] != structure.seq_len:
        pos = resize_pos_embed(pos, structure.grid)
    return jnp.concatenate([cls, x], axis=1) + pos.astype(x.dtype)


def encode(structure: Structure, params: Params, x: jax.Array, *, start: int = 0, stop: int | None = None, dtype: Any = None) -> jax.Array:
    """Run blocks `start..stop-1` (with their adapters): the unit frozen-prefix caching splits on."""
    stop = structure.num_layers if stop is None else stop
    for i in range(start, stop):
        if i in structure.adapter_layers:
            x = _module(structure, params, f"adapter.{i}", dtype)(x)
        x = _module(structure, params, f"block.{i}", dtype)(x)
    return x


def classify(structure: Structure, params: Params, x: jax.Array, *, dtype: Any = None) -> jax.Array:
    """Final norm on the class token, then the head; logits in float32."""
    x = _module(structure, params, "norm", dtype)(x[:, 0])
    return _module(structure, params, "head", dtype)(x).astype(jnp.float32)


def apply_path(structure: Structure, params: Params, images: jax.Array, *, dtype: Any = None) -> jax.Array:
    """Logits of a path: a pure function of (static structure, component params, images).

    Args:
        structure (`Structure`): static shape information (dims, image size, layers, classes, adapters).
        params (`{slot: {tensor: array}}`): one entry per slot of `structure.slots()`; float32 masters.
        images (`(B, S, S, C)` float): preprocessed to [-1, 1] at `structure.image_size`.
        dtype (*optional*): compute dtype, e.g. `jnp.bfloat16`; parameters stay float32.
    """
    x = embed(structure, params, images, dtype=dtype)
    x = encode(structure, params, x, dtype=dtype)
    return classify(structure, params, x, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("structure", "dtype"))
def apply_path_jit(structure: Structure, params: Params, images: jax.Array, dtype: Any = None) -> jax.Array:
    return apply_path(structure, params, images, dtype=dtype)


def init_path(structure: Structure, key: jax.Array) -> dict[str, dict[str, np.ndarray]]:
    """Random parameters for every slot of a structure (a random-init root)."""
    keys = jax.random.split(key, len(structure.slots()))
    return {
        slot: init_component(slot.split(".")[0], structure.dims, k, **slot_kwargs(structure, slot))
        for slot, k in zip(structure.slots(), keys)
    }


def check_shapes(structure: Structure, params: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Mismatches between the path's components and what its slots need (empty list: all fit).

    `pos_embed` may have any square grid: it is resampled to the path's image size.
    """
    problems = []
    for slot in structure.slots():
        if slot not in params:
            problems.append(f"{slot}: missing")
            continue
        kind = slot.split(".")[0]
        want = expected_shapes(kind, structure.dims, **slot_kwargs(structure, slot))
        have = {k: tuple(np.shape(v)) for k, v in params[slot].items()}
        if kind == "pos_embed" and set(have) == {"embedding"}:
            n = have["embedding"]
            if len(n) == 3 and n[0] == 1 and n[2] == structure.dims.hidden_size and int(round((n[1] - 1) ** 0.5)) ** 2 == n[1] - 1:
                continue
        if have != want:
            missing = sorted(set(want) - set(have))
            extra = sorted(set(have) - set(want))
            wrong = [f"{k} {have[k]} (expected {want[k]})" for k in sorted(set(want) & set(have)) if have[k] != want[k]]
            problems.append(
                f"{slot}: " + "; ".join(
                    p for p in [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "", ", ".join(wrong)] if p
                )
            )
    return problems
