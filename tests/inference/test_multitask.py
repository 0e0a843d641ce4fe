"""Many tasks, one object: `from_pretrained(repo, tasks=...)` holds shared components once and answers one task or
every task for a batch, exactly as each task's own `TaskModel` does."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import mu2hub
from mu2hub.format.system import Dims
from mu2hub.inference.probe import probe_images
from mu2hub.testing import random_system

REPO = "multi/system"


@pytest.fixture(scope="module")
def repo(hub, tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi")
    random_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=3, num_tasks=4, own_blocks=1, num_classes=5)
    hub.commit_folder(REPO, folder)
    return REPO


def test_outputs_equal_each_task_model_and_shared_components_are_held_once(repo, tmp_path):
    multi = mu2hub.from_pretrained(repo, tasks="all", cache_dir=tmp_path / "c")
    assert isinstance(multi, mu2hub.MultiTaskModel) and multi.tasks == ["task_0", "task_1", "task_2", "task_3"]
    assert multi.revision is not None and len(multi.revision) == 40
    singles = {t: mu2hub.from_pretrained(repo, task=t, cache_dir=tmp_path / "c") for t in multi.tasks}
    batch = probe_images(3, 5, 8)
    one = Image.fromarray(probe_images(4, 1, 11)[0])  # another size: resized by each task's preprocessing
    every = multi.predict_all(batch)
    single = multi.predict_all(one)
    for t, model in singles.items():
        np.testing.assert_array_equal(multi.logits(batch, task=t), model.logits(batch))
        # predict_all runs the paths as one tree (shared blocks once): the same answers, rounded apart
        for got, want in zip(every[t] + [single[t]], model.predict(batch) + [model.predict(one)]):
            assert [p["label"] for p in got] == [p["label"] for p in want]
            np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in want], rtol=1e-5, atol=1e-6)
        assert multi.predict(one, task=t) == model.predict(one)
    # resident bytes: every distinct component once, however many tasks use it
    per_task = sum(4 * tf.activated_params for tf in multi.files.values())
    assert multi.resident_bytes() == multi.component_bytes() < per_task
    unique = {c.id: c.params for tf in multi.files.values() for c in tf.components}
    assert multi.component_bytes() == 4 * sum(unique.values())
    shared = [tensors for m in (multi["task_0"], multi["task_1"]) for s, tensors in m.params.items() if s == "block.0"]
    assert shared[0] is shared[1]  # the same device arrays, not copies


def test_set_task_follows_peft_set_adapter(repo, tmp_path):
    multi = mu2hub.from_pretrained(repo, tasks=["task_2", "task_0"], cache_dir=tmp_path / "c")
    assert multi.tasks == ["task_2", "task_0"] and multi.active_task == "task_2"
    image = probe_images(5, 1, 8)[0]
    assert multi.predict(image) == multi["task_2"].predict(image)
    multi.set_task("task_0")
    assert multi.active_task == "task_0" and multi.predict(image) == multi["task_0"].predict(image)
    assert "task_0" in multi and "task_1" not in multi and len(multi) == 2
    assert set(multi.predict_all(image, tasks=["task_0"])) == {"task_0"}
    with pytest.raises(mu2hub.TaskNotFoundError, match=r"no task 'tsk_0' in multi/system \(did you mean 'task_0'\?\)"):
        multi.set_task("tsk_0")
    with pytest.raises(mu2hub.TaskNotFoundError):
        multi.predict(image, task="task_1")  # not one of the loaded tasks
    with pytest.raises(ValueError, match="list of task names or 'all'"):
        mu2hub.from_pretrained(repo, tasks="task_0")
    assert "MultiTaskModel(repo='multi/system', tasks=2, active='task_0'" in repr(multi)
