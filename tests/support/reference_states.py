"""Reference states built with the notebooks' own code path, for the republishing tests.

- The model: a Linen ViT named as vit_jax's `models_vit.py` names it (`embedding`, `cls`, `Transformer/
  {posembed_input, encoderblock_i, encoder_norm}`, `pre_logits`, `head`; blocks of `LayerNorm`,
  `MultiHeadDotProductAttention`, `MlpBlock` with Flax's default tanh `nn.gelu`), with µ2Net's `ResidualAdapter`s
  in its modified `Encoder`; the notebooks' `params_model_to_comps` lifts `Transformer`'s children to components.
- The checkpoint: `flax.training.checkpoints.save_checkpoint(ckpt_dir=state_dir, target=comps_params,
  step=generation, prefix=f"checkpoint_{loop}_", overwrite=True)` — a msgpack file with Orbax checkpointing off
  (every Flax the released states were written with), an Orbax directory with it on (current Flax).
- The tables: pandas DataFrames built as `paths_to_df` / `components_to_df` build them and written with
  `DataFrame.to_csv(index=False)`; µ2Net's `components.csv` is the append-only `comps_df` history, so components
  repeat (with their growing train locks) and include components of paths pruned since.

Parameters are drawn so activations are O(1): GELU's tanh approximation then matters (~1e-3 of the logits), so a
check at 1e-5 would fail on exact GELU.
"""

from __future__ import annotations

import contextlib
import functools
import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax.training import checkpoints as flax_checkpoints

HIDDEN, HEADS, MLP, PATCH, ADAPTER = 32, 2, 64, 4, 8
NOT_TRAINABLE = "NOT_TRAINABLE"


# ---------------------------------------------------------------------------------------------------------
# The Linen model (class names drive Linen's auto-naming: LayerNorm_0, MultiHeadDotProductAttention_0, ...)
# ---------------------------------------------------------------------------------------------------------
class IdentityLayer(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x


class AddPositionEmbs(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x + self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1, x.shape[1], x.shape[2]))


class MlpBlock(nn.Module):
    mlp_dim: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, *, deterministic):
        dense = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(stddev=1e-6))
        y = nn.gelu(nn.Dense(self.mlp_dim, **dense)(x))
        y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        return nn.Dropout(self.dropout_rate)(nn.Dense(x.shape[-1], **dense)(y), deterministic=deterministic)


class Encoder1DBlock(nn.Module):
    mlp_dim: int
    num_heads: int

    @nn.compact
    def __call__(self, inputs, *, deterministic):
        x = nn.LayerNorm()(inputs)
        x = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
                                            broadcast_dropout=False, deterministic=deterministic, dropout_rate=0.0)(x, x)
        x = x + inputs
        return x + MlpBlock(self.mlp_dim)(nn.LayerNorm()(x), deterministic=deterministic)


class ResidualAdapter(nn.Module):
    """µ2Net's: LayerNorm, Dense(adapter_dim), gelu, zero-initialised Dense, added to the input."""

    adapter_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.adapter_dim)(nn.LayerNorm()(x)))
        return x + nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(y)


class Encoder(nn.Module):
    num_layers: int
    adapter_layers: tuple[int, ...]

    @nn.compact
    def __call__(self, x, *, train):
        x = AddPositionEmbs(name="posembed_input")(x)
        for i in range(self.num_layers):
            if i in self.adapter_layers:
                x = ResidualAdapter(ADAPTER, name=f"residual_adapter_{i}")(x)
            x = Encoder1DBlock(MLP, HEADS, name=f"encoderblock_{i}")(x, deterministic=not train)
        return nn.LayerNorm(name="encoder_norm")(x)


class VisionTransformer(nn.Module):
    num_classes: int
    num_layers: int
    adapter_layers: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, inputs, *, train):
        x = nn.Conv(HIDDEN, (PATCH, PATCH), strides=(PATCH, PATCH), padding="VALID", name="embedding")(inputs)
        n, h, w, c = x.shape
        x = jnp.reshape(x, [n, h * w, c])
        x = jnp.concatenate([jnp.tile(self.param("cls", nn.initializers.zeros, (1, 1, c)), [n, 1, 1]), x], axis=1)
        x = Encoder(self.num_layers, self.adapter_layers, name="Transformer")(x, train=train)
        x = IdentityLayer(name="pre_logits")(x[:, 0])
        return nn.Dense(self.num_classes, name="head", kernel_init=nn.initializers.zeros)(x)


def linen_model(cfg: dict) -> VisionTransformer:
    return VisionTransformer(cfg["classes"], cfg["layers"], tuple(cfg.get("adapters", ())))


def params_model_to_comps(params: Any) -> dict[str, Any]:
    return {**{k: v for k, v in params.items() if k != "Transformer"}, **params["Transformer"]}


def params_comps_to_model(comps: dict[str, Any]) -> dict[str, Any]:
    inner = {k: v for k, v in comps.items() if k in ("posembed_input", "encoder_norm")
             or k.startswith(("encoderblock_", "residual_adapter_"))}
    return {**{k: v for k, v in comps.items() if k not in inner}, "Transformer": inner}


@functools.lru_cache(maxsize=None)
def _linen_apply(cfg_items: tuple) -> Any:
    model = linen_model(dict(cfg_items))
    return jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))


def linen_logits(cfg: dict, comps: dict[str, Any], images: np.ndarray) -> np.ndarray:
    """The reference model's answer: the Linen ViT applied to the path's components, float32."""
    apply = _linen_apply(tuple(sorted(cfg.items())))
    return np.asarray(apply(params_comps_to_model(comps), jnp.asarray(images, jnp.float32)))


def _randomize(tree: Any, seed: int) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    rng, out = np.random.default_rng(seed), []
    for path, leaf in leaves:
        name, shape = jax.tree_util.keystr(path), tuple(leaf.shape)
        if name.endswith("['scale']"):
            v = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith("['kernel']"):
            v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]) if len(shape) != 3 or "out" in name else shape[0])
        else:
            v = 0.2 * rng.standard_normal(shape)
        out.append(np.asarray(v, np.float32))
    return jax.tree_util.tree_unflatten(treedef, out)


def init_components(cfg: dict, seed: int) -> dict[str, Any]:
    """A path's components as the notebook holds them (host numpy, frozen dicts), drawn once per seed."""
    images = jax.ShapeDtypeStruct((1, cfg["size"], cfg["size"], 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: linen_model(cfg).init(jax.random.PRNGKey(0), x, train=False), images)["params"]
    comps = params_model_to_comps(shapes)
    out = {name: _randomize(tree, seed * 100 + i) for i, (name, tree) in enumerate(sorted(comps.items()))}
    return {name: flax.core.freeze(t) if isinstance(t, dict) else t for name, t in out.items()}


# ---------------------------------------------------------------------------------------------------------
# Writing a state the notebook way
# ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def orbax_checkpointing(on: bool) -> Iterator[None]:
    before = flax.config.flax_use_orbax_checkpointing
    flax.config.update("flax_use_orbax_checkpointing", on)
    try:
        yield
    finally:
        flax.config.update("flax_use_orbax_checkpointing", before)


def save_checkpoint(state_dir: Path, comps_params: dict[str, Any], loop_id: int, generation_id: int, orbax: bool) -> Path:
    """`checkpoint_save` of the notebooks: the file (or Orbax directory) `checkpoint_{loop}_{generation}`."""
    with orbax_checkpointing(orbax), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy msgpack writer warns that Orbax replaces it
        return Path(flax_checkpoints.save_checkpoint(ckpt_dir=str(state_dir), target=comps_params, step=generation_id,
                                                     prefix=f"checkpoint_{loop_id}_", overwrite=True))


def bf16_trace(tree: Any) -> Any:
    """A momentum trace as optax's sgd(accumulator_dtype=bfloat16) leaves it, after jax.device_get."""
    return jax.tree_util.tree_map(lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16) * 0.5), tree)


def to_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """`pd.DataFrame(defaultdict-of-lists).to_csv(index=False)`, as `df_write_to_file` does."""
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for k in row:
            columns.setdefault(k, [])
    for row in rows:
        for k in columns:
            columns[k].append(row.get(k))
    pd.DataFrame(columns).to_csv(path, index=False)


def mu2net_row(task: str, pid: int, parent: int, parent_task: str | None, comp_ids: list[int], hparams: dict[str, Any],
               metrics: dict[str, Any], score: float | None, accounted: float | None) -> dict[str, Any]:
    """One `paths_to_df` row (µ2Net): metrics' JSON fields are json.dumps strings, as `Path` keeps them."""
    row = {"task_name": task, "id": pid, "parent_id": parent, "parent_task_name": parent_task,
           "final_accounted_params": accounted, "components": "_".join(map(str, comp_ids))}
    row.update({f"hparams.{k}": v for k, v in hparams.items()})
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    row["score"] = score
    return row


def mu4net_row(agent: str, task: str, pid: int, parent: tuple[str, int] | None, comps: list[tuple[str, int]],
               hparams: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """One µ4Net `paths_to_df` row: components as ','-joined 'agent:id', dict/list hparams as JSON."""
    row = {"agent_id": agent, "task_name": task, "id": pid, "parent_id": parent[1] if parent else -1,
           "parent_agent_id": parent[0] if parent else None, "components": ",".join(f"{a}:{i}" for a, i in comps)}
    row.update({f"hparams.{k}": json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in hparams.items()})
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row
