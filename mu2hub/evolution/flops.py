"""Forward FLOPs of a path for the µ2Net+/µ3Net score factor, counted as the reference does (spec §3.5).

The reference runs XLA's HLO cost analysis on a CPU lowering of one forward pass at batch 1, before any
compiler optimisation. Counting on the accelerator instead would make the score depend on the machine: a GPU
lowers attention to a cuDNN custom call (no FLOPs counted) and fuses q/k/v into one matmul on concatenated
kernels, and optimised HLO differs per backend. So every setting that changes the traced program is pinned
here: CPU, float32, XLA attention, separate q/k/v projections, unoptimised HLO.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from .. import model as vit
from ..format.system import Structure


@functools.lru_cache(maxsize=64)
def forward_flops(structure: Structure) -> float:
    """FLOPs of `apply_path` on one image, from the CPU lowering's (unoptimised) cost analysis."""
    params = {slot: {k: jax.ShapeDtypeStruct(shape, np.float32)
                     for k, shape in vit.expected_shapes(slot.split(".")[0], structure.dims,
                                                         **vit.slot_kwargs(structure, slot)).items()}
              for slot in structure.slots()}
    images = jax.ShapeDtypeStruct((1, structure.image_size, structure.image_size, structure.dims.num_channels),
                                  np.float32)
    forward = jax.jit(functools.partial(vit.apply_path, attention="xla", fuse_qkv=False), static_argnums=0)
    lowered = forward.trace(structure, params, images).lower(lowering_platforms=("cpu",))
    analysis = lowered.cost_analysis()
    return float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"])
