"""Evolve a µ2Net system: `python training/evolve.py --config training/configs/quickstart.py --workdir runs/NAME`.

Thin driver (the logic lives in `mu2hub.evolution`): loads a big_vision-style config file (`get_config(arg)`,
`path.py:arg`), then evolves into the run directory. `--resume` continues after an interruption; `--agent`
and `--tasks` run one of several concurrent agents on the same directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
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
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    ap.add_argument("--agent", default="main", help="agent name, for several concurrent agents on one workdir")
    ap.add_argument("--tasks", default=None, help="comma-separated subset of the config's tasks for this agent")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--plan", action="store_true", help="resolve every task and price the run (no training, offline)")
    ap.add_argument("--throughput", type=float, default=None, help="--plan: training images/s per device")
    ap.add_argument("--measure", action="store_true", help="--plan: measure the throughput on this machine's device")
    a = ap.parse_args(argv)
    from mu2hub.errors import Mu2hubError

    if a.plan:
        from mu2hub.plan import format_plan, measure_throughput, plan

        config = load_config(a.config)
        throughput = measure_throughput(config) if a.measure else a.throughput
        if a.measure:
            print(f"measured: {throughput:,.1f} training images/s per device")
        print(format_plan(plan(config, tasks=a.tasks.split(",") if a.tasks else None), throughput))
        return 0
    from mu2hub.evolution.evolve import evolve

    try:
        evolve(load_config(a.config), a.workdir, resume=a.resume, agent=a.agent,
               tasks=a.tasks.split(",") if a.tasks else None, quiet=a.quiet)
    except (Mu2hubError, ValueError, KeyError) as e:
        print(f"evolve: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
