"""A training run's state on disk: everything needed to resume after `kill -9`, written atomically.

```
<workdir>/run_config.json       the config the run was started with (a resume with another config is refused)
<workdir>/system/               the published layout: config.json, components/, tasks/<task>.json (best paths)
<workdir>/paths/<id>.json       every retained path (immutable once written): parents for the clone walk
<workdir>/traces/<ab>/<id>.safetensors   a component's momentum trace, inherited by its clones
<workdir>/agents/<agent>.json   an agent's position (task iteration, generation), RNG, samplers, population
<workdir>/history.jsonl         append-only: one line per trained child
```
Components are content-addressed, so concurrent agents never write different bytes to one name; an agent
writes only its own state file; a task file is replaced only under a lock and only by a path scoring at
least as well (compare-and-swap).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..constants import component_filename
from ..errors import FormatError, Mu2hubError
from ..format import TaskFile, component_bytes, dump_json, load_json, parse_component
from ..store import LocalStore, atomic_write


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
        return float(self.metrics.get("score", float("-inf")))

    def ids(self) -> dict[str, str]:
        return {slot: c["id"] for slot, c in self.components.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PathRecord":
        return cls(**d)


def _safe_id(path_id: str) -> str:
    if not path_id.replace("-", "").replace("_", "").isalnum():
        raise FormatError(f"invalid path id {path_id!r}")
    return path_id


class RunDir:
    def __init__(self, workdir: str | os.PathLike, *,
                 component_reader: Callable[[str], dict[str, np.ndarray]] | None = None):
        self.root = Path(workdir)
        self.system = LocalStore(self.root / "system")
        # Lazy mode (`mu2hub.add_task`): components this run does not store locally come from this reader
        # (e.g. a Hub repo at a pinned commit, fetched and verified only when a sampled child needs them).
        self.component_reader = component_reader

    # -- config -----------------------------------------------------------------------------------
    def init_config(self, config: dict[str, Any], *, resume: bool) -> None:
        """Write the run config once; afterwards every start must bring the same config."""
        f = self.root / "run_config.json"
        if f.exists():
            old = load_json(f.read_bytes(), str(f))
            if old != json.loads(json.dumps(config)):
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != json.loads(json.dumps(config.get(k))))
                raise RunConfigMismatchError(f"{self.root} was made with another config (differs in: {', '.join(diff)}); "
                                             "use a new --workdir or the run's own config")
            if not resume and (self.root / "agents").exists():
                raise RunConfigMismatchError(f"{self.root} already holds a run: pass --resume to continue it")
        else:
            atomic_write(f, dump_json(config))

    # -- paths ------------------------------------------------------------------------------------
    def write_path(self, rec: PathRecord) -> None:
        atomic_write(self.root / "paths" / f"{_safe_id(rec.id)}.json", dump_json(asdict(rec)))

    def read_path(self, path_id: str) -> PathRecord:
        f = self.root / "paths" / f"{_safe_id(path_id)}.json"
        return PathRecord.from_json(load_json(f.read_bytes(), str(f)))

    def ancestors(self, path_id: str) -> list[PathRecord]:
        """[path, parent, grandparent, …, root]."""
        out = []
        cur: str | None = path_id
        while cur is not None:
            rec = self.read_path(cur)
            out.append(rec)
            cur = rec.parent
        return out

    # -- components and their momentum traces ----------------------------------------------------
    def read_component(self, cid: str) -> dict[str, np.ndarray]:
        f = self.system.root / component_filename(cid)
        if self.component_reader is not None and not f.is_file():
            return self.component_reader(cid)
        return parse_component(f.read_bytes(), expected_id=cid, filename=str(f))[1]

    def write_trace(self, cid: str, trace: dict[str, np.ndarray]) -> None:
        f = self.root / "traces" / component_filename(cid).split("/", 1)[1]
        if not f.exists():
            atomic_write(f, component_bytes(trace, "trace"))

    def read_trace(self, cid: str) -> dict[str, np.ndarray] | None:
        f = self.root / "traces" / component_filename(cid).split("/", 1)[1]
        return parse_component(f.read_bytes(), filename=str(f))[1] if f.exists() else None

    # -- agent state --------------------------------------------------------------------------------
    def read_agent(self, agent: str) -> dict[str, Any] | None:
        f = self.root / "agents" / f"{_safe_id(agent)}.json"
        return load_json(f.read_bytes(), str(f)) if f.exists() else None

    def write_agent(self, agent: str, state: dict[str, Any]) -> None:
        atomic_write(self.root / "agents" / f"{_safe_id(agent)}.json", dump_json(state))

    def append_history(self, row: dict[str, Any]) -> None:
        """One JSON line per write (O_APPEND): concurrent agents interleave whole lines."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        fd = os.open(self.root / "history.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def history(self) -> list[dict[str, Any]]:
        f = self.root / "history.jsonl"
        if not f.exists():
            return []
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut by a kill: skip it, the generation is redone on resume
                continue
        return rows

    # -- best paths: compare-and-swap ----------------------------------------------------------------
    @contextlib.contextmanager
    def _task_lock(self, task: str) -> Iterator[None]:
        lock = self.root / "locks" / f"{task.replace('/', '~')}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def best_tasks(self) -> dict[str, TaskFile]:
        return {t: self.system.read_task(t) for t in self.system.list_tasks()}

    def publish_if_better(self, tf: TaskFile) -> bool:
        """Replace `tasks/<task>.json` only if the new path scores at least as well as the one there."""
        with self._task_lock(tf.task):
            try:
                old = self.system.read_task(tf.task)
            except KeyError:
                old = None
            if old is not None and tf.metrics["score"] < old.metrics.get("score", float("-inf")):
                return False
            self.system.write_task(tf)
            return True
