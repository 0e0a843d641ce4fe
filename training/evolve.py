"""Evolve a µ2Net system: `python training/evolve.py --config training/configs/quickstart.py --workdir runs/NAME`.

Thin driver (the logic lives in `mu2hub.evolution`): loads a big_vision-style config file (`get_config(arg)`,
`path.py:arg`), then evolves into the run directory. `--resume` continues after an interruption; `--agent`
and `--tasks` run one of several concurrent agents on the same directory. Multi-host: every process runs the
same command; `--coordinator HOST:PORT --num-processes N --process-id I` form the job by hand (TPU pod slices,
Slurm and Open MPI are detected without them when the config says `multihost`). docs/TRAINING.md has recipes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback
from pathlib import Path


def load_config(spec: str) -> dict:
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("mu2hub_config", path)
    if module_spec is None or module_spec.loader is None:
        raise SystemExit(f"cannot load config file {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # a config file is the user's own Python, as in big_vision
    return module.get_config(arg or None).to_dict()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True, help="config file, optionally with ':arg' (e.g. quickstart.py:runlocal)")
    ap.add_argument("--workdir", type=Path, help="the run directory (required, except with --plan)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    ap.add_argument("--agent", default="main", help="agent name, for several concurrent agents on one workdir")
    ap.add_argument("--tasks", default=None, help="comma-separated subset of the config's tasks for this agent")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--compilation-cache", default=None, metavar="DIR|off",
                    help="folder for compiled steps, or 'off' (default: $MU2HUB_COMPILATION_CACHE or "
                         "~/.cache/mu2hub/compilation)")
    ap.add_argument("--baselines", default=None, metavar="LIST|all|none",
                    help="baselines trained per task after its evolution, e.g. 'scratch:total,finetune:lineage' "
                         "(default: the config's `baselines`; docs/TRAINING.md \"Baselines\")")
    ap.add_argument("--plan", action="store_true", help="resolve every task and price the run (no training, offline)")
    ap.add_argument("--throughput", type=float, default=None, help="--plan: training images/s per device")
    ap.add_argument("--measure", action="store_true", help="--plan: measure the throughput on this machine's device")
    job = ap.add_argument_group("multi-host job (else auto-detected when the config sets multihost)")
    job.add_argument("--coordinator", default=None, help="HOST:PORT of process 0, which hosts the coordinator")
    job.add_argument("--num-processes", type=int, default=None)
    job.add_argument("--process-id", type=int, default=None)
    job.add_argument("--coordinator-timeout", type=float, default=300.0, help="seconds to wait for the job to form")
    a = ap.parse_args(argv)
    from mu2hub.errors import Mu2hubError

    if a.plan:
        from mu2hub.evolution.plan import format_plan, measure_throughput, plan

        config = load_config(a.config)
        throughput = measure_throughput(config) if a.measure else a.throughput
        if a.measure:
            print(f"measured: {throughput:,.1f} training images/s per device")
        print(format_plan(plan(config, tasks=a.tasks.split(",") if a.tasks else None), throughput))
        return 0
    if a.workdir is None:
        ap.error("--workdir is required to evolve (only --plan runs without one)")
    from mu2hub.evolution.cluster import connect
    from mu2hub.evolution.evolve import evolve

    config = load_config(a.config)
    if a.baselines is not None:
        config["baselines"] = a.baselines
    multihost = bool(config.get("multihost") or a.coordinator or a.num_processes)
    try:
        cluster = connect(a.coordinator, a.num_processes, a.process_id, timeout_s=a.coordinator_timeout) if multihost else None
        evolve(config, a.workdir, resume=a.resume, agent=a.agent, tasks=a.tasks.split(",") if a.tasks else None,
               quiet=a.quiet, cluster=cluster,
               compilation_cache=False if a.compilation_cache == "off" else a.compilation_cache)
    except (Mu2hubError, ValueError, KeyError) as e:
        print(f"evolve: error: {e}", file=sys.stderr)
        return _stop(2, multihost)
    except Exception:
        if not multihost:
            raise
        traceback.print_exc()
        return _stop(1, multihost)
    return 0


def _stop(code: int, multihost: bool) -> int:
    """Leave a failed multi-host job at once: a normal exit would wait for the other processes at JAX's shutdown
    barrier, and they for this one; exiting closes its connections, so their next exchange fails within seconds."""
    if multihost:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
