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
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import schema
from ..constants import FORMAT_VERSION, LIBRARY_NAME, component_filename, task_filename
from ..errors import ComponentIntegrityError, FormatError, UnsafePathError
from .schema import check_component_id, check_task_name, load_json  # noqa: F401  (the format's public checks)
from .files import is_regular

if TYPE_CHECKING:  # numpy and safetensors are imported where tensors are touched: listing tasks needs neither
    import numpy as np

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
        or len(name) > 1024
        or schema.has_bad_chars(name)
        or re.match(r"^[A-Za-z]:", name) is not None
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise UnsafePathError(f"unsafe file name {name!r}: must be relative, without '..'", path=where)
    return name


# ---------------------------------------------------------------------------------------------------
# Components: canonical safetensors bytes, id = sha256 of those bytes
# ---------------------------------------------------------------------------------------------------

_ALIGN = 8


def component_chunks(tensors: Mapping[str, np.ndarray], kind: str) -> list[bytes | memoryview]:
    """A component's canonical file as its pieces: the header, then each tensor's bytes (views, not copies).

    A valid safetensors file: float32 tensors (docs/FORMAT.md; anything else is cast) sorted by name, packed
    C-order little-endian with no gaps, header JSON with sorted keys and no spaces, padded with spaces to 8 bytes;
    `__metadata__` = {format, kind}. Written by hand (not `safetensors.numpy.save`) so the id never changes with the
    library's layout choices. Kept in pieces so a store can hash and write a large component without holding a
    second copy of it.
    """
    import numpy as np

    header: dict[str, Any] = {"__metadata__": {"format": schema.COMPONENT_FORMAT, "kind": kind}}
    chunks, offset = [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], order="C")
        data = np.ascontiguousarray(arr.astype("<f4", copy=False)).reshape(-1).view(np.uint8).data
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
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


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, streamed (a component of hundreds of MB is never held whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_has_id(path: str | os.PathLike, cid: str) -> bool:
    """Whether `path` is a regular file whose content is component `cid`. Why: a resume record (a journal entry, a
    file already at a content-addressed name, a finished add-task workdir) is evidence, not trust — a file there
    may be truncated, damaged or replaced, and is reused only when its content still hashes to the id."""
    try:
        return is_regular(Path(path)) and file_sha256(path) == cid
    except OSError:
        return False


def component_id(data: bytes | Iterable[bytes | memoryview]) -> str:
    """A component's id is the sha256 of its canonical file bytes (also the Hub's LFS oid for that file);
    `data` may be those bytes or `component_chunks`."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return sha256_hex(data)
    h = hashlib.sha256()
    for chunk in data:
        h.update(chunk)
    return h.hexdigest()


def component_header(data: bytes, filename: str) -> dict[str, Any]:
    """The checked header of component bytes: {kind, shapes, metadata} (`schema.check_component_header`)."""
    n = schema.header_length(data[:8], len(data), filename)
    return schema.check_component_header(data[: 8 + n], len(data), filename)


def parse_component(data: bytes, *, expected_id: str | None = None, filename: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """Verify (when `expected_id` is given) and parse component bytes -> (kind, {tensor name: array}).

    The header is checked by the one schema before safetensors reads it; every weight must be finite.
    """
    filename = filename or (component_filename(expected_id) if expected_id else "<component>")
    if expected_id is not None:
        actual = sha256_hex(data)
        if actual != expected_id:
            raise ComponentIntegrityError(filename, expected_id, actual, f" ({len(data):,} bytes)")
    kind = component_header(data, filename)["kind"]
    from safetensors.numpy import load as _st_load
    try:
        tensors = _st_load(data)
    except Exception as e:  # safetensors raises its own SafetensorError
        raise FormatError(f"not a valid safetensors file: {e}", path=filename) from e
    schema.check_finite(tensors, filename)
    return kind, tensors


def read_component_file(path: str | os.PathLike, *, expected_id: str, expected_bytes: int | None = None,
                        filename: str | None = None, stamp_dir: str | os.PathLike | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """Verify a component file against its id, then read it with safetensors (memory-mapped, one copy).

    Hashing hundreds of MB costs more than loading them, so a file verified once (hash, header and finite weights)
    may leave a *stamp* in `stamp_dir` recording its size, inode, mtime and ctime; while all four are unchanged the
    hash and the finiteness pass are skipped. Any rewrite of the file (even one restoring the mtime) changes its
    ctime and forces a new check. The header is checked on every read.
    """
    filename = filename or component_filename(expected_id)
    real = Path(path).resolve()
    st = real.stat()
    if expected_bytes is not None and st.st_size != expected_bytes:
        raise ComponentIntegrityError(filename, expected_id, "(not computed)",
                                      f" ({st.st_size:,} bytes where the task file records {expected_bytes:,})")
    key = f"{st.st_size} {st.st_ino} {st.st_mtime_ns} {st.st_ctime_ns}"
    stamp = Path(stamp_dir) / expected_id if stamp_dir is not None else None
    verified = stamp is not None and stamp.is_file() and stamp.read_text() == key
    with open(real, "rb") as f:
        if not verified:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
            if actual != expected_id:
                raise ComponentIntegrityError(filename, expected_id, actual, f" ({st.st_size:,} bytes)")
            f.seek(0)
        prefix = f.read(8)
        n = schema.header_length(prefix, st.st_size, filename)
        kind = schema.check_component_header(prefix + f.read(n), st.st_size, filename)["kind"]
    from safetensors import safe_open
    try:
        with safe_open(str(real), framework="numpy") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise FormatError(f"not a valid safetensors file: {e}", path=filename) from e
    if not verified:
        schema.check_finite(tensors, filename)
        if stamp is not None:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
            tmp.write_text(key)
            os.replace(tmp, stamp)
    return kind, tensors


def num_params(tensors: Mapping[str, np.ndarray]) -> int:
    import numpy as np
    return int(sum(int(np.prod(np.shape(t))) for t in tensors.values()))


def component_refs(params: Mapping[str, Mapping[str, np.ndarray]], slots: Iterable[str]) -> list[ComponentRef]:
    """Content-addressed references for a path's parameters, in slot order (serialises each component once)."""
    import numpy as np

    refs = []
    for slot in slots:
        tensors = {k: np.asarray(v) for k, v in params[slot].items()}
        chunks = component_chunks(tensors, slot.split(".")[0])
        refs.append(ComponentRef(slot, component_id(chunks), num_params(tensors), sum(len(c) for c in chunks)))
    return refs


# ---------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------


def dump_json(obj: Any) -> bytes:
    """Stable, human-readable JSON (sorted keys keep diffs and content hashes stable); NaN/Infinity are refused
    because no strict reader (ours included) accepts them."""
    try:
        return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()
    except ValueError as e:
        raise FormatError(f"cannot write as JSON: {e} (every number in a mu2hub file must be finite)") from e


# ---------------------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------------------


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
        for name in ("hidden_size", "num_heads", "mlp_dim", "patch_size", "num_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FormatError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.layer_norm_eps, (int, float)) and 0 < self.layer_norm_eps <= 1):
            raise FormatError(f"layer_norm_eps must lie in (0, 1], got {self.layer_norm_eps!r}")
        schema.check_dims(self.hidden_size, self.num_heads)
        if self.activation not in schema.ACTIVATIONS:
            raise FormatError(f"activation {self.activation!r} is not one of {list(schema.ACTIVATIONS)}")


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
        """Checked by `schema.check_config` (every field typed and bounded) before anything is built."""
        c = schema.check_config(data, where)
        dims = Dims(**{f.name: c[f.name] for f in dataclasses.fields(Dims) if f.name in c})
        return cls(dims, c["root_image_size"], c["root_num_layers"], c["name"], c["description"])


# ---------------------------------------------------------------------------------------------------
# tasks/<task>.json
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentSource:
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
    source: ComponentSource | None = None

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
        for name in ("image_size", "num_classes", "adapter_dim"):
            if getattr(self, name) < 1:
                raise FormatError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.num_layers < 0:
            raise FormatError(f"num_layers must be >= 0, got {self.num_layers}")
        schema.check_grid(self.image_size, self.dims.patch_size)
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
        try:
            return Structure(dims, self.image_size, self.num_layers, self.num_classes, tuple(self.adapter_layers),
                             self.adapter_dim)
        except FormatError as e:
            raise FormatError(str(e), path=self.filename) from None

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
        """Checked by `schema.check_task` (every known field typed and bounded, probe consistent) first."""
        c = schema.check_task(data, where)
        comps = [ComponentRef(r["slot"], r["id"], r["params"], r["bytes"],
                              ComponentSource(**r["source"]) if r["source"] is not None else None)
                 for r in c.pop("components")]
        tf = cls(components=comps, **c)
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
