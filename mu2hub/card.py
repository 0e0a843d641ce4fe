"""The model card (`README.md`) of a published system, through huggingface_hub's `ModelCard` / `ModelCardData`.

The card is a pure function of the task files and `config.json` at the target (no dates, stable order), so two
exporters that end up with the same set of tasks write byte-identical cards, and an export that changes
nothing uploads no card.
"""

from __future__ import annotations

from typing import Mapping

from .constants import LIBRARY_NAME
from .format import SystemConfig, TaskFile

TAGS = ["mu2hub", "mu2net", "multitask", "evolutionary", "vision-transformer", "sparse-subgraphs", "jax", "flax"]
SYSTEM_FIGURE = "figures/system.png"
PARAMS_FIGURE = "figures/params.png"


def dataset_of(task: str) -> str:
    """The dataset a task's accuracy is measured on: the first part of its name.

    Tasks are named `<dataset>` or `<dataset>/<label>` (`digits`, `shapes/label_shape` -> `shapes`), so tasks that
    label one dataset differently are grouped under it in the card's `datasets`.
    """
    return task.split("/")[0]


def render_card(files: Mapping[str, TaskFile], config: SystemConfig, *, repo_id: str) -> str:
    """Model card text: YAML metadata (library, pipeline tag, tags, datasets, model-index) + a readable page.

    Args:
        files (`Mapping[str, TaskFile]`): every task of the system, in task-stream order.
        config (`SystemConfig`): the system's `config.json`.
        repo_id (`str`): the repo (or folder) name shown in the usage snippet.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .api import summarize

    name = config.name or repo_id.rsplit("/", 1)[-1]
    results = [
        EvalResult(task_type="image-classification", dataset_type=dataset_of(t), dataset_name=t, dataset_split="test",
                   metric_type="accuracy", metric_name="test accuracy", metric_value=round(float(tf.metrics["test_accuracy"]), 6))
        for t, tf in files.items() if isinstance(tf.metrics.get("test_accuracy"), (int, float))
    ]
    data = ModelCardData(
        library_name=LIBRARY_NAME, pipeline_tag="image-classification", tags=list(TAGS),
        datasets=sorted({dataset_of(t) for t in files}) or None, model_name=name, eval_results=results or None,
    )
    info = summarize(dict(files))
    body = "\n".join([
        f"# {name}",
        "",
        *([config.description, ""] if config.description else []),
        f"A µ2Net-style evolved multitask system ([Gesmundo & Dean, 2022](https://arxiv.org/abs/2205.12755)) in the "
        f"mu2hub format: {len(files)} image-classification tasks share one pool of "
        f"{info['components']} ViT components ({info['params']:,} parameters, {info['bytes'] / 1e6:.2f} MB). Each task "
        "activates a *path* through a few of them, and `mu2hub.from_pretrained` downloads only that path.",
        "",
        "## Tasks",
        "",
        _task_table(files, info),
        "",
        "*activated params*: parameters on the task's path; *new params*: parameters the task added to the system; "
        "*download*: the distinct component files `from_pretrained` fetches for it; *shared*: components also on other "
        "tasks' paths.",
        "",
        "## Usage",
        "",
        "```python",
        "import mu2hub",
        "",
        f'model = mu2hub.from_pretrained("{repo_id}", task="{next(iter(files), "TASK")}")  # fetches only this task\'s files',
        "model.predict(image)        # [{'label': ..., 'score': ...}, ...]",
        "model.path_info()           # slots, component ids, activated parameters, bytes",
        "```",
        "",
        "```bash",
        f"mu2hub info {repo_id}                  # per task: accuracy, activated parameters, download MB, sharing",
        f"mu2hub verify {repo_id} --task {next(iter(files), 'TASK')}   # fresh download, ids and probe checked",
        "```",
        "",
        "## The system",
        "",
        f"![Which components each task's path uses]({SYSTEM_FIGURE})",
        "",
        "Rows are tasks in task-stream order, columns the path's slots (embedding, blocks, head). A cell is the "
        "component that task's path uses: the same number in a column is the same component, its colour is the task "
        "that created it (grey: the root model or an earlier path), a bold border marks a component shared by several tasks.",
        "",
        f"![Activated vs new parameters per task]({PARAMS_FIGURE})",
        "",
        "## Files",
        "",
        "`config.json` (shared dimensions), `tasks/<task>.json` (one task's path, labels, preprocessing, metrics, lineage, "
        "sizes and a reproducibility probe), `components/<id[:2]>/<id>.safetensors` (content-addressed: the id is the "
        "sha256 of the file). Adding a task adds files and never rewrites another task's.",
        "",
    ])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _task_table(files: Mapping[str, TaskFile], info: dict) -> str:
    rows = ["| task | test accuracy | activated params | share of system | new params | download MB | shared components |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for t, tf in files.items():
        s = info["tasks"][t]
        acc = tf.metrics.get("test_accuracy")
        new = tf.sizes.get("new_params")
        shared = f"{s['shared_components']}/{s['components']}" + (f" ({', '.join(s['shared_with'])})" if s["shared_with"] else "")
        rows.append(f"| {t} | {'' if acc is None else f'{acc:.4f}'} | {tf.activated_params:,} | {s['share_of_system']:.1%} | "
                    f"{'' if new is None else f'{new:,}'} | {tf.download_bytes / 1e6:.3f} | {shared} |")
    return "\n".join(rows)
