"""Fine-tuning a downloaded task: clone-on-write, and a pushed variant uploads only its new components."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

import mu2hub
from mu2hub import cli
from mu2hub.data.registry import Split, TaskData
from mu2hub.train.finetune import FineTunedModel, trainable_slots
from mu2hub.format.system import ComponentSource, Dims
from mu2hub.hub.store import LocalStore
from mu2hub.testing import random_system
from mu2hub.inference.probe import probe_images, verify

REPO = "ft/system"
LABELS = ["c0", "c1", "c2"]


def sizes(labels: list[str]) -> TaskData:
    """Generated shapes labelled small / medium / large (scale pairs merged), under the given names."""
    d = mu2hub.data.get_task("shapes/label_scale", image_size=8, n_train=256, n_validation=64, n_test=96, seed=5)
    split = lambda s: Split(s.images, s.labels // 2)  # noqa: E731
    return TaskData("sizes", labels, split(d.train), split(d.validation), split(d.test))


@pytest.fixture(scope="module")
def system(hub, tmp_path_factory):
    """A generated 3-task system whose task files record what each task created (top block, norm, head)."""
    folder = tmp_path_factory.mktemp("ft") / "system"
    files = random_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=2, num_tasks=3, num_classes=3)
    store = LocalStore(folder)
    for tf in files.values():
        own = [c.id for c in tf.components if c.slot in ("block.1", "norm", "head")]
        store.write_task(replace(tf, lineage={"created": own}, metrics={"test_accuracy": 0.0}))
    hub.create_repo(REPO)
    hub.commit_folder(REPO, folder)
    return SimpleNamespace(folder=folder)


@pytest.fixture(scope="module")
def tuned(hub, system, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ft-cache")
    model = mu2hub.from_pretrained(REPO, task="task_0", cache_dir=cache)
    before = {s: {k: np.array(v) for k, v in t.items()} for s, t in model.params.items()}
    files = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.rglob("*.safetensors")}
    logits = model.logits(probe_images(0, 6, 8))
    variant = model.finetune(sizes(LABELS), steps=64, lr=0.1, num_validations=2)
    return SimpleNamespace(model=model, variant=variant, before=before, files=files, logits=logits, cache=cache)


def test_finetune_clones_on_write(tuned):
    model, variant = tuned.model, tuned.variant
    assert isinstance(variant, FineTunedModel) and variant is not model
    # the downloaded model, its device arrays and its cached files are untouched
    for slot, tensors in model.params.items():
        for k, v in tensors.items():
            np.testing.assert_array_equal(np.asarray(v), tuned.before[slot][k])
    np.testing.assert_array_equal(model.logits(probe_images(0, 6, 8)), tuned.logits)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tuned.files} == tuned.files
    # "own" = the components the task created (top block, norm) and its head: new ids; the rest referenced
    old = model.task_file.component_map()
    trained = {"block.1", "norm", "head"}
    assert variant.task_file.lineage["trained_slots"] == ["block.1", "norm", "head"]
    for ref in variant.components:
        if ref.slot in trained:
            assert ref.id != old[ref.slot].id and ref.source is None
        else:
            assert ref.id == old[ref.slot].id and ref.source == ComponentSource(REPO, model.revision)
            assert variant.params[ref.slot] is model.params[ref.slot]  # shared, not copied
    assert variant.task_file.lineage["created"] == [r.id for r in variant.components if r.slot in trained]
    m = variant.task_file.metrics
    assert m["test_accuracy"] > m["chance"] + 0.2 and m["test_accuracy"] > m["source_test_accuracy"]
    assert variant.task_file.probe is not None and variant.task_file.sizes["new_params"] > 0


def test_push_uploads_only_the_new_components(hub, tuned, tmp_path, capsys):
    variant = tuned.variant
    new = {r.filename: r.bytes for r in variant.components if r.source is None}
    hub.reset_log()
    result = variant.push_to_hub("ft/variant")
    ops = hub.committed_operations("ft/variant")
    components = {p: n for p, n in ops if p.startswith("components/")}
    assert components == new  # exactly the new components, byte for byte; nothing of the source repo
    assert {p for p, _ in ops} - set(components) == {"config.json", "tasks/task_0.json", "README.md",
                                                      "figures/system.png", "figures/params.png"}
    assert result.bytes == sum(n for _, n in ops)
    # it loads from both repos (the referenced components at the pinned commit) and computes the same function
    hub.reset_log()
    loaded = mu2hub.from_pretrained("ft/variant", task="task_0", cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(loaded.logits(probe_images(0, 6, 8)), variant.logits(probe_images(0, 6, 8)))
    assert sorted(f for f in hub.downloaded_files("ft/variant") if f.startswith("components/")) == sorted(new)
    assert {f for f in hub.downloaded_files(REPO)} == {r.filename for r in variant.components if r.source is not None}
    assert verify("ft/variant", cache_dir=tmp_path / "v").ok
    hub.reset_log()
    variant.push_to_hub("ft/variant")
    assert hub.committed_operations("ft/variant") == []  # nothing new
    with capsys.disabled():
        total = sum(r.bytes for r in {r.id: r for r in variant.components}.values())
        print(f"\n[finetune] variant test {variant.task_file.metrics['test_accuracy']:.4f} "
              f"(source task {variant.task_file.metrics['source_test_accuracy']:.4f}); push: {sum(components.values()):,} B "
              f"of components ({len(components)} files) of a {total:,} B path; {result.bytes:,} B in all")


def test_saved_folder_follows_sources_through_the_hub(tuned, tmp_path):
    variant = tuned.variant
    folder = variant.save_pretrained(tmp_path / "variant")
    saved = {p.stem for p in folder.glob("components/*/*.safetensors")}
    assert saved == {r.id for r in variant.components if r.source is None}
    loaded = mu2hub.from_pretrained(folder, task="task_0")
    np.testing.assert_array_equal(loaded.logits(probe_images(0, 6, 8)), variant.logits(probe_images(0, 6, 8)))


def test_variant_as_a_pull_request_validates(hub, tuned):
    variant = FineTunedModel(tuned.variant.config, replace(tuned.variant.task_file, task="task_0_sizes"),
                             tuned.variant.params)
    result = variant.push_to_hub(REPO, create_pr=True)
    new = sorted(["tasks/task_0_sizes.json"] + [r.filename for r in variant.components if r.source is None])
    assert hub.pr_files(REPO, result.pr_num) == {"added": new, "modified": [], "deleted": []}
    report = mu2hub.validate(REPO, result.pr_num)
    assert report.ok, report.format()


def test_train_all_with_new_labels_gets_a_new_head(tuned):
    variant = tuned.model.finetune(sizes(["small", "medium", "large"]), steps=8, lr=0.05, train="all")
    assert all(r.source is None for r in variant.components)
    assert variant.labels == ["small", "medium", "large"] and variant.logits(probe_images(0, 2, 8)).shape == (2, 3)
    assert "source_test_accuracy" not in variant.task_file.metrics  # other labels: the source task is not comparable


def test_bad_train_argument(tuned):
    tf = tuned.model.task_file
    assert trainable_slots(tf, ["head", "block"], new_head=False) == ["block.0", "block.1", "head"]
    with pytest.raises(ValueError, match="'own', 'all'"):
        trainable_slots(tf, "mine", new_head=False)
    with pytest.raises(ValueError, match="adapter"):
        trainable_slots(tf, ["adapter"], new_head=False)
    with pytest.raises(ValueError, match="multiple of num_validations"):
        tuned.model.finetune(sizes(LABELS), steps=5, lr=0.1, num_validations=2)


def test_cli_finetune_saves_and_pushes(hub, system, tmp_path, capsys):
    folder = tmp_path / "sizes"
    data = sizes(LABELS)
    from PIL import Image

    for split in ("train", "test"):
        s = getattr(data, split)
        for i, (image, label) in enumerate(zip(s.images[:60], s.labels[:60])):
            (folder / split / LABELS[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / split / LABELS[label] / f"{i}.png")
    assert cli.main(["finetune", REPO, "--task", "task_1", "--data", str(folder), "--steps", "4", "--lr", "0.1",
                     "--out", str(tmp_path / "out"), "--push-to", "ft/cli-variant"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "new components" in out and "referenced in the source repo" in out
    assert (tmp_path / "out/tasks/task_1.json").is_file() and "tasks/task_1.json" in hub.files("ft/cli-variant")
    assert cli.main(["finetune", REPO, "--task", "task_1", "--data", str(folder), "--steps", "4", "--lr", "0.1"]) == 2


def test_a_task_served_without_antialias_is_tuned_and_measured_as_served(tuned):
    """A republished reference task stores `antialias: false`: the variant trains and is scored that way, so its
    recorded test accuracy is what `evaluate` (the public path, the stored spec on the host) reproduces."""
    from mu2hub.inference.task import TaskModel
    from mu2hub.data.pp import pp_spec

    m = tuned.model
    served = TaskModel(m.config, replace(m.task_file, preprocessing=pp_spec(8, antialias=False)), m.params,
                       repo_id=m.repo_id, revision=m.revision)
    d = mu2hub.data.get_task("shapes/label_scale", image_size=24, n_train=256, n_validation=64, n_test=96, seed=5)
    data = TaskData("sizes", LABELS, *(Split(s.images, s.labels // 2) for s in (d.train, d.validation, d.test)))
    variant = served.finetune(data, steps=32, lr=0.1)
    assert variant.task_file.preprocessing == pp_spec(8, antialias=False)
    recorded = variant.task_file.metrics["test_accuracy"]
    assert variant.evaluate(data).accuracy == recorded and recorded > variant.task_file.metrics["chance"]
