"""A published system as the evolution engine's input: parent candidates under a byte cap, lazy component reads.

`mu2hub.add_task` evolves one new task against a system on the Hub with the ordinary `Agent`. This module turns the
system's JSON (config, task files, `root.json`) into what the loop expects, a run directory whose `paths/` mirror
the published best paths, and supplies the component reader that fetches a component only when a sampled child
needs it, verified against its id and counted against the byte cap.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

import numpy as np

from ..data.registry import TaskData
from ..errors import ByteCapError, ContributionError, Mu2hubError, TaskExistsError, TaskNotFoundError
from ..format.system import ComponentRef, SystemConfig, TaskFile
from ..utils.tables import human_bytes
from ..hub.store import HubStore
from .hparams import get_defaults, get_space, list_spaces, validate_defaults
from .loop import ROOT_ID
from .run import PathRecord, RunDir
from .scorer import ROOT

# ---------------------------------------------------------------------------------------------------
# The published system, as the evolution engine sees it
# ---------------------------------------------------------------------------------------------------


def infer_space(files: Iterable[TaskFile]) -> str:
    """The tightest search space every published path's hparams fit (all tuned keys present, on their lists).

    A system evolved with a space carries all of its tuned keys in every path's hparams; ties go to the space with
    the shortest value lists. Systems without hparams (e.g. generated ones) fall back to `"mu2net"`.
    """
    hps = [tf.hparams for tf in files]
    fits = []
    for name in list_spaces():
        space = get_space(name)
        try:
            for hp in hps:
                validate_defaults(space, hp)
        except ValueError:
            continue
        fits.append((-len(space.ranges), sum(len(v) for v in space.ranges.values()), name))
    return min(fits)[2] if hps and fits else "mu2net"


def _hparams(tf: TaskFile, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A path's hparams with every key the loop reads (systems not evolved by mu2hub may lack some)."""
    return {**defaults, **tf.hparams, "num_classes": len(tf.labels), "num_layers": tf.num_layers,
            "ds_image_size": tf.image_size, "adapter_layers": list(tf.adapter_layers), "adapter_dim": tf.adapter_dim}


def _record(pid: str, tf: TaskFile, task: str, parent: str | None, defaults: Mapping[str, Any]) -> PathRecord:
    score = tf.metrics.get("score", tf.metrics.get("validation_accuracy", 0.0))
    return PathRecord(pid, task, parent, _hparams(tf, defaults),
                      {c.slot: {"id": c.id, "params": c.params, "bytes": c.bytes} for c in tf.components},
                      {"score": float(score), "quality": tf.metrics.get("validation_accuracy", score),
                       "accounted_params": tf.metrics.get("accounted_params", tf.activated_params)},
                      list(tf.lineage.get("created") or []))


def _fallback_ids(tf: TaskFile, root: TaskFile | None, ranges: Mapping[str, Any]) -> set[str]:
    """Root components a child of `tf` may fall back to in the clone walk (the root is every path's last ancestor):
    blocks deeper than `tf` when the space lets depth grow, the position embedding when it lets image size change."""
    if root is None:
        return set()
    comps = root.component_map()
    deepest = max(ranges.get("num_layers", (tf.num_layers,)))
    out = {comps[f"block.{i}"].id for i in range(tf.num_layers, deepest) if f"block.{i}" in comps}
    if "ds_image_size" in ranges:
        out.add(comps["pos_embed"].id)
    return out


def admit_parents(costs: Mapping[str, set[str]], sizes: Mapping[str, int], cap: int | None, *,
                  required: Iterable[str] = (), first: Iterable[str] = ()) -> list[str]:
    """Parents whose downloads together fit `cap`: `required`, then `first`, then smallest added bytes first.

    Raises `ByteCapError` (nothing downloaded) when a required parent or, without one, every parent is too big.
    """
    def total(ids: set[str]) -> int:
        return sum(sizes[i] for i in ids)

    if cap is None:
        return list(costs)
    chosen: list[str] = []
    have: set[str] = set()
    for name in required:
        if total(have | costs[name]) > cap:
            raise ByteCapError(cap, total(costs[name]), name, " for the task's own published path")
        chosen.append(name)
        have |= costs[name]
    for name in first:
        if name in costs and name not in chosen and total(have | costs[name]) <= cap:
            chosen.append(name)
            have |= costs[name]
    left = sorted(n for n in costs if n not in chosen)
    while left:
        name = min(left, key=lambda n: (total(costs[n] - have), n))
        if total(have | costs[name]) > cap:
            break
        chosen.append(name)
        have |= costs[name]
        left.remove(name)
    if not chosen:
        smallest = min(costs, key=lambda n: (total(costs[n]), n))
        raise ByteCapError(cap, total(costs[smallest]), smallest, " for any parent")
    return chosen


class LazyComponents:
    """The run's component reader: fetch one component from the pinned repo when a child first needs it.

    Every file is verified against its id (`HubStore`); the bytes fetched are counted against `cap`.
    """

    def __init__(self, store: HubStore, refs: Mapping[str, ComponentRef], cap: int | None, on_fetch=None):
        self.store, self.refs, self.cap, self.on_fetch = store, dict(refs), cap, on_fetch
        self.fetched: list[str] = []
        self.bytes = 0
        self.seconds = 0.0  # wall time spent fetching and verifying
        self._lock = threading.Lock()

    def __call__(self, cid: str) -> dict[str, np.ndarray]:
        with self._lock:
            ref = self.refs.get(cid)
            if ref is None:
                raise Mu2hubError(f"component {cid} is named by no task of {self.store.repo_id}@{self.store.commit[:8]}")
            new = cid not in self.fetched
            if new and self.cap is not None and self.bytes + ref.bytes > self.cap:
                raise ByteCapError(self.cap, self.bytes + ref.bytes, f"{ref.slot} {cid[:12]}",
                                   f" to fetch one more component ({human_bytes(self.bytes)} fetched so far)")
            t0 = time.perf_counter()
            tensors = self.store.read_components([ref], desc=f"{ref.slot} {cid[:8]}")[cid][1]
            self.seconds += time.perf_counter() - t0
            if new:
                self.fetched.append(cid)
                self.bytes += ref.bytes
                if self.on_fetch is not None:
                    self.on_fetch(self.bytes)
            return tensors


@dataclass
class PublishedSystem:
    """A system at one commit, as JSON only: what `add_task` plans with before downloading any component."""

    store: HubStore
    config: SystemConfig
    files: dict[str, TaskFile]
    root: TaskFile | None

    @classmethod
    def open(cls, repo_id: str, **kwargs: Any) -> "PublishedSystem":
        store = HubStore.open(repo_id, **kwargs)
        return cls(store, store.read_config(), {t: store.read_task(t) for t in store.list_tasks()}, store.read_root())

    def __post_init__(self) -> None:
        from ..publishing.publish import stream_order

        self.order = stream_order(self.files) if self.files else []
        self.pid_of = {t: f"hub-{i:04d}" for i, t in enumerate(self.order)}
        # Without root.json the first full-depth path (stream order) stands in as the clone walk's last ancestor.
        full = [t for t in self.order if self.files[t].num_layers == self.config.root_num_layers]
        self.stand_in = self.root or (self.files[(full or self.order)[0]] if self.order else None)
        if self.stand_in is None:
            raise ContributionError(f"{self.store.repo_id} has neither tasks nor a root.json: nothing to build on")
        self.refs = {c.id: c for tf in [*self.files.values(), self.stand_in] for c in tf.components}
        self.sizes = {cid: r.bytes for cid, r in self.refs.items()}

    @property
    def repo_id(self) -> str:
        return self.store.repo_id

    def check_name(self, task: str, data: TaskData, revisit: bool) -> None:
        if task in self.files and not revisit:
            m = self.files[task].metrics
            raise TaskExistsError(self.repo_id, task, f" (test accuracy {m.get('test_accuracy', float('nan')):.4f}, "
                                                      f"score {m.get('score', float('nan')):.4f})")
        if revisit and task not in self.files:
            raise TaskNotFoundError(task, list(self.files), self.repo_id)
        if revisit and list(self.files[task].labels) != list(data.labels):
            raise ValueError(f"revisit of {task!r}: the data's labels {data.labels} differ from the task's "
                             f"{self.files[task].labels}")

    def costs(self, ranges: Mapping[str, Any]) -> dict[str, set[str]]:
        """Candidate parent -> the component ids its children may download (its path and root fallbacks)."""
        out = {t: {c.id for c in self.files[t].components} | _fallback_ids(self.files[t], self.stand_in, ranges)
               for t in self.order}
        if self.root is not None:
            out["root"] = {c.id for c in self.root.components}
        return out

    def materialise(self, run: RunDir, defaults: Mapping[str, Any]) -> None:
        """Config, the root (or stand-in) and every published best path as the run's records and task files."""
        run.system.write_config(self.config)
        run.write_path(_record(ROOT_ID, self.stand_in, ROOT, None, defaults))
        for t in self.order:
            run.write_path(_record(self.pid_of[t], self.files[t], t, ROOT_ID, defaults))
            run.system.write_task(replace(self.files[t], lineage={**self.files[t].lineage, "path_id": self.pid_of[t]}))


def run_config(system: PublishedSystem, task: str, space_name: str, settings: Mapping[str, Any], budget: int,
                seed: int) -> dict[str, Any]:
    """The evolution config: the system's dims and root, its recipe's hparams (root.json's, else a path's)."""
    config, space_defaults = system.config, get_defaults(space_name)
    recipe = system.root.hparams if system.root is not None else system.files[system.order[0]].hparams if system.order else {}
    defaults = {k: v for k, v in {**space_defaults, **recipe}.items() if k in space_defaults}
    defaults.update({"num_layers": config.root_num_layers, "ds_image_size": config.root_image_size, "num_classes": 1,
                     **dict(settings.get("hparams") or {})})
    cpg = max(1, min(int(settings["children_per_generation"]), budget))
    d = config.dims
    return {"name": f"add-task {task}", "seed": seed, "tasks": [task], "task_kwargs": {}, "num_task_iters": 1,
            "root": {"hidden_size": d.hidden_size, "num_heads": d.num_heads, "mlp_dim": d.mlp_dim,
                     "patch_size": d.patch_size, "num_layers": config.root_num_layers,
                     "image_size": config.root_image_size, "init": "random", "layer_norm_eps": d.layer_norm_eps,
                     "activation": d.activation},
            # the root's components come from the system; whether it was pretrained is what its root.json says
            "root_pretrained": bool(system.root is not None
                                    and system.root.lineage.get("init", "random") not in ("random", None)),
            "space": space_name, "hparams": defaults,
            "scorer": {"base": 1.0, "num_params": None, "root_counts": False, **dict(settings.get("scorer") or {})},
            "generations": math.ceil(budget / cpg), "children_per_generation": cpg,
            "batch_size": settings["batch_size"], "num_validations": settings["num_validations"],
            "train_examples_between_validations_max": settings["train_examples_between_validations_max"],
            "parallelism": "child_per_device", "dtype": None}
