"""Pictures of a run: score per generation per task, and parameters per task over the task stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..format import TaskFile  # noqa: E402


def plot_evolution(history: list[dict[str, Any]], out: str | Path) -> Path:
    """Every child's score (dots) and the best-so-far (line) per task, against the run's generation counter."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    tasks = list(dict.fromkeys(r["task"] for r in history))
    gen_index: dict[tuple, int] = {}
    for r in history:
        gen_index.setdefault((r.get("agent"), r["loop"], r["generation"]), len(gen_index))
    for i, task in enumerate(tasks):
        rows = [r for r in history if r["task"] == task and r["score"] is not None and r["score"] == r["score"]]
        xs = [gen_index[(r.get("agent"), r["loop"], r["generation"])] for r in rows]
        color = f"C{i % 10}"
        ax.scatter(xs, [r["score"] for r in rows], s=12, color=color, alpha=0.5)
        best, line = float("-inf"), []
        for x, r in zip(xs, rows):
            if r["kept"]:
                best = max(best, r["score"])
            line.append(best if best > float("-inf") else None)
        ax.step([x for x, y in zip(xs, line) if y is not None], [y for y in line if y is not None], where="post",
                color=color, label=task)
    ax.set_xlabel("generation (across the task stream)")
    ax.set_ylabel("score (dots: children; line: best kept)")
    ax.set_title("µ2Net evolution: score per generation per task")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_params(files: list[TaskFile], out: str | Path) -> Path:
    """Activated vs new parameters of each task's best path, in task-stream order."""
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [tf.task for tf in files]
    activated = [tf.activated_params for tf in files]
    new = [tf.sizes.get("new_params", 0) for tf in files]
    xs = range(len(files))
    ax.bar(xs, activated, color="#9ecae1", label="activated parameters")
    ax.bar(xs, new, color="#08519c", label="parameters new to the task")
    ax.set_xticks(list(xs), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("parameters")
    ax.set_title("parameters per task over the task stream")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
