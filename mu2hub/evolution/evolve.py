"""Run an evolution from a config: the job's processes, set-up checks, progress bars, figures. Drivers call `evolve`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
from ..inference.compilation import enable_compilation_cache
from ..utils.progress import progress_bar, progress_write
from ..publishing.figures import mpl
from .claim import RunClaim, claim_run
from . import storage
from .cluster import Cluster, connect
from .loop import Agent
from .placement import check_layout
from .plots import plot_evolution
from .run import RunDir


def evolve(config: dict[str, Any], workdir: str | os.PathLike, *, resume: bool = False, agent: str = "main",
           tasks: list[str] | None = None, quiet: bool = False, cluster: Cluster | None = None,
           compilation_cache: str | os.PathLike | bool | None = None) -> RunDir:
    """Evolve `config["tasks"]` (or `tasks`) into the run directory `workdir`; resumable with `resume=True`.

    Several processes may call this on one `workdir` at once with different `agent` names and task lists
    (µ3Net style): each writes only its own state, components are content-addressed, and a task's best path
    is replaced only by one that scores at least as well (under a file lock: checked to work at start).

    Multi-host: every process of the job calls this with the same arguments and its `cluster`
    (`cluster.connect(...)`; `config["multihost"]` connects with auto-detection, as on a TPU pod slice). Before
    anything is written the processes check they run the same command, and the layout the config needs.

    `compilation_cache`: where compiled steps are kept between processes (mu2hub/inference/compilation.py): None (the
    default: `$MU2HUB_COMPILATION_CACHE` or `~/.cache/mu2hub/compilation`), a folder, or False (off). Not part of
    the run's config: a resumed run may use another one.

    Raises:
        JobMismatchError: the processes differ, the layout does not fit, or a resumed run was made by another layout.
        SharedStorageError: the run directory's filesystem lacks what this job needs (docs/TRAINING.md).
        ClusterError: a process stopped answering (every process stops; resume the whole job).
        RunClaimedError: another live process evolves `workdir` as this agent (or as `main`, or this is `main` and
            any agent runs there): refused before anything is written (`mu2hub.evolution.claim`).
    """
    mpl("figure")  # the run ends by drawing its figures: a missing `figures` extra is named now, not hours later
    if cluster is None:
        cluster = connect() if config.get("multihost") else Cluster()
    claims: list[RunClaim] = []  # process 0 writes, so it holds the run directory for the whole job
    cluster.on_primary(lambda: claims.append(claim_run(workdir, agent)), "claiming the run directory")
    try:
        return _evolve(config, workdir, resume=resume, agent=agent, tasks=tasks, quiet=quiet, cluster=cluster,
                       compilation_cache=compilation_cache)
    finally:
        for claim in claims:
            claim.release()


def _evolve(config: dict[str, Any], workdir: str | os.PathLike, *, resume: bool, agent: str, tasks: list[str] | None,
            quiet: bool, cluster: Cluster, compilation_cache: str | os.PathLike | bool | None) -> RunDir:
    enable_compilation_cache(compilation_cache)  # after connecting: it must not start JAX's backend before that
    if "exchange_chunk_bytes" in config:
        cluster = dataclasses.replace(cluster, chunk_bytes=int(config["exchange_chunk_bytes"]))
    # the same command, and equally many devices each (placement and data sharding count on it)
    cluster.check_same({"config": config, "agent": agent, "tasks": tasks, "resume": resume,
                        "devices": jax.local_device_count()}, "command")
    check_layout(config, cluster.process_count)
    concurrent = agent != "main"
    run = RunDir(workdir, writer=cluster.is_primary, concurrent=concurrent)

    def prepare() -> None:
        storage.check_rename(run.root)
        if concurrent:
            storage.check_locks(run.root)
        run.init_config(config, resume=resume or concurrent)

    cluster.on_primary(prepare, "preparing the run directory")
    if not cluster.is_primary:
        run.init_config(config, resume=True)  # a read-only view: records the config, touches nothing
    storage.check_shared(run.root, cluster)
    quiet = quiet or not cluster.is_primary
    log = (lambda *_: None) if quiet else progress_write
    n_tasks = len(tasks if tasks is not None else config["tasks"])
    total = config.get("num_task_iters", 1) * n_tasks * config["generations"] * config["children_per_generation"]
    with progress_bar(total=total, desc=f"evolving ({agent})", unit="child", disable=quiet or None) as bar:
        if not quiet:
            bar.update(min(len([r for r in run.history() if r.get("agent") == agent]), total))

        def report(r: dict[str, Any]) -> None:
            bar.update(1)
            bar.set_postfix(task=r["task"], gen=r["generation"], child=f"{r['child']:.3f}", best=f"{r['best']:.3f}")

        Agent(run, config, agent=agent, tasks=tasks, log=log, report=report, cluster=cluster).run_all()
    if cluster.is_primary:
        write_figures(run)
    return run


def write_figures(run: RunDir) -> list[Path]:
    """`figures/evolution.png` (accuracy and score per generation), `figures/params.png` — the same plot, from
    the same function, as the published `figures/params.png` of these tasks — and, when baselines were measured,
    `figures/baselines.png` (evolved vs each baseline per task)."""
    from ..publishing.figures import baselines_png, params_png
    from ..hub.metadata import stream_order
    from ..utils.atomic import atomic_write
    from ..publishing.comparison import baselines_of

    best = run.best_tasks()
    ordered = {t: best[t] for t in stream_order(best)}
    out = [plot_evolution(run.history(), run.root / "figures" / "evolution.png"), run.root / "figures" / "params.png"]
    atomic_write(out[1], params_png(ordered))
    if any(baselines_of(tf.metrics) for tf in ordered.values()):
        out.append(run.root / "figures" / "baselines.png")
        atomic_write(out[2], baselines_png(ordered))
    return out
