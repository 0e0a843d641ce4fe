"""Micro-batching: concurrent requests wait at most `max_wait_ms` and run as one engine batch across tasks.

Requests are queued on the event loop; one worker thread runs the engine (the device is used by one batch at a
time, and the next batch forms while it runs). A batch is taken when `max_batch_size` rows wait or the oldest has
waited `max_wait_ms`. The queue is bounded (`max_queue`: beyond it `submit` refuses, the server answers 503), a row
whose request was abandoned (client gone, deadline passed) leaves the queue before it costs anything, and a task
whose components cannot be read fails its own rows only.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import Mu2hubError
from .engine import Engine, Row
from .pool import ComponentPool


class QueueFullError(Exception):
    """The queue holds `max_queue` rows already (the server answers 503 with Retry-After)."""


class TaskUnavailableError(Exception):
    """A task's components could not be read or placed; `cause` says why."""

    def __init__(self, task: str, cause: BaseException):
        self.task, self.cause = task, cause
        super().__init__(f"task {task!r} is unavailable: {cause}")


_ids = itertools.count()


@dataclass
class Pending:
    """One queued row and the future its request awaits."""

    task: str
    image: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    key: int = field(default_factory=lambda: next(_ids))


class Batcher:
    """Forms batches from queued rows and runs them on `engine` with components pinned from `pool`.

    Args:
        on_batch (*optional*): called with (rows, seconds) after each batch (metrics).
        on_failure (*optional*): called with a `TaskUnavailableError` when a task's components fail.
    """

    def __init__(self, engine: Engine, pool: ComponentPool, *, max_batch_size: int, max_wait_ms: float, max_queue: int,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_failure: Callable[[TaskUnavailableError], None] | None = None):
        self.engine, self.pool = engine, pool
        self.max_batch_size, self.max_wait, self.max_queue = max_batch_size, max_wait_ms / 1000.0, max_queue
        self.on_batch, self.on_failure = on_batch, on_failure
        self._queue: collections.deque[Pending] = collections.deque()
        self._more = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mu2hub-engine")
        self._task: asyncio.Task | None = None
        self.dropped = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop forming batches (after the server has drained its requests) and free the worker thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for p in self._queue:
            if not p.future.done():
                p.future.cancel()
        self._queue.clear()
        self._executor.shutdown(wait=True)

    def submit(self, task: str, image: np.ndarray) -> Pending:
        """Queue one row; await `.future` for its logits. Raises `QueueFullError` when the queue is full."""
        if len(self._queue) >= self.max_queue:
            raise QueueFullError(f"{len(self._queue)} requests are queued (--max-queue {self.max_queue})")
        p = Pending(task, image, asyncio.get_running_loop().create_future())
        self._queue.append(p)
        self._more.set()
        return p

    def abandon(self, p: Pending) -> None:
        """The request no longer wants its answer: drop its row if it has not been taken into a batch."""
        try:
            self._queue.remove(p)
        except ValueError:
            return
        self.dropped += 1
        if not p.future.done():
            p.future.cancel()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            start = time.monotonic()
            results = await loop.run_in_executor(self._executor, self._compute, [(p.task, p.image, p.key) for p in batch])
            for p, result in zip(batch, results):
                if p.future.done():
                    continue
                if isinstance(result, BaseException):
                    p.future.set_exception(result)
                else:
                    p.future.set_result(result)
            if self.on_batch is not None:
                self.on_batch(len(batch), time.monotonic() - start)

    async def _next_batch(self) -> list[Pending]:
        """Rows to run now: `max_batch_size` of them, or fewer once the oldest has waited `max_wait`."""
        while True:
            while not self._queue:
                self._more.clear()
                await self._more.wait()
            while self._queue and len(self._queue) < self.max_batch_size:
                remaining = self._queue[0].enqueued + self.max_wait - time.monotonic()
                if remaining <= 0:
                    break
                self._more.clear()
                try:
                    await asyncio.wait_for(self._more.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            if self._queue:  # else every waiting row was abandoned
                return [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]

    def _compute(self, rows: list[tuple[str, np.ndarray, int]]) -> list[Any]:
        """In the worker thread: pin each task's components, run the engine, unpin. Per row: logits or an error."""
        held: dict[str, Any] = {}
        pinned: list[list[str]] = []
        failed: dict[str, TaskUnavailableError] = {}
        try:
            for task in dict.fromkeys(t for t, _, _ in rows):
                try:
                    got = self.pool.acquire(task)
                except Mu2hubError as e:
                    failed[task] = TaskUnavailableError(task, e)
                    if self.on_failure is not None:
                        self.on_failure(failed[task])
                    continue
                held.update(got)
                pinned.append(list(got))
            ok = [Row(t, image, key) for t, image, key in rows if t not in failed]
            try:
                logits = iter(self.engine.run(ok, held))
            except Exception as e:  # noqa: BLE001 - a failed batch answers its rows with the error, the server lives
                return [e] * len(rows)
            return [failed[t] if t in failed else next(logits) for t, _, _ in rows]
        finally:
            for ids in pinned:
                self.pool.release(ids)
