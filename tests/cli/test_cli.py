"""The command line as a Hub user meets it: fast metadata commands without JAX, batch predict, evaluate, errors that
say what to do. Against the tiny evolved system on the loopback Hub (`evolved`, conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mu2hub
from mu2hub import cli
from mu2hub.constants import DEFAULT_TOP_K

from locations import REPO as ROOT


def _run_without_jax(args: list[str]) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom mu2hub.cli import main\nrc = main(sys.argv[1:])\n"
            "loaded = sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'flax', 'optax')))\n"
            "print('JAX-MODULES', loaded)\nprint('NUMPY', 'numpy' in sys.modules)\nsys.exit(rc)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("command", ["tasks", "info", "info-task", "download"])
def test_metadata_commands_never_import_jax(evolved, tmp_path, command):
    args = {"tasks": ["tasks", evolved.repo], "info": ["info", evolved.repo],
            "info-task": ["info", evolved.repo, "--task", "digits"],
            "download": ["download", evolved.repo, "--task", "digits", "--cache-dir", str(tmp_path / "c")]}[command]
    out = _run_without_jax(args)
    assert out.returncode == 0, out.stderr
    assert "JAX-MODULES []" in out.stdout, out.stdout
    if command in ("tasks", "info"):  # listings touch no tensor: numpy (~0.07 s of import) stays out too
        assert "NUMPY False" in out.stdout, out.stdout
    if command == "tasks":
        assert out.stdout.split("JAX-MODULES")[0].split() == sorted(evolved.tasks)
    if command == "download":  # what it fetched is what from_pretrained needs: it then loads offline
        model = mu2hub.from_pretrained(evolved.repo, task="digits", cache_dir=tmp_path / "c", local_files_only=True)
        assert f"{len(model.components)} components" in out.stdout


def test_version_and_one_top_k_default(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"mu2hub {mu2hub.__version__}"
    parser = cli.build_parser()
    assert parser.parse_args(["predict", "org/x", "--task", "t", "a.png"]).top_k == DEFAULT_TOP_K == 5
    import inspect

    assert inspect.signature(mu2hub.TaskModel.predict).parameters["top_k"].default == DEFAULT_TOP_K


def _rows(out: str) -> list[list[str]]:
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[2:] if line.strip() and not line.startswith("system")]


def test_info_task_agrees_with_info(evolved, capsys):
    assert cli.main(["info", evolved.repo]) == 0
    whole = {r[0]: r for r in _rows(capsys.readouterr().out)}
    assert sorted(whole) == sorted(evolved.tasks)
    for t in evolved.tasks:
        assert cli.main(["info", evolved.repo, "--task", t]) == 0
        (row,) = _rows(capsys.readouterr().out)
        assert row == whole[t]  # sharing is computed over every task either way
    info = mu2hub.system_info(evolved.repo, tasks=["digits"])
    assert list(info["tasks"]) == ["digits"] and info["tasks"]["digits"] == mu2hub.system_info(evolved.repo)["tasks"]["digits"]


def test_errors_say_what_to_do(evolved, capsys, tmp_path):
    for path in ("./no/such/dir", "no/such/dir", str(tmp_path / "absent")):
        assert cli.main(["tasks", path]) == 2
        err = capsys.readouterr().err
        assert f"{path}: no such folder" in err and "repo id such as org/name" in err
    with pytest.raises(mu2hub.TaskNotFoundError, match=r"\(did you mean 'digits'\?\); available tasks: digits, shapes/label_scale"):
        mu2hub.from_pretrained(evolved.repo, task="digit")
    assert cli.main(["download", evolved.repo, "--task", "shapes/label_scal"]) == 2
    assert "did you mean 'shapes/label_scale'" in capsys.readouterr().err
    with pytest.raises(mu2hub.TaskNotFoundError, match=r"no task 'DIGITS' .*\(did you mean 'digits'\?\)"):  # case
        mu2hub.from_pretrained(evolved.repo, task="DIGITS")
    with pytest.raises(mu2hub.TaskRequiredError, match=r'say which to load: task="digits".*tasks="all".*digits, shapes/label_scale'):
        mu2hub.from_pretrained(evolved.repo)
    with pytest.raises(TypeError):  # what calling without a task always raised: old except clauses still work
        mu2hub.from_pretrained(evolved.folder)
    with pytest.raises(ValueError, match="not both"):
        mu2hub.from_pretrained(evolved.repo, task="digits", tasks=["digits"])


def _digit_folder(root: Path, n: int = 7) -> list[Path]:
    test = mu2hub.data.get_task("digits").test
    paths = []
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(sub / f"{i}.png")
        Image.fromarray(test.images[i]).resize((16, 16)).save(paths[-1])
    return paths


def test_predict_json_on_a_folder_in_batches(evolved, tmp_path, capsys):
    paths = _digit_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")  # not an image suffix: not an input
    code = cli.main(["predict", evolved.repo, "--task", "digits", "--json", "--batch-size", "3", str(tmp_path / "imgs")])
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1  # one unreadable file: reported, the rest still answered
    assert [r["input"] for r in rows] == sorted(str(p) for p in [*paths, tmp_path / "imgs/b/broken.png"])
    model = mu2hub.from_pretrained(evolved.repo, task="digits")
    for r in rows:
        if r["input"].endswith("broken.png"):
            assert "Could not read" in r["error"]
            continue
        expected = model.predict(Image.open(r["input"]))
        assert [p["label"] for p in r["predictions"]] == [p["label"] for p in expected]
        np.testing.assert_allclose([p["score"] for p in r["predictions"]], [p["score"] for p in expected], rtol=1e-5)
        assert len(r["predictions"]) == DEFAULT_TOP_K
    # plain files and text output; a missing input fails before the model loads
    assert cli.main(["predict", evolved.repo, "--task", "digits", "--top-k", "2", str(paths[0])]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{paths[0]}: ") and line.count("(") == 2
    assert cli.main(["predict", evolved.repo, "--task", "digits", str(tmp_path / "missing.png")]) == 2
    assert "missing.png: no such file or folder" in capsys.readouterr().err


def test_predict_a_dataset_split(evolved, tmp_path, capsys):
    folder = tmp_path / "ds"
    test = mu2hub.data.get_task("digits").test
    for i in range(12):
        d = folder / "test" / str(int(test.labels[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i]).save(d / f"{i}.png")
    for i in range(12, 24):  # a train split too, so the folder is a dataset with splits
        d = folder / "train" / str(int(test.labels[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i]).save(d / f"{i}.png")
    assert cli.main(["predict", evolved.repo, "--task", "digits", "--json", f"imagefolder:{folder}"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    data = mu2hub.data.get_task(f"imagefolder:{folder}")
    assert len(rows) == len(data.test) and rows[0]["input"] == f"imagefolder:{folder}[test][0]"
    model = mu2hub.from_pretrained(evolved.repo, task="digits")
    expected = model.predict(list(data.test.images))
    assert [r["predictions"][0]["label"] for r in rows] == [e[0]["label"] for e in expected]


def test_evaluate_cli_reproduces_the_recorded_accuracy(evolved, capsys):
    assert cli.main(["evaluate", evolved.repo, "--task", "digits", "--data", "digits"]) == 0
    out = capsys.readouterr().out
    recorded = evolved.files["digits"].metrics["test_accuracy"]
    assert f"recorded {recorded:.4f} (reproduced)" in out and f"accuracy {recorded:.4f}" in out


def test_evaluate_cli_data_kwargs(evolved, capsys):
    task = "shapes/label_scale"
    kwargs = json.dumps(evolved.config["task_kwargs"][task])
    assert cli.main(["evaluate", evolved.repo, "--task", task, "--data", task, "--data-kwargs", kwargs,
                     "--split", "validation"]) == 0
    out = capsys.readouterr().out
    assert f"{task} on {task} [validation]" in out and "(reproduced)" in out
    assert cli.main(["evaluate", evolved.repo, "--task", task, "--data", task, "--data-kwargs", "{n_test: 3}"]) == 2
    assert "--data-kwargs: not JSON" in capsys.readouterr().err

