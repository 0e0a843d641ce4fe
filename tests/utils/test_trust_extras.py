"""A missing optional package is a named error saying which `pip install 'mu2hub[extra]'` installs it, in the
library and through the CLI (exit 2) — never a bare `ModuleNotFoundError` or "internal error" (exit 3).

A missing package is simulated the way Python itself marks one unimportable: `sys.modules[name] = None`.
"""

from __future__ import annotations

import sys

import pytest

from mu2hub import cli
from mu2hub.errors import MissingExtraError
from mu2hub.format.system import Dims
from mu2hub.testing import random_system


def _missing(monkeypatch, *modules: str) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in modules:
            monkeypatch.delitem(sys.modules, name)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_digits_without_scikit_learn_names_the_data_extra(monkeypatch):
    from mu2hub.data import builtin
    from mu2hub.data.registry import get_task

    builtin._digits.cache_clear()
    _missing(monkeypatch, "sklearn")
    with pytest.raises(MissingExtraError, match=r"pip install 'mu2hub\[data\]'") as e:
        get_task("digits")
    assert e.value.module == "sklearn" and isinstance(e.value, ImportError)
    builtin._digits.cache_clear()


def test_image_folder_without_datasets_names_the_data_extra(monkeypatch, tmp_path):
    from mu2hub.data.hf import load_imagefolder

    _missing(monkeypatch, "datasets")
    with pytest.raises(MissingExtraError, match=r"needs datasets, which the base install leaves out: pip install 'mu2hub\[data\]'"):
        load_imagefolder(str(tmp_path))


def test_space_without_gradio_names_the_space_extra(monkeypatch, tmp_path):
    from mu2hub.space import build_demo

    _missing(monkeypatch, "gradio")
    with pytest.raises(MissingExtraError, match=r"'mu2hub\[space\]'"):
        build_demo(str(tmp_path))


def test_interop_without_transformers_names_the_interop_extra(monkeypatch):
    import importlib

    from mu2hub.format.system import Structure

    _missing(monkeypatch, "transformers")
    monkeypatch.delitem(sys.modules, "mu2hub.convert.transformers", raising=False)
    interop = importlib.import_module("mu2hub.convert.transformers")  # importable: transformers is loaded only for a conversion
    with pytest.raises(MissingExtraError, match=r"'mu2hub\[interop\]'"):
        interop.vit_config_for(Dims(16, 2, 32, 4), Structure(Dims(16, 2, 32, 4), 8, 1, 2), ["a", "b"])


def test_cli_evaluate_on_digits_without_scikit_learn_exits_2_naming_the_extra(monkeypatch, tmp_path, capsys):
    from mu2hub.data import builtin

    folder = tmp_path / "system"
    random_system(folder, dims=Dims(16, 2, 32, 4), num_tasks=1, num_classes=10, image_size=8, num_layers=1)
    builtin._digits.cache_clear()
    _missing(monkeypatch, "sklearn")
    task = "task_0"
    code = cli.main(["evaluate", str(folder), "--task", task, "--data", "digits"])
    err = capsys.readouterr().err
    builtin._digits.cache_clear()
    assert code == 2 and "pip install 'mu2hub[data]'" in err and "internal error" not in err, err
