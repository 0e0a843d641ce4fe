"""The command line speaks in its own words: flags (`--local-files-only`), not Python keywords; `download` says where
the files are; an offline miss lists one file per line."""

from pathlib import Path

from mu2hub import cli
from mu2hub.format.system import Dims
from mu2hub.testing import random_system

REPO = "words/system"


def test_download_prints_where_the_files_are_and_offline_misses_list_files(hub, tmp_path, capsys):
    random_system(tmp_path / "sys", dims=Dims(16, 2, 32, 4), image_size=8, num_layers=2, num_tasks=2, num_classes=3)
    hub.commit_folder(REPO, tmp_path / "sys")
    cache = tmp_path / "cache"
    assert cli.main(["download", REPO, "--task", "task_0", "--cache-dir", str(cache)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    folder = Path(last)
    assert folder.is_absolute() and (folder / "config.json").is_file() and (folder / "tasks" / "task_0.json").is_file()
    assert folder.parent.name == "snapshots" or folder.parent.parent.name == "snapshots"

    # task_1 was never fetched: offline, each missing file on its own line, in the CLI's words
    assert cli.main(["download", REPO, "--task", "task_1", "--cache-dir", str(cache), "--local-files-only"]) == 2
    err = capsys.readouterr().err
    assert "  - tasks/task_1.json" in err.splitlines(), err
    assert "--local-files-only" in err and "local_files_only=True" not in err, err
