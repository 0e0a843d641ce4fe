"""Evolution throughput: children per minute and training examples per second for the quickstart, and one
child's training images/s against transformers' PyTorch ViT on the same weights' shapes, same device kind.

Run: `.venv/bin/python bench/evolve.py [--config training/configs/quickstart.py] [--peer-variant B/16]`.
On a machine without a GPU the peer comparison runs on CPU at a small size and the GPU row says "not measured".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import ROOT, VARIANTS, machine

sys.path.insert(0, str(ROOT / "training"))
from evolve import load_config  # noqa: E402

from mu2hub import model as vit  # noqa: E402
from mu2hub.evolution.evolve import evolve  # noqa: E402
from mu2hub.format import Dims, Structure  # noqa: E402
from mu2hub.report import table  # noqa: E402
from mu2hub.train import init_opt_state, make_optimizer, train_step  # noqa: E402


def quickstart(config_path: str) -> list[list[str]]:
    cfg = load_config(config_path)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        run = evolve(cfg, Path(d) / "run", quiet=True)
        wall = time.perf_counter() - t
        rows = run.history()
    train = sum(r["train_time"] for r in rows)
    compile_ = sum(r["compile_time"] for r in rows)
    examples = sum(r["examples"] for r in rows)
    return [
        ["children trained", f"{len(rows)}"],
        ["wall time (s)", f"{wall:.1f}"],
        ["children per minute", f"{len(rows) / wall * 60:.1f}"],
        ["training examples / s (excluding compilation)", f"{examples / train:,.0f}"],
        ["training examples / s (wall, all included)", f"{examples / wall:,.0f}"],
        ["compilation share of wall time", f"{compile_ / wall:.0%}"],
    ]


def ours_train_images_per_s(dims: Dims, layers: int, size: int, batch: int, dtype, steps: int) -> float:
    """One child training all its components (the heaviest case), SGD+momentum as µ2Net, donated buffers."""
    s = Structure(dims, size, layers, 1000)
    trainable = jax.device_put(vit.init_path(s, jax.random.key(0)))
    hp = {"opt_lr": 0.01, "opt_lr_schedule": "cosine", "opt_lr_warmup_ratio": 0.05, "opt_momentum": 0.9, "opt_nesterov": False,
          "ds_crop": False, "ds_flip_left_right": False}
    tx = make_optimizer(hp, steps * 3)
    opt = init_opt_state(tx, trainable)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    labels = jnp.asarray(np.random.default_rng(1).integers(0, 1000, batch, dtype=np.int32))
    static = tuple(sorted((k, v) for k, v in hp.items() if k.startswith("ds_")))
    key = jax.random.key(0)
    for _ in range(2):  # compile + warm-up
        trainable, opt, m = train_step(s, {}, trainable, opt, images, labels, key, static, tx=tx, dtype=dtype)
    jax.block_until_ready(trainable)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(steps):
            trainable, opt, m = train_step(s, {}, trainable, opt, images, labels, key, static, tx=tx, dtype=dtype)
        jax.block_until_ready(trainable)
        times.append(time.perf_counter() - t)
    return batch * steps / statistics.median(times)


def peer_train_images_per_s(dims: Dims, layers: int, size: int, batch: int, device: str, compile_: bool, steps: int) -> float:
    import torch
    import transformers

    cfg = transformers.ViTConfig(hidden_size=dims.hidden_size, num_attention_heads=dims.num_heads, intermediate_size=dims.mlp_dim,
                                 patch_size=dims.patch_size, image_size=size, num_hidden_layers=layers, num_labels=1000,
                                 attn_implementation="sdpa")
    model = transformers.ViTForImageClassification(cfg).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)  # like for like: µ2Net's optimizer
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    fn = torch.compile(step) if compile_ else step
    for _ in range(2):
        fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        times.append(time.perf_counter() - t)
    return batch * steps / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "training/configs/quickstart.py"))
    ap.add_argument("--peer-variant", default=None, help="default: B/16 on GPU, Ti/16 at 64 px on CPU")
    ap.add_argument("--skip-quickstart", action="store_true")
    a = ap.parse_args()
    gpu = jax.devices()[0].platform == "gpu"
    print(f"bench/evolve.py — {machine()}; JAX devices: {jax.devices()}")
    if not a.skip_quickstart:
        print("\nquickstart evolution (training/configs/quickstart.py)")
        print(table(quickstart(a.config), ["measure", "value"]))
    name = a.peer_variant or ("B/16" if gpu else "Ti/16")
    hidden, heads, mlp, patch, layers, size = VARIANTS[name]
    if not gpu:
        size = 64
    batch, steps = (256, 20) if gpu else (32, 5)
    dims = Dims(hidden, heads, mlp, patch)
    device = "cuda" if gpu else "cpu"
    ours = ours_train_images_per_s(dims, layers, size, batch, jnp.bfloat16 if gpu else None, steps)
    eager = peer_train_images_per_s(dims, layers, size, batch, device, False, steps)
    rows = [[f"mu2hub child training (JAX, {'bf16' if gpu else 'fp32'})", f"{ours:,.0f}", "1.00"],
            ["transformers ViT, PyTorch eager", f"{eager:,.0f}", f"{eager / ours:.2f}"]]
    if gpu:
        compiled = peer_train_images_per_s(dims, layers, size, batch, device, True, steps)
        rows.append(["transformers ViT, torch.compile", f"{compiled:,.0f}", f"{compiled / ours:.2f}"])
    print(f"\nchild training, ViT-{name} at {size} px, batch {batch}, SGD+momentum, all components trainable ({device})")
    print(table(rows, ["trainer", "images/s", "x ours"]))
    if not gpu:
        print("GPU: not measured (no GPU on this machine); run this script on a GPU machine for ViT-B/16 at 224 px.")


if __name__ == "__main__":
    main()
