"""Training on streamed data: the same child as in memory, the same evolution, and a killed run resumes to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import datasets
import jax
import numpy as np
import pytest

from mu2hub import model as vit
from mu2hub.train import child as train
from mu2hub.data import get_task
from mu2hub.data.stream import DatasetSource, StreamedSplit, StreamedTask
from mu2hub.evolution.evolve import evolve
from mu2hub.evolution.loop import Agent
from mu2hub.evolution.run import RunDir
from mu2hub.format.system import Dims, Structure

from locations import REPO, SUPPORT, TRAINING

sys.path.insert(0, str(TRAINING))
from evolve import load_config  # noqa: E402

CONFIG = str(SUPPORT / "streamed_config.py")
HP = dict(opt_lr=0.1, opt_lr_schedule="cosine", opt_lr_warmup_ratio=0.05, opt_momentum=0.9, ds_area_range_min=1.0)


@pytest.fixture(scope="module")
def digits():
    return get_task("digits")


@pytest.fixture(scope="module")
def stand_in(digits, tmp_path_factory):
    """scikit-learn's digits saved with svhn_cropped's features (PNG-encoded images in Arrow files, as on the Hub)."""
    root = tmp_path_factory.mktemp("data")
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=digits.labels)})
    parts = {"train": (digits.train.images[:400], digits.train.labels[:400]), "test": (digits.test.images[:100],
                                                                                      digits.test.labels[:100])}
    datasets.DatasetDict({s: datasets.Dataset.from_dict({"image": list(x), "label": y.tolist()}, features=feats)
                          for s, (x, y) in parts.items()}).save_to_disk(str(root / "svhn_cropped"))
    return root


def _streamed(split, name):
    """An in-memory split written to Arrow files and read back as a stream: the same examples, from disk."""
    ds = datasets.Dataset.from_dict({"image": list(split.images), "label": split.labels.tolist()},
                                    features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int32")}))
    return StreamedSplit(DatasetSource(ds), split.images.shape[1:3], name)


def test_a_child_trained_on_a_streamed_split_equals_the_in_memory_child(digits):
    streamed = StreamedTask("digits", digits.labels, *(_streamed(getattr(digits, s), s) for s in ("train", "validation", "test")))
    structure = Structure(Dims(16, 2, 32, 4), 16, 2, digits.num_classes)  # 8 px digits resized on the device
    init = vit.init_path(structure, jax.random.key(0))
    frozen = {s: init[s] for s in ("patch_embed", "cls", "pos_embed", "block.0")}
    trainable = {s: t for s, t in init.items() if s not in frozen}
    kw = dict(num_validations=2, steps_per_validation=12, batch_size=32, seed=5)
    held = train.train_child(structure, frozen, trainable, digits, HP, **kw)  # uploaded once, gathered on the device
    read = train.train_child(structure, frozen, trainable, streamed, HP, **kw)  # decoded from the files, prefetched
    assert held.history == read.history and held.quality > 0.3  # it learned: the comparison is not of two no-ops
    for slot in trainable:
        for name, value in held.params[slot].items():
            np.testing.assert_array_equal(read.params[slot][name], value, err_msg=f"{slot}/{name}")
    params = {**frozen, **held.params}
    assert train.evaluate_params(structure, params, streamed.test, 48) == train.evaluate_params(structure, params, digits.test, 48)


def _task_file(run: RunDir) -> dict:
    return json.loads((run.system.root / "tasks/svhn_cropped.json").read_text())


def _evolve_cmd(spec, workdir, *extra):
    return [sys.executable, str(TRAINING / "evolve.py"), "--config", spec, "--workdir", str(workdir),
            "--quiet", *extra]


def test_streamed_evolution_equals_in_memory_and_a_killed_run_resumes_to_it(stand_in, tmp_path):
    stream_spec, memory_spec = (f"{CONFIG}:{mode},2,{stand_in}" for mode in ("stream", "memory"))
    agent = Agent(RunDir(tmp_path / "probe"), load_config(stream_spec), log=lambda *_: None)
    data = agent.data("svhn_cropped")
    assert isinstance(data.train, StreamedSplit) and isinstance(data.test, StreamedSplit)  # never decoded whole
    assert len(data.validation) == 24 and data.validation.images.shape == (24, 8, 8, 3)  # the fixed subset, decoded
    memory = evolve(load_config(memory_spec), tmp_path / "memory", quiet=True)
    streamed = evolve(load_config(stream_spec), tmp_path / "stream", quiet=True)
    held, read = _task_file(memory), _task_file(streamed)
    assert read["path"] == held["path"] and read["metrics"] == held["metrics"]  # bit-identical paths
    assert read["lineage"]["data"] == "local:svhn_cropped"  # a local stand-in is not claimed as the Hub dataset
    assert read["metrics"]["num_test_examples"] == 100 and read["metrics"]["test_accuracy"] > read["metrics"]["chance"]

    # SIGKILL mid-run, then --resume: the killed generation is redone and the run ends where it would have.
    workdir = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(_evolve_cmd(stream_spec, workdir), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(workdir.glob("history/*/*.jsonl")):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]  # still running: generation 2 is in flight
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (workdir / "system/tasks/svhn_cropped.json").exists()  # killed before the task was published
    resumed = evolve(load_config(stream_spec), workdir, resume=True, quiet=True)  # in-process: compiled steps reused
    assert _task_file(resumed)["path"] == read["path"]
    assert len(resumed.history()) == len(streamed.history()) == 2  # 2 generations × 1 child, none twice
