"""A tiny evolution config for the loop tests: seconds per child on CPU, real data (digits, generated shapes)."""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = "tiny"
    c.seed = 0
    c.root = dict(hidden_size=16, num_heads=2, mlp_dim=32, patch_size=4, num_layers=2, image_size=8, init="random")
    c.tasks = ["digits", "shapes/label_scale"]
    c.task_kwargs = {"shapes/label_scale": {"image_size": 8, "n_train": 256, "n_validation": 64, "n_test": 64}}
    c.num_task_iters = 1
    c.space = "mu2net-ti0"
    c.hparams = dict(num_layers=2, ds_image_size=8, ds_crop=False, ds_flip_left_right=False, opt_lr=0.05)
    c.scorer = dict(base=0.95, num_params=None, root_counts=False)
    c.generations = int(arg) if arg else 1
    c.children_per_generation = 2
    c.batch_size = 32
    c.num_validations = 2
    c.train_examples_between_validations_max = 96
    c.parallelism = "child_per_device"
    c.dtype = None
    c.multihost = False
    return c
