"""Device-hours to add one task under the reference's ViT-L budget (munet_spec.md §3.2, "ViT large"), at
throughput measured in this run: ours without and with frozen-prefix caching, and transformers' PyTorch ViT.

Budget per task: 128 children × 4 validations × 2,002 steps of batch 64 (= 512,512 training images per child,
65.6 M per task) plus 4 validations of 10,000 images per child (5.1 M inference), at 384 px (the large
config's `ds_image_size`). Throughput is measured at that size on a GPU (ViT-L/16, 384 px, batch 64, bf16).

Run: `.venv/bin/python bench/cost.py` (GPU, about 4 minutes). Without a GPU the measurements run on the
CPU at a proxy size (64 px, batch 8, float32) and the table gives CPU-hours for the budget's image counts at
that size: labelled as such, not GPU-hours. Rows derived from gpu_notes.md are not measured in this run and
say so.

Assumption for caching (stated in the output): the child trains its top 25% of blocks plus norm and head,
augmentation is off (µ3Net's default; µ2Net's large config crops and flips, which rules caching out), and
the frozen prefix is the same for every child of the task (best case) or different for each (worst case:
one cache build per child).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Collection

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory for the PyTorch peer
# PyTorch's OpenMP threads spin after each op by default and starve XLA's (and the reverse) when the two take
# turns on a CPU: measured 2.5x slower peer on 2 cores. Passive waiting lets interleaved timing be fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import interleaved_rates, load_average, machine, vit_forward_flops
from gpu import HP, Setting, peer_inference, peer_training

from mu2hub import model as vit
from mu2hub.train import child as train
from mu2hub.format.system import Structure
from mu2hub.utils.tables import table

# munet_spec.md §3.2, "ViT large": samples per task, validations per child, train examples between
# validations (cap), batch, validation examples (cap); §2.2: image size 384.
CHILDREN, VALIDATIONS, TRAIN_CAP, BATCH, VAL_CAP, REF_SIZE = 128, 4, 128_116, 64, 10_000, 384
STEPS = VALIDATIONS * math.ceil(TRAIN_CAP / BATCH)  # 8,008
TRAIN_IMAGES = CHILDREN * STEPS * BATCH  # 65,601,536
VAL_IMAGES = CHILDREN * VALIDATIONS * VAL_CAP  # 5,120,000
PREFIX_IMAGES = TRAIN_CAP + VAL_CAP  # one cache build: both splits through the frozen prefix once

# gpu_notes.md (one H100 80GB, 2026-11-23, 224 px, batch 256): NOT measured in this run.
NOTES_224 = {"peer torch.compile, ViT-L/16 training (705-723)": 714,
             "plain JAX + cuDNN attention, ViT-L/16 training": 1010}
NOTES_224_INFER = {"peer eager SDPA, ViT-L/16 inference (3,540-3,590)": 3565,
                   "plain JAX + cuDNN attention, ViT-L/16 inference": 3410}


def rates(s: Setting, top_fraction: float, *, skip: Collection[str] = (), repeats: int = 5) -> dict[str, float]:
    """Images/s, ours and the peer's, each group's repeats interleaved: inference (full path, from cached
    activations, the prefix alone); training (every block, a top-`top_fraction` child plain and cached).

    `skip`: names measured elsewhere in the same run (bench/gpu_session.py passes its ViT-L rows' `train_all`,
    `inference`, `peer_train`, `peer_inference`); they are left out of the result."""
    d, layers = s.dims, s.layers
    k = layers - round(layers * top_fraction)
    structure = Structure(d, s.image_size, layers, 1000)
    params = jax.device_put(vit.init_path(structure, jax.random.key(0)))
    dtype = jnp.bfloat16 if s.gpu else None
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (s.batch, s.image_size, s.image_size, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 1000, s.batch, dtype=np.int32))
    acts = jax.random.normal(jax.random.key(1), (s.batch, structure.seq_len, d.hidden_size), dtype or jnp.float32)
    x = jax.random.uniform(jax.random.key(2), (s.batch, s.image_size, s.image_size, 3), minval=-1, maxval=1)
    top = {f"block.{i}" for i in range(k, layers)} | {"norm", "head"}
    sync = jax.block_until_ready

    def train_fn(frozen: dict, trainable: dict, inputs: jax.Array, start: int | None) -> tuple:
        tx = train.make_optimizer({**HP, "opt_lr": 1.0}, 10_000)
        st = {"p": jax.tree.map(jnp.copy, trainable), "o": train.init_opt_state(tx, trainable)}

        def step():
            st["p"], st["o"], m = train.train_step(structure, frozen, st["p"], st["o"], inputs, labels, jax.random.key(0),
                                                   train.data_hparams(HP), tx=tx, dtype=dtype, start=start,
                                                   lr=jnp.float32(0.01))
            return m["loss"]

        return step, s.batch, sync

    def forward_fn(start: int | None, stop: int | None, inputs: jax.Array) -> tuple:
        def f(p, x):
            x = vit.embed(structure, p, x, dtype=dtype) if start is None else x
            x = vit.encode(structure, p, x, start=start or 0, stop=stop, dtype=dtype)
            return vit.classify(structure, p, x, dtype=dtype) if stop is None else x
        f = jax.jit(f)
        return (lambda: f(params, inputs)), s.batch, sync

    frozen = {sl: t for sl, t in params.items() if sl not in top}
    groups = [{"train_all": lambda: train_fn({}, params, images, None),
               "train_top": lambda: train_fn(frozen, {sl: params[sl] for sl in top}, images, None),
               "train_top_cached": lambda: train_fn({}, {sl: params[sl] for sl in top}, acts, k),
               "peer_train": lambda: peer_training(s, False)},
              {"inference": lambda: forward_fn(None, None, x), "inference_cached": lambda: forward_fn(k, None, acts),
               "prefix_build": lambda: forward_fn(None, k, x), "peer_inference": lambda: peer_inference(s, False)}]
    if s.gpu:  # the peer's torch.compile variants, kept when faster
        groups.append({"peer_train_compiled": lambda: peer_training(s, True),
                       "peer_inference_compiled": lambda: peer_inference(s, True)})
    out: dict[str, float] = {}
    for group in groups:
        todo = {name: make() for name, make in group.items() if name.removesuffix("_compiled") not in skip}
        out |= interleaved_rates(todo, calls=s.calls, repeats=repeats) if todo else {}
    for name in [n for n in out if n.endswith("_compiled")]:
        rate = out.pop(name)
        out[name.removesuffix("_compiled")] = max(out.get(name.removesuffix("_compiled"), 0.0), rate)
    return out | {"k": k}


def cost_rows(s: Setting, ours: dict[str, float], top_fraction: float) -> tuple[list[list[str]], list[str]]:
    """The device-hours table from `rates(s, top_fraction)` (or rates measured elsewhere with the same names)
    and the notes printed above it: (rows, notes)."""
    unit = "GPU-hours" if s.gpu else "CPU-hours"
    where = jax.devices()[0].device_kind if s.gpu else "this CPU"
    peer_train, peer_infer = ours["peer_train"], ours["peer_inference"]

    hours = lambda train_rate, infer_rate: (TRAIN_IMAGES / train_rate + VAL_IMAGES / infer_rate) / 3600  # noqa: E731
    build = PREFIX_IMAGES / ours["prefix_build"] / 3600
    top = f"top {top_fraction:.0%} of blocks trainable"
    label = f"measured in this run: {where}, ViT-{s.variant} {s.image_size} px, batch {s.batch}"
    cached = hours(ours["train_top_cached"], ours["inference_cached"])
    measured = [
        ("peer (transformers PyTorch), every block trainable", hours(peer_train, peer_infer), label),
        ("ours, every block trainable", hours(ours["train_all"], ours["inference"]), label),
        (f"ours, {top}, no cache", hours(ours["train_top"], ours["inference"]), label),
        (f"ours, {top}, prefix cache, one prefix per task", cached + build, label + " (+1 cache build)"),
        (f"ours, {top}, prefix cache, a new prefix per child", cached + CHILDREN * build,
         label + f" (+{CHILDREN} cache builds)"),
    ]
    peer_hours = measured[0][1]
    rows = [[name, f"{h:,.1f}", f"{h / peer_hours:.2f}", source] for name, h, source in measured]
    for (name, train_rate), (iname, infer_rate) in zip(NOTES_224.items(), NOTES_224_INFER.items()):
        rows.append([f"{name}; {iname}", f"{hours(train_rate, infer_rate):,.1f} (GPU)", "",
                     "NOT measured in this run: gpu_notes.md, H100, 224 px (the budget's is 384)"])
    d = s.dims
    cache_gb = lambda n, px: n * ((px // d.patch_size) ** 2 + 1) * d.hidden_size * 2 / 1e9  # noqa: E731
    flops = vit_forward_flops(d.hidden_size, d.mlp_dim, d.patch_size, s.layers, s.image_size)
    notes = [
        f"cache size per prefix, bf16, at {REF_SIZE} px: {cache_gb(TRAIN_CAP, REF_SIZE):,.0f} GB train + "
        f"{cache_gb(VAL_CAP, REF_SIZE):,.1f} GB validation (computed, not measured). ViT-{s.variant} forward at "
        f"{s.image_size} px: {flops / 1e9:,.1f} GFLOP (analytic). The cache serves the lowest {ours['k']} of "
        f"{s.layers} blocks.",
        f"per training step, top {top_fraction:.0%} trainable: cached {ours['train_top_cached']:,.2f} vs plain "
        f"{ours['train_top']:,.2f} images/s = {ours['train_top_cached'] / ours['train_top']:.2f}x; validation "
        f"{ours['inference_cached'] / ours['inference']:.2f}x. {unit} to add one task (lower is better):",
    ]
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="L/16")
    ap.add_argument("--image-size", type=int, default=None, help="default: 384 on a GPU (the budget's), 64 on a CPU")
    ap.add_argument("--top-fraction", type=float, default=0.25)
    a = ap.parse_args()
    gpu = jax.devices()[0].platform == "gpu"
    size = a.image_size or (REF_SIZE if gpu else 64)
    s = Setting(a.variant, size, BATCH if gpu else 8, calls=10 if gpu else 2, gpu=gpu)
    unit = "GPU-hours" if gpu else "CPU-hours"
    print(f"bench/cost.py — {machine()}; JAX {jax.__version__} on {jax.devices()}; {load_average()}", flush=True)
    print(f"budget per task: {CHILDREN} children × {VALIDATIONS} validations × {STEPS // VALIDATIONS:,} steps × batch "
          f"{BATCH} = {TRAIN_IMAGES:,} training images + {VAL_IMAGES:,} validation images (munet_spec.md §3.2)")
    ours = rates(s, a.top_fraction)
    print("  images/s: " + ", ".join(f"{k} {v:,.2f}" for k, v in ours.items()), flush=True)
    rows, notes = cost_rows(s, ours, a.top_fraction)
    print("\n" + "\n".join(notes))
    print(table(rows, ["trainer", unit, "x peer", "throughput from"]))


if __name__ == "__main__":
    sys.exit(main())
