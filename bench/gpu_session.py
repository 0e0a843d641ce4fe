"""Issue 14, Part 1, as one prepared run: bench/gpu.py's and bench/cost.py's measurements on one GPU, in priority
order within a time budget, one short table at the end, everything also written as JSON.

Run on the GPU machine, from the repository root: `bash bench/gpu_session.sh` (it checks the machine, then runs
this with `--out $OUT`). Nothing is installed: every package must already be there (the check says what is
missing). Anywhere else: `bash bench/gpu_session.sh --smoke`: the same code paths at toy sizes on the CPU
(torch.compile with the `aot_eager` backend: Dynamo and AOTAutograd, without inductor's code generation).

Sections, in order (each one's failure is reported and the next one runs; one that would not fit the remaining
`--budget-s` is skipped, and the end of the log gives the command that runs the skipped ones):
  check     devices, versions, whether our cuDNN attention compiles here
  matmul    the bf16 8192³ matmul rate: the MFU denominator
  B16-infer ViT-B/16, 224 px, batch 256, bf16: ours vs transformers `ViTForImageClassification` (SDPA, eager)
  B16-train the same, child training (SGD + momentum, clip 1): ours vs the peer under `torch.compile`
  prefix    a ViT-B/16 child training its top 25% of blocks, plain vs frozen-prefix cache, same data order
  L16-infer, L16-train   ViT-L/16 as B16-*
  cost      bench/cost.py's device-hours to add one task at the reference's ViT-L budget, ours with and without
            the prefix cache vs the peer, from the L16 rows plus the top-25% rates measured here
  ablations B/16 with unfused q/k/v, XLA attention instead of cuDNN, float32 momentum (bf16 on a CPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and the PyTorch peer share the GPU:
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")  # JAX's pool never gives memory back, so cap it
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import interleaved_rates  # noqa: E402
from cost import BATCH as COST_BATCH, CHILDREN, TRAIN_IMAGES, VAL_IMAGES, cost_rows, rates  # noqa: E402
from gpu import OTHER_MOMENTUM, Setting, matmul_rate, measure, ours_inference, ours_training, peer_inference, \
    peer_training, prefix_child  # noqa: E402

from mu2hub.utils.tables import table  # noqa: E402

# Seconds each section is expected to take on one H200 (compilation included). Estimates until the first
# session measures them (it prints each section's time): a section starts only if it fits the time left.
ESTIMATE_S = {"check": 20, "matmul": 10, "B16-infer": 40, "B16-train": 130, "prefix": 100, "L16-infer": 50,
              "L16-train": 190, "cost": 150, "ablations": 120}
SMOKE_ESTIMATE_S = {name: 2 for name in ESTIMATE_S}


@dataclasses.dataclass
class Session:
    """What the sections share: settings, results so far, the deadline."""

    smoke: bool
    deadline: float
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    rows: list[list[str]] = dataclasses.field(default_factory=list)

    @property
    def gpu(self) -> bool:
        return jax.devices()[0].platform == "gpu"

    def setting(self, variant: str) -> Setting:
        if self.smoke:
            return Setting(f"smoke-{variant[0]}", 32, 4, calls=1, gpu=self.gpu, torch_backend="aot_eager")
        return Setting(variant, 224, 256, calls=10, gpu=self.gpu)

    @property
    def repeats(self) -> int:
        return 1 if self.smoke else 3

    @property
    def dtype(self):
        return jnp.bfloat16 if self.gpu else None


# ---------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------


def check(session: Session) -> dict[str, Any]:
    """Devices and software; cuDNN attention as `model.attend` calls it (padded to 256 for 197 tokens)."""
    from mu2hub import model as vit

    out: dict[str, Any] = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                           "device_kind": jax.devices()[0].device_kind, "python": platform.python_version(),
                           "cudnn_attention": vit._cudnn_attention_available(), "cc": shutil.which("cc")}
    for name in ("jaxlib", "flax", "optax", "torch", "transformers", "safetensors", "numpy", "PIL", "triton"):
        try:
            out[name] = __import__(name).__version__
        except Exception as e:  # noqa: BLE001 - report, go on
            out[name] = f"MISSING ({type(e).__name__})"
    try:
        import torch

        out["torch_cuda"] = torch.cuda.is_available() and torch.cuda.get_device_name(0)
        out["torch_cudnn"] = torch.backends.cudnn.version()
    except Exception as e:  # noqa: BLE001
        out["torch_cuda"] = f"unavailable ({type(e).__name__}: {e})"
    print("  " + json.dumps(out), flush=True)
    return out


def matmul(session: Session) -> dict[str, Any]:
    rate, what = matmul_rate(session.gpu)
    session.rows.append([f"{what} (MFU denominator)", f"{rate / 1e12:.2f} TFLOP/s", "", "", ""])
    return {"rate": rate, "what": what}


def _peer_rates(s: Setting, ours: dict, peer_fn, mode: str, repeats: int) -> tuple[dict, float, str]:
    """`gpu.measure` with one peer mode; torch.compile falling back to eager (said so) if it fails here."""
    try:
        return measure(s, ours, peer_fn, (mode,), repeats)
    except Exception as e:  # noqa: BLE001 - a peer that does not compile is still a peer, eager
        if mode == "eager":
            raise
        traceback.print_exc()
        got, peer, _ = measure(s, ours, peer_fn, ("eager",), repeats)
        return got, peer, f"eager: torch.compile failed ({type(e).__name__})"


def vit_rows(variant: str, kind: str) -> Callable[[Session], dict[str, Any]]:
    """Ours vs the peer: inference against eager SDPA, child training against torch.compile (gpu_notes.md: the
    compiled peer infers slower than eager, trains faster)."""
    def run(session: Session) -> dict[str, Any]:
        s = session.setting(variant)
        ours_fn, peer_fn, factor, mode = ((ours_inference, peer_inference, 1, "eager") if kind == "infer" else
                                          (ours_training, peer_training, 3, "torch.compile"))
        if session.smoke and variant != "B/16":  # the compiled peer's code path is checked once, on B/16
            mode = "eager"
        ours, peer, how = _peer_rates(s, {"ours": ours_fn(s)}, peer_fn, mode, session.repeats)
        rate = session.results.get("matmul", {}).get("rate")
        mfu = f"{ours['ours'] * factor * s.flops / rate:.1%}" if rate else ""
        what = "inference" if kind == "infer" else "child training"
        session.rows.append([f"ViT-{s.variant} {what}, {s.image_size} px, batch {s.batch}", f"{ours['ours']:,.1f}",
                             f"{peer:,.1f} ({how})", f"{ours['ours'] / peer:.2f}x", mfu])
        return {"ours": ours["ours"], "peer": peer, "peer_how": how, "mfu": mfu, "setting": dataclasses.asdict(s)}
    return run


def prefix(session: Session) -> dict[str, Any]:
    s = session.setting("B/16")
    steps, n = (2, 32) if session.smoke else (20, 4096)
    p = prefix_child(s.variant, s.image_size, s.batch, steps, n, session.dtype, task="shapes/label_shape")
    session.rows.append([f"ViT-{s.variant} top-25% child, {s.image_size} px: examples/s, prefix cache vs plain",
                         f"{p['cached']:,.1f}", f"{p['plain']:,.1f} (ours, plain)", f"{p['cached'] / p['plain']:.2f}x",
                         f"val acc {p['cached_accuracy']:.3f} vs {p['plain_accuracy']:.3f}"])
    return p


def cost(session: Session) -> dict[str, Any]:
    """The L16 rows' rates (same run, same setting) plus the top-25% child's, priced at the reference budget."""
    s = session.setting("L/16")
    have = {"train_all": session.results.get("L16-train", {}).get("ours"),
            "inference": session.results.get("L16-infer", {}).get("ours"),
            "peer_train": session.results.get("L16-train", {}).get("peer"),
            "peer_inference": session.results.get("L16-infer", {}).get("peer")}
    have = {k: v for k, v in have.items() if v}
    got = rates(s, 0.25, skip=set(have), repeats=session.repeats) | have
    rows, notes = cost_rows(s, got, 0.25)
    print("\n".join(notes), flush=True)
    session.results["cost_table"] = rows
    unit = "GPU-hours" if s.gpu else "CPU-hours"
    peer, cached = rows[0], rows[3]  # cost_rows' order: the peer first, ours top-25% with one prefix per task fourth
    session.rows.append([f"{unit} to add one task (ViT-L budget, {s.image_size} px rates), top-25% + prefix cache",
                         cached[1], f"{peer[1]} (peer, every block)", f"{cached[2]}x", "cost table below"])
    return {"rates": got, "rows": rows, "notes": notes}


def ablations(session: Session) -> dict[str, Any]:
    """Our automatic choices against their alternatives on B/16, ours only, interleaved (ratios to the default)."""
    s = session.setting("B/16")
    out = {}
    for kind, fn, options in (("inference", ours_inference, {"fuse_qkv=False": dict(fuse_qkv=False),
                                                             "attention='xla'": dict(attention="xla")}),
                              ("training", ours_training, {"attention='xla'": dict(attention="xla"),
                                                           f"{OTHER_MOMENTUM} momentum": dict(momentum=OTHER_MOMENTUM)})):
        got = interleaved_rates({"default": fn(s), **{name: fn(s, **o) for name, o in options.items()}},
                                calls=s.calls, repeats=session.repeats)
        for name in options:
            session.rows.append([f"  ViT-{s.variant} {kind}, ours with {name}", f"{got[name]:,.1f}",
                                 f"{got['default']:,.1f} (ours, default)", f"{got[name] / got['default']:.2f}x", ""])
        out[kind] = got
    return out


SECTIONS: dict[str, Callable[[Session], Any]] = {
    "check": check, "matmul": matmul, "B16-infer": vit_rows("B/16", "infer"), "B16-train": vit_rows("B/16", "train"),
    "prefix": prefix, "L16-infer": vit_rows("L/16", "infer"), "L16-train": vit_rows("L/16", "train"), "cost": cost,
    "ablations": ablations,
}


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="toy sizes on whatever device this is (CPU: float32)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="where the JSON goes ($OUT)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="seconds for all sections (skip what will not fit)")
    ap.add_argument("--only", default=None, help=f"comma-separated sections, of {','.join(SECTIONS)}")
    a = ap.parse_args()
    start = time.time()
    names = a.only.split(",") if a.only else list(SECTIONS)
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    session = Session(a.smoke, start + a.budget_s)
    if not session.gpu and not a.smoke:
        print("no GPU here: every GPU row would be a CPU row; run with --smoke to check the code paths", flush=True)
        return 2
    from mu2hub.inference.compilation import enable_compilation_cache

    # a rerun on the same (still warm) machine loads our compiled steps instead of compiling them again
    enable_compilation_cache(os.environ.get("MU2HUB_COMPILATION_CACHE") or Path("/tmp") / "mu2hub-compilation")
    status: dict[str, str] = {}
    estimates = SMOKE_ESTIMATE_S if a.smoke else ESTIMATE_S
    for name in names:
        left = session.deadline - time.time()
        if left < estimates[name]:
            status[name] = f"skipped ({left:.0f} s left, needs ~{estimates[name]} s)"
            print(f"== {name}: {status[name]}", flush=True)
            continue
        print(f"== {name} ({left:.0f} s left)", flush=True)
        t = time.time()
        try:
            session.results[name] = SECTIONS[name](session)
            status[name] = f"ok in {time.time() - t:.0f} s"
        except Exception as e:  # noqa: BLE001 - one failure must not cost the rest of a scarce session
            traceback.print_exc()
            status[name] = f"FAILED in {time.time() - t:.0f} s: {type(e).__name__}: {str(e)[:200]}"
            session.rows.append([f"{name}", "FAILED", "", "", f"{type(e).__name__}"])
        print(f"   {name}: {status[name]}", flush=True)
        _free_memory()
    device = session.results.get("check", {}).get("device_kind") or jax.devices()[0].device_kind
    print(f"\nbench/gpu_session.py — {device}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, JAX {jax.__version__}, "
          f"{'SMOKE (toy sizes, not a measurement)' if a.smoke else 'bf16'}; {time.time() - start:.0f} s")
    print(table(session.rows, ["measure (images/s unless said)", "ours", "peer", "ours / peer", "MFU / note"]))
    if "cost_table" in session.results:
        print(f"\nbudget: {CHILDREN} children × {TRAIN_IMAGES // CHILDREN:,} training images (batch {COST_BATCH}) + "
              f"{VAL_IMAGES:,} validation images per task (munet_spec.md §3.2)")
        print(table(session.results["cost_table"], ["trainer", "device-hours", "x peer", "throughput from"]))
    print("\nsections: " + "; ".join(f"{k} {v}" for k, v in status.items()))
    redo = [k for k, v in status.items() if not v.startswith("ok")]
    if redo:
        smoke = "--smoke " if a.smoke else ""
        print(f"to run what did not finish: bash bench/gpu_session.sh {smoke}--only {','.join(redo)}")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_session.json").write_text(json.dumps({"status": status, "results": session.results,
                                                        "smoke": a.smoke, "seconds": time.time() - start},
                                                       indent=1, default=str))
    return 0 if all(v.startswith("ok") for v in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
