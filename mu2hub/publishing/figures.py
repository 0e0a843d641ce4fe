"""The published figures: the system picture (tasks × slots) and activated vs new parameters per task.

Rendered with matplotlib's object API (no pyplot state, so concurrent exporters in threads are safe) to PNG
bytes without a timestamp: the same task files always give the same bytes, so an unchanged system uploads
no figure.
"""

from __future__ import annotations

import io
import re
from typing import Any, Mapping

from ..utils.extras import require
from ..format.system import TaskFile

GREY = "#d9d9d9"


def mpl(module: str) -> Any:
    """A matplotlib module, or `MissingExtraError` naming the `figures` extra (the base install draws nothing)."""
    return require(f"matplotlib.{module}")


def _slot_columns(files: Mapping[str, TaskFile]) -> list[str]:
    """Every slot any path uses, in forward order (adapters before their block)."""
    layers = max((tf.num_layers for tf in files.values()), default=0)
    adapters = {i for tf in files.values() for i in tf.adapter_layers}
    cols = ["patch_embed", "cls", "pos_embed"]
    for i in range(layers):
        cols += ([f"adapter.{i}"] if i in adapters else []) + [f"block.{i}"]
    return cols + ["norm", "head"]


def _short(slot: str) -> str:
    return re.sub(r"^(block|adapter)\.(\d+)$", lambda m: f"{m.group(1)[0].upper()}{m.group(2)}", slot).replace("patch_embed", "patch").replace("pos_embed", "pos")


def _png(fig, *, dpi: int = 100, tight: bool = False) -> bytes:
    mpl("backends.backend_agg").FigureCanvasAgg(fig)
    buf = io.BytesIO()
    extra = {"bbox_inches": "tight", "pad_inches": 0.04} if tight else {}  # crop to what is drawn (legend below)
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, **extra)
    return buf.getvalue()


PALETTE = [f"C{i}" for i in range(10)] + ["#8c564b", "#e377c2", "#bcbd22", "#17becf"]


def task_colors(tasks: list[str]) -> dict[str, str]:
    """A colour per task by its position: callers pass tasks in a stable order (`publish.card_order`), so a
    refresh that adds tasks keeps every earlier task's colour."""
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tasks)}


def _grid(ax, files: Mapping[str, TaskFile], highlight: str | None = None) -> list:
    """Tasks (rows) × slots (columns), one cell per component a path takes: numbered per column by first use,
    coloured by the task that created it, bold when shared. With `highlight`, that task's row is framed and every
    component off its path is faded, so the same picture shows one path through the system."""
    patches = mpl("patches")
    Patch, Rectangle = patches.Patch, patches.Rectangle

    tasks = list(files)
    cols = _slot_columns(files)
    creator: dict[str, str] = {}
    for t, tf in files.items():
        for cid in tf.lineage.get("created", []) or []:
            creator.setdefault(cid, t)
    users: dict[str, set[str]] = {}
    for t, tf in files.items():
        for c in tf.components:
            users.setdefault(c.id, set()).add(t)
    color = task_colors(tasks)
    chosen = {c.id for c in files[highlight].components} if highlight in files else None
    numbers: list[dict[str, int]] = [{} for _ in cols]
    label_cells = len(tasks) * len(cols) <= 2500
    for r, t in enumerate(tasks):
        slots = files[t].component_map()
        for j, slot in enumerate(cols):
            ref = slots.get(slot)
            if ref is None:
                continue
            n = numbers[j].setdefault(ref.id, len(numbers[j]) + 1)
            shared = len(users[ref.id]) > 1
            faded = chosen is not None and ref.id not in chosen
            ax.add_patch(Rectangle((j + 0.06, r + 0.08), 0.88, 0.84, facecolor=color.get(creator.get(ref.id, ""), GREY),
                                   edgecolor="black", linewidth=1.8 if shared else 0.4, alpha=0.22 if faded else 1.0))
            if label_cells:
                ax.text(j + 0.5, r + 0.5, str(n), ha="center", va="center", fontsize=7, alpha=0.35 if faded else 1.0)
        if chosen is not None and t != highlight:
            k = len({c.id for c in files[t].components} & chosen)
            ax.text(len(cols) + 0.1, r + 0.5, f"shares {k}" if k else "", va="center", fontsize=7)
    if chosen is not None:
        r = tasks.index(highlight)
        ax.add_patch(Rectangle((0, r), len(cols), 1, fill=False, edgecolor="black", linewidth=2.2))
    ax.set_xlim(0, len(cols) + (1.2 if chosen is not None else 0))
    ax.set_ylim(len(tasks), 0)
    ax.set_xticks([j + 0.5 for j in range(len(cols))], [_short(s) for s in cols], fontsize=8, rotation=45, ha="right")
    ax.set_yticks([r + 0.5 for r in range(len(tasks))], tasks, fontsize=8)
    for tick in ax.get_yticklabels():
        if tick.get_text() == highlight:
            tick.set_fontweight("bold")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return [Patch(facecolor=GREY, edgecolor="black", label="root / earlier path")] + [
        Patch(facecolor=color[t], edgecolor="black", label=t) for t in tasks if any(v == t for v in creator.values())]


def system_png(files: Mapping[str, TaskFile]) -> bytes:
    """Tasks (rows, in the given order) × slots (columns): which component each path takes, who created it, what
    is shared. Grey cells: the root model or a retired path."""
    Figure = mpl("figure").Figure

    cols = _slot_columns(files)
    fig = Figure(figsize=(max(6.0, 0.55 * len(cols) + 3.0), max(2.5, 0.42 * len(files) + 1.8)))
    ax = fig.add_subplot()
    legend = _grid(ax, files)
    ax.set_xlabel("slot along the path", fontsize=8)
    n_comp = len({c.id for tf in files.values() for c in tf.components})
    ax.set_title(f"{len(files)} tasks, {n_comp} components: the component each task's path takes per slot\n"
                 "same number in a column = same component · colour = task that created it · bold = shared", fontsize=9)
    ax.legend(handles=legend, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="created by",
              title_fontsize=7)
    fig.tight_layout()
    return _png(fig)


def params_png(files: Mapping[str, TaskFile]) -> bytes:
    """Activated and new parameters of each task's path in task-stream order, with the system's growth."""
    Figure = mpl("figure").Figure

    tasks = list(files)
    activated = [tf.activated_params for tf in files.values()]
    new = [int(tf.sizes.get("new_params") or 0) for tf in files.values()]
    seen: dict[str, int] = {}
    growth = []
    for tf in files.values():
        seen.update({c.id: c.params for c in tf.components})
        growth.append(sum(seen.values()))
    fig = Figure(figsize=(max(6.0, 0.6 * len(tasks) + 3.0), 4.2))
    ax = fig.add_subplot()
    xs = list(range(len(tasks)))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], activated, width, color="#9ecae1", label="activated parameters")
    ax.bar([x + width / 2 for x in xs], new, width, color="#08519c", label="parameters new to the task")
    for x, a, n in zip(xs, activated, new):
        ax.text(x + width / 2, n, f"{n / a:.0%}" if a else "", ha="center", va="bottom", fontsize=7)
    ax.plot(xs, growth, color="#de2d26", marker="o", markersize=3, linewidth=1.2, label="system parameters so far")
    ax.set_xticks(xs, tasks, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("parameters")
    ax.set_title("Parameters per task over the task stream\nactivated vs new to the task (label: new / activated)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


# The Space's view: the system picture with one task's path picked out.


def path_png(files: Mapping[str, TaskFile], task: str, *, width: float = 5.4) -> bytes:
    """`system_png`'s grid (same numbers, colours and borders) with `task`'s row framed and every component off its
    path faded; the right margin says how many components each other task shares with it. Sized for the Space."""
    Figure = mpl("figure").Figure

    fig = Figure(figsize=(width, 0.32 * len(files) + 0.9))
    ax = fig.add_subplot()
    legend = _grid(ax, files, highlight=task)
    n = len({c.id for c in files[task].components}) if task in files else 0
    ax.set_title(f"{task}: its {n} components bright, the rest faded\n"
                 "number = component in that slot · colour = task that created it · bold = shared", fontsize=8)
    ax.tick_params(axis="x", labelsize=6)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(handles=legend, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.05 - 1.1 / (len(files) + 2)),
              ncol=3, frameon=False, title="created by", title_fontsize=6, handlelength=1.2, columnspacing=1.0)
    return _png(fig, dpi=110, tight=True)


def baselines_png(files: Mapping[str, TaskFile]) -> bytes:
    """Evolved test accuracy next to the baselines measured in the same run (same data, same budgets), per task."""
    from matplotlib.figure import Figure

    from .comparison import COLUMNS, LABELS, baselines_of

    tasks = list(files)
    series = [("evolved (µ2Net)", [float(tf.metrics["test_accuracy"]) for tf in files.values()], "#08519c")]
    colors = {"scratch:total": "#fdae6b", "scratch:lineage": "#fee6ce", "finetune:lineage": "#c7e9c0",
              "finetune:total": "#74c476"}
    for name in COLUMNS:
        values = [baselines_of(tf.metrics).get(name) for tf in files.values()]
        if any(v is not None for v in values):
            series.append((LABELS[name], values, colors[name]))
    fig = Figure(figsize=(max(6.0, 1.1 * len(tasks) + 3.0), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (label, values, color) in enumerate(series):
        xs = [x - 0.4 + width * (i + 0.5) for x in range(len(tasks))]
        ax.bar([x for x, v in zip(xs, values) if v is not None], [v for v in values if v is not None], width,
               color=color, edgecolor="#555555", linewidth=0.4, label=label)
    chance = [float(tf.metrics.get("chance") or 0) for tf in files.values()]
    ax.scatter(range(len(tasks)), chance, marker="_", s=400, color="#de2d26", label="chance", zorder=3)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.set_title("Evolved vs the baselines a user would pick instead (same run, held-out test)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    return _png(fig)
