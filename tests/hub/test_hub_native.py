"""Hub-native objects: `TaskModel.from_pretrained` / `save_pretrained` / `push_to_hub` in ModelHubMixin's terms,
`subfolder=` and `device=`, and the card the push writes (install line, 3-line snippet, `library_name`, the name)."""

import shutil
from dataclasses import replace

import jax
import numpy as np
import pytest
from huggingface_hub import ModelCard

import mu2hub
from mu2hub import TaskModel
from mu2hub.errors import ArgumentError, LocalFolderNotFoundError
from mu2hub.format.system import Dims
from mu2hub.hub.store import LocalStore
from mu2hub.testing import random_system

IMAGE = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """A random two-task system whose tasks carry the test metrics a publish needs."""
    root = tmp_path_factory.mktemp("native") / "system"
    random_system(root, dims=Dims(32, 2, 64, 4), image_size=16, num_layers=2, num_tasks=2, num_classes=4)
    store = LocalStore(root)
    for t in store.list_tasks():
        store.write_task(replace(store.read_task(t), metrics={"test_accuracy": 0.5, "num_test_examples": 40}))
    return root


def test_push_to_hub_round_trip_and_the_card_shows_how_to_use_it(system, hub, fresh_cache, tmp_path):
    model = TaskModel.from_pretrained(system, task="task_1")
    assert isinstance(model, TaskModel) and model.labels == ["c0", "c1", "c2", "c3"]
    result = model.push_to_hub("native/one")
    assert result.commit

    back = TaskModel.from_pretrained("native/one", task="task_1", cache_dir=fresh_cache)
    assert back.revision == result.commit and back.repo_id == "native/one"
    np.testing.assert_allclose(back.logits([IMAGE]), model.logits([IMAGE]), rtol=1e-5, atol=1e-5)

    card = ModelCard.load("native/one")
    assert card.data.library_name == "mu2hub"
    assert card.data.model_name == "native/one" and card.text.lstrip().startswith("# native/one")
    lines = card.text.splitlines()
    assert "pip install mu2hub" in lines
    snippet = ["from mu2hub import TaskModel", 'model = TaskModel.from_pretrained("native/one", task="task_1")']
    i = lines.index(snippet[0])
    assert lines[i:i + 2] == snippet and lines[i + 2].startswith('print(model.predict("image.png"))')
    assert lines[i + 3] == "```"  # three lines, then the block ends


def test_save_pretrained_can_push_as_the_mixin_does(system, hub, fresh_cache, tmp_path):
    model = mu2hub.from_pretrained(system, task="task_0")
    out = model.save_pretrained(tmp_path / "one", push_to_hub=True, repo_id="native/saved")
    assert sorted(LocalStore(out).list_tasks()) == ["task_0"]
    assert mu2hub.list_tasks("native/saved") == ["task_0"]
    with pytest.raises(ArgumentError, match="needs task="):
        TaskModel.from_pretrained(system, task=None)


def test_a_system_in_a_subfolder_of_a_repo(system, hub, fresh_cache, tmp_path):
    repo_tree = tmp_path / "tree"
    shutil.copytree(system, repo_tree / "systems" / "small")
    (repo_tree / "README.md").write_text("a repo holding systems in folders\n")
    hub.commit_folder("native/nested", repo_tree)

    model = TaskModel.from_pretrained("native/nested", task="task_0", subfolder="systems/small", cache_dir=fresh_cache)
    assert model.subfolder == "systems/small"
    local = mu2hub.from_pretrained(system, task="task_0")
    np.testing.assert_allclose(model.logits([IMAGE]), local.logits([IMAGE]), rtol=1e-5, atol=1e-5)
    both = mu2hub.from_pretrained("native/nested", tasks="all", subfolder="systems/small", cache_dir=fresh_cache)
    assert both.tasks == ["task_0", "task_1"]
    assert mu2hub.from_pretrained(repo_tree, task="task_1", subfolder="systems/small").labels == local.labels

    with pytest.raises(mu2hub.FormatError, match="systems/none/config.json"):
        mu2hub.from_pretrained("native/nested", task="task_0", subfolder="systems/none", cache_dir=fresh_cache)
    for bad in ("../elsewhere", "/abs"):
        with pytest.raises(ArgumentError, match="subfolder"):
            mu2hub.from_pretrained("native/nested", task="task_0", subfolder=bad)
    with pytest.raises(LocalFolderNotFoundError):
        mu2hub.from_pretrained(repo_tree, task="task_0", subfolder="systems/none")


def test_device_places_the_parameters(system):
    cpu = jax.devices("cpu")[0]
    for device in ("cpu", "cpu:0", cpu):
        model = mu2hub.from_pretrained(system, task="task_0", device=device)
        leaf = next(iter(model.params["head"].values()))
        assert leaf.devices() == {cpu}
        assert model.predict(IMAGE)[0]["label"] in model.labels
    every = mu2hub.from_pretrained(system, tasks="all", device="cpu")
    assert next(iter(every["task_1"].params["head"].values())).devices() == {cpu}
    for bad, message in (("cpu:7", "1 cpu device"), ("quantum", "pass 'cpu', 'gpu'")):
        with pytest.raises(ArgumentError, match=message):
            mu2hub.from_pretrained(system, task="task_0", device=bad)


def test_an_exported_folder_is_named_for_the_run_not_the_folder(system, tmp_path):
    from mu2hub.publishing.publish import export_system

    export_system(system, tmp_path / "export")
    card = ModelCard.load(tmp_path / "export" / "README.md")
    assert card.data.model_name == "random-system"  # config.json's name, the run's
    assert card.text.lstrip().startswith("# random-system")


def test_the_space_header_names_the_system_not_a_path(system, hub, tmp_path):
    from mu2hub.space import SpaceSystem

    assert SpaceSystem(system).system_markdown().startswith("**random-system**:")  # a folder: the run's name
    hub.commit_folder("native/spaced", system)
    assert SpaceSystem("native/spaced").system_markdown().startswith("**native/spaced** @ `")  # a repo: its id
