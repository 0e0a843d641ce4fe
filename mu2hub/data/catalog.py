"""The µ2Net paper's 69 tasks (munet_spec.md §5.1): where each one's data comes from, its split rule, its labels.

A task name here is the reference's own (`cifar10`, `clevr/count_all`, `visual_domain_decathlon/dtd`,
`svhn_cropped/1k`), usable anywhere a task name is (`get_task`, a config's `tasks`). Each resolves to:

- a **source**: a Hub dataset (id, config, pinned revision where one was confirmed; docs/DATA.md says how each id
  was confirmed) or, where TFDS is the only source, a TFDS name read from a local `data_dir` (`mu2hub[tfds]`);
  `sources={"cifar10": "path/"}` points any source at a local `DatasetDict.save_to_disk` folder with the same
  features instead (how the tests and offline users feed it);
- a **split rule**: TFDS-style slices of the source's splits (`train[:98%]`, `validation[50%:]`, `train[90%:][:200]`),
  with another source's split where the reference validates elsewhere (`cifar10_1/test`, `imagenet_v2/test`).
  Percent boundaries are floor(p·n/100), as task_adaptation computes its counts; `…/1k` is VTAB's
  `train800` / `val200`: the first 800 of the train slice and the first 200 of the validation slice;
- **labels**: the source's ClassLabel names (checked against the table's class count), or a VTAB derivation
  (`mu2hub.data.vtab`) with its names; the table's own names (`CatalogTask.label_names`) where the source has none
  and for republishing a reference state, which has no data;
- the reference's **input conversion**: `pixel_scale` (dSprites stores 0/1 pixels, VTAB multiplies them by 255).

This is the one table of the paper's tasks: training, `--plan` and republishing (`mu2hub.publishing.republish`) read it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mu2hub.data.registry import TaskData, register_resolver
from mu2hub.data.vtab import DERIVATIONS, Derivation, Example, numbered
from mu2hub.errors import DataSourceError, LabelMismatchError, MissingExtraError
from mu2hub.utils.extras import require

if TYPE_CHECKING:
    from mu2hub.data.stream import StreamedTask


@dataclass(frozen=True)
class CatalogSource:
    """One dataset: on the Hub (`hub`) or in TFDS (`tfds`), its image field and (unless derived) label field.

    `tfds` is the name and version the reference reads; it is read here only for a source with no `hub` id."""

    key: str
    hub: str | None = None
    config: str | None = None
    revision: str | None = None  # a 40-hex commit where one was confirmed, else resolved at download
    tfds: str | None = None
    image: str = "image"
    label: str | None = "label"
    splits: Mapping[str, str] = dataclasses.field(default_factory=dict)  # our split name -> the source's, if renamed

    @property
    def where(self) -> str:
        return f"hub:{self.hub}" + (f"/{self.config}" if self.config else "") if self.hub else f"tfds:{self.tfds}"


def _hub(key, hub, tfds, config=None, revision=None, image="image", label="label", **splits):
    return CatalogSource(key, hub=hub, config=config, revision=revision, tfds=tfds, image=image, label=label,
                         splits=splits)


def _tfds(key, name, image="image", label="label"):
    return CatalogSource(key, tfds=name, image=image, label=label)


SOURCES: dict[str, CatalogSource] = {s.key: s for s in [
    _hub("imagenet2012", "ILSVRC/imagenet-1k", "imagenet2012:5.*.*"),  # gated: accept its terms on the Hub first
    _tfds("imagenet_v2", "imagenet_v2/matched-frequency:3.*.*"),
    _hub("cifar10", "uoft-cs/cifar10", "cifar10:3.*.*", image="img"),
    _tfds("cifar10_1", "cifar10_1/v6:1.*.*"),
    _hub("cifar100", "uoft-cs/cifar100", "cifar100:3.*.*", image="img", label="fine_label"),
    _tfds("caltech101", "caltech101:3.*.*"),
    _tfds("dtd", "dtd:3.*.*"),
    _tfds("oxford_flowers102", "oxford_flowers102:2.*.*"),
    _tfds("oxford_iiit_pet", "oxford_iiit_pet:3.*.*"),
    _tfds("sun397", "sun397/tfds:4.*.*"),
    _hub("svhn_cropped", "ufldl-stanford/svhn", "svhn_cropped:3.*.*", "cropped_digits",
         "b55c6fe12218700c222718dc080349a539767836"),
    _tfds("patch_camelyon", "patch_camelyon:2.*.*"),
    _tfds("eurosat", "eurosat/rgb:2.*.*"),
    _tfds("resisc45", "resisc45:3.*.*"),
    _tfds("diabetic_retinopathy_detection/btgraham-300", "diabetic_retinopathy_detection/btgraham-300:3.*.*"),
    _tfds("clevr", "clevr:3.*.*", label=None),
    _tfds("dmlab", "dmlab:2.0.1"),
    _tfds("dsprites", "dsprites:2.*.*", label=None),
    _tfds("kitti", "kitti:3.2.0", label=None),  # task_adaptation's 3.1.0 no longer builds (its issue #18)
    _tfds("smallnorb", "smallnorb:2.*.*", label=None),
    *[_tfds(f"visual_domain_decathlon/{t}", f"visual_domain_decathlon/{t}:1.*.*") for t in
      ("imagenet12", "svhn", "cifar100", "gtsrb", "daimlerpedcls", "omniglot", "ucf101", "aircraft", "dtd", "vgg-flowers")],
    _tfds("emnist/digits", "emnist/digits:3.*.*"),
    _tfds("emnist/letters", "emnist/letters:3.*.*"),
    _tfds("kmnist", "kmnist:3.*.*"),
    _tfds("mnist", "mnist:3.*.*"),
    _tfds("omniglot", "omniglot:3.*.*"),
    *[_tfds(f"cmaterdb/{t}", f"cmaterdb/{t}:1.*.*") for t in ("bangla", "devanagari", "telugu")],
]}

# ---------------------------------------------------------------------------------------------------------
# Split rules: our split -> a slice of one of the source's splits (munet_spec.md §5.1, task_adaptation)
# ---------------------------------------------------------------------------------------------------------
SPLIT_RULES: dict[str, dict[str, str]] = {
    "imagenet": {"train": "train", "validation": "imagenet_v2/test", "test": "validation"},
    "cifar10": {"train": "train", "validation": "cifar10_1/test", "test": "test"},
    "cifar100": {"train": "train[:98%]", "validation": "train[98%:]", "test": "test"},
    "vdd": {"train": "train", "validation": "validation[:50%]", "test": "validation[50%:]"},
    "cmaterdb": {"train": "train[20%:]", "validation": "train[:20%]", "test": "test"},
    "omniglot": {"train": "train", "validation": "small1", "test": "small2"},
    "default": {"train": "train[:95%]", "validation": "train[95%:]", "test": "test"},  # no validation split: 5% of train
    # VTAB (task_adaptation `tfds_splits`, "train" / "val" / "test")
    "vtab_train90": {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"},
    "vtab_train80": {"train": "train[:80%]", "validation": "train[80%:]", "test": "test"},
    "vtab_official": {"train": "train", "validation": "validation", "test": "test"},
    "vtab_60_20_20": {"train": "train[:60%]", "validation": "train[60%:80%]", "test": "train[80%:]"},
    "vtab_80_10_10": {"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"},
    "vtab_clevr": {"train": "train[:90%]", "validation": "train[90%:]", "test": "validation"},
    "vtab_smallnorb": {"train": "train", "validation": "test[:50%]", "test": "test[50%:]"},
}


def one_k(rule: Mapping[str, str]) -> dict[str, str]:
    """VTAB-1k (`train800` / `val200`): the first 800 of the train slice's split, the first 200 of validation."""
    base = _parse(rule["train"])[1]
    return {"train": f"{base}[:800]", "validation": f"{rule['validation']}[:200]", "test": rule["test"]}


CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100 = tuple((
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail "
    "snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout "
    "tulip turtle wardrobe whale willow_tree wolf woman worm"
).split())
KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
#: sources whose TFDS ClassLabel names are not reproduced here (ImageNet synsets, SUN397 scenes, omniglot's
#: "<alphabet>_<character>", ...): a republished task needs them given (`republish_reference(labels=...)`).
_NAMES_NOT_KEPT = frozenset({"imagenet2012", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "sun397",
                             "eurosat", "resisc45", "omniglot"})
_NAMES = {"cifar10": CIFAR10, "cifar100": CIFAR100, "kmnist": KMNIST}


@dataclass(frozen=True)
class CatalogTask:
    name: str
    benchmark: str
    source: str
    rule: str
    num_classes: int
    one_k: bool = False
    pixel_scale: int = 1  # the reference's input conversion: raw pixels x this (dSprites' 0/1 -> 0/255)

    @property
    def splits(self) -> dict[str, str]:
        return one_k(SPLIT_RULES[self.rule]) if self.one_k else dict(SPLIT_RULES[self.rule])

    @property
    def derivation(self) -> Derivation | None:
        return DERIVATIONS.get(self.name.removesuffix("/1k"))

    @property
    def label_names(self) -> tuple[tuple[str, ...], str] | None:
        """(class names, where they come from) known without the data, or None where TFDS metadata names are not
        reproduced here. Sources with unnamed classes (svhn, VDD, mnist, ...) are TFDS's "0" … "N-1"."""
        if self.derivation is not None:
            return self.derivation.names, self.derivation.meaning
        if self.source in _NAMES_NOT_KEPT:
            return None
        return _NAMES.get(self.source, numbered(self.num_classes)), "TFDS ClassLabel names"


_VTAB = [  # name, source, rule, classes
    ("caltech101", "caltech101", "vtab_train90", 102), ("dtd", "dtd", "vtab_official", 47),
    ("oxford_flowers102", "oxford_flowers102", "vtab_official", 102),
    ("oxford_iiit_pet", "oxford_iiit_pet", "vtab_train80", 37), ("sun397", "sun397", "vtab_official", 397),
    ("svhn_cropped", "svhn_cropped", "vtab_train90", 10), ("patch_camelyon", "patch_camelyon", "vtab_official", 2),
    ("eurosat", "eurosat", "vtab_60_20_20", 10), ("resisc45", "resisc45", "vtab_60_20_20", 45),
    ("diabetic_retinopathy_detection/btgraham-300", "diabetic_retinopathy_detection/btgraham-300", "vtab_official", 5),
    ("clevr/count_cylinders", "clevr", "vtab_clevr", 11), ("clevr/count_all", "clevr", "vtab_clevr", 8),
    ("clevr/closest_object_distance", "clevr", "vtab_clevr", 6), ("dmlab", "dmlab", "vtab_official", 6),
    ("dsprites/label_x_position", "dsprites", "vtab_80_10_10", 32),  # µ2Net keeps TFDS's classes (vtab.DERIVATIONS)
    ("dsprites/label_orientation", "dsprites", "vtab_80_10_10", 40),
    ("kitti/closest_object_distance", "kitti", "vtab_official", 5), ("kitti/count_vehicles", "kitti", "vtab_official", 4),
    ("kitti/closest_vehicle_distance", "kitti", "vtab_official", 4),
    ("smallnorb/label_category", "smallnorb", "vtab_smallnorb", 5), ("smallnorb/label_lighting", "smallnorb", "vtab_smallnorb", 6),
    ("smallnorb/label_azimuth", "smallnorb", "vtab_smallnorb", 18), ("smallnorb/label_elevation", "smallnorb", "vtab_smallnorb", 9),
]
_SCALE = {"dsprites": 255}  # task_adaptation: `tf.tile(image, [1, 1, 3]) * 255`
_VDD = {"imagenet12": 1000, "svhn": 10, "cifar100": 100, "gtsrb": 43, "daimlerpedcls": 2, "omniglot": 1623,
        "ucf101": 101, "aircraft": 100, "dtd": 47, "vgg-flowers": 102}
_CHARS = [("emnist/digits", "default", 10), ("emnist/letters", "default", 37), ("kmnist", "default", 10),
          ("mnist", "default", 10), ("omniglot", "omniglot", 1623), ("cmaterdb/bangla", "cmaterdb", 10),
          ("cmaterdb/devanagari", "cmaterdb", 10), ("cmaterdb/telugu", "cmaterdb", 10)]

TASKS: dict[str, CatalogTask] = {t.name: t for t in [
    CatalogTask("imagenet2012", "vit", "imagenet2012", "imagenet", 1000),
    CatalogTask("cifar100", "vit", "cifar100", "cifar100", 100),
    CatalogTask("cifar10", "vit", "cifar10", "cifar10", 10),
    *[CatalogTask(n, "vtab", s, r, k, pixel_scale=_SCALE.get(s, 1)) for n, s, r, k in _VTAB],
    *[CatalogTask(f"visual_domain_decathlon/{t}", "vdd", f"visual_domain_decathlon/{t}", "vdd", k) for t, k in _VDD.items()],
    *[CatalogTask(n, "chars", n, r, k) for n, r, k in _CHARS],
    *[CatalogTask(f"{n}/1k", "vtab1k", s, r, k, one_k=True, pixel_scale=_SCALE.get(s, 1)) for n, s, r, k in _VTAB],
    CatalogTask("cifar100/1k", "vtab1k", "cifar100", "vtab_train90", 100, one_k=True),
    CatalogTask("cifar10/1k", "vtab1k", "cifar10", "vtab_train90", 10, one_k=True),
]}

BENCHMARKS = ("vit", "vtab", "vdd", "chars", "vtab1k")  # the reference's order: the paper's stream


#: The reference's spelling of a task where it differs from ours (munet_spec.md §5.1 "Code quirks").
_ALIASES = {"smallnorb/label_azimuth/1": "smallnorb/label_azimuth/1k"}


def lookup(name: str) -> CatalogTask | None:
    """The table's task under `name`, in our spelling or the reference's; None for a task outside the stream."""
    return TASKS.get(_ALIASES.get(name, name))


def stream(benchmarks: tuple[str, ...] = BENCHMARKS) -> list[str]:
    """The task stream in the reference's order (munet_spec.md §5.1): one list, benchmark after benchmark."""
    return [t.name for b in benchmarks for t in TASKS.values() if t.benchmark == b]


# ---------------------------------------------------------------------------------------------------------
# Resolving a task: slices of its sources' splits, without decoding an image
# ---------------------------------------------------------------------------------------------------------
_SPEC = re.compile(r"^(?:(?P<source>[a-z0-9_\-]+)/)?(?P<split>[a-z0-9_]+)(?P<s1>\[[^\]]*\])?(?P<s2>\[[^\]]*\])?$")


def _parse(spec: str) -> tuple[str | None, str, list[str]]:
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"bad split spec {spec!r}")
    return m["source"], m["split"], [s[1:-1] for s in (m["s1"], m["s2"]) if s]


def _bound(text: str, n: int, default: int) -> int:
    if not text:
        return default
    value = (int(text[:-1]) * n) // 100 if text.endswith("%") else int(text)
    return max(0, min(n, value if value >= 0 else n + value))


def slice_indices(n: int, slices: list[str]) -> range:
    """`[a:b]` slices (ints or percents) applied in turn to range(n)."""
    idx = range(n)
    for s in slices:
        lo, _, hi = s.partition(":")
        idx = idx[_bound(lo, len(idx), 0):_bound(hi, len(idx), len(idx))]
    return idx


@dataclass
class SplitRef:
    """One of our splits: a random-access view of the source split it slices (rows read on demand)."""

    source: CatalogSource
    split: str
    data: Any  # anything with len() and [int] -> row mapping (a `datasets.Dataset`, a TFDS data source)
    indices: range
    label: Callable[[Example], int]

    def __len__(self) -> int:
        return len(self.indices)

    def example(self, i: int) -> tuple[Any, int]:
        row = self.data[self.indices[i]]
        return row[self.source.image], self.label(row)

    def labels(self) -> np.ndarray:
        """Every label in order; a `datasets.Dataset` is read without its image column (nothing decoded)."""
        rows = self.data.remove_columns([self.source.image]) if hasattr(self.data, "remove_columns") else self.data
        return np.asarray([self.label(rows[i]) for i in self.indices], np.int32)


@dataclass
class Resolved:
    task: CatalogTask
    labels: list[str]
    splits: dict[str, SplitRef]

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}


def open_split(source: CatalogSource, split: str, *, sources: Mapping[str, str] | None = None,
               data_dir: str | None = None, cache_dir: str | None = None) -> Any:
    """A source split as random-access rows: a local `save_to_disk` folder if `sources` names one, else the Hub or
    TFDS. Raises `DataSourceError` naming the source and what to do when it cannot be opened."""
    actual = source.splits.get(split, split)
    local = (sources or {}).get(source.key)
    try:
        if local is not None:
            datasets = require("datasets")
            loaded = datasets.load_from_disk(local)
            if actual not in loaded:
                raise DataSourceError(f"{source.key}: {local} has splits {sorted(loaded)}, not {actual!r}")
            return loaded[actual]
        if source.hub:
            return require("datasets").load_dataset(source.hub, source.config, revision=source.revision,
                                                    split=actual, cache_dir=cache_dir)
        return _tfds_split(source, actual, data_dir)
    except (DataSourceError, MissingExtraError):
        raise
    except Exception as e:  # network off, not downloaded, gated, no such split: all say the same thing to the user
        raise DataSourceError(f"{source.key} ({source.where}) split {actual!r} is not available: "
                              f"{type(e).__name__}: {str(e)[:300]}; download it, or pass "
                              f"sources={{{source.key!r}: '<save_to_disk folder>'}}") from e


def _tfds_split(source: CatalogSource, split: str, data_dir: str | None) -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataSourceError(f"{source.key} is only in TFDS ({source.tfds}): pip install 'mu2hub[tfds]' and prepare "
                              f"it in a data_dir (tfds build {source.tfds.split(':')[0]} --data_dir DIR), or pass "
                              f"sources={{{source.key!r}: '<save_to_disk folder>'}}") from e
    if data_dir is None:
        raise DataSourceError(f"{source.key} ({source.tfds}) is read from a local TFDS data_dir: pass data_dir=...")
    return tfds.data_source(source.tfds, split=split, data_dir=data_dir, download=False)


def _class_names(data: Any, field: str) -> list[str] | None:
    feature = getattr(data, "features", {}).get(field) if hasattr(data, "features") else None
    return list(feature.names) if getattr(feature, "names", None) else None


def local_sources(folder: str | os.PathLike | None) -> dict[str, str]:
    """Local copies in `folder`: `<folder>/<source key, '/' as '~'>/` written by `DatasetDict.save_to_disk`."""
    if folder is None:
        return {}
    return {k: str(p) for k in SOURCES if (p := Path(folder) / k.replace("/", "~")).is_dir()}


def resolve(name: str, *, sources: Mapping[str, str] | None = None, sources_dir: str | os.PathLike | None = None,
            data_dir: str | None = None, cache_dir: str | None = None) -> Resolved:
    """A catalog task's three splits as views of its sources (sizes known, nothing decoded).

    `sources` (source key -> `save_to_disk` folder) and `sources_dir` (see `local_sources`) replace Hub / TFDS
    sources with local copies.

    Raises:
        TaskNotFoundError: not a catalog task.
        DataSourceError: a source (or the reference's validation source, e.g. `cifar10_1`) cannot be opened.
        LabelMismatchError: the source's label column does not have the table's classes.
    """
    from mu2hub.errors import TaskNotFoundError

    if name not in TASKS:
        raise TaskNotFoundError(name, list(TASKS))
    task = TASKS[name]
    sources = {**local_sources(sources_dir), **dict(sources or {})}
    opened: dict[tuple[str, str], Any] = {}
    splits: dict[str, SplitRef] = {}
    labels: list[str] | None = None
    for ours, spec in task.splits.items():
        src_key, split, slices = _parse(spec)
        source = SOURCES[src_key or task.source]
        if (source.key, split) not in opened:
            try:
                opened[source.key, split] = open_split(source, split, sources=sources, data_dir=data_dir, cache_dir=cache_dir)
            except DataSourceError as e:
                raise DataSourceError(f"task {name!r} ({ours} = {spec}): {e}") from e
        data = opened[source.key, split]
        label_fn, names = _labeler(task, source, data, ours)
        labels = labels or names
        splits[ours] = SplitRef(source, split, data, slice_indices(len(data), slices), label_fn)
    known = task.label_names
    return Resolved(task, labels or list(known[0] if known else numbered(task.num_classes)), splits)


def _labeler(task: CatalogTask, source: CatalogSource, data: Any,
             split: str) -> tuple[Callable[[Example], int], list[str] | None]:
    derived = task.derivation
    if derived is not None:
        return derived.label, list(derived.names)
    if source.label is None:
        raise LabelMismatchError(f"task {task.name!r}: source {source.key} has no label column and no derivation")
    columns = list(getattr(data, "column_names", None) or [])
    if columns and source.label not in columns:
        raise LabelMismatchError(f"task {task.name!r} ({split}): {source.key} has no label column {source.label!r}; "
                                 f"columns are {columns}")
    names = _class_names(data, source.label)
    if names is not None and len(names) != task.num_classes:
        raise LabelMismatchError(f"task {task.name!r} ({split}): {source.key}'s {source.label!r} has {len(names)} classes, "
                                 f"the reference's task has {task.num_classes}")
    field = source.label
    return (lambda row: int(row[field])), names


def open_task(name: str, *, image_size: int | None = None, decode_size: int | None = None,
              max_examples: int | None = None, sources: Mapping[str, str] | None = None,
              sources_dir: str | os.PathLike | None = None, data_dir: str | None = None,
              cache_dir: str | None = None) -> StreamedTask:
    """A catalog task as views of its sources, read on demand (`mu2hub.data.stream`): nothing decoded but a sample
    that fixes the size images are decoded to (`stream.decode_shape`: `image_size`; else the images' own size when
    they share one; else `decode_size`). `max_examples` keeps the first that many of each split. `.data` records
    where the data came from (`lineage.data`)."""
    from mu2hub.data.stream import StreamedSplit, StreamedTask, decode_shape

    if max_examples is not None and max_examples < 1:
        raise ValueError(f"{name}: max_examples must be at least 1, got {max_examples}")
    local = {**local_sources(sources_dir), **dict(sources or {})}
    r = resolve(name, sources=local, data_dir=data_dir, cache_dir=cache_dir)
    if max_examples is not None:
        r.splits = {k: dataclasses.replace(v, indices=v.indices[:max_examples]) for k, v in r.splits.items()}
    shape = decode_shape(name, list(r.splits.values()), image_size=image_size, decode_size=decode_size)
    splits = {ours: StreamedSplit(ref, shape, f"{name} {ours}") for ours, ref in r.splits.items()}
    return StreamedTask(name, r.labels, splits["train"], splits["validation"], splits["test"],
                        data=data_spec(SOURCES[r.task.source], local))


def data_spec(source: CatalogSource, local: Mapping[str, str]) -> str:
    """`lineage.data` for a task trained on `source`: `hf:<Hub id>` only when the Hub dataset itself was read."""
    if source.key in local:
        return f"local:{source.key}"  # a local stand-in with the source's features: not that Hub dataset
    return f"hf:{source.hub}" if source.hub else f"tfds:{source.tfds.split(':')[0]}"


def load(name: str, *, image_size: int | None = None, decode_size: int | None = None, max_examples: int | None = None,
         sources: Mapping[str, str] | None = None, sources_dir: str | os.PathLike | None = None,
         data_dir: str | None = None, cache_dir: str | None = None) -> TaskData:
    """A catalog task decoded into memory (`TaskData`): `open_task(...).load()`. For datasets too big for memory, train on `open_task`'s streamed splits instead.
    """
    return open_task(name, image_size=image_size, decode_size=decode_size, max_examples=max_examples, sources=sources,
                     sources_dir=sources_dir, data_dir=data_dir, cache_dir=cache_dir).load()


def is_catalog_task(name: str) -> bool:
    return name in TASKS


register_resolver(is_catalog_task, load)
