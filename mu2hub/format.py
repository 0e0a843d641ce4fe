"""The published format (docs/FORMAT.md): config.json, tasks/<task>.json, content-addressed components.

Everything that crosses a file boundary goes through here: canonical component bytes and their ids,
JSON <-> dataclasses with validation on every read. No JAX import: the store and the Hub layer stay light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load as _st_load

from .constants import FORMAT_VERSION, LIBRARY_NAME, component_filename, task_filename
from .errors import ComponentIntegrityError, FormatError, FormatVersionError, UnsafePathError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)*$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
_SLOT = re.compile(r"^(patch_embed|cls|pos_embed|norm|head|block\.\d+|adapter\.\d+)$")

# ---------------------------------------------------------------------------------------------------
# Safe names
# ---------------------------------------------------------------------------------------------------


def check_relpath(name: str, *, where: str | None = None) -> str:
    """Reject absolute paths, `..`, backslashes and empty segments in any file name a repo names."""
    bad = (
        not isinstance(name, str)
        or not name
        or name.startswith(("/", "~"))
        or "\\" in name
        or "\x00" in name
        or re.match(r"^[A-Za-z]:", name) is not None
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise UnsafePathError(f"unsafe file name {name!r}: must be relative, without '..'", path=where)
    return name


def check_task_name(task: str, *, where: str | None = None) -> str:
    """Task names become file names (`tasks/<task>.json`), so they are checked like paths."""
    if not isinstance(task, str) or ".." in task or not _TASK_NAME.match(task):
        raise UnsafePathError(
            f"invalid task name {task!r}: letters, digits, '_', '-', '.' in '/'-separated parts", path=where
        )
    return task


def check_component_id(cid: Any, *, where: str | None = None) -> str:
    if not isinstance(cid, str) or not _HEX64.match(cid):
        raise FormatError(f"component id must be 64 lowercase hex characters, got {cid!r}", path=where)
    return cid


# ---------------------------------------------------------------------------------------------------
# Components: canonical safetensors bytes, id = sha256 of those bytes
# ---------------------------------------------------------------------------------------------------

_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int32"): "I32"}
_ALIGN = 8


def component_chunks(tensors: Mapping[str, np.ndarray], kind: str) -> list[bytes | memoryview]:
    """A component's canonical file as its pieces: the header, then each tensor's bytes (views, not copies).

    A valid safetensors file: tensors sorted by name, packed C-order little-endian with no gaps, header JSON
    with sorted keys and no spaces, padded with spaces to 8 bytes; `__metadata__` = {format, kind}. Written
    by hand (not `safetensors.numpy.save`) so the id never changes with the library's layout choices. Kept in
    pieces so a store can hash and write a large component without holding a second copy of it.
    """
    header: dict[str, Any] = {"__metadata__": {"format": f"{LIBRARY_NAME}/{FORMAT_VERSION}", "kind": kind}}
    chunks, offset = [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], order="C")
        if arr.dtype not in _DTYPES:
            arr = arr.astype(np.float32)
        data = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).reshape(-1).view(np.uint8).data
        header[name] = {"dtype": _DTYPES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % _ALIGN)
    return [struct.pack("<Q", len(raw)) + raw, *chunks]


def component_bytes(tensors: Mapping[str, np.ndarray], kind: str) -> bytes:
    """Serialise a component canonically so identical parameters always give identical bytes (and id)."""
    return b"".join(component_chunks(tensors, kind))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def component_id(data: bytes | Iterable[bytes | memoryview]) -> str:
    """A component's id is the sha256 of its canonical file bytes (also the Hub's LFS oid for that file);
    `data` may be those bytes or `component_chunks`."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return sha256_hex(data)
    h = hashlib.sha256()
    for chunk in data:
        h.update(chunk)
    return h.hexdigest()


def parse_component(data: bytes, *, expected_id: str | None = None, filename: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """Verify (when `expected_id` is given) and parse component bytes -> (kind, {tensor name: array})."""
    filename = filename or (component_filename(expected_id) if expected_id else "<component>")
    if expected_id is not None:
        actual = sha256_hex(data)
        if actual != expected_id:
            raise ComponentIntegrityError(filename, expected_id, actual, f" ({len(data):,} bytes)")
    try:
        if len(data) < 8:
            raise ValueError("shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
        tensors = _st_load(data)
    except Exception as e:  # safetensors raises its own SafetensorError, json ValueError
        raise FormatError(f"not a valid safetensors file: {e}", path=filename) from e
    return _kind(meta, filename), tensors


def read_component_file(path: str | os.PathLike, *, expected_id: str, expected_bytes: int | None = None,
                        filename: str | None = None, stamp_dir: str | os.PathLike | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """Verify a component file against its id, then read it with safetensors (memory-mapped, one copy).

    Hashing hundreds of MB costs more than loading them, so a file verified once may leave a *stamp* in
    `stamp_dir` recording its size, inode, mtime and ctime; while all four are unchanged the hash is skipped.
    Any rewrite of the file (even one restoring the mtime) changes its ctime and forces a new hash.
    """
    filename = filename or component_filename(expected_id)
    real = Path(path).resolve()
    st = real.stat()
    if expected_bytes is not None and st.st_size != expected_bytes:
        raise ComponentIntegrityError(filename, expected_id, "(not computed)",
                                      f" ({st.st_size:,} bytes where the task file records {expected_bytes:,})")
    key = f"{st.st_size} {st.st_ino} {st.st_mtime_ns} {st.st_ctime_ns}"
    stamp = Path(stamp_dir) / expected_id if stamp_dir is not None else None
    if stamp is None or not stamp.is_file() or stamp.read_text() != key:
        with open(real, "rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
        if actual != expected_id:
            raise ComponentIntegrityError(filename, expected_id, actual, f" ({st.st_size:,} bytes)")
        if stamp is not None:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
            tmp.write_text(key)
            os.replace(tmp, stamp)
    try:
        with safe_open(str(real), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise FormatError(f"not a valid safetensors file: {e}", path=filename) from e
    return _kind(meta, filename), tensors


def _kind(meta: Mapping[str, str], filename: str) -> str:
    """A component file names its kind in `__metadata__`; without it the file cannot fill a slot."""
    if "kind" not in meta:
        raise FormatError("safetensors __metadata__ has no 'kind'", path=filename)
    return meta["kind"]


def num_params(tensors: Mapping[str, np.ndarray]) -> int:
    return int(sum(int(np.prod(np.shape(t))) for t in tensors.values()))


def component_refs(params: Mapping[str, Mapping[str, np.ndarray]], slots: Iterable[str]) -> list[ComponentRef]:
    """Content-addressed references for a path's parameters, in slot order (serialises each component once)."""
    refs = []
    for slot in slots:
        tensors = {k: np.asarray(v) for k, v in params[slot].items()}
        chunks = component_chunks(tensors, slot.split(".")[0])
        refs.append(ComponentRef(slot, component_id(chunks), num_params(tensors), sum(len(c) for c in chunks)))
    return refs


# ---------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------


class _Checker:
    """Tiny typed accessor that names the offending key in errors (`path.components[3].id`)."""

    def __init__(self, data: Any, where: str, prefix: str = ""):
        if not isinstance(data, dict):
            raise FormatError(f"{prefix or 'top level'} must be a JSON object, got {type(data).__name__}", path=where)
        self.data, self.where, self.prefix = data, where, prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(self, key: str, types: type | tuple[type, ...], default: Any = dataclasses.MISSING) -> Any:
        if key not in self.data:
            if default is dataclasses.MISSING:
                raise FormatError(f"missing required key {self._key(key)!r}", path=self.where)
            return default
        value = self.data[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in _as_tuple(types))
        if not ok:
            names = "/".join(t.__name__ for t in _as_tuple(types))
            raise FormatError(f"{self._key(key)!r} must be {names}, got {type(value).__name__} {value!r}", path=self.where)
        return value

    def sub(self, key: str, default: Any = dataclasses.MISSING) -> "_Checker":
        return _Checker(self.get(key, dict, default), self.where, self._key(key))


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _check_version(c: _Checker) -> None:
    version = c.get("format_version", int)
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"format_version {version} is not supported by this mu2hub (reads version {FORMAT_VERSION}); "
            "upgrade mu2hub" if version > FORMAT_VERSION else f"format_version {version} is unknown",
            path=c.where,
        )


def load_json(data: bytes | str, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"malformed JSON: {e}", path=where) from e


def dump_json(obj: Any) -> bytes:
    """Stable, human-readable JSON (sorted keys keep diffs and content hashes stable)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# ---------------------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------------------


ACTIVATIONS = ("gelu", "gelu_tanh")


@dataclass(frozen=True)
class Dims:
    """Shared ViT dimensions of a system: every component of every path agrees on these."""

    hidden_size: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    activation: str = "gelu"  # "gelu" (exact erf: transformers, timm) or "gelu_tanh" (Flax nn.gelu: big_vision, vit_jax)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise FormatError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.activation not in ACTIVATIONS:
            raise FormatError(f"activation {self.activation!r} is not one of {list(ACTIVATIONS)}")


@dataclass(frozen=True)
class SystemConfig:
    """Root `config.json`: what every path of the system shares."""

    dims: Dims
    root_image_size: int
    root_num_layers: int
    name: str = ""
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "library_name": LIBRARY_NAME,
            "format_version": FORMAT_VERSION,
            "architecture": "vit",
            **dataclasses.asdict(self.dims),
            "root": {"image_size": self.root_image_size, "num_layers": self.root_num_layers},
            "name": self.name,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "config.json") -> "SystemConfig":
        c = _Checker(data, where)
        if c.get("library_name", str) != LIBRARY_NAME:
            raise FormatError(f"not a {LIBRARY_NAME} repo (library_name={data.get('library_name')!r})", path=where)
        _check_version(c)
        if c.get("architecture", str) != "vit":
            raise FormatError(f"unknown architecture {data['architecture']!r} (supported: 'vit')", path=where)
        dims = Dims(
            hidden_size=c.get("hidden_size", int),
            num_heads=c.get("num_heads", int),
            mlp_dim=c.get("mlp_dim", int),
            patch_size=c.get("patch_size", int),
            num_channels=c.get("num_channels", int, 3),
            layer_norm_eps=float(c.get("layer_norm_eps", (int, float), 1e-6)),
            activation=c.get("activation", str, "gelu"),
        )
        root = c.sub("root")
        return cls(dims, root.get("image_size", int), root.get("num_layers", int), c.get("name", str, ""), c.get("description", str, ""))


# ---------------------------------------------------------------------------------------------------
# tasks/<task>.json
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a component lives when it is not in the task's own repo (fine-tuned variants)."""

    repo_id: str
    revision: str  # a 40-hex commit sha: references are pinned

    def to_json(self) -> dict[str, str]:
        return {"repo_id": self.repo_id, "revision": self.revision}


@dataclass(frozen=True)
class ComponentRef:
    slot: str
    id: str
    params: int
    bytes: int
    source: Source | None = None

    @property
    def kind(self) -> str:
        return self.slot.split(".")[0]

    @property
    def filename(self) -> str:
        return component_filename(self.id)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"slot": self.slot, "id": self.id, "params": self.params, "bytes": self.bytes}
        if self.source is not None:
            out["source"] = self.source.to_json()
        return out


def slot_names(num_layers: int, adapter_layers: Iterable[int] = ()) -> list[str]:
    """Slots in forward order; an adapter sits before the block it feeds."""
    adapters = set(adapter_layers)
    out = ["patch_embed", "cls", "pos_embed"]
    for i in range(num_layers):
        if i in adapters:
            out.append(f"adapter.{i}")
        out.append(f"block.{i}")
    return out + ["norm", "head"]


@dataclass(frozen=True)
class Structure:
    """What a path's forward pass needs to know statically (hashable: a `jax.jit` static argument)."""

    dims: Dims
    image_size: int
    num_layers: int
    num_classes: int
    adapter_layers: tuple[int, ...] = ()
    adapter_dim: int = 16

    def __post_init__(self) -> None:
        if self.image_size % self.dims.patch_size:
            raise FormatError(f"image_size {self.image_size} is not a multiple of patch_size {self.dims.patch_size}")
        bad = [i for i in self.adapter_layers if not 0 <= i < self.num_layers]
        if bad:
            raise FormatError(f"adapter_layers {bad} outside 0..{self.num_layers - 1}")

    @property
    def grid(self) -> int:
        return self.image_size // self.dims.patch_size

    @property
    def seq_len(self) -> int:
        return self.grid * self.grid + 1

    def slots(self) -> list[str]:
        return slot_names(self.num_layers, self.adapter_layers)


@dataclass
class TaskFile:
    """One task's path and everything needed to run, trust and credit it."""

    task: str
    image_size: int
    num_layers: int
    components: list[ComponentRef]
    labels: list[str]
    adapter_layers: tuple[int, ...] = ()
    adapter_dim: int = 16
    preprocessing: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def filename(self) -> str:
        return task_filename(self.task)

    def structure(self, dims: Dims) -> Structure:
        return Structure(dims, self.image_size, self.num_layers, self.num_classes, tuple(self.adapter_layers), self.adapter_dim)

    def component_map(self) -> dict[str, ComponentRef]:
        return {c.slot: c for c in self.components}

    @property
    def activated_params(self) -> int:
        return sum(c.params for c in self.components)

    @property
    def download_bytes(self) -> int:
        """Bytes of the distinct component files this task needs."""
        return sum({c.id: c.bytes for c in self.components}.values())

    def to_json(self) -> dict[str, Any]:
        out = {
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "path": {
                "image_size": self.image_size,
                "num_layers": self.num_layers,
                "adapter_layers": list(self.adapter_layers),
                "adapter_dim": self.adapter_dim,
                "components": [c.to_json() for c in self.components],
            },
            "labels": list(self.labels),
            "preprocessing": self.preprocessing,
            "hparams": self.hparams,
            "metrics": self.metrics,
            "lineage": self.lineage,
            "sizes": self.sizes,
        }
        if self.probe is not None:
            out["probe"] = self.probe
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> "TaskFile":
        c = _Checker(data, where)
        _check_version(c)
        task = check_task_name(c.get("task", str), where=where)
        p = c.sub("path")
        labels = c.get("labels", list)
        if len(labels) < 1 or not all(isinstance(x, str) for x in labels):
            raise FormatError("'labels' must be a non-empty list of strings", path=where)
        comps = []
        for i, raw in enumerate(p.get("components", list)):
            cc = _Checker(raw, where, f"path.components[{i}]")
            slot = cc.get("slot", str)
            if not _SLOT.match(slot):
                raise FormatError(f"path.components[{i}].slot {slot!r} is not a known slot", path=where)
            src = None
            if "source" in raw:
                s = cc.sub("source")
                repo = s.get("repo_id", str)
                if ".." in repo or not _REPO_ID.match(repo):
                    raise UnsafePathError(f"path.components[{i}].source.repo_id {repo!r} is not a repo id", path=where)
                rev = s.get("revision", str)
                if not re.match(r"^[0-9a-f]{40}$", rev):
                    raise FormatError(f"path.components[{i}].source.revision must be a 40-hex commit sha, got {rev!r}", path=where)
                src = Source(repo, rev)
            comps.append(
                ComponentRef(slot, check_component_id(cc.get("id", str), where=where), cc.get("params", int), cc.get("bytes", int), src)
            )
        adapter_layers = p.get("adapter_layers", list, [])
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in adapter_layers):
            raise FormatError("'path.adapter_layers' must be a list of integers", path=where)
        probe = c.get("probe", dict, None)
        tf = cls(
            task=task,
            image_size=p.get("image_size", int),
            num_layers=p.get("num_layers", int),
            components=comps,
            labels=list(labels),
            adapter_layers=tuple(adapter_layers),
            adapter_dim=p.get("adapter_dim", int, 16),
            preprocessing=c.get("preprocessing", dict, {}),
            hparams=c.get("hparams", dict, {}),
            metrics=c.get("metrics", dict, {}),
            lineage=c.get("lineage", dict, {}),
            sizes=c.get("sizes", dict, {}),
            probe=probe,
        )
        tf._check_slots(where)
        return tf

    def _check_slots(self, where: str) -> None:
        """Every slot the structure needs appears exactly once, and nothing else."""
        have = [c.slot for c in self.components]
        dup = sorted({s for s in have if have.count(s) > 1})
        need = slot_names(self.num_layers, self.adapter_layers)
        missing = [s for s in need if s not in have]
        extra = [s for s in have if s not in need]
        if dup or missing or extra:
            parts = [f"duplicated {dup}" if dup else "", f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else ""]
            raise FormatError("path components do not match its structure: " + "; ".join(p for p in parts if p), path=where)


def distinct(ids: Iterable[str]) -> list[str]:
    """Order-preserving de-duplication."""
    return list(dict.fromkeys(ids))
