"""A training run's state on disk: everything needed to resume after `kill -9`, written atomically.

```
<workdir>/run_config.json       the config the run was started with (a resume with another config is refused)
<workdir>/system/               the published layout: config.json, components/, tasks/<task>.json (best paths)
<workdir>/paths/<id>.json       every retained path (immutable once written): parents for the clone walk
<workdir>/traces/<ab>/<id>.safetensors   a component's momentum trace, inherited by its clones
<workdir>/agents/<agent>.json   an agent's position (task iteration, generation), RNG, samplers, population, layout
<workdir>/history/<agent>/<loop>-<generation>.jsonl   one line per trained child, one file per generation
```
Every file is written whole (temp file + rename), never appended to: a generation's history file appears with
the generation's state, so a generation killed and redone is recorded once. Components are content-addressed,
so concurrent agents never write different bytes to one name; an agent writes only its own state and history;
a task file is replaced only by a path scoring at least as well (compare-and-swap), under a file lock when
several agents share the directory (`concurrent=True`) — one agent needs no lock at all.

In a multi-host job only process 0 writes (`writer=True`). The others run the same loop on a `writer=False`
view: what they would write stays in memory where they read it back (paths, components, traces), the rest is
dropped, and they never read a file another process wrote during the job.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..constants import component_filename
from ..errors import FormatError, Mu2hubError
from ..format.system import (ComponentRef, SystemConfig, TaskFile, component_bytes, component_id, dump_json, file_has_id,
                      load_json, num_params, parse_component)
from ..hub.store import LocalStore
from ..utils.atomic import atomic_write
from . import storage
from .scorer import ScorerConfig, accounted_params, sharing

ROOT_ID = "root"


class RunConfigMismatchError(Mu2hubError, ValueError):
    """`--resume` (or a second agent) pointed at a run directory made with another config."""


@dataclass
class PathRecord:
    """One retained path: slot -> component (id, params, bytes), hparams, metrics, lineage."""

    id: str
    task: str
    parent: str | None
    hparams: dict[str, Any]
    components: dict[str, dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The score at training time; what the loop compares is rescored under the current sharing."""
        return float(self.metrics.get("score", float("-inf")))

    def ids(self) -> dict[str, str]:
        return {slot: c["id"] for slot, c in self.components.items()}

    def sized(self) -> list[tuple[str, int]]:
        """(component id, parameters) per slot: what the score's parameter accounting needs."""
        return [(c["id"], int(c["params"])) for c in self.components.values()]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PathRecord":
        return cls(**d)


def _safe_id(path_id: str) -> str:
    if not path_id.replace("-", "").replace("_", "").isalnum():
        raise FormatError(f"invalid path id {path_id!r}")
    return path_id


class RunDir:
    def __init__(self, workdir: str | os.PathLike, *,
                 component_reader: Callable[[str], dict[str, np.ndarray]] | None = None,
                 writer: bool = True, concurrent: bool = False):
        self.root = Path(workdir)
        self.system = LocalStore(self.root / "system")
        # Lazy mode (`mu2hub.add_task`): components this run does not store locally come from this reader
        # (e.g. a Hub repo at a pinned commit, fetched and verified only when a sampled child needs them).
        self.component_reader = component_reader
        self.writer, self.concurrent = writer, concurrent
        self._pending: dict[str, bytes] = {}  # writer=False: what this process would have written, by relative path
        self._config: dict[str, Any] | None = None
        self._scorer: ScorerConfig | None = None

    # -- bytes ----------------------------------------------------------------------------------
    def _put(self, rel: str, data: bytes) -> None:
        if self.writer:
            atomic_write(self.root / rel, data)
        else:
            self._pending[rel] = data

    def _get(self, rel: str) -> bytes:
        return self._pending[rel] if rel in self._pending else (self.root / rel).read_bytes()

    def _has(self, rel: str) -> bool:
        return rel in self._pending or (self.root / rel).is_file()

    def forget(self, keep_components: Iterable[str]) -> None:
        """writer=False: drop held components (and traces) other than `keep_components` — no live path uses them."""
        keep = set(keep_components)
        for rel in list(self._pending):
            if rel.startswith(("system/components/", "traces/")) and Path(rel).stem not in keep:
                del self._pending[rel]

    # -- config ---------------------------------------------------------------------------------
    def init_config(self, config: dict[str, Any], *, resume: bool) -> None:
        """Write the run config once; afterwards every start must bring the same config."""
        config = json.loads(json.dumps(config))
        self._config = config
        f = self.root / "run_config.json"
        if not self.writer:
            return
        if f.exists():
            old = load_json(f.read_bytes(), str(f))
            if old != config:
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise RunConfigMismatchError(f"{self.root} was made with another config (differs in: {', '.join(diff)}); "
                                             "use a new --workdir or the run's own config")
            if not resume and (self.root / "agents").exists():
                raise RunConfigMismatchError(f"{self.root} already holds a run: pass --resume to continue it")
        else:
            atomic_write(f, dump_json(config))

    def config(self) -> dict[str, Any]:
        if self._config is None:
            f = self.root / "run_config.json"
            self._config = load_json(f.read_bytes(), str(f))
        return self._config

    # -- paths ------------------------------------------------------------------------------------
    def write_path(self, rec: PathRecord) -> None:
        self._put(f"paths/{_safe_id(rec.id)}.json", dump_json(asdict(rec)))

    def read_path(self, path_id: str) -> PathRecord:
        rel = f"paths/{_safe_id(path_id)}.json"
        return PathRecord.from_json(load_json(self._get(rel), str(self.root / rel)))

    def ancestors(self, path_id: str, live: Iterable[str] | None = None) -> list[PathRecord]:
        """[path, parent, grandparent, …, root]; with `live`, only the live ones after the path itself.

        Skipping retired ancestors is the reference's re-pointing of a parent to its nearest live ancestor when
        paths are garbage-collected: a retired path's components are gone there, so the clone walk never sees them.
        """
        keep = None if live is None else set(live)
        out = []
        cur: str | None = path_id
        while cur is not None:
            rec = self.read_path(cur)
            if not out or keep is None or rec.id in keep:
                out.append(rec)
            cur = rec.parent
        return out

    # -- components and their momentum traces ----------------------------------------------------
    def add_component(self, tensors: Mapping[str, np.ndarray], kind: str, slot: str | None = None) -> ComponentRef:
        """Store a component under its content id (a no-op if those bytes are there) and return a reference to it."""
        data = component_bytes({k: np.asarray(v) for k, v in tensors.items()}, kind)
        cid = component_id(data)
        rel = f"system/{component_filename(cid)}"
        if not self.writer or not file_has_id(self.root / rel, cid):  # a resumed run's damaged file is rewritten
            self._put(rel, data)
        return ComponentRef(slot or kind, cid, num_params(tensors), len(data))

    def has_component(self, cid: str) -> bool:
        return self._has(f"system/{component_filename(cid)}")

    def read_component(self, cid: str) -> dict[str, np.ndarray]:
        rel = f"system/{component_filename(cid)}"
        if self.component_reader is not None and not self._has(rel):
            return self.component_reader(cid)
        return parse_component(self._get(rel), expected_id=cid, filename=str(self.root / rel))[1]

    def _trace_rel(self, cid: str) -> str:
        return "traces/" + component_filename(cid).split("/", 1)[1]

    def write_trace(self, cid: str, trace: dict[str, np.ndarray]) -> None:
        if not self.writer or not self._has(self._trace_rel(cid)):
            self._put(self._trace_rel(cid), component_bytes(trace, "trace"))

    def read_trace(self, cid: str) -> dict[str, np.ndarray] | None:
        rel = self._trace_rel(cid)
        return parse_component(self._get(rel), filename=str(self.root / rel))[1] if self._has(rel) else None

    # -- the system's own files (process 0 only: no other process reads them back) ------------------
    def write_system(self, config: SystemConfig, root: TaskFile) -> None:
        if self.writer:
            self.system.write_config(config)
            self.system.write_root(root)

    # -- agent state and history ------------------------------------------------------------------
    def read_agent(self, agent: str) -> dict[str, Any] | None:
        f = self.root / "agents" / f"{_safe_id(agent)}.json"
        return load_json(f.read_bytes(), str(f)) if f.exists() else None

    def write_agent(self, agent: str, state: dict[str, Any]) -> None:
        if self.writer:
            atomic_write(self.root / "agents" / f"{_safe_id(agent)}.json", dump_json(state))

    def write_generation(self, agent: str, loop: int, generation: int, rows: list[dict[str, Any]]) -> None:
        """A generation's children, one file written whole: redoing a killed generation replaces it."""
        if self.writer:
            data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
            atomic_write(self.root / "history" / _safe_id(agent) / f"{loop:05d}-{generation:05d}.jsonl", data)

    def history(self) -> list[dict[str, Any]]:
        """Every trained child of every agent, oldest first."""
        rows = [json.loads(line) for f in sorted(self.root.glob("history/*/*.jsonl")) for line in f.read_text().splitlines()]
        return sorted(rows, key=lambda r: r["time"])

    # -- scores under the current sharing, and the compare-and-swap of best paths ----------------------
    def scorer(self) -> ScorerConfig:
        """The run config's scorer; `num_params` None normalises by the root's parameters."""
        if self._scorer is None:
            root = self.read_path(ROOT_ID)
            self._scorer = ScorerConfig.from_config(self.config().get("scorer", {}),
                                                    sum(c["params"] for c in root.components.values()))
        return self._scorer

    def sharing(self, best: Mapping[str, TaskFile], *, exclude: str) -> dict[str, list[str]]:
        """Component id -> the tasks (and `ROOT`) whose best paths use it, leaving out the task `exclude`."""
        root = self.read_path(ROOT_ID)
        return sharing({t: [c.id for c in tf.components] for t, tf in best.items() if t != exclude},
                       root=[c["id"] for c in root.components.values()])

    def score_now(self, task_file: TaskFile, users: Mapping[str, Iterable[str]]) -> tuple[float, float]:
        """(score, accounted parameters) of a published path under the sharing `users`."""
        from .flops import forward_flops

        scorer = self.scorer()
        flops = forward_flops(task_file.structure(self.system.read_config().dims)) if scorer.flops is not None else None
        if "validation_accuracy" not in task_file.metrics:  # a file from outside mu2hub: its score is all there is
            return float(task_file.metrics.get("score", float("-inf"))), float("nan")
        comps = [(c.id, c.params) for c in task_file.components]
        quality = float(task_file.metrics["validation_accuracy"])
        accounted = accounted_params(comps, users, task_file.task, root_counts=scorer.root_counts)
        return scorer.score(quality, accounted, flops), accounted

    def best_tasks(self) -> dict[str, TaskFile]:
        return {t: self.system.read_task(t) for t in self.system.list_tasks()}

    def publish_if_better(self, tf: TaskFile) -> bool:
        """Replace `tasks/<task>.json` only if the new path scores at least as well as the one there.

        Both are scored now, under the sharing of the best paths published at this moment (the reference's scorer
        recomputes a score on every call): the old path's components may have come to be shared since it was
        trained, which raised its score. The file written carries the score and accounting of this moment.
        """
        with self._task_lock(tf.task):
            best = self.best_tasks()
            users = self.sharing(best, exclude=tf.task)
            score, accounted = self.score_now(tf, users)
            old = best.get(tf.task)
            if old is not None and score < self.score_now(old, users)[0]:
                return False
            if self.writer:
                self.system.write_task(replace(tf, metrics={**tf.metrics, "score": score, "accounted_params": accounted}))
            return True

    def _task_lock(self, task: str) -> contextlib.AbstractContextManager:
        """One agent takes no lock (nothing else writes task files); concurrent agents an exclusive one."""
        if not self.concurrent:
            return contextlib.nullcontext()
        return storage.exclusive(self.root / "locks" / f"{task.replace('/', '~')}.lock")

