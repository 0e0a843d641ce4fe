"""One progress-bar factory: huggingface_hub's switch (`HF_HUB_DISABLE_PROGRESS_BARS`) silences every bar mu2hub
draws, because no module draws one any other way."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "mu2hub" / "utils" / "progress.py"


def test_no_module_but_the_factory_imports_tqdm():
    found = []
    for path in sorted((ROOT / "mu2hub").rglob("*.py")):
        if path == FACTORY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if module.startswith("tqdm") or "tqdm" in names or any(n.startswith("tqdm") for n in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"draw bars through mu2hub.utils.progress: {found}"


def _bars(env_value: str | None) -> str:
    code = ("import io\nfrom mu2hub.utils.progress import byte_bar, progress_bar\n"
            "out = io.StringIO()\n"
            "bars = [progress_bar(total=3, disable=False, file=out), byte_bar(10, 'x', disable=False),\n"
            "        progress_bar(range(2), disable=False, file=out)]\n"
            "print([b.disable for b in bars])\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env["PYTHONPATH"] = str(ROOT)
    if env_value is not None:
        env["HF_HUB_DISABLE_PROGRESS_BARS"] = env_value
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_hub_switch_silences_every_bar():
    assert _bars("1") == "[True, True, True]"


def test_bars_draw_when_the_switch_is_off():
    assert _bars(None) == "[False, False, False]"
