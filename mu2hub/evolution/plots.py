"""Pictures of a run: validation accuracy (and score) per generation per task.

The run's parameters-per-task figure is the published one (`mu2hub.publishing.figures.params_png`), so one name is one plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..publishing.figures import mpl

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_evolution(history: list[dict[str, Any]], out: str | Path) -> Path:
    """`evolution_figure(history)` written (atomically) to `out` as PNG."""
    return _save(evolution_figure(history), out)


def evolution_figure(history: list[dict[str, Any]]) -> Figure:
    """Per task against the run's generation counter: validation accuracy (the number users compare with the
    card's test accuracy) on top, the µ2Net score (what selection maximises) below as the secondary view.

    Dots are children; the line follows the path kept as best (highest score), so in the top panel it shows that
    path's accuracy, which can dip when a smaller path with a higher score wins.
    """
    fig = mpl("figure").Figure(figsize=(8, 6.2))  # the object API: no pyplot state, safe in threads
    acc_ax, score_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    tasks = list(dict.fromkeys(r["task"] for r in history))
    gen_index: dict[tuple, int] = {}
    for r in history:
        gen_index.setdefault((r.get("agent"), r["loop"], r["generation"]), len(gen_index))
    for i, task in enumerate(tasks):
        rows = [r for r in history if r["task"] == task and _finite(r.get("score")) and _finite(r.get("quality"))]
        xs = [gen_index[(r.get("agent"), r["loop"], r["generation"])] for r in rows]
        color = f"C{i % 10}"
        acc_ax.scatter(xs, [r["quality"] for r in rows], s=12, color=color, alpha=0.5)
        score_ax.scatter(xs, [r["score"] for r in rows], s=8, color=color, alpha=0.4)
        best, line = None, []
        for r in rows:
            if r["kept"] and (best is None or r["score"] > best["score"]):
                best = r
            line.append(best)
        steps = [(x, b) for x, b in zip(xs, line) if b is not None]
        acc_ax.step([x for x, _ in steps], [b["quality"] for _, b in steps], where="post", color=color, label=task)
        score_ax.step([x for x, _ in steps], [b["score"] for _, b in steps], where="post", color=color)
    acc_ax.set_ylabel("validation accuracy")
    acc_ax.set_title("µ2Net evolution: validation accuracy per generation per task\n"
                     "dots: children; line: the best path kept (by score)", fontsize=10)
    acc_ax.legend(fontsize=8, loc="lower right")
    score_ax.set_ylabel("score")
    score_ax.set_xlabel("generation (across the task stream)")
    for ax in (acc_ax, score_ax):
        ax.grid(alpha=0.3)
    return fig


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and v == v


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    mpl("backends.backend_agg").FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    return out
