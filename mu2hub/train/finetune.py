"""Fine-tuning a downloaded task: clone-on-write, so a variant costs only its new bytes.

`finetune(model, data, steps=..., lr=...)` trains copies of the components it is told to train (`train="own"`:
the components the task created, plus its head; `"all"`: every slot; or a list of slots / kinds). The
downloaded components are never modified: frozen ones are passed to the trainer as they are (the same device
arrays the process cache holds), trained ones start from host copies. The result is a `FineTunedModel` whose
task file names its new components by id and references every untouched one *in its source repo at the pinned
commit* (`source: {repo_id, revision}`, docs/FORMAT.md), so `save_pretrained` / `push_to_hub` write only the
new components, the task file and `config.json`.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..inference.task import TaskModel, device_component
from ..data.decode import training_decode_size
from ..data.pp import pp_spec
from ..format.datasource import public_name
from ..data.registry import TaskData
from ..data.resolve import resolve_data
from ..errors import ShapeMismatchError
from ..format.system import ComponentRef, ComponentSource, Structure, TaskFile, component_refs, distinct
from ..hub.pulls import PushResult, open_pull_request, pull_request_files
from ..hub.store import LocalStore
from ..utils.text import md_code, md_text

if TYPE_CHECKING:
    from .child import ChildResult

_SHA = re.compile(r"^[0-9a-f]{40}$")

# ---------------------------------------------------------------------------------------------------
# Which slots train
# ---------------------------------------------------------------------------------------------------


def trainable_slots(task_file: TaskFile, train: str | Sequence[str], *, new_head: bool) -> list[str]:
    """`"own"`: slots holding components the task created (`lineage.created`) plus the head; `"all"`: every slot;
    a list: those slots or kinds (`"head"`, `"norm"`, `"block"`, `"block.2"`). A new head always trains."""
    slots = [c.slot for c in task_file.components]
    if train == "all":
        chosen = slots
    elif train == "own":
        created = set(task_file.lineage.get("created") or [])
        chosen = [c.slot for c in task_file.components if c.id in created or c.slot == "head"]
    elif isinstance(train, str):
        raise ValueError(f"train={train!r}: expected 'own', 'all' or a list of slots/kinds such as ['head', 'block.2']")
    else:
        unknown = [t for t in train if t not in slots and t not in {s.split(".")[0] for s in slots}]
        if unknown:
            raise ValueError(f"train names {unknown}, which this path does not have; its slots are {slots}")
        chosen = [s for s in slots if s in train or s.split(".")[0] in train]
    if new_head and "head" not in chosen:
        chosen.append("head")
    return [s for s in slots if s in chosen]


# ---------------------------------------------------------------------------------------------------
# The fine-tuned model: writes only its new components
# ---------------------------------------------------------------------------------------------------


class FineTunedModel(TaskModel):
    """A `TaskModel` whose untouched components are references (`source`) into the repo it came from.

    `save_pretrained` writes `config.json`, the task file and only the components without a `source`; the folder
    loads like any other (`from_pretrained(folder, task=...)` fetches the referenced components through the Hub).
    """

    def __repr__(self) -> str:
        src = self.task_file.lineage.get("finetuned_from") or {}
        new = len(self.new_components)
        where = repr(self.repo_id) if self.repo_id else "None (not saved or pushed yet)"
        return (f"FineTunedModel(task={self.task!r}, repo={where}, finetuned_from="
                f"'{src.get('repo_id')}@{str(src.get('revision'))[:8]}:{src.get('task')}', classes={len(self.labels)}, "
                f"new_components={new}, referenced={sum(1 for c in self.components if c.source is not None)}, "
                f"test_accuracy={self.task_file.metrics.get('test_accuracy', float('nan')):.4f})")

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """`TaskModel.push_to_hub`; afterwards `repo_id` / `revision` say where the variant lives."""
        before = (self.repo_id, self.revision)
        result = super().push_to_hub(repo_id, **kwargs)
        self.repo_id, self.revision = before if kwargs.get("create_pr") else (repo_id, result.commit or self.revision)
        return result

    def _write(self, save_directory: str | os.PathLike) -> Path:
        """`save_pretrained`: `config.json`, `tasks/<task>.json` and the new components only (referenced ones stay
        where they are)."""
        store = LocalStore(save_directory)
        for ref in self.components:
            if ref.source is not None:
                continue
            tensors = {k: np.asarray(v) for k, v in self.params[ref.slot].items()}
            written = store.write_component(tensors, ref.kind, ref.slot)
            if written.id != ref.id:
                raise ShapeMismatchError(f"{ref.slot}: parameters no longer match component {ref.id}", path=ref.filename)
        store.write_config(self.config)
        store.write_task(self.task_file)
        if not self.repo_id:
            self.repo_id = str(save_directory)
        return Path(save_directory)

    @property
    def new_components(self) -> list[ComponentRef]:
        """The components this variant adds (what a push uploads)."""
        return [c for c in self.components if c.source is None and c.id in set(self.task_file.lineage.get("created") or [])]


def _source_of(model: TaskModel) -> ComponentSource | None:
    """Where untouched components can be referenced: a Hub repo at a pinned commit (a local folder cannot be)."""
    if getattr(model, "subfolder", None):  # a ComponentSource names a repo's root layout: store every component instead
        return None
    if model.revision and _SHA.match(str(model.revision)) and model.repo_id and not os.path.isdir(model.repo_id):
        return ComponentSource(model.repo_id, str(model.revision))
    return None


def finetune(
    model: TaskModel,
    data: TaskData | str | os.PathLike,
    *,
    steps: int,
    lr: float,
    batch_size: int = 32,
    train: str | Sequence[str] = "own",
    num_validations: int = 1,
    task: str | None = None,
    seed: int = 0,
    data_kwargs: dict[str, Any] | None = None,
    progress: bool | Callable[[int, int, dict], None] = False,
) -> FineTunedModel:
    """Fine-tune a task's path on new data; the downloaded components are never modified.

    Args:
        model (`TaskModel`): a loaded task (`from_pretrained(repo, task=...)`).
        data: `TaskData`, a Hugging Face dataset id or `hf:<id>`, a local image folder (`imagefolder` layout) or
            `imagefolder:<path>`, or a registered task name. Label names come from the dataset; if they differ from
            the task's, the variant gets a new (zero-initialised) head.
        steps (`int`): SGD steps (batch `batch_size`).
        lr (`float`): peak learning rate (warmup 10%, then cosine to 0; SGD momentum 0.9, clipping 1.0: the
            µ2Net child recipe).
        train (`str` or list, defaults to `"own"`): `"own"` trains the components the task created plus its head,
            `"all"` every slot, a list names slots or kinds.
        num_validations (`int`, defaults to 1): validations spread over the steps; the best snapshot is kept.
        task (`str`, *optional*): the variant's task name; defaults to the source task's.
        data_kwargs (`dict`, *optional*): forwarded to the data loader (`image_size`, `max_examples`, ...).
        progress (`bool` or callable): a progress bar over steps, or `progress(step, total, metrics)`.

    Returns:
        `FineTunedModel`: trained components are new (content ids); untouched ones reference the source repo at
        its pinned commit when the model came from the Hub. `metrics` hold validation and test accuracy on `data`.

    Raises:
        ValueError: bad `train`, `steps` < 1, data with fewer than 2 classes or a missing label column.

    Example:
        >>> model = mu2hub.from_pretrained("org/system", task="digits")
        >>> variant = model.finetune("imagefolder:my_digits/", steps=200, lr=0.01)
        >>> variant.push_to_hub("me/digits-variant")   # uploads only the new components
    """
    from .child import evaluate_params

    if steps < 1 or num_validations < 1 or steps % num_validations:
        raise ValueError(f"steps={steps} must be >= 1 and a multiple of num_validations={num_validations}")
    decode_size = training_decode_size([model.task_file.image_size])  # room for the random crop (data.decode)
    data = resolve_data(data, **{"decode_size": decode_size, **(data_kwargs or {})})
    tf = model.task_file
    new_head = list(data.labels) != list(tf.labels)
    slots = trainable_slots(tf, train, new_head=new_head)
    structure = replace(tf, labels=list(data.labels)).structure(model.config.dims)
    frozen, trainable = _clone_on_write(model, structure, slots, len(data.labels) if new_head else None)
    hparams = _finetune_hparams(tf, lr)
    result = _train(structure, frozen, trainable, data, hparams, tf, steps=steps, num_validations=num_validations,
                    batch_size=batch_size, seed=seed, progress=progress)
    trained = result.params
    new_refs = {r.slot: r for r in component_refs(trained, slots)}
    params = {**frozen, **{s: device_component(new_refs[s].id, trained[s]) for s in slots}}
    # as the variant is served: its stored preprocessing (e.g. a reference task's non-antialiased resize)
    test = evaluate_params(structure, params, data.test, batch_size, preprocessing=tf.preprocessing)
    base_test = None if new_head else evaluate_params(structure, model.params, data.test, batch_size,
                                                      preprocessing=tf.preprocessing)
    # the variant's task file: new components by id, untouched ones referenced in the source repo
    refs, created = _variant_components(structure, tf.component_map(), new_refs, _source_of(model))
    variant = TaskFile(
        task=task or tf.task, image_size=tf.image_size, num_layers=tf.num_layers, components=refs,
        labels=list(data.labels), adapter_layers=tf.adapter_layers, adapter_dim=tf.adapter_dim,
        preprocessing=tf.preprocessing or pp_spec(tf.image_size), hparams={**tf.hparams, **hparams},
        metrics={"validation_accuracy": result.quality, "test_accuracy": test, "score": result.quality,
                 "chance": data.chance, "num_test_examples": int(len(data.test.labels)),
                 **({} if base_test is None else {"source_test_accuracy": base_test})},
        lineage={"path_id": f"finetune-{(created or [refs[-1].id])[0][:12]}",
                 "finetuned_from": {"repo_id": model.repo_id, "revision": model.revision, "task": tf.task},
                 "created": distinct(created), "trained_slots": slots, "steps": steps, "lr": float(lr),
                 "data": public_name(data.name)},
    )
    out = FineTunedModel(model.config, variant, params, repo_id="", revision=None, dtype=model.dtype)
    from ..publishing.publish import release
    from ..inference.probe import make_probe

    out.task_file = release(variant, earlier={}, probe=make_probe(out))
    return out


def _clone_on_write(model: TaskModel, structure: Structure, slots: list[str],
                    new_classes: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """frozen = the loaded device arrays, untouched; trainable = host copies of `slots` (a zero-initialised head of
    `new_classes` classes when the labels changed, as µ2Net gives every new task)."""
    frozen = {s: model.params[s] for s in structure.slots() if s not in slots}
    trainable = {s: {k: np.array(v, np.float32) for k, v in model.params[s].items()} for s in slots}
    if new_classes is not None:
        from ..model import expected_shapes

        shapes = expected_shapes("head", model.config.dims, num_classes=new_classes)
        trainable["head"] = {k: np.zeros(shape, np.float32) for k, shape in shapes.items()}
    return frozen, trainable


def _finetune_hparams(tf: TaskFile, lr: float) -> dict[str, Any]:
    """The task's data hparams and the µ2Net child recipe at peak `lr` (warmup 10%, cosine, SGD momentum 0.9)."""
    return {**{k: v for k, v in tf.hparams.items() if k.startswith("ds_")}, "ds_image_size": tf.image_size,
            "opt_lr": float(lr), "opt_lr_schedule": "cosine", "opt_lr_warmup_ratio": 0.1, "opt_momentum": 0.9,
            "opt_nesterov": False}


def _train(structure: Structure, frozen: dict[str, Any], trainable: dict[str, Any], data: TaskData,
           hparams: dict[str, Any], tf: TaskFile, *, steps: int, num_validations: int, batch_size: int, seed: int,
           progress: bool | Callable[[int, int, dict], None]) -> ChildResult:
    """Train the trainable slots, keeping the best validation snapshot; `progress=True` draws a bar over the steps."""
    from .child import train_child

    bar = None
    if progress is True:
        from ..utils.progress import progress_bar

        bar = progress_bar(total=steps, desc=f"fine-tuning {tf.task}", unit="step")
        progress = lambda step, total, metrics: bar.update(1)  # noqa: E731
    try:
        return train_child(structure, frozen, trainable, data, hparams, num_validations=num_validations,
                           steps_per_validation=steps // num_validations, batch_size=batch_size, seed=seed,
                           progress=progress or None, preprocessing=tf.preprocessing)
    finally:
        if bar is not None:
            bar.close()


def _variant_components(structure: Structure, old: dict[str, ComponentRef], new_refs: dict[str, ComponentRef],
                        source: ComponentSource | None) -> tuple[list[ComponentRef], list[str]]:
    """The variant's components slot by slot, and the ids it created: a trained component whose id changed is new;
    any other keeps the source task's, referenced in the source repo (`source`) when it is not already elsewhere."""
    refs, created = [], []
    for slot in structure.slots():
        ref = new_refs.get(slot)
        if ref is not None and (slot not in old or ref.id != old[slot].id):
            refs.append(ref)
            created.append(ref.id)
        else:
            o = old[slot]
            refs.append(o if o.source is not None or source is None else replace(o, source=source))
    return refs, created


# ---------------------------------------------------------------------------------------------------
# Pushing a model: a new repo / an existing one (only what it lacks), or a pull request
# ---------------------------------------------------------------------------------------------------


def push_model(model: TaskModel, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
               create_pr: bool = False, commit_message: str | None = None,
               cache_dir: str | os.PathLike | None = None) -> PushResult:
    """`save_pretrained` into a temporary folder, then upload only what `repo_id` lacks (see `TaskModel.push_to_hub`)."""
    from ..publishing.publish import export

    with tempfile.TemporaryDirectory(prefix="mu2hub-push-") as tmp:
        model.save_pretrained(tmp)
        store = LocalStore(tmp)
        if create_pr:
            files = pull_request_files(store, [model.task])
            return open_pull_request(repo_id, files, title=commit_message or f"Add task {model.task}",
                                     description=describe_variant(model), token=token)
        result = export(store, repo_id, token=token, cache_dir=cache_dir, private=private)
        paths = [p for c in result.commits for p in c.paths]
        return PushResult(repo_id, paths, result.bytes, result.commits[-1].oid if result.commits else None)


def describe_variant(model: TaskModel) -> str:
    """The pull request text of a fine-tuned variant: metrics, parameters, bytes, lineage."""
    tf = model.task_file
    new = [c for c in tf.components if c.id in set(tf.lineage.get("created") or [])]
    src = tf.lineage.get("finetuned_from") or {}
    m = tf.metrics
    return "\n".join([
        f"Fine-tuned variant {md_code(tf.task)} of {md_code(src.get('task'))} from {md_code(src.get('repo_id'))} @ "
        f"{md_code(src.get('revision'))}.",
        "",
        f"- test accuracy {m.get('test_accuracy', float('nan')):.4f} (validation {m.get('validation_accuracy', float('nan')):.4f}, "
        f"chance {m.get('chance', float('nan')):.3f}) on {md_code(tf.lineage.get('data'))}",
        f"- trained slots: {', '.join(md_code(s) for s in tf.lineage.get('trained_slots') or [])} "
        f"({md_text(tf.lineage.get('steps'))} steps, lr {md_text(tf.lineage.get('lr'))})",
        f"- activated parameters {tf.activated_params:,}; new {sum(c.params for c in new):,} in {len(new)} components "
        f"({sum(c.bytes for c in new):,} bytes)",
    ])
