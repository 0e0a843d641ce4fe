"""The ViT path model in Flax NNX, and the pure forward `apply_path(structure, params, images)`.

Each component kind is one NNX module; its attribute names *are* the tensor names inside the component
file (docs/FORMAT.md), e.g. a block holds `norm1.scale`, `attn.query.kernel`, `mlp.fc2.bias`.
A path's parameters are `{slot: {tensor name: array}}`; the forward rebuilds the modules from those arrays
inside `jit` (nnx.merge on a cached graph definition), so parameters stay plain pytrees that training can
split into frozen and trainable parts and differentiate w.r.t. the trainable ones only.

Compute options are static arguments of the forward, not global state: `dtype` (bf16 compute on float32
masters), `attention` ("xla", "cudnn" with the sequence padded to a multiple of 64, or None: cuDNN where it
runs) and `fuse_qkv` (one q/k/v matmul on kernels concatenated at trace time). docs/PERFORMANCE.md.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from .errors import ShapeMismatchError
from .format.system import Dims, Structure

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


ATTENTION = (None, "xla", "cudnn")  # None: cuDNN where it can run (GPU, bf16/fp16), else XLA
_CUDNN_SEQ_MULTIPLE = 64  # cuDNN flash attention rejects e.g. 197 tokens: pad to a multiple, mask by length


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "xla",
           pad_multiple: int | None = None) -> jax.Array:
    """Softmax attention on (batch, tokens, heads, head dim), optionally on a sequence padded to `pad_multiple`.

    Padding appends zero tokens and passes the true length as `query_seq_lengths` / `key_value_seq_lengths`,
    so padded keys get no weight; padded query rows are sliced off. The cuDNN path needs it (gpu_notes.md);
    with `implementation="xla"` it computes the same thing, which is how the padding is tested on a CPU.
    """
    n = q.shape[1]
    pad = (-n) % pad_multiple if pad_multiple else 0
    if not pad:
        return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
    q, k, v = (jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0))) for t in (q, k, v))
    lengths = jnp.full((q.shape[0],), n, jnp.int32)
    o = jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                     implementation=implementation)
    return o[:, :n]


def resolve_attention(attention: str | None, dtype: Any, head_dim: int) -> str:
    """The attention implementation to trace: `attention` itself, or for None cuDNN when it can run here.

    cuDNN flash attention needs a GPU, bf16/fp16 inputs and a head dimension that is a multiple of 8 and at
    most 128; anything else (every CPU run, float32) uses XLA's attention.

    Raises:
        ValueError: an unknown implementation name.
    """
    if attention not in ATTENTION:
        raise ValueError(f"unknown attention implementation {attention!r}; expected one of {ATTENTION}")
    if attention is not None:
        return attention
    half = dtype is not None and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if not half or head_dim % 8 or head_dim > 128:
        return "xla"
    return "cudnn" if _cudnn_attention_available() else "xla"


@functools.lru_cache(maxsize=None)
def _cudnn_attention_available() -> bool:
    """Whether this process's default backend compiles our cuDNN attention, forward and backward, padded and
    masked as `Attention` calls it (probed once, on a tiny bf16 shape of 65 tokens)."""
    if jax.default_backend() not in ("gpu", "cuda"):
        return False
    t = jax.ShapeDtypeStruct((1, _CUDNN_SEQ_MULTIPLE + 1, 1, 64), jnp.bfloat16)

    def loss(q, k, v):
        return attend(q, k, v, implementation="cudnn", pad_multiple=_CUDNN_SEQ_MULTIPLE).astype(jnp.float32).sum()

    try:
        jax.jit(jax.grad(loss, (0, 1, 2))).lower(t, t, t).compile()
    except Exception:  # noqa: BLE001 - any failure (old cuDNN, GPU generation) means: use XLA's attention
        return False
    return True


class Attention(nnx.Module):
    def __init__(self, d: Dims, *, dtype=None, rngs: nnx.Rngs):
        self.num_heads = d.num_heads
        self.query = _dense(d.hidden_size, d.hidden_size, dtype=dtype, rngs=rngs)
        self.key = _dense(d.hidden_size, d.hidden_size, dtype=dtype, rngs=rngs)
        self.value = _dense(d.hidden_size, d.hidden_size, dtype=dtype, rngs=rngs)
        self.out = _dense(d.hidden_size, d.hidden_size, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, attention: str = "xla", fuse_qkv: bool = True) -> jax.Array:
        b, n, dm = x.shape
        heads = lambda t: t.reshape(b, n, self.num_heads, dm // self.num_heads)  # noqa: E731
        q, k, v = self._qkv(x) if fuse_qkv else (self.query(x), self.key(x), self.value(x))
        pad = _CUDNN_SEQ_MULTIPLE if attention == "cudnn" else None
        o = attend(heads(q), heads(k), heads(v), implementation=attention, pad_multiple=pad)
        return self.out(o.reshape(b, n, dm))

    def _qkv(self, x: jax.Array) -> list[jax.Array]:
        """q, k, v from one matmul on the concatenated kernels (built at trace time; stored tensors unchanged)."""
        layers = (self.query, self.key, self.value)
        kernel = jnp.concatenate([layer.kernel[...] for layer in layers], axis=1)
        bias = jnp.concatenate([layer.bias[...] for layer in layers])
        x, kernel, bias = promote_dtype((x, kernel, bias), dtype=self.query.dtype)
        y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ()))) + bias
        return jnp.split(y, 3, axis=-1)


def gelu(x: jax.Array, activation: str) -> jax.Array:
    """The system's GELU (`Dims.activation`): "gelu" is exact (erf), as transformers' and timm's ViTs;
    "gelu_tanh" is the tanh approximation, Flax's `nn.gelu` default, as big_vision / vit_jax / µ2Net trained."""
    return jax.nn.gelu(x, approximate=activation == "gelu_tanh")


class Mlp(nnx.Module):
    def __init__(self, d: Dims, *, dtype=None, rngs: nnx.Rngs):
        self.activation = d.activation
        self.fc1 = _dense(d.hidden_size, d.mlp_dim, dtype=dtype, rngs=rngs)
        self.fc2 = _dense(d.mlp_dim, d.hidden_size, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(gelu(self.fc1(x), self.activation))


class Block(nnx.Module):
    """Pre-LN transformer encoder block."""

    def __init__(self, d: Dims, *, dtype=None, rngs: nnx.Rngs):
        self.norm1 = _layer_norm(d, dtype=dtype, rngs=rngs)
        self.attn = Attention(d, dtype=dtype, rngs=rngs)
        self.norm2 = _layer_norm(d, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(d, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, attention: str = "xla", fuse_qkv: bool = True) -> jax.Array:
        x = x + self.attn(self.norm1(x), attention=attention, fuse_qkv=fuse_qkv)
        return x + self.mlp(self.norm2(x))


class Adapter(nnx.Module):
    """Residual adapter (µ2Net): LayerNorm → Dense(dim) → GELU (the system's) → zero-initialised Dense, added to
    its input."""

    def __init__(self, d: Dims, dim: int, *, dtype=None, rngs: nnx.Rngs):
        self.activation = d.activation
        self.norm = _layer_norm(d, dtype=dtype, rngs=rngs)
        self.down = _dense(d.hidden_size, dim, dtype=dtype, rngs=rngs)
        self.up = _dense(dim, d.hidden_size, dtype=dtype, rngs=rngs, zero=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.up(gelu(self.down(self.norm(x)), self.activation))


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
    old = int(round(max(n, 0) ** 0.5))
    if n < 1 or old * old != n:  # a stranger's component: a named error (validate reports it), never a crash
        raise ShapeMismatchError(f"position embedding of {n} patch tokens is not a square grid of at least one")
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


def encode(structure: Structure, params: Params, x: jax.Array, *, start: int = 0, stop: int | None = None, dtype: Any = None,
           attention: str | None = None, fuse_qkv: bool | None = None) -> jax.Array:
    """Run blocks `start..stop-1` (with their adapters): the unit frozen-prefix caching splits on."""
    stop = structure.num_layers if stop is None else stop
    impl = resolve_attention(attention, dtype, structure.dims.hidden_size // structure.dims.num_heads)
    # Fused q/k/v by default on a GPU only: on a CPU the kernel concatenation costs more than it saves
    # (14-25% slower, ViT-B/16 at 64 px, bench/gpu.py on 2 Xeon cores).
    fuse = jax.default_backend() in ("gpu", "cuda") if fuse_qkv is None else fuse_qkv
    for i in range(start, stop):
        if i in structure.adapter_layers:
            x = _module(structure, params, f"adapter.{i}", dtype)(x)
        x = _module(structure, params, f"block.{i}", dtype)(x, attention=impl, fuse_qkv=fuse)
    return x


def classify(structure: Structure, params: Params, x: jax.Array, *, dtype: Any = None) -> jax.Array:
    """Final norm on the class token, then the head; logits in float32."""
    x = _module(structure, params, "norm", dtype)(x[:, 0])
    return _module(structure, params, "head", dtype)(x).astype(jnp.float32)


def apply_path(structure: Structure, params: Params, images: jax.Array, *, dtype: Any = None,
               attention: str | None = None, fuse_qkv: bool | None = None) -> jax.Array:
    """Logits of a path: a pure function of (static structure, component params, images).

    Args:
        structure (`Structure`): static shape information (dims, image size, layers, classes, adapters).
        params (`{slot: {tensor: array}}`): one entry per slot of `structure.slots()`; float32 masters.
        images (`(B, S, S, C)` float): preprocessed to [-1, 1] at `structure.image_size`.
        dtype (*optional*): compute dtype, e.g. `jnp.bfloat16`; parameters stay float32.
        attention (`str`, *optional*): "xla", "cudnn" (sequence padded to a multiple of 64, masked by
            length), or None: cuDNN on a GPU in bf16/fp16 where it compiles, else XLA (`resolve_attention`).
        fuse_qkv (`bool`, *optional*): q, k and v from one matmul on the kernels concatenated at trace time
            (the stored tensors keep their names); None: fused on a GPU, separate elsewhere.
    """
    x = embed(structure, params, images, dtype=dtype)
    x = encode(structure, params, x, dtype=dtype, attention=attention, fuse_qkv=fuse_qkv)
    return classify(structure, params, x, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("structure", "dtype", "attention", "fuse_qkv"))
def apply_path_jit(structure: Structure, params: Params, images: jax.Array, dtype: Any = None,
                   attention: str | None = None, fuse_qkv: bool | None = None) -> jax.Array:
    return apply_path(structure, params, images, dtype=dtype, attention=attention, fuse_qkv=fuse_qkv)


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
