"""Quickstart: evolve a small µ2Net system on the bundled tasks, on CPU, in minutes.

Tasks: scikit-learn's handwritten digits and three generated dSprites-style shape tasks. Root: a tiny
random-init ViT (hidden 64, 4 heads, 3 layers, patch 4, 16×16 images). Per task: 3 generations of 2 children,
each trained for 2 validations. The µ2Net v2 search space and rules, with the Size-scale score (base 0.95) so
reusing frozen components pays. Measured results: see BENCHMARKS.md (`make demo` prints them).

Run: `python training/evolve.py --config training/configs/quickstart.py --workdir runs/quickstart`
     (`:runlocal` shrinks it further for tests).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    runlocal = arg == "runlocal"
    c = ml_collections.ConfigDict()
    c.name = "mu2hub-quickstart"
    c.seed = 0
    # ---- root model ------------------------------------------------------------------------------
    c.root = dict(hidden_size=64, num_heads=4, mlp_dim=128, patch_size=8, num_layers=3, image_size=32, init="random")
    # ---- task stream -------------------------------------------------------------------------------
    c.tasks = ["digits", "shapes/label_shape", "shapes/label_scale", "shapes/label_x_position"]
    c.task_kwargs = {}
    c.num_task_iters = 1
    # ---- evolution -----------------------------------------------------------------------------------
    c.space = "mu2net-ti0"  # µ2Net auto_tune_v2 value lists, depth 0..3 allowed as in the ti0 config
    c.hparams = dict(num_layers=3, ds_image_size=32, opt_lr=0.05, opt_lr_warmup_ratio=0.1, opt_momentum=0.9,
                     ds_crop=False, ds_flip_left_right=False, ds_area_range_min=1.0, ds_aspect_ratio_range_min=1.0)
    c.scorer = dict(base=0.95, num_params=None, root_counts=False)  # None: normalise by the root's parameters
    c.generations = 1 if runlocal else 3
    c.children_per_generation = 2
    # ---- child training ----------------------------------------------------------------------------
    c.batch_size = 64
    c.num_validations = 1 if runlocal else 10
    c.train_examples_between_validations_max = 1024 if runlocal else 2048
    c.parallelism = "child_per_device"  # or "data_parallel" (one child over a device mesh)
    c.dtype = None
    c.momentum_dtype = "auto"  # the reference's bf16 trace where bf16 is native (GPU, TPU); float32 on a CPU
    c.multihost = False
    return c
