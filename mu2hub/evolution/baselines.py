"""What an evolved task is judged against: the same ViT trained alone, and plain fine-tuning, at two budgets.

µ2Net's claim is that a task evolved on a multitask system beats what its user would do instead. Two baselines,
each trained on the task's train split and selected on its validation split exactly as a child is (the best of
`num_validations` evaluations), then measured once on test:

- **scratch**: the winning path's ViT (its depth, image size, adapters) from random init, every slot trainable;
- **finetune**: the same ViT initialised from the best pretrained starting point — the root when it is pretrained,
  otherwise the earlier task the winning lineage started from (or the first published one) — every slot trainable,
  a new zero head.

Both use the winning path's hyperparameters (what the search found for this task), at two budgets counted in
training examples (steps × batch):

- **total**: every child the task trained, kept or not — what the user paid for the search;
- **lineage**: only the children on the winning path's own line within this task — what produced the model, which
  separates transfer from search overhead.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np

from .. import model as vit
from ..format.system import Structure
from ..train.child import evaluate_params, train_child
from ..publishing.comparison import METRIC

@dataclasses.dataclass(frozen=True)
class Budgets:
    """Training examples (steps × batch) the search spent on one task."""

    total: int
    lineage: int
    children: int

    def examples(self, budget: str) -> int:
        return self.total if budget == "total" else self.lineage


def search_budgets(rows: Iterable[Mapping[str, Any]], task: str, best_id: str,
                   parent_of: Callable[[str], tuple[str | None, str]]) -> Budgets:
    """Budgets from the run's history rows of `task` and the winning path's line.

    `parent_of(path_id)` gives `(parent id, parent's task)`; the line is followed while it stays in `task`.
    """
    rows = [r for r in rows if r["task"] == task]
    examples_of = {r["kept"]: int(r["examples"]) for r in rows if r.get("kept")}
    lineage, pid = 0, best_id
    while pid is not None and pid in examples_of:
        lineage += examples_of[pid]
        parent, parent_task = parent_of(pid)
        pid = parent if parent_task == task else None
    return Budgets(sum(int(r["examples"]) for r in rows), lineage, len(rows))


def scratch_params(structure: Structure, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Every slot from random init (the head zero, as every new head)."""
    return vit.init_path(structure, jax.random.key(seed))


def finetune_params(structure: Structure, start: Mapping[str, Mapping[str, np.ndarray]],
                    seed: int) -> dict[str, dict[str, np.ndarray]]:
    """`start`'s components for every slot it has (position grid resampled), a new zero head, and random init
    for what it lacks (adapters, blocks above its depth)."""
    params = scratch_params(structure, seed)
    for slot in structure.slots():
        if slot == "head" or slot not in start:
            continue
        tensors = {k: np.asarray(v) for k, v in start[slot].items()}
        if slot == "pos_embed":
            tensors = {"embedding": np.asarray(vit.resize_pos_embed(tensors["embedding"], structure.grid))}
        if {k: v.shape for k, v in tensors.items()} != {k: np.shape(v) for k, v in params[slot].items()}:
            continue  # a different shape (another adapter_dim): not a starting point for this slot
        params[slot] = tensors
    return params


@dataclasses.dataclass(frozen=True)
class BaselineResult:
    name: str  # "kind:budget"
    test_accuracy: float | None  # None: could not run (reason says why)
    reason: str = ""


def train_baseline(name: str, structure: Structure, params: Mapping[str, Any], data: Any, hparams: Mapping[str, Any],
                   examples: int, *, batch_size: int, num_validations: int, seed: int, **train: Any) -> BaselineResult:
    """Train every slot of `params` for `examples` (rounded up to whole batches), select on validation, measure test.

    `train`: forwarded to `train_child` / `evaluate` (dtype, preprocessing, variant, momentum, mesh)."""
    steps = math.ceil(examples / batch_size)
    if steps < 1:
        return BaselineResult(name, None, "the search trained no examples for this budget")
    if len(data.validation) == 0 or len(data.test) == 0:
        return BaselineResult(name, None, "the task has no validation or no test examples")
    k = max(1, min(num_validations, steps))
    per = math.ceil(steps / k)
    result = train_child(structure, {}, dict(params), data, hparams, num_validations=k, steps_per_validation=per,
                         batch_size=batch_size, seed=seed, **train)
    eval_kw = {key: train[key] for key in ("dtype", "mesh", "preprocessing") if key in train}
    test = float(evaluate_params(structure, result.params, data.test, batch_size, **eval_kw))
    return BaselineResult(name, test)


def metrics_of(results: Iterable[BaselineResult], budgets: Budgets, finetune_from: str | None) -> dict[str, Any]:
    """The task file's metrics for these baselines (a baseline that could not run is null, with its reason)."""
    out: dict[str, Any] = {"search_examples": budgets.total, "lineage_examples": budgets.lineage}
    if finetune_from is not None:
        out["finetune_from"] = finetune_from
    skipped = {}
    for r in results:
        out[METRIC[r.name]] = r.test_accuracy
        if r.test_accuracy is None:
            skipped[r.name] = r.reason
    if skipped:
        out["baselines_skipped"] = skipped
    return out
