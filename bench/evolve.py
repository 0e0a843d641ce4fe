"""Evolution throughput and compilation: the quickstart evolved in fresh processes on a cold and then a warm
compilation cache (what a first and a second `make demo` do), and one child's training images/s against
transformers' PyTorch ViT on the same weights' shapes, same device kind.

Run: `.venv/bin/python bench/evolve.py [--config training/configs/quickstart.py] [--runs cold,warm]
[--peer-variant B/16]`. `--runs` may also name `off` (no persistent cache: every program compiled in-process).
Each run is its own process with its own empty run directory; `cold` and `warm` share one new cache folder.

Compilation is measured two ways: JAX's own compile events (tracing, lowering to StableHLO, and XLA compiling or
loading the executable from the cache; their time spans merged so nested calls count once), and the loop's
`compile_time` (the first step and first validation of each child, as earlier BENCHMARKS.md figures used: it also
holds that step's and that validation's run time). On a machine without a GPU the peer comparison runs on CPU at
a small size and the GPU row says "not measured".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import ROOT, VARIANTS, load_average, machine

sys.path.insert(0, str(ROOT / "training"))
from evolve import load_config  # noqa: E402

from mu2hub import model as vit  # noqa: E402
from mu2hub.format.system import Dims, Structure  # noqa: E402
from mu2hub.utils.tables import table  # noqa: E402
from mu2hub.train.child import data_hparams, init_opt_state, make_optimizer, train_step  # noqa: E402

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the spans (a compile nested in a trace counts once)."""
    total, end = 0.0, -float("inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def one_run(config_path: str, cache: str) -> dict:
    """The quickstart evolution in this process; what it cost and what it found, as JSON-ready data."""
    from jax import monitoring

    from mu2hub.evolution.evolve import evolve

    spans: list[tuple[float, float]] = []
    events: dict[str, int] = {}
    monitoring.register_event_time_span_listener(
        lambda event, start, end, **_: spans.append((start, end)) if event in _COMPILE_EVENTS else None)
    monitoring.register_event_listener(lambda event, **_: events.__setitem__(event, events.get(event, 0) + 1))
    cfg = load_config(config_path)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        run = evolve(cfg, Path(d) / "run", quiet=True, compilation_cache=False if cache == "off" else cache)
        wall = time.perf_counter() - t
        rows = run.history()
        tests = {task: tf.metrics["test_accuracy"] for task, tf in sorted(run.best_tasks().items())}
    return {"wall": wall, "children": len(rows), "train": sum(r["train_time"] for r in rows),
            "first_step": sum(r["compile_time"] for r in rows), "examples": sum(r["examples"] for r in rows),
            "compile": _union_seconds(spans), "loaded": events.get("/jax/compilation_cache/cache_hits", 0),
            "written": events.get("/jax/compilation_cache/cache_misses", 0),
            "requests": events.get("/jax/compilation_cache/compile_requests_use_cache", 0),
            "children_found": [(r["task"], r["quality"], r["score"], r["sources"]) for r in rows], "test": tests}


def quickstart(config_path: str, runs: list[str]) -> tuple[list[list[str]], list[str]]:
    """Each of `runs` ("off", "cold", "warm") in a fresh process, in order; table rows and their column names."""
    folder = Path(tempfile.mkdtemp(prefix="mu2hub-bench-compilation-"))
    out = {}
    for name in runs:
        cache = "off" if name == "off" else str(folder)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, __file__, "--one-run", cache, "--config", config_path], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"the {name} run failed:\n{proc.stderr[-4000:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {name}: {out[name]['wall']:.1f} s, {load_average()}", flush=True)
    first = out[runs[0]]

    def row(label: str, fn) -> list[str]:
        return [label, *(fn(out[n]) for n in runs)]

    rows = [
        row("evolution wall time (s)", lambda r: f"{r['wall']:.1f}"),
        row("children trained (per minute)", lambda r: f"{r['children']} ({r['children'] / r['wall'] * 60:.1f})"),
        row("compilation, JAX's compile events (s, share of wall)",
            lambda r: f"{r['compile']:.1f} ({r['compile'] / r['wall']:.0%})"),
        row("first step + first validation per child (s, share of wall)",
            lambda r: f"{r['first_step']:.1f} ({r['first_step'] / r['wall']:.0%})"),
        row("executables compiled and written / loaded from the cache",
            lambda r: "not cached" if not r["requests"] else f"{r['written']} / {r['loaded']}"),
        row("training examples / s, excluding the first step + validation",
            lambda r: f"{r['examples'] / r['train']:,.0f}"),
        row("training examples / s, wall", lambda r: f"{r['examples'] / r['wall']:,.0f}"),
        row("test accuracy per task", lambda r: " / ".join(f"{a:.3f}" for a in r["test"].values())),
        row(f"children and results identical to the {runs[0]} run",
            lambda r: "yes" if (r["children_found"], r["test"]) == (first["children_found"], first["test"]) else "NO"),
    ]
    return rows, [f"{n} cache" if n != "off" else "cache off" for n in runs]


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
    static = data_hparams(hp)
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
    ap.add_argument("--runs", default="cold,warm", help="quickstart runs in order: off, cold, warm")
    ap.add_argument("--peer-variant", default=None, help="default: B/16 on GPU, Ti/16 at 64 px on CPU")
    ap.add_argument("--skip-quickstart", action="store_true")
    ap.add_argument("--one-run", default=None, metavar="CACHE", help=argparse.SUPPRESS)  # a run's own process
    a = ap.parse_args()
    if a.one_run is not None:
        print(json.dumps(one_run(a.config, a.one_run)))
        return
    gpu = jax.devices()[0].platform == "gpu"
    print(f"bench/evolve.py — {machine()}; JAX {jax.__version__} on {jax.devices()}; {load_average()}", flush=True)
    if not a.skip_quickstart:
        print(f"\nquickstart evolution ({a.config}), each run a fresh process", flush=True)
        rows, columns = quickstart(a.config, a.runs.split(","))
        print(table(rows, ["measure", *columns]))
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
