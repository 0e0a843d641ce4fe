"""A user's first minutes, checked: the wheel built from this tree, installed with only its base dependencies into a
fresh virtualenv, loads and predicts a task from a (loopback) Hub repo — with neither transformers nor matplotlib.

Not a pytest module: it needs a package registry (pip installs the base dependencies), which the test suite never
does. `make fresh-install` and `.ci/run` run it; it prints the base install's size (README's install table) and
exits non-zero on any failure. About 1-2 minutes, most of it pip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
sys.path.insert(0, str(ROOT))

from hubserver import HubServer, configure_hf_env  # noqa: E402

REPO = "fresh/system"
EXTRA_FREE = ("transformers", "matplotlib")  # what the base install must neither install nor import

# Run inside the fresh virtualenv: the whole first-hour path in Python, then what the base install refuses by name.
CLIENT = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    import mu2hub
    from mu2hub import TaskModel

    assert mu2hub.__file__.startswith(sys.prefix), f"mu2hub imported from {mu2hub.__file__}, not the fresh venv"
    absent = [m for m in %(extra_free)r if importlib.util.find_spec(m) is not None]
    assert not absent, f"the base install brought {absent}"
    model = mu2hub.from_pretrained(%(repo)r, task="task_0")
    image = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    top = model.predict(image, top_k=2)
    assert [p["label"] for p in top] and abs(sum(p["score"] for p in model.predict(image, top_k=4)) - 1) < 1e-4, top
    again = TaskModel.from_pretrained(%(repo)r, task="task_1")
    assert again.predict([image, image])[0][0]["label"] in again.labels
    loaded = sorted(m for m in %(extra_free)r if m in sys.modules)
    assert not loaded, loaded
    try:
        model.to_transformers("out-hf")
    except mu2hub.MissingExtraError as e:
        assert "pip install 'mu2hub[interop]'" in str(e), e
    else:
        raise AssertionError("to_transformers ran without transformers")
    print("ok", top[0]["label"])
""")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    shown = " ".join(str(c) if "\n" not in str(c) else "<script>" for c in cmd)
    print("$", shown, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {shown}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def build(dist: Path) -> Path:
    """Wheel and sdist from the tree; both must carry LICENSE."""
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(dist)])
    run([sys.executable, "-c", f"from setuptools import build_meta as b; b.build_sdist({str(dist)!r})"], cwd=ROOT)
    wheel, = dist.glob("mu2hub-*.whl")
    sdist, = dist.glob("mu2hub-*.tar.gz")
    with zipfile.ZipFile(wheel) as z:
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in z.namelist()), "LICENSE missing from the wheel"
    with tarfile.open(sdist) as t:
        assert any(n.endswith("/LICENSE") for n in t.getnames()), "LICENSE missing from the sdist"
    return wheel


def size_mb(venv: Path) -> float:
    site, = venv.glob("lib/python*/site-packages")
    return sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mu2hub-fresh-") as tmp:
        tmp = Path(tmp)
        wheel = build(tmp / "dist")
        venv = tmp / "venv"
        bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the fresh venv sees only what it installed
        run([sys.executable, "-m", "venv", str(venv)], env=bare)
        py, cli = venv / "bin" / "python", venv / "bin" / "mu2hub"
        run([str(py), "-m", "pip", "install", "-q", str(wheel)], env=bare, cwd=tmp)
        print(f"base install: {size_mb(venv):.0f} MB in site-packages (pip included)", flush=True)

        from mu2hub.testing import random_system  # the dev environment writes the repo; the fresh one reads it
        from mu2hub.format.system import Dims

        random_system(tmp / "system", dims=Dims(32, 2, 64, 4), image_size=16, num_layers=2, num_tasks=2, num_classes=4)
        with HubServer(tmp / "server") as server:
            restore = configure_hf_env(server.url, tmp / "hf_home")
            try:
                server.create_repo(REPO)
                server.commit_folder(REPO, tmp / "system")
                env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # now with the loopback Hub's
                work = tmp / "work"
                work.mkdir()
                client = CLIENT % {"repo": REPO, "extra_free": EXTRA_FREE}
                print(run([str(py), "-c", client], cwd=work, env=env).stdout.strip())
                from PIL import Image

                Image.new("RGB", (24, 24), (200, 30, 30)).save(work / "red.png")
                for args in (["tasks", REPO], ["info", REPO], ["download", REPO, "--task", "task_0"],
                             ["predict", REPO, "--task", "task_0", "red.png", "--json"]):
                    out = run([str(cli), *args], cwd=work, env=env).stdout
                    print(out.strip().splitlines()[-1] if out.strip() else "(no output)")
                line = json.loads(out.strip().splitlines()[-1])
                assert line["predictions"][0]["label"].startswith("c"), line
            finally:
                restore()
    print("fresh install: wheel -> base install -> from_pretrained + predict from a Hub repo: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
