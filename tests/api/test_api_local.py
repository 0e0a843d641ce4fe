"""from_pretrained on a local folder: loading, predicting, saving, and every kind of bad input."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import mu2hub
from mu2hub.format.system import Dims
from mu2hub.testing import random_system

DIMS = Dims(32, 2, 64, 4)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    root = tmp_path_factory.mktemp("system")
    files = random_system(root, dims=DIMS, image_size=16, num_layers=2, num_tasks=3, num_classes=4)
    return root, files


def test_load_and_predict_every_input_kind(system):
    root, files = system
    m = mu2hub.from_pretrained(root, task="task_0")
    assert m.labels == ["c0", "c1", "c2", "c3"] and m.activated_params == files["task_0"].activated_params
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    gray = Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8), mode="L")
    rgba = Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), mode="RGBA")
    one = m.predict(rgb, top_k=2)
    assert len(one) == 2 and one[0]["label"] in m.labels and one[0]["score"] >= one[1]["score"]
    many = m.predict([rgb, gray, rgba])
    assert len(many) == 3 and all(len(p) == 4 for p in many)
    assert abs(sum(p["score"] for p in many[0]) - 1) < 1e-5
    batch = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    assert len(m.predict(batch)) == 5
    # same image as PIL and as array -> same answer
    assert m.predict(Image.fromarray(rgb))[0] == one[0]
    x = m.preprocess([rgb])
    assert x.shape == (1, 16, 16, 3) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_allclose(m.logits(x), m.logits([rgb]), rtol=1e-6)


def test_predict_takes_image_files_and_names_the_bad_ones(system, tmp_path):
    root, _ = system
    m = mu2hub.from_pretrained(root, task="task_0")
    rgb = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert m.predict(str(tmp_path / "a.png")) == m.predict(rgb)  # a path is read at full resolution, as an array is
    assert m.predict([tmp_path / "a.png", rgb]) == m.predict([rgb, rgb])
    (tmp_path / "bad.png").write_bytes(b"not a png")
    for path, error, message in [(tmp_path / "missing.png", mu2hub.errors.ImageInputError, "no such image file"),
                                 (tmp_path, mu2hub.errors.ImageInputError, "a folder, not an image file"),
                                 (tmp_path / "bad.png", mu2hub.errors.CorruptImageError, "bad.png")]:
        with pytest.raises(error, match=message):
            m.predict(str(path))


@pytest.mark.parametrize("call", [
    lambda m, root, out: m.evaluate("digits", batch_size=0),
    lambda m, root, out: m.evaluate("digits", split="dev"),
    lambda m, root, out: m.save_pretrained(out / "file"),
    lambda m, root, out: m.to_transformers(out / "file"),
    lambda m, root, out: mu2hub.from_pretrained(root, tasks=[]),
    lambda m, root, out: mu2hub.from_pretrained(root, tasks="task_0"),
    lambda m, root, out: mu2hub.from_pretrained(root, task="task_0", tasks=["task_0"]),
], ids=["batch_size_0", "unknown_split", "save_into_a_file", "transformers_into_a_file", "no_tasks",
        "tasks_as_one_name", "task_and_tasks"])
def test_bad_arguments_are_argument_errors_before_any_write(system, tmp_path, call):
    root, _ = system
    m = mu2hub.from_pretrained(root, task="task_0")
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(mu2hub.errors.ArgumentError):
        call(m, root, tmp_path)
    assert (tmp_path / "file").read_text() == "keep me"


def test_path_info_and_system_info(system):
    root, files = system
    m = mu2hub.from_pretrained(root, task="task_1")
    info = m.path_info()
    assert [c["slot"] for c in info["components"]][:3] == ["patch_embed", "cls", "pos_embed"]
    assert info["bytes"] == sum({c["id"]: c["bytes"] for c in info["components"]}.values())
    assert mu2hub.list_tasks(root) == ["task_0", "task_1", "task_2"]
    sysinfo = mu2hub.system_info(root)
    t1 = sysinfo["tasks"]["task_1"]
    # patch_embed, cls, pos_embed, block.0 are the root's and shared by all three tasks
    assert t1["shared_components"] == 4 and t1["shared_with"] == ["task_0", "task_2"]
    assert sysinfo["params"] < sum(s["activated_params"] for s in sysinfo["tasks"].values())


def test_shared_components_held_once_in_memory(system):
    root, _ = system
    a = mu2hub.from_pretrained(root, task="task_0")
    b = mu2hub.from_pretrained(root, task="task_2")
    assert a.params["block.0"] is b.params["block.0"]
    assert a.params["head"] is not b.params["head"]


def test_save_pretrained_writes_a_standalone_task_repo(system, tmp_path):
    root, _ = system
    m = mu2hub.from_pretrained(root, task="task_2")
    m.save_pretrained(tmp_path / "one")
    assert mu2hub.list_tasks(tmp_path / "one") == ["task_2"]
    again = mu2hub.from_pretrained(tmp_path / "one", task="task_2")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(m.logits(x), again.logits(x))
    n_files = len(list((tmp_path / "one" / "components").rglob("*.safetensors")))
    assert n_files == len({c.id for c in m.components})


def test_unknown_task_lists_the_tasks(system):
    root, _ = system
    with pytest.raises(mu2hub.TaskNotFoundError, match="available tasks: task_0, task_1, task_2"):
        mu2hub.from_pretrained(root, task="cifar10")


def _copy(system, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(system[0], dst)
    return dst


def test_corrupt_component_names_the_file(system, tmp_path):
    root = _copy(system, tmp_path)
    tf = json.loads((root / "tasks/task_0.json").read_text())
    head = next(c for c in tf["path"]["components"] if c["slot"] == "head")
    f = root / "components" / head["id"][:2] / f"{head['id']}.safetensors"
    f.write_bytes(f.read_bytes()[:-7])  # truncated
    with pytest.raises(mu2hub.ComponentIntegrityError, match=head["id"]):
        mu2hub.from_pretrained(root, task="task_0")


@pytest.mark.parametrize(
    "edit, error, message",
    [
        (lambda d: d.update(task="../../x"), mu2hub.UnsafePathError, "invalid task name"),
        (lambda d: d.update(format_version=2), mu2hub.FormatVersionError, "format_version 2"),
        (lambda d: d["path"].update(num_layers=1), mu2hub.FormatError, "unexpected"),
    ],
)
def test_bad_task_files(system, tmp_path, edit, error, message):
    root = _copy(system, tmp_path)
    f = root / "tasks/task_1.json"
    d = json.loads(f.read_text())
    edit(d)
    f.write_text(json.dumps(d))
    with pytest.raises(error, match=message):
        mu2hub.from_pretrained(root, task="task_1")


def test_malformed_json(system, tmp_path):
    root = _copy(system, tmp_path)
    (root / "tasks/task_1.json").write_text("{not json")
    with pytest.raises(mu2hub.FormatError, match="tasks/task_1.json: malformed JSON"):
        mu2hub.from_pretrained(root, task="task_1")


def test_component_whose_shapes_do_not_fit(system, tmp_path):
    root = _copy(system, tmp_path)
    f = root / "tasks/task_1.json"
    d = json.loads(f.read_text())
    comps = {c["slot"]: c for c in d["path"]["components"]}
    comps["block.1"]["id"], comps["block.1"]["bytes"] = comps["norm"]["id"], comps["norm"]["bytes"]
    f.write_text(json.dumps(d))
    with pytest.raises(mu2hub.ShapeMismatchError, match="block.1"):
        mu2hub.from_pretrained(root, task="task_1")


def test_task_name_traversal_is_refused_before_any_read(system):
    with pytest.raises(mu2hub.UnsafePathError):
        mu2hub.from_pretrained(system[0], task="../../etc/passwd")


def test_not_a_repo(tmp_path):
    with pytest.raises(mu2hub.FormatError, match="not a mu2hub repo"):
        mu2hub.from_pretrained(tmp_path, task="x")


def test_contradictory_flags():
    with pytest.raises(ValueError, match="contradict"):
        mu2hub.from_pretrained("org/x", task="t", force_download=True, local_files_only=True)
