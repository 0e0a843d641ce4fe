"""Many tasks of one system in one object: shared components held once, one task or every task per batch.

The convention is PEFT's for adapters on one base model: the object holds several named tasks, `set_task(name)`
chooses the active one (`active_task`), `predict` answers with it (or with `task=`), and `predict_all` answers
every task at once — the demo Space's all-tasks mode, as API. Every task loads from the same store pinned to one
commit, and `mu2hub.inference.task` keeps one device copy per component id, so what the tasks share is in memory once
(`resident_bytes() == component_bytes()`).
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .task import TaskModel, check_top_k, load_task, predictions_from_logits
from ..constants import DEFAULT_TOP_K
from ..errors import ArgumentError, TaskNotFoundError
from ..format.system import TaskFile
from ..hub.metadata import summarize
from ..hub.store import Store


class MultiTaskModel:
    """Several tasks of one system, sharing their common components.

    Build it with `mu2hub.from_pretrained(repo, tasks=[...])` or `tasks="all"`. With `lazy=True` (the Space) a
    task's components are fetched when it is first used; otherwise every task loads up front.

    Attributes:
        files (`{task: TaskFile}`): every task's file, read up front (small JSON).
        repo_id (`str`), revision (`str` or `None`): where the tasks come from; the pinned commit.
    """

    def __init__(self, store: Store, files: dict[str, TaskFile], *, repo_id: str = "", revision: str | None = None,
                 dtype: Any = None, lazy: bool = False, device: Any = None):
        if not files:
            raise ArgumentError(f"{repo_id or store.name}: no tasks to load")
        self.store, self.files = store, dict(files)
        self.repo_id, self.revision, self.dtype = repo_id or store.name, revision, dtype
        self.device = device  # a jax.Device (api.resolve_device) or None: JAX's default
        self._models: dict[str, TaskModel] = {}
        self._lock = threading.Lock()
        self._active = next(iter(self.files))
        self._engine: Any = None
        if not lazy:
            for t in self.files:
                self[t]

    @classmethod
    def from_store(cls, store: Store, tasks: Sequence[str] | str, *, lazy: bool = False, **kwargs: Any) -> "MultiTaskModel":
        """`tasks="all"` (every task, in listing order) or a list of names, read from one pinned store."""
        if isinstance(tasks, str) and tasks != "all":
            raise ArgumentError(f"tasks={tasks!r}: pass a list of task names or 'all' (for one task use task=...)")
        names = store.list_tasks() if tasks == "all" else list(dict.fromkeys(tasks))
        return cls(store, {t: store.read_task(t) for t in names}, lazy=lazy, **kwargs)

    # -- which tasks --------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        return list(self.files)

    @property
    def active_task(self) -> str:
        """The task `predict` / `logits` answer when no `task=` is given (PEFT's `active_adapter`)."""
        return self._active

    def set_task(self, task: str) -> None:
        """Make `task` the active one (PEFT's `set_adapter`)."""
        self._check(task)
        self._active = task

    def _check(self, task: str) -> None:
        if task not in self.files:
            raise TaskNotFoundError(task, self.tasks, self.repo_id)

    def __getitem__(self, task: str) -> TaskModel:
        """The task's `TaskModel` (loaded on first use, once, even under concurrent requests)."""
        self._check(task)
        hit = self._models.get(task)
        if hit is not None:
            return hit
        with self._lock:
            if task not in self._models:
                try:
                    self._models[task] = load_task(self.store, task, dtype=self.dtype, repo_id=self.repo_id,
                                                   revision=self.revision, device=self.device,
                                                   subfolder=getattr(self.store, "subfolder", None))
                except TaskNotFoundError as e:  # removed from a local folder since it was opened
                    raise TaskNotFoundError(task, e.available, self.repo_id) from None
            return self._models[task]

    def __contains__(self, task: object) -> bool:
        return task in self.files

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def loaded(self) -> dict[str, TaskModel]:
        """The tasks loaded so far (a copy)."""
        return dict(self._models)

    # -- running ------------------------------------------------------------------------------------
    def logits(self, x: Any, *, task: str | None = None) -> np.ndarray:
        return self[task or self._active].logits(x)

    def predict(self, images: Any, *, task: str | None = None, top_k: int = DEFAULT_TOP_K) -> Any:
        """`TaskModel.predict` of `task` (default: the active task)."""
        return self[task or self._active].predict(images, top_k=top_k)

    def predict_all(self, images: Any, *, tasks: Iterable[str] | None = None, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        """Every task's answer for the same image(s): `{task: what TaskModel.predict returns}`.

        Images are preprocessed once per distinct preprocessing, and the tasks' paths run as one tree
        (`mu2hub.serving.engine`): what several tasks share (the embedding, the lower blocks) is computed once for
        all of them. Scores equal each task's `predict` within float tolerance (the split program rounds apart).
        """
        from ..serving.engine import Row, preprocessing_key

        names = list(tasks) if tasks is not None else self.tasks
        for t in names:
            self._check(t)
        check_top_k(top_k)
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
        prepared: dict[str, np.ndarray] = {}
        rows, params = [], {}
        for t in names:
            model = self[t]
            key = preprocessing_key(model.task_file)
            if key not in prepared:
                batch = model.preprocess(images)
                prepared[key] = batch if batch.ndim == 4 else batch[None]
            rows += [Row(t, image, i) for i, image in enumerate(prepared[key])]
            params.update({ref.id: model.params[ref.slot] for ref in model.components})
        logits = self.engine.run(rows, params)
        out, start = {}, 0
        for t in names:
            n = len(prepared[preprocessing_key(self.files[t])])
            preds = predictions_from_logits(np.stack(logits[start:start + n]), self.files[t].labels, top_k=top_k)
            out[t] = preds[0] if single else preds
            start += n
        return out

    @property
    def engine(self) -> Any:
        """The shared-prefix `mu2hub.serving.engine.Engine` `predict_all` runs on (its `stats` count the work)."""
        if self._engine is None:
            from ..serving.engine import Engine

            self._engine = Engine(self.store.read_config(), self.files, dtype=self.dtype)
        return self._engine

    def evaluate(self, data: Any, *, task: str | None = None, **kwargs: Any) -> Any:
        """`TaskModel.evaluate` of `task` (default: the active task)."""
        return self[task or self._active].evaluate(data, **kwargs)

    # -- memory ---------------------------------------------------------------------------------------
    def resident_bytes(self) -> int:
        """Bytes of the distinct device buffers behind every loaded task's parameters (shared ones once)."""
        seen: dict[Any, int] = {}
        for m in list(self._models.values()):
            for tensors in m.params.values():
                for arr in tensors.values():
                    try:
                        key = ("ptr", arr.unsafe_buffer_pointer())
                    except Exception:  # a backend without buffer pointers: the array object itself
                        key = ("id", id(arr))
                    seen[key] = int(arr.nbytes)
        return sum(seen.values())

    def component_bytes(self, tasks: Iterable[str] | None = None) -> int:
        """float32 bytes of the distinct components the tasks (default: all) use: what loading them should occupy."""
        params = {c.id: c.params for t in (self.files if tasks is None else tasks) for c in self.files[t].components}
        return 4 * sum(params.values())

    def summary(self) -> dict[str, Any]:
        """`mu2hub.hub.metadata.summarize` over these tasks."""
        return summarize(self.files)

    def __repr__(self) -> str:
        info = self.summary()
        return (f"MultiTaskModel(repo={self.repo_id!r}, tasks={len(self.files)}, active={self._active!r}, "
                f"components={info['components']}, params={info['params']:,}, loaded={len(self._models)})")
