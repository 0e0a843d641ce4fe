"""Where a task's data came from, as a model card may state it: a Hub dataset id, a local folder, or built-in data.

A task file may record its data in `lineage.data` (fine-tuned variants and contributed tasks do): `hf:<dataset id>`,
`imagefolder:<folder>`, or a registered task name; without it the task's own name is the registered task
(`digits`, `shapes/label_shape`). Only a real Hub dataset id is ever written as one (the card's `datasets:` and the
model-index `dataset.type`); bundled and generated data are described in words, and a local folder is named by its
last path component only, so no local path is published.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Mapping

from ..utils.text import md_code

_HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")

#: Data that ships with mu2hub (bundled or generated), by registered name or family (the part before `/`).
BUILTIN = {
    "digits": ("scikit-learn digits", "scikit-learn's bundled handwritten digits (8x8 grey images of 0-9, 1,797 in "
               "all; a copy of the UCI optical digits test set), split 70/10/20 with a fixed seed"),
    "shapes": ("generated dSprites-style shapes", "procedurally generated dSprites-style images (a white square, "
               "ellipse or heart on black; factors shape, scale, orientation, x/y position, as VTAB's dSprites "
               "tasks), made by `mu2hub.data.builtin`: no download"),
}


@dataclass(frozen=True)
class DataSource:
    """`hub_id`: the Hub dataset id, or None; `kind`: `hub` | `imagefolder` | `builtin` | `other`."""

    kind: str
    name: str  # readable markdown, contributor text in code spans: "scikit-learn digits", "imagefolder `sizes`"
    description: str
    hub_id: str | None = None

    @property
    def model_index_type(self) -> str:
        """`dataset.type` in the model-index: the Hub id, else the loader (`imagefolder`, as transformers' Trainer
        writes) or `mu2hub-builtin` / `local` — never a string that could be mistaken for someone's dataset id."""
        return self.hub_id or {"imagefolder": "imagefolder", "builtin": "mu2hub-builtin"}.get(self.kind, "local")


def public_name(spec: str) -> str:
    """`spec` as it may be published: `imagefolder:/home/me/data/sizes` -> `imagefolder:sizes`."""
    for prefix in ("imagefolder:", "hf:"):
        if spec.startswith(prefix):
            rest = spec[len(prefix):]
            if prefix == "hf:" and _HUB_DATASET.match(rest):
                return spec
            return prefix + (PurePath(rest.rstrip("/\\")).name or rest)
    return spec


def data_source(task: str, lineage: Mapping | None = None) -> DataSource:
    """The data a task was measured on (see the module docstring)."""
    spec = str((lineage or {}).get("data") or task)
    if spec.startswith("hf:"):
        rest = spec[3:]
        if _HUB_DATASET.match(rest):
            return DataSource("hub", rest, f"the Hugging Face dataset [{rest}](https://huggingface.co/datasets/{rest})", rest)
        local = md_code(PurePath(rest.rstrip("/\\")).name or rest)
        return DataSource("other", f"dataset {local}", f"a local copy of a dataset ({local})")
    if spec.startswith("imagefolder:"):
        folder = PurePath(spec[len("imagefolder:"):].rstrip("/\\")).name
        return DataSource("imagefolder", f"imagefolder {md_code(folder)}",
                          f"a local image folder ({md_code(folder + '/')}, one folder per class)")
    family = spec.split("/")[0]
    if spec in BUILTIN or family in BUILTIN:
        name, description = BUILTIN.get(spec) or BUILTIN[family]
        return DataSource("builtin", name, description)
    return DataSource("other", md_code(spec), f"{md_code(spec)} (not a Hub dataset id)")
