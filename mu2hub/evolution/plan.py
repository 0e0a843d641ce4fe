"""Price a run before starting it: every task resolved (no training), split sizes after the rules, steps, images,
FLOPs and device-hours (`training/evolve.py --plan`). Missing data is listed, not fatal.

Costs follow the loop's own arithmetic (`evolution.loop.Agent._common_args`): a child trains
`num_validations × ceil(min(train, cap) / batch)` steps of `batch` images and evaluates `num_validations` times on
`min(validation, cap)` images; a task gets `num_task_iters × generations × children_per_generation` children.
FLOPs per image are XLA's cost analysis of one forward pass (`loop.forward_flops`); a training image is counted
as 3 forward passes (forward + backward), a validation image as 1. Device-hours divide the images by a
training throughput (images/s per device) that you pass; validation images count 1/3 of a training image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..data import catalog
from ..errors import Mu2hubError
from ..format.system import Dims, Structure


@dataclass
class TaskCost:
    task: str
    source: str
    sizes: dict[str, int] | None  # after the split rules; None: the data is not here (costs are then upper bounds)
    missing: str | None = None
    num_classes: int | None = None
    steps_per_child: int | None = None
    children: int = 0
    train_images: int | None = None
    validation_images: int | None = None
    flops_per_image: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def flops(self) -> float | None:
        if self.train_images is None or self.flops_per_image is None:
            return None
        return self.flops_per_image * (3 * self.train_images + self.validation_images)

    def device_hours(self, throughput: float | None) -> float | None:
        if throughput is None or self.train_images is None:
            return None
        return (self.train_images + self.validation_images / 3) / throughput / 3600


def _dims(root: Mapping[str, Any]) -> Dims:
    """The root's dims as the config states them (offline); a checkpoint's own when it does not (needs the file)."""
    if all(root.get(k) for k in ("hidden_size", "num_heads", "mlp_dim", "patch_size")):
        return Dims(root["hidden_size"], root["num_heads"], root["mlp_dim"], root["patch_size"])
    from ..convert.roots import root_dims

    return root_dims(root)


def _sizes(task: str, kwargs: Mapping[str, Any]) -> tuple[str, dict[str, int] | None, int | None, str | None]:
    """(source, split sizes, classes, why missing) without decoding an image."""
    if catalog.is_catalog_task(task):
        t = catalog.TASKS[task]
        where = catalog.SOURCES[t.source].where
        allowed = {k: kwargs[k] for k in ("sources", "sources_dir", "data_dir", "cache_dir") if k in kwargs}
        try:
            r = catalog.resolve(task, **allowed)
        except Mu2hubError as e:
            return where, None, t.num_classes, str(e).splitlines()[0]
        return where, r.sizes(), len(r.labels), None
    from ..data.registry import get_task

    try:
        data = get_task(task, **kwargs)
    except Exception as e:  # noqa: BLE001 - a plan lists every problem instead of stopping at the first
        return task, None, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return task, {s: len(getattr(data, s).labels) for s in ("train", "validation", "test")}, data.num_classes, None


def plan(config: Mapping[str, Any], *, tasks: list[str] | None = None) -> list[TaskCost]:
    """One `TaskCost` per task of the config (or `tasks`), in stream order."""
    from .hparams import get_defaults
    from .loop import forward_flops

    root = config["root"]
    dims = _dims(root)
    defaults = {**get_defaults(config["space"]), **config.get("hparams", {})}
    image_size, layers = int(defaults.get("ds_image_size", root["image_size"])), int(root["num_layers"])
    children = config.get("num_task_iters", 1) * config["generations"] * config["children_per_generation"]
    batch, k = config["batch_size"], config["num_validations"]
    rows = []
    for task in tasks or config["tasks"]:
        source, sizes, classes, missing = _sizes(task, config.get("task_kwargs", {}).get(task, {}))
        row = TaskCost(task, source, sizes, missing, classes, children=children)
        if classes:
            row.flops_per_image = forward_flops(Structure(dims, image_size, layers, classes))
        # Without the data, the caps bound the cost from above (marked "≤"): a child never trains on more.
        cap_train, cap_val = config["train_examples_between_validations_max"], config.get("validation_examples_max")
        if sizes is None and catalog.is_catalog_task(task) and catalog.TASKS[task].one_k:
            cap_train, cap_val = min(cap_train, 800), min(cap_val or 200, 200)  # VTAB-1k: 800 / 200 by its rule
        if sizes is not None or cap_val:
            train = min(sizes["train"], cap_train) if sizes else cap_train
            val = (min(sizes["validation"], cap_val or sizes["validation"])) if sizes else cap_val
            row.extra["bound"] = sizes is None
            row.steps_per_child = k * math.ceil(train / batch)
            row.train_images = children * row.steps_per_child * batch
            row.validation_images = children * k * val
        rows.append(row)
    return rows


def format_plan(rows: list[TaskCost], throughput: float | None = None) -> str:
    """The priced table (Markdown), with totals and the list of what is missing."""
    def num(x: Any, f: str = ",", bound: bool = False) -> str:
        return "—" if x is None else ("≤ " if bound else "") + format(x, f)

    lines = ["| task | source | train / val / test | steps/child | children | train images | val images | "
             "GFLOPs/image | PFLOPs | device-h |", "|" + "---|" * 10]
    for r in rows:
        sizes = " / ".join(f"{r.sizes[s]:,}" for s in ("train", "validation", "test")) if r.sizes else "missing"
        b = r.extra.get("bound", False)
        lines.append(f"| {r.task} | {r.source} | {sizes} | {num(r.steps_per_child, bound=b)} | {r.children:,} | "
                     f"{num(r.train_images, bound=b)} | {num(r.validation_images, bound=b)} | "
                     f"{num(r.flops_per_image and r.flops_per_image / 1e9, ',.1f')} | "
                     f"{num(r.flops and r.flops / 1e15, ',.1f', b)} | {num(r.device_hours(throughput), ',.1f', b)} |")
    priced = [r for r in rows if r.train_images is not None]
    bounded = sum(r.extra.get("bound", False) for r in priced)
    total = lambda f: sum(f(r) or 0 for r in priced)  # noqa: E731
    lines.append(f"| **total ({len(priced) - bounded} measured, {bounded} bounded by the caps)** | | | | "
                 f"{sum(r.children for r in rows):,} | "
                 f"{total(lambda r: r.train_images):,} | {total(lambda r: r.validation_images):,} | | "
                 f"{total(lambda r: r.flops) / 1e15:,.1f} | "
                 f"{num(total(lambda r: r.device_hours(throughput)) if throughput else None, ',.1f')} |")
    missing = [r for r in rows if r.missing]
    if missing:
        lines += ["", f"Missing data ({len(missing)} tasks):"] + [f"- {r.task}: {r.missing}" for r in missing]
    return "\n".join(lines)


def measure_throughput(config: Mapping[str, Any], *, steps: int = 4, num_classes: int = 10) -> float:
    """Training images/s of one child on the default device: the root's structure at the configured image size,
    every component trainable (the most a child can cost), the config's batch, compilation excluded.

    Runs `mu2hub.train.child.train_child` itself on generated uint8 images; on a CPU a ViT-L/16 at 384 px takes minutes
    per step, so measure on the accelerator the run will use.
    """
    import jax
    import numpy as np

    from .. import model as vit
    from ..inference.task import resolve_dtype
    from ..data.registry import Split, TaskData
    from .hparams import get_defaults
    from ..train.child import train_child

    root = config["root"]
    hp = {**get_defaults(config["space"]), **config.get("hparams", {})}
    structure = Structure(_dims(root), int(hp["ds_image_size"]), int(root["num_layers"]), num_classes)
    batch = config["batch_size"]
    rng = np.random.default_rng(0)
    split = lambda n: Split(rng.integers(0, 256, (n, structure.image_size, structure.image_size, 3), dtype=np.uint8),  # noqa: E731
                            np.arange(n) % num_classes)
    data = TaskData("throughput", [str(i) for i in range(num_classes)], split(batch * steps), split(batch), split(batch))
    params = vit.init_path(structure, jax.random.key(0))
    result = train_child(structure, {}, params, data, hp, num_validations=1, steps_per_validation=steps,
                         batch_size=batch, seed=0, dtype=resolve_dtype(config.get("dtype")), prefix_cache=None)
    # train_time starts after the first (compiling) step and includes one validation pass of `batch` images
    return (result.examples_seen - batch) / max(result.train_time, 1e-9)
