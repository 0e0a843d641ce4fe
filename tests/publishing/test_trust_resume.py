"""A resume record is evidence, not trust: a file already at a content-addressed name, a republish journal entry
or a finished add-task workdir is reused only when its content still hashes to its id (`format.file_has_id`), and
a wrongly typed field of a saved add-task result is a named error, not a `TypeError` later."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import mu2hub
from mu2hub.constants import component_filename
from mu2hub.contrib.contribute import RESULT_NAME, AddTaskResult
from mu2hub.errors import ContributionError
from mu2hub.evolution.run import RunDir
from mu2hub.format.system import Dims, file_sha256
from mu2hub.inference.probe import make_probe
from mu2hub.publishing.republish import republish_reference
from mu2hub.hub.store import LocalStore
from mu2hub.testing import random_system

import mu2net_state as M2


def _damage(path: Path) -> None:
    """Same size, other bytes (what a size check cannot see): a flipped byte in the last tensor."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _all_components_match(folder: Path) -> bool:
    files = list(folder.glob("components/*/*.safetensors"))
    return bool(files) and all(file_sha256(f) == f.stem for f in files)


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume") / "system"
    random_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=2, num_tasks=2, num_classes=3)
    store = LocalStore(folder)
    for t in store.list_tasks():  # what export needs of a task: a held-out accuracy and a probe
        tf = store.read_task(t)
        tf.metrics = {"test_accuracy": 0.5, "chance": 0.34}
        tf.probe = make_probe(mu2hub.from_pretrained(folder, task=t))
        store.write_task(tf)
    return folder


def test_republish_journal_entry_is_checked_against_the_content(tmp_path):
    state = M2.write_mu2net_state(tmp_path / "experiment", orbax=False)
    out = tmp_path / "out"
    republish_reference(state, out, progress=False)
    victim = next(out.glob("components/*/*.safetensors"))
    _damage(victim)
    republish_reference(state, out, progress=False)  # resumes from the journal
    assert _all_components_match(out), "a damaged component was reused on the journal's word"
    for t in LocalStore(out).list_tasks():
        mu2hub.from_pretrained(out, task=t)


def test_folder_export_rewrites_a_damaged_component_of_the_same_size(system, tmp_path):
    out = tmp_path / "export"
    mu2hub.export(system, out)
    victim = next(out.glob("components/*/*.safetensors"))
    _damage(victim)
    mu2hub.export(system, out)
    assert _all_components_match(out)


def test_run_directory_rewrites_a_damaged_component_on_resume(tmp_path):
    run = RunDir(tmp_path / "run")
    tensors = {"scale": np.ones(16, np.float32), "bias": np.zeros(16, np.float32)}
    ref = run.add_component(tensors, "norm")
    path = run.root / "system" / component_filename(ref.id)
    _damage(path)
    assert run.add_component(tensors, "norm").id == ref.id
    assert file_sha256(path) == ref.id
    np.testing.assert_array_equal(run.read_component(ref.id)["scale"], tensors["scale"])


def test_local_store_rewrites_a_damaged_component(system, tmp_path):
    store = LocalStore(shutil.copytree(system, tmp_path / "copy"))
    tf = store.read_task("task_0")
    ref = tf.components[-1]
    _, tensors = store.read_components([ref])[ref.id]
    _damage(store.root / ref.filename)
    assert store.add_component(tensors, ref.slot.split(".")[0], ref.slot) == (ref, True)  # new: written again
    assert file_sha256(store.root / ref.filename) == ref.id


def _saved_result(system: Path, workdir: Path) -> Path:
    tf = LocalStore(system).read_task("task_0")
    shutil.copytree(system, workdir / "system")
    AddTaskResult(repo_id="org/system", revision="0" * 40, task="task_0", task_file=tf, workdir=workdir,
                  new_components=[tf.components[-1]], downloaded_bytes=10, system_bytes=100, parents={"root": 5},
                  excluded={}, children=4, train_steps=8, wall_time=1.0,
                  lineage={"head": "new"}).save()
    return workdir / RESULT_NAME


@pytest.mark.parametrize("field, value, reason", [
    ("children", "many", "'children' must be an integer"),
    ("parents", {"root": "5"}, "'parents.root' must be an integer"),
    ("download_seconds", "0.9", "'download_seconds' must be a number"),
    ("revisit", 1, "'revisit' must be true or false"),
    ("task", "../x", "invalid task name"),
    ("lineage", ["head"], "lineage must be a JSON object"),
    ("new_components", ["zz"], "64 lowercase hex"),
    ("wall_time", -1.0, "'wall_time' must be a finite number"),
])
def test_push_task_result_with_wrongly_typed_fields_is_a_named_error(system, tmp_path, field, value, reason):
    path = _saved_result(system, tmp_path / "work")
    AddTaskResult.load(path.parent)  # the honest file loads
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ContributionError, match=reason):
        AddTaskResult.load(path.parent)
