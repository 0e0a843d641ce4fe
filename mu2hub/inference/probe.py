"""Probes and verification: anyone can check that a download reproduces the model that was published.

A task file's `probe` records a seed, the number and size of images generated from it, and what the exporter's
model answered: top-1 per image and the logits (rounded). Floats differ slightly between machines and
backends (CPU/GPU/TPU, XLA versions), so a probe is checked with a tolerance, never by a digest alone:
logits within `atol` elementwise, top-1 equal wherever the recorded top-1/top-2 margin exceeds 2·atol (a
near-tie may legitimately flip). `logits_sha256` (float32 little-endian bytes) only reports a bit-exact match.

The tolerance is the library's (`probe_atol`, from the recorded logits), never the file's: a task file that
records `atol: 1e9` would otherwise pass any model. Every recorded and recomputed logit must be finite (NaN
compares false with everything, so `nan > atol` would pass).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..errors import FormatError, Mu2hubError

PROBE_SEED = 0
PROBE_IMAGES = 4
#: Tolerance relative to the logits' scale: atol = PROBE_RTOL * max(1, max |logit|).
PROBE_RTOL = 1e-3


# ---------------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------------


def probe_images(seed: int, num_images: int, image_size: int, channels: int = 3) -> np.ndarray:
    """The probe's inputs: uint8 images from `np.random.default_rng(seed)` (the same on every machine)."""
    return np.random.default_rng(seed).integers(0, 256, (num_images, image_size, image_size, channels), dtype=np.uint8)


def probe_logits(model: Any, seed: int, num_images: int) -> np.ndarray:
    """Logits of a `TaskModel` on the probe images, through its own preprocessing.

    Matmuls run at "highest" precision: by default GPUs use TF32 and TPUs bf16 passes for float32 matmuls,
    which alone would move deep paths' logits past the tolerance.
    """
    import jax

    images = probe_images(seed, num_images, model.task_file.image_size)
    with jax.default_matmul_precision("highest"):
        return np.asarray(model.logits(model.preprocess(images)), dtype=np.float32)


def logits_digest(logits: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(logits, dtype="<f4").tobytes()).hexdigest()


def probe_atol(logits: np.ndarray) -> float:
    """The tolerance a probe is checked with: `PROBE_RTOL * max(1, largest absolute recorded logit)`."""
    return PROBE_RTOL * max(1.0, float(np.abs(logits).max()))


def make_probe(model: Any, *, seed: int = PROBE_SEED, num_images: int = PROBE_IMAGES) -> dict[str, Any]:
    """Record what `model` answers on the probe images, as the `probe` entry of its task file."""
    logits = probe_logits(model, seed, num_images)
    if not np.isfinite(logits).all():
        raise FormatError("the model answers NaN or Inf on the probe images: nothing to record")
    atol = probe_atol(logits)
    return {
        "seed": int(seed),
        "num_images": int(num_images),
        "image_size": int(model.task_file.image_size),
        "top1": [int(i) for i in logits.argmax(axis=1)],
        "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()],
        "logits_sha256": logits_digest(logits),
        "atol": float(f"{atol:.3g}"),
    }


@dataclass
class ProbeCheck:
    """The outcome of checking one probe: `ok`, and what differs when not."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None
    bit_exact: bool = False


def check_probe(model: Any, probe: dict[str, Any] | None) -> ProbeCheck:
    """Recompute the probe from `model`'s components and compare with the recorded answers (module docstring)."""
    if not probe:
        return ProbeCheck(False, ["no probe recorded in the task file"])
    try:
        seed, n, size = int(probe["seed"]), int(probe["num_images"]), int(probe["image_size"])
        expected = np.asarray(probe["logits"], dtype=np.float64)
        top1 = [int(i) for i in probe["top1"]]
    except (KeyError, TypeError, ValueError) as e:
        return ProbeCheck(False, [f"malformed probe: {e!r}"])
    if size != model.task_file.image_size:
        return ProbeCheck(False, [f"probe image_size {size} != the task's image size {model.task_file.image_size}"])
    if expected.ndim != 2 or expected.shape[0] != n or len(top1) != n or not np.isfinite(expected).all():
        return ProbeCheck(False, [f"malformed probe: logits must be {n} rows of finite numbers, one per label"])
    try:
        got = probe_logits(model, seed, n)
    except Mu2hubError as e:
        return ProbeCheck(False, [f"the model cannot run the probe: {e}"])
    if got.shape != expected.shape:
        return ProbeCheck(False, [f"probe records logits of shape {list(expected.shape)}, the model gives {list(got.shape)}"])
    if not np.isfinite(got).all():
        return ProbeCheck(False, ["the model answers NaN or Inf on the probe images"])
    atol = probe_atol(expected)
    diff = float(np.abs(got - expected).max())
    problems = []
    if not diff <= atol:
        problems.append(f"logits differ by up to {diff:.3g} (tolerance {atol:.3g})")
    ordered = np.sort(expected, axis=1)
    margins = ordered[:, -1] - ordered[:, -2] if expected.shape[1] > 1 else np.full(n, np.inf)
    flips = [i for i, (want, have) in enumerate(zip(top1, got.argmax(axis=1))) if want != have and margins[i] > 2 * atol]
    if flips:
        problems.append(f"top-1 differs on probe image(s) {flips}: expected {[top1[i] for i in flips]}, "
                        f"got {[int(got[i].argmax()) for i in flips]}")
    bit_exact = probe.get("logits_sha256") == logits_digest(got)
    return ProbeCheck(not problems, problems, diff, bit_exact)


# ---------------------------------------------------------------------------------------------------
# Verifying a repo or folder
# ---------------------------------------------------------------------------------------------------


@dataclass
class TaskVerification:
    task: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    components: int = 0
    bytes: int = 0
    probe: ProbeCheck | None = None


@dataclass
class VerifyReport:
    """What `verify` found: one entry per task, plus problems of the repo as a whole."""

    repo: str
    revision: str | None
    tasks: dict[str, TaskVerification] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(t.ok for t in self.tasks.values())

    def format(self) -> str:
        at = f" at {self.revision}" if self.revision else ""
        lines = [f"verify {self.repo}{at}"]
        for t in self.tasks.values():
            if t.ok and t.probe is not None:
                exact = "bit-exact" if t.probe.bit_exact else f"max |Δlogit| {t.probe.max_abs_diff:.2g}"
                lines.append(f"  ok    {t.task}: {t.components} components ({t.bytes:,} bytes) match their ids; probe ok ({exact})")
            else:
                lines.extend([f"  FAIL  {t.task}:"] + [f"          - {p}" for p in t.problems])
        lines.extend(f"  FAIL  {p}" for p in self.problems)
        lines.append("all checks passed" if self.ok else "verification FAILED")
        return "\n".join(lines)


def verify(repo_id_or_path: str | os.PathLike, *, tasks: Iterable[str] | None = None, revision: str | None = None,
           cache_dir: str | os.PathLike | None = None, token: str | bool | None = None) -> VerifyReport:
    """Download a system (or some of its tasks) into a fresh cache and check it against what was published.

    Every component file is hashed against its id, the task files' recorded sizes are recomputed, and each
    task's probe is run. For a Hub repo, every component file's LFS sha256 in the repo listing is also
    compared with the id in its name (catching damage to files no task downloads).

    Args:
        repo_id_or_path (`str`): a Hub repo id or a local folder.
        tasks (`Iterable[str]`, *optional*): only these tasks; defaults to all.
        revision (`str`, *optional*): branch, tag or commit; pinned for the whole check.
        cache_dir (`str`, *optional*): where to download; defaults to a fresh temporary cache, deleted after,
            so that nothing already cached can hide a bad file.
        token (`str` or `bool`, *optional*): as in `huggingface_hub`.

    Returns:
        `VerifyReport`: `.ok`, per-task results, `.format()` for display.

    Example:
        >>> from mu2hub.inference.probe import verify
        >>> verify("org/system", tasks=["digits"]).ok
        True
    """
    from ..hub.store import LocalStore, open_store

    tmp = None
    if cache_dir is None and not os.path.isdir(repo_id_or_path):
        tmp = cache_dir = tempfile.mkdtemp(prefix="mu2hub-verify-")
    try:
        store = open_store(repo_id_or_path, revision=revision, cache_dir=cache_dir, token=token)
        report = VerifyReport(str(repo_id_or_path), getattr(store, "commit", None))
        names = list(tasks) if tasks is not None else store.list_tasks()
        if not names:
            report.problems.append("the repo has no tasks")
        for task in names:
            report.tasks[task] = _verify_task(store, task)
        if not isinstance(store, LocalStore) and tasks is None:
            report.problems.extend(_listed_component_problems(store, token))
        return report
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _verify_task(store: Any, task: str) -> TaskVerification:
    from .task import load_task

    out = TaskVerification(task, False)
    try:
        tf = store.read_task(task)
        out.components, out.bytes = len({c.id for c in tf.components}), tf.download_bytes
        for key, actual in (("activated_params", tf.activated_params), ("bytes", tf.download_bytes)):
            recorded = tf.sizes.get(key)
            if recorded is not None and recorded != actual:
                out.problems.append(f"sizes.{key} records {recorded:,} but the path adds up to {actual:,}")
        model = load_task(store, task)  # hashes every component file against its id
    except Mu2hubError as e:
        out.problems.append(str(e))
        return out
    out.probe = check_probe(model, tf.probe)
    out.problems.extend(f"probe: {p}" for p in out.probe.problems)
    out.ok = not out.problems
    return out


def _listed_component_problems(store: Any, token: str | bool | None) -> list[str]:
    """Component files whose LFS sha256 (from the repo listing, no download) is not the id in their name."""
    from huggingface_hub import HfApi

    from ..constants import COMPONENTS_DIR
    from ..errors import RemoteFileNotFoundError
    from ..hub.transfer import hub_call

    try:
        with hub_call(store.repo_id, f"listing {COMPONENTS_DIR}/"):
            entries = list(HfApi(token=token).list_repo_tree(store.repo_id, path_in_repo=COMPONENTS_DIR,
                                                             recursive=True, revision=store.commit))
        files = [e for e in entries if getattr(e, "lfs", None) is not None]
    except RemoteFileNotFoundError:
        return []
    problems = []
    for e in files:
        cid = e.path.rsplit("/", 1)[-1].removesuffix(".safetensors")
        if e.lfs.sha256 != cid:
            problems.append(f"{e.path}: content sha256 {e.lfs.sha256} does not match its id")
    return problems
