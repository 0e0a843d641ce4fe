"""transformers ViT checkpoints <-> mu2hub paths: import `google/vit-*` weights as a root, export a path.

Pure conversion between the two parameter layouts plus one reader (local folder or Hub repo) and one writer
(`config.json` + `model.safetensors` + `preprocessor_config.json`, loadable by `transformers.pipeline`).
Tensors are read and written with `safetensors.numpy`: torch is never needed and nothing is unpickled.

What the two models share, and why the mapping is exact: transformers' `ViTForImageClassification` is a
pre-LN ViT with GELU (exact erf `gelu`, or the tanh approximation `gelu_pytorch_tanh` / `gelu_new`, which
`Dims.activation` records as "gelu_tanh"), biased q/k/v projections and a classifier on the class token after the
final LayerNorm, which is what `mu2hub.model.apply_path` computes. `ViTModel`'s pooler (dense + tanh) is
not on that route and is dropped on import.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import safetensors.flax
import safetensors.numpy
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from ..errors import FormatError, IncompatibleTaskError, LocalFilesMissingError, ShapeMismatchError
from ..utils.extras import require
from ..format.system import Dims, Structure, check_relpath, load_json
from ..model import expected_shapes, resize_pos_embed, slot_kwargs
from ..hub.transfer import hub_call
from ..format.files import regular_file

if TYPE_CHECKING:
    import transformers

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

_ARCHITECTURES = ("ViTForImageClassification", "ViTModel")
# transformers' `hidden_act` <-> `Dims.activation`: "gelu_new" and "gelu_pytorch_tanh" are both the tanh
# approximation (Flax's `nn.gelu`); exports write the latter, torch's fused kernel.
_ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
_HIDDEN_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
_PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}
_SHA = re.compile(r"^[0-9a-f]{40}$")

# How a tensor's layout differs between torch and mu2hub.
_COPY = "copy"
_LINEAR = "linear"  # torch Linear weight (out, in) <-> kernel (in, out)
_CONV = "conv"  # torch Conv2d weight OIHW <-> HWIO kernel

HostParams = dict[str, dict[str, np.ndarray]]

# ---------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------


class _NoTorchAdvice(logging.Filter):
    """Drops transformers' import-time advice "PyTorch was not found. Models won't be available": mu2hub reads and
    writes configs and safetensors only, never torch models (and transformers' `__init__` runs twice, so it came
    twice: on import, and again when `save_pretrained` of the image processor re-imports it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "PyTorch was not found" not in record.getMessage()


def _transformers():
    """transformers, imported when a conversion needs its config and processor classes (the `interop` extra):
    the generic readers below (`_read_safetensors`, the fetchers) serve timm and big_vision roots without it."""
    quiet = logging.getLogger("transformers")
    if not any(isinstance(f, _NoTorchAdvice) for f in quiet.filters):
        quiet.addFilter(_NoTorchAdvice())
    return require("transformers")


def _as_vit_config(cfg: Mapping[str, Any] | transformers.ViTConfig) -> transformers.ViTConfig:
    """A `config.json` dict becomes a ViTConfig so that absent keys take transformers' defaults (eps 1e-12)."""
    transformers = _transformers()
    if isinstance(cfg, transformers.ViTConfig):
        return cfg
    if not isinstance(cfg, Mapping):
        raise FormatError(f"a ViT config must be a dict or a ViTConfig, got {type(cfg).__name__}")
    model_type = cfg.get("model_type", "vit")
    if model_type != "vit":
        raise FormatError(f"model_type {model_type!r} is not a ViT checkpoint mu2hub can import (supported: 'vit')")
    return transformers.ViTConfig.from_dict(dict(cfg))


def _square(value: int | Sequence[int], name: str) -> int:
    if isinstance(value, int):
        return value
    if len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise FormatError(f"{name} {list(value)} is not square; mu2hub paths use square images and patches")


def dims_from_vit_config(cfg: Mapping[str, Any] | transformers.ViTConfig) -> Dims:
    """The shared dimensions of a transformers ViT config (a `config.json` dict or a `ViTConfig`).

    Raises:
        FormatError (a `ValueError`): the config describes a model mu2hub cannot run exactly: another model
            type or architecture, an activation other than GELU (exact or tanh), q/k/v without bias, or
            non-square images/patches. Every problem is listed.
    """
    c = _as_vit_config(cfg)
    problems = []
    unknown = [a for a in c.architectures or () if a not in _ARCHITECTURES]
    if unknown:
        problems.append(f"architectures {unknown} (supported: {list(_ARCHITECTURES)})")
    if c.hidden_act not in _ACTIVATIONS:
        problems.append(f"hidden_act {c.hidden_act!r} (supported: {sorted(_ACTIVATIONS)})")
    if not c.qkv_bias:
        problems.append("qkv_bias=False (mu2hub's attention projections always have a bias)")
    if problems:
        raise FormatError("transformers ViT config not supported by mu2hub: " + "; ".join(problems))
    return Dims(
        hidden_size=c.hidden_size,
        num_heads=c.num_attention_heads,
        mlp_dim=c.intermediate_size,
        patch_size=_square(c.patch_size, "patch_size"),
        num_channels=c.num_channels,
        layer_norm_eps=float(c.layer_norm_eps),
        activation=_ACTIVATIONS[c.hidden_act],
    )


def _structure_and_labels(cfg: Mapping[str, Any] | transformers.ViTConfig) -> tuple[Structure, list[str]]:
    c = _as_vit_config(cfg)
    dims = dims_from_vit_config(c)
    if c.num_labels < 1:
        raise FormatError("num_labels is 0 (the classifier is an identity); mu2hub paths need at least one class")
    id2label = {int(k): str(v) for k, v in c.id2label.items()}
    if sorted(id2label) != list(range(len(id2label))):
        raise FormatError(f"id2label keys {sorted(id2label)} are not 0..{len(id2label) - 1}")
    labels = [id2label[i] for i in range(len(id2label))]
    return Structure(dims, _square(c.image_size, "image_size"), c.num_hidden_layers, len(labels)), labels


def vit_config_for(dims: Dims, structure: Structure, labels: Sequence[str]) -> transformers.ViTConfig:
    """The `ViTConfig` of a `ViTForImageClassification` that computes exactly this (adapter-free) path."""
    if dims != structure.dims:
        raise ValueError(f"dims {dims} differ from the structure's {structure.dims}")
    if len(labels) != structure.num_classes:
        raise ValueError(f"{len(labels)} labels for a head with {structure.num_classes} classes")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct: transformers' label2id maps each name to one class")
    return _transformers().ViTConfig(
        hidden_size=dims.hidden_size,
        num_hidden_layers=structure.num_layers,
        num_attention_heads=dims.num_heads,
        intermediate_size=dims.mlp_dim,
        hidden_act=_HIDDEN_ACT[dims.activation],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=dims.layer_norm_eps,
        image_size=structure.image_size,
        patch_size=dims.patch_size,
        num_channels=dims.num_channels,
        qkv_bias=True,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        architectures=["ViTForImageClassification"],
    )


# ---------------------------------------------------------------------------------------------------
# Parameter names
# ---------------------------------------------------------------------------------------------------


# A block's modules (mu2hub tensor prefix -> transformers module) in the two namings transformers uses:
# "checkpoint" is what model.safetensors files hold (google/vit-*, save_pretrained); "module" is the
# in-memory `model.state_dict()` of transformers >= 5.x, which renames on load and back on save.
_BLOCK_NAMES = {
    "checkpoint": ("encoder.layer.{i}.", {
        "norm1.": "layernorm_before",
        "attn.query.": "attention.attention.query",
        "attn.key.": "attention.attention.key",
        "attn.value.": "attention.attention.value",
        "attn.out.": "attention.output.dense",
        "norm2.": "layernorm_after",
        "mlp.fc1.": "intermediate.dense",
        "mlp.fc2.": "output.dense",
    }),
    "module": ("layers.{i}.", {
        "norm1.": "layernorm_before",
        "attn.query.": "attention.q_proj",
        "attn.key.": "attention.k_proj",
        "attn.value.": "attention.v_proj",
        "attn.out.": "attention.o_proj",
        "norm2.": "layernorm_after",
        "mlp.fc1.": "mlp.fc1",
        "mlp.fc2.": "mlp.fc2",
    }),
}


def _name_table(num_layers: int, prefix: str, naming: str = "checkpoint") -> dict[tuple[str, str], tuple[str, str]]:
    """(slot, tensor) -> (transformers key, layout change) for every tensor of the model."""
    table = {
        ("patch_embed", "kernel"): (f"{prefix}embeddings.patch_embeddings.projection.weight", _CONV),
        ("patch_embed", "bias"): (f"{prefix}embeddings.patch_embeddings.projection.bias", _COPY),
        ("cls", "token"): (f"{prefix}embeddings.cls_token", _COPY),
        ("pos_embed", "embedding"): (f"{prefix}embeddings.position_embeddings", _COPY),
    }

    def norm(slot: str, ours: str, theirs: str) -> None:
        table[(slot, f"{ours}scale")] = (f"{theirs}.weight", _COPY)
        table[(slot, f"{ours}bias")] = (f"{theirs}.bias", _COPY)

    def linear(slot: str, ours: str, theirs: str) -> None:
        table[(slot, f"{ours}kernel")] = (f"{theirs}.weight", _LINEAR)
        table[(slot, f"{ours}bias")] = (f"{theirs}.bias", _COPY)

    block, modules = _BLOCK_NAMES[naming]
    for i in range(num_layers):
        base = prefix + block.format(i=i)
        for ours, theirs in modules.items():
            (norm if ours.startswith("norm") else linear)(f"block.{i}", ours, base + theirs)
    norm("norm", "", f"{prefix}layernorm")
    linear("head", "", "classifier")  # outside the `vit.` prefix in ViTForImageClassification
    return table


def _to_mu2hub(x: Any, layout: str, key: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    ndim = {_LINEAR: 2, _CONV: 4}.get(layout, x.ndim)
    if x.ndim != ndim:
        raise ShapeMismatchError(f"{key} has shape {x.shape}; expected a {ndim}-d weight")
    if layout == _LINEAR:
        return np.ascontiguousarray(x.T)
    if layout == _CONV:
        return np.ascontiguousarray(x.transpose(2, 3, 1, 0))
    return x


def _to_torch(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == _LINEAR:
        return np.ascontiguousarray(x.T)
    if layout == _CONV:
        return np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    return np.ascontiguousarray(x)


def _check_shapes(structure: Structure, params: Mapping[str, Mapping[str, Any]], what: str) -> None:
    """Exact shapes (the position grid included: a transformers ViT does not resample it)."""
    problems = [f"unexpected slot {slot!r}" for slot in sorted(set(params) - set(structure.slots()))]
    for slot in structure.slots():
        want = expected_shapes(slot.split(".")[0], structure.dims, **slot_kwargs(structure, slot))
        have = {k: tuple(np.shape(v)) for k, v in params.get(slot, {}).items()}
        wrong = [
            f"{slot}.{k}: {have.get(k, 'missing')} (expected {want.get(k, 'nothing')})"
            for k in sorted(want.keys() | have.keys())
            if have.get(k) != want.get(k)
        ]
        problems.extend(wrong)
    if problems:
        raise ShapeMismatchError(f"{what} does not fit a ViT of {structure}:\n  " + "\n  ".join(problems))


def _check_keys(wanted: set[str], have: set[str], num_layers: int) -> None:
    """big_vision-style diff: `-` in model, not in checkpoint; `+` in checkpoint, not in model."""
    missing, extra = sorted(wanted - have), sorted(have - wanted)
    if not (missing or extra):
        return
    lines = [f"checkpoint does not match a transformers ViT with {num_layers} layers (as its config says):"]
    if missing:
        lines += ["in model, not in checkpoint:"] + [f"  - {k}" for k in missing]
    if extra:
        lines += ["in checkpoint, not in model:"] + [f"  + {k}" for k in extra]
    raise FormatError("\n".join(lines))


# ---------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------


def params_from_transformers(
    state_dict: Mapping[str, Any], cfg: Mapping[str, Any] | transformers.ViTConfig
) -> tuple[Structure, HostParams]:
    """A transformers ViT state dict (numpy arrays, or anything `np.asarray` reads) -> mu2hub path params.

    Accepts the `ViTForImageClassification` layout (`vit.…` + `classifier.…`) and the `ViTModel` layout
    (no prefix), each in checkpoint-file naming (`encoder.layer.{i}.attention.attention.query`) or in the
    in-memory naming of transformers >= 5.x (`layers.{i}.attention.q_proj`). `pooler.*` is dropped:
    classification reads the class token after the final LayerNorm.
    A checkpoint without a classifier (a `ViTModel`, e.g. an in21k backbone) gets a zero head with
    `num_labels` classes from the config: uniform predictions, as a fresh µ2Net head starts.

    Raises:
        FormatError: the config is not supported (see `dims_from_vit_config`), or the keys differ from what
            the config implies; the message lists them ("in model, not in checkpoint" / "in checkpoint, not
            in model").
        ShapeMismatchError: a tensor has the wrong shape for the config.
    """
    structure, _ = _structure_and_labels(cfg)
    prefix = "vit." if any(k.startswith("vit.") for k in state_dict) else ""
    module_naming = any(re.match(rf"{re.escape(prefix)}layers\.\d+\.", k) for k in state_dict)
    table = _name_table(structure.num_layers, prefix, "module" if module_naming else "checkpoint")
    head_keys = {table[("head", "kernel")][0], table[("head", "bias")][0]}
    headless = not head_keys & state_dict.keys()
    wanted = {key for key, _ in table.values()} - (head_keys if headless else set())
    pooler = {k for k in state_dict if k.startswith(f"{prefix}pooler.")}
    _check_keys(wanted, set(state_dict) - pooler, structure.num_layers)
    if pooler:
        logger.info("ignoring %s: the classifier reads the class token, not the pooler", sorted(pooler))

    params: HostParams = {}
    for (slot, name), (key, layout) in table.items():
        if key in wanted:
            params.setdefault(slot, {})[name] = _to_mu2hub(state_dict[key], layout, key)
    if headless:
        logger.info("checkpoint has no classifier: zero head with %d classes", structure.num_classes)
        d, n = structure.dims.hidden_size, structure.num_classes
        params["head"] = {"kernel": np.zeros((d, n), np.float32), "bias": np.zeros((n,), np.float32)}
    _check_shapes(structure, params, "checkpoint")
    return structure, params


def params_to_transformers(
    structure: Structure, params: Mapping[str, Mapping[str, Any]], labels: Sequence[str]
) -> tuple[dict[str, np.ndarray], transformers.ViTConfig]:
    """The exact inverse of `params_from_transformers`: a `ViTForImageClassification` state dict + config.

    Keys use the checkpoint-file naming (what `model.safetensors` holds and every transformers version's
    `from_pretrained` reads), not the in-memory module names of a particular transformers version.

    A position embedding of another grid is resampled as `apply_path` does, so the export computes what
    the path computes.

    Raises:
        IncompatibleTaskError: the path has residual adapters.
        ShapeMismatchError: `params` do not fit `structure`.
    """
    if structure.adapter_layers:
        raise IncompatibleTaskError(
            f"paths with residual adapters (before blocks {list(structure.adapter_layers)}) cannot be expressed "
            "as ViTForImageClassification, which has no adapter modules; export a path without adapters"
        )
    config = vit_config_for(structure.dims, structure, labels)
    params = {slot: {k: np.asarray(v, np.float32) for k, v in t.items()} for slot, t in params.items()}
    pos = params.get("pos_embed", {}).get("embedding")
    if pos is not None and pos.ndim == 3 and pos.shape[1] != structure.seq_len:
        params["pos_embed"] = {**params["pos_embed"], "embedding": np.asarray(resize_pos_embed(pos, structure.grid))}
    _check_shapes(structure, params, "path")
    table = _name_table(structure.num_layers, "vit.")
    state = {key: _to_torch(params[slot][name], layout) for (slot, name), (key, layout) in table.items()}
    return state, config


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def _image_processor(
    structure: Structure, preprocessing: Mapping[str, Any] | None
) -> transformers.ViTImageProcessorPil:
    """A task's eval preprocessing (`mu2hub.data.pp.pp_spec`) as the equivalent ViTImageProcessor.

    `resize` must be the path's image size; `method` becomes the PIL filter (PIL filters antialias when
    shrinking, as the spec's `antialias=True`); `pixel_scale` becomes the rescale factor `pixel_scale / 255`;
    `value_range` (lo, hi) becomes mean/std of the [0, 1]-rescaled
    pixels: lo + (hi - lo) x = (x - mean) / std, so std = 1 / (hi - lo) and mean = -lo / (hi - lo);
    `channels` "rgb" becomes `do_convert_rgb`. PIL resizes uint8 images, so pixels differ from mu2hub's
    float resize by about one uint8 step (2/255 in [-1, 1]).
    """
    pp = dict(preprocessing or {})
    size = pp.pop("resize", structure.image_size)
    if size != structure.image_size:
        raise ValueError(f"preprocessing resizes to {size}, but the path's image size is {structure.image_size}")
    method = pp.pop("method", "bilinear")
    if method not in _PIL_RESAMPLE:
        raise ValueError(f"resize method {method!r} has no PIL equivalent (known: {sorted(_PIL_RESAMPLE)})")
    if not pp.pop("antialias", True):
        logger.warning("antialias=False has no PIL equivalent: transformers' processor antialiases when shrinking")
    pixel_scale = float(pp.pop("pixel_scale", 1))
    channels = pp.pop("channels", "rgb")
    if channels != "rgb":
        raise ValueError(f"channels {channels!r} cannot be exported (transformers' ViT processor converts to 'rgb')")
    lo, hi = (float(v) for v in pp.pop("value_range", (-1.0, 1.0)))
    if pp:
        logger.warning("preprocessing keys %s have no ViTImageProcessor equivalent and are not exported", sorted(pp))
    n = structure.dims.num_channels
    return _transformers().ViTImageProcessorPil(
        do_resize=True,
        size={"height": structure.image_size, "width": structure.image_size},
        resample=_PIL_RESAMPLE[method],
        do_rescale=True,
        rescale_factor=pixel_scale / 255,
        do_normalize=True,
        image_mean=[-lo / (hi - lo)] * n,
        image_std=[1 / (hi - lo)] * n,
        do_convert_rgb=True,
    )


def write_transformers_checkpoint(
    directory: str | os.PathLike,
    structure: Structure,
    params: Mapping[str, Mapping[str, Any]],
    labels: Sequence[str],
    preprocessing: Mapping[str, Any] | None = None,
) -> Path:
    """Write a path as a plain transformers checkpoint that `pipeline("image-classification")` loads.

    Writes `config.json` (ViTForImageClassification), `model.safetensors` (metadata format "pt", as
    transformers expects) and `preprocessor_config.json` (the path's resize and value range).

    Args:
        directory (`str` or `os.PathLike`): created if absent; existing files of the same names are replaced.
        structure (`Structure`): the path's structure; it must have no adapters.
        params (`{slot: {tensor: array}}`): the path's parameters.
        labels (`Sequence[str]`): class names, one per head output.
        preprocessing (`Mapping`, *optional*): the task's eval preprocessing (`mu2hub.data.pp.pp_spec`);
            absent keys take its defaults (bilinear resize to the image size, values in [-1, 1], RGB).

    Returns:
        `Path`: the directory.

    Raises:
        IncompatibleTaskError: the path has residual adapters.
    """
    state, config = params_to_transformers(structure, params, labels)
    processor = _image_processor(structure, preprocessing)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    safetensors.numpy.save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    processor.save_pretrained(out)
    return out


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return safetensors.numpy.load_file(str(path))
    except TypeError:  # bfloat16 has no numpy dtype; safetensors.flax reads it through jax
        return {k: np.asarray(v, np.float32) for k, v in safetensors.flax.load_file(str(path)).items()}
    except Exception as e:  # safetensors raises its own SafetensorError on corrupt files
        raise FormatError(f"not a valid safetensors file: {e}", path=str(path)) from e


def _folder_fetcher(root: Path) -> Callable[[str], Path]:
    def fetch(filename: str) -> Path:
        path = root / check_relpath(filename)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        regular_file(path)  # a FIFO or device in a checkpoint folder is refused before anything opens it
        return path

    return fetch


def _hub_fetcher(repo_id: str, revision: str | None, **download: Any) -> Callable[[str], Path]:
    def fetch(filename: str) -> Path:
        nonlocal revision
        with hub_call(repo_id, filename, local_files_only=bool(download.get("local_files_only"))):  # the deadline
            path = Path(hf_hub_download(repo_id, check_relpath(filename), revision=revision, **download))
        snapshot = path.parents[filename.count("/")]
        if _SHA.match(snapshot.name):
            revision = snapshot.name  # pin the commit: every later file comes from the same one
        return path

    return fetch


def _weight_files(fetch: Callable[[str], Path], where: str) -> list[Path]:
    """`model.safetensors`, else the shards named by `model.safetensors.index.json`."""
    try:
        return [fetch(WEIGHTS_FILE)]
    except (FileNotFoundError, EntryNotFoundError) as single_missing:
        try:
            index = fetch(WEIGHTS_INDEX_FILE)
        except (FileNotFoundError, EntryNotFoundError):
            if isinstance(single_missing, (LocalEntryNotFoundError, LocalFilesMissingError)):
                raise single_missing  # offline with a cold cache: the message says which flag to change
            raise FileNotFoundError(
                f"{where} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE}; mu2hub reads safetensors only "
                "(pytorch_model.bin is a pickle and is never loaded)"
            ) from single_missing
    weight_map = load_json(index.read_bytes(), WEIGHTS_INDEX_FILE)
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError("no 'weight_map' object", path=WEIGHTS_INDEX_FILE)
    return [fetch(shard) for shard in sorted(set(weight_map.values()))]


def read_transformers_checkpoint(
    dir_or_repo: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> tuple[Structure, HostParams, list[str]]:
    """Read a transformers ViT checkpoint (a local folder or a Hub repo) as a mu2hub path.

    Fetches exactly `config.json` and `model.safetensors` (or `model.safetensors.index.json` and its
    shards) through `hf_hub_download`, so the standard cache, tokens and offline mode apply; every file
    after `config.json` comes from the commit `config.json` was resolved to.

    Args:
        dir_or_repo (`str` or `os.PathLike`): a local folder, else a Hub model repo id.
        revision (`str`, *optional*): branch, tag or commit of the repo; defaults to main.
        cache_dir, token, local_files_only, force_download: forwarded to `hf_hub_download`.

    Returns:
        `(Structure, params, labels)`: see `params_from_transformers` for the conversion.

    Raises:
        ValueError: `force_download` and `local_files_only` are both set.
        FileNotFoundError: no safetensors weights (pickled `pytorch_model.bin` is never read).
        FormatError / ShapeMismatchError: see `params_from_transformers`.

    >>> structure, params, labels = read_transformers_checkpoint("google/vit-base-patch16-224")  # doctest: +SKIP
    """
    if force_download and local_files_only:
        raise ValueError("force_download=True and local_files_only=True contradict each other; pick one")
    if os.path.isdir(dir_or_repo):
        fetch = _folder_fetcher(Path(dir_or_repo))
    else:
        fetch = _hub_fetcher(
            str(dir_or_repo), revision,
            cache_dir=cache_dir, token=token, local_files_only=local_files_only, force_download=force_download,
        )
    config = load_json(fetch(CONFIG_FILE).read_bytes(), CONFIG_FILE)
    _, labels = _structure_and_labels(config)  # an unsupported config fails before any weight is downloaded
    state: dict[str, np.ndarray] = {}
    for path in _weight_files(fetch, str(dir_or_repo)):
        state.update(_read_safetensors(path))
    structure, params = params_from_transformers(state, config)
    return structure, params, labels
