"""What the server does for a request, apart from HTTP: the tasks, their state, warm-up, and answering one image.

`Service` holds the system's task files, the engine, the component pool and the batcher. A task's components are
read on its first request (or at start for preloaded tasks); a task whose components cannot be read is reported
unavailable (with the reason) and retried after `RETRY_AFTER_S`, while the other tasks keep serving.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..inference.task import predictions_from_logits, preprocess_images
from ..errors import ArgumentError, Mu2hubError, TaskNotFoundError
from ..format.system import SystemConfig, TaskFile
from ..hub.store import Store
from .batcher import Batcher, TaskUnavailableError
from .engine import Engine, Row, path_stages
from .pool import ComponentPool

RETRY_AFTER_S = 30
FUNCTIONS = ("softmax", "sigmoid", "none")
_SHOWN = 200  # characters of a stranger's string (a task name in a URL) repeated in an answer


class RequestError(Exception):
    """A request the server refuses: HTTP `status`, a message, extra JSON fields and headers."""

    def __init__(self, status: int, message: str, *, extra: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None):
        self.status, self.message = status, message
        self.extra, self.headers = dict(extra or {}), dict(headers or {})
        super().__init__(message)


@dataclass
class TaskState:
    loaded: bool = False
    error: str | None = None
    failed_at: float = 0.0


@dataclass(frozen=True)
class Settings:
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    timeout_s: float = 30.0
    max_body_bytes: int = 10 * 2**20
    budget_bytes: int | None = None
    dtype: Any = None


class Service:
    """The served tasks of one system (`files`), read from `store`."""

    def __init__(self, store: Store, config: SystemConfig, files: Mapping[str, TaskFile], settings: Settings, *,
                 repo_id: str = "", revision: str | None = None):
        self.store, self.config, self.files, self.settings = store, config, dict(files), settings
        self.repo_id, self.revision = repo_id or store.name, revision
        self.engine = Engine(config, self.files, dtype=settings.dtype, max_batch_size=settings.max_batch_size)
        self.pool = ComponentPool(store, config, self.files, budget_bytes=settings.budget_bytes)
        self.states = {t: TaskState() for t in self.files}
        self.batcher: Batcher | None = None
        self.ready_s: float | None = None
        self.batch_observers: list[Any] = []
        self._locks: dict[str, asyncio.Lock] = {}

    # -- start ----------------------------------------------------------------------------------
    def start_batcher(self) -> None:
        """On the server's event loop, before the first request."""
        s = self.settings
        self.batcher = Batcher(self.engine, self.pool, max_batch_size=s.max_batch_size, max_wait_ms=s.max_wait_ms,
                               max_queue=s.max_queue, on_batch=self._observe_batch, on_failure=self._mark_failed)
        self.batcher.start()

    def _observe_batch(self, rows: int, seconds: float) -> None:
        for observe in self.batch_observers:
            observe(rows, seconds)

    def load(self, task: str) -> None:
        """Read and place the task's components now (blocking); a failure marks the task unavailable and raises."""
        try:
            self.pool.release(list(self.pool.acquire(task)))
        except Mu2hubError as e:
            self._mark_failed(TaskUnavailableError(task, e))
            raise TaskUnavailableError(task, e) from None
        self.states[task] = TaskState(loaded=True)

    def _mark_failed(self, e: TaskUnavailableError) -> None:
        self.states[e.task] = TaskState(loaded=False, error=str(e.cause), failed_at=time.monotonic())

    def warm_up(self, tasks: Sequence[str]) -> int:
        """Load `tasks` and compile every program their batches can need (each bucket size); the number of programs.

        One task per new (stage, sizes, image size) is run alone at each bucket size, so every call it makes is exactly
        that size; mixed batches later are padded to the same sizes and find their programs compiled.
        """
        covered: set[tuple] = set()
        reps = []
        for t in tasks:
            try:
                self.load(t)
            except TaskUnavailableError:
                continue
            need = {(s.kind, s.static, self.files[t].image_size) for s in path_stages(self.files[t])}  # + token shape
            if not need <= covered:
                reps.append(t)
                covered |= need
        for b in self.engine.buckets:
            for t in reps:
                tf = self.files[t]
                image = np.zeros((tf.image_size, tf.image_size, self.config.dims.num_channels), np.float32)
                held = self.pool.acquire(t)
                try:
                    self.engine.run([Row(t, image, ("warm-up", i)) for i in range(b)], held)
                finally:
                    self.pool.release(list(held))
        for t in tasks:  # the answer's softmax is a small program per class count
            if self.states[t].loaded:
                self.answer(t, np.zeros(self.files[t].num_classes, np.float32), 1, "softmax")
        return self.engine.compiled_programs

    # -- describing -----------------------------------------------------------------------------
    def task_list(self) -> list[dict[str, Any]]:
        """`GET /tasks`: name, labels, accuracy, activated parameters, image size, state."""
        out = []
        for t, tf in self.files.items():
            acc = tf.metrics.get("test_accuracy") if isinstance(tf.metrics, dict) else None
            state = self.states[t]
            out.append({"task": t, "labels": list(tf.labels), "accuracy": acc, "activated_params": tf.activated_params,
                        "image_size": tf.image_size, "loaded": state.loaded,
                        "available": state.error is None, **({"error": state.error} if state.error else {})})
        return out

    def unavailable(self) -> dict[str, str]:
        return {t: s.error for t, s in self.states.items() if s.error}

    # -- answering ------------------------------------------------------------------------------
    def check_task(self, task: str) -> None:
        if task not in self.files:
            shown = task[:_SHOWN]
            raise RequestError(404, str(TaskNotFoundError(shown, list(self.files), self.repo_id)),
                               extra={"tasks": list(self.files)})

    async def ensure_loaded(self, task: str) -> None:
        """Load the task on its first request (once, however many arrive together); 503 while it is unavailable."""
        state = self.states[task]
        if state.loaded:
            return
        if state.error and time.monotonic() - state.failed_at < RETRY_AFTER_S:
            raise RequestError(503, f"task {task!r} is unavailable: {state.error}",
                               headers={"Retry-After": str(RETRY_AFTER_S)})
        lock = self._locks.setdefault(task, asyncio.Lock())
        async with lock:
            if self.states[task].loaded:
                return
            try:
                await asyncio.to_thread(self.load, task)
            except TaskUnavailableError as e:
                raise RequestError(503, str(e), headers={"Retry-After": str(RETRY_AFTER_S)}) from None

    def parse(self, task: str, body: bytes, content_type: str) -> tuple[bytes, int, str]:
        """The Inference API's two request forms -> (image bytes, top_k, function_to_apply).

        Raw image bytes (what `InferenceClient.image_classification` sends without parameters), or JSON
        `{"inputs": <base64 image>, "parameters": {"top_k": k, "function_to_apply": f}}` (with parameters).
        """
        if not body:
            raise RequestError(400, "empty body: send the image bytes, or JSON {\"inputs\": <base64 image>, "
                                    "\"parameters\": {\"top_k\": k}}")
        labels = len(self.files[task].labels)
        if "json" not in content_type.lower() and not body.lstrip()[:1] == b"{":
            return body, min(5, labels), "softmax"
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError) as e:
            raise RequestError(400, f"body is not valid JSON: {e}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), str):
            raise RequestError(400, "JSON body must be an object with \"inputs\": a base64-encoded image")
        params = payload.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(400, "\"parameters\" must be an object")
        top_k = params.get("top_k", 5)
        if top_k is None:
            top_k = 5
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise RequestError(400, f"parameters.top_k must be a positive integer, got {json.dumps(top_k)[:_SHOWN]}")
        function = params.get("function_to_apply") or "softmax"
        if function not in FUNCTIONS:
            raise RequestError(400, f"parameters.function_to_apply must be one of {list(FUNCTIONS)}, got "
                                    f"{json.dumps(function)[:_SHOWN]}")
        data = payload["inputs"]
        if data.startswith("data:") and "," in data:
            data = data.split(",", 1)[1]
        try:
            image = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "\"inputs\" is not valid base64 (send the image's bytes base64-encoded)") from None
        return image, min(top_k, labels), function

    def prepare(self, task: str, image: bytes) -> np.ndarray:
        """Decode and preprocess one image for `task` (in a worker thread): [S, S, C] float32, or a 400."""
        from ..data.registry import open_image

        try:
            return preprocess_images(self.files[task], open_image(io.BytesIO(image), name="the request body"))[0]
        except (Mu2hubError, ValueError, OSError) as e:
            raise RequestError(400, f"not an image: {e}") from None

    def answer(self, task: str, logits: np.ndarray, top_k: int, function: str) -> list[dict[str, Any]]:
        """Top-k `{"label", "score"}` as the Inference API returns them (softmax: `TaskModel.predict`'s scores)."""
        labels = self.files[task].labels
        if function == "softmax":
            return predictions_from_logits(logits[None], labels, top_k=top_k)[0]
        scores = 1 / (1 + np.exp(-logits.astype(np.float64))) if function == "sigmoid" else logits.astype(np.float64)
        return [{"label": labels[i], "score": float(scores[i])} for i in np.argsort(-scores, kind="stable")[:top_k]]


def select_tasks(available: Sequence[str], tasks: str, repo_id: str) -> list[str]:
    """`--tasks all` or `a,b`: the tasks to serve, in the repo's order for `all`; an unknown name is named."""
    if tasks.strip() == "all":
        return list(available)
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise ArgumentError("--tasks: give 'all' or a comma-separated list of task names")
    for t in names:
        if t not in available:
            raise TaskNotFoundError(t, list(available), repo_id)
    return list(dict.fromkeys(names))
