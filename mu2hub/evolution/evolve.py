"""Run an evolution from a config: set-up, multi-host init, progress bars, figures. Drivers call `evolve`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .loop import Agent
from .plots import plot_evolution
from .run import RunDir


def evolve(config: dict[str, Any], workdir: str | os.PathLike, *, resume: bool = False, agent: str = "main",
           tasks: list[str] | None = None, quiet: bool = False) -> RunDir:
    """Evolve `config["tasks"]` (or `tasks`) into the run directory `workdir`; resumable with `resume=True`.

    Several processes may call this on one `workdir` at once with different `agent` names and task lists
    (µ3Net style): each writes only its own state, components are content-addressed, and a task's best path
    is replaced only by one that scores at least as well.
    """
    if config.get("multihost"):
        import jax

        jax.distributed.initialize()
    run = RunDir(workdir)
    run.init_config(config, resume=resume or agent != "main")
    log = (lambda *_: None) if quiet else tqdm.write
    n_tasks = len(tasks if tasks is not None else config["tasks"])
    total = config.get("num_task_iters", 1) * n_tasks * config["generations"] * config["children_per_generation"]
    with tqdm(total=total, desc=f"evolving ({agent})", unit="child", disable=quiet or None) as bar:
        bar.update(min(len([r for r in run.history() if r.get("agent") == agent]), total))

        def report(r: dict[str, Any]) -> None:
            bar.update(1)
            bar.set_postfix(task=r["task"], gen=r["generation"], child=f"{r['child']:.3f}", best=f"{r['best']:.3f}")

        Agent(run, config, agent=agent, tasks=tasks, log=log, report=report).run_all()
    write_figures(run)
    return run


def write_figures(run: RunDir) -> list[Path]:
    """`figures/evolution.png` (accuracy and score per generation) and `figures/params.png` — the same plot, from
    the same function, as the published `figures/params.png` of these tasks."""
    from ..figures import params_png
    from ..metadata import stream_order
    from ..store import atomic_write

    best = run.best_tasks()
    params = run.root / "figures" / "params.png"
    atomic_write(params, params_png({t: best[t] for t in stream_order(best)}))
    return [plot_evolution(run.history(), run.root / "figures" / "evolution.png"), params]
