"""transformers ViT <-> mu2hub: numerical parity against the PyTorch model, exact round trips, clear errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.flax
import safetensors.numpy
import torch
import transformers
from PIL import Image

from mu2hub.data.pp import apply_pp_spec_numpy, pp_spec
from mu2hub.errors import FormatError, IncompatibleTaskError, LocalFilesMissingError
from mu2hub.format.system import Structure
from mu2hub.convert.transformers import (
    dims_from_vit_config,
    params_from_transformers,
    params_to_transformers,
    read_transformers_checkpoint,
    vit_config_for,
    write_transformers_checkpoint,
)
from mu2hub.model import apply_path_jit

CONFIGS = {
    "p4-i32-l2": dict(
        hidden_size=64, num_attention_heads=4, intermediate_size=128, patch_size=4, image_size=32,
        num_hidden_layers=2, layer_norm_eps=1e-6, labels=["cat", "dog", "bird"],
    ),
    "p8-i48-l3": dict(
        hidden_size=48, num_attention_heads=3, intermediate_size=96, patch_size=8, image_size=48,
        num_hidden_layers=3, layer_norm_eps=1e-12, labels=["circle", "square", "heart", "ellipse", "star"],
    ),
    # The tanh GELU approximation (big_vision / vit_jax / µ2Net) under both of transformers' names.
    "p4-i32-l2-tanh": dict(
        hidden_size=64, num_attention_heads=4, intermediate_size=128, patch_size=4, image_size=32,
        num_hidden_layers=2, layer_norm_eps=1e-6, labels=["cat", "dog", "bird"], hidden_act="gelu_pytorch_tanh",
    ),
    "p8-i48-l3-gelu-new": dict(
        hidden_size=48, num_attention_heads=3, intermediate_size=96, patch_size=8, image_size=48,
        num_hidden_layers=3, layer_norm_eps=1e-12, labels=["a", "b", "c", "d"], hidden_act="gelu_new",
    ),
}
ACTIVATION = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
TOL = 1e-4


def _vit_config(name: str) -> transformers.ViTConfig:
    kw = dict(CONFIGS[name])
    labels = kw.pop("labels")
    return transformers.ViTConfig(**kw, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})


def _torch_vit(name: str, seed: int = 0) -> transformers.ViTForImageClassification:
    """Random init, with biases, LayerNorms and classifier perturbed so a mis-mapped one cannot hide."""
    torch.manual_seed(seed)
    model = transformers.ViTForImageClassification(_vit_config(name)).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.startswith("classifier."):
                p.normal_(0.0, 0.5)
            elif key.endswith("bias") or "layernorm" in key:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _rel_err(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def _pixels(image_size: int, batch: int = 4, seed: int = 1) -> np.ndarray:
    """NCHW float32 in [-1, 1], mu2hub's input range."""
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 3, image_size, image_size)).astype(np.float32)


def _ours(structure: Structure, params, pixels_nchw: np.ndarray) -> np.ndarray:
    return np.asarray(apply_path_jit(structure, params, pixels_nchw.transpose(0, 2, 3, 1)))


def _theirs(model, pixels_nchw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(pixels_nchw)).logits.numpy()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def saved(request, tmp_path_factory):
    """(config name, torch model, save_pretrained folder)."""
    model = _torch_vit(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, model, folder


def test_parity_with_transformers(saved):
    name, model, folder = saved
    structure, params, labels = read_transformers_checkpoint(folder)
    cfg = CONFIGS[name]
    assert labels == cfg["labels"]
    assert structure.image_size == cfg["image_size"] and structure.num_layers == cfg["num_hidden_layers"]
    assert structure.num_classes == len(labels)
    assert structure.dims.layer_norm_eps == cfg["layer_norm_eps"]
    assert structure.dims.activation == ACTIVATION[cfg.get("hidden_act", "gelu")]
    pixels = _pixels(structure.image_size)
    theirs = _theirs(model, pixels)
    err = _rel_err(_ours(structure, params, pixels), theirs)
    print(f"\n{name}: max relative logit error {err:.2e} (max |logit| {np.abs(theirs).max():.2f})")
    assert err < TOL


@pytest.mark.parametrize("activation, approximate", [("gelu", "none"), ("gelu_tanh", "tanh")])
def test_gelu_matches_torch_and_the_two_differ(activation, approximate):
    """Each `Dims.activation` is torch's GELU of that name; on O(1) inputs the two are 1e-4..5e-4 apart, the gap
    the reference's tanh GELU would leave in every block had it been read as exact."""
    from mu2hub.model import gelu

    x = np.linspace(-4, 4, 801, dtype=np.float32)
    theirs = torch.nn.functional.gelu(torch.from_numpy(x), approximate=approximate).numpy()
    np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x), activation)), theirs, atol=2e-6)
    other = {"gelu": "gelu_tanh", "gelu_tanh": "gelu"}[activation]
    assert np.abs(np.asarray(gelu(jnp.asarray(x), other)) - theirs).max() > 1e-4


def _checkpoint_to_module_names(model, folder: Path) -> dict[str, str]:
    """Checkpoint-file key -> this transformers version's in-memory key, matched by (unique, random) value.

    transformers >= 5.x renames ViT modules in memory (`layers.0.attention.q_proj`) but reads and writes
    the checkpoint naming (`encoder.layer.0.attention.attention.query`); `load_state_dict` wants the former.
    """
    by_value = {(tuple(v.shape), v.numpy().tobytes()): k for k, v in model.state_dict().items()}
    on_disk = safetensors.numpy.load_file(str(folder / "model.safetensors"))
    return {k: by_value[(v.shape, v.tobytes())] for k, v in on_disk.items()}


def test_round_trip_through_state_dict(saved):
    name, model, folder = saved
    structure, params, labels = read_transformers_checkpoint(folder)
    state, config = params_to_transformers(structure, params, labels)
    assert dims_from_vit_config(config) == structure.dims
    assert config.id2label == dict(enumerate(labels))

    on_disk = safetensors.numpy.load_file(str(folder / "model.safetensors"))
    assert state.keys() == on_disk.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(value, on_disk[key], err_msg=key)

    rename = _checkpoint_to_module_names(model, folder)
    fresh = transformers.ViTForImageClassification(config).eval()
    fresh.load_state_dict({rename[k]: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    pixels = _pixels(structure.image_size, seed=2)
    assert _rel_err(_theirs(fresh, pixels), _theirs(model, pixels)) < TOL

    # The in-memory state dict (module naming) imports to the same parameters as the file.
    _, from_memory = params_from_transformers({k: v.numpy() for k, v in model.state_dict().items()}, model.config)
    for slot in params:
        for k in params[slot]:
            np.testing.assert_array_equal(from_memory[slot][k], params[slot][k], err_msg=f"{slot}.{k}")


def test_export_resamples_position_embedding_as_apply_path_does(tmp_path):
    """A path run at another image size than its pos_embed grid exports to the model it computes."""
    model = _torch_vit("p4-i32-l2")
    structure, params = params_from_transformers({k: v.numpy() for k, v in model.state_dict().items()}, model.config)
    bigger = dataclasses.replace(structure, image_size=48)
    write_transformers_checkpoint(tmp_path, bigger, params, CONFIGS["p4-i32-l2"]["labels"])
    exported = transformers.ViTForImageClassification.from_pretrained(tmp_path).eval()
    assert exported.vit.embeddings.position_embeddings.shape[1] == 1 + 12 * 12
    pixels = _pixels(bigger.image_size, seed=4)
    assert _rel_err(_ours(bigger, params, pixels), _theirs(exported, pixels)) < TOL


def test_pipeline_reads_written_checkpoint(saved, tmp_path):
    name, model, folder = saved
    structure, params, labels = read_transformers_checkpoint(folder)
    spec = pp_spec(structure.image_size)
    out = write_transformers_checkpoint(tmp_path / "export", structure, params, labels, spec)
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ViTForImageClassification"]

    size = structure.image_size
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (size + 11, size + 5, 3), dtype=np.uint8))
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    pixels = processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
    # The processor is mu2hub's preprocessing: bilinear resize, then [0, 255] -> [-1, 1].
    ours_pp = np.asarray(image.resize((size, size), Image.BILINEAR), np.float32) / 127.5 - 1
    np.testing.assert_allclose(pixels[0].transpose(1, 2, 0), ours_pp, atol=1e-5)
    # mu2hub's own float resize differs from PIL's uint8 one by about a rounding step.
    err = np.abs(pixels[0].transpose(1, 2, 0) - apply_pp_spec_numpy(image, spec)).max()
    print(f"\n{name}: processor vs mu2hub preprocessing max abs diff {err:.4f}")
    assert err < 3 / 255

    logits = _ours(structure, params, pixels)[0]
    top = transformers.pipeline("image-classification", model=str(out), device="cpu")(image)[0]
    assert top["label"] == labels[int(np.argmax(logits))]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert top["score"] == pytest.approx(float(probs.max()), abs=1e-4)


def test_vitmodel_layout_pooler_dropped_zero_head():
    """A ViTModel (in21k-style backbone): no `vit.` prefix, a pooler, no classifier; here in module naming."""
    config = _vit_config("p4-i32-l2")
    torch.manual_seed(0)
    backbone = transformers.ViTModel(config, add_pooling_layer=True).eval()
    state = {k: v.numpy() for k, v in backbone.state_dict().items()}
    assert any(k.startswith("pooler.") for k in state) and not any(k.startswith("vit.") for k in state)
    structure, params = params_from_transformers(state, config.to_dict())
    assert structure.num_classes == config.num_labels
    assert not params["head"]["kernel"].any() and not params["head"]["bias"].any()

    # An identity head exposes the final-normed class token, which is ViTModel's last_hidden_state[:, 0].
    d = structure.dims.hidden_size
    probe = Structure(structure.dims, structure.image_size, structure.num_layers, d)
    probe_params = {**params, "head": {"kernel": np.eye(d, dtype=np.float32), "bias": np.zeros(d, np.float32)}}
    pixels = _pixels(structure.image_size)
    with torch.no_grad():
        theirs = backbone(torch.from_numpy(pixels)).last_hidden_state[:, 0].numpy()
    assert _rel_err(_ours(probe, probe_params, pixels), theirs) < TOL


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    model = _torch_vit("p4-i32-l2")
    model.save_pretrained(tmp_path)
    state = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    missing = "vit.encoder.layer.1.output.dense.bias"
    with pytest.raises(FormatError, match=r"in model, not in checkpoint:\n  - " + missing.replace(".", r"\.")):
        params_from_transformers({k: v for k, v in state.items() if k != missing}, model.config)
    with pytest.raises(FormatError, match=r"in checkpoint, not in model:\n  \+ vit\.encoder\.layer\.2\.extra"):
        params_from_transformers({**state, "vit.encoder.layer.2.extra": np.zeros(3)}, model.config)
    # The pooler is not on ViTForImageClassification's route: dropped, not an error.
    params_from_transformers({**state, "vit.pooler.dense.bias": np.zeros(64, np.float32)}, model.config)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "quick_gelu"}, "hidden_act 'quick_gelu'"),
        ({"hidden_act": "relu"}, "hidden_act 'relu'"),
        ({"qkv_bias": False}, "qkv_bias=False"),
        ({"architectures": ["ViTForMaskedImageModeling"]}, "ViTForMaskedImageModeling"),
        ({"model_type": "deit"}, "model_type 'deit'"),
        ({"image_size": [32, 48]}, r"image_size \[32, 48\] is not square"),
    ],
)
def test_unsupported_configs_are_rejected(change, message):
    cfg = {**_vit_config("p4-i32-l2").to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        params_from_transformers({}, cfg)


def test_adapters_cannot_be_exported(tmp_path):
    dims = dims_from_vit_config(_vit_config("p4-i32-l2"))
    structure = Structure(dims, 32, 2, 3, adapter_layers=(1,))
    # Refused on the structure alone, before any parameter is looked at.
    with pytest.raises(IncompatibleTaskError, match="residual adapters"):
        params_to_transformers(structure, {}, ["a", "b", "c"])
    with pytest.raises(IncompatibleTaskError):
        write_transformers_checkpoint(tmp_path / "out", structure, {}, ["a", "b", "c"])
    assert not (tmp_path / "out").exists()


def test_vit_config_for_checks_labels():
    dims = dims_from_vit_config(_vit_config("p4-i32-l2"))
    structure = Structure(dims, 32, 2, 3)
    with pytest.raises(ValueError, match="2 labels for a head with 3 classes"):
        vit_config_for(dims, structure, ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        vit_config_for(dims, structure, ["a", "b", "a"])


def test_sharded_and_bfloat16_checkpoints(tmp_path):
    model = _torch_vit("p4-i32-l2")
    model.save_pretrained(tmp_path / "single")
    _, reference, _ = read_transformers_checkpoint(tmp_path / "single")

    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    _, params, _ = read_transformers_checkpoint(tmp_path / "sharded")
    for slot in reference:
        for k in reference[slot]:
            np.testing.assert_array_equal(params[slot][k], reference[slot][k])

    (tmp_path / "bf16").mkdir()
    (tmp_path / "bf16" / "config.json").write_text((tmp_path / "single" / "config.json").read_text())
    tensors = safetensors.numpy.load_file(str(tmp_path / "single" / "model.safetensors"))
    bf16 = {k: jnp.asarray(v, jnp.bfloat16) for k, v in tensors.items()}
    safetensors.flax.save_file(bf16, str(tmp_path / "bf16" / "model.safetensors"))
    _, params, _ = read_transformers_checkpoint(tmp_path / "bf16")
    np.testing.assert_allclose(params["head"]["kernel"], reference["head"]["kernel"], rtol=1e-2)
    assert params["head"]["kernel"].dtype == np.float32


def test_hub_repo_from_cache_offline(tmp_path):
    """The Hub branch, served from a pre-filled cache with local_files_only (no network in tests)."""
    model = _torch_vit("p4-i32-l2")
    commit = "a" * 40
    repo = tmp_path / "cache" / "models--org--tiny-vit"
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    cache = tmp_path / "cache"
    structure, params, labels = read_transformers_checkpoint("org/tiny-vit", cache_dir=cache, local_files_only=True)
    assert labels == CONFIGS["p4-i32-l2"]["labels"]
    pixels = _pixels(32)
    assert _rel_err(_ours(structure, params, pixels), _theirs(model, pixels)) < TOL

    (repo / "snapshots" / commit / "model.safetensors").unlink()
    with pytest.raises(LocalFilesMissingError, match="model.safetensors"):  # named, like every offline miss
        read_transformers_checkpoint("org/tiny-vit", cache_dir=cache, local_files_only=True)
    with pytest.raises(ValueError, match="contradict"):
        read_transformers_checkpoint("org/tiny-vit", local_files_only=True, force_download=True)


def test_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(_vit_config("p4-i32-l2").to_json_string())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match="pickle"):
        read_transformers_checkpoint(tmp_path)


def test_to_transformers_without_pytorch_says_nothing_about_it(tmp_path):
    """transformers advises "PyTorch was not found" on import, and its `__init__` runs twice (the second time from
    the image processor's `save_pretrained`): mu2hub needs no torch, so the advice is dropped both times."""
    import subprocess
    import sys

    from mu2hub.format.system import Dims
    from mu2hub.testing import random_system

    random_system(tmp_path / "sys", dims=Dims(16, 2, 32, 4), image_size=8, num_layers=2, num_tasks=1, num_classes=3)
    script = (
        "import sys; sys.modules['torch'] = None  # as if PyTorch were not installed\n"
        "import mu2hub\n"
        f"m = mu2hub.from_pretrained({str(tmp_path / 'sys')!r}, task='task_0')\n"
        f"m.to_transformers({str(tmp_path / 'hf')!r})\n"
        "import transformers.utils as u; assert not u.is_torch_available()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "hf" / "preprocessor_config.json").is_file() and (tmp_path / "hf" / "model.safetensors").is_file()
    assert "PyTorch was not found" not in done.stderr + done.stdout
