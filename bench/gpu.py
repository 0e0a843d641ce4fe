"""Our path model against transformers' PyTorch ViT on the same device in the same run: inference and child
training images/s for ViT-B/16 and ViT-L/16, model FLOP utilisation against the measured matmul rate, and
frozen-prefix caching for a child that trains only its top 25% of blocks.

Run: `.venv/bin/python bench/gpu.py` (GPU: B/16 and L/16 at 224 px, batch 256 (B) / 128 (L), bf16; about
5 minutes on an H100). Without a GPU the same script runs on the CPU at small sizes (64 px, batch 8, float32)
against PyTorch on the CPU, and every GPU row says "not measured (no GPU)".

Like for like: both sides train every parameter with SGD + momentum 0.9 after clipping the global norm at 1
(µ2Net's optimizer; ours keeps the momentum in bf16 as µ2Net does on a GPU, in float32 on a CPU), bf16 compute with float32 master weights
on a GPU (torch autocast; ours `dtype=bfloat16`), random weights, 1000 classes, inputs already on the device.
The peer is the faster of eager and `torch.compile` (GPU only: compiling on a CPU needs a C++ toolchain and
is not what a CPU user would run). Ours feeds uint8 images and preprocesses inside the step, as in training.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory for the PyTorch peer
# PyTorch's OpenMP threads spin after each op by default and starve XLA's (and the reverse) when the two take
# turns on a CPU: measured 2.5x slower peer on 2 cores. Passive waiting lets interleaved timing be fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import VARIANTS, interleaved_rates, load_average, machine, median_rate, vit_forward_flops

from mu2hub import model as vit
from mu2hub.train import child as train
from mu2hub.data import Split, get_task
from mu2hub.format.system import Dims, Structure
from mu2hub.inference.prefix import PrefixCache
from mu2hub.utils.tables import table

Timed = tuple  # (fn, items per call, sync(output)): what `_common.interleaved_rates` times
# the momentum accumulator this device does not use by default: the ablation of `train.momentum_dtype`'s choice
OTHER_MOMENTUM = "float32" if train.momentum_dtype() == "bfloat16" else "bfloat16"

HP = {"opt_lr": 0.01, "opt_lr_schedule": "cosine", "opt_lr_warmup_ratio": 0.05, "opt_momentum": 0.9,
      "opt_nesterov": False, "ds_crop": False, "ds_flip_left_right": False}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One measured configuration: the same for ours and the peer."""

    variant: str
    image_size: int
    batch: int
    calls: int
    gpu: bool
    torch_backend: str = "inductor"  # torch.compile's backend; bench/gpu_session.py --smoke uses "aot_eager"

    @property
    def dims(self) -> Dims:
        hidden, heads, mlp, patch, _, _ = VARIANTS[self.variant]
        return Dims(hidden, heads, mlp, patch)

    @property
    def layers(self) -> int:
        return VARIANTS[self.variant][4]

    @property
    def flops(self) -> float:
        d = self.dims
        return vit_forward_flops(d.hidden_size, d.mlp_dim, d.patch_size, self.layers, self.image_size)


# ---------------------------------------------------------------------------------------------------
# The device's matmul rate (the MFU denominator)
# ---------------------------------------------------------------------------------------------------


def matmul_rate(gpu: bool) -> tuple[float, str]:
    """FLOP/s of a large square matmul: bf16 8192³ on a GPU, float32 2048³ on a CPU (bf16 is emulated there)."""
    n, dtype = (8192, jnp.bfloat16) if gpu else (2048, jnp.float32)
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    f = jax.jit(lambda a: a @ a)
    rate = median_rate(lambda: f(a), 2 * n**3, calls=20 if gpu else 2, sync=jax.block_until_ready)
    return rate, f"{jnp.dtype(dtype).name} {n}³ matmul"


# ---------------------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------------------


def ours_inference(s: Setting, **options) -> Timed:
    """`options`: `attention` / `fuse_qkv` of `apply_path` (default: their automatic choice)."""
    structure = Structure(s.dims, s.image_size, s.layers, 1000)
    params = jax.device_put(vit.init_path(structure, jax.random.key(0)))
    x = jax.random.uniform(jax.random.key(1), (s.batch, s.image_size, s.image_size, 3), minval=-1, maxval=1)
    dtype = jnp.bfloat16 if s.gpu else None
    return (lambda: vit.apply_path_jit(structure, params, x, dtype=dtype, **options)), s.batch, jax.block_until_ready


def ours_training(s: Setting, *, momentum: str | None = None, **options) -> Timed:
    """Every component trainable (the heaviest child), donated buffers, uint8 batches preprocessed in the step.

    `momentum`: the momentum accumulator's dtype (`train.momentum_dtype`: by default the reference's bf16 on a
    GPU, float32 on a CPU); the other one is an ablation."""
    structure = Structure(s.dims, s.image_size, s.layers, 1000)
    state = {"params": jax.device_put(vit.init_path(structure, jax.random.key(0)))}
    tx = train.make_optimizer({**HP, "opt_lr": 1.0}, 10_000, momentum=momentum)
    state["opt"] = train.init_opt_state(tx, state["params"])
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (s.batch, s.image_size, s.image_size, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 1000, s.batch, dtype=np.int32))
    static, key, lr = train.data_hparams(HP), jax.random.key(0), jnp.float32(HP["opt_lr"])
    dtype = jnp.bfloat16 if s.gpu else None

    def step():
        state["params"], state["opt"], metrics = train.train_step(structure, {}, state["params"], state["opt"], images,
                                                                  labels, key, static, tx=tx, dtype=dtype, lr=lr,
                                                                  **options)
        return metrics["loss"]

    return step, s.batch, jax.block_until_ready


# ---------------------------------------------------------------------------------------------------
# The peer: transformers' ViT in PyTorch
# ---------------------------------------------------------------------------------------------------


def _peer_model(s: Setting):
    import torch
    import transformers

    d = s.dims
    cfg = transformers.ViTConfig(hidden_size=d.hidden_size, num_attention_heads=d.num_heads, intermediate_size=d.mlp_dim,
                                 patch_size=d.patch_size, image_size=s.image_size, num_hidden_layers=s.layers,
                                 num_labels=1000, attn_implementation="sdpa")
    device = "cuda" if s.gpu else "cpu"
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(cfg).to(device), device


def _torch_sync(device: str):
    import torch

    return (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)


def peer_inference(s: Setting, compiled: bool) -> Timed:
    import torch

    model, device = _peer_model(s)
    model.eval()
    if s.gpu:
        model = model.to(torch.bfloat16)
    x = torch.randn(s.batch, 3, s.image_size, s.image_size, device=device, dtype=next(model.parameters()).dtype)
    fwd = torch.compile(model, backend=s.torch_backend) if compiled else model

    def call():
        with torch.inference_mode():
            return fwd(pixel_values=x).logits

    return call, s.batch, _torch_sync(device)


def peer_training(s: Setting, compiled: bool) -> Timed:
    import torch

    model, device = _peer_model(s)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(s.batch, 3, s.image_size, s.image_size, device=device)
    y = torch.randint(0, 1000, (s.batch,), device=device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=s.gpu):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return (torch.compile(step, backend=s.torch_backend) if compiled else step), s.batch, _torch_sync(device)


def measure(s: Setting, ours: dict[str, Timed], peer_fn, modes: tuple[str, ...] | None = None,
            repeats: int = 5) -> tuple[dict[str, float], float, str]:
    """Rates of our variants and of the peer in `modes` ("eager", "torch.compile"; default: eager, and on a GPU
    also torch.compile), repeats interleaved. Returns (ours by name, the fastest peer, how that peer ran)."""
    modes = modes or (("eager", "torch.compile") if s.gpu else ("eager",))
    peers = {mode: peer_fn(s, mode == "torch.compile") for mode in modes}
    rates = interleaved_rates({**ours, **{f"peer {k}": v for k, v in peers.items()}}, calls=s.calls, repeats=repeats)
    how = max(peers, key=lambda k: rates[f"peer {k}"])
    return {k: rates[k] for k in ours}, rates[f"peer {how}"], how


# ---------------------------------------------------------------------------------------------------
# Frozen-prefix caching: a child training its top 25% of blocks, with and without the cache
# ---------------------------------------------------------------------------------------------------


def prefix_child(variant: str, image_size: int, batch: int, steps: int, n_train: int, dtype,
                 task: str = "digits") -> dict[str, float]:
    """Train the same child (root frozen below block 3L/4) twice on `task`, same data order: plain, cached."""
    hidden, heads, mlp, patch, layers, _ = VARIANTS[variant]
    task = get_task(task) if task == "digits" else get_task(task, n_train=n_train, n_validation=max(batch, n_train // 8))
    task = dataclasses.replace(task, train=Split(task.train.images[:n_train], task.train.labels[:n_train]))
    structure = Structure(Dims(hidden, heads, mlp, patch), image_size, layers, task.num_classes)
    root = vit.init_path(structure, jax.random.key(0))
    top = {f"block.{i}" for i in range(layers - layers // 4, layers)} | {"norm", "head"}
    frozen = {s: t for s, t in root.items() if s not in top}
    trainable = {s: t for s, t in root.items() if s in top}
    kw = dict(num_validations=2, steps_per_validation=steps, batch_size=batch, seed=0, dtype=dtype)
    out, runs = {}, {"plain": [], "cached": []}
    caches = {"plain": None, "cached": PrefixCache(max_bytes=8 << 30)}
    for name, cache in caches.items():  # compile, and fill the cache
        train.train_child(structure, frozen, trainable, task, HP, prefix_cache=cache, **kw)
    for _ in range(3):  # in turn, as `interleaved_rates`
        for name, cache in caches.items():
            t = time.perf_counter()
            r = train.train_child(structure, frozen, trainable, task, HP, prefix_cache=cache, **kw)
            runs[name].append(r.examples_seen / (time.perf_counter() - t))
            out[f"{name}_accuracy"], out[f"{name}_blocks"] = r.quality, r.cached_blocks
    out |= {name: float(np.median(v)) for name, v in runs.items()}
    t = time.perf_counter()  # what a cache miss costs: the prefix over both splits, once per (prefix, data)
    for split in (task.train, task.validation):
        train.prefix_activations(structure, frozen, split, layers - layers // 4, batch_size=batch, dtype=dtype)
    out["build_s"], out["cache_examples"] = time.perf_counter() - t, len(task.train) + len(task.validation)
    return out


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


def _name(value) -> str:
    """An option's value for a row label: dtypes by name (float32), the rest as Python writes them."""
    if isinstance(value, (bool, str)):
        return repr(value)
    try:
        return jnp.dtype(value).name
    except TypeError:
        return repr(value)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="B/16,L/16")
    ap.add_argument("--skip-prefix", action="store_true")
    a = ap.parse_args()
    gpu = jax.devices()[0].platform == "gpu"
    device = jax.devices()[0].device_kind if gpu else "CPU"
    print(f"bench/gpu.py — {machine()}; JAX {jax.__version__} on {jax.devices()}; {load_average()}", flush=True)
    rate, what = matmul_rate(gpu)
    print(f"measured {what}: {rate / 1e12:.2f} TFLOP/s", flush=True)
    rows = []
    for variant in a.variants.split(","):
        size = 224 if gpu else 64
        batch = (256 if variant.startswith("B") else 128) if gpu else 8
        s = Setting(variant, size, batch, calls=10 if gpu else 2, gpu=gpu)
        for kind, ours_fn, peer_fn, factor in (("inference", ours_inference, peer_inference, 1),
                                                ("child training", ours_training, peer_training, 3)):
            # Ablations of the automatic choices on B/16: fused q/k/v (GPU only by default), cuDNN attention.
            options = {"": {}}
            if variant == "B/16":
                options |= {"fuse_qkv": dict(fuse_qkv=not gpu)} if kind == "inference" else {}
                options |= {"momentum": dict(momentum=OTHER_MOMENTUM)} if kind != "inference" else {}
                options |= {"attention": dict(attention="xla")} if gpu else {}
            ours, peer, how = measure(s, {name: ours_fn(s, **o) for name, o in options.items()}, peer_fn)
            print(f"  {variant} {kind}: ours {ours}, peer ({how}) {peer:,.1f} img/s", flush=True)
            for name, option in options.items():
                label = f"ViT-{variant} {kind}, {size} px, batch {batch}" if not name else \
                    "  same, ours with " + ", ".join(f"{k}={_name(v)}" for k, v in option.items())
                rows.append([label, device, f"{ours[name]:,.1f}", f"{peer:,.1f} ({how})" if not name else "",
                             f"{ours[name] / peer:.2f}x", f"{ours[name] * factor * s.flops / rate:.1%}"])
    if not a.skip_prefix:
        variant, size, batch, steps, n = ("B/16", 224, 256, 20, 4096) if gpu else ("S/16", 64, 16, 8, 256)
        p = prefix_child(variant, size, batch, steps, n, jnp.bfloat16 if gpu else None)
        print(f"  prefix cache: {p['cached_blocks']} blocks cached, built in {p['build_s']:.1f} s for "
              f"{p['cache_examples']} examples (once per prefix and data; not in the examples/s)", flush=True)
        rows.append([f"ViT-{variant} top-25% child, {size} px: examples/s cached vs plain", device, f"{p['cached']:,.1f}",
                     f"{p['plain']:,.1f} (ours, plain)", f"{p['cached'] / p['plain']:.2f}x",
                     f"val acc {p['cached_accuracy']:.3f} vs {p['plain_accuracy']:.3f}"])
    if not gpu:
        rows += [[f"ViT-{v} {k}, 224 px", "GPU", "not measured (no GPU)", "not measured (no GPU)", "", ""]
                 for v in a.variants.split(",") for k in ("inference", "child training")]
    print(f"\nmatmul rate ({what}, measured in this run): {rate / 1e12:.2f} TFLOP/s; MFU = model FLOPs "
          f"(analytic, training 3x forward) / that rate. {'bf16' if gpu else 'float32'} on both sides.")
    print(table(rows, ["measure (images/s)", "device", "ours", "peer", "ours / peer", "ours: MFU / note"]))


if __name__ == "__main__":
    sys.exit(main())
