"""Pretrain the small ViT roots the project ships: the quickstart's and the test suite's.

µ2Net never evolves on top of frozen random blocks: every reference configuration but one starts from an
ImageNet-21k ViT, and the random-init one (Ti/16 "0 layers") has a root with no blocks at all. A root must know
something before children share it frozen, so the project ships small pretrained roots, made by this script
from data it generates (nothing is downloaded):

- images: dSprites-style shapes (`mu2hub.data.builtin`: shape, scale, orientation, x and y position), drawn
  with their own seed and **excluding every factor combination of the tasks' default splits** (seed 0), so no
  image a quickstart task validates or tests on is seen here;
- objective: all five factors at once (one head of 3 + 6 + 8 + 8 + 8 logits, a softmax cross-entropy per factor):
  what an i21k root is for the reference's tasks — broad features, not one task's labels;
- optimizer: AdamW with a warm-up + cosine schedule (big_vision's ViT recipe; µ2Net itself only fine-tunes);
- output: a one-task repo in the published format (`config.json`, `tasks/<name>.json`, content-addressed
  safetensors components, a model card with provenance and held-out accuracy per factor), which a config names
  as `root.init = "mu2hub:<folder>"`.

Run: `python training/pretrain_root.py --preset quickstart` (about 7 CPU-minutes) and `--preset tiny`
(tests/assets/tiny_root, under a minute). Deterministic for a given preset and seed on one machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mu2hub import model as vit
from mu2hub.data import builtin
from mu2hub.data.pp import pp_spec
from mu2hub.format.system import Dims, Structure, SystemConfig, TaskFile
from mu2hub.hub.store import LocalStore, atomic_write

REPO = Path(__file__).resolve().parent.parent

#: name -> (dims, image size, depth, training set size, steps, batch, peak lr, output folder)
PRESETS = {
    "quickstart": dict(dims=dict(hidden_size=64, num_heads=4, mlp_dim=128, patch_size=8), image_size=32, num_layers=3,
                       n_train=40_000, steps=4_000, batch_size=128, lr=2e-3,
                       out=REPO / "training" / "roots" / "shapes-vit-64"),
    "tiny": dict(dims=dict(hidden_size=16, num_heads=2, mlp_dim=32, patch_size=4), image_size=8, num_layers=2,
                 n_train=20_000, steps=1_500, batch_size=128, lr=3e-3, out=REPO / "tests" / "assets" / "tiny_root"),
}
N_TEST = 4_000

#: The pretraining heads: factor name -> (classes, factor column, values per class).
FACTORS = {
    "shape": (len(builtin.SHAPES), 0, 1),
    "scale": (len(builtin.SCALES), 1, 1),
    "orientation": (8, 2, builtin.NUM_ORIENTATIONS // 8),
    "x_position": (8, 3, builtin.NUM_POSITIONS // 8),
    "y_position": (8, 4, builtin.NUM_POSITIONS // 8),
}


def factor_labels(factors: np.ndarray) -> np.ndarray:
    """[n, 5] factor indices -> [n, 5] class per pretraining head."""
    return np.stack([factors[:, col] // per for _, col, per in FACTORS.values()], axis=1).astype(np.int32)


def label_names() -> list[str]:
    return [f"{name}={i}" for name, (n, _, _) in FACTORS.items() for i in range(n)]


#: Split sizes (train + validation + test) of the shape tasks the project evolves: the defaults and the tests'.
HELD_OUT_SIZES = (sum(builtin.DEFAULT_SIZES.values()), 256 + 64 + 64)


def held_out_factors() -> set[tuple[int, ...]]:
    """Every factor combination of the shape tasks' splits (seed 0; `HELD_OUT_SIZES`): never drawn here."""
    return {tuple(f) for n in HELD_OUT_SIZES for f in builtin.sample_factors(n, 0).tolist()}


def pretraining_data(n: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (uint8 [n, S, S, 3]) and their head labels, no combination shared with the tasks' splits."""
    exclude = held_out_factors()
    factors = builtin.sample_factors(n + len(exclude), seed)
    keep = np.array([tuple(f) not in exclude for f in factors.tolist()])
    factors = factors[keep][:n]
    return builtin.render(factors, image_size), factor_labels(factors)


def _loss(structure: Structure, params, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = vit.apply_path(structure, params, x)
    losses, correct, start = [], [], 0
    for i, (n, _, _) in enumerate(FACTORS.values()):
        part = logits[:, start:start + n]
        losses.append(optax.softmax_cross_entropy_with_integer_labels(part, y[:, i]).mean())
        correct.append(jnp.argmax(part, -1) == y[:, i])
        start += n
    return sum(losses), jnp.stack(correct, 1)


def _pixels(images: np.ndarray | jax.Array) -> jax.Array:
    return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def pretrain(preset: str, *, seed: int = 1, log=print) -> dict:
    p = PRESETS[preset]
    dims = Dims(**p["dims"])
    structure = Structure(dims, p["image_size"], p["num_layers"], len(label_names()))
    t0 = time.time()
    images, labels = pretraining_data(p["n_train"] + N_TEST, p["image_size"], seed)
    train_x, train_y, test_x, test_y = images[:-N_TEST], labels[:-N_TEST], images[-N_TEST:], labels[-N_TEST:]
    log(f"{preset}: {len(train_x):,} training / {len(test_x):,} held-out images rendered in {time.time() - t0:.0f} s")

    params = vit.init_path(structure, jax.random.key(seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, p["lr"], p["steps"] // 20, p["steps"])
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        (loss, _), grads = jax.value_and_grad(lambda q: _loss(structure, q, _pixels(x), y), has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    t0 = time.time()
    for i in range(p["steps"]):
        idx = rng.integers(0, len(train_x), p["batch_size"])
        params, opt_state, loss = step(params, opt_state, train_x[idx], train_y[idx])
        if (i + 1) % max(1, p["steps"] // 10) == 0:
            log(f"  step {i + 1}/{p['steps']}  loss {float(loss):.3f}  ({time.time() - t0:.0f} s)")

    @jax.jit
    def correct(params, x, y):
        return _loss(structure, params, _pixels(x), y)[1]

    hits = np.concatenate([np.asarray(correct(params, test_x[i:i + 500], test_y[i:i + 500]))
                           for i in range(0, len(test_x), 500)])
    accuracy = {name: round(float(hits[:, i].mean()), 4) for i, name in enumerate(FACTORS)}
    log(f"{preset}: held-out accuracy per factor {accuracy} ({time.time() - t0:.0f} s of training)")
    write_root(p["out"], structure, {s: {k: np.asarray(v) for k, v in t.items()} for s, t in params.items()},
               preset=preset, seed=seed, accuracy=accuracy, n_train=len(train_x), p=p)
    return accuracy


def write_root(out: Path, structure: Structure, params, *, preset: str, seed: int, accuracy: dict, n_train: int,
               p: dict) -> None:
    """The root as a one-task repo in the published format, with its card."""
    name = "shapes-pretraining"
    store = LocalStore(out)
    refs = [store.write_component(params[s], s.split(".")[0], s) for s in structure.slots()]
    store.write_config(SystemConfig(structure.dims, structure.image_size, structure.num_layers,
                                    name=out.name, description=f"pretrained root ({preset} preset)"))
    mean = sum(accuracy.values()) / len(accuracy)
    store.write_task(TaskFile(
        task=name, image_size=structure.image_size, num_layers=structure.num_layers, components=refs,
        labels=label_names(), preprocessing=pp_spec(structure.image_size),
        hparams={"optimizer": "adamw", "lr": p["lr"], "steps": p["steps"], "batch_size": p["batch_size"],
                 "warmup_steps": p["steps"] // 20, "weight_decay": 1e-4, "seed": seed},
        metrics={"test_accuracy": round(mean, 4), **{f"{k}_accuracy": v for k, v in accuracy.items()},
                 "num_test_examples": N_TEST},
        lineage={"init": "random", "data": "generated:shapes", "script": "training/pretrain_root.py",
                 "preset": preset},
        sizes={"activated_params": sum(r.params for r in refs), "bytes": sum(r.bytes for r in refs),
               "new_params": sum(r.params for r in refs)},
    ))
    rows = "\n".join(f"| {k} | {n} | {accuracy[k]:.3f} | {1 / n:.3f} |" for k, (n, _, _) in FACTORS.items())
    card = f"""---
library_name: mu2hub
tags: [mu2hub, vit, pretrained-root]
license: apache-2.0
---
# {out.name}: a pretrained root for mu2hub ({preset})

A {structure.num_layers}-block ViT (hidden {structure.dims.hidden_size}, {structure.dims.num_heads} heads, MLP \
{structure.dims.mlp_dim}, patch {structure.dims.patch_size}, {structure.image_size}×{structure.image_size} px) \
pretrained by `training/pretrain_root.py --preset {preset}` (seed {seed}) so that µ2Net children have \
something to share: the reference never freezes random-init blocks.

- **Data**: {n_train:,} generated dSprites-style images (`mu2hub.data.builtin`), drawn with seed {seed} and \
excluding every factor combination of the shape tasks' default splits (seed 0): none of the images the \
quickstart's tasks validate or test on is seen here.
- **Objective**: five heads at once (shape, scale, orientation in 8 sectors, x and y position in 8 bins); \
the head is dropped when the folder is used as a root (`root.init = "mu2hub:<folder>"`: a zero head is put in).
- **Optimizer**: AdamW, peak lr {p['lr']}, {p['steps']:,} steps of batch {p['batch_size']}, warm-up + cosine.

Held-out accuracy ({N_TEST:,} images drawn the same way):

| factor | classes | accuracy | chance |
|---|---|---|---|
{rows}
"""
    atomic_write(out / "README.md", card.encode())
    atomic_write(out / "pretraining.json", json.dumps({"preset": preset, "seed": seed, "accuracy": accuracy},
                                                      indent=1).encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quickstart")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    pretrain(a.preset, seed=a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
