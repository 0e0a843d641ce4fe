"""The µ2Net loop (spec §3.1–3.2): task iterations of generations of children, resumable at every generation.

One `Agent` evolves its task list against a run directory. Per task iteration: snapshot which components
are frozen (the root's and other tasks' best paths), seed the parent sampler, run G generations of N
children (sample parent → mutate → assemble → train → score → keep if improved), then keep the best
path, measure it on the test split and publish it if it scores at least as well as what is there.
State is saved after every generation; a restarted agent redoes at most the generation it was killed in.

Scores that are compared are those of the current sharing of components (the reference's scorer recomputes
them on every call): at the start of a task iteration the task's own paths are rescored under the sharing of
that moment, and the publish compare-and-swap rescores both paths (`RunDir.publish_if_better`).

Multi-host (`cluster`): every process runs this loop from the same state and so draws the same children; each
trains its share (`placement`), the trained children are exchanged, and only process 0 writes.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import zlib
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

from .. import model as vit
from ..inference.task import resolve_dtype
from ..data import catalog
from ..data.decode import training_decode_size
from ..data.pp import pp_spec
from ..data.registry import TaskData, get_task, list_data_tasks
from ..data.stream import StreamedTask, TrainingData, validation_subset
from ..errors import JobMismatchError
from ..format.system import ComponentRef, SystemConfig, TaskFile
from ..inference.prefix import PrefixCache
from ..convert.roots import root_dims, root_from_config
from ..train.child import (ChildResult, batch_key, data_parallel_mesh, evaluate_params, momentum_dtype, train_child,
                           train_children)
from . import baselines
from ..publishing import comparison
from .children import Child, shape_key, structure_of
from .cluster import Cluster
from .flops import forward_flops
from .hparams import SearchSpace, allows_block_insertion, get_defaults, get_rules, get_space, validate_defaults
from .mutation import AncestorView, ComponentInfo, assemble, hparams_diff, make_mu_for, mutate_adapters, mutate_hparams, \
    sample_data_hparams
from .parents import AgentParentSampler, ParentSampler
from .placement import layout, train_generation
from .run import ROOT_ID, PathRecord, RunConfigMismatchError, RunDir
from .scorer import ROOT, ScoredPath, ScorerConfig, accounted_params, best_path, sharing


class Agent:
    """Evolves `tasks` (in order, `num_task_iters` times) against one run directory."""

    def __init__(self, run: RunDir, config: dict[str, Any], *, agent: str = "main", tasks: list[str] | None = None,
                 log: Callable[[str], None] = print, report: Callable[[dict[str, Any]], None] | None = None,
                 data: dict[str, TaskData] | None = None, seed_pool: Iterable[str] | None = None,
                 cluster: Cluster | None = None):
        """`data` supplies tasks' data directly (a user's dataset, not a registry name); `seed_pool`, when
        given, restricts the seed pool to these path ids (`mu2hub.add_task`: the parents that fit its byte cap);
        `cluster` is the multi-host job this process belongs to (default: a one-process job)."""
        self.run, self.cfg, self.agent, self.log, self.report = run, config, agent, log, report
        self.cluster = cluster or Cluster()
        self.tasks = list(tasks if tasks is not None else config["tasks"])
        self.space: SearchSpace = get_space(config["space"])
        self.rules = get_rules(config["space"])
        if "population_max" in config:
            self.rules = dataclasses.replace(self.rules, population_max=config["population_max"])
        self.defaults = {**get_defaults(config["space"]), **config.get("hparams", {})}
        validate_defaults(self.space, self.defaults)
        self.dims = root_dims(config["root"])  # a checkpoint's own dims; the config's stated ones must agree
        if self.defaults["ds_image_size"] % self.dims.patch_size:
            raise ValueError(f"image size {self.defaults['ds_image_size']} is not a multiple of the root's patch size "
                             f"{self.dims.patch_size}: the root cannot serve it")
        comparison.parse(config.get("baselines"))  # a bad name is refused before anything trains
        if frozen_random_blocks(config):
            self.log(f"WARNING: the root is random-init with {config['root']['num_layers']} blocks, and children share "
                     "them frozen: nothing useful transfers. The reference never does this — start from a pretrained "
                     "root (root.init: 'mu2hub:<folder>', 'timm:…', 'big_vision:…', a transformers ViT; "
                     "training/pretrain_root.py makes one), or a root with 0 blocks whose layers are inserted "
                     "trainable (the Ti/16 '0 layers' configuration: num_layers 0, a space with num_layers > 0).")
        self._opened: dict[str, TrainingData] = dict(data or {})
        self._pixel_scales: dict[str, int] = {}  # catalog tasks whose raw pixels the reference scales (dSprites' 0/1)
        self._current: tuple[str, TrainingData] | None = None  # the one task whose data is decoded
        self.seed_pool = None if seed_pool is None else set(seed_pool)
        self._components: dict[str, dict[str, np.ndarray]] = {}
        self._components_lock = threading.Lock()
        self.parallelism = config.get("parallelism", "child_per_device")
        # data_parallel: one child at a time over every device of the job (all processes train it together)
        self.mesh = data_parallel_mesh(jax.devices()) if self.parallelism == "data_parallel" else None
        self.dtype = resolve_dtype(config.get("dtype"))
        momentum_dtype(config.get("momentum_dtype"))  # a bad value is refused before anything trains
        # Frozen-prefix activations, shared by every child of this process (docs/PERFORMANCE.md).
        self.prefix_cache = PrefixCache(
            max_bytes=config.get("prefix_cache_bytes", 1 << 30),
            directory=run.root / "prefix_cache" if config.get("prefix_cache_disk") and run.writer else None,
        ) if config.get("prefix_cache", True) else None

    # ---------------------------------------------------------------------------------------------
    # Set-up and state
    # ---------------------------------------------------------------------------------------------
    def open(self, task: str) -> TrainingData:
        """A task's data as it comes: generated / in-memory data, or a catalog task's views (nothing decoded)."""
        if task not in self._opened:
            # Images of varying sizes (a dataset source's) are decoded above every size a path can reach (data.decode).
            sizes = (self.defaults["ds_image_size"], *self.space.ranges.get("ds_image_size", ()))
            kwargs = {"decode_size": training_decode_size(sizes), **self.cfg.get("task_kwargs", {}).get(task, {})}
            if catalog.is_catalog_task(task) and task not in list_data_tasks():
                self._opened[task] = catalog.open_task(task, **kwargs)
                self._pixel_scales[task] = catalog.TASKS[task].pixel_scale  # the table's input conversion
            else:
                self._opened[task] = get_task(task, **kwargs)
        return self._opened[task]

    def data(self, task: str) -> TrainingData:
        """The task's training data: held in memory when small, else streamed from its files (docs/TRAINING.md,
        "Data for training"), with its fixed validation subset decoded once. Only one task's is held at a time."""
        if self._current is None or self._current[0] != task:
            self._current = None  # the previous task's decoded data goes before the next one's is read
            data = self.open(task)
            if isinstance(data, StreamedTask) and data.decoded_bytes() <= self.cfg.get("in_memory_max_bytes", 1 << 30):
                data = data.load()
            validation = validation_subset(data.validation, self.cfg.get("validation_examples_max"),
                                           seed=[self.cfg["seed"], zlib.crc32(task.encode())])
            self._current = (task, dataclasses.replace(data, validation=validation))
        return self._current[1]

    def ensure_root(self) -> PathRecord:
        """The root path: random init (or an imported checkpoint) written once, locked forever."""
        try:
            return self.run.read_path(ROOT_ID)
        except FileNotFoundError:
            return self._create_root()

    def _create_root(self) -> PathRecord:
        r = self.cfg["root"]
        hp = {**self.defaults, "num_classes": 1, "num_layers": r["num_layers"], "ds_image_size": r["image_size"]}
        structure = structure_of(self.dims, hp)
        labels = ["root"]
        if r.get("init", "random") == "random":
            params = vit.init_path(structure, jax.random.key(self.cfg["seed"]))
            lineage = {"init": "random"}
        else:  # timm / big_vision / transformers, at the configured size and depth (mu2hub.convert.roots)
            structure, params, lineage = root_from_config(r)
        comps = {s: self._write(params[s], s) for s in structure.slots()}
        refs = [ComponentRef(s, c["id"], c["params"], c["bytes"]) for s, c in comps.items()]
        self.run.write_system(
            SystemConfig(self.dims, structure.image_size, structure.num_layers, name=self.cfg.get("name", "")),
            TaskFile(task="root", image_size=structure.image_size, num_layers=structure.num_layers, components=refs,
                     labels=list(labels), preprocessing=pp_spec(structure.image_size), hparams=_jsonable(hp),
                     lineage=lineage))
        rec = PathRecord(ROOT_ID, ROOT, None, hp, comps, {"score": 0.0})
        self.run.write_path(rec)
        return rec

    def _write(self, tensors: dict[str, Any], slot: str) -> dict[str, Any]:
        ref = self.run.add_component(tensors, slot.split(".")[0], slot)
        return {"id": ref.id, "params": ref.params, "bytes": ref.bytes}

    def _component(self, cid: str) -> dict[str, np.ndarray]:
        with self._components_lock:  # devices' threads load their children at once
            if cid not in self._components:
                if len(self._components) > 512:
                    self._components.clear()
                self._components[cid] = self.run.read_component(cid)
            return self._components[cid]

    def _fresh_state(self) -> dict[str, Any]:
        return {"agent": self.agent, "tasks": self.tasks, "loop": 0, "generation": 0, "counter": 0,
                "rng": np.random.default_rng([self.cfg["seed"], zlib.crc32(self.agent.encode())]).bit_generator.state,
                "samplers": {}, "population": [], "context": None, "layout": self.layout()}

    def layout(self) -> dict[str, Any]:
        return layout(self.cluster.process_count, jax.local_device_count(), self.parallelism)

    def _snapshot(self) -> dict[str, dict[str, Any]]:
        """Every task's best path as JSON: read by process 0 and handed to all (agents may publish meanwhile)."""
        return self.cluster.on_primary(lambda: {t: tf.to_json() for t, tf in self.run.best_tasks().items()},
                                       "reading the best paths")

    # ---------------------------------------------------------------------------------------------
    # The loop
    # ---------------------------------------------------------------------------------------------
    def check(self, state: dict[str, Any], best: Iterable[TaskFile] | None = None) -> None:
        """Fail before any work: every task's data loads, and every stored file this agent will build on verifies."""
        for task in self.tasks:
            self.open(task)  # unknown task -> the list of tasks; bad columns / one class / missing source -> an error
        ids = {c["id"] for c in self.run.read_path(ROOT_ID).components.values()}
        for pid in state["population"]:
            ids.update(c["id"] for c in self.run.read_path(pid).components.values())
        for tf in (self.run.best_tasks().values() if best is None else best):
            ids.update(c.id for c in tf.components)
        for cid in sorted(ids):
            if self.run.component_reader is not None and not self.run.has_component(cid):
                continue  # lazy mode: fetched (and verified against its id) only if a child needs it
            self.run.read_component(cid)  # sha256 against the id: a damaged store stops the run here

    def run_all(self, progress=None) -> None:
        start = self.cluster.on_primary(self._read_start, "reading the run's state")
        state = start["state"] or self._fresh_state()
        if state["tasks"] != self.tasks:
            raise ValueError(f"agent {self.agent!r} of this run evolves {state['tasks']}, not {self.tasks}")
        if state["context"] is not None and "scores" not in state["context"]:
            raise RunConfigMismatchError(
                f"{self.run.root / 'agents' / self.agent}.json was saved mid-task by an earlier mu2hub (before scores "
                "were recomputed under the current sharing): finish that task iteration with the version that "
                "started it, or start a new --workdir")
        if state.setdefault("layout", self.layout()) != self.layout():
            have, want = state["layout"], self.layout()
            raise JobMismatchError(
                f"{self.run.root / 'agents' / self.agent}.json was written by a job of {have['processes']} process(es) "
                f"× {have['devices_per_process']} device(s) ({have['parallelism']}); this one is {want['processes']} × "
                f"{want['devices_per_process']} ({want['parallelism']}): resume with that layout or use a new --workdir")
        # As process 0 found it: the others never read a file process 0 may be writing meanwhile.
        root = PathRecord.from_json(start["root"]) if start["root"] else self._create_root()
        best = [TaskFile.from_json(d, f"tasks/{t}.json") for t, d in self._snapshot().items()]
        self.cluster.all_ok(lambda: self.check(state, best), "loading the data and verifying the stored components")
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

    def _read_start(self) -> dict[str, Any]:
        try:
            root = self.run.read_path(ROOT_ID)
        except FileNotFoundError:
            root = None
        return {"state": self.run.read_agent(self.agent), "root": dataclasses.asdict(root) if root else None}

    def _start_task(self, state: dict[str, Any], task: str, root: PathRecord) -> None:
        """Freeze the root and other tasks' best paths (a snapshot: other agents may publish meanwhile), and rescore
        the task's own best path under the sharing of this moment."""
        best = {t: TaskFile.from_json(d, f"tasks/{t}.json") for t, d in self._snapshot().items()}
        others = {t: tf for t, tf in best.items() if t != task}
        users = sharing({t: [c.id for c in tf.components] for t, tf in others.items()},
                        root=[c["id"] for c in root.components.values()])
        live = [ROOT_ID] + [tf.lineage["path_id"] for tf in others.values()]
        seeds = live if self.seed_pool is None else [s for s in live if s in self.seed_pool]
        own = [best[task].lineage["path_id"]] if task in best else []
        rng = _rng(state)
        if self.rules.sampler == "task":
            sampler = ParentSampler.from_json(state["samplers"][task], rng) if task in state["samplers"] else ParentSampler(rng)
            sampler.start_task(seeds)
            state["samplers"][task] = sampler.to_json()
        else:
            state["samplers"].setdefault(task, AgentParentSampler(rng).to_json())
        state["rng"] = rng.bit_generator.state
        state["population"] = own
        state["context"] = {"users": users, "locked": sorted(users), "live": live, "seeds": seeds, "scores": {}}
        state["context"]["scores"] = {pid: self.path_score(self.run.read_path(pid), state["context"]) for pid in own}
        self.run.write_agent(self.agent, state)
        self.log(f"[{self.agent}] task {task}: {len(seeds) - 1} other tasks' paths + root as seeds"
                 + (f", revisiting its best path {own[0]}" if own else ", new task"))

    def _generation(self, state: dict[str, Any], task: str, root: PathRecord, progress) -> None:
        ctx = state["context"]
        rng = _rng(state)
        pop = [self.run.read_path(p) for p in state["population"]]
        scored = [ScoredPath(p.id, ctx["scores"][p.id]) for p in pop]
        data = self.data(task)
        incumbent = next(p for p in pop if p.id == self._best(scored).id) if pop else None
        ds = sample_data_hparams(self.defaults, incumbent.hparams if incumbent else None, self.space, rng, self.defaults["_mu_"])
        gen_seed = int(rng.integers(2**31 - 1))
        children = []
        for _ in range(self.cfg["children_per_generation"]):
            parent = self.run.read_path(self._sample(state, task, scored, rng))
            children.append((parent, self._make_child(parent, task, data, ds, ctx, rng, population=state["population"])))
        state["rng"] = rng.bit_generator.state
        results = self._train_all(children, task, data, ctx, gen_seed, progress,
                                  f"training generation {state['generation']} of {task}")
        rows = []
        for (parent, child), (result, devices) in zip(children, results):
            rec = self._keep(state, parent, child, result, task) if result.improved else None
            rows.append({
                "agent": self.agent, "task": task, "loop": state["loop"], "generation": state["generation"],
                "parent": parent.id, "parent_task": parent.task, "kept": rec.id if rec else None,
                "quality": result.quality, "score": result.score, "mutations": _jsonable(child.mutations),
                "train_time": result.train_time, "compile_time": result.compile_time, "examples": result.examples_seen,
                "sources": {s: a for s, (a, _) in child.sources.items()}, "time": time.time(), "devices": devices,
                "cached_blocks": result.cached_blocks, "prefix_time": result.prefix_time,
            })
            if rec is not None:
                state["population"].append(rec.id)
                ctx["scores"][rec.id] = result.score
            if self.report is not None:
                best = max([ctx["scores"][p] for p in state["population"]] or [float("nan")])
                self.report({"task": task, "generation": state["generation"] + 1, "best": best, "child": result.score})
        self._cap_population(state)
        self.run.write_generation(self.agent, state["loop"], state["generation"], rows)

    def _best(self, paths: Sequence[ScoredPath]) -> ScoredPath:
        return best_path(paths, oldest_on_tie=self.rules.oldest_on_tie)

    def _sample(self, state: dict[str, Any], task: str, own: list[ScoredPath], rng: np.random.Generator) -> str:
        """The next parent: µ2Net's sampler over own paths and the seed pool, or µ3Net's over every loaded path."""
        if self.rules.sampler == "task":
            sampler = ParentSampler.from_json(state["samplers"][task], rng)
            pid = sampler.sample(own)
        else:
            sampler = AgentParentSampler.from_json(state["samplers"][task], rng)
            pid = sampler.sample(own, state["context"]["seeds"] + [p.id for p in own])
        state["samplers"][task] = sampler.to_json()
        return pid

    def _cap_population(self, state: dict[str, Any]) -> None:
        """µ3Net/µ4Net: keep only the best `population_max` paths after each generation (spec §3.6)."""
        cap, pop, scores = self.rules.population_max, state["population"], state["context"]["scores"]
        if cap is None or len(pop) <= cap:
            return
        ranked = sorted(pop, key=lambda p: (scores[p], -pop.index(p) if self.rules.oldest_on_tie else pop.index(p)),
                        reverse=True)
        keep = set(ranked[:cap])
        state["population"] = [p for p in pop if p in keep]

    def _make_child(self, parent: PathRecord, task: str, data: TrainingData, ds: dict[str, Any], ctx: dict[str, Any],
                    rng: np.random.Generator, population: Sequence[str] = ()) -> Child:
        """Mutate `parent` into a child: every decision drawn from `rng` (identically on every process)."""
        hp, _ = mutate_hparams(parent.hparams, self.space, rng, num_classes=data.num_classes, data_hparams=ds)
        mu_for = make_mu_for(hp, self.space, rng)
        hp["adapter_layers"] = mutate_adapters(hp, rng, mu_for, enabled=self.space.mutate_adapters)
        structure = structure_of(self.dims, hp)
        locked = frozenset(ctx["locked"])
        views, known = [], {}
        # Only live ancestors: retired paths' components are garbage in the reference (its parents are re-pointed).
        for anc in self.run.ancestors(parent.id, live=[*ctx["live"], *population]):
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
                      known=known, init_seed=int(rng.integers(2**31 - 1)))
        child.accounted = self._accounted(child, task, ctx)
        return child

    def _load(self, child: Child) -> None:
        root_pos = lambda: self._component(self.run.read_path(ROOT_ID).components["pos_embed"]["id"])  # noqa: E731
        child.load(self._component, self.run.read_trace, root_pos)

    # ---------------------------------------------------------------------------------------------
    # Scores and training
    # ---------------------------------------------------------------------------------------------
    def scorer(self) -> ScorerConfig:
        return self.run.scorer()

    def path_score(self, rec: PathRecord, ctx: dict[str, Any]) -> float:
        """A retained path's score under the sharing of `ctx` (not the one it was trained under)."""
        scorer = self.scorer()
        flops = forward_flops(structure_of(self.dims, rec.hparams)) if scorer.flops is not None else None
        return scorer.path_score(float(rec.metrics["quality"]), rec.sized(), ctx["users"], rec.task, flops)

    def _accounted(self, child: Child, task: str, ctx: dict[str, Any]) -> float:
        comps = [(source if action == "share" else f"new:{slot}", child.slot_params(slot))
                 for slot, (action, source) in child.sources.items()]
        return accounted_params(comps, ctx["users"], task, root_counts=self.scorer().root_counts)

    def _child_args(self, parent: PathRecord, child: Child, task: str, ctx: dict[str, Any]) -> dict[str, Any]:
        """What training needs per child: its score function (size/FLOPs accounting), starting best score, ids."""
        scorer = self.scorer()
        flops = forward_flops(child.structure) if scorer.flops is not None else None
        return {"score_fn": lambda q: scorer.score(q, child.accounted, flops),
                "best_score": ctx["scores"][parent.id] if parent.task == task else -math.inf,
                "component_ids": {slot: src for slot, (action, src) in child.sources.items() if action == "share"}}

    def preprocessing(self, task: str, image_size: int) -> dict[str, Any]:
        """The eval preprocessing a path of `task` trains, is measured and is stored with (`tasks/<task>.json`):
        mu2hub's resize, with the task table's pixel scale for a catalog task (dSprites: 0/1 pixels x 255)."""
        return pp_spec(image_size, pixel_scale=self._pixel_scales.get(task, 1))

    def _common_args(self, data: TrainingData, seed: int, task: str) -> dict[str, Any]:
        cfg = self.cfg
        steps = math.ceil(min(len(data.train), cfg["train_examples_between_validations_max"]) / cfg["batch_size"])
        return {"num_validations": cfg["num_validations"], "steps_per_validation": steps, "batch_size": cfg["batch_size"],
                "seed": seed, "dtype": self.dtype, "mesh": self.mesh, "attention": cfg.get("attention"),
                "prefix_cache": self.prefix_cache, "variant": self.rules.schedule,
                "momentum": cfg.get("momentum_dtype"),
                "preprocessing": self.preprocessing(task, self.defaults["ds_image_size"])}  # its resize options

    def _train_all(self, pairs: list[tuple[PathRecord, Child]], task: str, data: TrainingData, ctx: dict[str, Any],
                   seed: int, progress, what: str) -> list[tuple[ChildResult, list[int]]]:
        """Every child of a generation trained where `placement` puts it; every process gets every result."""
        return train_generation(len(pairs), self.cluster, self.mesh,
                                lambda idxs: self._train_here(idxs, pairs, task, data, ctx, seed, progress), what)

    def _train_here(self, idxs: list[int], pairs: list[tuple[PathRecord, Child]], task: str, data: TrainingData,
                    ctx: dict[str, Any], seed: int, progress) -> list[ChildResult]:
        """These children one after another on the current device (or the job's mesh); with `batch_children`,
        siblings sharing a `batch_key` in one vmapped step."""
        for i in idxs:
            self._load(pairs[i][1])
        groups: dict[Any, list[int]] = {}
        for i in idxs:
            c = pairs[i][1]
            key = batch_key(c.structure, c.frozen, c.trainable, c.hparams) if self.cfg.get("batch_children") else i
            groups.setdefault(key, []).append(i)
        out: dict[int, ChildResult] = {}
        for group in groups.values():
            if len(group) == 1:
                parent, child = pairs[group[0]]
                out[group[0]] = train_child(child.structure, child.frozen, child.trainable, data, child.hparams,
                                            inherited_traces=child.traces or None, progress=progress,
                                            **self._child_args(parent, child, task, ctx), **self._common_args(data, seed, task))
            else:
                out.update(zip(group, self._train_batched([pairs[i] for i in group], task, data, ctx, seed, progress)))
            for i in group:
                pairs[i][1].unload()
        return [out[i] for i in idxs]

    def _train_batched(self, pairs: list[tuple[PathRecord, Child]], task: str, data: TrainingData, ctx: dict[str, Any],
                       seed: int, progress=None) -> list[ChildResult]:
        """Siblings with one `batch_key` in one vmapped, compiled step (`batch_children`: small models)."""
        per = [self._child_args(p, c, task, ctx) for p, c in pairs]
        return train_children(pairs[0][1].structure, [c.frozen for _, c in pairs], [c.trainable for _, c in pairs], data,
                              [c.hparams for _, c in pairs], inherited_traces=[c.traces or None for _, c in pairs],
                              best_scores=[a["best_score"] for a in per], score_fns=[a["score_fn"] for a in per],
                              component_ids=[a["component_ids"] for a in per], progress=progress,
                              **self._common_args(data, seed, task))

    def _keep(self, state: dict[str, Any], parent: PathRecord, child: Child, result: ChildResult, task: str) -> PathRecord:
        """Write the improved child's new components (content-addressed), their traces, and its record."""
        comps, created = {}, []
        for slot in child.structure.slots():
            action, source = child.sources[slot]
            if action == "share":
                comps[slot] = child.known[source]
                continue
            ref = self.run.add_component(result.params[slot], slot.split(".")[0], slot)
            comps[slot] = {"id": ref.id, "params": ref.params, "bytes": ref.bytes}
            if ref.id not in child.known and ref.id not in created:
                created.append(ref.id)
            if result.traces and slot in result.traces:  # no trace without momentum (opt_momentum=None)
                self.run.write_trace(ref.id, result.traces[slot])
        state["counter"] += 1
        rec = PathRecord(
            id=f"{self.agent}-{state['counter']:06d}", task=task, parent=parent.id, hparams=_jsonable(child.hparams),
            components=comps, created=created,
            metrics={"quality": result.quality, "score": result.score, "accounted_params": child.accounted,
                     "generation": parent.metrics.get("generation", 0) + 1, "mutations": _jsonable(child.mutations),
                     "train_time": result.train_time, "history": result.history},
        )
        self.run.write_path(rec)
        return rec

    def _end_task(self, state: dict[str, Any], task: str) -> None:
        """Keep the best path (ties → newest), measure it on test, publish it if it beats what is there."""
        ctx = state["context"]
        pop = [self.run.read_path(p) for p in state["population"]]
        if not pop:
            self.log(f"[{self.agent}] task {task}: no child improved; nothing to publish")
            return
        best_id = self._best([ScoredPath(p.id, ctx["scores"][p.id]) for p in pop]).id
        best = next(p for p in pop if p.id == best_id)
        data = self.data(task)
        structure = structure_of(self.dims, best.hparams)
        params = {slot: self._component(c["id"]) for slot, c in best.components.items()}

        def test_accuracy() -> float:
            return evaluate_params(structure, params, data.test, self.cfg["batch_size"], dtype=self.dtype, mesh=self.mesh,
                                   preprocessing=self.preprocessing(task, structure.image_size))

        # data_parallel: every process measures it together; else process 0 alone, on one of its devices
        test = test_accuracy() if self.mesh is not None else None

        def publish() -> dict[str, Any]:
            measured = test if test is not None else test_accuracy()
            return self._publish(best, data, measured, ctx["scores"][best_id], self.baseline_metrics(best, data, task))

        out = self.cluster.on_primary(publish, f"publishing {task}")
        self.log(f"[{self.agent}] task {task}: best {best.id} val {best.metrics['quality']:.4f} test {out['test']:.4f} "
                 f"(chance {data.chance:.3f}) score {ctx['scores'][best_id]:.4f}"
                 + ("" if out["published"] else " — a better path is already published"))
        if not self.run.writer:  # hold only what live paths use from now on
            live = {c["id"] for pid in [ROOT_ID, best.id, *ctx["live"]] for c in self.run.read_path(pid).components.values()}
            self.run.forget(live)

    def _publish(self, rec: PathRecord, data: TrainingData, test: float, score: float,
                 extra: dict[str, Any]) -> dict[str, Any]:
        return {"published": self.run.publish_if_better(self.task_file(rec, data, test, score, extra)), "test": test}

    # ---------------------------------------------------------------------------------------------
    # Baselines (`baselines`): the same ViT trained alone, and plain fine-tuning
    # ---------------------------------------------------------------------------------------------
    def baseline_metrics(self, best: PathRecord, data: TrainingData, task: str) -> dict[str, Any]:
        """The config's baselines for `task`'s winning path, as task-file metrics (empty when none are asked)."""
        names = comparison.parse(self.cfg.get("baselines"))
        if not names:
            return {}

        def parent_of(pid: str) -> tuple[str | None, str | None]:
            parent = self.run.read_path(pid).parent
            return parent, self.run.read_path(parent).task if parent else None

        budgets = baselines.search_budgets(self.run.history(), task, best.id, parent_of)
        start_id = self.finetune_start(best, task)
        start = self.run.read_path(start_id)
        start_name = "root" if start_id == ROOT_ID else start.task
        structure = structure_of(self.dims, best.hparams)
        results = []
        for name in names:
            kind, budget = name.split(":")
            if self.cluster.process_count > 1:
                results.append(baselines.BaselineResult(name, None, "not measured on a multi-host job"))
                continue
            seed = self.cfg["seed"] + 1
            params = (baselines.scratch_params(structure, seed) if kind == "scratch" else
                      baselines.finetune_params(structure, {s: self._component(c["id"]) for s, c in start.components.items()}, seed))
            results.append(baselines.train_baseline(
                name, structure, params, data, best.hparams, budgets.examples(budget), batch_size=self.cfg["batch_size"],
                num_validations=self.cfg["num_validations"], seed=self.cfg["seed"], dtype=self.dtype,
                variant=self.rules.schedule, momentum=self.cfg.get("momentum_dtype"),
                preprocessing=self.preprocessing(task, structure.image_size)))
        shown = ", ".join(f"{r.name} {r.test_accuracy:.4f}" if r.test_accuracy is not None else f"{r.name} n/a ({r.reason})"
                          for r in results)
        self.log(f"[{self.agent}] task {task}: baselines (test) {shown}; search {budgets.total:,} examples in "
                 f"{budgets.children} children, winning lineage {budgets.lineage:,}; fine-tuned from {start_name}")
        return baselines.metrics_of(results, budgets, start_name if any(n.startswith("finetune") for n in names) else None)

    def finetune_start(self, best: PathRecord, task: str) -> str:
        """The best pretrained starting point: the root when it is pretrained; else the earlier task the winning
        lineage started from, or the first other task published (the root itself when there is none)."""
        if root_is_pretrained(self.cfg):
            return ROOT_ID
        rec = best
        while rec.parent is not None and rec.task == task:
            rec = self.run.read_path(rec.parent)
        if rec.task != task and rec.id != ROOT_ID:
            return rec.id
        others = [tf for t, tf in self.run.best_tasks().items() if t != task]
        return others[0].lineage["path_id"] if others else ROOT_ID

    def _data_lineage(self, task: str) -> dict[str, str]:
        """`lineage.data` where the task's data names its source (a catalog task: `hf:<Hub id>`, `tfds:…`, `local:…`),
        so the model card lists the real dataset; registered and `hf:` tasks are named by the task itself."""
        spec = getattr(self._opened.get(task), "data", None)
        return {"data": spec} if spec else {}

    def task_file(self, rec: PathRecord, data: TrainingData, test_accuracy: float,
                  score: float | None = None, extra_metrics: dict[str, Any] | None = None) -> TaskFile:
        structure = structure_of(self.dims, rec.hparams)
        refs = [ComponentRef(s, rec.components[s]["id"], rec.components[s]["params"], rec.components[s]["bytes"]) for s in structure.slots()]
        new_params = sum(c["params"] for c in rec.components.values() if c["id"] in rec.created)
        parent = self.run.read_path(rec.parent) if rec.parent else None
        return TaskFile(
            task=rec.task, image_size=structure.image_size, num_layers=structure.num_layers, components=refs,
            labels=list(data.labels), adapter_layers=structure.adapter_layers, adapter_dim=structure.adapter_dim,
            preprocessing=self.preprocessing(rec.task, structure.image_size), hparams=rec.hparams,
            metrics={"validation_accuracy": rec.metrics["quality"], "test_accuracy": test_accuracy,
                     "score": rec.score if score is None else score,
                     "accounted_params": rec.metrics["accounted_params"], "chance": data.chance,
                     "num_test_examples": len(data.test), **(extra_metrics or {})},
            lineage={"path_id": rec.id, "parent": rec.parent, "parent_task": parent.task if parent else None,
                     "created": rec.created, **self._data_lineage(rec.task)},
            sizes={"activated_params": sum(r.params for r in refs), "bytes": sum({r.id: r.bytes for r in refs}.values()),
                   "new_params": new_params},
        )


def root_is_pretrained(config: dict[str, Any]) -> bool:
    """`root_pretrained` where a config states it (a published system's root), else whether `root.init` names a
    checkpoint."""
    return bool(config.get("root_pretrained", config["root"].get("init", "random") != "random"))


def frozen_random_blocks(config: dict[str, Any]) -> bool:
    """A random-init root with blocks that children share frozen (not the reference's 0-block, insert-trainable root)."""
    return not root_is_pretrained(config) and config["root"].get("num_layers", 0) > 0


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
