"""The paper's stream config end to end on a 3-task slice: generated local stand-ins, a shrunken big_vision root."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from mu2hub.evolution.evolve import evolve
from mu2hub.evolution.plan import format_plan, plan

from locations import REPO

sys.path.insert(0, str(REPO / "training"))
from evolve import load_config, main  # noqa: E402

CONFIG = str(REPO / "training/configs/mu2net_vit_l.py")
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _tiny_augreg_npz(path: Path, d=16, heads=2, mlp=32, patch=4, grid=2, depth=2) -> str:
    """A random ViT in the AugReg files' own (vit_jax) parameter names: a shrunken stand-in for L/16."""
    rng = np.random.default_rng(0)
    r = lambda *s: rng.normal(0, 0.2, s).astype(np.float32)  # noqa: E731
    t = {"embedding/kernel": r(patch, patch, 3, d), "embedding/bias": r(d), "cls": r(1, 1, d),
         "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, d),
         "Transformer/encoder_norm/scale": 1 + r(d), "Transformer/encoder_norm/bias": r(d),
         "head/kernel": r(d, 21843 // 1000), "head/bias": r(21843 // 1000)}
    for i in range(depth):
        p = f"Transformer/encoderblock_{i}/"
        t |= {p + "LayerNorm_0/scale": 1 + r(d), p + "LayerNorm_0/bias": r(d), p + "LayerNorm_2/scale": 1 + r(d),
              p + "LayerNorm_2/bias": r(d), p + "MlpBlock_3/Dense_0/kernel": r(d, mlp), p + "MlpBlock_3/Dense_0/bias": r(mlp),
              p + "MlpBlock_3/Dense_1/kernel": r(mlp, d), p + "MlpBlock_3/Dense_1/bias": r(d),
              p + "MultiHeadDotProductAttention_1/out/kernel": r(heads, d // heads, d),
              p + "MultiHeadDotProductAttention_1/out/bias": r(d)}
        for n in ("query", "key", "value"):
            t[p + f"MultiHeadDotProductAttention_1/{n}/kernel"] = r(d, heads, d // heads)
            t[p + f"MultiHeadDotProductAttention_1/{n}/bias"] = r(heads, d // heads)
    np.savez(path, **t)
    return str(path)


def _stand_ins(root: Path) -> str:
    """cifar10 (uoft-cs/cifar10's features), cifar10_1 and dsprites (TFDS features), learnable: class = colour / x."""
    rng = np.random.default_rng(1)

    def cifar_like(n, seed):
        labels = np.arange(n) % 10
        images = [Image.fromarray(np.clip(rng.normal(25 * y, 10, (8, 8, 3)), 0, 255).astype(np.uint8)) for y in labels]
        return images, labels.tolist()

    feats = lambda col: datasets.Features({col: datasets.Image(), "label": datasets.ClassLabel(names=CIFAR10)})  # noqa: E731
    parts = {s: cifar_like(n, i) for i, (s, n) in enumerate({"train": 96, "test": 40}.items())}
    datasets.DatasetDict({s: datasets.Dataset.from_dict({"img": im, "label": y}, features=feats("img"))
                          for s, (im, y) in parts.items()}).save_to_disk(str(root / "cifar10"))
    im, y = cifar_like(30, 2)
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"image": im, "label": y}, features=feats("image"))}).save_to_disk(
        str(root / "cifar10_1"))
    xs = rng.integers(0, 32, 240)
    sprites = []
    for x in xs:
        a = np.zeros((8, 8), np.uint8)
        a[3:5, x // 4] = 1
        sprites.append(Image.fromarray(a))  # grayscale 0/1 pixels, as TFDS's dSprites
    ds_feats = datasets.Features({"image": datasets.Image(), "label_x_position": datasets.ClassLabel(num_classes=32),
                                  "label_orientation": datasets.ClassLabel(num_classes=40)})
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"image": sprites, "label_x_position": xs.tolist(), "label_orientation": [0] * len(xs)}, features=ds_feats)}
    ).save_to_disk(str(root / "dsprites"))
    return str(root)


@pytest.fixture(scope="module")
def slice_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper")
    npz = _tiny_augreg_npz(tmp / "L_16-stand-in.npz")
    data = _stand_ins(tmp / "data")
    arg = f"large,tasks=cifar10+dsprites/label_x_position+cifar10/1k,root=big_vision:{npz},data={data},devices=1,runlocal"
    return f"{CONFIG}:{arg}", tmp


def test_first_generation_of_a_three_task_slice(slice_config, tmp_path):
    spec, _ = slice_config
    cfg = load_config(spec)
    assert cfg["space"] == "mu2net" and cfg["batch_size"] == 8  # the large preset's rules, shrunk for a CPU
    run = evolve(cfg, tmp_path / "run", quiet=True)
    system = run.system.read_config()
    assert system.dims.activation == "gelu_tanh" and system.dims.hidden_size == 16  # from the .npz, not the config
    assert system.root_image_size == 16  # resampled once from the checkpoint's 8 px to the configured size
    assert run.system.list_tasks() == sorted(["cifar10", "cifar10/1k", "dsprites/label_x_position"])
    c10 = run.system.read_task("cifar10")
    assert c10.labels == CIFAR10 and c10.metrics["num_test_examples"] == 40
    xpos = run.system.read_task("dsprites/label_x_position")
    assert len(xpos.labels) == 32 and xpos.metrics["num_test_examples"] == 24  # µ2Net's 32 classes; train[90%:] of 240
    assert xpos.preprocessing["pixel_scale"] == 255 and "pixel_scale" not in c10.preprocessing  # the table's x255
    history = run.history()
    assert [r["task"] for r in history] == ["cifar10", "dsprites/label_x_position", "cifar10/1k"]
    # The same config again continues the run instead of refusing it (one config for the whole stream).
    again = evolve(load_config(spec), tmp_path / "run", resume=True, quiet=True)
    assert len(again.history()) == len(history)


def test_plan_prices_the_slice_and_lists_missing_data(slice_config, capsys, monkeypatch):
    spec, _ = slice_config
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as on a machine without the Hub: fail fast
    rows = plan(load_config(spec))
    sizes = {r.task: r.sizes for r in rows}
    assert sizes["cifar10"] == {"train": 96, "validation": 30, "test": 40}
    assert sizes["cifar10/1k"] == {"train": 96, "validation": 10, "test": 40}  # train[:800]; train[90%:][:200]
    c10 = next(r for r in rows if r.task == "cifar10")
    assert c10.steps_per_child == 4 and c10.train_images == 32 and c10.validation_images == 30
    assert c10.flops_per_image > 0
    # The full stream offline: every task listed, data missing but not fatal, costs bounded by the caps.
    full = load_config(f"{CONFIG}:large")
    assert main(["--config", f"{CONFIG}:large", "--plan", "--tasks", "cifar10,cifar10/1k",  # no --workdir needed
                 "--throughput", "100"]) == 0
    out = capsys.readouterr().out
    assert "| cifar10 | hub:uoft-cs/cifar10 | missing | ≤ 8,008 | 128 | ≤ 65,601,536 |" in out
    assert "| cifar10/1k | hub:uoft-cs/cifar10 | missing | ≤ 52 | 128 | ≤ 425,984 | ≤ 102,400 |" in out  # 800 / 200
    assert "Missing data (2 tasks):" in out and len(full["tasks"]) == 69
    assert "GFLOPs" in format_plan(rows)
    # --measure: the slice's own root trained for a few steps here gives the throughput that prices device-hours
    assert main(["--config", spec, "--workdir", "unused", "--plan", "--measure"]) == 0
    out = capsys.readouterr().out
    measured = float(out.split("measured: ")[1].split(" ")[0].replace(",", ""))
    assert measured > 0 and f"{c10.device_hours(measured):,.1f} |" in out.split("| cifar10 |")[1].splitlines()[0]
