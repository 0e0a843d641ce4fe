"""The demo Space: library logic, the launched app through gradio_client, and a real headless Chromium.

The system is a small random-weight one (3 tasks sharing their lower components) served by the loopback Hub
and opened by repo id, as the Space opens its repo. Predictions are checked against `TaskModel.predict`.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest
from gradio_client import Client, handle_file  # the `space` extra; `make test` installs it
from gradio_client.exceptions import AppError
from huggingface_hub import metadata_load
from PIL import Image

import mu2hub
from mu2hub import space
from mu2hub.data.images import load_image
from mu2hub.constants import component_filename
from mu2hub.publishing import figures
from mu2hub.publishing.figures import path_png
from mu2hub.format.system import Dims
from mu2hub.hub.store import LocalStore
from mu2hub.testing import random_system

import locations

REPO = "tests/space-system"
DIMS = Dims(32, 2, 64, 4)
LABELS = {"task_0": ["apple", "banana", "cherry", "damson"], "task_1": ["north", "south", "east", "west"],
          "task_2": ["red", "green", "blue", "violet"]}
ARTIFACTS = locations.TESTS / "artifacts"
SPACE_DIR = locations.REPO / "spaces_app"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------


def _write_system(folder: Path) -> dict:
    files = random_system(folder, dims=DIMS, image_size=16, num_layers=3, num_tasks=3, own_blocks=1, num_classes=4)
    store = LocalStore(folder)
    for i, (task, tf) in enumerate(sorted(files.items())):  # readable labels, accuracy, lineage, as a real export
        own = [c.id for c in tf.components if c.slot in ("block.2", "norm", "head")]
        files[task] = replace(tf, labels=LABELS[task], lineage={"created": own},
                              metrics={"test_accuracy": 0.5 + 0.1 * i, "chance": 0.25, "num_test_examples": 40})
        store.write_task(files[task])
    return files


def _image(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(data[..., 0] if channels == 1 else data, mode).save(path)
    return path


@pytest.fixture(scope="module")
def system(hub, tmp_path_factory):
    folder = tmp_path_factory.mktemp("space-system")
    files = _write_system(folder)
    hub.create_repo(REPO)
    hub.commit_folder(REPO, folder, message="space system")
    return folder, files


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    return {"rgb": _image(d / "rgb.png", (40, 30), seed=1), "rgb2": _image(d / "rgb2.png", (16, 16), seed=2),
            "gray": _image(d / "gray.png", (20, 20), "L", seed=3), "rgba": _image(d / "rgba.png", (25, 17), "RGBA", seed=4),
            "pixel": _image(d / "pixel.png", (1, 1), seed=5)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(demo):
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                            css=space.CSS)
    return url


@pytest.fixture(scope="module")
def app(system, images):
    """The page for the Hub repo, launched in-process on 127.0.0.1."""
    examples = {"task_0": [str(images["rgb"])], "task_1": [str(images["rgb2"])]}
    demo = space.build_demo(REPO, examples=examples)
    url = _launch(demo)
    try:
        yield demo, url, Client(url, verbose=False)
    finally:
        demo.close()


def _reference(task: str, image) -> list[dict]:
    return mu2hub.from_pretrained(REPO, task=task).predict(image, top_k=5)


# ---------------------------------------------------------------------------------------------------
# Library: images, figure, memory, preload
# ---------------------------------------------------------------------------------------------------


def test_models_load_lazily_once_and_share_components(system, images):
    s = space.SpaceSystem(REPO)
    assert s.loaded == {} and s.tasks == ["task_0", "task_1", "task_2"] and isinstance(s.models, mu2hub.MultiTaskModel)
    s.classify(str(images["rgb"]), "task_0")
    assert list(s.loaded) == ["task_0"]
    assert s.model("task_0") is s.model("task_0")
    for t in s.tasks:
        s.model(t)
    per_task = sum(4 * tf.activated_params for tf in s.files.values())
    unique = s.component_param_bytes()
    assert s.resident_param_bytes() == unique < per_task
    # the same, counted independently: distinct array objects over every loaded model's parameters
    arrays = {id(a): a.nbytes for m in s.loaded.values() for t in m.params.values() for a in t.values()}
    assert sum(arrays.values()) == unique


def _rgb(color: str) -> tuple[int, int, int]:
    from matplotlib.colors import to_rgb

    return tuple(round(255 * v) for v in to_rgb(color))


def test_path_figure_is_the_system_picture_with_the_path_picked_out(system):
    """Same colours as figures/system.png (the task that created a component), at full strength on the chosen path
    and faded off it."""
    _, files = system
    ordered = {t: files[t] for t in sorted(files)}
    colors = {t: _rgb(c) for t, c in figures.task_colors(list(ordered)).items()}

    def counts(png: bytes) -> dict[str, int]:
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
        return {t: int(np.all(pixels == c, axis=1).sum()) for t, c in colors.items()}

    whole = counts(figures.system_png(ordered))
    legend = min(whole.values())  # every task created its top block, norm and head: three cells each, plus a swatch
    assert legend > 0
    for chosen in ordered:
        seen = counts(path_png(ordered, chosen))
        others = [n for t, n in seen.items() if t != chosen]
        # its own components bright; other tasks' own components faded (only their legend swatch keeps the colour)
        assert seen[chosen] > 4 * max(others), (chosen, seen)


def test_preload_lines_make_the_space_start_offline(hub, system, tmp_path):
    _, files = system
    sha = hub.head(REPO)
    (line,) = space.preload_lines(REPO, ["task_0", "task_1"], "main")
    repo, names, rev = line.split()
    comps = {component_filename(c.id) for t in ("task_0", "task_1") for c in files[t].components}
    assert (repo, rev) == (REPO, sha)
    assert names.split(",")[:3] == ["config.json", "tasks/task_0.json", "tasks/task_1.json"]
    assert set(names.split(",")[3:]) == comps

    # what the Space build does: fetch exactly these files at that commit into the cache ...
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "cache"
    for f in names.split(","):
        hf_hub_download(REPO, f, revision=sha, cache_dir=cache)
    readme = tmp_path / "README.md"
    readme.write_text(f'---\nsdk: gradio\npreload_from_hub:\n  - "{line}"\n---\n')
    assert space.parse_preload(readme) == (REPO, ["task_0", "task_1"], sha)
    # ... then the app serves both tasks without one request to the Hub
    hub.reset_log()
    s = space.SpaceSystem(REPO, revision=sha, tasks=["task_0", "task_1"], cache_dir=cache, local_files_only=True)
    for t in s.tasks:
        s.model(t)
    assert hub.log == []


def test_preload_script_writes_exactly_the_exports_files(hub, system, tmp_path):
    """`spaces_app/preload.py` (what regenerates the committed line) against an export: every listed file is one of
    the export's files the demo tasks need, none is missing, and the rest of README.md is left alone."""
    folder, files = system
    readme = tmp_path / "README.md"
    shutil.copy(SPACE_DIR / "README.md", readme)
    before = readme.read_text()
    cmd = [sys.executable, str(SPACE_DIR / "preload.py"), "--readme", str(readme), "--folder", str(folder),
           "--repo", REPO]
    env = dict(os.environ, PYTHONPATH=str(SPACE_DIR.parent))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "updated" in out.stdout, out.stderr
    repo, names, rev = space.parse_preload(readme)
    assert (repo, rev) == (REPO, None) and names == sorted(files)
    (entry,) = metadata_load(readme)["preload_from_hub"]
    listed = entry.split()[1].split(",")
    wanted = ["config.json"] + [f"tasks/{t}.json" for t in sorted(files)]
    wanted += list(dict.fromkeys(component_filename(c.id) for t in sorted(files) for c in files[t].components))
    assert listed == wanted and all((folder / f).is_file() for f in listed)
    # only the list changed: other keys, the comments and the page are as committed
    strip = lambda text: re.sub(r'preload_from_hub:\n(  - "[^"]*"\n)+', "", text)  # noqa: E731
    assert strip(readme.read_text()) == strip(before)
    assert {k: v for k, v in metadata_load(readme).items() if k != "preload_from_hub"} == \
        {k: v for k, v in metadata_load(SPACE_DIR / "README.md").items() if k != "preload_from_hub"}
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "already up to date" in again.stdout


DEMO_EXPORT = SPACE_DIR.parent / "runs" / "quickstart" / "export"


def test_committed_preload_line_names_the_demo_tasks():
    """The committed line serves the quickstart's tasks; with a `make demo` export present, its exact files."""
    sys.path.insert(0, str(SPACE_DIR.parent / "training"))
    from evolve import load_config

    repo, tasks, _ = space.parse_preload(SPACE_DIR / "README.md")
    assert repo == "mu2hub/quickstart" and tasks == sorted(load_config(str(SPACE_DIR.parent / "training/configs/quickstart.py"))["tasks"])
    (entry,) = metadata_load(SPACE_DIR / "README.md")["preload_from_hub"]
    listed = entry.split()[1].split(",")
    assert len(listed) == len(set(listed)) and all(re.fullmatch(r"components/([0-9a-f]{2})/\1[0-9a-f]{62}\.safetensors", f)
                                                   for f in listed[1 + len(tasks):])
    if (DEMO_EXPORT / "config.json").is_file():  # after `make demo`: the line must be this export's (the demo is deterministic)
        (line,) = space.preload_lines(repo, tasks, folder=DEMO_EXPORT)
        assert entry == line, "spaces_app/README.md is stale: run `python spaces_app/preload.py`"


# ---------------------------------------------------------------------------------------------------
# The launched app, through gradio_client
# ---------------------------------------------------------------------------------------------------


def _check(result: dict, expected: list[dict]) -> None:
    got = [(c["label"], c["confidence"]) for c in result["confidences"]]
    assert result["label"] == expected[0]["label"]
    assert [g[0] for g in got] == [e["label"] for e in expected]
    np.testing.assert_allclose([g[1] for g in got], [e["score"] for e in expected], rtol=1e-6)


def test_client_predictions_match_predict(app, images):
    _, _, client = app
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/classify", "/classify_all", "/task_info"} <= set(named)
    outputs = {e: [r["label"] for r in named[e]["returns"]] for e in ("/classify", "/classify_all", "/task_info")}
    assert outputs == {"/classify": ["Prediction (top 5 classes, probability)"], "/classify_all": ["All tasks"],
                       "/task_info": ["Task card", "Path through the system"]}  # named, never value_N
    for task, key in (("task_0", "rgb"), ("task_1", "rgb2")):
        result = client.predict(handle_file(str(images[key])), task, api_name="/classify")
        _check(result, _reference(task, Image.open(images[key])))


def test_client_all_tasks_mode(app, images):
    _, _, client = app
    table = client.predict(handle_file(str(images["rgb"])), api_name="/classify_all")
    rows = {r[0]: r for r in table["data"]}
    assert sorted(rows) == ["task_0", "task_1", "task_2"]
    for task, row in rows.items():
        ref = _reference(task, Image.open(images["rgb"]))
        # class names are quoted, so a class called "0.9" cannot be read as a probability
        assert row[1] == space.quoted(ref[0]["label"]) and row[2] == pytest.approx(ref[0]["score"], abs=1e-4)
        assert row[3].startswith(f"{space.quoted(ref[0]['label'])} {ref[0]['score']:.2f}")
    assert table["headers"] == space.TABLE_HEADERS


def test_client_task_info(app):
    _, _, client = app
    md, fig = client.predict("task_2", api_name="/task_info")
    assert "task_2" in md and "0.700" in md and "activated parameters" in md and "MB" in md
    assert "task_0 (5)" in md and Image.open(fig).size[0] > 300


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # gradio opens the 10k image to sniff it
def test_bad_input_gives_a_message_and_the_app_keeps_serving(app, images, tmp_path):
    _, _, client = app
    with pytest.raises(AppError, match="No image"):
        client.predict(None, "task_0", api_name="/classify")
    with pytest.raises(AppError, match="No image"):
        client.predict(None, api_name="/classify_all")
    # grayscale, RGBA and a 1-pixel image are converted, as TaskModel.predict converts them
    for key in ("gray", "rgba", "pixel"):
        result = client.predict(handle_file(str(images[key])), "task_1", api_name="/classify")
        _check(result, _reference("task_1", Image.open(images[key])))
    # a 10,000 x 10,000 image is reduced before preprocessing, not refused
    big = tmp_path / "big.png"
    Image.new("L", (10_000, 10_000), 90).save(big, compress_level=1)
    result = client.predict(handle_file(str(big)), "task_0", api_name="/classify")
    _check(result, _reference("task_0", load_image(str(big))))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG but not really")
    with pytest.raises(AppError):
        client.predict(handle_file(str(junk)), "task_0", api_name="/classify")
    result = client.predict(handle_file(str(images["rgb"])), "task_0", api_name="/classify")
    _check(result, _reference("task_0", Image.open(images["rgb"])))


def test_task_removed_from_the_repo(system, images, tmp_path):
    folder, _ = system
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    demo = space.build_demo(str(copy), examples={})
    client = Client(_launch(demo), verbose=False)
    try:
        (copy / "tasks" / "task_2.json").unlink()
        with pytest.raises(AppError, match="'task_2' is no longer available.*task_0, task_1"):
            client.predict(handle_file(str(images["rgb"])), "task_2", api_name="/classify")
        table = client.predict(handle_file(str(images["rgb"])), api_name="/classify_all")
        assert [r[1] for r in table["data"]][2] == "(unavailable)"
        result = client.predict(handle_file(str(images["rgb"])), "task_0", api_name="/classify")
        assert result["label"] in LABELS["task_0"]
    finally:
        demo.close()


# ---------------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing; a failed install fails the test (never skips)."""
    path = shutil.which("chromium")
    if path:
        return path
    if shutil.which("apt-get") is None:
        pytest.fail("chromium is not installed and there is no apt-get to install it: install Debian's `chromium`")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        r = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            pytest.fail(f"installing chromium failed: `{' '.join(sudo + cmd)}` exited {r.returncode}:\n"
                        f"{(r.stderr or r.stdout)[-3000:]}")
    path = shutil.which("chromium")
    if not path:
        pytest.fail("apt-get installed chromium but no `chromium` is on PATH")
    return path


def test_browser_answer_card_and_path_above_the_fold(app, images, chromium):
    """A 1280x800 window: after Classify, the prediction, the task card and the path figure are all in view without
    scrolling; the screenshot is kept as tests/artifacts/space.png (and the all-tasks view as space_all_tasks.png)."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError as e:  # part of the `test` extra: a missing package is a broken set-up, not a skip
        pytest.fail(f"playwright is not installed ({e}); `pip install -e '.[test]'`")
    _, url, _ = app
    expected = _reference("task_0", Image.open(images["rgb"]))[0]["label"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url, wait_until="networkidle")
            page.locator("input[type=file]").first.set_input_files(str(images["rgb"]))
            page.get_by_role("button", name="Classify", exact=True).click()
            answer = page.get_by_test_id("label-output-value")
            expect(answer).to_have_text(expected, timeout=30_000)
            card = page.locator("#mu2hub-task-card")
            expect(card).to_contain_text("test accuracy")
            expect(page.get_by_text(REPO, exact=True).first).to_be_visible()  # the header names the repo, not a path
            figure = page.locator("#mu2hub-path-figure img").first
            expect(figure).to_be_visible()
            page.wait_for_timeout(300)  # let the layout settle before measuring
            boxes = {"prediction": answer.bounding_box(), "task card": card.bounding_box(), "path figure": figure.bounding_box()}
            page.screenshot(path=str(ARTIFACTS / "space.png"))  # the viewport only: what is above the fold
            below = {k: b for k, b in boxes.items() if b is None or b["y"] < 0 or b["y"] + b["height"] > 800 or b["width"] < 50}
            assert not below, f"not fully above the fold of a 1280x800 window: {below}"
            assert page.evaluate("window.scrollY") == 0
            assert boxes["path figure"]["height"] > 150  # drawn at a readable size, not a thumbnail
            page.get_by_role("button", name="All tasks", exact=True).click()
            expect(page.get_by_text("task_2", exact=True).first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "space_all_tasks.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "space.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------------
# The Space folder: front matter and the thin app.py
# ---------------------------------------------------------------------------------------------------


def test_space_front_matter():
    from huggingface_hub import metadata_load

    meta = metadata_load(SPACE_DIR / "README.md")
    assert (meta["sdk"], str(meta["sdk_version"]), meta["app_file"]) == ("gradio", "6.31.0", "app.py")
    (entry,) = meta["preload_from_hub"]
    repo, files = entry.split()[:2]
    files = files.split(",")
    assert files[0] == "config.json" and any(f.startswith("tasks/") for f in files)
    assert all(f.startswith(("config.json", "tasks/", "components/")) for f in files)
    assert (SPACE_DIR / "app.py").is_file() and "mu2hub" in (SPACE_DIR / "requirements.txt").read_text()


def test_app_picks_what_to_serve(monkeypatch, system, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("space_app", SPACE_DIR / "app.py")
    app_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_module)
    for var in ("MU2HUB_REPO", "MU2HUB_REVISION", "MU2HUB_TASKS", "MU2HUB_LOCAL_FILES_ONLY", "MU2HUB_DEMO_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MU2HUB_REPO", REPO)
    monkeypatch.setenv("MU2HUB_TASKS", "task_0,task_1")
    assert app_module.target() == (REPO, {"revision": None, "tasks": ["task_0", "task_1"], "local_files_only": False})
    monkeypatch.delenv("MU2HUB_REPO")
    monkeypatch.delenv("MU2HUB_TASKS")
    monkeypatch.setenv("MU2HUB_DEMO_DIR", str(system[0]))
    assert app_module.target() == (str(system[0]), {"tasks": None})
    monkeypatch.setenv("MU2HUB_DEMO_DIR", str(tmp_path / "no-export-here"))
    repo, options = app_module.target()  # on the Space: what preload_from_hub pinned
    assert repo == "mu2hub/quickstart" and options["tasks"] and options["local_files_only"] is False


def test_preload_script_pins_the_pushed_commit_and_refuses_bad_readmes(hub, system, tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(SPACE_DIR / "README.md", readme)
    env = dict(os.environ, PYTHONPATH=str(SPACE_DIR.parent))
    cmd = [sys.executable, str(SPACE_DIR / "preload.py"), "--readme", str(readme), "--repo", REPO, "--repo-files",
           "--revision", "main", "--task", "task_1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert space.parse_preload(readme) == (REPO, ["task_1"], hub.head(REPO))
    (tmp_path / "bare.md").write_text("# no front matter\n")
    with pytest.raises(mu2hub.Mu2hubError, match="no YAML front matter"):
        space.write_preload(tmp_path / "bare.md", ["x config.json"])
    (tmp_path / "nokey.md").write_text("---\nsdk: gradio\n---\n")
    with pytest.raises(mu2hub.Mu2hubError, match="no preload_from_hub: key"):
        space.write_preload(tmp_path / "nokey.md", ["x config.json"])
    bad = subprocess.run([sys.executable, str(SPACE_DIR / "preload.py"), "--readme", str(tmp_path / "nokey.md"),
                          "--repo", REPO, "--folder", str(system[0])], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "no preload_from_hub: key" in bad.stderr
