"""Exporting an evolved system to the loopback Hub: partial download by bytes, incremental pushes counted from
what the server received, concurrent exporters, interrupted pushes, bad input, the card, figures and probes."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from huggingface_hub import ModelCard

import mu2hub
from mu2hub import cli
from mu2hub.constants import component_filename
from mu2hub.errors import ComponentIntegrityError, ExportError, NotAMu2hubRepoError, PushInterruptedError
from mu2hub.evolution.evolve import evolve
from mu2hub.publishing.publish import export, export_system
from mu2hub.hub.store import LocalStore
from mu2hub.inference.probe import check_probe, make_probe, verify

from hubserver import HubError
from locations import REPO, TINY_CONFIG, TRAINING

sys.path.insert(0, str(TRAINING))
from evolve import load_config  # noqa: E402

TASKS = ["digits", "shapes/label_scale"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real tiny evolution: `one` holds digits; `two` is the same run after one more task was evolved."""
    base = tmp_path_factory.mktemp("runs")
    cfg = load_config(str(TINY_CONFIG))
    evolve(cfg, base / "two", agent="a", tasks=["digits"], quiet=True)
    shutil.copytree(base / "two", base / "one")
    evolve(cfg, base / "two", agent="b", tasks=["shapes/label_scale"], quiet=True)
    return SimpleNamespace(one=base / "one", two=base / "two")


@pytest.fixture(scope="module")
def published(hub, runs):
    repo = "publish/system"
    result = export(runs.two, repo)
    return SimpleNamespace(repo=repo, result=result, files=hub.files(repo))


def task_file(files, task):
    return json.loads(files[f"tasks/{task}.json"])


def component_files(tf):
    return {component_filename(c["id"]) for c in tf["path"]["components"]}


# ---------------------------------------------------------------------------------------------------
# Acceptance: per-task download is exact; verify passes
# ---------------------------------------------------------------------------------------------------


def test_each_task_downloads_only_its_own_files(hub, published, tmp_path, capsys):
    files = published.files
    for task in TASKS:
        tf = task_file(files, task)
        hub.reset_log()
        model = mu2hub.from_pretrained(published.repo, task=task, cache_dir=tmp_path / task.replace("/", "_"))
        wanted = {"config.json", f"tasks/{task}.json"} | component_files(tf)
        assert sorted(hub.downloaded_files(published.repo)) == sorted(wanted)
        assert hub.bytes_downloaded(published.repo) == sum(len(files[f]) for f in wanted)
        assert model.download_bytes == sum(len(files[f]) for f in component_files(tf))
    # the run's system/ holds every kept child's components; only the referenced ones were published
    run_components = {p.relative_to(runs_system(published)).as_posix() for p in runs_system(published).glob("components/*/*")}
    published_components = {f for f in files if f.startswith("components/")}
    root = json.loads(files["root.json"])  # the root path, a parent for contributors' new tasks
    referenced = set().union(*(component_files(task_file(files, t)) for t in TASKS), component_files(root))
    assert published_components == referenced and referenced < run_components
    assert cli.main(["verify", published.repo]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and out.count("probe ok") == 2


def runs_system(published) -> Path:
    return Path(published.result.plan.source)


def test_task_files_record_sizes_sharing_and_probe(published, runs):
    files = published.files
    first, second = (task_file(files, t) for t in TASKS)
    run_first = json.loads((runs.two / "system/tasks/digits.json").read_text())
    for tf in (first, second):
        comps = {c["id"]: c for c in tf["path"]["components"]}
        assert tf["sizes"]["activated_params"] == sum(c["params"] for c in tf["path"]["components"])
        assert tf["sizes"]["bytes"] == sum(c["bytes"] for c in comps.values()) == sum(len(files[component_filename(i)]) for i in comps)
        created = set(tf["lineage"]["created"])
        assert tf["sizes"]["new_params"] == sum(c["params"] for i, c in comps.items() if i in created)
        probe = tf["probe"]
        assert probe["seed"] == 0 and probe["num_images"] == 4 and probe["image_size"] == tf["path"]["image_size"]
        assert len(probe["top1"]) == 4 and np.shape(probe["logits"]) == (4, len(tf["labels"])) and probe["atol"] > 0
    # digits came first in the stream: it shares with no earlier task; shapes lists digits for what both use
    shared = {c["id"] for c in first["path"]["components"]} & {c["id"] for c in second["path"]["components"]}
    assert first["sizes"]["shared_with"] == {}
    assert second["sizes"]["shared_with"] == {cid: ["digits"] for cid in shared}
    # the published file is the run's best path plus the exporter's sizes and probe
    for key in ("path", "labels", "metrics", "lineage", "hparams", "preprocessing"):
        assert first[key] == run_first[key]


def test_model_card_and_figures(hub, published, runs):
    card = ModelCard.load(published.repo)
    card.validate()  # the Hub's YAML check
    data = card.data
    assert data.library_name == "mu2hub" and data.pipeline_tag == "image-classification"
    assert "mu2net" in data.tags and data.datasets is None  # bundled and generated data: no Hub dataset ids
    accuracy = {r.dataset_config: r.metric_value for r in data.eval_results}
    for task in TASKS:
        run_tf = json.loads((runs.two / f"system/tasks/{task}.json").read_text())
        assert accuracy[task] == pytest.approx(run_tf["metrics"]["test_accuracy"], abs=1e-6)
        tf = task_file(published.files, task)
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {task} |"))
        assert f"{tf['sizes']['activated_params']:,}" in row and f"{tf['sizes']['bytes'] / 1e6:.3f}" in row
    assert f'mu2hub.from_pretrained("{published.repo}", task="digits")' in card.text
    assert "](figures/system.png)" in card.text and "](figures/params.png)" in card.text
    for fig in ("figures/system.png", "figures/params.png"):
        assert published.files[fig].startswith(PNG) and len(published.files[fig]) > 5000


# ---------------------------------------------------------------------------------------------------
# Acceptance: incremental push
# ---------------------------------------------------------------------------------------------------


def test_second_export_uploads_only_the_new_task(hub, runs, capsys):
    repo = "publish/incremental"
    hub.reset_log()
    first = export(runs.one, repo)
    ops1 = hub.committed_operations(repo)
    files1 = hub.files(repo)
    assert sorted(p for p, _ in ops1) == sorted(p for p in files1 if p != ".gitattributes")
    assert first.operations == len(ops1) and first.bytes == sum(n for _, n in ops1)

    hub.reset_log()
    second = export(runs.two, repo)
    ops2 = hub.committed_operations(repo)
    files2 = hub.files(repo)
    shapes = task_file(files2, "shapes/label_scale")
    new_components = component_files(shapes) - set(files1)
    expected = new_components | {"tasks/shapes/label_scale.json", "README.md", "figures/system.png", "figures/params.png"}
    assert sorted(p for p, _ in ops2) == sorted(expected)  # nothing else was sent, not even unchanged files
    assert sum(n for _, n in ops2) == sum(len(files2[p]) for p in expected) == second.bytes
    assert files2["tasks/digits.json"] == files1["tasks/digits.json"] and files2["config.json"] == files1["config.json"]
    assert [len(c.paths) for c in second.commits] == [len(new_components), 4]
    assert second.commits[1].parent is not None  # the shared files went in on a pinned parent

    hub.reset_log()
    third = export(runs.two, repo)
    assert hub.committed_operations(repo) == [] and third.commits == []
    with capsys.disabled():
        print(f"\n[export] first: {len(ops1)} ops, {first.bytes:,} B; second (+1 task): {len(ops2)} ops, "
              f"{second.bytes:,} B ({len(new_components)} components); third: 0 ops")


# ---------------------------------------------------------------------------------------------------
# Acceptance: concurrent exporters of disjoint tasks
# ---------------------------------------------------------------------------------------------------


def test_concurrent_exporters_of_disjoint_tasks_both_land(hub, runs, tmp_path):
    repo = "publish/concurrent"
    both_planned = threading.Barrier(2, timeout=60)
    a_done = threading.Event()
    results, errors = {}, []

    def run(task, callback):
        try:
            results[task] = export(runs.two, repo, tasks=[task], callback=callback)
        except BaseException as e:  # surfaced below
            errors.append(e)
        finally:
            if task == "digits":
                a_done.set()

    b_planned_final = threading.Event()

    def make_callback(is_b: bool):
        planned = []

        def callback(event, payload):
            if event != "plan":
                return
            if not planned:
                planned.append(payload)
                both_planned.wait()  # both exporters read the same (empty) head before either commits
            if payload.components:
                return
            if is_b:  # B has planned its final commit on a head that A is about to move: its parent goes stale
                b_planned_final.set()
                a_done.wait(60)
            else:
                b_planned_final.wait(60)
        return callback

    hub.create_repo(repo)
    hub.reset_log()
    threads = [threading.Thread(target=run, args=("digits", make_callback(is_b=False))),
               threading.Thread(target=run, args=("shapes/label_scale", make_callback(is_b=True)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    stale = [r for r in hub.log if r.repo_id == repo and "/commit/" in r.path and r.status == 412]
    assert stale and results["shapes/label_scale"].retries >= 1
    files = hub.files(repo)
    assert {p for p in files if p.startswith("tasks/")} == {f"tasks/{t}.json" for t in TASKS}
    card = files["README.md"].decode()
    assert all(f"| {t} |" in card for t in TASKS)  # the retried card is built from both exporters' tasks
    report = verify(repo, cache_dir=tmp_path / "v")
    assert report.ok, report.format()


# ---------------------------------------------------------------------------------------------------
# Interrupted push
# ---------------------------------------------------------------------------------------------------


def test_interrupted_push_leaves_every_task_whole_and_rerun_finishes(hub, runs, tmp_path):
    repo = "publish/interrupted"
    export(runs.one, repo)
    before = hub.files(repo)

    def fail_final(event, payload):
        if event == "plan" and not payload.components and payload.final:
            hub.fail_next_commit_with(500, "Injected failure: connection lost mid-push")

    with pytest.raises(PushInterruptedError, match="run the same export again"):
        export(runs.two, repo, callback=fail_final)
    after = hub.files(repo)
    # new components landed, but no task file or shared file changed
    assert {p: d for p, d in after.items() if not p.startswith("components/")} == \
        {p: d for p, d in before.items() if not p.startswith("components/")}
    assert set(after) > set(before)
    for path in [p for p in after if p.startswith("tasks/")]:
        assert component_files(json.loads(after[path])) <= set(after)
    model = mu2hub.from_pretrained(repo, task="digits", cache_dir=tmp_path / "c1")
    assert model.task_file.probe is not None
    with pytest.raises(mu2hub.TaskNotFoundError):
        mu2hub.from_pretrained(repo, task="shapes/label_scale", cache_dir=tmp_path / "c1")

    hub.reset_log()
    rerun = export(runs.two, repo)
    assert [op for op in hub.committed_operations(repo) if op[0].startswith("components/")] == []  # already uploaded
    assert rerun.plan.tasks == {"digits": "unchanged", "shapes/label_scale": "new"}
    assert verify(repo, cache_dir=tmp_path / "v").ok


def test_push_killed_between_commits_then_rerun(hub, runs, tmp_path):
    """SIGKILL right after the components commit (the exporter is held there so the kill lands deterministically)."""
    repo = "publish/killed"
    export(runs.one, repo)
    before = hub.files(repo)
    code = ("import time\nfrom mu2hub.publishing.publish import export\n"
            "def hold(event, payload):\n    print(event, flush=True)\n    if event == 'commit': time.sleep(120)\n"
            f"export({str(runs.two)!r}, {repo!r}, callback=hold)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == "commit":
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "commit\n" in lines, "".join(lines)[-2000:]
    after = hub.files(repo)
    assert [p for p in after if p.startswith("tasks/")] == ["tasks/digits.json"] and after["README.md"] == before["README.md"]
    assert set(after) - set(before) <= {p for p in after if p.startswith("components/")}
    rerun = export(runs.two, repo)
    assert [len(c.paths) for c in rerun.commits] == [4]  # task file + card + 2 figures; components were there
    assert verify(repo, cache_dir=tmp_path / "v").ok


# ---------------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing lost
# ---------------------------------------------------------------------------------------------------


def test_target_that_is_not_a_mu2hub_repo_is_left_alone(hub, runs, tmp_path):
    repo = "publish/bert"
    hub.create_repo(repo)
    hub.write_file(repo, "config.json", json.dumps({"model_type": "bert", "library_name": "transformers"}).encode())
    head = hub.head(repo)
    with pytest.raises(NotAMu2hubRepoError, match="library_name='transformers'"):
        export(runs.one, repo)
    other = "publish/weights"
    hub.create_repo(other)
    hub.write_file(other, "model.safetensors", b"\0" * 64)
    with pytest.raises(NotAMu2hubRepoError, match="model.safetensors"):
        export(runs.one, other)
    assert hub.head(repo) == head
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert cli.main(["export", "--run", str(runs.one), "--to", str(folder)]) == 2
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_task_without_test_metrics_is_refused_before_any_write(hub, runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs.one, run)
    f = run / "system/tasks/digits.json"
    tf = json.loads(f.read_text())
    del tf["metrics"]["test_accuracy"]
    f.write_text(json.dumps(tf))
    with pytest.raises(ExportError, match="digits.*metrics.test_accuracy"):
        export(run, "publish/no-metrics")
    with pytest.raises(HubError, match="Repository not found: publish/no-metrics"):
        hub.head("publish/no-metrics")  # not even created


def test_component_not_matching_its_id_is_refused_before_any_upload(hub, runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs.one, run)
    tf = LocalStore(run / "system").read_task("digits")
    victim = run / "system" / tf.components[-1].filename
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    repo = "publish/corrupt-source"
    hub.reset_log()
    with pytest.raises(ComponentIntegrityError, match=tf.components[-1].id):
        export(run, repo)
    assert hub.committed_operations(repo) == []
    with pytest.raises(HubError, match=f"Repository not found: {repo}"):
        hub.head(repo)  # not even created


def test_target_holding_another_system_is_refused(hub, published, runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs.one, run)
    config = json.loads((run / "system/config.json").read_text())
    (run / "system/config.json").write_text(json.dumps(dict(config, mlp_dim=2 * config["mlp_dim"])))
    head = hub.head(published.repo)
    with pytest.raises(ExportError, match="holds another system"):
        export(run, published.repo)
    assert hub.head(published.repo) == head


# ---------------------------------------------------------------------------------------------------
# verify and probes
# ---------------------------------------------------------------------------------------------------


def test_verify_fails_on_a_tampered_probe_or_component(hub, published, tmp_path, capsys):
    repo = "publish/tampered"
    hub.create_repo(repo)
    files = dict(published.files)
    digits = task_file(files, "digits")
    digits["probe"]["logits"][0][0] += 10 * digits["probe"]["atol"] + 1.0
    files["tasks/digits.json"] = json.dumps(digits).encode()
    for path, data in files.items():
        if path != ".gitattributes":
            hub.write_file(repo, path, data)
    assert cli.main(["verify", repo, "--task", "shapes/label_scale", "--cache-dir", str(tmp_path / "a")]) == 0
    assert cli.main(["verify", repo, "--task", "digits", "--cache-dir", str(tmp_path / "b")]) == 1
    assert "probe: logits differ" in capsys.readouterr().out
    shapes = task_file(files, "shapes/label_scale")
    head = next(c for c in shapes["path"]["components"] if c["slot"] == "head")
    path = component_filename(head["id"])
    hub.write_file(repo, path, files[path][:-4] + b"\0\0\0\0")
    assert cli.main(["verify", repo]) == 1
    out = capsys.readouterr().out
    assert head["id"] in out and "does not match its id" in out


def test_probe_is_checked_with_a_tolerance(published, tmp_path):
    model = mu2hub.from_pretrained(published.repo, task="digits", cache_dir=tmp_path / "c")
    probe = make_probe(model)
    assert probe == model.task_file.probe  # deterministic on one machine
    check = check_probe(model, probe)
    assert check.ok and check.bit_exact and check.max_abs_diff < 1e-6  # stored logits are rounded to 7 digits
    atol = probe["atol"]
    jitter = np.random.default_rng(1).uniform(-0.5 * atol, 0.5 * atol, np.shape(probe["logits"]))
    # as if recorded on another backend: logits off by up to half the tolerance, another digest -> still ok
    near = dict(probe, logits=(np.asarray(probe["logits"]) + jitter).tolist(), logits_sha256="0" * 64)
    check = check_probe(model, near)
    assert check.ok and not check.bit_exact and 0 < check.max_abs_diff <= 0.5 * atol
    far = dict(probe, logits=(np.asarray(probe["logits"]) + 3 * atol).tolist())
    assert "logits differ" in check_probe(model, far).problems[0]
    logits = np.asarray(probe["logits"])
    clear = int(np.argmax(np.ptp(np.sort(logits, 1)[:, -2:], axis=1)))  # the image with the widest top-2 margin
    flipped = list(probe["top1"])
    flipped[clear] = (flipped[clear] + 1) % logits.shape[1]
    assert any("top-1" in p for p in check_probe(model, dict(probe, top1=flipped)).problems)
    assert not check_probe(model, None).ok


# ---------------------------------------------------------------------------------------------------
# Local folders, dry runs, republishing, the driver
# ---------------------------------------------------------------------------------------------------


def test_local_folder_export_dry_run_and_driver(runs, tmp_path, capsys, monkeypatch):
    dest = tmp_path / "export"
    assert cli.main(["export", "--run", str(runs.two), "--to", str(dest), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+ tasks/digits.json" in out and "+ README.md" in out and "total: " in out and not dest.exists()
    written = export_system(runs.two, dest)  # what training/demo.py calls
    assert sorted(written) == TASKS
    store = LocalStore(dest)
    root = store.read_root()
    referenced = {c.filename for tf in [*written.values(), root] for c in tf.components}
    assert {p.relative_to(dest).as_posix() for p in dest.glob("components/*/*")} == referenced
    assert (dest / "README.md").read_text().startswith("---") and (dest / "figures/system.png").read_bytes().startswith(PNG)
    assert verify(dest).ok and store.list_tasks() == TASKS
    # the export/ driver, in process: nothing left to do
    monkeypatch.setattr(sys, "argv", ["export.py", "--run", str(runs.two), "--to", str(dest)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO / "export/export.py"), run_name="__main__")
    assert e.value.code == 0 and "nothing to do" in capsys.readouterr().out


def test_export_from_a_published_repo_reproduces_it(hub, published):
    mirror = "publish/mirror"
    result = export(published.repo, mirror, repo_id=published.repo)
    assert result.plan.tasks == {t: "new" for t in TASKS}
    assert hub.files(mirror) == published.files  # probes still reproduce, so every file is byte-identical
