"""Contributing back: evolve a new task on top of a published system, and open a Hub pull request with it.

`add_task(repo, task=..., data=..., budget=...)` runs the evolution engine (`mu2hub.evolution.loop.Agent`) for one
task against the published system, frozen:
1. The data loads and validates first, and the name is checked (an existing task needs `revisit=True`): bad input
   fails before anything is downloaded.
2. The repo is opened at one commit (pinned for everything after); only JSON is read: `config.json`, every
   `tasks/<task>.json`, and `root.json` if the system publishes its root. Without `root.json` the parent candidates
   are the tasks' best paths only (the first full-depth one in stream order stands in as the "root" the clone walk
   falls back to, but is not itself a seed).
3. Each candidate parent costs the bytes of its path plus the root components its children may fall back to (deeper
   blocks when depth can grow, the position embedding when the image size can change). Candidates are admitted,
   root first, then by smallest added bytes, while their union fits `max_bytes`; if none fits, `ByteCapError`
   names the cap and the smallest parent's size.
4. A temporary run directory mirrors the published paths (`paths/hub-NNNN.json`, task files) with a *lazy* component
   reader: a component is fetched (and verified against its id) only when a sampled child needs it.
5. The best path's new components, its probe and sizes make the task file; the same structure trained from random
   init for the same number of steps gives the from-scratch baseline, measured in the same run.

`push_task(result)` opens one pull request on the pinned commit that only *adds* files: the task file and the new
components. Maintainers check it with `mu2hub.validate(repo, pr=N)`.

Where things live: parent candidates, costs and the lazy reader in `mu2hub/evolution/published.py`; opening and
validating pull requests in `mu2hub/contrib/review.py`; the user + maintainer workflow in `docs/CONTRIBUTING.md`.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..inference.compilation import enable_compilation_cache
from ..constants import component_filename, task_filename
from ..data.decode import training_decode_size
from ..data.registry import TaskData
from ..format.datasource import public_name
from ..errors import BaselineNotBeatenError, ContributionError, FormatError, RevisitNotBetterError, VaryingImageSizesError
from ..publishing.comparison import LABELS, baselines_of, judge
from ..evolution.hparams import get_space
from ..evolution.loop import ROOT_ID, Agent
from ..evolution.published import LazyComponents, PublishedSystem, admit_parents, infer_space, run_config
from ..evolution.run import RunDir
from ..data.resolve import resolve_data
from ..format.system import ComponentRef, TaskFile, check_task_name, dump_json, file_has_id, load_json
from ..format.schema import MAX_LAYERS, MAX_TEXT_CHARS, Obj, check_component_id, check_int, check_str
from ..utils.tables import human_bytes, table
from ..hub.pulls import PushResult, open_pull_request
from ..hub.store import LocalStore
from ..utils.atomic import atomic_write
from ..hub.transfer import hub_call
from ..utils.text import md_code, md_text

__all__ = ["AddTaskResult", "add_task", "describe", "push_task", "validate"]

# ---------------------------------------------------------------------------------------------------
# add_task
# ---------------------------------------------------------------------------------------------------


@dataclass
class AddTaskResult:
    """What `add_task` produced: the new task's file, its new components (in `workdir`), and what it cost."""

    repo_id: str
    revision: str
    task: str
    task_file: TaskFile
    workdir: Path
    new_components: list[ComponentRef]
    downloaded_bytes: int
    system_bytes: int
    parents: dict[str, int]  # admitted parent candidates -> their download bytes
    excluded: dict[str, int]  # candidates left out by the byte cap
    children: int
    train_steps: int
    wall_time: float
    revisit: bool = False
    lineage: dict[str, str] = field(default_factory=dict)  # slot -> "new" | "shared with a, b" | "root"
    download_seconds: float = 0.0  # of `wall_time`, spent fetching (and verifying) components

    @property
    def new_bytes(self) -> int:
        return sum(c.bytes for c in self.new_components)

    @property
    def baseline_test_accuracy(self) -> float | None:
        """The same ViT trained from scratch for every example the search trained (test accuracy)."""
        return self.baselines.get("scratch:total")

    @property
    def baselines(self) -> dict[str, float | None]:
        """The baselines trained with it ("scratch:total", "finetune:total", ...: test accuracy, None if skipped)."""
        return baselines_of(self.task_file.metrics)

    @property
    def verdict_kind(self) -> str:
        """"wins", "ties", "loses", "not measurable" (too little test data to tell) or "not measured"."""
        return judge(self.task_file.metrics)[0]

    @property
    def beats_baseline(self) -> bool | None:
        """True only when the evolved path beats every baseline; False on a tie or a loss; None when there is no
        baseline or the data cannot tell."""
        kind = self.verdict_kind
        return None if kind in ("not measured", "not measurable") else kind == "wins"

    def verdict(self) -> str:
        """One plain sentence: does the evolved task beat training the same ViT alone and plain fine-tuning?"""
        return judge(self.task_file.metrics)[1]

    def summary_rows(self) -> list[list[Any]]:
        m, s = self.task_file.metrics, self.task_file.sizes
        base = [[f"{LABELS[n]}, {self.train_steps} steps", "n/a" if v is None else f"{v:.4f}"]
                for n, v in self.baselines.items()]
        return [["task", self.task], ["test accuracy", f"{m['test_accuracy']:.4f}"],
                *base, ["verdict", self.verdict()],
                ["chance", f"{m.get('chance', 0):.4f}"], ["test images", f"{m.get('num_test_examples', 0):,}"],
                ["activated params", f"{self.task_file.activated_params:,}"], ["new params", f"{s.get('new_params', 0):,}"],
                ["new components", f"{len(self.new_components)} ({human_bytes(self.new_bytes)})"],
                ["downloaded", f"{human_bytes(self.downloaded_bytes)} of {human_bytes(self.system_bytes)} (whole system)"],
                ["parents admitted", f"{len(self.parents)}" + (f" ({len(self.excluded)} over the byte cap)" if self.excluded else "")],
                ["children trained", self.children],
                ["wall time", f"{self.wall_time:.1f} s ({self.download_seconds:.1f} s fetching components)"]]

    def format(self) -> str:
        return table(self.summary_rows(), ["", "value"])

    def push(self, **kwargs: Any) -> PushResult:
        """`push_task(self, **kwargs)`."""
        return push_task(self, **kwargs)

    # -- kept in the workdir, so pushing later never evolves again ------------------------------------
    def save(self) -> Path:
        """Write `<workdir>/add_task_result.json` (atomically): everything `push_task` needs."""
        data = {"format": RESULT_FORMAT, "task_file": self.task_file.to_json(),
                "new_components": [c.id for c in self.new_components],
                **{k: getattr(self, k) for k in _SCALARS}}
        path = self.workdir / RESULT_NAME
        atomic_write(path, dump_json(data))
        return path

    @classmethod
    def load(cls, workdir: str | os.PathLike) -> "AddTaskResult":
        """The result an earlier `add_task(..., workdir=...)` left there, checked before anything is pushed.

        Raises:
            `ContributionError`: no result there (the run did not finish), or it does not parse, or a new
            component it names is missing from `<workdir>/system/` or does not match its id.
        """
        root = Path(workdir)
        path = root / RESULT_NAME
        try:
            data = load_json(path.read_bytes(), str(path))
        except FileNotFoundError:
            raise ContributionError(f"{path}: no add-task result here; run `mu2hub add-task ... --workdir {root}` "
                                    "first (it is written when the evolution finishes)") from None
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            raise ContributionError(f"{path}: not an add-task result (format {RESULT_FORMAT!r})")
        try:
            tf = TaskFile.from_json(data["task_file"], f"{path}:task_file")
            scalars = _result_fields(data, str(path))
            ids = Obj(data, str(path)).items("new_components", 2 * MAX_LAYERS + 5,
                                             lambda v, k: check_component_id(v, where=str(path), key=k))
        except KeyError as e:
            raise ContributionError(f"{path}: missing {e}") from None
        except FormatError as e:  # a wrongly typed field: named here, not a TypeError deep in push_task
            raise ContributionError(f"{path}: {e.message}") from e
        by_id = {c.id: c for c in tf.components}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ContributionError(f"{path}: new components {unknown} are not on the task's path")
        store = LocalStore(root / "system")
        for cid in ids:
            f = store.root / component_filename(cid)
            if not file_has_id(f, cid):
                raise ContributionError(f"{f}: the new component is missing or does not match its id; "
                                        "run add-task again")
        return cls(task_file=tf, workdir=root, new_components=[by_id[i] for i in ids], **scalars)


#: What a contribution is judged against (mu2hub.evolution.baselines): the same ViT alone and plain fine-tuning of
#: the system's best pretrained start, each for every example the search trained.
CONTRIBUTION_BASELINES = "scratch:total,finetune:total"
RESULT_NAME = "add_task_result.json"
RESULT_FORMAT = "mu2hub-add-task/1"
_SCALARS = ("repo_id", "revision", "task", "downloaded_bytes", "system_bytes", "parents", "excluded", "children",
            "train_steps", "wall_time", "revisit", "lineage", "download_seconds")


def _result_fields(data: dict[str, Any], where: str) -> dict[str, Any]:
    """`_SCALARS` of a saved result, each checked for type and range (`FormatError` naming the field)."""
    c = Obj(data, where)
    counts = {k: c.int(k, 0, 2**62) for k in ("downloaded_bytes", "system_bytes", "children", "train_steps")}
    sizes = {k: {name: check_int(v, f"{k}.{name}", where, 0, 2**62)
                 for name, v in c.sub(k).data.items()} for k in ("parents", "excluded")}
    return {"repo_id": c.str("repo_id", 200), "revision": c.str("revision", 64), "task": check_task_name(c.str("task")),
            **counts, **sizes, "wall_time": c.num("wall_time", 0.0), "revisit": c.bool("revisit"),
            "lineage": {k: check_str(v, f"lineage.{k}", where, MAX_TEXT_CHARS) for k, v in c.sub("lineage").data.items()},
            "download_seconds": c.num("download_seconds", 0.0)}


def add_task(
    repo_id: str,
    task: str,
    data: TaskData | str | os.PathLike,
    *,
    budget: int = 16,
    revision: str | None = None,
    max_bytes: int | None = None,
    revisit: bool = False,
    evolution: Mapping[str, Any] | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    baseline: bool = True,
    workdir: str | os.PathLike | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    progress: bool = True,
    compilation_cache: str | os.PathLike | bool | None = None,
) -> AddTaskResult:
    """Evolve a new task on top of a published system, downloading only the paths it samples.

    Args:
        repo_id (`str`): the published system (a Hub repo id).
        task (`str`): the new task's name (`tasks/<task>.json`).
        data: a Hugging Face dataset id or `hf:<id>`, a local `imagefolder` folder or `imagefolder:<path>`, a
            registered task name, or `TaskData`. Label names come from the dataset.
        budget (`int`, defaults to 16): children to train (generations × children per generation).
        revision (`str`, *optional*): branch, tag or commit; resolved once, and the pull request is opened on it.
        max_bytes (`int`, *optional*): cap on component bytes downloaded; parents are admitted while they fit.
        revisit (`bool`, defaults to `False`): evolve an existing task again; the result must beat its score.
        evolution (`dict`, *optional*): `space` (default: inferred from the paths' hparams), `scorer`
            (`{"base", "num_params", "root_counts"}`, default base 1.0), `children_per_generation` (4),
            `batch_size` (32), `num_validations` (2), `train_examples_between_validations_max` (512), `hparams`.
        data_kwargs (`dict`, *optional*): forwarded to the data loader (`image_size`, `max_examples`, ...).
        baseline (`bool`, defaults to `True`): also train the baselines it is judged against, each for as many
            examples as the whole search trained: the same ViT from random init, and plain fine-tuning of the
            system's pretrained root (every slot trainable). A loss to either refuses `push_task` unless forced.
        workdir (`str`, *optional*): where the run and the new components live (default: a new temporary folder).
        seed, cache_dir, token, progress: RNG seed; as in huggingface_hub; a progress bar.
        compilation_cache (*optional*): where compiled steps are kept between runs (`mu2hub.inference.compilation`):
            None for `$MU2HUB_COMPILATION_CACHE` or `~/.cache/mu2hub/compilation`, a folder, or False (off).

    Returns:
        `AddTaskResult`: `task_file` (metrics incl. `test_accuracy`, `from_scratch_test_accuracy` and
        `finetune_test_accuracy`, sizes, probe,
        lineage), `new_components`, bytes downloaded vs the whole system, `format()` for a summary table.

    Raises:
        `TaskExistsError`: the name exists and `revisit` is off. `ByteCapError`: no parent fits `max_bytes`.
        `RevisitNotBetterError`: a revisit did not beat the published score. `ValueError`: bad data (one class,
        no label column, ...). Nothing is pushed in any of these cases.

    Example:
        >>> result = mu2hub.add_task("org/system", task="my_shapes", data="imagefolder:shapes/", budget=16)
        >>> print(result.format())
        >>> mu2hub.push_task(result)   # a pull request adding only new files
    """
    start = time.perf_counter()
    check_task_name(task)
    tdata, source_name, system = _task_data(repo_id, task, data, data_kwargs, evolution, revision=revision,
                                            cache_dir=cache_dir, token=token)
    # the system at one commit, JSON only; the name and (for a revisit) the labels
    system = system or PublishedSystem.open(repo_id, revision=revision, cache_dir=cache_dir, token=token)
    system.check_name(task, tdata, revisit)
    space_name, cfg = _contribution_config(system, task, evolution, budget, seed, baseline)
    # parents that fit the byte cap (nothing downloaded yet)
    costs = system.costs(get_space(space_name).ranges)
    admitted = admit_parents(costs, system.sizes, max_bytes, required=[task] if revisit else [], first=["root"])
    # a temporary run mirroring the published paths, components read lazily from the pinned commit
    total = cfg["generations"] * cfg["children_per_generation"]
    bar = _progress(total, task, max_bytes) if progress else None
    reader = LazyComponents(system.store, system.refs, max_bytes,
                            on_fetch=(lambda n: bar.set_postfix(downloaded=human_bytes(n))) if bar else None)
    run = RunDir(Path(workdir or tempfile.mkdtemp(prefix="mu2hub-add-task-")), component_reader=reader)
    run.init_config(cfg, resume=False)
    system.materialise(run, cfg["hparams"])
    seeds = [ROOT_ID] * ("root" in admitted) + [system.pid_of[t] for t in admitted if t != "root"]
    enable_compilation_cache(compilation_cache)
    agent = _evolve(run, cfg, task, tdata, seeds, bar)
    best = run.system.read_task(task)
    if revisit:
        _check_revisit(system, task, best)
    # the publishable task file and the from-scratch baseline
    rows = [r for r in run.history() if r.get("agent") == "add-task"]
    steps = int(sum(r["examples"] for r in rows) // cfg["batch_size"])
    result = _finish(system, run, agent, tdata, best, admitted, costs, reader, steps, len(rows), baseline, revisit, start,
                     data_name=source_name)
    result.save()  # `push_task(workdir)` / `mu2hub push-task WORKDIR` push it later without evolving again
    return result


def _task_data(repo_id: str, task: str, data: TaskData | str | os.PathLike, data_kwargs: Mapping[str, Any] | None,
               evolution: Mapping[str, Any] | None, **hub: Any) -> tuple[TaskData, str, PublishedSystem | None]:
    """The task's data, named `task`, and the public name of its source (no local paths). Data comes first, so bad
    input fails before any download; images of varying sizes need the system's image sizes (then opened here)."""
    try:
        tdata = resolve_data(data, **dict(data_kwargs or {}))
        system = None
    except VaryingImageSizesError:
        system = PublishedSystem.open(repo_id, **hub)
        tdata = resolve_data(data, **{"decode_size": _decode_size(system, evolution), **dict(data_kwargs or {})})
    source_name = public_name(tdata.name)
    return (replace(tdata, name=task) if tdata.name != task else tdata), source_name, system


def _contribution_config(system: PublishedSystem, task: str, evolution: Mapping[str, Any] | None, budget: int,
                         seed: int, baseline: bool) -> tuple[str, dict[str, Any]]:
    """The search space's name and the run config of evolving `task` alone (the contribution defaults under
    `evolution`), with the baselines it is judged against unless `baseline` is off."""
    settings = {"children_per_generation": 4, "batch_size": 32, "num_validations": 2,
                "train_examples_between_validations_max": 512, **dict(evolution or {})}
    space_name = _space_name(system, settings)
    cfg = run_config(system, task, space_name, settings, budget, seed)
    cfg["baselines"] = CONTRIBUTION_BASELINES if baseline else None
    return space_name, cfg


def _evolve(run: RunDir, cfg: dict[str, Any], task: str, data: TaskData, seeds: list[str], bar: Any) -> Agent:
    """Evolve the one task against the frozen system (the bar, if any, closed however it ends)."""
    agent = Agent(run, cfg, agent="add-task", tasks=[task], data={task: data}, seed_pool=seeds,
                  log=bar.write if bar else (lambda *_: None), report=_reporter(bar))
    try:
        agent.run_all()
    finally:
        if bar is not None:
            bar.close()
    return agent


def _check_revisit(system: PublishedSystem, task: str, best: TaskFile) -> None:
    """A revisit must end on a new path that beats the published score."""
    if (best.lineage["path_id"] == system.pid_of[task]
            or best.metrics["score"] <= system.files[task].metrics.get("score", -1)):
        raise RevisitNotBetterError(f"revisit of {task!r} did not beat the published score "
                                    f"{system.files[task].metrics.get('score')}: nothing to push")


def _space_name(system: PublishedSystem, settings: Mapping[str, Any] | None) -> str:
    return (settings or {}).get("space") or infer_space(system.files.values())


def _decode_size(system: PublishedSystem, settings: Mapping[str, Any] | None) -> int:
    """Images of varying sizes are decoded above every size a child can take (`data.decode`): its parent's (the
    root's or a published path's) and the search space's."""
    space = get_space(_space_name(system, settings))
    sizes = (system.config.root_image_size, *(f.image_size for f in system.files.values()),
             *space.ranges.get("ds_image_size", ()))
    return training_decode_size(sizes)


def _progress(total: int, task: str, cap: int | None):
    from ..utils.progress import progress_bar

    return progress_bar(total=total, desc=f"add-task {task}", unit="child",
                        postfix={"downloaded": "0 B" + (f" of {human_bytes(cap)}" if cap else "")})


def _reporter(bar):
    if bar is None:
        return None

    def report(r: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix(gen=r["generation"], child=f"{r['child']:.3f}", best=f"{r['best']:.3f}", refresh=False)

    return report


def _finish(system: PublishedSystem, run: RunDir, agent: Agent, data: TaskData, best: TaskFile, admitted: list[str],
            costs: Mapping[str, set[str]], reader: LazyComponents, steps: int, children: int, baseline: bool,
            revisit: bool, start: float, *, data_name: str) -> AddTaskResult:
    """The publishable task file (new components, lineage, sizes, probe) and the from-scratch baseline."""
    from ..inference.task import TaskModel
    from ..publishing.publish import release
    from ..inference.probe import make_probe

    new = [c for c in best.components if c.id not in system.refs]
    new_ids = list(dict.fromkeys(c.id for c in new))
    # the published path the best one descends from (through the task's own children)
    task_of = {pid: t for t, pid in system.pid_of.items()}
    rec = origin = run.read_path(best.lineage["path_id"])
    while origin.parent is not None and origin.id not in task_of:
        origin = run.read_path(origin.parent)
    parent_task = task_of.get(origin.id)
    parent_tf = system.files[parent_task] if parent_task else system.root
    earlier: dict[str, list[str]] = {}  # component id -> published tasks using it ("shared with")
    for t, tf in system.files.items():
        for cid in dict.fromkeys(c.id for c in tf.components):
            if t != best.task:
                earlier.setdefault(cid, []).append(t)
    lineage = {"path_id": f"contrib-{system.store.commit[:8]}-{rec.id}", "parent_task": parent_task,
               "parent": parent_tf.lineage.get("path_id") if parent_tf else None, "created": new_ids,
               "base": {"repo_id": system.repo_id, "revision": system.store.commit}, "data": data_name}
    metrics = {**best.metrics, "train_steps": steps, "children": children,
               "num_test_classes": int(len(np.unique(data.test.labels))),
               **({"carved": {s: len(getattr(data, s)) for s in data.carved}} if data.carved else {})}
    tf = replace(best, lineage=lineage, metrics=metrics)
    params = {c.slot: run.read_component(c.id) for c in best.components}
    tf = release(tf, earlier=earlier, probe=make_probe(TaskModel(system.config, tf, params)))
    slots = {c.slot: "new" if c.id in new_ids else f"shared with {', '.join(sorted(earlier[c.id]))}" if c.id in earlier
             else "root" for c in tf.components}
    published = {c.id: c.bytes for t in [*system.files.values(), *([system.root] if system.root else [])]
                 for c in t.components}

    def cost(name: str) -> int:
        return sum(system.sizes[i] for i in costs[name])

    return AddTaskResult(system.repo_id, system.store.commit, best.task, tf, run.root, new, reader.bytes,
                         sum(published.values()), {n: cost(n) for n in admitted},
                         {n: cost(n) for n in costs if n not in admitted}, children, steps,
                         time.perf_counter() - start, revisit, slots, reader.seconds)


# ---------------------------------------------------------------------------------------------------
# The pull request
# ---------------------------------------------------------------------------------------------------


def describe(result: AddTaskResult) -> str:
    """The pull request text: metrics, parameters, bytes, lineage, and how to validate it."""
    tf, m, s = result.task_file, result.task_file.metrics, result.task_file.sizes
    base = [f"| {LABELS[n]}, {result.train_steps} steps (test) | {'n/a' if v is None else f'{v:.4f}'} |"
            for n, v in result.baselines.items()] or ["| baselines | not trained |"]
    lines = [f"Adds task **{md_code(tf.task)}** ({len(tf.labels)} classes: {', '.join(md_text(x, 64) for x in tf.labels[:12])}"
             f"{' …' if len(tf.labels) > 12 else ''}), evolved with `mu2hub add-task` on {md_code(result.repo_id)} @ "
             f"{md_code(result.revision)}.", "",
             "| metric | value |", "|---|---:|",
             f"| test accuracy | {m['test_accuracy']:.4f} |", f"| validation accuracy | {m['validation_accuracy']:.4f} |",
             *base,
             f"| chance (majority class) | {m.get('chance', 0):.4f} |", f"| test images | {m.get('num_test_examples', 0):,} |",
             f"| score | {m['score']:.4f} |",
             f"| activated parameters | {tf.activated_params:,} |", f"| new parameters | {s.get('new_params', 0):,} |",
             f"| new files | {len(result.new_components) + 1} ({result.new_bytes:,} bytes of components) |",
             f"| downloaded to build it | {result.downloaded_bytes:,} of {result.system_bytes:,} bytes |", "",
             f"**Against the baselines**: {result.verdict()}.", "",
             f"Lineage: parent {md_code(tf.lineage.get('parent_task') or 'root')}; per slot:", ""]
    lines += [f"- {md_code(slot)}: {md_text(how, 2000)}" for slot, how in result.lineage.items()]
    lines += ["", "`mu2hub validate` checks that it only adds files, ids, shapes and the probe (the exact command is the "
              "first comment below)."]
    return "\n".join(lines)


def push_task(result: AddTaskResult | str | os.PathLike, *, create_pr: bool = True, token: str | bool | None = None,
              title: str | None = None, force: bool = False) -> PushResult:
    """Open a pull request on `result.repo_id` at the pinned commit adding the task file and its new components.

    Args:
        result (`AddTaskResult`, or the `workdir` an earlier `add_task` wrote it to): what to push; a workdir is
            read back (`AddTaskResult.load`), so pushing never evolves again.
        create_pr (`bool`, defaults to `True`): `False` commits to main directly, on the pinned parent (fails if
            main moved since: HTTP 412).
        token (`str`, *optional*): as in huggingface_hub. title (`str`, *optional*): the PR title.
        force (`bool`, defaults to `False`): push even when the evolved task lost to the from-scratch baseline.

    Returns:
        `PushResult`: `pr_url`, `pr_num`, `commit`, `files` and `bytes` sent, `parent`.

    Raises:
        `BaselineNotBeatenError`: the evolved task's test accuracy is below the same ViT trained from scratch
        (nothing is pushed unless `force=True`).
        `ContributionError`: a file would modify one the repo has (e.g. the task name was taken meanwhile), the
        repo already has every file, or a workdir holds no finished result.
    """
    if not isinstance(result, AddTaskResult):
        result = AddTaskResult.load(result)
    if result.verdict_kind == "loses" and not force:
        acc = float(result.task_file.metrics["test_accuracy"])
        name, value = max(((n, v) for n, v in result.baselines.items() if v is not None and v > acc), key=lambda x: x[1])
        raise BaselineNotBeatenError(result.task, acc, float(value), result.train_steps, against=LABELS[name])
    store = LocalStore(result.workdir / "system")
    files: dict[str, bytes | Path] = {task_filename(result.task): dump_json(result.task_file.to_json())}
    for c in result.new_components:
        files[component_filename(c.id)] = store.root / c.filename
    verb = "Revisit" if result.revisit else "Add"
    pushed = open_pull_request(result.repo_id, files, title=title or f"{verb} task {result.task} (mu2hub add-task)",
                               description=describe(result), parent_commit=result.revision, token=token,
                               create_pr=create_pr)
    if pushed.pr_num is not None:  # the number exists only now: the command goes in a comment, not a placeholder
        from huggingface_hub import HfApi

        with hub_call(result.repo_id, "commenting on the pull request"):
            HfApi(token=token).comment_discussion(
                result.repo_id, pushed.pr_num, f"Validate it: `mu2hub validate {result.repo_id} --pr {pushed.pr_num}`")
    return pushed


from .review import validate  # noqa: E402,F401  (re-exported as `mu2hub.validate`)
