"""Imports as a fresh interpreter meets them: every module and every lazy public name imports on its own, and the
metadata paths (format, hub, the data registry, images, `mu2hub tasks / info`) never load JAX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mu2hub
from layers import modules

ROOT = Path(__file__).resolve().parents[2]


def _fresh(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=ROOT)


def _groups() -> list[tuple[str, list[str]]]:
    """One interpreter per subpackage (with its modules) or top-level module, then one per lazy public name: each
    of `mu2hub.__all__`'s lazy names must resolve from a bare `import mu2hub`."""
    groups: dict[str, list[str]] = {}
    for m in modules():
        parts = m.split(".")
        groups.setdefault(".".join(parts[:2]), []).append(m)
    out = [(f"import {key}", names) for key, names in sorted(groups.items())]
    lazy = [n for n in mu2hub.__all__ if n in mu2hub._LAZY]
    eager = [n for n in mu2hub.__all__ if n not in lazy]
    out += [(f"mu2hub.{n}", ["mu2hub"]) for n in lazy] + [(" ".join(eager), ["mu2hub"])]
    return out


def test_every_subpackage_and_public_name_imports_cold():
    """No import leans on one an earlier test made; every mu2hub module loaded comes from this tree (a module left at
    an old path must not be found in another installed copy)."""
    code = ("import importlib, json, sys\n"
            "import mu2hub\n"
            "what, names = sys.argv[1], sys.argv[2:]\n"
            "for name in names: importlib.import_module(name)\n"
            "if not what.startswith('import '):\n"
            "    for attr in what.removeprefix('mu2hub.').split(): getattr(mu2hub, attr)\n"
            "print(json.dumps({m: getattr(sys.modules[m], '__file__', None) for m in sys.modules "
            "if m == 'mu2hub' or m.startswith('mu2hub.')}))\n")
    failed = []
    groups = _groups()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # independent interpreters: one per core
        runs = list(pool.map(lambda g: _fresh(code, g[0], *g[1]), groups))
    for (what, _), out in zip(groups, runs):
        if out.returncode != 0:
            failed.append(f"{what}: {out.stderr.strip().splitlines()[-1]}")
            continue
        for m, f in json.loads(out.stdout.splitlines()[-1]).items():
            if f is not None and not Path(f).resolve().is_relative_to(ROOT / "mu2hub"):
                failed.append(f"{what}: {m} loaded from {f}, outside {ROOT / 'mu2hub'}")
    assert not failed, "\n".join(failed)


JAX_FREE = ["mu2hub", "mu2hub.cli", "mu2hub.errors", "mu2hub.constants", "mu2hub.utils", "mu2hub.format",
            "mu2hub.hub", "mu2hub.data", "mu2hub.data.registry", "mu2hub.data.images", "mu2hub.data.resolve"]


def test_metadata_modules_never_import_jax():
    layered = [m for m in modules() if m.startswith(("mu2hub.utils.", "mu2hub.format.", "mu2hub.hub."))]
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax')))\n")
    out = _fresh(code, *JAX_FREE, *layered)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_metadata_commands_never_import_jax(tmp_path):
    """`mu2hub tasks` / `info` (whole system and one task) on a folder; the Hub path is tests/cli/test_cli.py's."""
    from mu2hub.format.system import Dims
    from mu2hub.testing import random_system

    random_system(tmp_path / "sys", dims=Dims(32, 2, 64, 8), image_size=16, num_layers=2, num_tasks=2)
    code = ("import sys\nfrom mu2hub.cli import main\nrc = main(sys.argv[1:])\n"
            "print('JAX', sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax')))\n"
            "sys.exit(rc)\n")
    for args in (["tasks", str(tmp_path / "sys")], ["info", str(tmp_path / "sys")],
                 ["info", str(tmp_path / "sys"), "--task", "task_0"]):
        out = _fresh(code, *args)
        assert out.returncode == 0, out.stderr
        assert "task_0" in out.stdout and out.stdout.rstrip().endswith("JAX []"), out.stdout
