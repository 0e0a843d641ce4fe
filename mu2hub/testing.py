"""Random-weight systems with a chosen amount of sharing, for tests and benchmarks of storage and loading.

Their weights are random: they measure bytes, requests and load time, never accuracy.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from . import model as vit
from .data.pp import pp_spec
from .format.system import Dims, Structure, SystemConfig, TaskFile
from .hub.store import LocalStore


def random_system(folder: str | os.PathLike, *, dims: Dims, image_size: int, num_layers: int, num_tasks: int,
                  own_blocks: int = 1, num_classes: int = 10, seed: int = 0) -> dict[str, TaskFile]:
    """Root path + `num_tasks` tasks, each cloning its top `own_blocks` blocks, its `norm` and `head`.

    Everything else (patch embedding, tokens, lower blocks) is shared with the root, as µ2Net paths that
    reference frozen root components are. Task `task_i` has labels `c0..c{n-1}`.
    """
    store = LocalStore(folder)
    structure = Structure(dims, image_size, num_layers, num_classes)
    key = jax.random.key(seed)
    root = vit.init_path(structure, key)
    store.write_config(SystemConfig(dims, image_size, num_layers, name="random-system"))
    files = {}
    for t in range(num_tasks):
        key, sub = jax.random.split(key)
        params = dict(root)
        fresh = vit.init_path(structure, sub)
        owned = [f"block.{i}" for i in range(num_layers - own_blocks, num_layers)] + ["norm", "head"]
        for slot in owned:
            params[slot] = {k: v + np.float32(0.01) * np.random.default_rng(seed * 1000 + t).standard_normal(v.shape, np.float32)
                            for k, v in fresh[slot].items()}
        files[f"task_{t}"] = store.write_path(f"task_{t}", structure, params, [f"c{i}" for i in range(num_classes)],
                                              preprocessing=pp_spec(image_size))
    return files


def mixed_system(folder: str | os.PathLike, *, dims: Dims, image_size: int, num_layers: int, seed: int = 0) -> dict[str, TaskFile]:
    """Four tasks whose paths diverge in every way a path can, for tests of shared execution and serving.

    `shared_a` and `shared_b` differ only in their top block, norm and head; `adapter` adds an adapter before block 1
    and its own head; `larger` runs the root's components at 1.5 times the image size (more tokens: the position
    embedding is resampled) with its own head and 3 classes instead of 5. Labels are `c0..`.
    """
    store = LocalStore(folder)
    structure = Structure(dims, image_size, num_layers, 5)
    key = jax.random.key(seed)
    root = vit.init_path(structure, key)
    store.write_config(SystemConfig(dims, image_size, num_layers, name="mixed-system"))
    rng = np.random.default_rng(seed)

    def fresh(kind: str, like: dict[str, np.ndarray] | None = None, **kwargs: int) -> dict[str, np.ndarray]:
        base = like if like is not None else vit.init_component(kind, dims, jax.random.key(int(rng.integers(1 << 30))), **kwargs)
        return {k: v + np.float32(0.05) * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}

    top = f"block.{num_layers - 1}"
    files = {}
    for name in ("shared_a", "shared_b"):
        params = {**root, top: fresh("block", root[top]), "norm": fresh("norm", root["norm"]),
                  "head": fresh("head", num_classes=5)}
        files[name] = store.write_path(name, structure, params, [f"c{i}" for i in range(5)], preprocessing=pp_spec(image_size))
    with_adapter = Structure(dims, image_size, num_layers, 5, adapter_layers=(1,), adapter_dim=8)
    params = {**root, "adapter.1": fresh("adapter", adapter_dim=8), "head": fresh("head", num_classes=5)}
    files["adapter"] = store.write_path("adapter", with_adapter, params, [f"c{i}" for i in range(5)],
                                        preprocessing=pp_spec(image_size))
    larger = Structure(dims, image_size * 3 // 2, num_layers, 3)
    params = {**root, "head": fresh("head", num_classes=3)}
    files["larger"] = store.write_path("larger", larger, params, [f"c{i}" for i in range(3)],
                                       preprocessing=pp_spec(larger.image_size))
    return files
