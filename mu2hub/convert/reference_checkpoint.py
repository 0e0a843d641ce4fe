"""Read a Flax checkpoint one top-level entry at a time: the two layouts `flax.training.checkpoints` writes.

The reference notebooks save every live component under its own top-level key (`"{name}:{id}"`, µ4Net
`"{name}:{agent}:{id}"`) with `flax.training.checkpoints.save_checkpoint`. Depending on the Flax version that is:

- a **msgpack file** (`flax.serialization.msgpack_serialize`; every Flax before Orbax became the default, so
  the released 65 GB / 61 GB states): one top-level map; arrays are msgpack ext type 1 whose payload is
  `packb((shape, dtype name, C-order bytes))`, arrays above 2**30 bytes are split into `__msgpack_chunked_array__`
  maps. `MsgpackCheckpoint` indexes the map in one pass that reads only headers (array bytes are seeked over),
  then reads one entry by seeking to it and reading each array straight into its own numpy buffer — the memory
  of one entry, never the file's. Nothing but these msgpack types is accepted (no pickle; unknown ext types
  and malformed lengths are refused before anything is allocated).
- an **Orbax directory** (current Flax: `flax_use_orbax_checkpointing` on): `OrbaxCheckpoint` reads the tree's
  metadata, then restores one entry at a time (`PyTreeRestore(partial_restore=True)`) as numpy arrays.

Both give `keys()`, `spec(key)` (the entry's tree with `Spec(shape, dtype)` leaves, read without loading data),
`nbytes(key)` and `read(key)` (the tree with numpy leaves).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from ..errors import FormatError
from ..format.files import open_regular, regular_file

_MAX_DEPTH = 32
# dtypes a Flax checkpoint of ViT parameters (and their bf16 momentum traces) can hold
_DTYPES = {"float32", "float16", "float64", "bfloat16", "int32", "int64", "int8", "uint8", "uint32", "bool"}


@dataclass(frozen=True)
class Spec:
    """A leaf's shape and dtype without its data; `reshape` checks the element count, as numpy's does."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _np_dtype(self.dtype).itemsize

    def reshape(self, *shape: int) -> "Spec":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        size = math.prod(self.shape)
        if shape.count(-1) == 1:
            known = math.prod(d for d in shape if d != -1)
            shape = tuple(size // known if d == -1 else d for d in shape) if known and size % known == 0 else shape
        if -1 in shape or math.prod(shape) != size:
            raise ValueError(f"cannot reshape {self.shape} into {shape}")
        return Spec(tuple(shape), self.dtype)


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # a JAX dependency: bf16 traces are written by the reference's optimizer

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    return {k: _tree_map(fn, v) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)


def _leaves(tree: Any) -> list[Any]:
    return [x for v in tree.values() for x in _leaves(v)] if isinstance(tree, dict) else [tree]


# ---------------------------------------------------------------------------------------------------
# msgpack (flax.serialization)
# ---------------------------------------------------------------------------------------------------


class _Reader:
    """The subset of msgpack `flax.serialization.msgpack_serialize` writes, read from a seekable file.

    `value(load=False)` returns the structure with `Spec` leaves and seeks over array bytes; `load=True` reads
    each array into a fresh numpy buffer. Every length is checked against the bytes left in the file first.
    """

    def __init__(self, f: BinaryIO, size: int, where: str):
        self.f, self.size, self.where = f, size, where

    def fail(self, message: str) -> FormatError:
        return FormatError(f"not a Flax msgpack checkpoint: {message} at byte {self.f.tell():,}", path=self.where)

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise self.fail(f"truncated ({n} bytes expected)")
        return data

    def length(self, n: int, what: str) -> int:
        if n > self.size - self.f.tell():
            raise self.fail(f"{what} of {n:,} bytes runs past the end of the file")
        return n

    def uint(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def header(self) -> tuple[str, int]:
        """(kind, n): kind in map/array/str/bin/ext/scalar; n = count or byte length (ext: payload length)."""
        b = self.take(1)[0]
        if b <= 0x7F or b >= 0xE0:
            return "scalar", b if b <= 0x7F else b - 0x100
        if 0x80 <= b <= 0x8F:
            return "map", b & 0x0F
        if 0x90 <= b <= 0x9F:
            return "array", b & 0x0F
        if 0xA0 <= b <= 0xBF:
            return "str", b & 0x1F
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in simple:
            return "scalar", simple[b]
        sized = {0xD9: ("str", 1), 0xDA: ("str", 2), 0xDB: ("str", 4), 0xC4: ("bin", 1), 0xC5: ("bin", 2),
                 0xC6: ("bin", 4), 0xC7: ("ext", 1), 0xC8: ("ext", 2), 0xC9: ("ext", 4), 0xDC: ("array", 2),
                 0xDD: ("array", 4), 0xDE: ("map", 2), 0xDF: ("map", 4)}
        if b in sized:
            kind, width = sized[b]
            return kind, self.uint(width)
        if 0xD4 <= b <= 0xD8:
            return "ext", 1 << (b - 0xD4)
        numbers = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h",
                   0xD2: ">i", 0xD3: ">q"}
        if b in numbers:
            fmt = numbers[b]
            return "scalar", struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        raise self.fail(f"byte 0x{b:02x} is not a msgpack type")

    def value(self, load: bool, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise self.fail(f"nested deeper than {_MAX_DEPTH} levels")
        kind, n = self.header()
        if kind == "scalar":
            return n
        if kind == "str":
            try:
                return self.take(self.length(n, "a string")).decode()
            except UnicodeDecodeError as e:
                raise self.fail(f"a string is not UTF-8 ({e})") from e
        if kind == "bin":
            return self.take(self.length(n, "a binary"))
        if kind in ("map", "array"):
            self.length(n, f"a {kind} of {n} entries")  # every entry takes at least one byte
            if kind == "array":
                return [self.value(load, depth + 1) for _ in range(n)]
            out = {}
            for _ in range(n):
                key = self.value(False, depth + 1)
                if not isinstance(key, str):
                    raise self.fail(f"map key {key!r} is not a string")
                out[key] = self.value(load, depth + 1)
            return self.unchunk(out) if "__msgpack_chunked_array__" in out else out
        return self.array(self.length(n, "an ext payload"), load, depth + 1)

    def unchunk(self, d: dict[str, Any]) -> Any:
        """`flax.serialization`'s split of an array above 2**30 bytes (`{"shape": {"0": d0, …}, "chunks": {"0":
        flat array, …}}`), joined again — or its spec."""
        shape, chunks = d.get("shape"), d.get("chunks")
        if not (isinstance(shape, dict) and isinstance(chunks, dict) and set(d) == {"__msgpack_chunked_array__", "shape", "chunks"}):
            raise self.fail(f"malformed chunked array with keys {sorted(d)}")
        shape = tuple(shape.get(str(i)) for i in range(len(shape)))
        parts = [chunks.get(str(i)) for i in range(len(chunks))]
        dtypes = {str(p.dtype) for p in parts if isinstance(p, (Spec, np.ndarray))}
        if (not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape) or len(dtypes) != 1
                or not all(isinstance(p, (Spec, np.ndarray)) and len(p.shape) == 1 for p in parts)
                or sum(p.shape[0] for p in parts) != math.prod(shape)):
            raise self.fail(f"chunked array of shape {shape!r} does not add up from its chunks")
        if all(isinstance(p, Spec) for p in parts):
            return Spec(shape, parts[0].dtype)
        return np.concatenate(parts).reshape(shape)

    def array(self, n: int, load: bool, depth: int) -> Any:
        """An ext payload: type 1 (ndarray) or 3 (numpy scalar) = packb((shape, dtype, bytes)), nothing else."""
        code, start = self.take(1)[0], self.f.tell()
        if code not in (1, 3):
            raise self.fail(f"ext type {code} (only Flax's ndarray/scalar types 1 and 3 are read)")
        kind, count = self.header()
        shape_kind, dims = self.header()
        if (kind, count) != ("array", 3) or shape_kind != "array":
            raise self.fail("an array is not (shape, dtype, bytes)")
        self.length(dims, f"a shape of {dims} dimensions")
        shape = tuple(self.value(False, depth + 1) for _ in range(dims))  # depth counts here too (ext in a shape)
        dtype = self.value(False, depth + 1)
        dtype = dtype.decode() if isinstance(dtype, bytes) else dtype
        data_kind, nbytes = self.header()
        if not (all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                and isinstance(dtype, str) and dtype in _DTYPES and data_kind == "bin"):
            raise self.fail(f"array header shape={shape!r} dtype={dtype!r} is not a numeric array")
        spec = Spec(shape, dtype)
        if nbytes != spec.nbytes or self.f.tell() + nbytes - start != n:
            raise self.fail(f"array {shape} {dtype} holds {nbytes:,} bytes where it needs {spec.nbytes:,}")
        self.length(nbytes, "an array")
        if not load:
            self.f.seek(nbytes, os.SEEK_CUR)
            return spec
        out = np.empty(shape, _np_dtype(dtype))
        if self.f.readinto(memoryview(out.reshape(-1).view(np.uint8))) != nbytes:
            raise self.fail("truncated array")
        return out[()] if code == 3 else out


class MsgpackCheckpoint:
    """A Flax msgpack checkpoint file, indexed by top-level key; entries are read one at a time."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._where = str(self.path)
        self._index: dict[str, tuple[int, Any]] = {}  # key -> (offset of its value, spec tree)
        size = regular_file(self.path, "checkpoint").st_size
        with open_regular(self.path, "checkpoint") as f:
            r = _Reader(f, size, self._where)
            kind, n = r.header()
            if kind != "map":
                raise r.fail("the top level is not a map")
            for _ in range(r.length(n, f"a map of {n} entries")):
                key = r.value(False)
                if not isinstance(key, str):
                    raise r.fail(f"top-level key {key!r} is not a string")
                if key in self._index:
                    raise r.fail(f"key {key!r} appears twice")
                offset = f.tell()
                self._index[key] = (offset, r.value(False, 1))
            if f.tell() != size:
                raise r.fail("data after the top-level map")

    def keys(self) -> list[str]:
        return list(self._index)

    def spec(self, key: str) -> Any:
        return self._index[key][1]

    def nbytes(self, key: str) -> int:
        return sum(leaf.nbytes for leaf in _leaves(self.spec(key)) if isinstance(leaf, Spec))

    def read(self, key: str) -> Any:
        offset, _ = self._index[key]
        with open_regular(self.path, "checkpoint") as f:
            f.seek(offset)
            return _Reader(f, os.fstat(f.fileno()).st_size, self._where).value(True, 1)


# ---------------------------------------------------------------------------------------------------
# Orbax (flax.training.checkpoints with flax_use_orbax_checkpointing)
# ---------------------------------------------------------------------------------------------------

ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "checkpoint")  # as flax.training.checkpoints recognises one


class OrbaxCheckpoint:
    """An Orbax PyTree checkpoint directory; each top-level entry is restored on its own as numpy arrays."""

    def __init__(self, path: str | os.PathLike):
        import orbax.checkpoint as ocp

        self.path = Path(path)
        self._ocp = ocp
        self._checkpointer = ocp.PyTreeCheckpointer()
        try:
            meta = self._checkpointer.metadata(self.path)
            meta = getattr(meta, "item_metadata", meta)  # orbax >= 0.11 wraps the tree in a StepMetadata
            tree = getattr(meta, "tree", meta)
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many kinds; all mean "cannot read"
            raise FormatError(f"not a readable Orbax checkpoint: {e}", path=str(self.path)) from e
        if not isinstance(tree, dict):
            raise FormatError(f"an Orbax checkpoint whose top level is a {type(tree).__name__}, not a dict",
                              path=str(self.path))
        self._meta = tree

    def keys(self) -> list[str]:
        return list(self._meta)

    def spec(self, key: str) -> Any:
        return _tree_map(lambda m: Spec(tuple(int(d) for d in m.shape), np.dtype(m.dtype).name), self._meta[key])

    def nbytes(self, key: str) -> int:
        return sum(leaf.nbytes for leaf in _leaves(self.spec(key)))

    def read(self, key: str) -> Any:
        ocp, sub = self._ocp, {key: self._meta[key]}
        item = _tree_map(lambda m: np.empty((0,), np.dtype(m.dtype)), sub)  # structure only: nothing is held
        restore = _tree_map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), sub)
        try:
            out = self._checkpointer.restore(
                self.path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore, partial_restore=True))
        except Exception as e:  # noqa: BLE001
            raise FormatError(f"cannot restore {key!r}: {e}", path=str(self.path)) from e
        return out[key]


def open_checkpoint(path: str | os.PathLike) -> MsgpackCheckpoint | OrbaxCheckpoint:
    """A checkpoint file (msgpack) or directory (Orbax), as `flax.training.checkpoints.save_checkpoint` wrote it.

    Raises:
        FormatError: neither layout, or a malformed file; the message names the path and the byte offset.
    """
    path = Path(path)
    if path.is_dir():
        if not any((path / m).exists() for m in ORBAX_MARKERS):
            raise FormatError(f"a directory without Orbax metadata ({', '.join(ORBAX_MARKERS)})", path=str(path))
        return OrbaxCheckpoint(path)
    return MsgpackCheckpoint(path)
