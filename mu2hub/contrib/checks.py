"""The checks `validate` runs on a pull request's files, as pure functions of what it downloaded and listed.

Kept apart from `review.py` (which talks to the Hub and merges) so each rule can be read, and tested, on its own.
Every check returns a list of problems (empty: passed), each naming the file it concerns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..constants import COMPONENTS_DIR, KINDS, TASKS_DIR, task_filename
from ..errors import Mu2hubError
from ..format.system import SystemConfig, TaskFile, check_relpath, component_bytes, load_json, parse_component, sha256_hex
from ..inference.probe import PROBE_IMAGES
from ..format.schema import MAX_JSON_BYTES, check_component_header, header_length, task_key, task_name_problem

COMPONENT_PATH = re.compile(r"^components/([0-9a-f]{2})/([0-9a-f]{64})\.safetensors$")
#: Suffixes of files that run code when loaded (pickles, framework checkpoints) or are code.
CODE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".joblib", ".npy", ".npz", ".h5", ".keras",
                 ".py", ".pyc", ".pyo", ".so", ".dll", ".dylib", ".sh", ".bat", ".exe", ".ipynb", ".msgpack", ".onnx")
_PROGRAMS = (".py", ".pyc", ".pyo", ".so", ".dll", ".dylib", ".sh", ".bat", ".exe", ".ipynb")
#: At most this many added files per pull request (a task adds one JSON and at most 2·layers+5 components).
MAX_PR_FILES = 1_000


@dataclass
class Header:
    """What a component's safetensors header says: its kind and tensor shapes (no tensor bytes needed)."""

    kind: str
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())


def task_of(path: str) -> str:
    return path[len(TASKS_DIR) + 1 : -len(".json")]


# ---------------------------------------------------------------------------------------------------
# File names
# ---------------------------------------------------------------------------------------------------


def name_problems(added: list[str], sizes: Mapping[str, int], target_tasks: Iterable[str], *,
                  max_files: int, max_file_bytes: int) -> tuple[list[str], list[str], list[str]]:
    """(name problems, code/pickle problems, paths safe to download).

    Names must be safe on every OS and unique case-insensitively among the target's tasks and the added ones; at
    most `max_files` files, none larger than `max_file_bytes` (task files: the JSON limit).
    """
    problems, code, safe = [], [], []
    if len(added) > max_files:
        problems.append(f"{len(added):,} files added, over the {max_files:,}-file limit of one pull request")
    taken = {task_key(t): t for t in target_tasks}
    for path in added:
        try:
            check_relpath(path)
        except Mu2hubError as e:
            problems.append(f"{path!r}: {e} (path traversal)")
            continue
        low = path.lower()
        if low.endswith(CODE_SUFFIXES):
            code.append(f"{path}: " + ("code" if low.endswith(_PROGRAMS) else
                                        "a pickle or framework checkpoint (loading it can run code)"))
        m = COMPONENT_PATH.match(path)
        limit = max_file_bytes
        if path.startswith(f"{TASKS_DIR}/") and path.endswith(".json"):
            task, limit = task_of(path), min(max_file_bytes, MAX_JSON_BYTES)
            why = task_name_problem(task)
            if why is not None:
                problems.append(f"{path}: invalid task name {task!r}: {why}")
                continue
            other = taken.setdefault(task_key(task), task)
            if other != task:
                problems.append(f"{path}: task {task!r} differs from the task {other!r} only by case (they would "
                                "share one file on macOS and Windows)")
                continue
        elif not (m and m.group(1) == m.group(2)[:2]):
            problems.append(f"{path}: unexpected file (a contribution adds tasks/<task>.json and "
                            f"{COMPONENTS_DIR}/<id[:2]>/<id>.safetensors only)")
            continue
        if sizes.get(path, 0) > limit:
            problems.append(f"{path}: {sizes[path]:,} bytes, over the {limit:,}-byte limit (not downloaded)")
            continue
        safe.append(path)
    return problems, code, safe


# ---------------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------------


def component_problems(path: str, data: bytes) -> tuple[Header | None, list[str]]:
    """A component added by the pull request: canonical mu2hub safetensors, finite float32, sha256 = its name."""
    m = COMPONENT_PATH.match(path)
    cid = m.group(2) if m else ""
    try:
        n = header_length(data[:8], len(data), path)
        info = check_component_header(data[: 8 + n], len(data), path, kinds=KINDS)
        kind, tensors = parse_component(data, filename=path)  # safetensors itself agrees; weights finite
    except Mu2hubError as e:
        return None, [str(e)]
    problems = []
    actual = sha256_hex(data)
    if actual != cid:
        problems.append(f"{path}: content sha256 {actual} does not match the id {cid} in its name")
    elif component_bytes(tensors, kind) != data:
        problems.append(f"{path}: not in canonical form (docs/FORMAT.md: sorted names, packed float32, sorted header)")
    return Header(info["kind"], info["shapes"]), problems


def unreferenced(added_components: Iterable[str], tasks: Iterable[TaskFile]) -> list[str]:
    used = {c.filename for tf in tasks for c in tf.components if c.source is None}
    return [f"{p}: no added task uses it (a contribution adds only the components its tasks need)"
            for p in sorted(set(added_components) - used)]


# ---------------------------------------------------------------------------------------------------
# Task files
# ---------------------------------------------------------------------------------------------------


def task_problems(rel: str, raw: bytes, config: SystemConfig, *, added: Mapping[str, Header],
                  existing: Callable[[str], Header | None], source: Callable[[Any], str | None],
                  sizes: Mapping[str, int]) -> tuple[TaskFile | None, list[str]]:
    """Parse one added task file (the one schema) and check every component it names exists and fits its slot.

    `existing(filename)` is the header of a component already in the repo at the PR's head and on the target (None:
    not there); `source(ref)` checks a component pinned in another repo (a problem, or None); `sizes` are the file
    sizes the Hub lists at the PR's head.
    """
    from .. import model as vit

    try:
        tf = TaskFile.from_json(load_json(raw, rel), rel)
        structure = tf.structure(config.dims)
    except Mu2hubError as e:
        return None, [str(e)]
    problems = []
    if tf.filename != rel:
        problems.append(f"{rel} names task {tf.task!r} (its file would be {task_filename(tf.task)})")
    if tf.metrics.get("test_accuracy") is None:
        problems.append(f"{rel}: no metrics.test_accuracy")
    if tf.probe is None or tf.probe["num_images"] < PROBE_IMAGES:
        problems.append(f"{rel}: a task file must carry a probe of at least {PROBE_IMAGES} images (docs/FORMAT.md)")
    for key, actual in (("activated_params", tf.activated_params), ("bytes", tf.download_bytes)):
        recorded = tf.sizes.get(key)
        if recorded is not None and recorded != actual:
            problems.append(f"{rel}: sizes.{key} records {recorded:,} but the path adds up to {actual:,}")
    params, kinds = {}, {}
    for ref in tf.components:
        if ref.source is not None:
            why = source(ref)
            if why:
                problems.append(f"{rel}: {ref.slot}: {why}")
            continue
        info = added.get(ref.filename) or existing(ref.filename)
        if info is None:
            problems.append(f"{rel}: {ref.slot} names {ref.filename}, which is neither on the target branch nor added")
            continue
        if sizes.get(ref.filename) != ref.bytes:
            problems.append(f"{rel}: {ref.slot} records {ref.bytes:,} bytes, {ref.filename} has {sizes.get(ref.filename)}")
        if info.params != ref.params:
            problems.append(f"{rel}: {ref.slot} records {ref.params:,} parameters, {ref.filename} holds {info.params:,}")
        kinds[ref.slot] = info.kind
        params[ref.slot] = {k: _Shape(s) for k, s in info.shapes.items()}
    problems += [f"{rel}: {s} holds a {k!r} component" for s, k in kinds.items() if k != s.split(".")[0]]
    problems += [f"{rel}: {p}" for p in vit.check_shapes(structure, params) if p.split(":")[0] in params]
    return tf, problems


class _Shape:
    """A tensor known by its shape only (`np.shape` reads `.shape`): shape checks without the bytes."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape


# ---------------------------------------------------------------------------------------------------
# The system after the merge
# ---------------------------------------------------------------------------------------------------


def system_problems(files: Mapping[str, TaskFile], config: SystemConfig, repo_id: str) -> list[str]:
    """Run the readers every user of the repo runs on all task files after the merge: the model card (through
    huggingface_hub's `ModelCard`), the system summary behind `info` and the Space, the path figure."""
    from huggingface_hub import ModelCard

    from ..inference.task import summarize
    from ..publishing.card import render_card

    try:
        card = ModelCard(render_card(files, config, repo_id=repo_id))
        results = card.data.eval_results or []
        if len(results) != sum(tf.metrics.get("test_accuracy") is not None for tf in files.values()):
            return [f"the model card lists {len(results)} results for {len(files)} tasks"]
        summarize(dict(files))
    except Exception as e:  # any crash here would break the card refresh or the Space for every task
        return [f"the repo's readers fail on the merged task files: {type(e).__name__}: {e}"]
    return []
