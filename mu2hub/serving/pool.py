"""Components on the device once per id, fetched on first use, least recently used out under a byte budget.

Reads go through the store's verified path, as `from_pretrained` (a Hub store re-downloads a damaged cached file
once; a local folder names it), and placement through `mu2hub.inference.task`'s per-id device cache, so a component that a
loaded `TaskModel` already holds is not read again. `acquire(task)` pins its components while a batch runs;
`release` unpins them; only unpinned ones are evicted, so a batch never loses its parameters mid-flight (while
batches in flight need more than the budget, the pool holds more than it: the budget bounds what stays).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Mapping

from .. import model as vit
from ..inference.task import device_component, loaded_component
from ..errors import ShapeMismatchError
from ..format.system import ComponentRef, SystemConfig, TaskFile
from ..hub.store import Store


class ComponentPool:
    """Device tensors by component id for one system's tasks.

    Args:
        store (`Store`): where the components are read (pinned to one commit for a Hub repo).
        config (`SystemConfig`), files (`{task: TaskFile}`): the system and the tasks served.
        budget_bytes (`int`, *optional*): keep at most this many bytes of unpinned components (None: no limit).
    """

    def __init__(self, store: Store, config: SystemConfig, files: Mapping[str, TaskFile], *,
                 budget_bytes: int | None = None):
        self.store, self.config, self.files = store, config, dict(files)
        self.budget_bytes = budget_bytes
        self._held: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._bytes: dict[str, int] = {}
        self._pins: collections.Counter[str] = collections.Counter()
        self._checked: set[str] = set()
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self.loads = self.evictions = 0

    @property
    def resident_bytes(self) -> int:
        """Bytes of the components held now (each once)."""
        with self._lock:
            return sum(self._bytes[c] for c in self._held)

    def holds(self, cid: str) -> bool:
        with self._lock:
            return cid in self._held

    def acquire(self, task: str) -> dict[str, Any]:
        """Pin the task's components (reading the missing ones) and return them by id; `release` them after use.

        Raises:
            The store's named errors (`ComponentIntegrityError`, `LocalFilesMissingError`, ...) and
            `ShapeMismatchError` when a component does not fit the task's path; nothing stays pinned then.
        """
        tf = self.files[task]
        refs = list({r.id: r for r in tf.components}.values())
        loaded: dict[str, tuple[Any, int]] = {}
        while True:
            with self._lock:
                for cid, (tensors, nbytes) in loaded.items():
                    if cid not in self._held:
                        self._held[cid], self._bytes[cid] = tensors, nbytes
                        self.loads += 1
                missing = [r for r in refs if r.id not in self._held]
                if not missing:
                    for r in refs:
                        self._pins[r.id] += 1
                        self._held.move_to_end(r.id)
                    held = {r.id: self._held[r.id] for r in refs}
                    self._evict()
                    break
            loaded = self._read(missing, tf)
        if task not in self._checked:
            problems = vit.check_shapes(tf.structure(self.config.dims), {r.slot: held[r.id] for r in tf.components})
            if problems:
                self.release(list(held))
                raise ShapeMismatchError("components do not fit the path: " + "; ".join(problems), path=tf.filename)
            self._checked.add(task)
        return held

    def release(self, ids: list[str]) -> None:
        """Unpin components `acquire` returned (then evict down to the budget)."""
        with self._lock:
            for cid in ids:
                self._pins[cid] -= 1
                if self._pins[cid] <= 0:
                    del self._pins[cid]
            self._evict()

    def _evict(self) -> None:
        if self.budget_bytes is None:
            return
        total = sum(self._bytes[c] for c in self._held)
        for cid in list(self._held):
            if total <= self.budget_bytes:
                break
            if cid not in self._pins:
                del self._held[cid]
                total -= self._bytes.pop(cid)
                self.evictions += 1

    def _read(self, refs: list[ComponentRef], tf: TaskFile) -> dict[str, tuple[Any, int]]:
        """Device copies of `refs`: from a live model in this process, else verified reads from the store."""
        out: dict[str, tuple[Any, int]] = {}
        with self._read_lock:
            todo = []
            for r in refs:
                hit = loaded_component(r.id)
                if hit is not None:
                    out[r.id] = (hit, sum(int(a.nbytes) for a in hit.values()))
                else:
                    todo.append(r)
            if todo:
                for cid, (kind, tensors) in self.store.read_components(todo, desc=f"{tf.task}: components").items():
                    ref = next(r for r in todo if r.id == cid)
                    if kind != ref.kind:
                        raise ShapeMismatchError(f"{ref.slot} names component {cid} of kind {kind!r}", path=tf.filename)
                    device = device_component(cid, tensors)
                    out[cid] = (device, sum(int(a.nbytes) for a in device.values()))
        return out
