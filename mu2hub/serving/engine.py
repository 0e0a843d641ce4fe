"""Shared-prefix execution: a batch of rows, each tagged with a task, runs as a tree over the tasks' paths.

A path is a sequence of stages: the embedding (patch_embed, cls, pos_embed at the path's image size), then per
layer its adapter (if any) and its block, then the classifier (norm, head). Two rows fed the same preprocessed image
whose paths agree on their first k stages hold the same activations after stage k, so each such prefix is computed
once; rows split where the paths diverge, by component id. Level by level, each distinct stage is applied in one
call to every row (of every prefix) that goes through it, so a block that k tasks share costs one pass, not k.

Rows can only share a call when their token tensors agree in shape (paths at different image sizes): calls are
grouped by stage and shape. Each call is padded to a power-of-two batch size up to `max_batch_size` (larger ones are
cut into chunks), so every stage kind compiles at most log2(max_batch_size) + 1 programs per token shape, however
the batches mix tasks. Activations stay on the device while a prefix does not split; a split gathers rows on the
host (numpy), which keeps the gathers free of compiled programs of their own.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping, Sequence

import jax
import numpy as np

from .. import model as vit
from ..inference.task import resolve_dtype
from ..errors import ArgumentError
from ..format.system import Dims, Structure, SystemConfig, TaskFile, distinct
from ..inference.prefix import EMBEDDING_SLOTS

DeviceTensors = Mapping[str, jax.Array]


@dataclass(frozen=True)
class Stage:
    """One step of a path: what it computes (`kind`), with which components (`ids`) and static sizes."""

    kind: str  # "embed" | "adapter" | "block" | "classify"
    ids: tuple[str, ...]
    static: tuple[int, ...] = ()  # embed: (image_size,); adapter: (adapter_dim,); classify: (image_size, classes)


def path_stages(tf: TaskFile) -> tuple[Stage, ...]:
    """The task's path as stages, in forward order."""
    comp = tf.component_map()
    stages = [Stage("embed", tuple(comp[s].id for s in EMBEDDING_SLOTS), (tf.image_size,))]
    for i in range(tf.num_layers):
        if i in tf.adapter_layers:
            stages.append(Stage("adapter", (comp[f"adapter.{i}"].id,), (tf.adapter_dim,)))
        stages.append(Stage("block", (comp[f"block.{i}"].id,)))
    stages.append(Stage("classify", (comp["norm"].id, comp["head"].id), (tf.image_size, tf.num_classes)))
    return tuple(stages)


def preprocessing_key(tf: TaskFile) -> str:
    """Tasks with equal keys turn an image into the same input tensor."""
    return json.dumps(tf.preprocessing or {"resize": tf.image_size}, sort_keys=True)


def batch_buckets(max_batch_size: int) -> list[int]:
    """Powers of two below `max_batch_size`, then `max_batch_size` itself: the batch sizes calls are padded to."""
    if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 1:
        raise ArgumentError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
    out, b = [], 1
    while b < max_batch_size:
        out.append(b)
        b *= 2
    return out + [max_batch_size]


@dataclass(frozen=True)
class Row:
    """One answer to compute: `task` on `image` (preprocessed for that task: [S, S, C] in [-1, 1]).

    Rows with the same `key` whose tasks preprocess alike carry the same image and share computation."""

    task: str
    image: np.ndarray
    key: Hashable


@dataclass
class EngineStats:
    """Work done so far. `applications`: distinct stages applied (one per stage per level, however many rows and
    chunks); `calls`: compiled-program invocations; `row_applications`: rows times stages (the compute); `rows`:
    rows answered; `padded_rows`: rows added to fill power-of-two batches."""

    applications: int = 0
    calls: int = 0
    row_applications: int = 0
    rows: int = 0
    padded_rows: int = 0

    def copy(self) -> "EngineStats":
        return EngineStats(**vars(self))


@dataclass
class _Node:
    """Rows that share a prefix: their input keys (distinct) and activations ([bucket or n, ...])."""

    lanes: list[int]
    keys: list[Hashable]
    x: Any = None  # None at the root: the inputs are the rows' images
    index: dict[Hashable, int] = field(default_factory=dict)


class Engine:
    """Runs batches of `Row`s over one system's paths, computing shared prefixes once.

    Args:
        config (`SystemConfig`): the system's dimensions.
        files (`{task: TaskFile}`): the tasks it may be asked for.
        dtype (*optional*): compute dtype (`"bfloat16"`), as `TaskModel`.
        max_batch_size (`int`, defaults to 64): the largest call; calls are padded to powers of two up to it.
    """

    def __init__(self, config: SystemConfig, files: Mapping[str, TaskFile], *, dtype: Any = None,
                 max_batch_size: int = 64):
        self.dims: Dims = config.dims
        self.files = dict(files)
        self.dtype = resolve_dtype(dtype)
        self.buckets = batch_buckets(max_batch_size)
        self.max_batch_size = max_batch_size
        self._stages = {t: path_stages(tf) for t, tf in self.files.items()}
        self._pp = {t: preprocessing_key(tf) for t, tf in self.files.items()}
        self.stats = EngineStats()
        self._programs: set[tuple] = set()
        self._lock = threading.Lock()
        self._compute: tuple[str, bool] | None = None

    def stages(self, task: str) -> tuple[Stage, ...]:
        return self._stages[task]

    def component_ids(self, tasks: Iterable[str]) -> list[str]:
        """Distinct component ids the tasks' paths use."""
        return distinct(c.id for t in tasks for c in self.files[t].components)

    @property
    def compiled_programs(self) -> int:
        """Distinct (stage kind, sizes, batch shape) programs this engine has run: what XLA compiled for it."""
        return len(self._programs)

    def bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    # -- running ----------------------------------------------------------------------------------
    def run(self, rows: Sequence[Row], params: Mapping[str, DeviceTensors]) -> list[np.ndarray]:
        """Logits (float32, one vector per row, in order) of each row's task; `params` maps component id -> tensors
        for every component the rows' paths use."""
        unknown = sorted({r.task for r in rows} - set(self.files))
        if unknown:
            raise ArgumentError(f"tasks {unknown} are not served by this engine")
        if not rows:
            return []
        lane_key = [(r.key, self._pp[r.task]) for r in rows]
        first = {}
        for i, k in enumerate(lane_key):
            first.setdefault(k, i)
        out: list[Any] = [None] * len(rows)
        frontier = [_Node(list(range(len(rows))), distinct(lane_key))]
        level = 0
        while frontier:
            kids: list[tuple[Stage, _Node, list[int], list[Hashable]]] = []
            for node in frontier:
                split: dict[Stage, list[int]] = {}
                for lane in node.lanes:
                    split.setdefault(self._stages[rows[lane].task][level], []).append(lane)
                for stage, lanes in split.items():
                    kids.append((stage, node, lanes, distinct(lane_key[i] for i in lanes)))
            calls: dict[tuple[Stage, tuple[int, ...]], list[int]] = {}
            for j, (stage, node, _, keys) in enumerate(kids):
                shape = rows[first[keys[0]]].image.shape if node.x is None else tuple(node.x.shape[1:])
                calls.setdefault((stage, tuple(shape)), []).append(j)
            results: list[Any] = [None] * len(kids)
            for (stage, _), members in calls.items():
                for j, x in zip(members, self._apply(stage, [kids[j] for j in members], rows, first, params)):
                    results[j] = x
            frontier = []
            for (stage, _, lanes, keys), x in zip(kids, results):
                node = _Node(lanes, keys, x, {k: i for i, k in enumerate(keys)})
                if stage.kind == "classify":
                    host = np.asarray(x)
                    for lane in lanes:
                        out[lane] = host[node.index[lane_key[lane]]]
                else:
                    frontier.append(node)
            level += 1
        with self._lock:
            self.stats.rows += len(rows)
        return out

    def _apply(self, stage: Stage, kids: list[tuple[Stage, _Node, list[int], list[Hashable]]], rows: Sequence[Row],
               first: Mapping[Hashable, int], params: Mapping[str, DeviceTensors]) -> list[Any]:
        """Apply `stage` once to the rows of every kid; each kid's activations back ([bucket or n, ...])."""
        sizes = [len(keys) for *_, keys in kids]
        n = sum(sizes)
        whole = len(kids) == 1 and kids[0][1].x is not None and kids[0][3] == kids[0][1].keys
        if whole and n <= self.max_batch_size and kids[0][1].x.shape[0] == self.bucket(n):
            outs = [self._call(stage, kids[0][1].x, n, params)]  # the prefix did not split: stay on the device
        else:
            parts = []
            for _, node, _, keys in kids:
                if node.x is None:
                    parts.append(np.stack([rows[first[k]].image for k in keys]).astype(np.float32, copy=False))
                else:
                    parts.append(np.asarray(node.x)[[node.index[k] for k in keys]])
            x = np.concatenate(parts) if len(parts) > 1 else parts[0]
            outs = []
            for start in range(0, n, self.max_batch_size):
                chunk = x[start:start + self.max_batch_size]
                m = len(chunk)
                pad = self.bucket(m) - m
                if pad:
                    chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
                outs.append(self._call(stage, chunk, m, params))
        with self._lock:
            self.stats.applications += 1
            self.stats.row_applications += n
        if len(kids) == 1 and len(outs) == 1:
            return outs
        host = np.concatenate([np.asarray(o)[:m] for o, m in zip(outs, _chunk_sizes(n, self.max_batch_size))])
        bounds = np.cumsum([0] + sizes)
        return [host[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def _call(self, stage: Stage, x: Any, valid: int, params: Mapping[str, DeviceTensors]) -> jax.Array:
        """One compiled call of `stage` on a padded batch `x` (`valid` real rows)."""
        tensors = [params[cid] for cid in stage.ids]
        if self._compute is None:
            head_dim = self.dims.hidden_size // self.dims.num_heads
            self._compute = (vit.resolve_attention(None, self.dtype, head_dim), jax.default_backend() in ("gpu", "cuda"))
        attention, fuse = self._compute
        if stage.kind == "embed":
            structure = Structure(self.dims, stage.static[0], 0, 1)
            y = _embed(structure, *tensors, x, dtype=self.dtype)
            extra: tuple = tuple(tensors[2]["embedding"].shape)
        elif stage.kind == "block":
            y = _block(self.dims, tensors[0], x, dtype=self.dtype, attention=attention, fuse_qkv=fuse)
            extra = ()
        elif stage.kind == "adapter":
            y = _adapter(self.dims, stage.static[0], tensors[0], x, dtype=self.dtype)
            extra = ()
        else:
            structure = Structure(self.dims, stage.static[0], 0, stage.static[1])
            y = _classify(structure, *tensors, x, dtype=self.dtype)
            extra = ()
        with self._lock:
            self._programs.add((stage.kind, stage.static, tuple(x.shape), str(x.dtype), extra))
            self.stats.calls += 1
            self.stats.padded_rows += x.shape[0] - valid
        return y


def _chunk_sizes(n: int, size: int) -> list[int]:
    return [min(size, n - s) for s in range(0, n, size)]


@functools.partial(jax.jit, static_argnames=("structure", "dtype"))
def _embed(structure: Structure, patch: DeviceTensors, cls: DeviceTensors, pos: DeviceTensors, images: jax.Array, dtype: Any = None):
    return vit.embed(structure, {"patch_embed": patch, "cls": cls, "pos_embed": pos}, images, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("dims", "dtype", "attention", "fuse_qkv"))
def _block(dims: Dims, tensors: DeviceTensors, x: jax.Array, dtype: Any = None, attention: str = "xla",
           fuse_qkv: bool = False):
    return vit.build_module("block", dims, tensors, dtype=dtype)(x, attention=attention, fuse_qkv=fuse_qkv)


@functools.partial(jax.jit, static_argnames=("dims", "adapter_dim", "dtype"))
def _adapter(dims: Dims, adapter_dim: int, tensors: DeviceTensors, x: jax.Array, dtype: Any = None):
    return vit.build_module("adapter", dims, tensors, dtype=dtype, adapter_dim=adapter_dim)(x)


@functools.partial(jax.jit, static_argnames=("structure", "dtype"))
def _classify(structure: Structure, norm: DeviceTensors, head: DeviceTensors, x: jax.Array, dtype: Any = None):
    return vit.classify(structure, {"norm": norm, "head": head}, x, dtype=dtype)
