"""Where each child of a generation trains, and how the trained children reach every process.

`child_per_device` (the reference's way, spec §6): a generation's children are split in equal blocks over the
processes, in order, and child j of a process's block trains on its local device j mod D (one thread per device,
its children one after another). With one process and as many children as devices this is child i on device i,
the reference's placement; on a pod slice with 32 devices and 32 children, one child per device across hosts.
Devices are named by their index in `jax.devices()` ordered by process, so the name does not depend on how many
hosts hold them. `data_parallel`: every child on one mesh over all devices, the processes training it together.

A process hands the children it trained to the others as safetensors bytes (params and momentum traces) plus
JSON (metrics): no pickle crosses processes.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from ..errors import JobMismatchError
from ..train.child import ChildResult
from .cluster import Cluster

PARALLELISM = ("child_per_device", "data_parallel")


@dataclass(frozen=True)
class Placement:
    """One child's place: the process that trains it, its local device there, and that device's global index."""

    process: int
    local: int
    device: int


def check_layout(config: Mapping[str, Any], process_count: int) -> None:
    """Refuse a config this job cannot run, before any state is written."""
    mode = config.get("parallelism", "child_per_device")
    if mode not in PARALLELISM:
        raise JobMismatchError(f"parallelism={mode!r}; expected one of {PARALLELISM}")
    n = int(config["children_per_generation"])
    if mode == "child_per_device" and n % process_count:
        raise JobMismatchError(f"children_per_generation={n} is not a multiple of the {process_count} processes: with "
                               "child_per_device each host trains an equal share of every generation; use a multiple "
                               f"of {process_count} (best: of the number of devices)")


def place(num_children: int, process_count: int, local_devices: int) -> list[Placement]:
    """`child_per_device` placement of a generation (see the module docstring)."""
    per = num_children // process_count
    return [Placement(i // per, (i % per) % local_devices, (i // per) * local_devices + (i % per) % local_devices)
            for i in range(num_children)]


def layout(process_count: int, local_devices: int, parallelism: str) -> dict[str, Any]:
    """What a run directory records of the job that writes it (a resume must bring the same)."""
    return {"processes": process_count, "devices_per_process": local_devices, "parallelism": parallelism}


def train_generation(n: int, cluster: Cluster, mesh: Any, train_here: Callable[[list[int]], list[ChildResult]],
                     what: str) -> list[tuple[ChildResult, list[int]]]:
    """Train a generation's `n` children where they belong and hand every result to every process, with the global
    indices of the devices that trained it. `train_here(indices)` trains those children one after another on the
    current default device (or on `mesh`, when one is given: data parallel, every process takes part)."""
    if mesh is not None:
        return [(r, list(range(mesh.size))) for r in train_here(list(range(n)))]
    local = jax.local_devices()
    slots = place(n, cluster.process_count, len(local))
    mine = [i for i, s in enumerate(slots) if s.process == cluster.process_index]
    per_device: dict[int, list[int]] = {}
    for i in mine:
        per_device.setdefault(slots[i].local, []).append(i)

    def on_device(item: tuple[int, list[int]]) -> list[ChildResult]:
        d, idxs = item
        with jax.default_device(local[d]):  # one child per device, as the reference
            return train_here(idxs)

    if len(per_device) > 1:
        with ThreadPoolExecutor(len(per_device)) as pool:
            done = list(pool.map(on_device, per_device.items()))
    else:  # one device: in this thread (Ctrl-C stops it at once)
        done = [on_device(item) for item in per_device.items()]
    results = {i: r for idxs, rs in zip(per_device.values(), done) for i, r in zip(idxs, rs)}
    if cluster.process_count > 1:
        for p, blob in enumerate(cluster.allgather(encode_results([results[i] for i in mine]), f"exchanging children "
                                                                                                 f"({what})")):
            for i, r in zip([i for i, s in enumerate(slots) if s.process == p], decode_results(blob)):
                results[i] = r
    return [(results[i], [slots[i].device]) for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# Trained children between processes
# ---------------------------------------------------------------------------------------------------


def encode_results(results: Sequence[ChildResult]) -> bytes:
    """Results as one safetensors blob: tensors `<child>/<params|traces>/<slot>/<name>`, the rest JSON metadata."""
    tensors: dict[str, np.ndarray] = {}
    meta = []
    for i, r in enumerate(results):
        d = asdict(r)
        for part in ("params", "traces"):
            for slot, named in (d.pop(part) or {}).items():
                for name, value in named.items():
                    tensors[f"{i}/{part}/{slot}/{name}"] = np.ascontiguousarray(value)
        meta.append({**d, "has": [p for p in ("params", "traces") if getattr(r, p) is not None]})
    return save_tensors(tensors, metadata={"results": json.dumps(meta)})


def decode_results(data: bytes) -> list[ChildResult]:
    """`encode_results` inverted (the metadata sits in the safetensors header: 8-byte length, then JSON)."""
    tensors = load_tensors(data)
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8:8 + header_len])["__metadata__"]["results"])
    out = []
    for i, m in enumerate(meta):
        parts: dict[str, dict[str, dict[str, np.ndarray]] | None] = {p: ({} if p in m["has"] else None)
                                                                     for p in ("params", "traces")}
        for key, value in tensors.items():
            child, part, slot, name = key.split("/", 3)
            if int(child) == i:
                parts[part].setdefault(slot, {})[name] = value
        out.append(ChildResult(**{k: v for k, v in m.items() if k != "has"}, **parts))
    return out
