"""Read the states the reference notebooks write — µ2Net's state folder and µ4Net's sharded system state — lazily.

**µ2Net** (`mu2Net.ipynb` `save_state`, munet_spec.md §1.4): `<experiment>/state_{loop}_{generation}/` holds
- `population.csv`: one row per live path: task_name, id, parent_id, parent_task_name, final_accounted_params,
  components ("_"-joined component ids), `hparams.*`, `metrics.*`, score;
- `components.csv`: id, name, num_params, train_locks — the append-only history `comps_df`, so a component
  appears once per task iteration that saw it (the last row is the newest);
- `checkpoint_{loop}_{generation}`: `flax.training.checkpoints.save_checkpoint` of `{"{name}:{id}": params,
  "opt_state:{name}:{id}": momentum trace}` — a msgpack file, or an Orbax directory with current Flax.

**µ4Net** (`mu4Net.ipynb`, the same for µ3Net): `<system>/<AgentClass>~<task, '/' as '~'>/state_{cycle}_{gen}/`
per agent, with `published.csv` (the agent's retained paths: agent_id, task_name, id, parent_id, parent_agent_id,
components as ","-joined "agent:id", `hparams.*` (JSON for dicts and lists), `metrics.*` with `metrics.score`),
`population.csv`, `paths.csv`, `components.csv`, `config.json` and `checkpoint_{cycle}_{gen}` keyed
`"{name}:{agent}:{id}"`. An agent saves only the components it created since its last completed cycle, so its
parameters are sharded over its `state_*_0` folders; like the reference's loader this reads each agent's latest
completed `published.csv` and every completed `state_*_0` checkpoint of every agent of one single-path class, and
refuses a key found in two shards. Intermediate `state_*_[^0]` folders and folders without a finished checkpoint
(`*_tmp`, Orbax's `*.orbax-checkpoint-tmp-*`) are never read. Multipath `MultiVit` agents are reported, not read:
their router and connectors over several paths are not one mu2hub path.

Reading is lazy: checkpoints are indexed (`reference_checkpoint`), and a component is decoded only when asked for.
CSVs are read with `csv` and cells converted as pandas would (`_cell`); nothing is unpickled or eval'd and other
files (`*.pkl`) are never opened.

Mapping (vit_jax `models_vit.py` Linen names -> mu2hub slots of docs/FORMAT.md):
  embedding {kernel (p,p,C,D), bias} -> patch_embed (both HWIO);  cls (1,1,D) -> cls.token
  posembed_input {pos_embedding (1,N,D)} -> pos_embed.embedding (N must be 1 + (ds_image_size/p)²)
  encoderblock_i -> block.i: LayerNorm #1/#2 -> norm1/norm2; attention query/key/value kernel (D,H,hd) -> (D,H·hd),
      bias (H,hd) -> (H·hd); out kernel (H,hd,D) -> (H·hd,D); MlpBlock Dense #1/#2 -> mlp.fc1/fc2
  residual_adapter_i -> adapter.i: LayerNorm -> norm, Dense #1 -> down, Dense #2 -> up
  encoder_norm -> norm;  head {kernel (D,K), bias (K)} -> head
Sub-module names: Linen numbers auto-named sub-modules per class (`LayerNorm_0`, `MultiHeadDotProductAttention_0`,
`LayerNorm_1`, `MlpBlock_0`), which is what a notebook checkpoint holds (vit_jax's loader runs `convert_pre_linen`
on its `.npz` files, which use pre-Linen global numbering: `MultiHeadDotProductAttention_1`, `LayerNorm_2`,
`MlpBlock_3`). Both are read: sub-modules are matched by class name and ordered by number. The adapter is the
notebook's compact `ResidualAdapter` (LayerNorm, Dense, gelu, Dense), hence `LayerNorm_0`, `Dense_0`, `Dense_1`.

Numerics: the reference's MlpBlock and adapter use Flax's `nn.gelu`, the tanh approximation, and Linen's LayerNorm
epsilon 1e-6; the system is written with `activation="gelu_tanh"`, so republished logits are the reference's.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import FormatError, ShapeMismatchError, TaskNotFoundError
from ..format.system import Dims, Structure
from ..model import check_shapes
from .reference_checkpoint import MsgpackCheckpoint, OrbaxCheckpoint, Spec, open_checkpoint
from ..format.schema import MAX_ADAPTER_DIM, MAX_IMAGE_SIZE, MAX_LAYERS, check_grid
from ..format.strictjson import load_json, show_value
from ..format.files import read_bounded

NOT_TRAINABLE = "NOT_TRAINABLE"  # µ2Net's root pseudo-task: recognised, never published
ROOT_AGENT_TASK = "root_model/"  # µ3Net / µ4Net root agents ("root_model/checkpoint", "root_model/random_init")
_CHECKPOINT = re.compile(r"^checkpoint_(\d+)_(\d+)$")
_STATE = re.compile(r"^state_(\d+)_(\d+)$")
_AGENT_DIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)~(.+)$")
_KEY2 = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):(\d+)$")  # µ2Net "name:id"
_KEY3 = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):([^:]+):(\d+)$")  # µ4Net "name:agent:id"
_INT = re.compile(r"^[+-]?\d+$")  # regexes, not bare int()/float(): Python reads "0_2" as the number 2
_FLOAT = re.compile(r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|nan|inf|infinity)$", re.IGNORECASE)
_IDS = re.compile(r"^\d+(_\d+)*$")
MAX_CSV_BYTES = 2**28  # a long µ2Net run's components.csv history is tens of MB

StateCheckpoint = MsgpackCheckpoint | OrbaxCheckpoint
ParamSpecs = dict[str, dict[str, Any]]


@dataclass
class ReferencePath:
    """One row of `population.csv` (µ2Net) or `published.csv` (µ4Net); `where` names the file and line."""

    task: str
    id: int
    agent: str | None  # µ4Net agent id (`Vit~cifar10`); None in µ2Net
    parent: str | None  # the parent's id (µ2Net) or "agent:id" (µ4Net)
    parent_task: str | None
    keys: list[str]  # checkpoint keys of its components, as the row lists them
    hparams: dict[str, Any]
    metrics: dict[str, Any]
    score: float | None
    accounted_params: float | None
    where: str

    @property
    def full_id(self) -> str:
        return f"{self.agent}:{self.id}" if self.agent else str(self.id)


@dataclass
class ReferenceState:
    """A parsed state: its paths and the (lazily read) checkpoints holding their components."""

    layout: str  # "mu2net" | "mu4net"
    state_dir: Path  # the µ2Net state folder, or the µ4Net system folder
    sources: list[str]  # the checkpoints read, relative to `state_dir`'s parent (for lineage)
    paths: list[ReferencePath]
    checkpoints: dict[str, StateCheckpoint]  # component key -> the checkpoint holding it
    components: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> components.csv row (µ2Net)
    skipped: dict[str, str] = field(default_factory=dict)  # agent -> why it is not read (µ4Net)

    def source(self, key: str) -> str:
        """The checkpoint holding `key`, as `sources` names it (relative to the experiment / system folder)."""
        base = self.state_dir.parent if self.layout == "mu2net" else self.state_dir
        return self.checkpoints[key].path.relative_to(base).as_posix()

    @property
    def root(self) -> ReferencePath | None:
        roots = [p for p in self.paths if _is_root(p.task)]
        return min(roots, key=lambda p: p.id, default=None)

    def tasks(self) -> list[str]:
        return sorted({p.task for p in self.paths if not _is_root(p.task)})

    def best_path(self, task: str) -> ReferencePath:
        """The task's best row by score; ties go to the newest id in µ2Net, the oldest in µ4Net (as each reference's
        `get_best_path`). Several rows appear in a mid-iteration save or a µ4Net population."""
        rows = [p for p in self.paths if p.task == task]
        if not rows:
            raise TaskNotFoundError(task, self.tasks(), str(self.state_dir))
        sign = 1 if self.layout == "mu2net" else -1
        return max(rows, key=lambda p: (p.score if _finite(p.score) else -math.inf, sign * p.id))

    def spec(self, key: str) -> Any:
        return self.checkpoints[key].spec(key)

    def read(self, key: str) -> Any:
        return self.checkpoints[key].read(key)

    def nbytes(self, key: str) -> int:
        return self.checkpoints[key].nbytes(key)


def component_name(key: str) -> str:
    """The vit_jax module name a checkpoint key stores (`encoderblock_3:17` -> `encoderblock_3`)."""
    return key.split(":", 1)[0]


def _is_root(task: str) -> bool:
    return task == NOT_TRAINABLE or task.startswith(ROOT_AGENT_TASK)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _finite(x: Any) -> bool:
    return _is_num(x) and math.isfinite(x)


def _cell(text: str) -> Any:
    """A pandas-written cell as pandas reads it back: '' -> None, numbers, booleans; JSON containers decoded."""
    s = text.strip()
    if s in ("", "True", "False"):
        return None if s == "" else s == "True"
    if _INT.match(s) or _FLOAT.match(s):
        return int(s) if _INT.match(s) else float(s)
    if s[0] in "[{":
        try:
            return load_json(s, "a CSV cell")  # bounded depth and size, like every JSON mu2hub reads
        except ValueError:
            pass
    return text


def _as_int(value: Any, what: str, where: str | None = None, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
    """An integer cell (pandas may write 3 as 3.0) within [lo, hi]: the schema's bounds for sizes and depths."""
    if not (_finite(value) and value == int(value)):
        raise FormatError(f"{what} must be an integer, got {show_value(value)}", path=where)
    if not lo <= int(value) <= hi:
        raise FormatError(f"{what} must lie in [{lo:,}, {hi:,}], got {show_value(value)}", path=where)
    return int(value)


def adapter_layers_of(value: Any) -> list[int]:
    """`hparams.adapter_layers` ("_"-joined layer ids) as pandas may give it: ''/NaN -> [], 3.0 -> [3], '0_2' -> [0, 2]."""
    if value is None or (_is_num(value) and not math.isfinite(value)):
        return []
    s = str(int(value)) if _is_num(value) and value == int(value) else str(value).strip().removesuffix(".0")
    if s == "" or s.lower() == "nan":
        return []
    if len(s) > 4 * MAX_LAYERS or not _IDS.match(s):
        raise FormatError(f"adapter_layers {show_value(value)} is not '_'-joined layer ids")
    layers = sorted(int(v) for v in s.split("_"))
    if layers[-1] >= MAX_LAYERS:
        raise FormatError(f"adapter_layers {show_value(value)} names a layer past the {MAX_LAYERS} limit")
    return layers


def _read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    if not path.exists():
        raise FormatError(f"missing {path.name}", path=str(path))
    text = read_bounded(path, MAX_CSV_BYTES, "CSV file")
    rows = []
    try:
        with io.StringIO(text.decode("utf-8"), newline="") as f:
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


def _numbered(folder: Path, pattern: re.Pattern) -> list[tuple[int, int, Path]]:
    return sorted((int(m[1]), int(m[2]), p) for p in folder.iterdir() if (m := pattern.match(p.name)))


def _latest_checkpoint(folder: Path) -> Path | None:
    """The natural-order latest finished `checkpoint_{a}_{b}` (file or Orbax directory), as AUTO_CONTINUE picks it."""
    found = _numbered(folder, _CHECKPOINT)
    return found[-1][2] if found else None


def _row_fields(row: dict[str, str], drop_empty: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """`hparams.*` and `metrics.*` cells; µ4Net's loader drops empty (NaN) cells, µ2Net's keeps them."""
    def prefixed(prefix: str) -> dict[str, Any]:
        cells = {k.removeprefix(prefix): _cell(c) for k, c in row.items() if k.startswith(prefix)}
        return {k: v for k, v in cells.items() if v is not None or not drop_empty}

    return prefixed("hparams."), prefixed("metrics.")


# ---------------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------------


def read_reference_state(state_dir: str | os.PathLike, *, agent_class: str | None = None) -> ReferenceState:
    """Parse a µ2Net state folder (or experiment folder: its latest state) or a µ4Net system state folder.

    Args:
        state_dir: `state_{loop}_{gen}/`, an experiment folder holding such folders, or a µ4Net/µ3Net system folder
            holding `<AgentClass>~<task>/` agent folders.
        agent_class: µ4Net only: the single-path agent class to read (`Vit`, `VitB`, `VitT3`); defaults to the one
            present. Agents of other classes are listed in `skipped`.

    Raises:
        FormatError: not one of these layouts, or a malformed file; the message names the file and line or key.
    """
    d = Path(state_dir)
    if not d.is_dir():
        raise FormatError("not a directory", path=str(d))
    if (d / "population.csv").exists():
        return _read_mu2net(d)
    states = [p for _, _, p in _numbered(d, _STATE) if p.is_dir() and _latest_checkpoint(p)]
    if states:
        return _read_mu2net(states[-1])
    if any(p.is_dir() and _AGENT_DIR.match(p.name) for p in d.iterdir()):
        return _read_mu4net(d, agent_class)
    raise FormatError("neither a µ2Net state folder (population.csv), an experiment folder (state_{loop}_{gen}/ with a "
                      "checkpoint) nor a µ4Net system state (<AgentClass>~<task>/ folders)", path=str(d))


def _index_keys(ckpt: StateCheckpoint, pattern: re.Pattern, layout: str) -> dict[str, str]:
    """Checkpoint keys of components (`opt_state:` traces skipped), each checked against the layout's key form."""
    out = {}
    for key in ckpt.keys():
        if key.startswith("opt_state:"):
            continue
        if not pattern.match(key):
            other = "µ4Net keys are 'name:agent:id'" if layout == "mu4net" else "µ2Net keys are 'name:id'"
            raise FormatError(f"unexpected key {key!r}: {other}", path=str(ckpt.path))
        out[key] = key
    return out


def _read_mu2net(d: Path) -> ReferenceState:
    pop_file, comp_file = d / "population.csv", d / "components.csv"
    pop_rows = _read_csv(pop_file, ("task_name", "id", "parent_id", "components"))
    components: dict[int, dict[str, Any]] = {}
    for line, row in _read_csv(comp_file, ("id", "name")) if comp_file.exists() else []:
        cid = _as_int(_cell(row["id"]), f"line {line}: id", str(comp_file))
        if cid in components and components[cid]["name"] != row["name"]:
            raise FormatError(f"line {line}: component {cid} is named {row['name']!r} here and "
                              f"{components[cid]['name']!r} in an earlier row", path=str(comp_file))
        locks = sorted(t for t in (row.get("train_locks") or "").split(",") if t)
        components[cid] = {"name": row["name"], "num_params": _cell(row.get("num_params", "")), "train_locks": locks}
    path = _latest_checkpoint(d)
    if path is None:
        raise FormatError("no Flax checkpoint 'checkpoint_{loop}_{generation}' (file or Orbax directory)", path=str(d))
    ckpt = open_checkpoint(path)
    by_id: dict[int, str] = {}
    for key in _index_keys(ckpt, _KEY2, "mu2net"):
        name, cid = component_name(key), int(key.rsplit(":", 1)[1])
        if cid in by_id or (cid in components and components[cid]["name"] != name):
            other = by_id[cid] if cid in by_id else f"components.csv's {components[cid]['name']!r}"
            raise FormatError(f"key {key!r} conflicts with {other} for component {cid}", path=str(path))
        by_id[cid] = key
    paths = []
    for line, row in pop_rows:
        task, pid = row["task_name"].strip(), _as_int(_cell(row["id"]), f"line {line}: id", str(pop_file))
        ids_text, where = row["components"].strip(), f"population.csv line {line} (task {task!r}, path {pid})"
        if not task:
            raise FormatError(f"line {line}: empty task_name", path=str(pop_file))
        if not _IDS.match(ids_text):
            raise FormatError(f"line {line}: components {ids_text!r} are not '_'-joined component ids", path=str(pop_file))
        keys = []
        for cid in (int(v) for v in ids_text.split("_")):
            if cid not in by_id:
                name = components.get(cid, {}).get("name", "<name>")
                raise FormatError(f"line {line} (task {task!r}, path {pid}): component {cid} is not in {path.name} "
                                  f"(no key '{name}:{cid}')", path=str(pop_file))
            keys.append(by_id[cid])
        parent = _cell(row["parent_id"])
        hparams, metrics = _row_fields(row, drop_empty=False)
        paths.append(ReferencePath(
            task=task, id=pid, agent=None,
            parent=None if parent in (None, -1) else str(_as_int(parent, f"line {line}: parent_id", str(pop_file))),
            parent_task=(row.get("parent_task_name") or "").strip() or None, keys=keys, hparams=hparams,
            metrics=metrics, score=_cell(row.get("score", "")), accounted_params=_cell(row.get("final_accounted_params", "")),
            where=where))
    comp_info = {by_id[cid]: info for cid, info in components.items() if cid in by_id}
    return ReferenceState("mu2net", d, [f"{d.name}/{path.name}"], paths, {k: ckpt for k in by_id.values()}, comp_info)


def _read_mu4net(root: Path, agent_class: str | None) -> ReferenceState:
    agents = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and _AGENT_DIR.match(p.name)}
    classes = sorted({name.split("~", 1)[0] for name in agents})
    single = [c for c in classes if not c.startswith("Multi")]
    if agent_class is None:
        if len(single) != 1:
            raise FormatError(f"agents of {len(single)} single-path classes {single}: pass agent_class= (one root "
                              "model per republished system)", path=str(root))
        agent_class = single[0]
    if agent_class not in single:
        raise FormatError(f"no single-path agents of class {agent_class!r} (found {single})", path=str(root))
    skipped = {name: ("a multipath model (MultiVit): routers and connectors over several paths are not one mu2hub path"
                      if name.startswith("Multi") else f"agent class {name.split('~', 1)[0]!r}, not {agent_class!r}")
               for name in agents if name.split("~", 1)[0] != agent_class}
    checkpoints: dict[str, StateCheckpoint] = {}
    by_source: dict[str, str] = {}  # "agent:id" -> key
    sources, paths = [], []
    for name, agent_dir in agents.items():
        if name.split("~", 1)[0] != agent_class:
            continue
        completed = [(p, c) for _, gen, p in _numbered(agent_dir, _STATE) if gen == 0 and p.is_dir()
                     and (c := _latest_checkpoint(p)) is not None]
        if not completed:
            skipped[name] = "no completed cycle (no state_*_0 folder with a finished checkpoint)"
            continue
        for state, path in completed:
            ckpt = open_checkpoint(path)
            sources.append(f"{name}/{state.name}/{path.name}")
            for key in _index_keys(ckpt, _KEY3, "mu4net"):
                if key in checkpoints:
                    raise FormatError(f"key {key!r} is in two shards: {checkpoints[key].path} and {path}", path=str(root))
                checkpoints[key] = ckpt
                _, owner, cid = _KEY3.match(key).groups()
                by_source[f"{owner}:{cid}"] = key
        published = completed[-1][0] / "published.csv"
        for line, row in _read_csv(published, ("agent_id", "task_name", "id", "parent_id", "components")):
            if row["agent_id"] != name:
                continue  # µ4Net publishes sub-paths of other agents too; those come from their own folders
            paths.append(_mu4net_row(row, line, published, root))
    for p in paths:
        for i, source in enumerate(p.keys):
            if source not in by_source:
                raise FormatError(f"{p.where}: component {source!r} is in no completed shard of {agent_class} agents",
                                  path=str(root))
            p.keys[i] = by_source[source]
    return ReferenceState("mu4net", root, sources, paths, checkpoints, {}, skipped)


def _mu4net_row(row: dict[str, str], line: int, published: Path, root: Path) -> ReferencePath:
    rel = published.relative_to(root)
    pid = _as_int(_cell(row["id"]), f"line {line}: id", str(published))
    task = row["task_name"].strip()
    where = f"{rel} line {line} (task {task!r}, path {row['agent_id']}:{pid})"
    sources = [s.strip() for s in row["components"].split(",") if s.strip()]
    if not task or not sources or any(not re.fullmatch(r"[^:]+:\d+", s) for s in sources):
        raise FormatError(f"line {line}: task_name {task!r} / components {row['components']!r} are not a task and "
                          "','-joined 'agent:id' components", path=str(published))
    parent_id = _cell(row["parent_id"])
    parent = None if parent_id in (None, -1) else f"{row.get('parent_agent_id', '')}:{_as_int(parent_id, 'parent_id')}"
    hparams, metrics = _row_fields(row, drop_empty=True)
    return ReferencePath(task=task, id=pid, agent=row["agent_id"], parent=parent,
                         parent_task=(row.get("parent_agent_id") or "").strip() or None, keys=sources,
                         hparams=hparams, metrics=metrics, score=metrics.get("score"),
                         accounted_params=metrics.get("accounted_params"), where=where)


# ---------------------------------------------------------------------------------------------------
# Conversion: Linen subtrees -> mu2hub component tensors (works on Spec leaves as on arrays)
# ---------------------------------------------------------------------------------------------------


def _get(tree: Any, key: str, where: str) -> Any:
    if not isinstance(tree, Mapping) or key not in tree:
        raise FormatError(f"{where}: missing {key!r} (has {sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__})")
    return tree[key]


def _array(node: Any, where: str) -> Any:
    """A float leaf as float32 (a `Spec` stays one: planning reads no data)."""
    dtype = node.dtype if isinstance(node, (Spec, np.ndarray, np.generic)) else None
    if dtype is None or not np.issubdtype(np.dtype("float32" if dtype == "bfloat16" else dtype), np.floating):
        raise FormatError(f"{where}: expected a float array, got {type(node).__name__} {getattr(node, 'dtype', '')}")
    return node if isinstance(node, Spec) else np.asarray(node, np.float32)


def _pair(tree: Any, names: tuple[str, str], where: str, prefix: str = "") -> dict[str, Any]:
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


def _block(tree: Any, w: str, num_heads: int | None) -> dict[str, Any]:
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


def convert_component(name: str, tree: Any, num_heads: int | None = None) -> tuple[str, dict[str, Any]]:
    """A reference component (vit_jax name, Linen subtree) -> (mu2hub slot, {tensor name: float32 array}).

    Leaves may be arrays or `Spec`s (shapes only), so a path can be checked before any parameter is read.
    """
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
    """System dimensions from checkpoint shapes (no data read): hidden, patch, channels from an `embedding`; heads
    and MLP width from an `encoderblock_*`. The reference's GELU is Flax's tanh approximation."""
    keys = {component_name(k): k for k in state.checkpoints}
    if "embedding" not in keys:
        raise FormatError("no 'embedding' component in the checkpoint(s)", path=str(state.state_dir))
    where = f"{state.state_dir}: {keys['embedding']}"
    k = _array(_get(state.spec(keys["embedding"]), "kernel", where), f"{where}/kernel")
    if k.ndim != 4 or k.shape[0] != k.shape[1]:
        raise FormatError(f"embedding/kernel {k.shape} is not a square (p, p, C, D) convolution", path=where)
    hidden, heads, mlp_dim = int(k.shape[3]), 1, 4 * int(k.shape[3])  # a 0-layer system has no block to read
    block = next((key for name, key in keys.items() if name.startswith("encoderblock_")), None)
    if block is not None:
        tree, where = state.spec(block), f"{state.state_dir}: {block}"
        (attn,), (mlp,) = _subs(tree, "MultiHeadDotProductAttention", 1, where), _subs(tree, "MlpBlock", 1, where)
        heads = int(_get(_get(attn, "query", where), "kernel", where).shape[1])
        mlp_dim = int(_get(_subs(mlp, "Dense", 2, where)[0], "kernel", where).shape[1])
    return Dims(hidden, heads, mlp_dim, int(k.shape[0]), int(k.shape[2]), 1e-6, activation="gelu_tanh")


@dataclass(frozen=True)
class PathPlan:
    """A reference path as a mu2hub path, checked on shapes: its structure and the checkpoint key of each slot."""

    path: ReferencePath
    structure: Structure
    keys: dict[str, str]  # slot -> checkpoint key, in forward order


def plan_path(state: ReferenceState, path: ReferencePath, dims: Dims) -> PathPlan:
    """Map a reference path onto mu2hub slots and check every shape, reading only checkpoint headers.

    Raises:
        FormatError / ShapeMismatchError: components that do not form a path of the row's hparams; the message
            names the row and the components.
    """
    where = path.where
    specs: ParamSpecs = {}
    keys: dict[str, str] = {}
    for key in path.keys:
        slot, tensors = convert_component(component_name(key), state.spec(key), dims.num_heads)
        if slot in specs:
            raise FormatError(f"{where}: components {keys[slot]!r} and {key!r} fill the same slot")
        specs[slot], keys[slot] = tensors, key
    hp = path.hparams
    pos = specs.get("pos_embed", {}).get("embedding")
    n_pos = pos.shape[1] if pos is not None and pos.ndim == 3 else 0
    head = specs.get("head", {}).get("kernel")
    try:
        adapters = adapter_layers_of(hp.get("adapter_layers"))
        first = specs.get(f"adapter.{adapters[0]}") if adapters else None
        num_layers = _as_int(hp["num_layers"], "hparams.num_layers", None, 0, MAX_LAYERS) \
            if hp.get("num_layers") is not None else sum(s.startswith("block.") for s in specs)
        image_size = _as_int(hp["ds_image_size"], "hparams.ds_image_size", None, 1, MAX_IMAGE_SIZE) \
            if hp.get("ds_image_size") is not None else int(round(max(n_pos - 1, 0) ** 0.5)) * dims.patch_size
        check_grid(image_size, dims.patch_size, None, "hparams.ds_image_size")
        hp_dim = hp.get("adapter_dim")  # -1 or absent when the path has no adapters
        adapter_dim = first["down.kernel"].shape[-1] if first else \
            _as_int(hp_dim, "hparams.adapter_dim", None, 1, MAX_ADAPTER_DIM) if _finite(hp_dim) and hp_dim > 0 else 16
        classes = head.shape[-1] if head is not None and head.ndim == 2 else 0
        structure = Structure(dims, image_size, num_layers, classes, tuple(adapters), int(adapter_dim))
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from e
    want = structure.slots()
    missing, extra = [s for s in want if s not in specs], sorted(s for s in specs if s not in want)
    if missing or extra:
        raise FormatError(f"{where}: components {sorted(keys.values())} do not form a path with num_layers={num_layers}, "
                          f"adapter_layers={adapters}: missing {missing}, unexpected {extra}")
    problems = check_shapes(structure, specs)
    if n_pos != structure.seq_len:
        problems.append(f"pos_embed: {n_pos} tokens where ds_image_size {image_size} needs {structure.seq_len}")
    if hp.get("num_classes") is not None and hp["num_classes"] != structure.num_classes:
        problems.append(f"head: {structure.num_classes} classes where hparams.num_classes is {hp['num_classes']}")
    if problems:
        raise ShapeMismatchError(f"{where}: " + "; ".join(problems), path=str(state.state_dir))
    return PathPlan(path, structure, {s: keys[s] for s in want})
