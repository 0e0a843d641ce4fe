"""The model card tells the truth: round trips through huggingface_hub's ModelCard, counts checked against files.

Systems: the tiny evolved system on the loopback Hub (`evolved` in conftest.py), a fine-tuned variant pushed from
it, and cards rendered from task files that name a Hub dataset or a local copy of one.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image

import mu2hub
from mu2hub.publishing.card import card_task_order, pool, render_card
from mu2hub.format.datasource import data_source, public_name
from mu2hub.evolution.plots import evolution_figure
from mu2hub.format.system import Dims
from mu2hub.publishing.publish import card_order, export
from mu2hub.hub.store import LocalStore
from mu2hub.testing import random_system


def _component_files(files: dict[str, bytes]) -> dict[str, bytes]:
    return {p: d for p, d in files.items() if p.startswith("components/")}


def _intro_counts(text: str) -> tuple[int, int, float]:
    m = re.search(r"over one pool of (\d+) ViT component files in `components/` \(([\d,]+) parameters, ([\d.]+) MB\)", text)
    assert m, text[:800]
    return int(m.group(1)), int(m.group(2).replace(",", "")), float(m.group(3))


def test_card_round_trip_one_result_per_task(hub, evolved):
    card = ModelCard.load(evolved.repo)
    card.validate()
    data = card.data
    results = data.eval_results
    files = hub.files(evolved.repo)
    tasks = {t: mu2hub.from_pretrained(evolved.repo, task=t).task_file for t in evolved.tasks}
    assert len(results) == len(tasks) == len({(r.dataset_type, r.dataset_config) for r in results})  # none merged
    for r in results:
        tf = tasks[r.dataset_config]
        assert r.metric_type == "accuracy" and r.dataset_split == "test"
        assert r.metric_value == pytest.approx(tf.metrics["test_accuracy"], abs=1e-6)
        assert r.metric_name == f"test accuracy ({tf.metrics['num_test_examples']:,} images)"
        assert r.dataset_type == "mu2hub-builtin" and r.dataset_config in r.dataset_name
    assert data.license == "apache-2.0" and data.datasets is None and data.base_model is None
    assert data.model_name == evolved.repo and card.text.lstrip().startswith(f"# {evolved.repo}")  # the repo id names it
    assert "scikit-learn's bundled handwritten digits" in card.text and "generated dSprites-style" in card.text
    # every count on the card agrees with the files in the repo (root path included)
    comps = _component_files(files)
    n, params, mb = _intro_counts(card.text)
    root = LocalStore(evolved.folder).read_root()
    assert n == len(comps) and mb == pytest.approx(sum(map(len, comps.values())) / 1e6, abs=5e-4)
    assert params == pool(tasks, root)["params"]
    for t, tf in tasks.items():
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {t} |"))
        assert f"{tf.activated_params:,}" in row and f"{tf.download_bytes / 1e6:.3f}" in row
        assert f"({tf.metrics['num_test_examples']:,} images)" in row


def test_variant_card_names_itself_its_data_and_its_base(hub, tmp_path):
    """A fine-tuned variant on an imagefolder: its own name, the data it was measured on, base_model as PEFT does."""
    source = "card/source"
    folder = tmp_path / "system"
    random_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=2, num_tasks=2, num_classes=3)
    hub.commit_folder(source, folder)
    data = mu2hub.data.get_task("shapes/label_scale", image_size=8, n_train=96, n_validation=24, n_test=30, seed=2)
    images = tmp_path / "sizes"
    for split in ("train", "validation", "test"):
        s = getattr(data, split)
        for i, (image, label) in enumerate(zip(s.images, s.labels // 2)):
            (images / split / f"c{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(images / split / f"c{label}" / f"{i}.png")
    model = mu2hub.from_pretrained(source, task="task_0")
    variant = model.finetune(f"imagefolder:{images}", steps=4, lr=0.05, batch_size=16)
    assert variant.repo_id == "" and "not saved or pushed yet" in repr(variant)
    variant.push_to_hub("card/variant")
    assert variant.repo_id == "card/variant" and "card/variant" in repr(variant)
    card = ModelCard.load("card/variant")
    card.validate()
    d = card.data
    assert d.model_name == "card/variant" and d.base_model == source and d.to_dict()["base_model_relation"] == "finetune"
    (r,) = d.eval_results
    n = variant.task_file.metrics["num_test_examples"]
    assert n == 30 and r.metric_name == f"test accuracy ({n} images)"
    assert r.dataset_type == "imagefolder" and "imagefolder `sizes`" in r.dataset_name and d.datasets is None
    assert r.metric_value == pytest.approx(variant.task_file.metrics["test_accuracy"], abs=1e-6)
    assert str(tmp_path) not in card.text  # the local path is never published
    assert variant.task_file.lineage["data"] == "imagefolder:sizes"
    referenced = sum(1 for c in variant.components if c.source is not None)
    row = next(line for line in card.text.splitlines() if line.startswith("| task_0 |"))
    assert referenced > 0 and f"{referenced} referenced from {source}@" in row
    n_stored, _, mb = _intro_counts(card.text)
    stored = _component_files(hub.files("card/variant"))
    assert n_stored == len(stored) == len(variant.new_components)
    assert mb == pytest.approx(sum(map(len, stored.values())) / 1e6, abs=5e-4)
    assert f"{referenced} more components are referenced from `{source}@" in card.text


def test_only_real_hub_dataset_ids_are_listed(tmp_path):
    files = random_system(tmp_path, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=1, num_tasks=3, num_classes=3)
    config = LocalStore(tmp_path).read_config()
    specs = {"task_0": "hf:someone/cats-vs-dogs", "task_1": f"hf:{tmp_path}/saved", "task_2": "imagefolder:/home/me/pics"}
    files = {t: replace(tf, lineage={"data": specs[t]}, metrics={"test_accuracy": 0.5, "num_test_examples": 10})
             for t, tf in files.items()}
    card = ModelCard(render_card(files, config, repo_id="me/cats"))
    assert card.data.datasets == ["someone/cats-vs-dogs"]
    types = {r.dataset_config: r.dataset_type for r in card.data.eval_results}
    assert types == {"task_0": "someone/cats-vs-dogs", "task_1": "local", "task_2": "imagefolder"}
    assert str(tmp_path) not in str(card) and "/home/me" not in str(card)
    assert public_name(f"hf:{tmp_path}/saved") == "hf:saved" and public_name("imagefolder:/home/me/pics/") == "imagefolder:pics"
    assert data_source("shapes/label_x_position").kind == "builtin" and data_source("cifar10").hub_id is None


def test_refresh_keeps_order_and_colours_new_tasks_last(tmp_path):
    """A later task that stream order would put first (its path id sorts first) is still shown last on refresh."""
    folder = tmp_path / "system"
    files = random_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=1, num_tasks=3, num_classes=3)
    store = LocalStore(folder)
    for t, pid in (("task_0", "p1"), ("task_1", "p2"), ("task_2", "p0")):
        store.write_task(replace(files[t], metrics={"test_accuracy": 0.5}, lineage={"path_id": pid}))
    out = tmp_path / "out"
    export(folder, out, tasks=["task_0", "task_1"])
    first = card_task_order((out / "README.md").read_text())
    assert first == ["task_0", "task_1"]
    export(folder, out)
    assert card_task_order((out / "README.md").read_text()) == ["task_0", "task_1", "task_2"]
    # a fresh card would show stream order (path id p0 first); the refresh kept the card's rows, new task last.
    # The figures are drawn from the same ordered tasks (publish._shared_files), so rows and colours stay too.
    assert card_order({t: store.read_task(t) for t in files}, []) == ["task_2", "task_0", "task_1"]


def test_evolution_figure_shows_validation_accuracy_with_the_score_below(evolved):
    from mu2hub.evolution.run import RunDir

    history = RunDir(evolved.run).history()
    fig = evolution_figure(history)
    acc_ax, score_ax = fig.axes
    assert acc_ax.get_ylabel() == "validation accuracy" and score_ax.get_ylabel() == "score"
    plotted = np.sort(np.concatenate([c.get_offsets()[:, 1] for c in acc_ax.collections]))
    assert np.allclose(plotted, np.sort([r["quality"] for r in history]))
    scores = np.sort(np.concatenate([c.get_offsets()[:, 1] for c in score_ax.collections]))
    assert np.allclose(scores, np.sort([r["score"] for r in history]))
    # the run's params.png is the published plot of the same tasks (one name, one plot)
    run_png = (Path(evolved.run) / "figures/params.png").read_bytes()
    assert run_png == (Path(evolved.folder) / "figures/params.png").read_bytes()


def _pr_adding_a_copy(repo: str, source: str, new: str) -> int:
    """A valid contribution built by hand: `new`'s task file reuses `source`'s components (its probe still holds)."""
    import json

    from huggingface_hub import CommitOperationAdd, HfApi

    tf = mu2hub.from_pretrained(repo, task=source).task_file
    data = json.dumps(replace(tf, task=new).to_json()).encode()
    return HfApi().create_commit(repo, [CommitOperationAdd(f"tasks/{new}.json", data)], commit_message=f"Add {new}",
                                 create_pr=True).pr_num


def test_validate_merge_refreshes_the_card_unless_told_not_to(hub, tmp_path, capsys):
    from mu2hub import cli
    from mu2hub.inference.probe import make_probe

    repo = "card/merge"
    folder = tmp_path / "system"
    files = random_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=1, num_tasks=2, num_classes=3)
    store = LocalStore(folder)
    for t, tf in files.items():
        model = mu2hub.from_pretrained(folder, task=t)
        store.write_task(replace(tf, metrics={"test_accuracy": 0.4, "num_test_examples": 9}, probe=make_probe(model)))
    export(folder, repo)
    before = hub.files(repo)["README.md"]
    num = _pr_adding_a_copy(repo, "task_0", "task_0_copy")
    assert cli.main(["validate", repo, "--pr", str(num), "--merge", "--no-refresh"]) == 0
    assert "MERGED" in capsys.readouterr().out and hub.files(repo)["README.md"] == before  # as asked: untouched
    num = _pr_adding_a_copy(repo, "task_1", "task_1_copy")
    assert cli.main(["validate", repo, "--pr", str(num), "--merge"]) == 0
    assert "card and figures refreshed (README.md, figures/system.png, figures/params.png)" in capsys.readouterr().out
    card = ModelCard.load(repo)
    assert [r.dataset_config for r in card.data.eval_results] == ["task_0", "task_1", "task_0_copy", "task_1_copy"]


def test_export_license_flag(tmp_path):
    from mu2hub import cli

    folder = tmp_path / "system"
    files = random_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=1, num_tasks=1, num_classes=3)
    LocalStore(folder).write_task(replace(files["task_0"], metrics={"test_accuracy": 0.5}))
    assert cli.main(["export", "--repo", str(folder), "--to", str(tmp_path / "out"), "--license", "mit"]) == 0
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.license == "mit" and card.data.eval_results[0].metric_name == "test accuracy"  # no image count recorded
