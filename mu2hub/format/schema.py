"""One schema for every file a system holds: `config.json`, `tasks/<task>.json` (and `root.json`), component headers.

Every reader goes through here before it builds anything — `format.py`'s `from_json` and component readers, so
`from_pretrained`, `info`, `verify`, the card, the Space and `validate` all accept and refuse the same files.
Checked: the JSON itself (`strictjson.py`: size, depth, duplicate keys, NaN/Infinity), then the type, range and size of every
known field and the consistency between fields (hidden size divisible by heads, the probe's shape matching the
labels, preprocessing matching the image size). Bounds are generous for real ViTs — ViT-L/H/g/22B have hidden sizes
1024-6144, 24-48 layers, 224-1024 px inputs; ImageNet-21k has 21,843 labels — and tight enough that a 1 KB file
cannot make a reader allocate gigabytes or divide by zero. Unknown keys are ignored where docs/FORMAT.md says readers
must ignore them; they are still bounded by `load_json`. No JAX import (metadata paths stay light).
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any, Iterable, Mapping

from ..constants import FORMAT_VERSION, KINDS, LIBRARY_NAME
from ..errors import FormatError, FormatVersionError, UnsafePathError
from .strictjson import (  # noqa: F401  (re-exported: the schema's JSON layer)
    MAX_JSON_BYTES,
    MAX_LIST,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    Obj,
    show_value,
    check_free,
    check_int,
    check_num,
    check_str,
    has_bad_chars,
    load_json,
)

# ---------------------------------------------------------------------------------------------------
# Limits (docs/FORMAT.md lists them)
# ---------------------------------------------------------------------------------------------------

MAX_HIDDEN = 16_384
MAX_HEADS = 1_024
MAX_MLP = 65_536
MAX_PATCH = 1_024
MAX_CHANNELS = 16
MAX_LAYERS = 256
MAX_IMAGE_SIZE = 4_096
MAX_TOKENS = 65_536  # (image_size / patch_size)^2: attention memory grows with its square
MAX_ADAPTER_DIM = 16_384
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 512
MAX_COMPONENT_BYTES = 2**36
MAX_PARAMS = 2**34
MAX_PROBE_IMAGES = 64
MAX_SEED = 2**64 - 1
MAX_HEADER_BYTES = 2**20  # a canonical component header is a few KB
MAX_TENSORS = 64
MAX_RANK = 4
MAX_DIM = 2**31 - 1
TASK_PART_CHARS = 100
TASK_NAME_CHARS = 200
ACTIVATIONS = ("gelu", "gelu_tanh")
#: Component kinds a header may name: the path's kinds, and the run directory's optimizer traces.
HEADER_KINDS = (*KINDS, "trace")
COMPONENT_FORMAT = f"{LIBRARY_NAME}/{FORMAT_VERSION}"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_SLOT = re.compile(r"^(patch_embed|cls|pos_embed|norm|head|block\.\d{1,3}|adapter\.\d{1,3})$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95})?$")
_TASK_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,255}$")
#: Windows device names: no file or folder may be called this, whatever its extension or case.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


# ---------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------


def task_name_problem(task: Any) -> str | None:
    """Why `task` cannot be a task name (it becomes `tasks/<task>.json` on every OS), or None."""
    if not isinstance(task, str) or not task:
        return "must be a non-empty string"
    if len(task) > TASK_NAME_CHARS:
        return f"is {len(task)} characters long (limit {TASK_NAME_CHARS})"
    for part in task.split("/"):
        if not _TASK_PART.match(part) or ".." in part:
            return "must be '/'-separated parts of letters, digits, '_', '-', '.', each starting with a letter or digit"
        if len(part) > TASK_PART_CHARS:
            return f"has a part of {len(part)} characters (limit {TASK_PART_CHARS})"
        if part.endswith("."):
            return f"has a part ending in '.' ({part!r}), which Windows drops"
        if part.split(".")[0].lower() in _RESERVED:
            return f"has the part {part!r}, a reserved device name on Windows"
    return None


def check_task_name(task: Any, *, where: str | None = None) -> str:
    """Task names become file names (`tasks/<task>.json`), so they are checked like paths, for every OS."""
    problem = task_name_problem(task)
    if problem is not None:
        raise UnsafePathError(f"invalid task name {show_value(task)}: {problem}", path=where)
    return task


def task_key(task: str) -> str:
    """Names equal under this key collide on case-insensitive file systems (macOS, Windows): one system holds one."""
    return task.casefold()


def check_component_id(cid: Any, *, where: str | None = None, key: str = "id") -> str:
    if not isinstance(cid, str) or not _HEX64.match(cid):
        raise FormatError(f"{key!r} must be 64 lowercase hex characters, got {show_value(cid)}", path=where)
    return cid


# ---------------------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------------------


def check_version(c: Obj) -> None:
    version = c.int("format_version", 0, 2**31)
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"format_version {version} is not supported by this mu2hub (reads version {FORMAT_VERSION}); "
            "upgrade mu2hub" if version > FORMAT_VERSION else f"format_version {version} is unknown",
            path=c.where,
        )


def check_dims(hidden_size: int, num_heads: int, where: str | None = None) -> None:
    if hidden_size % num_heads:
        raise FormatError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}", path=where)


def check_grid(image_size: int, patch_size: int, where: str | None = None, what: str = "image_size") -> None:
    if image_size % patch_size:
        raise FormatError(f"{what} {image_size} is not a multiple of patch_size {patch_size}", path=where)
    if (image_size // patch_size) ** 2 > MAX_TOKENS:
        raise FormatError(f"{what} {image_size} with patch_size {patch_size} makes {(image_size // patch_size) ** 2:,} "
                          f"tokens, over the {MAX_TOKENS:,} limit", path=where)


def check_config(data: Any, where: str = "config.json") -> dict[str, Any]:
    """Validated `config.json` as plain values: the `Dims` fields, `root_image_size`, `root_num_layers`, name."""
    c = Obj(data, where)
    library = c.str("library_name", 64)
    if library != LIBRARY_NAME:
        raise FormatError(f"not a {LIBRARY_NAME} repo (library_name={library!r})", path=where)
    check_version(c)
    c.str("architecture", 64, choices=("vit",))
    out = {
        "hidden_size": c.int("hidden_size", 1, MAX_HIDDEN),
        "num_heads": c.int("num_heads", 1, MAX_HEADS),
        "mlp_dim": c.int("mlp_dim", 1, MAX_MLP),
        "patch_size": c.int("patch_size", 1, MAX_PATCH),
        "num_channels": c.int("num_channels", 1, MAX_CHANNELS, 3),
        "layer_norm_eps": float(c.num("layer_norm_eps", 1e-30, 1.0, 1e-6)),
        "activation": c.str("activation", 32, "gelu", choices=ACTIVATIONS),
    }
    check_dims(out["hidden_size"], out["num_heads"], where)
    root = c.sub("root")
    assert root is not None
    out["root_image_size"] = root.int("image_size", 1, MAX_IMAGE_SIZE)
    out["root_num_layers"] = root.int("num_layers", 0, MAX_LAYERS)
    check_grid(out["root_image_size"], out["patch_size"], where, "root.image_size")
    out["name"] = c.str("name", MAX_NAME_CHARS, "", text=True)
    out["description"] = c.str("description", MAX_TEXT_CHARS, "", text=True)
    return out


# ---------------------------------------------------------------------------------------------------
# tasks/<task>.json
# ---------------------------------------------------------------------------------------------------

#: metrics: accuracies in [0, 1] (or null where not measured), counters as integers; others bounded JSON.
_FRACTIONS = ("test_accuracy", "validation_accuracy", "chance", "quality", "from_scratch_test_accuracy",
              "from_scratch_lineage_test_accuracy", "finetune_test_accuracy", "finetune_lineage_test_accuracy",
              "source_test_accuracy")
_COUNTS = ("train_steps", "children", "generation", "num_test_examples", "search_examples", "lineage_examples",
           "num_test_classes")
_SIZES = ("activated_params", "bytes", "new_params")


def _component(raw: Any, key: str, where: str) -> dict[str, Any]:
    c = Obj(raw, where, key)
    slot = c.str("slot", 16)
    if not _SLOT.match(slot):
        raise c.fail("slot", f"{slot!r} is not a known slot")
    out = {"slot": slot, "id": check_component_id(c.data.get("id"), where=where,
                                                                                 key=c.key("id")),
           "params": c.int("params", 0, MAX_PARAMS), "bytes": c.int("bytes", 8, MAX_COMPONENT_BYTES), "source": None}
    src = c.sub("source", None)
    if src is not None:
        repo = src.str("repo_id", 200)
        if not _REPO_ID.match(repo) or ".." in repo:
            raise UnsafePathError(f"{src.key('repo_id')!r} {repo!r} is not a repo id", path=where)
        rev = src.str("revision", 64)
        if not _HEX40.match(rev):
            raise src.fail("revision", f"must be a 40-hex commit sha (references are pinned), got {show_value(rev)}")
        out["source"] = {"repo_id": repo, "revision": rev}
    return out


def _labels(c: Obj) -> list[str]:
    return c.items("labels", MAX_LABELS, lambda v, k: check_str(v, k, c.where, MAX_LABEL_CHARS, min_chars=1), min_len=1)


def _preprocessing(c: Obj, image_size: int) -> dict[str, Any]:
    p = c.sub("preprocessing", {})
    assert p is not None
    resize = p.int("resize", 1, MAX_IMAGE_SIZE, None)
    if resize is not None and resize != image_size:
        raise p.fail("resize", f"is {resize} but the path's image_size is {image_size}")
    p.str("method", 32, None)
    p.bool("antialias", None)
    p.num("pixel_scale", 1e-6, 1e6, None)  # dSprites-style 0/1 pixels scaled to 0/255 (issue 15)
    p.str("channels", 16, None)
    value_range = p.items("value_range", 2, lambda v, k: check_num(v, k, c.where), None, min_len=2)
    if value_range is not None and not value_range[0] < value_range[1]:
        raise p.fail("value_range", f"must be [low, high] with low < high, got {value_range}")
    check_free(p.data, p.prefix, c.where)
    return p.data


def _metrics(c: Obj) -> dict[str, Any]:
    m = c.sub("metrics", {})
    assert m is not None
    for k in _FRACTIONS:
        m.num(k, 0.0, 1.0, None, nullable=True)
    for k in _COUNTS:
        if m.data.get(k) is not None:
            m.int(k, 0, 2**53)
    if m.data.get("score") is not None:
        m.num("score")
    if m.data.get("accounted_params") is not None:
        m.num("accounted_params", 0.0)
    for k in m.data:
        check_str(k, f"{m.prefix} key", c.where, 64, pattern=_METRIC_NAME)
    check_free(m.data, m.prefix, c.where)
    return m.data


def _sizes(c: Obj) -> dict[str, Any]:
    s = c.sub("sizes", {})
    assert s is not None
    for k in _SIZES:
        if s.data.get(k) is not None:  # null: unknown (files exported before every writer knew it)
            s.int(k, 0, 2**53, None)
    shared = s.sub("shared_with", None)
    if shared is not None:
        for cid, tasks in shared.data.items():
            check_component_id(cid, where=c.where, key=f"{shared.prefix} key")
            shared.items(cid, MAX_LIST, lambda v, k: check_str(v, k, c.where, TASK_NAME_CHARS))
    check_free(s.data, s.prefix, c.where)
    return s.data


#: Lineage strings a card, report or Space shows: one line (no newline can end a fence or the front matter), bounded.
LINEAGE_TEXT_CHARS = 512


def _lineage(c: Obj) -> dict[str, Any]:
    """Known lineage fields typed and bounded (they are shown, escaped, by `card.py`); unknown ones stay free."""
    lin = c.sub("lineage", {})
    assert lin is not None
    lin.items("created", MAX_LIST, lambda v, k: check_component_id(v, where=c.where, key=k), None)
    for key in ("path_id", "parent", "parent_task", "data", "init", "imported_from", "revision"):  # a reference
        lin.str(key, LINEAGE_TEXT_CHARS, None, nullable=True)  # state's parent_task is its agent id: any one line
    lin.items("trained_slots", 2 * MAX_LAYERS + 5, lambda v, k: check_str(v, k, c.where, 16, pattern=_SLOT), None)
    lin.int("steps", 0, 2**53, None)
    lin.num("lr", 0.0, math.inf, None)
    for key in ("base", "finetuned_from"):  # the repo (or local folder) a contributed / fine-tuned task came from
        ref = lin.sub(key, None)
        if ref is not None:
            ref.str("repo_id", LINEAGE_TEXT_CHARS)
            ref.str("revision", 64, None, nullable=True)
            if key == "finetuned_from":
                _shown_task(ref, "task")
    check_free(lin.data, lin.prefix, c.where)
    return lin.data


def _shown_task(o: Obj, key: str) -> str:
    task = o.data.get(key)
    problem = task_name_problem(task)
    if problem is not None:
        raise o.fail(key, f"is not a task name ({problem}): {show_value(task)}")
    return task


def _probe(c: Obj, image_size: int, num_classes: int) -> dict[str, Any] | None:
    p = c.sub("probe", None)
    if p is None:
        return None
    p.int("seed", 0, MAX_SEED)
    n = p.int("num_images", 1, MAX_PROBE_IMAGES)
    size = p.int("image_size", 1, MAX_IMAGE_SIZE)
    if size != image_size:
        raise p.fail("image_size", f"is {size} but the path's image_size is {image_size}")
    p.items("top1", n, lambda v, k: check_int(v, k, c.where, 0, num_classes - 1), min_len=n)

    def row(v: Any, k: str) -> list[float]:
        if not isinstance(v, list) or len(v) != num_classes:
            raise FormatError(f"{k!r} must be a list of {num_classes} logits (one per label)", path=c.where)
        return [check_num(x, f"{k}[{j}]", c.where) for j, x in enumerate(v)]

    p.items("logits", n, row, min_len=n)
    p.str("logits_sha256", 64, None, pattern=_HEX64)
    p.num("atol", 0.0, math.inf, None)  # recorded for information: the tolerance is the library's (probe.py)
    check_free(p.data, p.prefix, c.where)
    return p.data


def check_task(data: Any, where: str) -> dict[str, Any]:
    """Validated task file (or `root.json`) as plain values, ready for `TaskFile(...)`."""
    c = Obj(data, where)
    check_version(c)
    task = check_task_name(c.data.get("task"), where=where) if "task" in c.data else c.str("task")
    p = c.sub("path")
    assert p is not None
    image_size = p.int("image_size", 1, MAX_IMAGE_SIZE)
    num_layers = p.int("num_layers", 0, MAX_LAYERS)
    adapters = p.items("adapter_layers", MAX_LAYERS, lambda v, k: check_int(v, k, where, 0, max(num_layers - 1, 0)), [])
    if len(set(adapters)) != len(adapters) or (adapters and num_layers == 0):
        raise p.fail("adapter_layers", f"must be distinct layers in [0, {num_layers - 1}], got {adapters}")
    components = p.items("components", 2 * MAX_LAYERS + 5, lambda v, k: _component(v, k, where))
    labels = _labels(c)
    return {
        "task": task, "image_size": image_size, "num_layers": num_layers, "adapter_layers": tuple(adapters),
        "adapter_dim": p.int("adapter_dim", 1, MAX_ADAPTER_DIM, 16), "components": components, "labels": labels,
        "preprocessing": _preprocessing(c, image_size), "hparams": c.free("hparams", {}) or {},
        "metrics": _metrics(c), "lineage": _lineage(c), "sizes": _sizes(c),
        "probe": _probe(c, image_size, len(labels)),
    }


# ---------------------------------------------------------------------------------------------------
# Component headers (safetensors)
# ---------------------------------------------------------------------------------------------------


def header_length(prefix: bytes, file_size: int, where: str) -> int:
    """The header length a safetensors file's first 8 bytes claim, checked against the limit and the file size."""
    what = "not a valid mu2hub safetensors component"
    if file_size < 8 or len(prefix) < 8:
        raise FormatError(f"{what}: truncated: {file_size} bytes, shorter than the 8-byte header length", path=where)
    (n,) = struct.unpack("<Q", prefix[:8])
    if n < 2 or n > MAX_HEADER_BYTES:
        raise FormatError(f"{what}: the header claims {n:,} bytes (limit {MAX_HEADER_BYTES:,})", path=where)
    if 8 + n > file_size:
        raise FormatError(f"{what}: truncated: the header alone claims {n:,} bytes, the file has {file_size:,}",
                          path=where)
    return n


def check_component_header(raw: bytes, file_size: int, where: str, *, kinds: Iterable[str] = HEADER_KINDS
                           ) -> dict[str, Any]:
    """A component file's header (`raw` = its first 8 + n bytes) -> {kind, shapes, metadata}, fully checked.

    Float32 only (docs/FORMAT.md); tensors packed back to back in name order from offset 0 to the end of the file,
    each exactly `prod(shape) * 4` bytes; `__metadata__` a str -> str map naming a known kind.
    """
    try:
        return _component_header(raw, file_size, where, tuple(kinds))
    except FormatError as e:
        what = "not a valid mu2hub safetensors component"
        raise FormatError(e.message if e.message.startswith(what) else f"{what}: {e.message}", path=where) from None


def _component_header(raw: bytes, file_size: int, where: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    n = header_length(raw, file_size, where)
    header = load_json(raw[8:8 + n], where, max_bytes=MAX_HEADER_BYTES)
    h = Obj(header, where, "header")
    meta = h.sub("__metadata__", {})
    assert meta is not None
    for k, v in meta.data.items():
        check_str(k, "__metadata__ key", where, 256)
        check_str(v, f"__metadata__.{k}", where, 1024)
    kind = meta.str("kind", 32, choices=kinds)
    meta.str("format", 32, choices=(COMPONENT_FORMAT,))
    names = sorted(k for k in header if k != "__metadata__")
    if len(names) > MAX_TENSORS:
        raise FormatError(f"{len(names)} tensors, over the {MAX_TENSORS} limit", path=where)
    shapes, offset = {}, 0
    for name in names:
        check_str(name, "tensor name", where, 256, pattern=_TENSOR_NAME)
        t = Obj(header[name], where, f"header.{name}")
        t.str("dtype", 16, choices=("F32",))
        shape = tuple(t.items("shape", MAX_RANK, lambda v, k: check_int(v, k, where, 0, MAX_DIM)))
        start, end = t.items("data_offsets", 2, lambda v, k: check_int(v, k, where, 0, 2**62), min_len=2)
        if start != offset or end - start != 4 * math.prod(shape):
            raise FormatError(f"tensor {name!r}: data_offsets [{start}, {end}] do not pack {list(shape)} float32 "
                              f"values from offset {offset} (not a canonical component)", path=where)
        shapes[name], offset = shape, end
    if 8 + n + offset > file_size:
        raise FormatError(f"truncated: its tensors need {8 + n + offset:,} bytes, the file has {file_size:,}", path=where)
    if 8 + n + offset < file_size:
        raise FormatError(f"{file_size - 8 - n - offset:,} bytes after the last tensor (not canonical)", path=where)
    return {"kind": kind, "shapes": shapes, "metadata": dict(meta.data)}


def check_finite(tensors: Mapping[str, Any], where: str) -> None:
    """Every weight must be a finite float: a NaN or Inf parameter makes every answer NaN (or fakes a probe)."""
    import numpy as np

    for name, t in tensors.items():
        if not np.isfinite(t).all():
            raise FormatError(f"tensor {name!r} holds NaN or Inf values", path=where)
