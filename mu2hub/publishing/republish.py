"""Republish a reference state (µ2Net's, µ4Net's) as a mu2hub system: one component in memory at a time, resumable.

`republish_reference(state, out_dir)` writes the published layout into a folder:
1. Plan every chosen task from checkpoint headers only (`reference_format.plan_path`): slots, shapes, labels — a
   state that cannot be republished fails here, before anything is written.
2. For each task, for each slot: decode the component from its checkpoint, convert it, write it content-addressed,
   drop it. A component shared by many tasks is decoded once; `.cache/mu2hub/republish.json` in the folder records
   each checkpoint key's component, so a run killed at any point resumes where it stopped (written components are
   not decoded again, finished tasks are skipped).
3. Record the task's probe with a forward pass that also reads one component at a time (from the written files,
   verified against their ids), then write the task file — last, so a task file only ever names components that
   exist. Peak memory is about one component (read buffer plus its device copy) plus the interpreter, not the path
   and not the system (`bench/republish.py`).

`republish(state, to)` then publishes the folder with the exporter (`publish.export`: only what the target lacks;
card, figures; every probe re-checked on the written files). The task files carry the reference's input pipeline
(no antialias, dSprites' ×255) and label names, both from the task table (`data.catalog`),, and the system the reference's tanh GELU.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..data import catalog
from ..data.pp import apply_pp_spec_numpy, pp_spec
from ..errors import FormatError, ShapeMismatchError, TaskNotFoundError
from ..format.system import (
    ComponentRef,
    Dims,
    Structure,
    SystemConfig,
    TaskFile,
    check_component_id,
    check_task_name,
    file_has_id,
    read_component_file,
)
from ..model import build_module, classify, embed, expected_shapes, slot_kwargs
from ..inference.probe import make_probe
from ..convert.reference_format import (
    PathPlan,
    ReferencePath,
    ReferenceState,
    component_name,
    convert_component,
    plan_path,
    read_reference_state,
    reference_dims,
)
from ..hub.store import LocalStore
from ..utils.atomic import atomic_write
from ..utils.progress import byte_bar

JOURNAL = ".cache/mu2hub/republish.json"  # inside the output folder, as huggingface_hub keeps local_dir metadata
_INT_HPARAMS = ("num_layers", "num_classes", "adapter_dim", "ds_image_size")  # 3.0 after a NaN in the column


@dataclass
class RepublishResult:
    """What a republish wrote: task files, and how much was decoded now vs found from an interrupted run."""

    out_dir: Path
    tasks: dict[str, TaskFile] = field(default_factory=dict)
    decoded: int = 0  # components read from the reference checkpoint(s) by this run
    reused: int = 0  # components an earlier run had already written
    up_to_date: list[str] = field(default_factory=list)  # tasks an earlier run had already finished
    placeholders: list[str] = field(default_factory=list)  # tasks whose label names are class_0 … class_{K-1}
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"republished {len(self.tasks)} task(s) into {self.out_dir}: {self.decoded} components decoded, "
                 f"{self.reused} already written" + (f", {len(self.up_to_date)} task(s) already done" if self.up_to_date else "")]
        if self.placeholders:
            lines.append(f"placeholder labels (pass labels= / --labels): {', '.join(self.placeholders)}")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


# ---------------------------------------------------------------------------------------------------
# The journal: checkpoint key -> written component
# ---------------------------------------------------------------------------------------------------


def _source_id(state: ReferenceState) -> dict[str, Any]:
    """What identifies the state read: each checkpoint's path, size and modification time."""
    out = {}
    for ckpt in {id(c): c for c in state.checkpoints.values()}.values():
        st = ckpt.path.stat()
        out[str(ckpt.path.resolve())] = [st.st_size, st.st_mtime_ns]
    return dict(sorted(out.items()))


class _Journal:
    """`{checkpoint key: ComponentRef fields}` for one source state, rewritten atomically after every component."""

    def __init__(self, root: Path, source: dict[str, Any]):
        self.file, self.source = root / JOURNAL, source
        self.entries: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return  # absent or unreadable: start over (content-addressed writes make that safe)
        if isinstance(data, dict) and data.get("source") == source and isinstance(data.get("components"), dict):
            self.entries = data["components"]

    def get(self, key: str, store: LocalStore) -> ComponentRef | None:
        e = self.entries.get(key)
        try:
            ref = ComponentRef(e["slot"], check_component_id(e["id"]), int(e["params"]), int(e["bytes"])) \
                if isinstance(e, dict) else None
        except (KeyError, TypeError, ValueError):  # FormatError is a ValueError: a damaged entry is decoded again
            return None
        f = store.root / ref.filename if ref else None
        return ref if f is not None and file_has_id(f, ref.id) and f.stat().st_size == ref.bytes else None

    def put(self, key: str, ref: ComponentRef) -> None:
        self.entries[key] = {"slot": ref.slot, "id": ref.id, "params": ref.params, "bytes": ref.bytes}
        atomic_write(self.file, json.dumps({"source": self.source, "components": self.entries}, indent=1).encode())


# ---------------------------------------------------------------------------------------------------
# A forward pass that holds one component at a time
# ---------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("kind", "dims", "kwargs"))
def _apply_module(kind: str, dims: Dims, kwargs: tuple[tuple[str, int], ...], tensors: Any, x: jax.Array) -> jax.Array:
    module = build_module(kind, dims, tensors, **dict(kwargs))
    return module(x) if kind == "adapter" else module(x, attention="xla", fuse_qkv=False)


_embed = jax.jit(embed, static_argnames=("structure", "dtype"))
_classify = jax.jit(classify, static_argnames=("structure", "dtype"))


class StreamedPath:
    """Just what `probe.make_probe` asks of a `TaskModel` — `task_file`, `preprocess`, `logits` — with a forward
    that reads, verifies and runs the path's components one by one from a folder instead of holding the path."""

    def __init__(self, store: LocalStore, dims: Dims, task_file: TaskFile):
        self.store, self.dims, self.task_file = store, dims, task_file

    def preprocess(self, images: Any) -> np.ndarray:
        return apply_pp_spec_numpy(images, self.task_file.preprocessing)

    def _load(self, ref: ComponentRef) -> dict[str, np.ndarray]:
        kind, tensors = read_component_file(self.store.root / ref.filename, expected_id=ref.id, expected_bytes=ref.bytes)
        if kind != ref.kind:
            raise ShapeMismatchError(f"{ref.slot} names component {ref.id} of kind {kind!r}", path=self.task_file.filename)
        return tensors

    def logits(self, x: Any) -> np.ndarray:
        s: Structure = self.task_file.structure(self.dims)
        refs = self.task_file.component_map()
        x = _embed(s, {slot: self._load(refs[slot]) for slot in ("patch_embed", "cls", "pos_embed")}, jnp.asarray(x))
        for slot in s.slots()[3:-2]:
            kind = slot.split(".")[0]
            x = _apply_module(kind, self.dims, tuple(sorted(slot_kwargs(s, slot).items())), self._load(refs[slot]), x)
            # Wait for each block: dispatch is asynchronous, and queued calls would hold every block's copy at once.
            x.block_until_ready()
        return np.asarray(_classify(s, {slot: self._load(refs[slot]) for slot in ("norm", "head")}, x))


# ---------------------------------------------------------------------------------------------------
# Republishing
# ---------------------------------------------------------------------------------------------------


def _json_safe(v: Any) -> Any:
    """JSON has no NaN/inf (pandas' empty cells): they become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple, Mapping)):
        return {str(k): _json_safe(x) for k, x in v.items()} if isinstance(v, Mapping) else [_json_safe(x) for x in v]
    return v


def _labels(task: str, n: int, given: Mapping[str, Sequence[str]] | None) -> tuple[list[str], str]:
    if given is not None and task in given:
        names = [str(x) for x in given[task]]
        if len(names) != n or len(set(names)) != n or not all(names):
            raise FormatError(f"labels for {task!r}: {len(names)} names ({len(set(names))} distinct, non-empty) "
                              f"for a {n}-class head")
        return names, "given"
    return _table_labels(task, n) or ([f"class_{i}" for i in range(n)], "placeholder")


def _table_labels(task: str, n: int) -> tuple[list[str], str] | None:
    """(class names, where they come from) when the task table names them for a head of `n` classes."""
    rec = catalog.lookup(task)
    known = rec.label_names if rec else None
    return (list(known[0]), known[1]) if known and len(known[0]) == n else None


def _preprocessing(task: str, image_size: int) -> dict[str, Any]:
    """The reference's eval preprocessing: `tf.image.resize` (no antialias), the task's pixel scale."""
    rec = catalog.lookup(task)
    return pp_spec(image_size, antialias=False, pixel_scale=rec.pixel_scale if rec else 1)


def _created(state: ReferenceState, plan: PathPlan, users: Mapping[str, set[str]]) -> set[str]:
    """Checkpoint keys this path created: µ4Net keys name their agent; µ2Net does not record it, so a component
    counts as created when no other published path (or the root) uses it."""
    if state.layout == "mu4net":
        return {k for k in plan.keys.values() if k.split(":")[1] == plan.path.agent}
    return {k for k in plan.keys.values() if users[k] == {plan.path.task}}


def _task_file(state: ReferenceState, plan: PathPlan, refs: list[ComponentRef], names: list[str], source: str,
               created: set[str]) -> TaskFile:
    path, s = plan.path, plan.structure
    hparams = {**_json_safe(path.hparams), "adapter_layers": list(s.adapter_layers)}
    hparams.update({k: int(v) for k, v in hparams.items() if k in _INT_HPARAMS and isinstance(v, float) and v == int(v)})
    by_slot = {r.slot: r for r in refs}
    created_ids = list(dict.fromkeys(by_slot[slot].id for slot, key in plan.keys.items() if key in created))
    m = path.metrics
    return TaskFile(
        task=path.task, image_size=s.image_size, num_layers=s.num_layers, components=refs, labels=names,
        adapter_layers=s.adapter_layers, adapter_dim=s.adapter_dim, preprocessing=_preprocessing(path.task, s.image_size),
        hparams=hparams,
        metrics=_json_safe({"validation_accuracy": m.get("quality"), "test_accuracy": m.get("test_quality"),
                            "score": path.score, "accounted_params": path.accounted_params,
                            "reference": {k: v for k, v in m.items() if k not in ("quality", "test_quality")}}),
        lineage={"path_id": path.full_id, "parent": path.parent, "parent_task": path.parent_task, "created": created_ids,
                 "reference": {"layout": state.layout, "state": state.state_dir.name,
                               "checkpoints": sorted({state.source(k) for k in plan.keys.values()}),
                               "components": dict(plan.keys), "labels": source}},
        sizes={"activated_params": sum(r.params for r in refs), "bytes": sum({r.id: r.bytes for r in refs}.values()),
               "new_params": sum({r.id: r.params for r in refs if r.id in created_ids}.values())},
    )


def republish_reference(state_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                        tasks: Sequence[str] | None = None, labels: Mapping[str, Sequence[str]] | None = None,
                        agent_class: str | None = None, name: str = "", description: str = "",
                        progress: bool = True) -> RepublishResult:
    """Republish a reference state's tasks (each task's best path) as a mu2hub system in the folder `out_dir`.

    Args:
        state_dir: a µ2Net `state_{loop}_{gen}` or experiment folder, or a µ4Net system state folder.
        out_dir: written as a `LocalStore`; running again on the same state resumes (see the module docstring).
        tasks: the tasks to publish (default: every task of the state but its root).
        labels: `{task: class names}`, for tasks whose names the stream's registry does not define
            (`data.catalog`); without either a task gets `class_0 … class_{K-1}` and
            `lineage.reference.labels == "placeholder"`.
        agent_class: µ4Net only: the single-path agent class (see `read_reference_state`).
        name, description: free text for `config.json`.
        progress: show a progress bar over the bytes to decode.

    Returns:
        `RepublishResult`: the task files written, components decoded now / reused, placeholder tasks, notes.

    Raises:
        FormatError / ShapeMismatchError: the state cannot be read or does not form paths (nothing is written);
            labels of the wrong length; `out_dir` holds a system of other dimensions.
        TaskNotFoundError: a requested task is not in the state.
    """
    state = read_reference_state(state_dir, agent_class=agent_class)
    dims, available = reference_dims(state), state.tasks()
    chosen = _chosen_tasks(state, tasks, available)
    best = {t: state.best_path(t) for t in available}
    plans = {t: plan_path(state, best[t], dims) for t in chosen}  # every shape checked before anything is written
    named = {t: _labels(t, p.structure.num_classes, labels) for t, p in plans.items()}
    root = state.root or (best[chosen[0]] if chosen else None)
    if root is None:
        raise FormatError("no paths", path=str(state.state_dir))
    store = _open_store(out_dir, _system_config(state, dims, root, name, description))
    users = _users(state, best)
    journal = _Journal(store.root, _source_id(state))
    result = RepublishResult(store.root, notes=[f"{agent}: not republished ({why})" for agent, why in state.skipped.items()])
    todo = {k for p in plans.values() for k in p.keys.values() if journal.get(k, store) is None}
    done: dict[str, ComponentRef] = {}  # checkpoint key -> its component, for this run

    def component(plan: PathPlan, slot: str, key: str) -> ComponentRef:
        if key not in done:
            ref = journal.get(key, store)
            if ref is None:
                ref = _write_component(state, store, plan.structure, slot, key)
                journal.put(key, ref)
                result.decoded += 1
                bar.update(state.nbytes(key))
            else:
                result.reused += 1
            done[key] = ref
        return replace(done[key], slot=slot)

    with byte_bar(sum(state.nbytes(k) for k in todo), "Republishing", disable=not progress) as bar:
        for task in chosen:
            plan, (names, source) = plans[task], named[task]
            bar.set_description(f"Republishing {task}")
            refs = [component(plan, slot, key) for slot, key in plan.keys.items()]
            tf = _task_file(state, plan, refs, names, source, _created(state, plan, users))
            if source == "placeholder":
                result.placeholders.append(task)
            previous = _existing(store, task)
            if previous is not None and previous.probe and replace(previous, probe=None).to_json() == tf.to_json():
                result.tasks[task] = previous
                result.up_to_date.append(task)
                continue
            bar.set_description(f"Probing {task}")
            tf.probe = make_probe(StreamedPath(store, dims, tf))
            store.write_task(tf)
            result.tasks[task] = tf
    return result


def _chosen_tasks(state: ReferenceState, tasks: Sequence[str] | None, available: list[str]) -> list[str]:
    """The tasks to publish (default: every task of the state, by path id), each name checked before any write (task
    names become file names)."""
    chosen = sorted(available, key=lambda t: state.best_path(t).id) if tasks is None else list(dict.fromkeys(tasks))
    for t in chosen:
        if t not in available:
            raise TaskNotFoundError(t, available, str(state.state_dir))
        check_task_name(t, where=state.best_path(t).where)
    return chosen


def _system_config(state: ReferenceState, dims: Dims, root: ReferencePath, name: str, description: str) -> SystemConfig:
    """`config.json`: the state's dimensions and its root's size."""
    hp = root.hparams  # config.json needs only the root's size: a root head that does not fit must not block it
    if hp.get("ds_image_size") is not None and hp.get("num_layers") is not None:
        root_size = (int(hp["ds_image_size"]), int(hp["num_layers"]))
    else:
        root_plan = plan_path(state, root, dims)
        root_size = (root_plan.structure.image_size, root_plan.structure.num_layers)
    label = "µ2Net" if state.layout == "mu2net" else "µ4Net"
    shards = f"{len(state.sources)} checkpoint(s)" if len(state.sources) > 1 else state.sources[0]
    return SystemConfig(dims, *root_size, name, description or f"{label} {state.state_dir.name} ({shards}), republished")


def _open_store(out_dir: str | os.PathLike, config: SystemConfig) -> LocalStore:
    """The output folder with `config` written; one holding a system of other dimensions is refused."""
    store = LocalStore(out_dir)
    if (store.root / "config.json").is_file():
        existing = store.read_config()
        if existing.dims != config.dims:
            raise FormatError(f"holds a system of other dimensions ({existing.dims}); republish into an empty folder",
                              path=str(store.root))
    store.write_config(config)
    return store


def _users(state: ReferenceState, best: Mapping[str, ReferencePath]) -> dict[str, set[str]]:
    """Checkpoint key -> the tasks whose best path (or the root) uses it."""
    users: dict[str, set[str]] = {}
    for p in [*best.values(), *([state.root] if state.root else [])]:
        for key in p.keys:
            users.setdefault(key, set()).add(p.task)
    return users


def _write_component(state: ReferenceState, store: LocalStore, structure: Structure, slot: str, key: str) -> ComponentRef:
    """Decode one checkpoint entry, convert it to the slot's tensors, check their shapes, write it; then drop it."""
    converted, tensors = convert_component(component_name(key), state.read(key), structure.dims.num_heads)
    kind = slot.split(".")[0]
    want = expected_shapes(kind, structure.dims, **slot_kwargs(structure, slot))
    if converted.split(".")[0] != kind or {n: tuple(t.shape) for n, t in tensors.items()} != want:
        raise FormatError(f"{key!r} does not hold the {slot} its header promised (changed while being read?)",
                          path=str(state.checkpoints[key].path))
    return store.write_component(tensors, kind, slot)


def _existing(store: LocalStore, task: str) -> TaskFile | None:
    try:
        return store.read_task(task)
    except (TaskNotFoundError, FormatError):
        return None


# ---------------------------------------------------------------------------------------------------
# To the Hub (or a folder)
# ---------------------------------------------------------------------------------------------------


def read_labels_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """A JSON file `{task: [class names]}` (`mu2hub republish --labels`)."""
    from ..format.system import load_json

    p = Path(path)
    try:
        data = load_json(p.read_bytes(), str(p))
    except OSError as e:
        raise FormatError(f"cannot read: {e}", path=str(p)) from e
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                             for v in data.values()):
        raise FormatError("must be a JSON object {task: [class name, ...]}", path=str(p))
    return data


def default_workdir(to: str) -> Path:
    """Where `republish` stages a Hub target's files: under HF_HOME, one folder per repo, so a rerun resumes."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "mu2hub" / "republish" / re.sub(r"[^A-Za-z0-9_.\-]+", "--", to)


def republish(state_dir: str | os.PathLike, to: str | os.PathLike, *, tasks: Sequence[str] | None = None,
              labels: Mapping[str, Sequence[str]] | None = None, agent_class: str | None = None,
              workdir: str | os.PathLike | None = None, token: str | bool | None = None, private: bool | None = None,
              progress: bool = True) -> tuple[RepublishResult, Any]:
    """`republish_reference` into a folder, then `publish.export` of that folder to `to` (a Hub repo or a folder).

    A local `to` is written in place; a Hub `to` is staged in `workdir` (default `default_workdir(to)`), which a
    rerun after an interruption resumes; the export then uploads only what the repo lacks.

    Returns:
        `(RepublishResult, publish.ExportResult)`.
    """
    from .publish import export
    from .targets import LocalTarget, open_target

    target = open_target(to, token=token, private=private)
    staging = Path(target.root if isinstance(target, LocalTarget) else workdir or default_workdir(str(to)))
    result = republish_reference(state_dir, staging, tasks=tasks, labels=labels, agent_class=agent_class,
                                 progress=progress)
    exported = export(staging, to, tasks=list(result.tasks), token=token, private=private)
    return result, exported
