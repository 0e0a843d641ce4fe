"""A tiny evolution config for the loop tests: seconds per child on CPU, real data (digits, generated shapes).

Like the quickstart it starts from a pretrained root that ships with the project (tests/assets/tiny_root, made by
`python training/pretrain_root.py --preset tiny` from generated shapes that exclude these tasks' images), never
from frozen random blocks, so the add-task tests measure transfer.
"""

from pathlib import Path

import ml_collections

TINY_ROOT = Path(__file__).resolve().parents[1] / "assets" / "tiny_root"


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = "tiny"
    c.seed = 0
    c.root = dict(init=f"mu2hub:{TINY_ROOT}", image_size=8, num_layers=2)
    c.tasks = ["digits", "shapes/label_scale"]
    c.task_kwargs = {"shapes/label_scale": {"image_size": 8, "n_train": 256, "n_validation": 64, "n_test": 64}}
    c.num_task_iters = 1
    c.space = "mu2net-ti0"  # auto_tune v2 with depth 0..3 (the 8 px images are off v1's image-size list)
    c.hparams = dict(num_layers=2, ds_image_size=8, ds_crop=False, ds_flip_left_right=False, opt_lr=0.05)
    c.scorer = dict(base=0.95, num_params=None, root_counts=False)  # a size penalty the scoring tests rely on
    c.generations = int(arg) if arg else 1
    c.children_per_generation = 2
    c.batch_size = 32
    c.num_validations = 2
    c.train_examples_between_validations_max = 96
    c.parallelism = "child_per_device"
    c.dtype = None
    c.multihost = False
    return c
