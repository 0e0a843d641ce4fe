"""Random-weight systems with a chosen amount of sharing, for tests and benchmarks of storage and loading.

Their weights are random: they measure bytes, requests and load time, never accuracy.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from . import model as vit
from .data.pp import pp_spec
from .format import Dims, Structure, SystemConfig, TaskFile
from .store import LocalStore


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
