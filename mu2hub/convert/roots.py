"""Root checkpoints the µ2Net reference starts from: timm's Hub ViTs and big_vision / vit_jax `.npz` files.

The reference seeds every system with an AugReg ViT (L/16, B/16, Ti/16 i21k; munet_spec.md §4), published in two
forms: timm's Hub repos (`timm/vit_large_patch16_224.augreg_in21k`: `config.json` + `model.safetensors` with
timm's parameter names) and the original `.npz` files (`gs://vit_models/augreg/*.npz`, vit_jax / big_vision
names). Both convert exactly to mu2hub components; only tensors are read (safetensors, `np.load(allow_pickle=False)`).

What differs between the two, and is recorded in `Dims` rather than guessed:
- activation: timm's `nn.GELU` is exact (erf) -> `"gelu"`; Flax's `nn.gelu` is the tanh approximation ->
  `"gelu_tanh"` (vit_jax / big_vision, and so the reference itself).
- LayerNorm epsilon: 1e-6 in both (timm's ViT `partial(nn.LayerNorm, eps=1e-6)`, Flax's default); a
  transformers checkpoint carries its own in `config.json`.

`root_from_config` is what the evolution loop calls for `root.init`: the checkpoint at the configured image size
(position embedding resampled once, class token kept, as the reference loads L/16 at 384), capped at the
configured depth (Ti/16 with 3 layers for Chars), its head replaced by a zero head as the reference's loader does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from safetensors import safe_open

from ..errors import FormatError, RootMismatchError, ShapeMismatchError
from ..format.system import Dims, Structure, load_json
from .transformers import HostParams, _folder_fetcher, _hub_fetcher, _read_safetensors, read_transformers_checkpoint
from ..model import expected_shapes, resize_pos_embed, slot_kwargs
from ..hub.store import open_store, task_components
from ..format.schema import check_finite
from ..format.strictjson import MAX_JSON_BYTES
from ..format.files import malformed, read_bounded, regular_file

logger = logging.getLogger(__name__)

Shapes = Mapping[str, tuple[int, ...]]

#: `root.init` prefixes -> checkpoint format; a bare repo id or folder is a transformers checkpoint (as before).
#: `mu2hub:<repo|dir>[#task]` is a task of a published mu2hub system (the shipped pretrained roots are one-task repos).
FORMATS = ("timm", "big_vision", "transformers", "mu2hub")

#: timm's ViT size names -> (width, heads), from timm's `vision_transformer.py` model definitions.
TIMM_SIZES = {"tiny": (192, 3), "small": (384, 6), "medium": (512, 8), "base": (768, 12), "large": (1024, 16),
              "huge": (1280, 16), "giant": (1408, 16), "gigantic": (1664, 16)}
_TIMM_ARCH = re.compile(r"^vit_(?P<size>[a-z]+)_patch(?P<patch>\d+)_(?P<img>\d+)$")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass
class Checkpoint:
    """A ViT checkpoint as mu2hub parameters, at its native image size and depth."""

    structure: Structure
    params: HostParams
    labels: list[str]
    source: str
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:  # every reader builds one: a NaN or Inf weight is refused whatever the format
        for slot, tensors in self.params.items():
            check_finite(tensors, f"{self.source} ({slot})")


# ---------------------------------------------------------------------------------------------------
# Shared checks
# ---------------------------------------------------------------------------------------------------


def _key_diff(wanted: set[str], have: set[str], what: str) -> None:
    """big_vision-style structure diff: `-` expected but absent, `+` present but not understood."""
    missing, extra = sorted(wanted - have), sorted(have - wanted)
    if not (missing or extra):
        return
    lines = [f"{what}: tensors do not match the ViT its shapes describe:"]
    lines += (["expected, not in the checkpoint:"] + [f"  - {k}" for k in missing]) if missing else []
    lines += (["in the checkpoint, not understood:"] + [f"  + {k}" for k in extra]) if extra else []
    raise FormatError("\n".join(lines))


def _check(structure: Structure, params: HostParams, what: str) -> None:
    problems = []
    for slot in structure.slots():
        want = expected_shapes(slot.split(".")[0], structure.dims, **slot_kwargs(structure, slot))
        have = {k: tuple(v.shape) for k, v in params[slot].items()}
        problems += [f"{slot}.{k}: {have.get(k)} (expected {want.get(k)})" for k in sorted(want | have) if have.get(k) != want.get(k)]
    if problems:
        raise ShapeMismatchError(f"{what} does not fit a ViT of {structure.dims}:\n  " + "\n  ".join(problems))


def _grid(n_tokens: int, what: str) -> int:
    g = int(round(n_tokens**0.5))
    if g * g != n_tokens:
        raise FormatError(f"{what}: position embedding of {n_tokens} patch tokens is not a square grid")
    return g


def _zero_head(hidden: int, n: int = 1) -> dict[str, np.ndarray]:
    return {"kernel": np.zeros((hidden, n), np.float32), "bias": np.zeros((n,), np.float32)}


# ---------------------------------------------------------------------------------------------------
# timm (`timm/vit_*` Hub repos: config.json + model.safetensors)
# ---------------------------------------------------------------------------------------------------


def _timm_arch(config: Mapping[str, Any], where: str) -> tuple[int, int, dict[str, Any]]:
    """(width, heads) of a plain timm ViT architecture and its model_args, or a refusal naming what is not plain."""
    arch = str(config.get("architecture", ""))
    m = _TIMM_ARCH.match(arch)
    if not m or m["size"] not in TIMM_SIZES:
        raise FormatError(f"timm architecture {arch!r} is not a plain ViT mu2hub can import "
                          f"(supported: vit_<{'|'.join(TIMM_SIZES)}>_patch<P>_<S>)", path=where)
    args = dict(config.get("model_args") or {})
    bad = {k: args[k] for k in ("no_embed_class", "qk_norm", "pre_norm", "dynamic_img_size", "reg_tokens", "fc_norm")
           if args.get(k)}
    bad.update({k: args[k] for k in ("init_values", "act_layer", "norm_layer") if args.get(k) is not None})
    if args.get("class_token", True) is not True:
        bad["class_token"] = args["class_token"]
    pool = args.get("global_pool", config.get("global_pool", "token"))
    if pool != "token":
        bad["global_pool"] = pool
    if bad:
        raise FormatError(f"timm model_args {bad} describe a ViT variant mu2hub cannot run exactly (it needs a "
                          "class token read after the final LayerNorm, no register tokens or layer scale)", path=where)
    return (*TIMM_SIZES[m["size"]], args)


def _timm_dims(config: Mapping[str, Any], shapes: Shapes, where: str) -> tuple[Dims, int, int]:
    """(Dims, native image size, depth) of a timm ViT from its config.json and tensor shapes."""
    width, heads, args = _timm_arch(config, where)
    if "cls_token" not in shapes or "patch_embed.proj.weight" not in shapes or "pos_embed" not in shapes:
        raise FormatError("no cls_token / pos_embed / patch_embed.proj.weight: not a timm ViT checkpoint", path=where)
    hidden, channels, patch, patch_w = shapes["patch_embed.proj.weight"]
    if patch != patch_w:
        raise FormatError(f"non-square patches {patch}x{patch_w}", path=where)
    heads = int(args.get("num_heads", heads if hidden == width else 0))
    if heads <= 0:
        raise FormatError(f"{config['architecture']} has width {hidden}, not {width}, and its model_args name no "
                          "num_heads", path=where)
    blocks = {int(m[1]) for k in shapes if (m := _TIMM_BLOCK.match(k))}
    depth = 1 + max(blocks, default=-1)
    mlp = shapes["blocks.0.mlp.fc1.weight"][0] if depth else 4 * hidden
    grid = _grid(shapes["pos_embed"][1] - 1, where)
    dims = Dims(hidden, heads, mlp, patch, num_channels=channels, layer_norm_eps=1e-6, activation="gelu")
    return dims, grid * patch, depth


def _timm_keys(state: Mapping[str, Any], depth: int) -> set[str]:
    """The tensor names a plain timm ViT of this depth has (q/k/v bias and head optional, as timm allows)."""
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    for i in range(depth):
        keys |= {f"blocks.{i}.{n}.{p}" for n in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
                 for p in ("weight", "bias")} - ({f"blocks.{i}.attn.qkv.bias"} if f"blocks.{i}.attn.qkv.bias" not in state else set())
    return keys | ({"head.weight", "head.bias"} if "head.weight" in state else set())


def _timm_params(state: Mapping[str, np.ndarray], structure: Structure, *, head: bool,
                 where: str) -> tuple[HostParams, int]:
    _key_diff(_timm_keys(state, structure.num_layers), set(state), where)
    d = structure.dims.hidden_size
    f32 = lambda k: np.asarray(state[k], np.float32)  # noqa: E731
    params: HostParams = {
        "patch_embed": {"kernel": f32("patch_embed.proj.weight").transpose(2, 3, 1, 0), "bias": f32("patch_embed.proj.bias")},
        "cls": {"token": f32("cls_token")},
        "pos_embed": {"embedding": f32("pos_embed")},
        "norm": {"scale": f32("norm.weight"), "bias": f32("norm.bias")},
    }
    for i in range(structure.num_layers):
        b = f"blocks.{i}."
        qkv_w = f32(f"{b}attn.qkv.weight")
        qkv_b = f32(f"{b}attn.qkv.bias") if f"{b}attn.qkv.bias" in state else np.zeros(3 * d, np.float32)  # qkv_bias=False
        block = {"norm1.scale": f32(f"{b}norm1.weight"), "norm1.bias": f32(f"{b}norm1.bias"),
                 "norm2.scale": f32(f"{b}norm2.weight"), "norm2.bias": f32(f"{b}norm2.bias"),
                 "attn.out.kernel": f32(f"{b}attn.proj.weight").T, "attn.out.bias": f32(f"{b}attn.proj.bias"),
                 "mlp.fc1.kernel": f32(f"{b}mlp.fc1.weight").T, "mlp.fc1.bias": f32(f"{b}mlp.fc1.bias"),
                 "mlp.fc2.kernel": f32(f"{b}mlp.fc2.weight").T, "mlp.fc2.bias": f32(f"{b}mlp.fc2.bias")}
        for j, name in enumerate(("query", "key", "value")):  # timm fuses q, k, v along the output axis, in that order
            block[f"attn.{name}.kernel"] = qkv_w[j * d:(j + 1) * d].T
            block[f"attn.{name}.bias"] = qkv_b[j * d:(j + 1) * d]
        params[f"block.{i}"] = {k: np.ascontiguousarray(v) for k, v in block.items()}
    n_classes = int(state["head.weight"].shape[0]) if "head.weight" in state else 0
    params["head"] = ({"kernel": f32("head.weight").T.copy(), "bias": f32("head.bias")} if head and n_classes
                      else _zero_head(d, 1))
    return params, n_classes


def read_timm_checkpoint(dir_or_repo: str | os.PathLike, *, head: bool = True, revision: str | None = None,
                         cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                         local_files_only: bool = False, force_download: bool = False) -> Checkpoint:
    """Read a timm ViT (`config.json` + `model.safetensors`, a local folder or a Hub repo) as mu2hub parameters.

    Args:
        dir_or_repo (`str`): e.g. `"timm/vit_large_patch16_224.augreg_in21k"`, or a folder `timm.models.save_for_hf`
            wrote.
        head (`bool`, defaults to `True`): keep the classifier (labels `"0".."N-1"`, or timm's `label_names`);
            False gives a zero one-class head, as a root needs.
        revision, cache_dir, token, local_files_only, force_download: as in `hf_hub_download`.

    Raises:
        FormatError: not a plain timm ViT (another architecture, register tokens, layer scale, average pooling…),
            or tensors that do not match; the message names the file.
    """
    fetch = _fetcher(dir_or_repo, revision=revision, cache_dir=cache_dir, token=token,
                     local_files_only=local_files_only, force_download=force_download)
    config_path = fetch("config.json")
    config = load_json(read_bounded(config_path, MAX_JSON_BYTES, "config.json"), str(config_path))
    if not isinstance(config, dict) or "architecture" not in config:
        raise FormatError("no 'architecture': not a timm config.json (a transformers ViT? use from_transformers)",
                          path=str(config_path))
    _timm_arch(config, str(config_path))  # a non-ViT fails here, before its weights are downloaded
    weights = fetch("model.safetensors")
    with malformed(str(weights), "not a plain timm ViT"):
        return _timm(dir_or_repo, config, weights, head)


def _timm(dir_or_repo: Any, config: dict[str, Any], weights: Path, head: bool) -> Checkpoint:
    state = _read_safetensors(weights)
    dims, size, depth = _timm_dims(config, {k: tuple(v.shape) for k, v in state.items()}, str(weights))
    structure = Structure(dims, size, depth, 1)
    params, n_classes = _timm_params(state, structure, head=head, where=str(weights))
    pcfg = config.get("pretrained_cfg") or {}
    names = pcfg.get("label_names")
    labels = ([str(x) for x in names] if isinstance(names, list) and len(names) == n_classes
              else [str(i) for i in range(n_classes)]) if head and n_classes else (["0"] if head else ["root"])
    structure = dataclasses.replace(structure, num_classes=len(labels))
    _check(structure, params, str(weights))
    mean, std = pcfg.get("mean", [0.5] * 3), pcfg.get("std", [0.5] * 3)
    if list(mean) != [0.5] * len(mean) or list(std) != [0.5] * len(std):
        logger.warning("%s was trained on inputs normalised with mean %s / std %s; mu2hub paths see [-1, 1] "
                       "(AugReg's mean = std = 0.5)", dir_or_repo, mean, std)
    return Checkpoint(structure, params, labels, f"timm:{dir_or_repo}",
                      {"format": "timm", "architecture": config["architecture"], "mean": mean, "std": std,
                       "image_size": size, "num_layers": depth, "num_classes": n_classes})


def _fetcher(dir_or_repo: str | os.PathLike, **hub: Any) -> Callable[[str], Path]:
    if hub.get("force_download") and hub.get("local_files_only"):
        raise ValueError("force_download=True and local_files_only=True contradict each other; pick one")
    if os.path.isdir(dir_or_repo):
        return _folder_fetcher(Path(dir_or_repo))
    revision = hub.pop("revision", None)
    return _hub_fetcher(str(dir_or_repo), revision, **hub)


# ---------------------------------------------------------------------------------------------------
# big_vision / vit_jax (`.npz`, '/'-joined Flax parameter names)
# ---------------------------------------------------------------------------------------------------

# Block module names: vit_jax (the AugReg files; pre-Linen auto-names) and big_vision (Linen auto-names).
_BV_BLOCK = {
    "vit_jax": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "big_vision": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of an `.npz` from the array headers only (nothing is loaded, nothing unpickled)."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if not name.endswith(".npy"):
                    continue
                with z.open(name) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(f)
                    if dtype.hasobject:
                        raise FormatError(f"{name} holds Python objects (pickle); refused", path=str(path))
                    shapes[name[:-4]] = tuple(shape)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise FormatError(f"not a valid .npz file: {e}", path=str(path)) from e
    return shapes


def _bv_layout(shapes: Shapes, where: str) -> tuple[str, bool, str]:
    """(naming, scanned, position-embedding key) of a big_vision / vit_jax ViT, or a clear refusal."""
    if "conv_root/kernel" in shapes:
        raise FormatError("a hybrid ResNet+ViT (conv_root): mu2hub imports plain ViTs only", path=where)
    if "embedding/kernel" not in shapes or "Transformer/encoder_norm/scale" not in shapes:
        sample = ", ".join(sorted(shapes)[:6]) or "(no arrays)"
        raise FormatError(f"not a ViT checkpoint (no embedding/kernel or Transformer/encoder_norm; keys: {sample}, …)",
                          path=where)
    if "cls" not in shapes:
        raise FormatError("no 'cls' token: a pool_type without class token (gap / map) cannot be a mu2hub path",
                          path=where)
    if any(k.startswith(("MAPHead", "Transformer/encoderblock_0/ls")) for k in shapes):
        raise FormatError("MAP head / layer scale parameters: not a plain ViT", path=where)
    scanned = any(k.startswith("Transformer/encoderblock/") for k in shapes)
    probe = "Transformer/encoderblock/" if scanned else "Transformer/encoderblock_0/"
    naming = "vit_jax" if f"{probe}MultiHeadDotProductAttention_1/query/kernel" in shapes else "big_vision"
    pos = next((k for k in ("Transformer/posembed_input/pos_embedding", "pos_embedding", "Transformer/pos_embedding")
                if k in shapes), None)
    if pos is None:
        raise FormatError("no learned position embedding (a sincos posemb is not stored; mu2hub needs the tensor)", path=where)
    return naming, scanned, pos


def _bv_dims(shapes: Shapes, where: str) -> tuple[Dims, int, int]:
    naming, scanned, pos = _bv_layout(shapes, where)
    ln1, mha, _, mlp = _BV_BLOCK[naming]
    patch, patch_w, channels, hidden = shapes["embedding/kernel"]
    if patch != patch_w:
        raise FormatError(f"non-square patches {patch}x{patch_w}", path=where)
    q = shapes[f"Transformer/encoderblock{'' if scanned else '_0'}/{mha}/query/kernel"][-3:]
    mlp_dim = shapes[f"Transformer/encoderblock{'' if scanned else '_0'}/{mlp}/Dense_0/kernel"][-1]
    if scanned:
        depth = shapes[f"Transformer/encoderblock/{ln1}/scale"][0]
    else:
        depth = 1 + max(int(m[1]) for k in shapes if (m := re.match(r"^Transformer/encoderblock_(\d+)/", k)))
    n = shapes[pos][1]
    grid = _grid(n if _is_square(n) else n - 1, where)
    dims = Dims(hidden, q[1], mlp_dim, patch, num_channels=channels, layer_norm_eps=1e-6, activation="gelu_tanh")
    return dims, grid * patch, depth


def _is_square(n: int) -> bool:
    return int(round(n**0.5)) ** 2 == n


def read_big_vision_checkpoint(path: str | os.PathLike, *, head: bool = True) -> Checkpoint:
    """Read a big_vision / vit_jax ViT `.npz` (the AugReg files the reference starts from) as mu2hub parameters.

    Accepts the vit_jax naming (`Transformer/encoderblock_N/MultiHeadDotProductAttention_1/...`,
    `Transformer/posembed_input/pos_embedding`), big_vision's own (`..._0` modules, `pos_embedding` without a class
    position: the class position becomes zero, which computes the same), and big_vision's scanned layout
    (`Transformer/encoderblock/...` stacked over depth). Loaded with `allow_pickle=False`.

    Args:
        path (`str`): the `.npz` file.
        head (`bool`, defaults to `True`): keep the classifier (labels `"0".."N-1"`); False gives a zero one-class
            head and also drops a `pre_logits` layer, as a root needs.

    Raises:
        FormatError: not a plain ViT (hybrid, no class token, MAP head, another model), a `pre_logits` layer with
            `head=True`, or tensors that do not fit; the message names the file.
    """
    path = Path(path)
    where = str(path)
    regular_file(path, "checkpoint")
    with malformed(where, "not a plain big_vision / vit_jax ViT"):
        return _big_vision(path, where, head)


def _big_vision(path: Path, where: str, head: bool) -> Checkpoint:
    shapes = _npz_shapes(path)
    dims, size, depth = _bv_dims(shapes, where)
    naming, scanned, pos_key = _bv_layout(shapes, where)
    if head and "pre_logits/kernel" in shapes:
        raise FormatError("has a pre_logits (representation) layer, which a mu2hub path cannot express; "
                          "import it with head=False (a root drops the classifier anyway)", path=where)
    with np.load(path, allow_pickle=False) as z:
        t = {k: np.asarray(z[k], np.float32) for k in shapes}
    ln1, mha, ln2, mlp = _BV_BLOCK[naming]
    d, heads = dims.hidden_size, dims.num_heads
    pos = t[pos_key]
    if _is_square(pos.shape[1]):  # big_vision adds the posemb before prepending the class token: class position 0
        pos = np.concatenate([np.zeros((1, 1, d), np.float32), pos], axis=1)
    params: HostParams = {"patch_embed": {"kernel": t["embedding/kernel"], "bias": t["embedding/bias"]},
                      "cls": {"token": t["cls"]}, "pos_embed": {"embedding": pos},
                      "norm": {"scale": t["Transformer/encoder_norm/scale"], "bias": t["Transformer/encoder_norm/bias"]}}
    used = {"embedding/kernel", "embedding/bias", "cls", pos_key, "Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias"}
    for i in range(depth):
        prefix = "Transformer/encoderblock/" if scanned else f"Transformer/encoderblock_{i}/"
        get = (lambda k: t[prefix + k][i]) if scanned else (lambda k: t[prefix + k])
        block = {"norm1.scale": get(f"{ln1}/scale"), "norm1.bias": get(f"{ln1}/bias"),
                 "norm2.scale": get(f"{ln2}/scale"), "norm2.bias": get(f"{ln2}/bias"),
                 "mlp.fc1.kernel": get(f"{mlp}/Dense_0/kernel"), "mlp.fc1.bias": get(f"{mlp}/Dense_0/bias"),
                 "mlp.fc2.kernel": get(f"{mlp}/Dense_1/kernel"), "mlp.fc2.bias": get(f"{mlp}/Dense_1/bias"),
                 "attn.out.kernel": get(f"{mha}/out/kernel").reshape(d, d), "attn.out.bias": get(f"{mha}/out/bias")}
        for name in ("query", "key", "value"):  # DenseGeneral kernels (d, heads, head_dim) -> (d, heads * head_dim)
            block[f"attn.{name}.kernel"] = get(f"{mha}/{name}/kernel").reshape(d, heads * (d // heads))
            block[f"attn.{name}.bias"] = get(f"{mha}/{name}/bias").reshape(d)
        params[f"block.{i}"] = {k: np.ascontiguousarray(v) for k, v in block.items()}
        names = [f"{ln1}/scale", f"{ln1}/bias", f"{ln2}/scale", f"{ln2}/bias"] + [
            f"{mlp}/Dense_{j}/{p}" for j in (0, 1) for p in ("kernel", "bias")] + [
            f"{mha}/{n}/{p}" for n in ("query", "key", "value", "out") for p in ("kernel", "bias")]
        used |= {prefix + n for n in names}
    n_classes = shapes["head/kernel"][1] if "head/kernel" in shapes else 0
    if head and n_classes:
        used |= {"head/kernel", "head/bias"}
    dropped = set() if head else {"head/kernel", "head/bias", "pre_logits/kernel", "pre_logits/bias"}
    _key_diff(used, set(shapes) - dropped, where)
    params["head"] = ({"kernel": t["head/kernel"], "bias": t["head/bias"]} if head and n_classes
                      else _zero_head(d, 1))
    labels = [str(i) for i in range(n_classes)] if head and n_classes else (["0"] if head else ["root"])
    structure = Structure(dims, size, depth, len(labels))
    _check(structure, params, where)
    return Checkpoint(structure, params, labels, f"big_vision:{path}",
                      {"format": "big_vision", "naming": naming, "scanned": scanned, "image_size": size,
                       "num_layers": depth, "num_classes": n_classes})


# ---------------------------------------------------------------------------------------------------
# mu2hub: a task of a published system (a pretrained root shipped as a one-task repo)
# ---------------------------------------------------------------------------------------------------


def read_mu2hub_checkpoint(where: str, *, head: bool = True, **hub: Any) -> Checkpoint:
    """`<repo|dir>[#task]`: that task's path (the repo's only task when none is named), verified against its ids.

    This is how the project's own pretrained roots ship (`training/pretrain_root.py`): the published format is
    already safetensors + JSON with content ids, so a root needs no second checkpoint format."""
    repo, _, task = where.partition("#")
    store = open_store(repo, **hub)
    if not task:
        tasks = store.list_tasks()
        if len(tasks) != 1:
            raise FormatError(f"{repo} holds {len(tasks)} tasks ({', '.join(tasks[:5])}): name one as "
                              f"'mu2hub:{repo}#<task>'", path=repo)
        task = tasks[0]
    config, tf = store.read_config(), store.read_task(task)
    structure = tf.structure(config.dims)
    blobs = task_components(store, tf)
    params = {ref.slot: dict(blobs[ref.id][1]) for ref in tf.components}
    labels = list(tf.labels)
    if not head:
        params["head"] = _zero_head(structure.dims.hidden_size)
        structure, labels = dataclasses.replace(structure, num_classes=1), ["root"]
    # a local folder is named by its name only: a published root.json must not carry this machine's paths
    name = Path(repo).name if os.path.isdir(repo) else repo
    return Checkpoint(structure, params, labels, f"mu2hub:{name}#{task}",
                      {"format": "mu2hub", "task": task, "image_size": tf.image_size, "num_layers": tf.num_layers,
                       "test_accuracy": tf.metrics.get("test_accuracy")})


# ---------------------------------------------------------------------------------------------------
# `root.init`: dispatch, configured size and depth
# ---------------------------------------------------------------------------------------------------


def parse_init(init: str) -> tuple[str, str]:
    """`"timm:<repo|dir>"`, `"big_vision:<file.npz>"`, `"transformers:<repo|dir>"`, `"mu2hub:<repo|dir>[#task]"`;
    bare `.npz` -> big_vision, anything else bare -> transformers (what `root.init` meant before these formats)."""
    fmt, sep, rest = init.partition(":")
    if sep and fmt in FORMATS:
        return fmt, rest
    return ("big_vision" if init.endswith(".npz") else "transformers"), init


def read_checkpoint(init: str, *, head: bool = True, **hub: Any) -> Checkpoint:
    """Any supported checkpoint named as `root.init` names it (see `parse_init`)."""
    fmt, where = parse_init(init)
    if fmt == "timm":
        return read_timm_checkpoint(where, head=head, **hub)
    if fmt == "mu2hub":
        return read_mu2hub_checkpoint(where, head=head, **hub)
    if fmt == "big_vision":
        return read_big_vision_checkpoint(where, head=head)
    structure, params, labels = read_transformers_checkpoint(where, **hub)
    if not head:
        params = {**params, "head": _zero_head(structure.dims.hidden_size)}
        structure, labels = dataclasses.replace(structure, num_classes=1), ["root"]
    return Checkpoint(structure, params, labels, f"transformers:{where}",
                      {"format": "transformers", "image_size": structure.image_size, "num_layers": structure.num_layers})


def at_size(ckpt: Checkpoint, image_size: int, num_layers: int | None = None) -> tuple[Structure, HostParams]:
    """The checkpoint at `image_size` (position grid resampled once, class token kept) and its first `num_layers`."""
    s = ckpt.structure
    depth = s.num_layers if num_layers is None else num_layers
    if image_size % s.dims.patch_size:
        raise RootMismatchError(f"{ckpt.source}: image size {image_size} is not a multiple of its patch size "
                                f"{s.dims.patch_size}")
    if not 0 <= depth <= s.num_layers:
        raise RootMismatchError(f"{ckpt.source}: has {s.num_layers} layers; cannot take {depth}")
    structure = dataclasses.replace(s, image_size=image_size, num_layers=depth)
    params = {slot: ckpt.params[slot] for slot in structure.slots()}
    params["pos_embed"] = {"embedding": np.asarray(resize_pos_embed(ckpt.params["pos_embed"]["embedding"], structure.grid))}
    return structure, params


_DIM_KEYS = ("hidden_size", "num_heads", "mlp_dim", "patch_size", "num_channels", "layer_norm_eps", "activation")


def check_config_dims(root: Mapping[str, Any], dims: Dims, source: str) -> Dims:
    """The checkpoint's dims, after checking every dimension the config states agrees with them."""
    stated = {k: root[k] for k in _DIM_KEYS if root.get(k) is not None}
    wrong = [f"{k}: config says {v!r}, checkpoint has {getattr(dims, k)!r}" for k, v in stated.items()
             if (float(v) != getattr(dims, k) if k == "layer_norm_eps" else v != getattr(dims, k))]
    if wrong:
        raise RootMismatchError(f"config root disagrees with {source}: " + "; ".join(wrong)
                                + " (drop these keys from `root` to take the checkpoint's values)")
    return dims


def checkpoint_dims(init: str, **hub: Any) -> Dims:
    """A checkpoint's `Dims` from its headers only (config.json, safetensors / npy headers): no weights loaded."""
    fmt, where = parse_init(init)
    if fmt == "big_vision":
        return _bv_dims(_npz_shapes(Path(where)), where)[0]
    if fmt == "mu2hub":
        return open_store(where.partition("#")[0], **hub).read_config().dims
    fetch = _fetcher(where, **hub)
    config_path = fetch("config.json")
    config = load_json(read_bounded(config_path, MAX_JSON_BYTES, "config.json"), str(config_path))
    if fmt == "transformers":
        from .transformers import dims_from_vit_config

        return dims_from_vit_config(config)
    weights = fetch("model.safetensors")
    with safe_open(str(weights), framework="numpy") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return _timm_dims(config, shapes, str(weights))[0]


def root_dims(root: Mapping[str, Any]) -> Dims:
    """The system's dims for a config's `root`: stated in full for a random root, else the checkpoint's (checked)."""
    init = root.get("init", "random")
    if init == "random":
        return Dims(root["hidden_size"], root["num_heads"], root["mlp_dim"], root["patch_size"],
                    num_channels=root.get("num_channels", 3), layer_norm_eps=root.get("layer_norm_eps", 1e-6),
                    activation=root.get("activation", "gelu"))
    return check_config_dims(root, checkpoint_dims(init), init)


def root_from_config(root: Mapping[str, Any]) -> tuple[Structure, HostParams, dict[str, Any]]:
    """The root path for `root.init`: checked dims, configured image size and depth, zero one-class head.

    Returns `(structure, params, lineage)`; lineage records the checkpoint and its native size and depth.
    """
    ckpt = read_checkpoint(root["init"], head=False)
    check_config_dims(root, ckpt.structure.dims, ckpt.source)
    structure, params = at_size(ckpt, int(root.get("image_size", ckpt.structure.image_size)),
                                root.get("num_layers", ckpt.structure.num_layers))
    return structure, params, {"init": ckpt.source, **{f"checkpoint_{k}": v for k, v in ckpt.info.items()}}
