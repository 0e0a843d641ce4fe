"""Run by tests/inference/test_compilation.py in a fresh process: train one tiny child with the compilation cache as the
command line says (`default`, `off` or a folder) and print, as one JSON line, what JAX's cache did (its own
monitoring events) and what training produced."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

import jax
import numpy as np
from jax import monitoring

events: dict[str, int] = {}
monitoring.register_event_listener(lambda event, **_: events.__setitem__(event, events.get(event, 0) + 1))

from mu2hub import model as vit  # noqa: E402
from mu2hub.inference.compilation import enable_compilation_cache  # noqa: E402
from mu2hub.data import Split, get_task  # noqa: E402
from mu2hub.format.system import Dims, Structure  # noqa: E402
from mu2hub.train.child import train_child  # noqa: E402


def main(where: str) -> None:
    folder = enable_compilation_cache({"default": None, "off": False}.get(where, where))
    d = get_task("digits")
    data = dataclasses.replace(d, train=Split(d.train.images[:64], d.train.labels[:64]),
                               validation=Split(d.validation.images[:32], d.validation.labels[:32]))
    structure = Structure(Dims(16, 2, 32, 4), 8, 1, d.num_classes)
    params = vit.init_path(structure, jax.random.key(0))
    frozen = {s: t for s, t in params.items() if s in ("patch_embed", "cls")}
    result = train_child(structure, frozen, {s: t for s, t in params.items() if s not in frozen}, data,
                         {"opt_lr": 0.1, "opt_momentum": 0.9, "ds_crop": False}, num_validations=2,
                         steps_per_validation=2, batch_size=16, seed=0)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(result.params[s][k]).tobytes()
                                     for s in sorted(result.params) for k in sorted(result.params[s]))).hexdigest()
    prefix = "/jax/compilation_cache/"
    print(json.dumps({"folder": str(folder) if folder else None, "params": digest, "history": result.history,
                      **{k[len(prefix):]: v for k, v in events.items() if k.startswith(prefix)}}))


if __name__ == "__main__":
    main(sys.argv[1])
