"""docs/ADD_A_TASK.md, run: every command of its ```bash blocks, in order, through the CLI against the loopback Hub, on
a generated `split/class/img` folder (test split given, validation carved); the verdict is the one the page shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

import mu2hub
from mu2hub import cli
from mu2hub.format.system import Dims
from mu2hub.testing import random_system

import locations

DOC = locations.REPO / "docs" / "ADD_A_TASK.md"
REPO = "tutorial/system"
CLASSES = ["small", "medium", "large"]


def doc_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def doc_verdict() -> str:
    """The verdict row the page shows (one place: the page), without the run's numbers."""
    row = re.search(r"^verdict +(.+?)…$", DOC.read_text(), flags=re.M)
    assert row, "docs/ADD_A_TASK.md shows no verdict row"
    return row.group(1)


def write_folder(root: Path) -> Path:
    """`split/class/img`: shapes labelled by size, train 420 (validation carved: 21) and test 60, mixed sizes."""
    data = mu2hub.data.get_task("shapes/label_scale", image_size=16, n_train=700, n_validation=10, n_test=100, seed=5)
    counts = {"train": 420, "test": 60}
    for split, n in counts.items():
        s = getattr(data, split)
        keep = [i for i in range(len(s.labels)) if s.labels[i] // 2 < len(CLASSES)][:n]
        assert len(keep) == n
        for i in keep:
            folder = root / split / CLASSES[s.labels[i] // 2]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(s.images[i]).resize((12 + 4 * (i % 3),) * 2).save(folder / f"{i}.png")
    (root / "test" / "small").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(root / "test" / "small" / "0.png")  # the page's example
    return root


def test_the_tutorial_commands_run_and_give_the_verdict_it_shows(hub, tmp_path, capsys):
    random_system(tmp_path / "sys", dims=Dims(16, 2, 32, 4), image_size=16, num_layers=2, num_tasks=2, num_classes=3)
    hub.commit_folder(REPO, tmp_path / "sys")
    images = write_folder(tmp_path / "my_images")
    commands = doc_commands()
    assert [c.split()[1] for c in commands] == ["tasks", "add-task", "push-task", "validate", "validate", "predict"]

    for command in commands:
        argv = shlex.split(command.replace("org/system", REPO).replace("my_images/", f"{images}/")
                           .replace("runs/my_shapes", str(tmp_path / "runs" / "my_shapes")))
        assert argv[0] == "mu2hub"
        if argv[1] == "add-task":
            argv += ["--cache-dir", str(tmp_path / "c"), "--children-per-generation", "2", "--batch-size", "32"]
        code = cli.main(argv[1:])
        out = capsys.readouterr()
        assert code == 0, (command, out.err[-2000:])
        if argv[1] == "add-task":
            (tmp_path / "add-task.out").write_text(out.out)
            verdict = re.search(r"^verdict +(.+)$", out.out, flags=re.M)
            assert verdict and verdict.group(1).startswith(doc_verdict()), (out.out, doc_verdict())
            assert re.search(r"^scratch \(total\), \d+ steps +[01]\.\d{4}$", out.out, flags=re.M), out.out
            assert re.search(r"^fine-tune \(total\), \d+ steps +[01]\.\d{4}$", out.out, flags=re.M), out.out
            assert re.search(r"^children trained +4$", out.out, flags=re.M), out.out
        if argv[1] == "push-task":
            assert "PR #1 " in out.out  # the page's `--pr 1`
            from huggingface_hub import HfApi

            pr = HfApi().get_discussion_details(REPO, 1)
            texts = [e.content for e in pr.events if getattr(e, "content", None)]
            assert not re.search(r"<[^>]*number[^>]*>", texts[0]), texts[0]  # no unfilled placeholder
            assert f"`mu2hub validate {REPO} --pr 1`" in texts[-1]  # the exact command, once the number exists
        if argv[1] == "validate" and "--merge" in argv:
            assert "MERGED" in out.out
        if argv[1] == "predict":
            assert out.out.split()[0].rstrip(":").endswith("0.png") and any(c in out.out for c in CLASSES)
    assert "my_shapes" in mu2hub.list_tasks(REPO)
