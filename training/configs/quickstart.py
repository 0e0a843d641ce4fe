"""Quickstart: evolve a small µ2Net system on the bundled tasks, on CPU, in minutes — and measure it against the
baselines a user would pick instead.

Faithful to µ2Net's "Ti/16 capped to 3 layers" configuration (spec §3.2, the Chars benchmark), scaled to 2 CPU cores:
- **root**: a small pretrained ViT that ships with the project (`training/roots/generated-vit-64`: hidden 64, 4 heads,
  3 blocks, patch 8, 32×32 px), made by `training/pretrain_root.py` from generated images only — shapes that exclude
  every image of these tasks' splits, letters and digits in matplotlib's fonts, procedural textures; the reference
  likewise starts from a pretrained root (ImageNet-21k) and never freezes random-init blocks;
- **search space and scoring**: µ2Net `auto_tune` v1 with adapters, µ = 0.1 (`mu2net-ti3`), scored by validation
  accuracy alone (the reference's Ti3 scorer: base 1.0, no size penalty);
- **task stream**: the big shape task first, then the other shape factors, then scikit-learn's real handwritten
  digits; validation splits of 500 (shapes) and 180 images (digits: 10% of the 1,797), never subsampled;
- **budget per task**: 6 generations × 2 children × 5 validations × 16 steps of batch 64 (the reference: 64 children
  × 5 × 100 steps of batch 512); the frozen-prefix and compilation caches keep children cheap;
- **baselines** (`mu2hub.evolution.baselines`): the winning path's ViT from random init and plain fine-tuning of the
  root, every slot trainable, at the task's total search budget and at its winning lineage's.

Deviations from the reference, all for 2 CPU cores or for these tasks: the root's size, data and image size; 12 children
per task instead of 64, one task iteration instead of two; a peak lr of 0.05 instead of 0.01 (this small ViT's, from
scratch too, so the baselines inherit a fair one); random crops and flips start off (the reference's defaults
crop 5–100% of the area and flip, which destroys the position labels; the search may still turn them on).

Run: `python training/evolve.py --config training/configs/quickstart.py --workdir runs/quickstart`
     (`:runlocal` shrinks it further for tests). Measured results: BENCHMARKS.md (`make demo` prints them).
"""

from pathlib import Path

import ml_collections

ROOTS = Path(__file__).resolve().parent.parent / "roots"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    runlocal = arg == "runlocal"
    c = ml_collections.ConfigDict()
    c.name = "mu2hub-quickstart"
    c.seed = 0
    # ---- root model ------------------------------------------------------------------------------
    c.root = dict(init=f"mu2hub:{ROOTS / 'generated-vit-64'}", image_size=32, num_layers=3)
    # ---- task stream -------------------------------------------------------------------------------
    c.tasks = ["shapes/label_shape", "shapes/label_scale", "shapes/label_x_position", "digits"]
    c.task_kwargs = {}
    c.num_task_iters = 1
    # ---- evolution -----------------------------------------------------------------------------------
    c.space = "mu2net-ti3"  # µ2Net auto_tune v1 (+ adapters), µ = 0.1, Ti/16-3 defaults
    # lr 0.05 (the Ti3 default is 0.01, for an i21k Ti/16): what this small ViT trains well with, from scratch too
    c.hparams = dict(opt_lr=0.05, ds_crop=False, ds_flip_left_right=False, ds_area_range_min=1.0,
                     ds_aspect_ratio_range_min=1.0)
    c.scorer = dict(base=1.0, num_params=None, root_counts=False)  # the Ti3 scorer: quality alone
    # 6 generations of 2 children, not 3 of 4: a winning line can grow to half the task's examples (the reference
    # trains one child per device per generation, so one GPU would get 1 child × many generations)
    c.generations = 1 if runlocal else 6
    c.children_per_generation = 2
    # ---- child training ----------------------------------------------------------------------------
    c.batch_size = 64
    c.num_validations = 1 if runlocal else 5
    c.train_examples_between_validations_max = 512 if runlocal else 1024
    c.validation_examples_max = None  # the whole validation split
    c.parallelism = "child_per_device"  # or "data_parallel" (one child over a device mesh)
    c.dtype = None
    c.momentum_dtype = "auto"  # the reference's bf16 trace where bf16 is native (GPU, TPU); float32 on a CPU
    c.multihost = False
    # ---- baselines (same run; see docs/TRAINING.md "Baselines") -----------------------------------
    # `make demo` skips fine-tuning at the total budget to stay in minutes (bench/transfer.py measures all four)
    c.baselines = "scratch:lineage,finetune:lineage" if runlocal else "scratch:total,scratch:lineage,finetune:lineage"
    return c
