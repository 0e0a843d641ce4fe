"""The µ2Net loop (spec §3.1–3.2): task iterations of generations of children, resumable at every generation.

One `Agent` evolves its task list against a run directory. Per task iteration: snapshot which components
are frozen (the root's and other tasks' best paths), seed the parent sampler, run G generations of N
children (sample parent → mutate → assemble → train → score → keep if improved), then keep the best
path, measure it on the test split and publish it if it scores at least as well as what is there.
State is saved after every generation; a restarted agent redoes at most the generation it was killed in.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

import jax
import numpy as np

from .. import model as vit
from ..data.pp import pp_spec
from ..data.registry import Split, TaskData, get_task
from ..api import resolve_dtype
from ..format import ComponentRef, Dims, Structure, SystemConfig, TaskFile
from ..prefix import PrefixCache
from ..roots import root_dims, root_from_config
from ..train import batch_key, data_parallel_mesh, evaluate, train_child, train_children
from .hparams import SearchSpace, allows_block_insertion, get_defaults, get_space, validate_defaults
from .mutation import (AncestorView, ComponentInfo, assemble, hparams_diff, make_mu_for, mutate_adapters, mutate_hparams,
                       sample_data_hparams)
from .parents import ParentSampler
from .run import PathRecord, RunDir
from .scorer import ROOT, ScoredPath, ScorerConfig, accounted_params, best_path

ROOT_ID = "root"


@dataclass
class Child:
    """A mutated child before training: where each slot comes from, and its parameters split for training."""

    hparams: dict[str, Any]
    mutations: dict[str, Any]
    structure: Structure
    sources: dict[str, tuple[str, str | None]]  # slot -> (share|clone|init|resize, source id)
    frozen: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    trainable: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    known: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {id, params, bytes} of ancestors' components


def shape_key(structure: Structure, slot: str) -> Hashable:
    """Equal exactly when two components can fill `slot` (image size, classes and adapter width vary)."""
    kind = slot.split(".")[0]
    return {"pos_embed": structure.grid, "head": structure.num_classes, "adapter": structure.adapter_dim}.get(kind, kind)


def structure_of(dims: Dims, hp: dict[str, Any]) -> Structure:
    return Structure(dims, int(hp["ds_image_size"]), int(hp["num_layers"]), int(hp["num_classes"]),
                     tuple(hp.get("adapter_layers", ())), int(hp.get("adapter_dim", 16)))


class Agent:
    """Evolves `tasks` (in order, `num_task_iters` times) against one run directory."""

    def __init__(self, run: RunDir, config: dict[str, Any], *, agent: str = "main", tasks: list[str] | None = None,
                 log: Callable[[str], None] = print, report: Callable[[dict[str, Any]], None] | None = None,
                 data: dict[str, TaskData] | None = None, seed_pool: Iterable[str] | None = None):
        """`data` supplies tasks' data directly (a user's dataset, not a registry name); `seed_pool`, when
        given, restricts the seed pool to these path ids (`mu2hub.add_task`: the parents that fit its byte cap)."""
        self.run, self.cfg, self.agent, self.log, self.report = run, config, agent, log, report
        self.tasks = list(tasks if tasks is not None else config["tasks"])
        self.space: SearchSpace = get_space(config["space"])
        self.defaults = {**get_defaults(config["space"]), **config.get("hparams", {})}
        validate_defaults(self.space, self.defaults)
        self.dims = root_dims(config["root"])  # a checkpoint's own dims; the config's stated ones must agree
        if self.defaults["ds_image_size"] % self.dims.patch_size:
            raise ValueError(f"image size {self.defaults['ds_image_size']} is not a multiple of the root's patch size "
                             f"{self.dims.patch_size}: the root cannot serve it")
        self._data: dict[str, TaskData] = dict(data or {})
        self.seed_pool = None if seed_pool is None else set(seed_pool)
        self._components: dict[str, dict[str, np.ndarray]] = {}
        self.mesh = data_parallel_mesh() if config.get("parallelism") == "data_parallel" else None
        self.dtype = resolve_dtype(config.get("dtype"))
        # Frozen-prefix activations, shared by every child of this process (docs/PERFORMANCE.md).
        self.prefix_cache = PrefixCache(
            max_bytes=config.get("prefix_cache_bytes", 1 << 30),
            directory=run.root / "prefix_cache" if config.get("prefix_cache_disk") else None,
        ) if config.get("prefix_cache", True) else None

    # ---------------------------------------------------------------------------------------------
    # Set-up and state
    # ---------------------------------------------------------------------------------------------
    def data(self, task: str) -> TaskData:
        if task not in self._data:
            # Images of varying sizes (a dataset source's) are decoded at the path's image size.
            kwargs = {"decode_size": self.defaults["ds_image_size"], **self.cfg.get("task_kwargs", {}).get(task, {})}
            data = get_task(task, **kwargs)
            cap = self.cfg.get("validation_examples_max")
            if cap and len(data.validation.labels) > cap:  # a fixed, cached validation subset, as the reference
                data = dataclasses.replace(data, validation=Split(data.validation.images[:cap], data.validation.labels[:cap]))
            self._data[task] = data
        return self._data[task]

    def ensure_root(self) -> PathRecord:
        """The root path: random init (or an imported checkpoint) written once, locked forever."""
        try:
            return self.run.read_path(ROOT_ID)
        except FileNotFoundError:
            pass
        r = self.cfg["root"]
        hp = {**self.defaults, "num_classes": 1, "num_layers": r["num_layers"], "ds_image_size": r["image_size"]}
        structure = structure_of(self.dims, hp)
        if r.get("init", "random") == "random":
            params = vit.init_path(structure, jax.random.key(self.cfg["seed"]))
            lineage = {"init": "random"}
        else:  # timm / big_vision / transformers, at the configured size and depth (mu2hub.roots)
            structure, params, lineage = root_from_config(r)
        comps = {s: self._write(params[s], s) for s in structure.slots()}
        self.run.system.write_config(SystemConfig(self.dims, structure.image_size, structure.num_layers, name=self.cfg.get("name", "")))
        refs = [ComponentRef(s, c["id"], c["params"], c["bytes"]) for s, c in comps.items()]
        self.run.system.write_root(TaskFile(
            task="root", image_size=structure.image_size, num_layers=structure.num_layers, components=refs,
            labels=["root"], preprocessing=pp_spec(structure.image_size), hparams=_jsonable(hp), lineage=lineage))
        rec = PathRecord(ROOT_ID, ROOT, None, hp, comps, {"score": 0.0})
        self.run.write_path(rec)
        return rec

    def _write(self, tensors: dict[str, Any], slot: str) -> dict[str, Any]:
        ref = self.run.system.write_component({k: np.asarray(v) for k, v in tensors.items()}, slot.split(".")[0], slot)
        return {"id": ref.id, "params": ref.params, "bytes": ref.bytes}

    def _component(self, cid: str) -> dict[str, np.ndarray]:
        if cid not in self._components:
            if len(self._components) > 512:
                self._components.clear()
            self._components[cid] = self.run.read_component(cid)
        return self._components[cid]

    def _fresh_state(self) -> dict[str, Any]:
        return {"agent": self.agent, "tasks": self.tasks, "loop": 0, "generation": 0, "counter": 0,
                "rng": np.random.default_rng([self.cfg["seed"], zlib.crc32(self.agent.encode())]).bit_generator.state,
                "samplers": {}, "population": [], "context": None}

    # ---------------------------------------------------------------------------------------------
    # The loop
    # ---------------------------------------------------------------------------------------------
    def check(self, state: dict[str, Any]) -> None:
        """Fail before any work: every task's data loads, and every stored file this agent will build on verifies."""
        for task in self.tasks:
            self.data(task)  # unknown task -> the list of tasks; bad columns / one class -> ValueError
        ids = {c["id"] for c in self.run.read_path(ROOT_ID).components.values()}
        for pid in state["population"]:
            ids.update(c["id"] for c in self.run.read_path(pid).components.values())
        for tf in self.run.best_tasks().values():
            ids.update(c.id for c in tf.components)
        for cid in sorted(ids):
            if self.run.component_reader is not None and not self.run.system.has_component(cid):
                continue  # lazy mode: fetched (and verified against its id) only if a child needs it
            self.run.read_component(cid)  # sha256 against the id: a damaged store stops the run here

    def run_all(self, progress=None) -> None:
        state = self.run.read_agent(self.agent) or self._fresh_state()
        if state["tasks"] != self.tasks:
            raise ValueError(f"agent {self.agent!r} of this run evolves {state['tasks']}, not {self.tasks}")
        root = self.ensure_root()
        self.check(state)
        num_loops = self.cfg.get("num_task_iters", 1) * len(self.tasks)
        while state["loop"] < num_loops:
            task = self.tasks[state["loop"] % len(self.tasks)]
            if state["context"] is None:
                self._start_task(state, task, root)
            while state["generation"] < self.cfg["generations"]:
                self._generation(state, task, root, progress)
                state["generation"] += 1
                self.run.write_agent(self.agent, state)
            self._end_task(state, task)
            state.update(loop=state["loop"] + 1, generation=0, population=[], context=None)
            self.run.write_agent(self.agent, state)

    def _start_task(self, state: dict[str, Any], task: str, root: PathRecord) -> None:
        """Freeze the root and other tasks' best paths (a snapshot: other agents may publish meanwhile)."""
        best = self.run.best_tasks()
        users: dict[str, list[str]] = {c["id"]: [ROOT] for c in root.components.values()}
        seeds = [ROOT_ID]
        for t, tf in best.items():
            if t == task:
                continue
            seeds.append(tf.lineage["path_id"])
            for c in tf.components:
                users.setdefault(c.id, [])
                if t not in users[c.id]:
                    users[c.id].append(t)
        if self.seed_pool is not None:
            seeds = [s for s in seeds if s in self.seed_pool]
        own = [best[task].lineage["path_id"]] if task in best else []
        rng = _rng(state)
        sampler = ParentSampler.from_json(state["samplers"][task], rng) if task in state["samplers"] else ParentSampler(rng)
        sampler.start_task(seeds)
        state["samplers"][task] = sampler.to_json()
        state["rng"] = rng.bit_generator.state
        state["population"] = own
        state["context"] = {"users": users, "locked": sorted(users)}
        self.run.write_agent(self.agent, state)
        self.log(f"[{self.agent}] task {task}: {len(seeds) - 1} other tasks' paths + root as seeds"
                 + (f", revisiting its best path {own[0]}" if own else ", new task"))

    def _generation(self, state: dict[str, Any], task: str, root: PathRecord, progress) -> None:
        rng = _rng(state)
        sampler = ParentSampler.from_json(state["samplers"][task], rng)
        pop = [self.run.read_path(p) for p in state["population"]]
        data = self.data(task)
        incumbent = next(p for p in pop if p.id == best_path([ScoredPath(p.id, p.score) for p in pop]).id) if pop else None
        ds = sample_data_hparams(self.defaults, incumbent.hparams if incumbent else None, self.space, rng, self.defaults["_mu_"])
        gen_seed = int(rng.integers(2**31 - 1))
        children = []
        for _ in range(self.cfg["children_per_generation"]):
            parent = self.run.read_path(sampler.sample([ScoredPath(p.id, p.score) for p in pop]))
            children.append((parent, self._make_child(parent, task, data, ds, state["context"], rng)))
        state["samplers"][task] = sampler.to_json()
        state["rng"] = rng.bit_generator.state

        devices = jax.local_devices()

        def train(i_pc):
            i, (parent, child) = i_pc
            with jax.default_device(devices[i % len(devices)]):  # one child per device, as the reference
                return self._train(parent, child, task, data, state["context"], gen_seed, progress)

        if self.cfg.get("batch_children"):
            groups: dict[Any, list[int]] = {}
            for i, (_, c) in enumerate(children):
                groups.setdefault(batch_key(c.structure, c.frozen, c.trainable, c.hparams), []).append(i)
            results: list = [None] * len(children)
            for idx in groups.values():
                done = ([train((idx[0], children[idx[0]]))] if len(idx) == 1 else
                        self._train_batched([children[i] for i in idx], task, data, state["context"], gen_seed))
                for i, r in zip(idx, done):
                    results[i] = r
        elif self.mesh is None and len(devices) > 1 and self.cfg.get("parallelism", "child_per_device") == "child_per_device":
            with ThreadPoolExecutor(len(devices)) as pool:
                results = list(pool.map(train, enumerate(children)))
        else:
            results = [train(ic) for ic in enumerate(children)]
        for (parent, child), result in zip(children, results):
            rec = self._keep(state, parent, child, result, task) if result.improved else None
            self.run.append_history({
                "agent": self.agent, "task": task, "loop": state["loop"], "generation": state["generation"],
                "parent": parent.id, "parent_task": parent.task, "kept": rec.id if rec else None,
                "quality": result.quality, "score": result.score, "mutations": _jsonable(child.mutations),
                "train_time": result.train_time, "compile_time": result.compile_time, "examples": result.examples_seen,
                "sources": {s: a for s, (a, _) in child.sources.items()}, "time": time.time(),
                "cached_blocks": result.cached_blocks, "prefix_time": result.prefix_time,
            })
            if rec is not None:
                state["population"].append(rec.id)
                pop.append(rec)
            if self.report is not None:
                best = max([p.score for p in pop] or [float("nan")])
                self.report({"task": task, "generation": state["generation"] + 1, "best": best, "child": result.score})

    def _make_child(self, parent: PathRecord, task: str, data: TaskData, ds: dict[str, Any], ctx: dict[str, Any],
                    rng: np.random.Generator) -> Child:
        hp, _ = mutate_hparams(parent.hparams, self.space, rng, num_classes=data.num_classes, data_hparams=ds)
        mu_for = make_mu_for(hp, self.space, rng)
        hp["adapter_layers"] = mutate_adapters(hp, rng, mu_for, enabled=self.space.mutate_adapters)
        structure = structure_of(self.dims, hp)
        locked = frozenset(ctx["locked"])
        views, known = [], {}
        for anc in self.run.ancestors(parent.id):
            s = structure_of(self.dims, anc.hparams)
            # Another task's paths are frozen for this one (the reference keeps only their locked best paths).
            frozen = locked if anc.task == task else locked | {c["id"] for c in anc.components.values()}
            views.append(AncestorView({slot: ComponentInfo(c["id"], shape_key(s, slot)) for slot, c in anc.components.items()}, frozen))
            known.update({c["id"]: c for c in anc.components.values()})
        decisions = assemble(structure.slots(), {s: shape_key(structure, s) for s in structure.slots()}, views,
                             mu_for=mu_for, force_clone=self.space.force_clone, rng=rng,
                             can_init=allows_block_insertion(self.space, self.cfg["root"]["num_layers"]))
        # The record of what changed, taken after adapters and per-action µ have been written back too.
        child = Child(hp, hparams_diff(parent.hparams, hp), structure, {s: (d.action, d.source) for s, d in decisions.items()},
                      known=known)
        keys = jax.random.split(jax.random.key(int(rng.integers(2**31 - 1))), len(decisions))
        for (slot, d), key in zip(decisions.items(), keys):
            if d.action == "share":
                child.frozen[slot] = self._component(d.source)
            elif d.action == "clone":
                child.trainable[slot] = self._component(d.source)
                trace = self.run.read_trace(d.source)
                if trace is not None:
                    child.traces[slot] = trace
            elif d.action == "init":
                child.trainable[slot] = vit.init_component(slot.split(".")[0], self.dims, key, **vit.slot_kwargs(structure, slot))
            else:  # resize: the root's position embedding, resampled to the child's grid, trainable
                root = self._component(self.run.read_path(ROOT_ID).components["pos_embed"]["id"])
                child.trainable[slot] = {"embedding": np.asarray(vit.resize_pos_embed(root["embedding"], structure.grid))}
        return child

    def scorer(self) -> ScorerConfig:
        s = self.cfg.get("scorer", {})
        num_params = s.get("num_params") or sum(c["params"] for c in self.run.read_path(ROOT_ID).components.values())
        return ScorerConfig(s.get("base", 1.0), num_params, s.get("flops"), root_counts=s.get("root_counts", False))

    def _accounted(self, child: Child, task: str, ctx: dict[str, Any]) -> float:
        comps = []
        for slot, (action, source) in child.sources.items():
            tensors = child.frozen.get(slot) if action == "share" else child.trainable[slot]
            n = sum(int(np.prod(np.shape(v))) for v in tensors.values())
            comps.append((source if action == "share" else f"new:{slot}", n))
        return accounted_params(comps, ctx["users"], task, root_counts=self.scorer().root_counts)

    def _child_args(self, parent: PathRecord, child: Child, task: str, ctx: dict[str, Any]) -> dict[str, Any]:
        """What training needs per child: its score function (size/FLOPs accounting), starting best score, ids."""
        scorer = self.scorer()
        accounted = self._accounted(child, task, ctx)
        flops = forward_flops(child.structure) if scorer.flops is not None else None
        child.hparams["_accounted_params"] = accounted
        return {"score_fn": lambda q: scorer.score(q, accounted, flops),
                "best_score": parent.score if parent.task == task else -math.inf,
                "component_ids": {slot: src for slot, (action, src) in child.sources.items() if action == "share"}}

    def _common_args(self, data: TaskData, seed: int) -> dict[str, Any]:
        cfg = self.cfg
        steps = math.ceil(min(len(data.train.labels), cfg["train_examples_between_validations_max"]) / cfg["batch_size"])
        return {"num_validations": cfg["num_validations"], "steps_per_validation": steps, "batch_size": cfg["batch_size"],
                "seed": seed, "dtype": self.dtype, "mesh": self.mesh, "attention": cfg.get("attention"),
                "prefix_cache": self.prefix_cache}

    def _train(self, parent: PathRecord, child: Child, task: str, data: TaskData, ctx: dict[str, Any], seed: int, progress):
        return train_child(child.structure, child.frozen, child.trainable, data, child.hparams,
                           inherited_traces=child.traces or None, progress=progress,
                           **self._child_args(parent, child, task, ctx), **self._common_args(data, seed))

    def _train_batched(self, pairs: list[tuple[PathRecord, Child]], task: str, data: TaskData, ctx: dict[str, Any],
                       seed: int) -> list:
        """Siblings with one `batch_key` in one vmapped, compiled step (`batch_children`: small models)."""
        per = [self._child_args(p, c, task, ctx) for p, c in pairs]
        return train_children(pairs[0][1].structure, [c.frozen for _, c in pairs], [c.trainable for _, c in pairs], data,
                              [c.hparams for _, c in pairs], inherited_traces=[c.traces or None for _, c in pairs],
                              best_scores=[a["best_score"] for a in per], score_fns=[a["score_fn"] for a in per],
                              component_ids=[a["component_ids"] for a in per], **self._common_args(data, seed))

    def _keep(self, state: dict[str, Any], parent: PathRecord, child: Child, result, task: str) -> PathRecord:
        """Write the improved child's new components (content-addressed), their traces, and its record."""
        comps, created = {}, []
        for slot in child.structure.slots():
            action, source = child.sources[slot]
            if action == "share":
                comps[slot] = child.known[source]
                continue
            ref, new = self.run.system.add_component(result.params[slot], slot.split(".")[0], slot)
            comps[slot] = {"id": ref.id, "params": ref.params, "bytes": ref.bytes}
            if new:
                created.append(ref.id)
            self.run.write_trace(ref.id, result.traces[slot])
        accounted = child.hparams.pop("_accounted_params")
        state["counter"] += 1
        rec = PathRecord(
            id=f"{self.agent}-{state['counter']:06d}", task=task, parent=parent.id, hparams=_jsonable(child.hparams),
            components=comps, created=created,
            metrics={"quality": result.quality, "score": result.score, "accounted_params": accounted,
                     "generation": parent.metrics.get("generation", 0) + 1, "mutations": _jsonable(child.mutations),
                     "train_time": result.train_time, "history": result.history},
        )
        self.run.write_path(rec)
        return rec

    def _end_task(self, state: dict[str, Any], task: str) -> None:
        """Keep the best path (ties → newest), measure it on test, publish it if it beats what is there."""
        pop = [self.run.read_path(p) for p in state["population"]]
        if not pop:
            self.log(f"[{self.agent}] task {task}: no child improved; nothing to publish")
            return
        best_id = best_path([ScoredPath(p.id, p.score) for p in pop]).id
        best = next(p for p in pop if p.id == best_id)
        data = self.data(task)
        structure = structure_of(self.dims, best.hparams)
        params = {slot: self._component(c["id"]) for slot, c in best.components.items()}
        test = evaluate(structure, params, data.test, self.cfg["batch_size"], dtype=self.dtype)
        tf = self.task_file(best, data, test)
        published = self.run.publish_if_better(tf)
        self.log(f"[{self.agent}] task {task}: best {best.id} val {best.metrics['quality']:.4f} test {test:.4f} "
                 f"(chance {data.chance:.3f}) score {best.score:.4f}" + ("" if published else " — a better path is already published"))

    def task_file(self, rec: PathRecord, data: TaskData, test_accuracy: float) -> TaskFile:
        structure = structure_of(self.dims, rec.hparams)
        refs = [ComponentRef(s, rec.components[s]["id"], rec.components[s]["params"], rec.components[s]["bytes"]) for s in structure.slots()]
        new_params = sum(c["params"] for c in rec.components.values() if c["id"] in rec.created)
        parent = self.run.read_path(rec.parent) if rec.parent else None
        return TaskFile(
            task=rec.task, image_size=structure.image_size, num_layers=structure.num_layers, components=refs,
            labels=list(data.labels), adapter_layers=structure.adapter_layers, adapter_dim=structure.adapter_dim,
            preprocessing=pp_spec(structure.image_size), hparams=rec.hparams,
            metrics={"validation_accuracy": rec.metrics["quality"], "test_accuracy": test_accuracy, "score": rec.score,
                     "accounted_params": rec.metrics["accounted_params"], "chance": data.chance,
                     "num_test_examples": int(len(data.test.labels))},
            lineage={"path_id": rec.id, "parent": rec.parent, "parent_task": parent.task if parent else None,
                     "created": rec.created},
            sizes={"activated_params": sum(r.params for r in refs), "bytes": sum({r.id: r.bytes for r in refs}.values()),
                   "new_params": new_params},
        )


@functools.lru_cache(maxsize=64)
def forward_flops(structure: Structure) -> float:
    """FLOPs of one forward pass at batch 1 from XLA's cost analysis on CPU (µ2Net+'s FLOPs factor, spec §3.5)."""
    params = {slot: {k: jax.ShapeDtypeStruct(shape, np.float32)
                     for k, shape in vit.expected_shapes(slot.split(".")[0], structure.dims, **vit.slot_kwargs(structure, slot)).items()}
              for slot in structure.slots()}
    images = jax.ShapeDtypeStruct((1, structure.image_size, structure.image_size, structure.dims.num_channels), np.float32)
    compiled = jax.jit(vit.apply_path, static_argnums=0).lower(structure, params, images).compile()
    analysis = compiled.cost_analysis()
    return float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"])


def _rng(state: dict[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    return rng


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


