"""The µ2Net paper's run (Gesmundo & Dean, arXiv 2205.12755): the 69-task stream as one resumable run.

One config, one task list: the reference's five benchmarks in its order (ViT: imagenet2012, cifar100, cifar10; then
VTAB-full, VDD, Chars, VTAB-1k; `mu2hub.data.catalog.stream()`), so `--resume` continues it wherever it stopped,
as the reference's benchmark-after-benchmark CONTINUE_FROM_STATE_DIR did. Task names are the reference's; each
resolves through `mu2hub.data.catalog` (its Hub dataset or its TFDS name, its split rule, its labels).

Presets (munet_spec.md §2.2, §3.2; first word of the argument):
- `large` (default): the "ViT large" config the paper's 69 tasks used: ViT-L/16 at 384 px, batch 64 per device,
  4 validations, ≤ 128,116 train examples between validations, ≤ 10,000 validation examples, 128 children per
  task (4 generations × 32 devices of a TPUv4-32), auto_tune_v2, base-1.0 score over 303,303,682 parameters.
- `ti3-chars`: Ti/16 capped at 3 layers on the Chars benchmark: 32 px, batch 512, 5 validations, 51,200 / 5,120,
  64 children per task, 2 task iterations, auto_tune v1 with adapters.
- `b-vdd`: B/16 on VDD: 80 px, batch 256, 30 validations, 51,200 / 5,120, 64 children, 2 iterations, v1.

Options after the preset, comma-separated (big_vision style): `tasks=a+b` (a slice of the stream), `root=<init>`
(`timm:<repo|dir>`, `big_vision:<file.npz>`), `data=<dir>` (local copies of sources, `<dir>/<source key with / as
~>` saved with `save_to_disk`, also the TFDS data_dir), `devices=N` (children per generation), `layers=N` (root
depth), `runlocal` (a CPU smoke run: 1 generation of 2 children, tiny batches and caps, 16 px, 2 layers).

Roots (munet_spec.md §4): the reference queries the AugReg index for L/16 i21k aug medium2, wd 0.03, sd 0.1. The
default here is timm's `vit_large_patch16_224.augreg_in21k`, which timm's own table lists as the AugReg file
`L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1.npz` (medium1 / wd 0.1: not the reference's choice,
but the one on the Hub); for the exact one pass `root=big_vision:<the medium2 .npz from gs://vit_models/augreg>`.
B/16 (`timm/vit_base_patch16_224.augreg_in21k`, medium1 wd 0.1 sd 0) is the reference's own. Ti/16's timm file
is aug none / wd 0.03 where the reference took light1 / wd 0.1.

Run (every host runs the same command); price it first, offline:
    python training/evolve.py --config training/configs/mu2net_vit_l.py:large --workdir runs/mu2net-l --plan
    python training/evolve.py --config training/configs/mu2net_vit_l.py:large --workdir runs/mu2net-l [--resume]
The reference's reported cost (unconfirmed, munet_spec.md §5.3): ≈12,861 TPUv4 + 2,474.5 TPUv3 chip-hours.
"""

from __future__ import annotations

import ml_collections

from mu2hub.data.catalog import TASKS, stream

PRESETS = {
    "large": dict(benchmarks=("vit", "vtab", "vdd", "chars", "vtab1k"), init="timm:timm/vit_large_patch16_224.augreg_in21k",
                  dims=dict(hidden_size=1024, num_heads=16, mlp_dim=4096, patch_size=16),
                  image_size=384, num_layers=24, space="mu2net", batch_size=64, num_validations=4,
                  train_examples_between_validations_max=128_116, validation_examples_max=10_000, samples=128,
                  num_task_iters=1, num_params=303_303_682, devices=32),
    "ti3-chars": dict(benchmarks=("chars",), init="timm:timm/vit_tiny_patch16_224.augreg_in21k", image_size=32, num_layers=3,
                      dims=dict(hidden_size=192, num_heads=3, mlp_dim=768, patch_size=16),
                      space="mu2net-ti3", batch_size=512, num_validations=5, train_examples_between_validations_max=51_200,
                      validation_examples_max=5_120, samples=64, num_task_iters=2, num_params=1_484_162, devices=8),
    "b-vdd": dict(benchmarks=("vdd",), init="timm:timm/vit_base_patch16_224.augreg_in21k", image_size=80, num_layers=12,
                  dims=dict(hidden_size=768, num_heads=12, mlp_dim=3072, patch_size=16),
                  space="mu2net-b", batch_size=256, num_validations=30, train_examples_between_validations_max=51_200,
                  validation_examples_max=5_120, samples=64, num_task_iters=2, num_params=85_652_738, devices=8),
}


def parse_arg(arg: str | None) -> tuple[str, dict[str, str]]:
    preset, *opts = (arg or "large").split(",")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    out = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if key not in ("tasks", "root", "data", "devices", "layers", "runlocal"):
            raise ValueError(f"unknown option {key!r} in {arg!r} (tasks=, root=, data=, devices=, layers=, runlocal)")
        out[key] = value if sep else "1"
    return preset, out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, opts = parse_arg(arg)
    p = PRESETS[preset]
    runlocal = "runlocal" in opts
    tasks = opts["tasks"].split("+") if "tasks" in opts else stream(p["benchmarks"])
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"not tasks of the paper's stream: {unknown}")
    devices = int(opts.get("devices", 2 if runlocal else p["devices"]))
    c = ml_collections.ConfigDict()
    c.name = f"mu2net:{preset}"
    c.seed = 0
    # ---- root: dims come from the checkpoint (stating one that disagrees is an error) ----------------------------
    c.root = dict(init=opts.get("root", p["init"]), image_size=16 if runlocal else p["image_size"],
                  num_layers=int(opts.get("layers", 2 if runlocal else p["num_layers"])))
    if "root" not in opts:  # the preset's ViT: stated, so --plan prices it offline and a wrong checkpoint is refused
        c.root.update(p["dims"])
    # ---- the task stream ------------------------------------------------------------------------------------------
    c.tasks = tasks
    data = opts.get("data")
    c.task_kwargs = {t: {"sources_dir": data, "data_dir": data} for t in tasks} if data else {}
    c.num_task_iters = p["num_task_iters"]
    # ---- evolution ------------------------------------------------------------------------------------------------
    c.space = p["space"]
    c.hparams = dict(ds_image_size=16, ds_crop=False) if runlocal else {}
    c.scorer = dict(base=1.0, num_params=None if runlocal else p["num_params"], root_counts=False)
    c.children_per_generation = devices  # one child per device, as the reference
    c.generations = 1 if runlocal else -(-p["samples"] // devices)
    # ---- child training -------------------------------------------------------------------------------------------
    c.batch_size = 8 if runlocal else p["batch_size"]
    c.num_validations = 1 if runlocal else p["num_validations"]
    c.train_examples_between_validations_max = 32 if runlocal else p["train_examples_between_validations_max"]
    c.validation_examples_max = 32 if runlocal else p["validation_examples_max"]
    c.parallelism = "child_per_device"
    c.dtype = None if runlocal else "bfloat16"
    c.multihost = not runlocal
    return c
