"""Pretrain the small ViT roots the project ships: the quickstart's and the test suite's.

µ2Net never evolves on top of frozen random blocks: every reference configuration but one starts from an
ImageNet-21k ViT, and the random-init one (Ti/16 "0 layers") has a root with no blocks at all. A root must know
something before children share it frozen, so the project ships small pretrained roots, made by this script
from images it generates (nothing is downloaded, nothing is taken from a task the project evaluates on):

- **shapes**: dSprites-style shapes (`mu2hub.data.builtin`: shape, scale, orientation, x and y position), drawn
  with their own seed and **excluding every factor combination of the tasks' default splits** (seed 0), so no
  image a quickstart task validates or tests on is seen here; five heads (3 + 6 + 8 + 8 + 8 classes);
- **glyphs** and **textures** (quickstart preset; `procedural.py`): the 62 letters and digits in the fonts
  matplotlib ships, and ten procedural texture families; one head each. A shapes-only root transferred to
  handwriting weakly and to texture photographs not at all (fine-tuning it lost to scratch), as an i21k root would not;
- objective: every head at once, a softmax cross-entropy per head over the images it applies to — broad features,
  not one task's labels;
- optimizer: AdamW with a warm-up + cosine schedule (big_vision's ViT recipe; µ2Net itself only fine-tunes);
- output: a one-task repo in the published format (`config.json`, `tasks/<name>.json`, content-addressed
  safetensors components, a model card with provenance and held-out accuracy per head), which a config names
  as `root.init = "mu2hub:<folder>"`.

Run: `python training/pretrain_root.py --preset quickstart` (about 12 minutes on 2 CPU cores) and `--preset tiny`
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
from mu2hub.hub.store import LocalStore
from mu2hub.utils.atomic import atomic_write

import procedural

REPO = Path(__file__).resolve().parent.parent

#: name -> (dims, image size, depth, training set size, steps, batch, peak lr, output folder)
PRESETS = {
    "quickstart": dict(dims=dict(hidden_size=64, num_heads=4, mlp_dim=128, patch_size=8), image_size=32, num_layers=3,
                       n_train=60_000, steps=6_000, batch_size=128, lr=2e-3, sources=("shapes", "glyphs", "textures"),
                       out=REPO / "training" / "roots" / "generated-vit-64"),
    "tiny": dict(dims=dict(hidden_size=16, num_heads=2, mlp_dim=32, patch_size=4), image_size=8, num_layers=2,
                 n_train=20_000, steps=1_500, batch_size=128, lr=3e-3, sources=("shapes",),
                 out=REPO / "tests" / "assets" / "tiny_root"),
}
N_TEST = 4_000

#: The shape heads: factor name -> (classes, factor column, values per class).
FACTORS = {
    "shape": (len(builtin.SHAPES), 0, 1),
    "scale": (len(builtin.SCALES), 1, 1),
    "orientation": (8, 2, builtin.NUM_ORIENTATIONS // 8),
    "x_position": (8, 3, builtin.NUM_POSITIONS // 8),
    "y_position": (8, 4, builtin.NUM_POSITIONS // 8),
}
#: Every pretraining head: name -> its classes' names. An image has a label for its own source's heads only.
HEADS = {**{name: [str(i) for i in range(n)] for name, (n, _, _) in FACTORS.items()},
         "glyph": list(procedural.GLYPHS), "texture": list(procedural.TEXTURES)}
#: The heads each source of images trains.
SOURCE_HEADS = {"shapes": tuple(FACTORS), "glyphs": ("glyph",), "textures": ("texture",)}


def heads_of(sources: tuple[str, ...]) -> dict[str, list[str]]:
    return {h: HEADS[h] for s in sources for h in SOURCE_HEADS[s]}


def factor_labels(factors: np.ndarray) -> np.ndarray:
    """[n, 5] factor indices -> [n, 5] class per shape head."""
    return np.stack([factors[:, col] // per for _, col, per in FACTORS.values()], axis=1).astype(np.int32)


def label_names(sources: tuple[str, ...]) -> list[str]:
    return [f"{name}={c}" for name, classes in heads_of(sources).items() for c in classes]


#: Split sizes (train + validation + test) of the shape tasks the project evolves: the defaults and the tests'.
HELD_OUT_SIZES = (sum(builtin.DEFAULT_SIZES.values()), 256 + 64 + 64)


def held_out_factors() -> set[tuple[int, ...]]:
    """Every factor combination of the shape tasks' splits (seed 0; `HELD_OUT_SIZES`): never drawn here."""
    return {tuple(f) for n in HELD_OUT_SIZES for f in builtin.sample_factors(n, 0).tolist()}


def shape_images(n: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` shape images and their 5 factor labels, no combination shared with the tasks' splits."""
    exclude = held_out_factors()
    factors = builtin.sample_factors(n + len(exclude), seed)
    keep = np.array([tuple(f) not in exclude for f in factors.tolist()])
    factors = factors[keep][:n]
    return builtin.render(factors, image_size), factor_labels(factors)


#: Each source's generator: (n, image size, seed) -> (uint8 images [n, S, S, 3], labels [n] or [n, heads]).
GENERATORS = {"shapes": shape_images, "glyphs": procedural.glyphs, "textures": procedural.textures}


def pretraining_data(n: int, image_size: int, seed: int, sources: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (uint8 [n, S, S, 3]) split evenly over `sources`, shuffled, and labels [n, heads] (-1: the head
    does not apply to the image's source)."""
    heads = list(heads_of(sources))
    images, labels = [], []
    for i, source in enumerate(sources):
        k = n // len(sources) + (i < n % len(sources))
        y = np.full((k, len(heads)), -1, np.int32)
        x, source_labels = GENERATORS[source](k, image_size, seed + i)
        y[:, [heads.index(h) for h in SOURCE_HEADS[source]]] = source_labels.reshape(k, -1)
        images.append(x)
        labels.append(y)
    if len(sources) == 1:
        return images[0], labels[0]
    order = np.random.default_rng(seed).permutation(n)
    return np.concatenate(images)[order], np.concatenate(labels)[order]


def _loss(structure: Structure, sizes: list[int], params, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed over heads: each head's softmax cross-entropy over the images it applies to; and hits per head."""
    logits = vit.apply_path(structure, params, x)
    losses, correct, start = [], [], 0
    for i, n in enumerate(sizes):
        part, label = logits[:, start:start + n], y[:, i]
        valid = label >= 0
        ce = optax.softmax_cross_entropy_with_integer_labels(part, jnp.maximum(label, 0))
        losses.append(jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(valid.sum(), 1))
        correct.append(jnp.where(valid, jnp.argmax(part, -1) == label, False))
        start += n
    return sum(losses), jnp.stack(correct, 1)


def _pixels(images: np.ndarray | jax.Array) -> jax.Array:
    return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def pretrain(preset: str, *, seed: int = 1, log=print) -> dict:
    p = PRESETS[preset]
    dims = Dims(**p["dims"])
    heads = heads_of(p["sources"])
    sizes = [len(c) for c in heads.values()]
    structure = Structure(dims, p["image_size"], p["num_layers"], sum(sizes))
    t0 = time.time()
    images, labels = pretraining_data(p["n_train"] + N_TEST, p["image_size"], seed, p["sources"])
    train_x, train_y, test_x, test_y = images[:-N_TEST], labels[:-N_TEST], images[-N_TEST:], labels[-N_TEST:]
    log(f"{preset}: {len(train_x):,} training / {len(test_x):,} held-out images rendered in {time.time() - t0:.0f} s")

    params = vit.init_path(structure, jax.random.key(seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, p["lr"], p["steps"] // 20, p["steps"])
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        (loss, _), grads = jax.value_and_grad(lambda q: _loss(structure, sizes, q, _pixels(x), y), has_aux=True)(params)
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
        return _loss(structure, sizes, params, _pixels(x), y)[1]

    hits = np.concatenate([np.asarray(correct(params, test_x[i:i + 500], test_y[i:i + 500]))
                           for i in range(0, len(test_x), 500)])
    accuracy = {name: round(float(hits[test_y[:, i] >= 0, i].mean()), 4) for i, name in enumerate(heads)}
    log(f"{preset}: held-out accuracy per head {accuracy} ({time.time() - t0:.0f} s of training)")
    write_root(p["out"], structure, {s: {k: np.asarray(v) for k, v in t.items()} for s, t in params.items()},
               preset=preset, seed=seed, accuracy=accuracy, n_train=len(train_x), p=p)
    return accuracy


def write_root(out: Path, structure: Structure, params, *, preset: str, seed: int, accuracy: dict, n_train: int,
               p: dict) -> None:
    """The root as a one-task repo in the published format, with its card."""
    name = "-".join(p["sources"]) + "-pretraining"
    store = LocalStore(out)
    refs = [store.write_component(params[s], s.split(".")[0], s) for s in structure.slots()]
    store.write_config(SystemConfig(structure.dims, structure.image_size, structure.num_layers,
                                    name=out.name, description=f"pretrained root ({preset} preset)"))
    mean = sum(accuracy.values()) / len(accuracy)
    store.write_task(TaskFile(
        task=name, image_size=structure.image_size, num_layers=structure.num_layers, components=refs,
        labels=label_names(p["sources"]), preprocessing=pp_spec(structure.image_size),
        hparams={"optimizer": "adamw", "lr": p["lr"], "steps": p["steps"], "batch_size": p["batch_size"],
                 "warmup_steps": p["steps"] // 20, "weight_decay": 1e-4, "seed": seed},
        metrics={"test_accuracy": round(mean, 4), **{f"{k}_accuracy": v for k, v in accuracy.items()},
                 "num_test_examples": N_TEST},
        lineage={"init": "random", "data": "generated:" + "+".join(p["sources"]), "script": "training/pretrain_root.py",
                 "preset": preset},
        sizes={"activated_params": sum(r.params for r in refs), "bytes": sum(r.bytes for r in refs),
               "new_params": sum(r.params for r in refs)},
    ))
    rows = "\n".join(f"| {k} | {len(c)} | {accuracy[k]:.3f} | {1 / len(c):.3f} |" for k, c in heads_of(p["sources"]).items())
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

- **Data**: {n_train:,} generated images, {' + '.join(p['sources'])} in equal parts, drawn with seed {seed}: \
{_sources_text(p['sources'])} None of the images the project's tasks validate or test on is seen here.
- **Objective**: every head at once ({', '.join(heads_of(p['sources']))}), a cross-entropy per head over the images \
it applies to; the head is dropped when the folder is used as a root (`root.init = "mu2hub:<folder>"`: a zero \
head is put in).
- **Optimizer**: AdamW, peak lr {p['lr']}, {p['steps']:,} steps of batch {p['batch_size']}, warm-up + cosine.

Held-out accuracy ({N_TEST:,} images drawn the same way):

| head | classes | accuracy | chance |
|---|---|---|---|
{rows}
"""
    atomic_write(out / "README.md", card.encode())
    atomic_write(out / "pretraining.json", json.dumps({"preset": preset, "seed": seed, "accuracy": accuracy},
                                                      indent=1).encode())


_SOURCE_TEXT = {
    "shapes": "dSprites-style shapes (`mu2hub.data.builtin`) excluding every factor combination of the shape tasks' "
              "default splits (seed 0), five heads (shape, scale, orientation in 8 sectors, x and y in 8 bins)",
    "glyphs": "the 62 digits and letters in 16 fonts matplotlib ships (DejaVu, STIX, Computer Modern) at random size, "
              "rotation, slant, weight, position and resolution (`training/procedural.py`)",
    "textures": "ten procedural texture families (power-law noise at three slopes, gratings, directional noise, "
                "bricks, blobs, Voronoi cells, plaids, scratches) at random scale, orientation, contrast and "
                "resolution (`training/procedural.py`)",
}


def _sources_text(sources: tuple[str, ...]) -> str:
    return "; ".join(_SOURCE_TEXT[s] for s in sources) + "."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quickstart")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    pretrain(a.preset, seed=a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
