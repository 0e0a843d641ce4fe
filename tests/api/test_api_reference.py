"""The API reference (`make docs` = docs/api.py): built strictly from the docstrings, every name of `mu2hub.__all__`
on it with its arguments; a renamed or undocumented public name fails the build."""

import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import mu2hub

from locations import REPO as ROOT

BUILD = ROOT / "docs" / "api.py"


def _build(out: Path, *extra: str, cwd: Path = ROOT, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, str(BUILD), str(out), *extra], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_every_public_name_is_on_the_reference_with_its_arguments(tmp_path):
    done = _build(tmp_path / "api")
    assert done.returncode == 0, done.stderr[-3000:]
    page = html.unescape(re.sub(r"<[^>]+>", "", (tmp_path / "api" / "mu2hub.html").read_text()))
    raw = (tmp_path / "api" / "mu2hub.html").read_text()
    for name in mu2hub.__all__:
        assert f'id="{name}"' in raw, f"{name} is not on the API reference"
        obj = getattr(mu2hub, name)
        fn = obj if not inspect.isclass(obj) else None
        if fn is not None:
            for p in inspect.signature(fn).parameters:
                assert re.search(rf"\b{p}\b", page), f"{name}: argument {p} not on the page"
    for method in ("from_pretrained", "save_pretrained", "push_to_hub", "predict"):
        assert f'id="TaskModel.{method}"' in raw
    assert "pretrained_model_name_or_path" in page and "subfolder" in page and "device" in page


def test_a_renamed_or_undocumented_public_name_fails_the_build(tmp_path):
    pkg = tmp_path / "src" / "toy"
    pkg.mkdir(parents=True)
    good = '"""A toy package."""\n__all__ = ["f"]\n\n\ndef f(x, *, y=1):\n    """Add. `x`: a number; `y`: another."""\n    return x + y\n'
    (pkg / "__init__.py").write_text(good)
    assert _build(tmp_path / "ok", "toy", pythonpath=str(tmp_path / "src")).returncode == 0

    cases = {
        "renamed": (good.replace('__all__ = ["f"]', '__all__ = ["f", "g"]'), "g: in __all__ but does not resolve"),
        "undocumented": (good.replace('    """Add. `x`: a number; `y`: another."""\n', ""), "f: no docstring"),
        "argument left out": (good.replace("; `y`: another", ""), "f: docstring does not name y"),
    }
    for what, (source, message) in cases.items():
        (pkg / "__init__.py").write_text(source)
        done = _build(tmp_path / what, "toy", pythonpath=str(tmp_path / "src"))
        assert done.returncode != 0 and message in done.stderr, (what, done.stderr[-2000:])
