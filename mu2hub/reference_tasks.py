"""What a republished reference task needs to answer a raw image as the reference did: input conversion, label names.

The µ2Net / µ4Net notebooks read every task from TFDS (`mu2Net.ipynb` `get_dataset_and_splits`), VTAB tasks through
`task_adaptation`'s registry, whose `base_preprocess_fn` converts inputs and derives labels before the notebook's
own preprocessing (cast to float, grayscale tiled to 3 channels, `tf.image.resize` — bilinear, *no antialias* —
to `ds_image_size`, `x / 127.5 - 1`, clip to [-1, 1]). This module records, per task of the paper's stream
(munet_spec.md §5.1, and their `/1k` variants):

- `pixel_scale`: dSprites stores 0/1 pixels and VTAB multiplies them by 255 (`tf.tile(image, [1, 1, 3]) * 255`);
- `labels`: the class names as the reference's data defines them: TFDS `ClassLabel` names (`"0"…"N-1"` where TFDS
  gives none), or, for labels VTAB derives from other features (CLEVR / KITTI counts and distance bins, dSprites
  attributes), names that say what each class index means. `None` where the names are TFDS metadata not
  reproduced here (ImageNet synsets, SUN397 scenes, …): pass them to `republish_reference(labels=...)`.

Derivations (task_adaptation `data/{clevr,kitti,dsprites,smallnorb}.py`): CLEVR count_all = number of objects - 3
(3..10 objects), count_cylinders = number of cylinders, closest_object_distance = bin of the smallest
`pixel_coords` depth over thresholds [0, 8, 8.5, 9, 9.5, 10, 100]; KITTI count_vehicles = min(vehicles, 3),
closest_vehicle_distance = bin of the nearest vehicle's z over [-100, 8, 20, 999] (no vehicle: 1000 m),
closest_object_distance = bin over [-100, 5.6, 8.4, 13.4, 23.4]; dSprites attributes keep TFDS's classes (µ2Net
passes no `num_classes`, so x_position has 32 and orientation 40 classes, not VTAB's 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .data.pp import pp_spec

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail "
    "snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout "
    "tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()


def _numbered(n: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n))


def _bins(thresholds: tuple[float, ...], unit: str, n: int, last: str | None = None) -> tuple[str, ...]:
    """The n classes of VTAB's `max(where(thrs - d < 0))`: class i holds d in (thrs[i], thrs[i+1]], the last
    threshold's class is open above; d never falls below thrs[0]."""
    t = [f"{x:g}" for x in thresholds]
    names = [f"<= {t[1]} {unit}"] + [f"({a}, {b}] {unit}" for a, b in zip(t[1:-1], t[2:])] + [last or f"> {t[-1]} {unit}"]
    return tuple(names[:n])


@dataclass(frozen=True)
class ReferenceTask:
    """One task as the reference reads it."""

    tfds: str  # the TFDS dataset (and version pattern) the notebook loads
    num_classes: int
    labels: tuple[str, ...] | None  # None: TFDS metadata names not reproduced here
    pixel_scale: int = 1
    label_source: str = "TFDS ClassLabel names"


_VTAB = {
    "caltech101": ReferenceTask("caltech101:3.*.*", 102, None),
    "cifar100": ReferenceTask("cifar100:3.*.*", 100, tuple(CIFAR100)),
    "cifar10": ReferenceTask("cifar10:3.*.*", 10, CIFAR10),
    "dtd": ReferenceTask("dtd:3.*.*", 47, None),
    "oxford_flowers102": ReferenceTask("oxford_flowers102:2.*.*", 102, None),
    "oxford_iiit_pet": ReferenceTask("oxford_iiit_pet:3.*.*", 37, None),
    "sun397": ReferenceTask("sun397/tfds:4.*.*", 397, None),
    "svhn_cropped": ReferenceTask("svhn_cropped:3.*.*", 10, _numbered(10)),
    "patch_camelyon": ReferenceTask("patch_camelyon:2.*.*", 2, _numbered(2)),
    "eurosat": ReferenceTask("eurosat/rgb:2.*.*", 10, None),
    "resisc45": ReferenceTask("resisc45:3.*.*", 45, None),
    "diabetic_retinopathy_detection/btgraham-300": ReferenceTask(
        "diabetic_retinopathy_detection/btgraham-300:3.*.*", 5, _numbered(5)),
    "clevr/count_all": ReferenceTask("clevr:3.*.*", 8, tuple(str(i) for i in range(3, 11)),
                                     label_source="VTAB: number of objects"),
    "clevr/count_cylinders": ReferenceTask("clevr:3.*.*", 11, _numbered(11), label_source="VTAB: number of cylinders"),
    "clevr/closest_object_distance": ReferenceTask(
        "clevr:3.*.*", 6, _bins((0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0), "depth", 6),
        label_source="VTAB: depth of the closest object, binned"),
    "dmlab": ReferenceTask("dmlab:2.0.1", 6, _numbered(6)),
    "dsprites/label_x_position": ReferenceTask("dsprites:2.*.*", 32, _numbered(32), pixel_scale=255),
    "dsprites/label_orientation": ReferenceTask("dsprites:2.*.*", 40, _numbered(40), pixel_scale=255),
    "kitti/closest_object_distance": ReferenceTask(
        "kitti:3.2.0", 5, _bins((-100.0, 5.6, 8.4, 13.4, 23.4), "m", 5),
        label_source="VTAB: distance to the closest object, binned"),
    "kitti/count_vehicles": ReferenceTask("kitti:3.2.0", 4, ("0", "1", "2", "3 or more"),
                                          label_source="VTAB: number of vehicles, capped at 3"),
    "kitti/closest_vehicle_distance": ReferenceTask(
        "kitti:3.2.0", 4, _bins((-100.0, 8.0, 20.0, 999.0), "m", 4, last="no vehicle"),
        label_source="VTAB: distance to the closest vehicle, binned"),
    "smallnorb/label_category": ReferenceTask(
        "smallnorb:2.*.*", 5, ("four-legged animals", "human figures", "airplanes", "trucks", "cars")),
    "smallnorb/label_lighting": ReferenceTask("smallnorb:2.*.*", 6, _numbered(6)),
    "smallnorb/label_azimuth": ReferenceTask("smallnorb:2.*.*", 18, _numbered(18)),  # 0, 20, …, 340 degrees
    "smallnorb/label_elevation": ReferenceTask("smallnorb:2.*.*", 9, _numbered(9)),  # 30, 35, …, 70 degrees
}
_VDD = {"imagenet12": 1000, "svhn": 10, "cifar100": 100, "gtsrb": 43, "daimlerpedcls": 2, "omniglot": 1623,
        "ucf101": 101, "aircraft": 100, "dtd": 47, "vgg-flowers": 102}
_TASKS: dict[str, ReferenceTask] = {
    "imagenet2012": ReferenceTask("imagenet2012", 1000, None),
    **_VTAB,
    **{f"visual_domain_decathlon/{k}": ReferenceTask(f"visual_domain_decathlon/{k}", n, _numbered(n))
       for k, n in _VDD.items()},
    "emnist/digits": ReferenceTask("emnist/digits", 10, _numbered(10)),
    "emnist/letters": ReferenceTask("emnist/letters", 37, _numbered(37)),
    "kmnist": ReferenceTask("kmnist", 10, ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
    "mnist": ReferenceTask("mnist", 10, _numbered(10)),
    "omniglot": ReferenceTask("omniglot", 1623, None),  # names are "<alphabet>_<character>", built by TFDS
    **{f"cmaterdb/{k}": ReferenceTask(f"cmaterdb/{k}", 10, _numbered(10)) for k in ("bangla", "devanagari", "telugu")},
}


def reference_task(task: str) -> ReferenceTask | None:
    """The stream's record of `task` (`/1k` variants share their task's; µ2Net's `smallnorb/label_azimuth/1`
    typo for `…/1k` is recognised), or None for a task outside the paper's stream."""
    base = task.removesuffix("/1k")
    if task == "smallnorb/label_azimuth/1":
        base = "smallnorb/label_azimuth"
    return _TASKS.get(base)


def task_preprocessing(task: str, image_size: int) -> dict[str, Any]:
    """The reference's eval preprocessing for `task` at `image_size`, as a stored spec (`data.pp.pp_spec`)."""
    rec = reference_task(task)
    return pp_spec(image_size, antialias=False, pixel_scale=rec.pixel_scale if rec else 1)


def task_labels(task: str, num_classes: int) -> tuple[list[str], str] | None:
    """(class names, where they come from) when the stream defines them for a head of `num_classes`, else None."""
    rec = reference_task(task)
    if rec is None or rec.labels is None or len(rec.labels) != num_classes:
        return None
    return list(rec.labels), rec.label_source
