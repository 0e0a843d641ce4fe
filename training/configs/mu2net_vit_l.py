"""The µ2Net paper's large run: a ViT-L/16 root evolved over the 69-task stream (Gesmundo & Dean, arXiv 2205.12755).

Documented, not run here: the reference spent ~12,861 TPUv4 + 2,474.5 TPUv3 chip-hours on it (unconfirmed figure,
see shared/reference/munet_spec.md §5.3). Every constant below is the reference notebook's "ViT large" config
(spec §2.2, §3.2): batch 64 per device, 4 validations per child, at most 128,116 training examples between
validations (1/10 of ImageNet) and 10,000 validation examples, 128 children per task (4 generations × 32 devices
on a TPUv4-32 pod slice), µ2Net auto_tune_v2 mutations, base-1.0 score normalised by L/16's 303,303,682
parameters, 384 px.

Run on a TPU pod (every host runs the same command; `multihost` calls `jax.distributed.initialize()`):
    python training/evolve.py --config training/configs/mu2net_vit_l.py:vtab --workdir gs-mounted/runs/mu2net-l

The root: the reference uses the AugReg ViT-L/16 i21k checkpoint (medium2, wd 0.03, sd 0.1); any transformers
ViT checkpoint imports through `mu2hub.from_transformers` (set `root.init` to its folder or repo id).
The stream is built one benchmark at a time, each continuing the previous run's state (`:vit`, `:vtab`, `:vdd`,
`:chars`, `:vtab1k`), as the reference's CONTINUE_FROM_STATE_DIR does: run them in order on one --workdir with
--resume. Tasks are named as Hugging Face datasets (`hf:<id>`); where the reference used a TFDS/VTAB split rule
that no Hub dataset carries, register a loader for it in `mu2hub.data` first.
"""

import ml_collections

BENCHMARKS = {
    "vit": ["hf:imagenet-1k", "hf:cifar100", "hf:cifar10"],
    "vtab": ["hf:caltech101", "hf:dtd", "hf:oxford_flowers102", "hf:oxford_iiit_pet", "hf:sun397", "hf:svhn_cropped",
             "hf:patch_camelyon", "hf:eurosat", "hf:resisc45", "hf:diabetic_retinopathy_detection/btgraham-300",
             "hf:clevr/count_cylinders", "hf:clevr/count_all", "hf:clevr/closest_object_distance", "hf:dmlab",
             "hf:dsprites/label_x_position", "hf:dsprites/label_orientation", "hf:kitti/closest_object_distance",
             "hf:kitti/count_vehicles", "hf:kitti/closest_vehicle_distance", "hf:smallnorb/label_category",
             "hf:smallnorb/label_lighting", "hf:smallnorb/label_azimuth", "hf:smallnorb/label_elevation"],
    "vdd": [f"hf:visual_domain_decathlon/{t}" for t in
            ("imagenet12", "svhn", "cifar100", "gtsrb", "daimlerpedcls", "omniglot", "ucf101", "aircraft", "dtd", "vgg-flowers")],
    "chars": ["hf:emnist/digits", "hf:emnist/letters", "hf:kmnist", "hf:mnist", "hf:omniglot", "hf:cmaterdb/bangla",
              "hf:cmaterdb/devanagari", "hf:cmaterdb/telugu"],
}
# VTAB-1k: the 23 VTAB tasks plus cifar100 and cifar10 with their 1k-example splits.
BENCHMARKS["vtab1k"] = [f"{t}/1k" for t in BENCHMARKS["vtab"] + ["hf:cifar100", "hf:cifar10"]]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    benchmark = arg or "vit"
    c = ml_collections.ConfigDict()
    c.name = f"mu2net-vit-l:{benchmark}"
    c.seed = 0
    c.root = dict(hidden_size=1024, num_heads=16, mlp_dim=4096, patch_size=16, num_layers=24, image_size=384,
                  layer_norm_eps=1e-6, init="google/vit-large-patch16-224-in21k")
    c.tasks = BENCHMARKS[benchmark]
    c.task_kwargs = {}
    c.num_task_iters = 1
    c.space = "mu2net"  # auto_tune_v2, DEFAULTS_LARGE (_mu_ 0.2, lr 0.01, warmup 0.05, momentum 0.9, 384 px, crop+flip)
    c.hparams = {}
    c.scorer = dict(base=1.0, num_params=303_303_682, root_counts=False)
    c.generations = 4  # 128 samples per task / 32 devices
    c.children_per_generation = 32  # one per device
    c.batch_size = 64  # per device (TPUv4; 32 on TPUv3)
    c.num_validations = 4
    c.train_examples_between_validations_max = 128_116
    c.validation_examples_max = 10_000
    c.parallelism = "child_per_device"
    c.dtype = "bfloat16"
    c.multihost = True
    return c
