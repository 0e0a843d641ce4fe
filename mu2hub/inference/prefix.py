"""Frozen-prefix caching: a child's lowest frozen blocks run once per dataset instead of once per step.

When a child's augmentation is off (µ3Net's default: no crop, no flip, no colour jitter), the input of its
block k is a fixed function of the image as long as the embedding slots and blocks 0..k-1 (with any adapters
between them) are frozen, i.e. shared components that this child cannot change. `train.train_child(...,
prefix_cache=cache)` then computes those activations once per (prefix, split) and trains only the rest on
them, with the same result as the plain step (tests/train/test_fast_paths.py).

The cache is keyed by sha256 over the prefix's component ids (or, without ids, a hash of their tensors),
a fingerprint of the split's bytes, the image size, the compute dtype and the attention implementation. It
holds host arrays, least recently used first out, bounded in bytes; with a `directory` evicted or oversized
entries spill to safetensors files there (bounded too) and are read back memory-mapped, so a resumed run or
a second process on the same run dir reuses them.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import struct
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from ..format.system import Structure

EMBEDDING_SLOTS = ("patch_embed", "cls", "pos_embed")
_AUGMENTATIONS = ("ds_brightness_delta", "ds_contrast_delta", "ds_saturation_delta", "ds_hue_delta", "ds_quality_delta")
_KEY_VERSION = "mu2hub-prefix-1"
_TENSOR = "activations"


# ---------------------------------------------------------------------------------------------------
# When a prefix can be cached, and under which key
# ---------------------------------------------------------------------------------------------------


def augmentation_off(hparams: Mapping[str, Any]) -> bool:
    """True when the train preprocessing is deterministic (then it equals the eval preprocessing).

    Mirrors `data.pp.preprocess_train`: a crop needs `ds_crop` (default True) and `ds_area_range_min` < 1
    (default 1.0); a flip `ds_flip_left_right`; colour and JPEG jitter a non-zero delta.
    """
    crop = bool(hparams.get("ds_crop", True)) and float(hparams.get("ds_area_range_min", 1.0)) < 1.0
    flip = bool(hparams.get("ds_flip_left_right", False))
    return not crop and not flip and not any(float(hparams.get(k, 0.0) or 0.0) for k in _AUGMENTATIONS)


def prefix_depth(structure: Structure, frozen_slots: Sequence[str]) -> int:
    """How many of the lowest blocks run on frozen components only (0 when an embedding slot is trainable).

    Block i counts when `block.i` is frozen and, if the path has an adapter before it, `adapter.i` is too.
    """
    frozen = set(frozen_slots)
    if not set(EMBEDDING_SLOTS) <= frozen:
        return 0
    k = 0
    while (k < structure.num_layers and f"block.{k}" in frozen
           and (k not in structure.adapter_layers or f"adapter.{k}" in frozen)):
        k += 1
    return k


def cacheable_depth(structure: Structure, frozen_slots: Sequence[str], hparams: Mapping[str, Any]) -> int:
    """`prefix_depth` when augmentation is off, else 0: how many blocks `train_child` serves from the cache."""
    return prefix_depth(structure, frozen_slots) if augmentation_off(hparams) else 0


def prefix_slots(structure: Structure, depth: int) -> list[str]:
    """The slots whose components determine the input of block `depth`, in forward order."""
    slots = list(EMBEDDING_SLOTS)
    for i in range(depth):
        slots += [f"adapter.{i}"] * (i in structure.adapter_layers) + [f"block.{i}"]
    return slots


_memo: dict[tuple[int, ...], tuple[list[Any], str]] = {}
_memo_lock = threading.Lock()


def _memoised(arrays: Sequence[Any], compute: Callable[[], str]) -> str:
    """`compute()` remembered for as long as these very array objects live (hashing big arrays is slow)."""
    key = tuple(id(a) for a in arrays)
    with _memo_lock:
        hit = _memo.get(key)
    if hit is not None and all(r() is a for r, a in zip(hit[0], arrays)):
        return hit[1]
    digest = compute()
    try:
        refs = [weakref.ref(a, lambda _, k=key: _memo.pop(k, None)) for a in arrays]
    except TypeError:  # an array type without weak references: do not remember
        return digest
    with _memo_lock:
        _memo[key] = (refs, digest)
    return digest


def _digest(arrays: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a.reshape(-1).view(np.uint8)))
    return h.hexdigest()


def split_fingerprint(split: Any) -> str:
    """sha256 of a split's images and labels (shape, dtype and bytes); computed once per array object."""
    arrays = [split.images, split.labels]
    return _memoised(arrays, lambda: _digest(arrays))


def tensors_fingerprint(tensors: Mapping[str, Any]) -> str:
    """sha256 of one component's tensors, standing in for its id when the caller has none."""
    names = sorted(tensors)
    arrays = [tensors[n] for n in names]
    return _memoised(arrays, lambda: _digest(arrays) + ":" + ",".join(names))


def cache_key(component_ids: Mapping[str, str], data_fingerprint: str, image_size: int, dtype: Any,
              attention: str) -> str:
    """sha256 naming one prefix's activations on one split (slot order is part of the prefix)."""
    payload = {"version": _KEY_VERSION, "components": list(component_ids.items()), "data": data_fingerprint,
               "image_size": int(image_size), "dtype": np.dtype(dtype or np.float32).name, "attention": attention}
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------


class PrefixCache:
    """Activations of frozen prefixes, least-recently-used out, bounded in host memory and on disk.

    Args:
        max_bytes (`int`, defaults to 4 GiB): host memory for entries.
        directory (`str | Path`, *optional*): where entries that leave memory (or never fit it) are written
            as `<key>.safetensors` and read back memory-mapped; e.g. `<run dir>/prefix_cache`.
        max_disk_bytes (`int`, *optional*): disk budget under `directory` (default: unbounded); the least
            recently used files are deleted to stay within it. Counted per process.
        device_max_bytes (`int`, defaults to 2 GiB): training uploads a child's cached train activations
            to the device once when they fit this, and gathers batches there; otherwise batches are
            gathered on the host and shipped per step.

    An entry larger than every budget is not cached: `get_or_compute` returns None and the child trains on
    the plain path (`ChildResult.cached_blocks == 0`). Thread-safe; one computation per key at a time.

    >>> cache = PrefixCache(max_bytes=1 << 30, directory="runs/x/prefix_cache")
    >>> result = train_child(structure, frozen, trainable, data, hp, ..., prefix_cache=cache)
    """

    def __init__(self, max_bytes: int = 4 << 30, *, directory: str | os.PathLike | None = None,
                 max_disk_bytes: int | None = None, device_max_bytes: int = 2 << 30):
        self.max_bytes, self.max_disk_bytes, self.device_max_bytes = int(max_bytes), max_disk_bytes, int(device_max_bytes)
        self.directory = Path(directory) if directory is not None else None
        self._memory: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._disk: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._lock = threading.RLock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.hits = self.misses = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for f in sorted(self.directory.glob("*.safetensors"), key=lambda f: f.stat().st_mtime):
                self._disk[f.stem] = f.stat().st_size

    @property
    def memory_bytes(self) -> int:
        return sum(a.nbytes for a in self._memory.values())

    @property
    def disk_bytes(self) -> int:
        return sum(self._disk.values())

    def admits(self, nbytes: int) -> bool:
        """Whether an entry of `nbytes` can be held (in memory, or on disk when there is a directory)."""
        on_disk = self.directory is not None and (self.max_disk_bytes is None or nbytes <= self.max_disk_bytes)
        return nbytes <= self.max_bytes or on_disk

    def get(self, key: str) -> np.ndarray | None:
        """The entry (memory first, then disk, memory-mapped read-only), or None."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
            if key in self._disk:
                path = self._path(key)
                try:
                    array = _read(path)
                except OSError:  # deleted by another process sharing the directory
                    del self._disk[key]
                    return None
                os.utime(path)
                self._disk.move_to_end(key)
                return array
        return None

    def put(self, key: str, array: np.ndarray) -> None:
        """Store an entry: in memory when it fits `max_bytes` (evicting older ones), else on disk if allowed."""
        with self._lock:
            if array.nbytes <= self.max_bytes:
                self._memory[key] = array
                self._memory.move_to_end(key)
                while self.memory_bytes > self.max_bytes:
                    old, evicted = self._memory.popitem(last=False)
                    self._spill(old, evicted)
            else:
                self._spill(key, array)

    def get_or_compute(self, key: str, nbytes: int, compute: Callable[[], np.ndarray]) -> np.ndarray | None:
        """The cached entry, computed (once, even across threads) on a miss; None when `nbytes` is inadmissible."""
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            found = self.get(key)
            if found is not None:
                self.hits += 1
                return found
            if not self.admits(nbytes):
                return None
            self.misses += 1
            array = compute()
            self.put(key, array)
            found = self.get(key)  # the memory-mapped copy when it went to disk
            return array if found is None else found

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.safetensors"

    def _spill(self, key: str, array: np.ndarray) -> None:
        if self.directory is None or key in self._disk:
            return
        if self.max_disk_bytes is not None and array.nbytes > self.max_disk_bytes:
            return
        _write(self._path(key), array)
        self._disk[key] = self._path(key).stat().st_size
        while self.max_disk_bytes is not None and self.disk_bytes > self.max_disk_bytes and len(self._disk) > 1:
            old, _ = self._disk.popitem(last=False)
            self._path(old).unlink(missing_ok=True)  # an open memory map keeps its data until it is closed


def _write(path: Path, array: np.ndarray) -> None:
    """safetensors with one tensor; bfloat16 goes in as its uint16 bits (numpy has no bf16 of its own)."""
    dtype = np.dtype(array.dtype)
    stored = array.view(np.uint16) if dtype == ml_dtypes.bfloat16 else array
    tmp = path.with_name(path.name + ".tmp")
    save_file({_TENSOR: np.ascontiguousarray(stored)}, str(tmp), metadata={"dtype": dtype.name})
    os.replace(tmp, path)  # atomic: readers see the whole file or none


def _read(path: Path) -> np.ndarray:
    """Memory-map the one tensor of a file written by `_write` (the safetensors layout is a JSON header)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    info = header[_TENSOR]
    name = header["__metadata__"]["dtype"]
    dtype = np.dtype(ml_dtypes.bfloat16 if name == "bfloat16" else name)
    start, _ = info["data_offsets"]
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + header_len + start, shape=tuple(info["shape"]))
