"""Contributing a task back, against the loopback Hub through the real huggingface_hub client.

A tiny system is evolved and exported once; a new task is evolved on top of it from an imagefolder of generated
PNGs (mixed modes and sizes), pushed as a pull request, validated and merged; old tasks stay bit-identical.
Bad pull requests are crafted with `HfApi.create_commit(create_pr=True)`; bad input fails before anything is pushed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from PIL import Image

import mu2hub
from mu2hub import cli
from mu2hub.contrib.contribute import admit_parents, infer_space, push_task
from mu2hub.errors import ByteCapError, ContributionError, RevisitNotBetterError, TaskExistsError
from mu2hub.evolution.evolve import evolve
from mu2hub.format.system import Dims, component_bytes, component_id, dump_json
from mu2hub.publishing.publish import export
from mu2hub.testing import random_system
from mu2hub.inference.probe import probe_images, verify

from locations import TINY_CONFIG, TRAINING

sys.path.insert(0, str(TRAINING))
from evolve import load_config  # noqa: E402

REPO = "contrib/system"
OLD_TASKS = ["digits", "shapes/label_scale"]
SETTINGS = {"scorer": {"base": 0.95}, "children_per_generation": 2, "batch_size": 32, "num_validations": 2,
            "train_examples_between_validations_max": 256}
MODES = ("RGB", "L", "RGBA", "P")
SIZES = (8, 12, 16)


SIZE_CLASSES = ["small", "medium", "large"]


def write_imagefolder(root: Path, classes: int = 3) -> Path:
    """Generated dSprites-style shapes labelled by size (scale pairs merged: 3 classes, invariant to flips, which
    evolution may switch on), as PNG files of mixed modes and sizes: <root>/<split>/<size>/<i>.png."""
    data = mu2hub.data.get_task("shapes/label_scale", image_size=16, n_train=300, n_validation=60, n_test=90, seed=3)
    for split in ("train", "validation", "test"):
        s = getattr(data, split)
        for i, (image, label) in enumerate(zip(s.images, s.labels // 2)):
            if label >= classes:
                continue
            folder = root / split / SIZE_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            size = SIZES[i % len(SIZES)]
            Image.fromarray(image).resize((size, size)).convert(MODES[i % len(MODES)]).save(folder / f"{i}.png")
    return root


def component_gets(hub, repo):
    return [f for f in hub.downloaded_files(repo) if f.startswith("components/")]


def commits_to(hub, repo):
    return [r for r in hub.log if r.method == "POST" and "/commit/" in r.path and r.repo_id == repo]


@pytest.fixture(scope="module")
def system(hub, tmp_path_factory):
    base = tmp_path_factory.mktemp("contrib")
    evolve(load_config(str(TINY_CONFIG)), base / "run", quiet=True)
    export(base / "run", REPO)
    folder = write_imagefolder(base / "shapes_png")
    return SimpleNamespace(base=base, folder=folder, files=hub.files(REPO))


@pytest.fixture(scope="module")
def contributed(hub, system):
    """add_task -> push_task (a PR) -> validate --merge, with the loopback server's view at each step."""
    before = {t: mu2hub.from_pretrained(REPO, task=t, cache_dir=system.base / "c-before").logits(probe_images(0, 6, 8))
              for t in OLD_TASKS}
    hub.reset_log()
    result = mu2hub.add_task(REPO, task="shapes_png", data=f"imagefolder:{system.folder}", budget=8,
                             evolution=SETTINGS, cache_dir=system.base / "c-add", workdir=system.base / "add", progress=False)
    fetched = component_gets(hub, REPO)
    fetched_bytes = sum(r.body_bytes for r in hub.log if r.method == "GET" and (r.repo_file or "").startswith("components/"))
    # the PR flow is what is tested here, whatever the verdict against the baseline (refusal: tested below)
    pushed = push_task(result, force=True)
    pr_files = hub.pr_files(REPO, pushed.pr_num)
    report = mu2hub.validate(REPO, pushed.pr_num, merge=True)
    return SimpleNamespace(result=result, pushed=pushed, pr_files=pr_files, report=report, before=before,
                           fetched=fetched, fetched_bytes=fetched_bytes)


# ---------------------------------------------------------------------------------------------------
# Acceptance: a new task from an imagefolder, as a PR of added files only; old tasks bit-identical
# ---------------------------------------------------------------------------------------------------


def test_new_task_pull_request_adds_only_new_files(hub, system, contributed):
    result, pushed = contributed.result, contributed.pushed
    tf = result.task_file
    assert tf.labels == sorted(SIZE_CLASSES)  # the class folders (label names from the dataset)
    new_files = sorted(["tasks/shapes_png.json"] + [c.filename for c in result.new_components])
    assert contributed.pr_files == {"added": new_files, "modified": [], "deleted": []}
    assert pushed.files == ["tasks/shapes_png.json"] + [c.filename for c in result.new_components]
    assert pushed.bytes == len(dump_json(tf.to_json())) + result.new_bytes
    assert result.new_components and all(c.filename not in system.files for c in result.new_components)
    # the PR description reports metrics, parameters, bytes and lineage
    details = HfApi().get_discussion_details(REPO, pushed.pr_num)
    text = details.events[0].content
    for needle in ("test accuracy", "scratch (total)", "fine-tune (total)", "test images", "activated parameters", "new parameters", "bytes", "Lineage",
                   f"{tf.metrics['test_accuracy']:.4f}", "mu2hub validate"):
        assert needle in text, needle
    # lazily downloaded: only sampled parents' components, counted by the server; less than the whole system
    assert contributed.fetched_bytes == result.downloaded_bytes
    assert 0 < result.downloaded_bytes < result.system_bytes
    assert len(contributed.fetched) == len(set(contributed.fetched))  # each component fetched once


def test_validate_accepts_and_merge_keeps_old_tasks_bit_identical(hub, system, contributed, tmp_path, capsys):
    report = contributed.report
    assert report.ok and report.merged, report.format()
    assert [c.name for c in report.checks] == ["pull request", "only additions", "file names", "no code or pickle",
                                               "components", "task files", "probe", "mergeable"]
    after = hub.files(REPO)
    for path, data in system.files.items():
        if path.startswith(("tasks/", "components/", "config.json", "root.json")):
            assert after[path] == data, path  # every published file byte-identical
    for t in OLD_TASKS:
        model = mu2hub.from_pretrained(REPO, task=t, cache_dir=tmp_path / "after")
        np.testing.assert_array_equal(model.logits(probe_images(0, 6, 8)), contributed.before[t])
    assert verify(REPO, cache_dir=tmp_path / "verify").ok  # every task's probe, the new one included
    new = mu2hub.from_pretrained(REPO, task="shapes_png", cache_dir=tmp_path / "after")
    m = new.task_file.metrics
    assert m["test_accuracy"] > m["chance"] and m["from_scratch_test_accuracy"] is not None
    assert m["finetune_test_accuracy"] is not None and m["search_examples"] == contributed.result.train_steps * 32
    assert new.predict(Image.new("RGB", (20, 20)))[0]["label"] in new.labels
    with capsys.disabled():
        r = contributed.result
        print(f"\n[add-task] shapes_png: test {m['test_accuracy']:.4f} vs from scratch {m['from_scratch_test_accuracy']:.4f}, "
              f"fine-tuned {m['finetune_test_accuracy']:.4f} (same {r.train_steps} steps; chance {m['chance']:.3f}); PR {contributed.pushed.bytes:,} B "
              f"({len(r.new_components)} new components, {r.new_bytes:,} B); downloaded {r.downloaded_bytes:,} of "
              f"{r.system_bytes:,} B")


# ---------------------------------------------------------------------------------------------------
# Acceptance: validate rejects bad pull requests, each with a clear reason
# ---------------------------------------------------------------------------------------------------


def _bad_pr(files: dict[str, bytes]) -> int:
    ops = [CommitOperationAdd(p, d) for p, d in files.items()]
    return HfApi().create_commit(REPO, ops, commit_message="contribution", create_pr=True).pr_num


def _component(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return component_bytes({"scale": rng.standard_normal(16).astype(np.float32),
                            "bias": rng.standard_normal(16).astype(np.float32)}, "norm")


def _path(data: bytes) -> str:
    cid = component_id(data)
    return f"components/{cid[:2]}/{cid}.safetensors"


def _verdicts(report):
    return {c.name: (c.ok, " ".join(c.details)) for c in report.checks}


@pytest.mark.parametrize("case", ["modifies", "traversal", "id", "truncated", "pickle"])
def test_validate_rejects_bad_pull_requests(hub, contributed, case):
    published = next(p for p in hub.files(REPO) if p.startswith("components/"))
    good = _component(1)
    truncated = good[:-12]
    files, check, reason = {
        "modifies": ({published: _component(2)}, "only additions", f"modifies {published}"),
        "traversal": ({"tasks/..\\..\\..\\evil.json": b"{}"}, "file names", "path traversal"),
        "id": ({_path(good): _component(3)}, "components", "does not match the id"),
        "truncated": ({_path(truncated): truncated}, "components", "truncated"),
        "pickle": ({"model.pkl": b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00."}, "no code or pickle", "pickle"),
    }[case]
    num = _bad_pr(files)
    head = hub.head(REPO)
    report = mu2hub.validate(REPO, num, merge=True)
    ok, details = _verdicts(report)[check]
    assert not report.ok and not report.merged and not ok, report.format()
    assert reason in details, report.format()
    assert hub.head(REPO) == head  # not merged
    assert "REJECT" in report.format()
    assert cli.main(["validate", REPO, "--pr", str(num), "--merge"]) == 1 and hub.head(REPO) == head


# ---------------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing pushed
# ---------------------------------------------------------------------------------------------------


def test_contribution_transfers_beating_the_same_vit_trained_alone(contributed):
    """The parent system starts from a pretrained root (tests/support/tiny_config.py), so the evolved task must beat
    the same ViT trained from scratch on every example the search trained — the reason to contribute at all."""
    r = contributed.result
    m = r.task_file.metrics
    assert r.verdict_kind in ("wins", "ties", "loses")  # measurable: 90 test images, 3 classes, nothing carved
    assert m["test_accuracy"] > m["from_scratch_test_accuracy"], r.verdict()
    assert m["num_test_examples"] >= 50 and m["num_test_classes"] == 3


def _judged(metrics_update: dict) -> "AddTaskResult":
    from mu2hub.contrib.contribute import AddTaskResult

    tf = random_task_file()
    tf.metrics.update(metrics_update)
    return AddTaskResult("o/r", "0" * 40, tf.task, tf, Path("."), [], 0, 0, {}, {}, 4, 100, 1.0)


def random_task_file():
    from mu2hub.format.system import ComponentRef, TaskFile

    comps = [ComponentRef(s, f"{i:064x}", 1, 8) for i, s in enumerate(["patch_embed", "cls", "pos_embed", "norm", "head"])]
    return TaskFile("t", 8, 0, comps, ["a", "b"], metrics={"test_accuracy": 0.8, "validation_accuracy": 0.8, "chance": 0.5, "score": 0.8,
                                                             "num_test_examples": 100, "num_test_classes": 2})


def test_a_tie_is_not_a_win_and_is_not_refused():
    tied = _judged({"from_scratch_test_accuracy": 0.8, "finetune_test_accuracy": 0.7})
    assert tied.verdict_kind == "ties" and tied.beats_baseline is False
    assert "a tie is not a win" in tied.verdict()
    won = _judged({"from_scratch_test_accuracy": 0.79, "finetune_test_accuracy": 0.7})
    assert won.verdict_kind == "wins" and won.beats_baseline is True
    lost = _judged({"from_scratch_test_accuracy": 0.7, "finetune_test_accuracy": 0.81})  # loses to either: refused
    assert lost.verdict_kind == "loses" and lost.beats_baseline is False
    with pytest.raises(mu2hub.errors.BaselineNotBeatenError, match=r"below fine-tune \(total\) \(0.8100"):
        push_task(lost)


@pytest.mark.parametrize("update, says", [
    ({"num_test_examples": 49}, "the test split has 49 images (at least 50 are needed)"),
    ({"num_test_classes": 1}, "the test split holds 1 class (at least 2 are needed)"),
    ({"carved": {"validation": 12, "test": 60}}, "the validation split carved from train has 12 images"),
])
def test_too_little_data_is_not_measurable_not_a_win(update, says):
    r = _judged({"from_scratch_test_accuracy": 0.2, "finetune_test_accuracy": 0.2, **update})
    assert r.verdict_kind == "not measurable" and r.beats_baseline is None
    assert r.verdict().startswith("Not measurable") and says in r.verdict()
    assert "Not measurable" in mu2hub.contrib.contribute.describe(r)


def test_small_folder_end_to_end_says_not_measurable(hub, system, tmp_path):
    """A folder with no test split: 5% of ~180 training images carved for validation and test (9 each)."""
    data = mu2hub.data.get_task("shapes/label_scale", image_size=8, n_train=180, n_validation=1, n_test=1, seed=5)
    for i, (image, label) in enumerate(zip(data.train.images, data.train.labels // 3)):
        folder = tmp_path / "small" / ["small", "large"][label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    result = mu2hub.add_task(REPO, task="small_scale", data=f"imagefolder:{tmp_path / 'small'}", budget=2,
                             evolution=SETTINGS, cache_dir=tmp_path / "c", workdir=tmp_path / "w", progress=False)
    assert result.verdict_kind == "not measurable", result.verdict()
    assert "the test split has 9 images" in result.verdict() and "carved from train has 9 images" in result.verdict()


def test_one_class_data_fails_before_any_download(hub, system, tmp_path):
    folder = write_imagefolder(tmp_path / "one", classes=1)
    hub.reset_log()
    with pytest.raises(ValueError, match="at least 2 classes"):
        mu2hub.add_task(REPO, task="one_class", data=folder, budget=1, progress=False)
    assert hub.log == []  # not even the repo was opened


def test_missing_label_column_is_named(hub, system, tmp_path):
    import datasets

    images = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(40)]
    ds = datasets.Dataset.from_dict({"image": images, "caption": [str(i) for i in range(40)]})
    datasets.DatasetDict({"train": ds.cast_column("image", datasets.Image())}).save_to_disk(tmp_path / "ds")
    hub.reset_log()
    with pytest.raises(ValueError, match="ClassLabel.*caption|caption.*ClassLabel"):
        mu2hub.add_task(REPO, task="captions", data=f"hf:{tmp_path / 'ds'}", budget=1, progress=False)
    assert hub.log == []


def test_existing_task_name_is_refused(hub, system, contributed):
    hub.reset_log()
    with pytest.raises(TaskExistsError, match="already has task 'digits'.*revisit=True"):
        mu2hub.add_task(REPO, task="digits", data="digits", budget=1, progress=False)
    assert component_gets(hub, REPO) == [] and commits_to(hub, REPO) == []


def test_byte_cap_too_small_for_any_parent(hub, system, contributed, tmp_path):
    hub.reset_log()
    with pytest.raises(ByteCapError, match=r"max_bytes=1,000 B is too small.*smallest parent .* needs [\d,]+ B") as e:
        mu2hub.add_task(REPO, task="capped", data=system.folder, budget=1, max_bytes=1000, progress=False,
                        cache_dir=tmp_path / "c")
    assert e.value.smallest > 1000
    assert component_gets(hub, REPO) == [] and commits_to(hub, REPO) == []


def test_revisit_must_beat_the_published_score(hub, system, contributed, tmp_path):
    """A copy of the system whose digits path claims a perfect score: a revisit cannot beat it, nothing is pushed."""
    repo = "contrib/perfect"
    hub.create_repo(repo)
    for path, data in hub.files(REPO).items():
        if path == "tasks/digits.json":
            tf = json.loads(data)
            tf["metrics"]["score"] = 1.0
            data = json.dumps(tf).encode()
        if path != ".gitattributes":
            hub.write_file(repo, path, data)
    hub.reset_log()
    with pytest.raises(RevisitNotBetterError, match="did not beat"):
        mu2hub.add_task(repo, task="digits", data="digits", budget=1, revisit=True, progress=False,
                        evolution={**SETTINGS, "num_validations": 1, "train_examples_between_validations_max": 32},
                        cache_dir=tmp_path / "c")
    assert commits_to(hub, repo) == []


def test_pushing_the_same_contribution_twice_is_refused(contributed):
    with pytest.raises(ContributionError, match="already has every file"):
        push_task(contributed.result, create_pr=False, force=True)  # merged already: main has every file


def test_system_without_root_json_under_a_byte_cap(hub, tmp_path):
    """Candidates are the tasks' best paths; the cap admits the first whole path plus one task's own files."""
    files = random_system(tmp_path / "sys", dims=Dims(16, 2, 32, 4), image_size=8, num_layers=2, num_tasks=4,
                          num_classes=3)
    hub.commit_folder("contrib/generated", tmp_path / "sys")
    path = files["task_0"]
    cap = path.download_bytes + sum(c.bytes for c in path.components if c.slot in ("block.1", "norm", "head"))
    data = mu2hub.data.get_task("shapes/label_scale", image_size=8, n_train=128, n_validation=32, n_test=64)
    hub.reset_log()
    result = mu2hub.add_task("contrib/generated", task="scale", data=data, budget=2, max_bytes=cap, baseline=False,
                             evolution={**SETTINGS, "train_examples_between_validations_max": 64},
                             cache_dir=tmp_path / "c", progress=False)
    assert sorted(result.parents) == ["task_0", "task_1"] and sorted(result.excluded) == ["task_2", "task_3"]
    fetched = sum(r.body_bytes for r in hub.log if r.method == "GET" and (r.repo_file or "").startswith("components/"))
    assert fetched == result.downloaded_bytes <= cap
    assert result.task_file.lineage["parent_task"] in result.parents


def test_cli_add_task_push_validate_merge(hub, system, tmp_path, capsys):
    """`mu2hub add-task ... --push` then `mu2hub validate --merge`: progress, closing tables, exit codes."""
    repo = "contrib/cli"
    random_system(tmp_path / "sys", dims=Dims(16, 2, 32, 4), image_size=8, num_layers=2, num_tasks=2, num_classes=3)
    hub.commit_folder(repo, tmp_path / "sys")
    assert cli.main(["add-task", repo, "--task", "sizes", "--data", str(system.folder), "--budget", "2",
                     "--children-per-generation", "2", "--max-bytes", "1MB", "--no-baseline", "--push",
                     "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "downloaded" in out and "PR #" in out
    num = int(out.split("PR #")[1].split()[0])
    # the card refresh after the merge: the merge is itself a commit (of the validated files), so skip that one
    hub.fault("status", status=500, message="Injected failure: connection lost", method="POST", path_contains="/commit/",
              skip=1)
    assert cli.main(["validate", repo, "--pr", str(num), "--merge"]) == 0
    out = capsys.readouterr().out
    assert "MERGED" in out and out.count("pass") == 8
    assert "tasks/sizes.json" in hub.files(repo)
    assert "the card was NOT refreshed" in out and f"mu2hub export --repo {repo} --to {repo}" in out
    assert "| sizes |" not in hub.files(repo).get("README.md", b"").decode()
    assert cli.main(["export", "--repo", repo, "--to", repo]) == 0  # what the message says to run
    assert "| sizes |" in hub.files(repo)["README.md"].decode()
    assert cli.main(["add-task", repo, "--task", "sizes", "--data", str(system.folder)]) == 2  # exists now
    assert "already has task 'sizes'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------------------


def test_admit_parents_fits_the_union_under_the_cap():
    sizes = {"r": 10, "a": 5, "b": 7, "s": 3}
    costs = {"root": {"r", "s"}, "t1": {"a", "s"}, "t2": {"b", "s"}, "t3": {"a", "b", "s"}}
    assert admit_parents(costs, sizes, None) == list(costs)
    assert admit_parents(costs, sizes, 16, first=["root"]) == ["root"]  # 13 B; +a would be 18
    assert admit_parents(costs, sizes, 15) == ["t1", "t2", "t3"]  # smallest added bytes first: 8, +7, +0
    with pytest.raises(ByteCapError, match="smallest parent \\(t1\\) needs 8 B"):
        admit_parents(costs, sizes, 7)
    with pytest.raises(ByteCapError, match="t3"):
        admit_parents(costs, sizes, 12, required=["t3"])


def test_infer_space_picks_the_tightest_consistent_space(system):
    files = [mu2hub.from_pretrained(REPO, task=t).task_file for t in OLD_TASKS]
    assert infer_space(files) == "mu2net-ti0"  # the tiny config's space
    assert infer_space([]) == "mu2net"


# ---------------------------------------------------------------------------------------------------
# Contributing without repeating work; refusing a task that loses to its baseline
# ---------------------------------------------------------------------------------------------------


def test_push_task_from_the_workdir_never_evolves_again(hub, system, tmp_path, capsys):
    repo = "contrib/later"
    random_system(tmp_path / "sys", dims=Dims(16, 2, 32, 4), image_size=8, num_layers=2, num_tasks=2, num_classes=3)
    hub.commit_folder(repo, tmp_path / "sys")
    work = tmp_path / "work"
    assert cli.main(["add-task", repo, "--task", "sizes", "--data", str(system.folder), "--budget", "2",
                     "--children-per-generation", "2", "--workdir", str(work), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"mu2hub push-task {work}" in out and "rerun with --push" not in out and "verdict" in out
    saved = json.loads((work / "add_task_result.json").read_text())
    hub.reset_log()
    assert cli.main(["push-task", str(work)]) == 0
    out = capsys.readouterr().out
    assert "PR #" in out
    assert not [r for r in hub.log if r.method == "GET" and (r.repo_file or "").startswith("components/")]  # no evolving
    num = int(out.split("PR #")[1].split()[0])
    from mu2hub.contrib.contribute import AddTaskResult

    result = AddTaskResult.load(work)
    assert hub.pr_files(repo, num)["added"] == sorted(["tasks/sizes.json"] + [c.filename for c in result.new_components])
    pushed_tf = json.loads(hub.files(repo, revision=f"refs/pr/{num}")["tasks/sizes.json"])
    assert pushed_tf == saved["task_file"] == result.task_file.to_json()

    # the same run, had its from-scratch baseline scored higher (the result file says so): refused, then forced
    losing = tmp_path / "losing"
    import shutil

    shutil.copytree(work, losing)
    acc = saved["task_file"]["metrics"]["test_accuracy"]
    metrics = {**saved["task_file"]["metrics"], "from_scratch_test_accuracy": min(1.0, acc + 0.1)}
    (losing / "add_task_result.json").write_text(json.dumps({**saved, "task_file": {**saved["task_file"], "metrics": metrics}}))
    with pytest.raises(mu2hub.errors.BaselineNotBeatenError, match=r"below scratch \(total\).*force=True"):
        push_task(losing)
    heads = {p: hub.head(repo) for p in ("main",)}
    assert cli.main(["push-task", str(losing)]) == 2
    captured = capsys.readouterr()
    assert "LOSES to a baseline" in captured.out
    assert f"mu2hub push-task {losing} --force to push anyway" in captured.err and "force=True" not in captured.err
    assert hub.head(repo) == heads["main"]
    assert "LOSES to a baseline" in mu2hub.contrib.contribute.describe(AddTaskResult.load(losing))
    assert cli.main(["push-task", str(losing), "--force", "--no-pr"]) == 0  # insisted: a commit on the pinned parent
    assert ": commit " in capsys.readouterr().out and "tasks/sizes.json" in hub.files(repo)

    # a damaged workdir is refused before anything is sent
    comp = losing / "system" / result.new_components[0].filename
    comp.write_bytes(comp.read_bytes()[:-4])
    with pytest.raises(ContributionError, match="does not match its id"):
        push_task(losing, force=True)
    with pytest.raises(ContributionError, match="no add-task result here"):
        push_task(tmp_path / "sys")


def test_merge_refreshes_the_card_and_figures(hub, contributed):
    from huggingface_hub import ModelCard

    report = contributed.report
    assert report.merged and "README.md" in report.refreshed and "figures/system.png" in report.refreshed
    assert "card and figures refreshed" in report.format()
    card = ModelCard.load(REPO)
    order = [r.dataset_config for r in card.data.eval_results]
    assert order == [*OLD_TASKS, "shapes_png"]  # earlier tasks keep their rows, the new one comes last
    assert "| shapes_png |" in card.text
    lineage = next(line for line in card.text.splitlines() if line.startswith("- `shapes_png`"))
    assert "mu2hub add-task" in lineage and card.data.base_model is None  # contributed to this repo itself
