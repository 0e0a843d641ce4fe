"""The model card (`README.md`) of a published system, through huggingface_hub's `ModelCard` / `ModelCardData`.

The card is a pure function of the task files, the root path and `config.json` at the target (no dates, stable
order), so two exporters that end up with the same set of tasks write byte-identical cards, and an export that
changes nothing uploads no card. What it states is what the files say, checked by `tests/publishing/test_card.py`:

- one model-index result per task (`dataset.config` = the task name, so huggingface_hub never merges two tasks'
  results), its test accuracy and how many test images it was measured on;
- `datasets:` lists real Hub dataset ids only (`mu2hub.format.datasource`); bundled or generated data is described in
  the page instead;
- `license`, and `base_model` + `base_model_relation` when tasks were fine-tuned from (or reference components
  of) another repo, as PEFT writes them for adapters;
- component counts and bytes over every file in `components/` (the tasks' paths and the root path).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..constants import LIBRARY_NAME
from ..format.datasource import data_source
from ..format.system import ComponentRef, SystemConfig, TaskFile
from ..hub.metadata import sharing_text, summarize, test_accuracy
from ..utils.text import md_code, md_text, one_line, py_string

TAGS = ["mu2hub", "mu2net", "multitask", "evolutionary", "vision-transformer", "sparse-subgraphs", "jax", "flax"]
SYSTEM_FIGURE = "figures/system.png"
PARAMS_FIGURE = "figures/params.png"
DEFAULT_LICENSE = "apache-2.0"


def display_name(text: str | None) -> str:
    """A system's name as the card (title, model-index name) and the Space header show it: its repo id or the run's
    name, reduced to the characters those use and bounded, since it may come from a stranger's `config.json`."""
    clean = re.sub(r"[^\w.\-/ ]+", "", str(text or "")).strip(" /")[:96]
    return clean or "mu2hub system"


def install_and_usage(repo_id: str, task: str) -> list[str]:
    """The card's install line and 3-line usage snippet for one task of `repo_id` (Markdown lines)."""
    return ["```bash", "pip install mu2hub", "```", "", "```python",
            "from mu2hub import TaskModel",
            f'model = TaskModel.from_pretrained("{repo_id}", task="{task}")',
            'print(model.predict("image.png"))  # [{\'label\': ..., \'score\': ...}, ...]',
            "```"]


def card_task_order(text: str) -> list[str]:
    """The tasks of an existing card, in its order (model-index results), so a refresh keeps rows and colours."""
    from huggingface_hub import ModelCard

    try:
        results = ModelCard(text, ignore_metadata_errors=True).data.eval_results or []
    except Exception:  # not a card we can read: no order to keep
        return []
    return list(dict.fromkeys(r.dataset_config or r.dataset_name for r in results if r.dataset_config or r.dataset_name))


def pool(files: Mapping[str, TaskFile], root: TaskFile | None = None) -> dict[str, Any]:
    """The component files a system stores (`components/`) and the ones it references elsewhere.

    Returns `stored` ({id: ComponentRef} over the tasks' paths and the root path), `root_only` (stored ids no task
    uses), `referenced` ({id: ComponentRef} living in other repos), `params` / `bytes` of the stored ones.
    """
    paths = [*files.values(), *([root] if root is not None else [])]
    stored: dict[str, ComponentRef] = {c.id: c for tf in paths for c in tf.components if c.source is None}
    referenced = {c.id: c for tf in paths for c in tf.components if c.source is not None and c.id not in stored}
    on_tasks = {c.id for tf in files.values() for c in tf.components}
    return {"stored": stored, "root_only": [i for i in stored if i not in on_tasks], "referenced": referenced,
            "params": sum(c.params for c in stored.values()), "bytes": sum(c.bytes for c in stored.values())}


def base_models(files: Mapping[str, TaskFile], repo_id: str) -> tuple[list[str], str | None]:
    """Other repos these tasks were fine-tuned from, contributed to, or reference components of; and the relation."""
    from ..hub.store import looks_like_repo_id

    bases: dict[str, str] = {}
    for tf in files.values():
        tuned = (tf.lineage.get("finetuned_from") or {}).get("repo_id")
        contributed = (tf.lineage.get("base") or {}).get("repo_id")
        for repo, relation in ((tuned, "finetune"), (contributed, "adapter"),
                               *((c.source.repo_id, "finetune") for c in tf.components if c.source is not None)):
            if repo and repo != repo_id and looks_like_repo_id(str(repo)):
                bases.setdefault(str(repo), relation)
    names = sorted(bases)
    return names, (bases[names[0]] if len(names) == 1 else None)


def render_card(files: Mapping[str, TaskFile], config: SystemConfig, *, repo_id: str, root: TaskFile | None = None,
                license: str = DEFAULT_LICENSE, name: str | None = None) -> str:
    """Model card text: YAML metadata (library, license, pipeline tag, datasets, base model, model-index) + a page.

    Args:
        files (`Mapping[str, TaskFile]`): every task of the system, in the order the card shows them.
        config (`SystemConfig`): the system's `config.json`.
        repo_id (`str`): the repo (or folder) the card is for: its name, and the usage snippet.
        root (`TaskFile`, *optional*): the root path (`root.json`), whose components are stored too.
        license (`str`, defaults to `"apache-2.0"`): the card's license id.
        name (`str`, *optional*): the title and model-index name; defaults to `repo_id` (an export to a folder passes
            the run's name, `config.name`, rather than the folder's).
    """
    from huggingface_hub import ModelCard, ModelCardData

    name = display_name(name or repo_id or config.name)
    sources = {t: data_source(t, tf.lineage) for t, tf in files.items()}
    bases, relation = base_models(files, repo_id)
    data = ModelCardData(
        library_name=LIBRARY_NAME, license=license, pipeline_tag="image-classification", tags=list(TAGS),
        datasets=sorted({s.hub_id for s in sources.values() if s.hub_id}) or None,
        base_model=(bases[0] if len(bases) == 1 else bases) or None, model_name=name,
        eval_results=_eval_results(files, sources) or None,
        **({"base_model_relation": relation} if relation else {}),
    )
    info, stored = summarize(dict(files)), pool(files, root)
    first = next(iter(files), "TASK")
    body = "\n".join([
        f"# {name}", "",
        *([config.description, ""] if config.description else []),
        _intro(files, stored), "",
        *_lineage(files),
        "## Tasks", "",
        _task_table(files, info, sources), "",
        "*test accuracy*: on the task's held-out test split (images counted); *activated params*: parameters on the "
        "task's path; *new params*: parameters the task added; *download*: the distinct component files "
        "`from_pretrained` fetches for it; *shared*: components also on other tasks' paths (and components "
        "referenced from another repo).", "",
        "## Data", "",
        *[f"- {', '.join(md_code(t) for t in ts)}: {desc}" for desc, ts in _by_description(sources).items()], "",
        "## Usage", "",
        *install_and_usage(repo_id, first), "",
        "Every task, and how the numbers above were measured:", "",
        "```python",
        "import mu2hub", "",
        f'model = mu2hub.from_pretrained("{repo_id}", task={py_string(first)})  # fetches only this task\'s files',
        "model.predict(image)        # [{'label': ..., 'score': ...}, ...]",
        f'model.evaluate({py_string(_data_hint(first, files.get(first)))})  # reproduces the test accuracy above',
        f'every = mu2hub.from_pretrained("{repo_id}", tasks="all")  # shared components held once',
        "every.predict_all(image)    # {task: [{'label': ..., 'score': ...}, ...]}",
        "```", "",
        "```bash",
        f"mu2hub info {repo_id}                  # per task: accuracy, activated parameters, download MB, sharing",
        f"mu2hub verify {repo_id} --task {first}   # fresh download, ids and probe checked",
        "```", "",
        "## The system", "",
        f"![Which components each task's path uses]({SYSTEM_FIGURE})", "",
        "Rows are tasks (in the order of the table above; a new task is added last), columns the path's slots "
        "(embedding, blocks, head). A cell is the component that task's path uses: the same number in a column is the "
        "same component, its colour is the task that created it (grey: the root model or an earlier path), a bold "
        "border marks a component shared by several tasks.", "",
        f"![Activated vs new parameters per task]({PARAMS_FIGURE})", "",
        "## Files", "",
        "`config.json` (shared dimensions), `tasks/<task>.json` (one task's path, labels, preprocessing, metrics, lineage, "
        "sizes and a reproducibility probe), `components/<id[:2]>/<id>.safetensors` (content-addressed: the id is the "
        "sha256 of the file)" + (", `root.json` (the root path: a parent for new tasks)" if root is not None else "")
        + ". Adding a task adds files and never rewrites another task's.", "",
    ])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _eval_results(files: Mapping[str, TaskFile], sources: Mapping[str, Any]) -> list[Any]:
    from huggingface_hub import EvalResult

    out = []
    for t, tf in files.items():
        acc = test_accuracy(tf)
        if acc is None:
            continue
        n = tf.metrics.get("num_test_examples")
        src = sources[t]
        out.append(EvalResult(
            task_type="image-classification", task_name="Image Classification",
            dataset_type=src.model_index_type, dataset_name=one_line(f"{t} ({src.name})"), dataset_config=t,
            dataset_split="test", metric_type="accuracy", metric_value=round(acc, 6),
            metric_name=f"test accuracy ({n:,} images)" if isinstance(n, int) else "test accuracy"))
    return out


def _intro(files: Mapping[str, TaskFile], stored: dict[str, Any]) -> str:
    n_root = len(stored["root_only"])
    text = (f"A µ2Net-style evolved multitask system ([Gesmundo & Dean, 2022](https://arxiv.org/abs/2205.12755)) in the "
            f"mu2hub format: {len(files)} image-classification task{'s' if len(files) != 1 else ''} over one pool of "
            f"{len(stored['stored'])} ViT component files in `components/` ({stored['params']:,} parameters, "
            f"{stored['bytes'] / 1e6:.3f} MB)")
    text += (f", {len(stored['stored']) - n_root} of them on the tasks' paths and {n_root} only on the root path "
             "(`root.json`, a parent for new tasks)." if n_root else ".")
    refs = stored["referenced"]
    if refs:
        repos = sorted({f"{c.source.repo_id}@{c.source.revision[:8]}" for c in refs.values()})
        text += (f" {len(refs)} more component{'s are' if len(refs) != 1 else ' is'} referenced from "
                 f"{', '.join(md_code(r) for r in repos)} at that pinned commit and not stored here.")
    return text + (" Each task activates a *path* through a few components, and `mu2hub.from_pretrained` downloads "
                   "only that path.")


def _lineage(files: Mapping[str, TaskFile]) -> list[str]:
    lines = []
    for t, tf in files.items():
        src = tf.lineage.get("finetuned_from")
        if src:
            new = [c for c in tf.components if c.source is None]
            ref = [c for c in tf.components if c.source is not None]
            slots = ", ".join(md_code(s) for s in tf.lineage.get("trained_slots") or [])
            lines.append(f"- {md_code(t)}: fine-tuned from task {md_code(src.get('task'))} of {md_code(src.get('repo_id'))} @ "
                         f"{md_code(str(src.get('revision'))[:12])} on {data_source(t, tf.lineage).name} "
                         f"({md_text(tf.lineage.get('steps'))} steps, lr {md_text(tf.lineage.get('lr'))}; trained "
                         f"{slots}): {len(new)} components stored here, {len(ref)} referenced from the source.")
        base = tf.lineage.get("base")
        if base:
            lines.append(f"- {md_code(t)}: evolved with `mu2hub add-task` on {md_code(base.get('repo_id'))} @ "
                         f"{md_code(str(base.get('revision'))[:12])} (parent task "
                         f"{md_code(tf.lineage.get('parent_task') or 'root')}).")
    return ["## Lineage", "", *lines, ""] if lines else []


def _task_table(files: Mapping[str, TaskFile], info: dict, sources: Mapping[str, Any]) -> str:
    rows = ["| task | data | test accuracy | activated params | share of system | new params | download MB | shared components |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    for t, tf in files.items():
        s = info["tasks"][t]
        acc, n = tf.metrics.get("test_accuracy"), tf.metrics.get("num_test_examples")
        acc_text = "" if acc is None else f"{acc:.4f}" + (f" ({n:,} images)" if isinstance(n, int) else "")
        new = tf.sizes.get("new_params")
        rows.append(f"| {md_text(t)} | {sources[t].name} | {acc_text} | {tf.activated_params:,} | {s['share_of_system']:.1%} | "
                    f"{'' if new is None else f'{new:,}'} | {tf.download_bytes / 1e6:.3f} | {md_text(sharing_text(s), 2000)} |")
    return "\n".join(rows)


def _by_description(sources: Mapping[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t, s in sources.items():
        out.setdefault(s.description, []).append(t)
    return out


def _data_hint(task: str, tf: TaskFile | None) -> str:
    from ..format.datasource import public_name

    return public_name(str((tf.lineage if tf else {}).get("data") or task))
