"""A generation's children: what each slot comes from (decided once, on every process) and its tensors (loaded
only by the process that trains it).

Deciding a child draws from the run's RNG and must happen identically on every process; loading its tensors
(components, momentum traces, fresh inits) costs host memory, so a process loads only the children it trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import jax
import numpy as np

from .. import model as vit
from ..format.system import Dims, Structure
from ..hub.store import Tensors


def shape_key(structure: Structure, slot: str) -> Hashable:
    """Equal exactly when two components can fill `slot` (image size, classes and adapter width vary)."""
    kind = slot.split(".")[0]
    return {"pos_embed": structure.grid, "head": structure.num_classes, "adapter": structure.adapter_dim}.get(kind, kind)


def structure_of(dims: Dims, hp: dict[str, Any]) -> Structure:
    return Structure(dims, int(hp["ds_image_size"]), int(hp["num_layers"]), int(hp["num_classes"]),
                     tuple(hp.get("adapter_layers", ())), int(hp.get("adapter_dim", 16)))


@dataclass
class Child:
    """A mutated child before training: where each slot comes from, and (once loaded) its tensors for training."""

    hparams: dict[str, Any]
    mutations: dict[str, Any]
    structure: Structure
    sources: dict[str, tuple[str, str | None]]  # slot -> (share|clone|init|resize, source id)
    known: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {id, params, bytes} of ancestors' components
    init_seed: int = 0  # the key of the slots it random-initialises
    accounted: float = 0.0  # its parameters as the score counts them (shared ones split among their users)
    frozen: dict[str, Tensors] = field(default_factory=dict)
    trainable: dict[str, Tensors] = field(default_factory=dict)
    traces: dict[str, Tensors] = field(default_factory=dict)

    def slot_params(self, slot: str) -> int:
        """Parameters of the component in `slot`, known without loading it."""
        action, source = self.sources[slot]
        if action in ("share", "clone"):
            return int(self.known[source]["params"])
        kind = slot.split(".")[0]
        shapes = vit.expected_shapes(kind, self.structure.dims, **vit.slot_kwargs(self.structure, slot))
        return sum(math.prod(s) for s in shapes.values())

    def load(self, component: Callable[[str], Tensors], trace: Callable[[str], Tensors | None],
             root_pos_embed: Callable[[], Tensors]) -> None:
        """Fill `frozen` / `trainable` / `traces` from the decisions (the training process only)."""
        keys = jax.random.split(jax.random.key(self.init_seed), len(self.sources))
        for (slot, (action, source)), key in zip(self.sources.items(), keys):
            if action == "share":
                self.frozen[slot] = component(source)
            elif action == "clone":
                self.trainable[slot] = component(source)
                inherited = trace(source)
                if inherited is not None:
                    self.traces[slot] = inherited
            elif action == "init":
                self.trainable[slot] = vit.init_component(slot.split(".")[0], self.structure.dims, key,
                                                          **vit.slot_kwargs(self.structure, slot))
            else:  # resize: the root's position embedding, resampled to the child's grid, trainable
                embedding = root_pos_embed()["embedding"]
                self.trainable[slot] = {"embedding": np.asarray(vit.resize_pos_embed(embedding, self.structure.grid))}

    def unload(self) -> None:
        """Drop the tensors once trained (a generation's children would otherwise all stay in host memory)."""
        self.frozen, self.trainable, self.traces = {}, {}, {}
