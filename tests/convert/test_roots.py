"""AugReg roots: timm ViTs (parity with PyTorch timm) and big_vision / vit_jax `.npz` files, as `root.init` too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mu2hub
from mu2hub.errors import FormatError, RootMismatchError
from mu2hub.format.system import component_refs
from mu2hub.model import resize_pos_embed
from mu2hub.convert.roots import read_big_vision_checkpoint, root_dims, root_from_config

from locations import SUPPORT

# timm + torchvision live outside the test environment (see tests/support/timm_reference.py for why); `make test`
# puts them here.
TIMM_SITE = Path(os.environ.get("MU2HUB_TIMM_SITE", Path(sys.prefix) / "timm-site"))

SPECS = [  # two configurations differing in patch size, depth and image size
    {"architecture": "vit_tiny_patch16_224", "model_args": {"img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 5}},
    {"architecture": "vit_base_patch16_224",  # width/heads not base's: model_args must name them
     "model_args": {"img_size": 48, "patch_size": 16, "depth": 3, "embed_dim": 64, "num_heads": 4, "num_classes": 7}},
]


@pytest.fixture(scope="module")
def timm_refs(tmp_path_factory):
    if not (TIMM_SITE / "timm").is_dir():
        pytest.fail(f"timm is not installed at {TIMM_SITE}: run `make test` (or the Makefile's timm-site line), "
                    "or set MU2HUB_TIMM_SITE")
    out = tmp_path_factory.mktemp("timm")
    env = dict(os.environ, PYTHONPATH=str(TIMM_SITE))
    proc = subprocess.run([sys.executable, str(SUPPORT / "timm_reference.py"), str(out), json.dumps(SPECS)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [out / str(i) for i in range(len(SPECS))]


@pytest.mark.parametrize("i", range(len(SPECS)))
def test_timm_parity(timm_refs, i):
    ref = np.load(timm_refs[i] / "reference.npz")
    model = mu2hub.from_timm(timm_refs[i] / "ckpt")
    args = SPECS[i]["model_args"]
    assert model.structure.num_layers == args["depth"] and model.config.dims.patch_size == args["patch_size"]
    assert model.config.dims.activation == "gelu" and model.config.dims.layer_norm_eps == 1e-6
    ours = model.logits(ref["images"])
    rel = np.abs(ours - ref["logits"]).max() / np.abs(ref["logits"]).max()
    assert rel < 1e-4, rel
    assert model.labels == [str(c) for c in range(args["num_classes"])]


def _bv_tensors(state: dict[str, np.ndarray], heads: int, naming: str) -> dict[str, np.ndarray]:
    """timm tensors renamed as vit_jax's AugReg files / big_vision name them (written here from their model code)."""
    d = state["cls_token"].shape[-1]
    ln1, mha, ln2, mlp = (("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3") if naming == "vit_jax"
                          else ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"))
    t = {"embedding/kernel": state["patch_embed.proj.weight"].transpose(2, 3, 1, 0), "embedding/bias": state["patch_embed.proj.bias"],
         "Transformer/encoder_norm/scale": state["norm.weight"], "Transformer/encoder_norm/bias": state["norm.bias"],
         "head/kernel": state["head.weight"].T, "head/bias": state["head.bias"]}
    if naming == "vit_jax":
        t["cls"], t["Transformer/posembed_input/pos_embedding"] = state["cls_token"], state["pos_embed"]
    else:  # big_vision adds the posemb to patches only; its old-checkpoint fix folds the class position into cls
        t["cls"], t["pos_embedding"] = state["cls_token"] + state["pos_embed"][:, :1], state["pos_embed"][:, 1:]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        t |= {p + f"{ln1}/scale": state[b + "norm1.weight"], p + f"{ln1}/bias": state[b + "norm1.bias"],
              p + f"{ln2}/scale": state[b + "norm2.weight"], p + f"{ln2}/bias": state[b + "norm2.bias"],
              p + f"{mlp}/Dense_0/kernel": state[b + "mlp.fc1.weight"].T, p + f"{mlp}/Dense_0/bias": state[b + "mlp.fc1.bias"],
              p + f"{mlp}/Dense_1/kernel": state[b + "mlp.fc2.weight"].T, p + f"{mlp}/Dense_1/bias": state[b + "mlp.fc2.bias"],
              p + f"{mha}/out/kernel": state[b + "attn.proj.weight"].T.reshape(heads, d // heads, d),
              p + f"{mha}/out/bias": state[b + "attn.proj.bias"]}
        for j, name in enumerate(("query", "key", "value")):
            t[p + f"{mha}/{name}/kernel"] = state[b + "attn.qkv.weight"][j * d:(j + 1) * d].T.reshape(d, heads, d // heads)
            t[p + f"{mha}/{name}/bias"] = state[b + "attn.qkv.bias"][j * d:(j + 1) * d].reshape(heads, d // heads)
    return t


def _scan(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """big_vision's scanned layout: every encoderblock_N stacked into one `encoderblock` over a leading depth axis."""
    blocks = sorted({k.split("/")[1] for k in t if k.startswith("Transformer/encoderblock_")}, key=lambda b: int(b.split("_")[1]))
    out = {k: v for k, v in t.items() if not k.startswith("Transformer/encoderblock_")}
    for rest in {k.split("/", 2)[2] for k in t if k.startswith("Transformer/encoderblock_0/")}:
        out[f"Transformer/encoderblock/{rest}"] = np.stack([t[f"Transformer/{b}/{rest}"] for b in blocks])
    return out


@pytest.mark.parametrize("naming", ["vit_jax", "big_vision", "big_vision_scan"])
def test_big_vision_npz_imports_to_the_same_components(timm_refs, tmp_path, naming):
    ckpt_dir = timm_refs[1] / "ckpt"
    state = load_file(str(ckpt_dir / "model.safetensors"))
    tensors = _bv_tensors(state, heads=4, naming=naming.removesuffix("_scan"))
    np.savez(tmp_path / "bv.npz", **(_scan(tensors) if naming.endswith("scan") else tensors))
    timm_model = mu2hub.from_timm(ckpt_dir)
    bv = read_big_vision_checkpoint(tmp_path / "bv.npz")
    assert bv.structure.dims == timm_model.config.dims.__class__(**{**timm_model.config.dims.__dict__, "activation": "gelu_tanh"})
    theirs = {r.slot: r.id for r in timm_model.components}
    ours = {r.slot: r.id for r in component_refs(bv.params, bv.structure.slots())}
    if naming == "vit_jax":
        assert ours == theirs  # identical components, bit for bit
    else:
        assert {s: i for s, i in ours.items() if s not in ("cls", "pos_embed")} == {
            s: i for s, i in theirs.items() if s not in ("cls", "pos_embed")}
        np.testing.assert_array_equal(bv.params["pos_embed"]["embedding"][:, 0], 0)
        np.testing.assert_array_equal(bv.params["pos_embed"]["embedding"][:, 1:], state["pos_embed"][:, 1:])


def test_root_at_configured_size_and_depth(timm_refs, tmp_path):
    ckpt = f"timm:{timm_refs[1] / 'ckpt'}"
    root = {"init": ckpt, "image_size": 80, "num_layers": 2, "patch_size": 16, "hidden_size": 64}
    structure, params, lineage = root_from_config(root)
    assert (structure.image_size, structure.num_layers, structure.num_classes) == (80, 2, 1)
    assert set(params) == set(structure.slots())
    native = load_file(str(timm_refs[1] / "ckpt" / "model.safetensors"))["pos_embed"]
    expected = np.asarray(resize_pos_embed(native, 5))
    np.testing.assert_allclose(params["pos_embed"]["embedding"], expected, atol=1e-6)
    np.testing.assert_array_equal(params["pos_embed"]["embedding"][:, 0], native[:, 0])  # class token position kept
    assert not params["head"]["kernel"].any()
    assert lineage["checkpoint_image_size"] == 48 and lineage["checkpoint_num_layers"] == 3
    assert root_dims(root).layer_norm_eps == 1e-6  # from the checkpoint: the config does not say


def test_disagreeing_config_and_bad_sizes_are_refused(timm_refs):
    ckpt = f"timm:{timm_refs[0] / 'ckpt'}"
    with pytest.raises(RootMismatchError, match=r"layer_norm_eps: config says 1e-12, checkpoint has 1e-06.*ckpt|ckpt.*layer_norm_eps"):
        root_dims({"init": ckpt, "layer_norm_eps": 1e-12})
    with pytest.raises(RootMismatchError, match="hidden_size"):
        root_from_config({"init": ckpt, "hidden_size": 1024, "image_size": 32})
    with pytest.raises(RootMismatchError, match="not a multiple of its patch size 8"):
        root_from_config({"init": ckpt, "image_size": 36})
    with pytest.raises(RootMismatchError, match="has 2 layers; cannot take 5"):
        root_from_config({"init": ckpt, "image_size": 32, "num_layers": 5})


def test_non_vit_timm_checkpoint_is_refused_before_its_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet50", "num_classes": 1000}))
    with pytest.raises(FormatError, match=r"config.json.*'resnet50' is not a plain ViT"):
        mu2hub.from_timm(tmp_path)  # no model.safetensors in the folder: the architecture is refused first
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224",
                                                      "model_args": {"reg_tokens": 4, "class_token": True}}))
    with pytest.raises(FormatError, match="reg_tokens"):
        mu2hub.from_timm(tmp_path)


def test_timm_tensors_that_do_not_match_are_listed(timm_refs, tmp_path):
    state = load_file(str(timm_refs[0] / "ckpt" / "model.safetensors"))
    state["blocks.0.ls1.gamma"] = np.ones(192, np.float32)  # layer scale: a DeiT-3 style block
    del state["blocks.1.mlp.fc2.bias"]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((timm_refs[0] / "ckpt" / "config.json").read_text())
    with pytest.raises(FormatError, match=r"(?s)model.safetensors.*- blocks.1.mlp.fc2.bias.*\+ blocks.0.ls1.gamma"):
        mu2hub.from_timm(tmp_path)


def test_npz_of_another_architecture_or_with_pickles_is_refused(tmp_path):
    np.savez(tmp_path / "resnet.npz", **{"conv_root/kernel": np.zeros((7, 7, 3, 8), np.float32),
                                         "block1/unit1/conv1/kernel": np.zeros((1, 1, 8, 8), np.float32)})
    with pytest.raises(FormatError, match=r"resnet.npz.*hybrid|resnet.npz.*not a ViT"):
        mu2hub.from_big_vision(tmp_path / "resnet.npz")
    np.savez(tmp_path / "mixer.npz", **{"stem/kernel": np.zeros((16, 16, 3, 8), np.float32)})
    with pytest.raises(FormatError, match=r"mixer.npz: not a ViT checkpoint.*stem/kernel"):
        mu2hub.from_big_vision(tmp_path / "mixer.npz")
    np.savez(tmp_path / "objects.npz", cls=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FormatError, match="objects.npz.*pickle"):
        mu2hub.from_big_vision(tmp_path / "objects.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="junk.npz: not a valid .npz"):
        mu2hub.from_big_vision(tmp_path / "junk.npz")
