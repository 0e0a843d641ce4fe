"""Read a µ2Net state directory as the reference notebook writes it, and republish its tasks in the mu2hub format.

A state directory (`<experiment>/state_{loop}_{generation}/`, spec §1.4) holds:
- `population.csv`: one row per live path: task_name, id, parent_id, parent_task_name, final_accounted_params,
  components ("_"-joined component ids), `hparams.*`, `metrics.*`, score. pandas wrote it: an empty cell is NaN/None,
  an all-numeric `adapter_layers` column may read back as a float ("3.0"), some metrics are JSON strings.
- `components.csv`: id, name, num_params, train_locks (comma-joined task names). Optional here, as for the reference.
- `checkpoint_{loop}_{generation}`: a Flax msgpack file whose top-level map is keyed `"{name}:{id}"` (the component's
  Linen parameter subtree) and `"opt_state:{name}:{id}"` (its momentum trace: not needed to publish).

Safety: CSVs are read with `csv`, the checkpoint with `msgpack` + `flax.serialization.msgpack_restore` (array ext
types only); nothing is unpickled or eval'd, and other files (`*.pkl`, `*_tmp`) are never opened. The checkpoint is
streamed and `opt_state:` entries are skipped undecoded, so memory holds the live parameters only.

Mapping (vit_jax `models_vit.py` Linen names -> mu2hub slots of docs/FORMAT.md):
  embedding {kernel (p,p,C,D), bias} -> patch_embed (both HWIO);  cls (1,1,D) -> cls.token
  posembed_input {pos_embedding (1,N,D)} -> pos_embed.embedding (N must be 1 + (ds_image_size/p)²)
  encoderblock_i -> block.i: LayerNorm #1/#2 -> norm1/norm2; attention query/key/value kernel (D,H,hd) -> (D,H·hd),
      bias (H,hd) -> (H·hd); out kernel (H,hd,D) -> (H·hd,D); MlpBlock Dense #1/#2 -> mlp.fc1/fc2
  residual_adapter_i -> adapter.i: LayerNorm -> norm, Dense #1 -> down, Dense #2 -> up
  encoder_norm -> norm;  head {kernel (D,K), bias (K)} -> head
Sub-module names: Linen numbers auto-named sub-modules per class (`LayerNorm_0`, `MultiHeadDotProductAttention_0`,
`LayerNorm_1`, `MlpBlock_0`), which is what a µ2Net checkpoint holds (vit_jax's loader runs `convert_pre_linen` on its
`.npz` files, which use pre-Linen global numbering: `MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`).
Both are read: sub-modules are matched by class name and ordered by number. The adapter is the notebook's compact
`ResidualAdapter` (LayerNorm, Dense, gelu, Dense), hence `LayerNorm_0`, `Dense_0`, `Dense_1`.

Numerics: vit_jax's MlpBlock and the adapter use `nn.gelu`, the tanh approximation; mu2hub computes exact (erf) GELU,
as transformers' ViT. Weights are copied exactly, so republished logits differ from the reference run's by the GELU
gap alone: pointwise < 4.8e-4, 1e-4..2e-4 of max |logit| on the 2-3 layer test system; deeper models may drift more.
Preprocessing is stored as mu2hub's `pp_spec` (bilinear, antialiased); the reference's `tf.image.resize` does not
antialias, which matters only when images are downscaled.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import msgpack
import numpy as np
from flax import serialization

from .errors import FormatError, ShapeMismatchError, TaskNotFoundError
from .format import Dims, Structure, SystemConfig, TaskFile
from .model import check_shapes
from .store import LocalStore

NOT_TRAINABLE = "NOT_TRAINABLE"  # the root path's pseudo-task: recognised, never published
_CHECKPOINT = re.compile(r"^checkpoint_(\d+)_(\d+)$")
_STATE = re.compile(r"^state_(\d+)_(\d+)$")
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):(\d+)$")
_INT = re.compile(r"^[+-]?\d+$")  # regexes, not bare int()/float(): Python reads "0_2" as the number 2
_FLOAT = re.compile(r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|nan|inf|infinity)$", re.IGNORECASE)
_IDS = re.compile(r"^\d+(_\d+)*$")

Params = dict[str, dict[str, np.ndarray]]


@dataclass
class ReferencePath:
    """One row of `population.csv` (`line`: its line number there, for error messages)."""

    task: str
    id: int
    parent_id: int | None
    parent_task: str | None
    component_ids: list[int]
    hparams: dict[str, Any]
    metrics: dict[str, Any]
    score: float | None
    accounted_params: float | None
    line: int


@dataclass
class ReferenceState:
    """A parsed state directory: its paths, and component id -> (name, Linen subtree), `opt_state:` dropped."""

    state_dir: Path
    checkpoint: str
    paths: list[ReferencePath]
    params: dict[int, tuple[str, Any]]
    components: dict[int, dict[str, Any]]  # components.csv by id: name, num_params, train_locks ({} if absent)

    @property
    def root(self) -> ReferencePath | None:
        return min((p for p in self.paths if p.task == NOT_TRAINABLE), key=lambda p: p.id, default=None)

    def tasks(self) -> list[str]:
        return sorted({p.task for p in self.paths if p.task != NOT_TRAINABLE})

    def best_path(self, task: str) -> ReferencePath:
        """The task's row; with several (a mid-iteration save) the best score, ties to the newest id."""
        rows = [p for p in self.paths if p.task == task]
        if not rows:
            raise TaskNotFoundError(task, self.tasks(), str(self.state_dir))
        return max(rows, key=lambda p: (p.score if _is_num(p.score) and math.isfinite(p.score) else -math.inf, p.id))


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _cell(text: str) -> Any:
    """A pandas-written cell as pandas reads it back: '' -> None, numbers, booleans; JSON containers decoded."""
    s = text.strip()
    if s in ("", "True", "False"):
        return None if s == "" else s == "True"
    if _INT.match(s) or _FLOAT.match(s):
        return int(s) if _INT.match(s) else float(s)
    if s[0] in "[{":
        try:
            return json.loads(s)
        except ValueError:
            pass
    return text


def _as_int(value: Any, what: str, where: str | None = None) -> int:
    if not (_is_num(value) and math.isfinite(value) and value == int(value)):
        raise FormatError(f"{what} must be an integer, got {value!r}", path=where)
    return int(value)


def adapter_layers_of(value: Any) -> list[int]:
    """`hparams.adapter_layers` ("_"-joined layer ids) as pandas may give it: ''/NaN -> [], 3.0 -> [3], '0_2' -> [0, 2]."""
    if value is None or (_is_num(value) and not math.isfinite(value)):
        return []
    s = str(int(value)) if _is_num(value) and value == int(value) else str(value).strip().removesuffix(".0")
    if s == "" or s.lower() == "nan":
        return []
    if not _IDS.match(s):
        raise FormatError(f"adapter_layers {value!r} is not '_'-joined layer ids")
    return sorted(int(v) for v in s.split("_"))


def _read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise FormatError(f"missing {path.name}", path=str(path))
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            missing = [c for c in required if c not in header]
            if missing:
                raise FormatError(f"missing column(s) {missing}", path=str(path))
            for row in filter(None, reader):
                if len(row) != len(header):
                    raise FormatError(f"line {reader.line_num}: {len(row)} fields where the header has {len(header)}",
                                      path=str(path))
                rows.append((reader.line_num, dict(zip(header, row, strict=True))))
    except (csv.Error, UnicodeDecodeError) as e:
        raise FormatError(f"malformed CSV: {e}", path=str(path)) from e
    return rows


def _latest(folder: Path, pattern: re.Pattern, want_dir: bool) -> Path | None:
    """Natural-order latest entry named `{prefix}_{loop}_{gen}` (as the reference's AUTO_CONTINUE picks it)."""
    found = [(int(m[1]), int(m[2]), p) for p in folder.iterdir() if (m := pattern.match(p.name)) and p.is_dir() == want_dir]
    return max(found)[2] if found else None


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """`{"name:id": Linen subtree}` of a µ2Net Flax msgpack checkpoint; `opt_state:` entries are skipped undecoded."""
    path, out = Path(path), {}
    try:
        with open(path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=0, strict_map_key=True)  # array ext -> ExtType
            for _ in range(unpacker.read_map_header()):
                key = unpacker.unpack()
                if not isinstance(key, str):
                    raise ValueError(f"non-string key {key!r}")
                if key.startswith("opt_state:"):
                    unpacker.skip()
                    continue
                # Re-pack one entry and let flax decode its arrays (and re-join arrays it chunked).
                out[key] = serialization.msgpack_restore(msgpack.packb(unpacker.unpack()))
            try:
                unpacker.unpack()
            except msgpack.OutOfData:
                return out
            raise ValueError("data after the top-level map")
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise FormatError(f"not a Flax msgpack checkpoint: {e}", path=str(path)) from e


def read_reference_state(state_dir: str | os.PathLike) -> ReferenceState:
    """Parse a µ2Net `state_{loop}_{gen}` folder (or an experiment folder: its latest state); see the module doc."""
    d = Path(state_dir)
    if not d.is_dir():
        raise FormatError("not a directory", path=str(d))
    if not (d / "population.csv").exists():
        states = [s for s in d.iterdir() if _STATE.match(s.name) and s.is_dir() and _latest(s, _CHECKPOINT, False)]
        d = max(states, key=lambda s: tuple(map(int, _STATE.match(s.name).groups()))) if states else d
    pop_file, comp_file = d / "population.csv", d / "components.csv"
    pop_rows = _read_csv(pop_file, ("task_name", "id", "parent_id", "components"))
    components: dict[int, dict[str, Any]] = {}
    for line, row in _read_csv(comp_file, ("id", "name")) if comp_file.is_file() else []:
        locks = sorted(t for t in (row.get("train_locks") or "").split(",") if t)
        components[_as_int(_cell(row["id"]), f"line {line}: id", str(comp_file))] = {
            "name": row["name"], "num_params": _cell(row.get("num_params", "")), "train_locks": locks}
    ckpt = _latest(d, _CHECKPOINT, False)
    if ckpt is None:
        raise FormatError("no Flax checkpoint file 'checkpoint_{loop}_{generation}'", path=str(d))
    params: dict[int, tuple[str, Any]] = {}
    for key, tree in read_checkpoint(ckpt).items():
        if not (m := _KEY.match(key)):
            raise FormatError(f"unexpected key {key!r}: µ2Net keys are 'name:id' "
                              "(sharded µ3Net/µ4Net states are not supported)", path=str(ckpt))
        name, cid = m[1], int(m[2])
        if cid in params or (cid in components and components[cid]["name"] != name):
            other = params[cid][0] if cid in params else f"components.csv's {components[cid]['name']!r}"
            raise FormatError(f"key {key!r} conflicts with {other} for component {cid}", path=str(ckpt))
        params[cid] = (name, tree)
    paths = []
    for line, row in pop_rows:
        task, pid = row["task_name"].strip(), _as_int(_cell(row["id"]), f"line {line}: id", str(pop_file))
        ids_text = row["components"].strip()
        if not task:
            raise FormatError(f"line {line}: empty task_name", path=str(pop_file))
        if not _IDS.match(ids_text):
            raise FormatError(f"line {line}: components {ids_text!r} are not '_'-joined component ids", path=str(pop_file))
        ids = [int(v) for v in ids_text.split("_")]
        for cid in (c for c in ids if c not in params):
            name = components.get(cid, {}).get("name", "<name>")
            raise FormatError(f"line {line} (task {task!r}, path {pid}): component {cid} is not in {ckpt.name} "
                              f"(no key '{name}:{cid}')", path=str(pop_file))
        parent = _cell(row["parent_id"])
        paths.append(ReferencePath(
            task=task, id=pid,
            parent_id=None if parent in (None, -1) else _as_int(parent, f"line {line}: parent_id", str(pop_file)),
            parent_task=(row.get("parent_task_name") or "").strip() or None, component_ids=ids, line=line,
            hparams={k.removeprefix("hparams."): _cell(v) for k, v in row.items() if k.startswith("hparams.")},
            metrics={k.removeprefix("metrics."): _cell(v) for k, v in row.items() if k.startswith("metrics.")},
            score=_cell(row.get("score", "")), accounted_params=_cell(row.get("final_accounted_params", ""))))
    return ReferenceState(d, ckpt.name, paths, params, components)


def _get(tree: Any, key: str, where: str) -> Any:
    if not isinstance(tree, Mapping) or key not in tree:
        raise FormatError(f"{where}: missing {key!r} (has {sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__})")
    return tree[key]


def _array(node: Any, where: str) -> np.ndarray:
    if not isinstance(node, (np.ndarray, np.generic)):
        raise FormatError(f"{where}: expected an array, got {type(node).__name__}")
    return np.asarray(node, np.float32)


def _pair(tree: Any, names: tuple[str, str], where: str, prefix: str = "") -> dict[str, np.ndarray]:
    return {f"{prefix}{n}": _array(_get(tree, n, where), f"{where}/{n}") for n in names}


def _subs(tree: Any, cls: str, count: int, where: str) -> list[Any]:
    """Sub-modules auto-named `{cls}_{n}`, ordered by n (Linen per-class or pre-Linen global numbering)."""
    is_dict = isinstance(tree, Mapping)
    found = sorted((int(k.rsplit("_", 1)[1]), k) for k in tree if re.fullmatch(rf"{cls}_\d+", str(k))) if is_dict else []
    if len(found) != count:
        have = sorted(tree) if is_dict else type(tree).__name__
        raise FormatError(f"{where}: expected {count} {cls} sub-module(s), found {[k for _, k in found] or 'none'} in {have}")
    return [tree[k] for _, k in found]


def _count_leaves(tree: Any) -> int:
    return sum(_count_leaves(v) for v in tree.values()) if isinstance(tree, Mapping) else 1


def _block(tree: Any, w: str, num_heads: int | None) -> dict[str, np.ndarray]:
    ln1, ln2 = _subs(tree, "LayerNorm", 2, w)
    (attn,), (mlp,) = _subs(tree, "MultiHeadDotProductAttention", 1, w), _subs(tree, "MlpBlock", 1, w)
    fc1, fc2 = _subs(mlp, "Dense", 2, f"{w}/MlpBlock")
    out = {**_pair(ln1, ("scale", "bias"), w, "norm1."), **_pair(ln2, ("scale", "bias"), w, "norm2."),
           **_pair(fc1, ("kernel", "bias"), w, "mlp.fc1."), **_pair(fc2, ("kernel", "bias"), w, "mlp.fc2.")}
    for proj in ("query", "key", "value", "out"):
        p = _pair(_get(attn, proj, w), ("kernel", "bias"), f"{w}/attention/{proj}")
        k, b = p["kernel"], p["bias"]
        heads = k.shape[0] if proj == "out" else k.shape[1] if k.ndim == 3 else None
        if k.ndim != 3 or (proj != "out" and b.shape != k.shape[1:]) or (num_heads is not None and heads != num_heads):
            raise FormatError(f"{w}/attention/{proj}: kernel {k.shape}, bias {b.shape} do not fit DenseGeneral "
                              f"(D, heads, head_dim) with {num_heads or 'any'} heads")
        out[f"attn.{proj}.kernel"] = k.reshape(-1, k.shape[-1]) if proj == "out" else k.reshape(k.shape[0], -1)
        out[f"attn.{proj}.bias"] = b.reshape(-1)
    return out


def convert_component(name: str, tree: Any, num_heads: int | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """A reference component (checkpoint name, Linen subtree) -> (mu2hub slot, {tensor name: float32 array})."""
    w = f"component {name!r}"
    if name in ("embedding", "encoder_norm", "head"):
        slot = {"embedding": "patch_embed", "encoder_norm": "norm", "head": "head"}[name]
        out = _pair(tree, ("scale", "bias") if name == "encoder_norm" else ("kernel", "bias"), w)
    elif name in ("cls", "posembed_input"):
        slot = "cls" if name == "cls" else "pos_embed"
        out = {"token": _array(tree, w)} if name == "cls" else {"embedding": _array(_get(tree, "pos_embedding", w), w)}
    elif m := re.fullmatch(r"encoderblock_(\d+)", name):
        slot, out = f"block.{int(m[1])}", _block(tree, w, num_heads)
    elif m := re.fullmatch(r"residual_adapter_(\d+)", name):
        (ln,), (down, up) = _subs(tree, "LayerNorm", 1, w), _subs(tree, "Dense", 2, w)
        slot = f"adapter.{int(m[1])}"
        out = {**_pair(ln, ("scale", "bias"), w, "norm."), **_pair(down, ("kernel", "bias"), w, "down."),
               **_pair(up, ("kernel", "bias"), w, "up.")}
    else:
        raise FormatError(f"{w}: unknown (known: embedding, cls, posembed_input, encoderblock_i, residual_adapter_i, "
                          "encoder_norm, head)")
    if _count_leaves(tree) != len(out):
        raise FormatError(f"{w}: {_count_leaves(tree)} parameter arrays where {len(out)} are mapped "
                          "(unexpected extra parameters)")
    return slot, out


def reference_dims(state: ReferenceState) -> Dims:
    """System dimensions from checkpoint shapes: hidden, patch, channels from `embedding`; heads, MLP from a block."""
    where = str(state.state_dir / state.checkpoint)
    trees = dict(state.params.values())
    k = _array(_get(_get(trees, "embedding", where), "kernel", f"{where}: embedding"), "embedding/kernel")
    if k.ndim != 4 or k.shape[0] != k.shape[1]:
        raise FormatError(f"embedding/kernel {k.shape} is not a square (p, p, C, D) convolution", path=where)
    hidden, heads, mlp_dim = int(k.shape[3]), 1, 4 * int(k.shape[3])  # a 0-layer system has no block to read
    block = next((t for n, t in trees.items() if n.startswith("encoderblock_")), None)
    if block is not None:
        (attn,), (mlp,) = _subs(block, "MultiHeadDotProductAttention", 1, where), _subs(block, "MlpBlock", 1, where)
        heads = int(np.shape(_get(_get(attn, "query", where), "kernel", where))[1])
        mlp_dim = int(np.shape(_get(_subs(mlp, "Dense", 2, where)[0], "kernel", where))[1])
    return Dims(hidden, heads, mlp_dim, int(k.shape[0]), int(k.shape[2]), 1e-6)


def reference_path_params(state: ReferenceState, path: ReferencePath, dims: Dims) -> tuple[Structure, Params, dict[str, str]]:
    """A population row as a mu2hub path: (structure, {slot: tensors}, {slot: reference key "name:id"})."""
    where = f"population.csv line {path.line} (task {path.task!r}, path {path.id})"
    params: Params = {}
    keys: dict[str, str] = {}
    for cid in path.component_ids:
        name, tree = state.params[cid]
        slot, tensors = convert_component(name, tree, dims.num_heads)
        if slot in params:
            raise FormatError(f"{where}: components {keys[slot]!r} and '{name}:{cid}' fill the same slot")
        params[slot], keys[slot] = tensors, f"{name}:{cid}"
    hp = path.hparams
    pos = params.get("pos_embed", {}).get("embedding", np.zeros((1, 1, 0)))
    n_pos = pos.shape[1] if pos.ndim == 3 else 0
    head = params.get("head", {}).get("kernel", np.zeros((0, 0)))
    try:
        adapters = adapter_layers_of(hp.get("adapter_layers"))
        first = params.get(f"adapter.{adapters[0]}") if adapters else None
        num_layers = _as_int(hp["num_layers"], "hparams.num_layers") if hp.get("num_layers") is not None \
            else sum(s.startswith("block.") for s in params)
        image_size = _as_int(hp["ds_image_size"], "hparams.ds_image_size") if hp.get("ds_image_size") is not None \
            else int(round(max(n_pos - 1, 0) ** 0.5)) * dims.patch_size
        hp_dim = hp.get("adapter_dim")  # -1 or absent when the path has no adapters
        adapter_dim = first["down.kernel"].shape[-1] if first else int(hp_dim) if _is_num(hp_dim) and hp_dim > 0 else 16
        classes = head.shape[-1] if head.ndim == 2 else 0
        structure = Structure(dims, image_size, num_layers, classes, tuple(adapters), int(adapter_dim))
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from e
    want = structure.slots()
    missing, extra = [s for s in want if s not in params], sorted(s for s in params if s not in want)
    if missing or extra:
        raise FormatError(f"{where}: components {sorted(keys.values())} do not form a path with num_layers={num_layers}, "
                          f"adapter_layers={adapters}: missing {missing}, unexpected {extra}")
    problems = check_shapes(structure, params)
    if n_pos != structure.seq_len:
        problems.append(f"pos_embed: {n_pos} tokens where ds_image_size {image_size} needs {structure.seq_len}")
    if hp.get("num_classes") is not None and hp["num_classes"] != structure.num_classes:
        problems.append(f"head: {structure.num_classes} classes where hparams.num_classes is {hp['num_classes']}")
    if problems:
        raise ShapeMismatchError(f"{where}: " + "; ".join(problems), path=str(state.state_dir / state.checkpoint))
    return structure, {s: params[s] for s in want}, {s: keys[s] for s in want}


def _json_safe(v: Any) -> Any:
    """JSON has no NaN/inf (pandas' empty cells): they become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple, Mapping)):
        return {str(k): _json_safe(x) for k, x in v.items()} if isinstance(v, Mapping) else [_json_safe(x) for x in v]
    return v


def republish_reference(state_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                        tasks: Sequence[str] | None = None, labels: Mapping[str, Sequence[str]] | None = None,
                        name: str = "", description: str = "") -> dict[str, TaskFile]:
    """Republish a µ2Net state directory's tasks (each task's path) as a mu2hub system in `out_dir`.

    Args:
        state_dir: a `state_{loop}_{generation}` folder, or an experiment folder (its latest state is read).
        out_dir: written as a `LocalStore`; components are content-addressed, so shared ones are one file.
        tasks: the tasks to publish (default: every task in `population.csv` but the root `NOT_TRAINABLE`).
        labels: `{task: class names}`. The state does not record class names: a task without an entry gets the
            placeholders `class_0 … class_{K-1}`, and its `lineage.reference.labels` says "placeholder".
        name, description: free text for `config.json`.

    Returns:
        `{task: TaskFile}` as written.

    Raises:
        FormatError: a missing or malformed file, a component absent from the checkpoint, shapes that do not form
            a path (`ShapeMismatchError`), or labels of the wrong length; the message names the file and row or key.
        TaskNotFoundError: a requested task is not in `population.csv`.
    """
    from .data.pp import pp_spec  # mu2hub.data pulls dataset helpers: import only when writing

    state = read_reference_state(state_dir)
    dims, available = reference_dims(state), state.tasks()
    chosen = available if tasks is None else list(dict.fromkeys(tasks))
    for t in (t for t in chosen if t not in available):
        raise TaskNotFoundError(t, available, str(state.state_dir))
    best = {t: state.best_path(t) for t in available}
    root = state.root or (best[available[0]] if available else None)
    if root is None:
        raise FormatError("no paths", path=str(state.state_dir / "population.csv"))
    hp = root.hparams  # config.json needs only the root's size: a root head that does not fit must not block it
    if hp.get("ds_image_size") is not None and hp.get("num_layers") is not None:
        root_size = (_as_int(hp["ds_image_size"], "root hparams.ds_image_size"),
                     _as_int(hp["num_layers"], "root hparams.num_layers"))
    else:
        s = reference_path_params(state, root, dims)[0]
        root_size = (s.image_size, s.num_layers)
    store = LocalStore(out_dir)
    description = description or f"µ2Net {state.state_dir.name} ({state.checkpoint}), republished"
    store.write_config(SystemConfig(dims, *root_size, name, description))
    users: dict[int, set[str]] = {}
    for p in [*best.values(), *([state.root] if state.root else [])]:
        for cid in p.component_ids:
            users.setdefault(cid, set()).add(p.task)
    out: dict[str, TaskFile] = {}
    for task in chosen:
        path = best[task]
        structure, params, keys = reference_path_params(state, path, dims)
        given = labels is not None and task in labels
        names = [str(x) for x in labels[task]] if given else [f"class_{i}" for i in range(structure.num_classes)]
        if len(names) != structure.num_classes:
            raise FormatError(f"labels for {task!r}: {len(names)} names for a {structure.num_classes}-class head")
        refs = [store.write_component(params[s], s.split(".")[0], s) for s in structure.slots()]
        # The reference does not record which path created a component: count those only this task's path uses.
        created = list(dict.fromkeys(r.id for r in refs if users[int(keys[r.slot].rsplit(":", 1)[1])] == {task}))
        hparams = {**_json_safe(path.hparams), "adapter_layers": list(structure.adapter_layers)}
        int_keys = ("num_layers", "num_classes", "adapter_dim", "ds_image_size")  # 3.0 after a NaN in the column
        hparams.update({k: int(v) for k, v in hparams.items() if k in int_keys and _is_num(v) and v == int(v)})
        m = path.metrics
        tf = TaskFile(
            task=task, image_size=structure.image_size, num_layers=structure.num_layers, components=refs, labels=names,
            adapter_layers=structure.adapter_layers, adapter_dim=structure.adapter_dim,
            preprocessing=pp_spec(structure.image_size), hparams=hparams,
            metrics=_json_safe({"validation_accuracy": m.get("quality"), "test_accuracy": m.get("test_quality"),
                                "score": path.score, "accounted_params": path.accounted_params,
                                "reference": {k: v for k, v in m.items() if k not in ("quality", "test_quality")}}),
            lineage={"path_id": str(path.id), "parent": None if path.parent_id is None else str(path.parent_id),
                     "parent_task": path.parent_task, "created": created,
                     "reference": {"state": state.state_dir.name, "checkpoint": state.checkpoint, "components": keys,
                                   "labels": "given" if given else "placeholder"}},
            sizes={"activated_params": sum(r.params for r in refs), "bytes": sum({r.id: r.bytes for r in refs}.values()),
                   "new_params": sum({r.id: r.params for r in refs if r.id in created}.values())},
        )
        store.write_task(tf)
        out[task] = tf
    return out
