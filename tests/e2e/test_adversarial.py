"""Adversarial suite: malicious pull requests, tampered repos, faulty servers, bad images, careless contributors.

Every case is an instance of a class of attack or mistake (docs/CONTRIBUTING.md, "Trust model"); none may end in an
uncaught exception, a hang, or a merge of anything unchecked. Readers are the real ones (from_pretrained, info, the
Space's SpaceSystem, verify, the CLI); the Hub is the loopback server with fault injection, driven by the real
huggingface_hub client over real sockets. Fuzzers (hypothesis) for the JSON and safetensors readers are at the end,
with a bounded budget.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import mu2hub
from mu2hub import cli
from mu2hub.format import schema
from mu2hub.inference.task import TaskModel
from mu2hub.constants import component_filename, task_filename
from mu2hub.data.registry import MAX_PIXELS, open_image, to_rgb_uint8
from mu2hub.errors import (
    ArgumentError,
    ComponentIntegrityError,
    CorruptImageError,
    DownloadTimeoutError,
    FormatError,
    HubRequestError,
    HubUnavailableError,
    ImageInputError,
    InvalidRepoIdError,
    Mu2hubError,
    RepoNotFoundError,
    ValidationError,
)
from mu2hub.format.system import (
    ComponentRef,
    Dims,
    SystemConfig,
    TaskFile,
    component_bytes,
    component_id,
    dump_json,
    num_params,
    parse_component,
    read_component_file,
)
from mu2hub.inference.probe import make_probe, verify
from mu2hub.space import SpaceSystem
from mu2hub.hub.store import LocalStore, atomic_write
from mu2hub.testing import random_system

DIMS = Dims(16, 2, 32, 4)
CLASSES = 3
# No case may take longer than this: what it catches is a hang or an unbounded allocation, not slowness. An injected
# stall lasts 30 s (the loopback Hub's default), a trickled download or a 10**9-layer path would run for minutes;
# a named error comes within a few seconds, so 20 s fails every hang and leaves room for 2 loaded cores.
SECONDS = 20.0


# ---------------------------------------------------------------------------------------------------
# A small published system (with probes) and contributions to it
# ---------------------------------------------------------------------------------------------------


def _with_probes(folder: Path) -> None:
    store = LocalStore(folder)
    for t in store.list_tasks():
        tf = store.read_task(t)
        tf.metrics = {"test_accuracy": 0.5, "chance": 0.34}
        tf.probe = make_probe(mu2hub.from_pretrained(folder, task=t))
        store.write_task(tf)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("adv") / "system"
    random_system(folder, dims=DIMS, image_size=8, num_layers=2, num_tasks=2, num_classes=CLASSES)
    _with_probes(folder)
    return folder


_COUNTER = iter(range(10**6))


@pytest.fixture
def repo(hub, base) -> str:
    """A fresh Hub copy of the base system for one test (merges and faults cannot leak into other tests)."""
    repo_id = f"adv/system-{next(_COUNTER)}"
    hub.commit_folder(repo_id, base, message="published system")
    return repo_id


@pytest.fixture
def folder(base, tmp_path) -> Path:
    out = tmp_path / "system"
    shutil.copytree(base, out)
    return out


@pytest.fixture(autouse=True)
def _no_leftover_faults(request):
    yield
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub").clear_faults()


def contribution(base: Path, name: str = "extra", *, seed: int = 7, head: dict | None = None,
                 edit=None, with_probe: bool = True) -> tuple[dict[str, bytes], TaskFile]:
    """task_0's path with a new head, as a new task with an honest probe: the files a PR would add."""
    store = LocalStore(base)
    config, tf = store.read_config(), store.read_task("task_0")
    comps = store.read_components(tf.components)
    params = {r.slot: dict(comps[r.id][1]) for r in tf.components}
    rng = np.random.default_rng(seed)
    params["head"] = head if head is not None else {
        "kernel": rng.standard_normal((DIMS.hidden_size, CLASSES)).astype(np.float32),
        "bias": rng.standard_normal(CLASSES).astype(np.float32)}
    data = component_bytes(params["head"], "head")
    refs = [ComponentRef("head", component_id(data), num_params(params["head"]), len(data)) if r.slot == "head" else r
            for r in tf.components]
    new = replace(tf, task=name, components=refs, metrics={"test_accuracy": 0.6, "chance": 0.34}, sizes={}, probe=None)
    if with_probe:
        new.probe = make_probe(TaskModel(config, new, params))
    raw = new.to_json()
    if edit is not None:
        edit(raw)
    return {task_filename(name): json.dumps(raw).encode(), component_filename(component_id(data)): data}, new


def open_pr(repo: str, files: dict[str, bytes], *, parent: str | None = None) -> int:
    ops = [CommitOperationAdd(p, d) for p, d in files.items()]
    return HfApi().create_commit(repo, ops, commit_message="contribution", create_pr=True, parent_commit=parent).pr_num


def verdicts(report) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, " ".join(c.details)) for c in report.checks}


def assert_rejected(hub, repo: str, num: int, check: str, reason: str) -> None:
    """validate --merge refuses with `reason` under `check`, and main does not move."""
    head = hub.head(repo)
    report = mu2hub.validate(repo, num, merge=True)
    ok, details = verdicts(report).get(check, (True, ""))
    assert not report.ok and not report.merged and not ok, report.format()
    assert reason in details, report.format()
    assert hub.head(repo) == head


# ---------------------------------------------------------------------------------------------------
# 1. Malicious and careless pull requests against validate
# ---------------------------------------------------------------------------------------------------


def test_pr_good_contribution_merges_exactly_the_validated_files(hub, repo, base):
    files, tf = contribution(base)
    num = open_pr(repo, files)
    before = hub.files(repo)
    report = mu2hub.validate(repo, num, merge=True)
    assert report.ok and report.merged, report.format()
    merged = hub.files(repo, report.merge_commit)
    assert {p: d for p, d in merged.items() if p not in before} == files  # exactly the checked bytes, nothing else
    assert all(merged[p] == d for p, d in before.items())
    after = hub.files(repo)  # then the card refresh: one more commit, card and figures only
    assert {p for p in after if after[p] != merged.get(p)} <= {"README.md"} | {p for p in after if p.startswith("figures/")}
    assert HfApi().get_discussion_details(repo, num).status == "closed"
    assert verify(repo).ok


def test_pr_commit_pushed_after_the_checks_is_never_merged(hub, repo, base):
    """The contributor overwrites a published component on refs/pr/N once validate's checks have passed."""
    files, _ = contribution(base)
    num = open_pr(repo, files)
    published = next(p for p in hub.files(repo) if p.startswith("components/"))
    evil = component_bytes({"scale": np.zeros(16, np.float32), "bias": np.zeros(16, np.float32)}, "norm")
    main_before = hub.files(repo)
    # validate reads the PR's history once to check it; the push lands right after that read
    hub.fault("hook", method="GET", path_contains=f"/commits/refs/pr/{num}", skip=1,
              action=lambda: hub.write_file(repo, published, evil, revision=f"refs/pr/{num}"))
    with pytest.raises(ValidationError, match="moved"):
        mu2hub.validate(repo, num, merge=True)
    assert hub.files(repo) == main_before


def test_pr_moving_during_the_probe_refuses_the_merge(hub, repo, base):
    files, _ = contribution(base)
    num = open_pr(repo, files)
    junk = {"tasks/late.json": b"{}"}
    hub.fault("hook", method="GET", path_contains="components/", times=1,
              action=lambda: hub.write_file(repo, "tasks/late.json", junk["tasks/late.json"], revision=f"refs/pr/{num}"))
    head = hub.head(repo)
    with pytest.raises(ValidationError, match="moved"):
        mu2hub.validate(repo, num, merge=True)
    assert hub.head(repo) == head and "tasks/late.json" not in hub.files(repo)


def test_pr_push_between_final_check_and_commit_lands_only_validated_bytes(hub, repo, base):
    """A push that lands after validate's last read of the PR: the merge commit carries the checked bytes only."""
    files, _ = contribution(base)
    num = open_pr(repo, files)
    task_path = next(p for p in files if p.startswith("tasks/"))
    hub.fault("hook", method="POST", path_contains="/preupload/", times=1,
              action=lambda: hub.write_file(repo, task_path, b'{"evil": true}', revision=f"refs/pr/{num}"))
    report = mu2hub.validate(repo, num, merge=True)
    assert report.merged, report.format()
    assert hub.files(repo)[task_path] == files[task_path]


def test_pr_main_moving_during_validation_refuses_the_merge(hub, repo, base):
    files, _ = contribution(base)
    num = open_pr(repo, files)
    hub.fault("hook", method="GET", path_contains="components/", times=1,
              action=lambda: hub.write_file(repo, "notes.txt", b"maintainer edit"))
    with pytest.raises(ValidationError, match="moved past"):
        mu2hub.validate(repo, num, merge=True)
    assert not any(p.startswith("tasks/extra") for p in hub.files(repo))


def test_pr_based_on_another_unmerged_pr_is_rejected(hub, repo, base):
    first, _ = contribution(base, "first", seed=1)
    other = open_pr(repo, first)
    second, _ = contribution(base, "second", seed=2)
    num = open_pr(repo, second, parent=hub.head(repo, f"refs/pr/{other}"))
    assert_rejected(hub, repo, num, "pull request", "neither on main nor one of this PR's commits")


@pytest.mark.parametrize("case", ["modifies_component", "deletes_task", "modifies_config"])
def test_pr_changing_published_files_is_rejected(hub, repo, case):
    files = hub.files(repo)
    comp = next(p for p in files if p.startswith("components/"))
    api = HfApi()
    if case == "deletes_task":
        from huggingface_hub import CommitOperationDelete

        num = api.create_commit(repo, [CommitOperationDelete("tasks/task_0.json")], commit_message="x",
                                create_pr=True).pr_num
        reason = "deletes tasks/task_0.json"
    else:
        path = comp if case == "modifies_component" else "config.json"
        num = open_pr(repo, {path: files[path] + b" "})
        reason = f"modifies {path}"
    assert_rejected(hub, repo, num, "only additions", reason)


@pytest.mark.parametrize("name,reason", [
    ("DIGITS", "only by case"),            # next to an existing lower-case task
    ("con", "reserved device name"),
    ("aux/nul", "reserved device name"),
    ("COM1.v2", "reserved device name"),
    ("lpt9", "reserved device name"),
    ("trailing.", "ending in '.'"),
    ("a" * 101, "characters"),
])
def test_pr_task_names_unsafe_on_some_os_are_rejected(hub, repo, base, name, reason):
    files, _ = contribution(base, "task_0" if name == "DIGITS" else "ok")
    raw = json.loads(files.pop(next(p for p in files if p.startswith("tasks/"))))
    target = "TASK_0" if name == "DIGITS" else name
    raw["task"] = target
    files[task_filename(target)] = json.dumps(raw).encode()
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "file names", reason)


def test_pr_two_tasks_differing_only_by_case_are_rejected(hub, repo, base):
    a, _ = contribution(base, "mine", seed=1)
    b, _ = contribution(base, "MINE", seed=2)
    num = open_pr(repo, {**a, **b})
    assert_rejected(hub, repo, num, "file names", "only by case")


def test_pr_unreferenced_components_are_rejected(hub, repo, base):
    files, _ = contribution(base)
    stray = component_bytes({"scale": np.ones(16, np.float32), "bias": np.zeros(16, np.float32)}, "norm")
    files[component_filename(component_id(stray))] = stray
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "components", "no added task uses it")


def test_pr_hundreds_of_junk_files_are_rejected_by_the_file_cap(hub, repo, base):
    files, _ = contribution(base)
    files.update({f"junk/{i}.txt": b"x" for i in range(300)})
    num = open_pr(repo, files)
    head = hub.head(repo)
    report = mu2hub.validate(repo, num, merge=True, max_files=100)
    assert not report.merged and "over the 100-file limit" in verdicts(report)["file names"][1]
    assert "unexpected file" in verdicts(report)["file names"][1] and hub.head(repo) == head


@pytest.mark.parametrize("case,reason", [
    ("float16", "'header.bias.dtype' must be one of ['F32']"),
    ("int32", "'header.bias.dtype' must be one of ['F32']"),
    ("nan_weights", "NaN or Inf"),
    ("inf_weights", "NaN or Inf"),
    ("header_bomb", "the header claims"),
    ("metadata_not_a_mapping", "__metadata__ must be a JSON object"),
    ("not_canonical", "not in canonical form"),
])
def test_pr_bad_components_are_rejected(hub, repo, base, case, reason):
    head = {"kernel": np.ones((DIMS.hidden_size, CLASSES), np.float32), "bias": np.ones(CLASSES, np.float32)}
    files, tf = contribution(base, head=head)
    data = {
        "float16": lambda: _raw_component({"bias": ("F16", [CLASSES]), "kernel": ("F32", [16, CLASSES])}),
        "int32": lambda: _raw_component({"bias": ("I32", [CLASSES]), "kernel": ("F32", [16, CLASSES])}),
        "nan_weights": lambda: component_bytes({**head, "bias": np.full(CLASSES, np.nan, np.float32)}, "head"),
        "inf_weights": lambda: component_bytes({**head, "kernel": np.full((16, CLASSES), np.inf, np.float32)}, "head"),
        "header_bomb": lambda: struct.pack("<Q", 2**40) + b"{}" * 64,
        "metadata_not_a_mapping": lambda: _raw_component({"bias": ("F32", [CLASSES]), "kernel": ("F32", [16, CLASSES])},
                                                         meta=["kind", "head"]),
        "not_canonical": lambda: _reordered(component_bytes(head, "head")),
    }[case]()
    files = {p: d for p, d in files.items() if not p.startswith("components/")}
    cid = component_id(data)
    files[component_filename(cid)] = data
    raw = tf.to_json()
    for c in raw["path"]["components"]:
        if c["slot"] == "head":
            c.update(id=cid, bytes=len(data))
    files[task_filename(tf.task)] = json.dumps(raw).encode()
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "components", reason)


def _raw_component(tensors: dict, *, meta=None, kind="head") -> bytes:
    """A component with hand-written dtypes/shapes (what `component_bytes` would never write)."""
    header, body, off = {"__metadata__": meta if meta is not None else {"format": "mu2hub/1", "kind": kind}}, b"", 0
    sizes = {"F32": 4, "F16": 2, "I32": 4, "F64": 8}
    for name in sorted(tensors):
        dtype, shape = tensors[name]
        n = int(np.prod(shape)) * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        body += b"\x00" * n
        off += n
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _reordered(data: bytes) -> bytes:
    """The same tensors, but a header with spaces: a valid safetensors file that is not canonical."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    raw = json.dumps(header, indent=1).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def _edit(path: str, value):
    def edit(raw: dict) -> None:
        *keys, last = path.split(".")
        node = raw
        for k in keys:
            node = node[k]
        node[last] = value
    return edit


@pytest.mark.parametrize("case,edit,reason", [
    ("metric_is_a_string", _edit("metrics.test_accuracy", "0.99"), "'metrics.test_accuracy' must be a number"),
    ("size_is_a_string", _edit("sizes.new_params", "many"), "'sizes.new_params' must be an integer"),
    ("num_layers_bomb", _edit("path.num_layers", 10**9), "'path.num_layers' must lie in"),
    ("probe_num_images_bomb", _edit("probe.num_images", 10**9), "'probe.num_images' must lie in"),
    ("probe_image_size_bomb", _edit("probe.image_size", 10**6), "'probe.image_size' must lie in"),
    ("probe_with_one_image", lambda raw: raw["probe"].update(num_images=1, top1=raw["probe"]["top1"][:1],
                                                             logits=raw["probe"]["logits"][:1]), "at least 4 images"),
    ("no_probe", lambda raw: raw.pop("probe"), "must carry a probe"),
    ("label_with_control_chars", _edit("labels", ["a", "b\x1b[31m", "c"]), "control/bidi character"),
    ("label_with_bidi_override", _edit("labels", ["a", "b\u202e", "c"]), "control/bidi character"),
    ("negative_params", lambda raw: raw["path"]["components"][0].update(params=-1), "must lie in"),
    ("wrong_recorded_params", lambda raw: raw["path"]["components"][-1].update(params=7), "records 7 parameters"),
    ("missing_component", lambda raw: raw["path"]["components"][-2].update(id="ab" * 32), "neither on the target"),
    ("names_another_task", _edit("task", "task_1"), "names task 'task_1'"),
    ("source_with_branch_revision", lambda raw: raw["path"]["components"][0].update(
        source={"repo_id": "adv/other", "revision": "main"}), "40-hex commit sha"),
])
def test_pr_bad_task_files_are_rejected(hub, repo, base, case, edit, reason):
    files, _ = contribution(base, edit=edit)
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "task files", reason)


def test_pr_deeply_nested_task_file_is_rejected(hub, repo, base):
    files, _ = contribution(base)
    path = next(p for p in files if p.startswith("tasks/"))
    files[path] = files[path][:-1] + b', "hparams_extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "task files", "nested deeper")


def test_pr_probe_with_a_huge_file_tolerance_is_still_checked_with_the_librarys(hub, repo, base):
    def lie(raw):
        raw["probe"]["atol"] = 1e9
        raw["probe"]["logits"] = [[v + 5.0 for v in row] for row in raw["probe"]["logits"]]
    files, _ = contribution(base, edit=lie)
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "probe", "logits differ")


def test_pr_overflowing_weights_making_nan_logits_fail_the_probe(hub, repo, base):
    """Finite but huge weights: the model answers Inf/NaN, and `nan > atol` must not pass."""
    huge = {"kernel": np.full((DIMS.hidden_size, CLASSES), 3e38, np.float32), "bias": np.zeros(CLASSES, np.float32)}
    honest, _ = contribution(base)
    files, tf = contribution(base, head=huge, with_probe=False)
    raw = tf.to_json()
    raw["probe"] = json.loads(next(d for p, d in honest.items() if p.startswith("tasks/")))["probe"]
    files[task_filename(tf.task)] = json.dumps(raw).encode()
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "probe", "NaN or Inf")


def test_pr_source_pointing_at_other_content_is_rejected(hub, repo, base):
    other = f"{repo}-other"
    hub.create_repo(other)
    files, tf = contribution(base)
    ref = tf.components[0]
    sha = hub.write_file(other, ref.filename, b"not the component")
    raw = tf.to_json()
    raw["path"]["components"][0]["source"] = {"repo_id": other, "revision": sha}
    files[task_filename(tf.task)] = json.dumps(raw).encode()
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "task files", "whose content is not the id it names")


@pytest.mark.parametrize("case", ["readme", "figure", "gitattributes"])
def test_pr_files_outside_the_contribution_layout_are_rejected(hub, repo, base, case):
    files, _ = contribution(base)
    files[{"readme": "README.md", "figure": "figures/evil.png", "gitattributes": "tasks/.gitattributes"}[case]] = b"x"
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "file names", "unexpected file")


def test_pr_closed_or_discussion_is_rejected(hub, repo, base):
    files, _ = contribution(base)
    num = open_pr(repo, files)
    HfApi().change_discussion_status(repo, num, "closed")
    assert_rejected(hub, repo, num, "pull request", "status 'closed'")
    disc = HfApi().create_discussion(repo, title="not a PR").num
    assert_rejected(hub, repo, disc, "pull request", "a discussion")


# ---------------------------------------------------------------------------------------------------
# 1b. What a contributor writes is inert wherever the owner's repo shows it (card, model-index, tables, links)
# ---------------------------------------------------------------------------------------------------

_EVIL = "<img src=x onerror=alert(1)> [x](javascript:alert(1)) | a | b ![i](https://evil.example/i.png) `` ` <script>"
_ALLOWED_LINK = ("https://huggingface.co/", "https://arxiv.org/abs/2205.12755", "figures/")


def _hostile(raw: dict) -> None:
    raw["labels"] = ["<img src=x onerror=alert(1)>", "a|b", "[x](javascript:alert(1))"]
    raw["lineage"] = {
        "data": _EVIL, "parent_task": "task_0", "steps": 3, "lr": 0.1, "trained_slots": ["head"],
        "finetuned_from": {"repo_id": "<script>alert(1)</script>", "revision": "`x`|<b>y</b>", "task": "task_0"},
        "base": {"repo_id": "[evil](https://evil.example)", "revision": "<i>"}}


def _rendered_html_tokens(md: str) -> list:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    return tokens + [c for t in tokens for c in (t.children or [])]


def test_pr_hostile_text_merges_inert_into_the_card(hub, repo, base):
    """A contribution whose labels and lineage carry HTML, links, images, pipes and backticks merges (every string
    can be made inert), and the refreshed README.md holds none of it as markup: no raw HTML, no link or image
    outside the Hub and the card's own, every table row as wide as its header, the model-index intact."""
    from huggingface_hub import ModelCard

    files, _ = contribution(base, edit=_hostile)
    report = mu2hub.validate(repo, open_pr(repo, files), merge=True)
    assert report.ok and report.merged, report.format()
    text = hub.files(repo)["README.md"].decode()
    assert "onerror" in text  # the hostile text is shown (escaped), not dropped
    card = ModelCard(text)
    assert sorted(r.dataset_config for r in card.data.eval_results) == ["extra", "task_0", "task_1"]
    tokens = _rendered_html_tokens(card.text)
    assert not [t.content for t in tokens if t.type in ("html_inline", "html_block")]
    links = [t.attrs.get("href") or t.attrs.get("src") for t in tokens if t.type in ("link_open", "image")]
    assert links and all(str(u).startswith(_ALLOWED_LINK) for u in links), links
    rows = []
    for t in tokens:
        if t.type == "tr_open":
            rows.append(0)
        elif t.type in ("th_open", "td_open"):
            rows[-1] += 1
    assert rows and len(set(rows)) == 1, rows


@pytest.mark.parametrize("case,edit,reason", [
    ("newline_in_data", _edit("lineage.data", "x\n```\n<script>"), "lineage.data"),
    ("finetuned_from_task_not_a_task", _edit("lineage.finetuned_from", {"repo_id": "a/b", "task": "<b>x</b>"}),
     "is not a task name"),
    ("parent_task_two_lines", _edit("lineage.parent_task", "a\n```\n<b>"), "control/bidi character"),
    ("trained_slot_markup", _edit("lineage.trained_slots", ["<img>"]), "malformed"),
    ("steps_a_string", _edit("lineage.steps", "<b>5</b>"), "must be an integer"),
    ("huge_data", _edit("lineage.data", "x" * 10_000), "lineage.data"),
    ("metric_name_markup", _edit("metrics.<img src=x>", 0.5), "metrics key"),
])
def test_pr_text_that_cannot_be_made_inert_is_rejected(hub, repo, base, case, edit, reason):
    files, _ = contribution(base, edit=edit)
    num = open_pr(repo, files)
    assert_rejected(hub, repo, num, "task files", reason)


def test_pr_rejection_leaves_every_reader_working(hub, repo, base, tmp_path):
    """After a rejected PR with a string metric, the Space, the card refresh and verify still read the repo."""
    files, _ = contribution(base, edit=_edit("metrics.test_accuracy", "high"))
    num = open_pr(repo, files)
    assert not mu2hub.validate(repo, num, merge=True).merged
    with pytest.raises(ArgumentError, match="needs the probe"):
        mu2hub.validate(repo, num, merge=True, probe=False)
    space = SpaceSystem(repo, cache_dir=tmp_path / "c")
    assert "test accuracy" in space.task_markdown("task_0")
    assert verify(repo, cache_dir=tmp_path / "v").ok


# ---------------------------------------------------------------------------------------------------
# 2. Tampered repos: every reader gives a named error, fast
# ---------------------------------------------------------------------------------------------------

# Each case: the tampering, and what the error must name (the file is checked too): the field and the rule broken.
BAD_TASK_EDITS = {
    "num_layers_bomb": (lambda d: d["path"].update(num_layers=10**9), r"'path\.num_layers' must lie in \[0, 256\]"),
    "num_layers_negative": (lambda d: d["path"].update(num_layers=-2), r"'path\.num_layers' must lie in .*got -2"),
    "image_size_zero": (lambda d: d["path"].update(image_size=0), r"'path\.image_size' must lie in .*got 0"),
    "image_size_huge": (lambda d: d["path"].update(image_size=10**7), r"'path\.image_size' must lie in"),
    "image_size_float": (lambda d: d["path"].update(image_size=8.0),
                         r"'path\.image_size' must be an integer, got float"),
    "image_size_bool": (lambda d: d["path"].update(image_size=True),
                        r"'path\.image_size' must be an integer, got bool"),
    "adapter_layers_duplicated": (lambda d: d["path"].update(adapter_layers=[0, 0]),
                                  r"'path\.adapter_layers' must be distinct layers"),
    "adapter_dim_zero": (lambda d: d["path"].update(adapter_dim=0), r"'path\.adapter_dim' must lie in"),
    "components_not_a_list": (lambda d: d["path"].update(components={"slot": "head"}),
                              r"'path\.components' must be a list"),
    "component_without_id": (lambda d: d["path"]["components"][0].pop("id"), r"'path\.components\[0\]\.id' must be"),
    "labels_empty": (lambda d: d.update(labels=[]), r"'labels' must hold 1 to .*got 0"),
    "labels_not_strings": (lambda d: d.update(labels=[1, 2, 3]), r"'labels\[0\]' must be a string"),
    "labels_too_many": (lambda d: d.update(labels=[f"c{i}" for i in range(schema.MAX_LABELS + 1)]),
                        r"'labels' must hold 1 to .*got 100,001"),
    "label_too_long": (lambda d: d.update(labels=["x" * 10_000, "b", "c"]),
                       r"'labels\[0\]' must have 1 to \d+ characters"),
    "metric_is_a_string": (lambda d: d["metrics"].update(test_accuracy="0.9"),
                           r"'metrics\.test_accuracy' must be a number"),
    "metric_out_of_range": (lambda d: d["metrics"].update(test_accuracy=97.0),
                            r"'metrics\.test_accuracy' must be a finite number in \[0, 1\]"),
    "sizes_is_a_string": (lambda d: d["sizes"].update(new_params="lots"), r"'sizes\.new_params' must be an integer"),
    "preprocessing_resize_mismatch": (lambda d: d["preprocessing"].update(resize=64),
                                      r"'preprocessing\.resize' is 64 but the path's image_size is 8"),
    "preprocessing_not_a_mapping": (lambda d: d.update(preprocessing=["resize", 8]),
                                    r"preprocessing must be a JSON object"),
    "probe_num_images_bomb": (lambda d: d["probe"].update(num_images=10**9), r"'probe\.num_images' must lie in"),
    "probe_logits_wrong_width": (lambda d: d["probe"].update(logits=[[0.0] * 7] * 4),
                                 r"'probe\.logits\[0\]' must be a list of 3 logits"),
    "probe_top1_out_of_range": (lambda d: d["probe"].update(top1=[99, 0, 0, 0]),
                                r"'probe\.top1\[0\]' must lie in \[0, 2\]"),
    "format_version_future": (lambda d: d.update(format_version=2), r"format_version 2 is not supported"),
    "task_name_traversal": (lambda d: d.update(task="../../etc/passwd"), r"invalid task name '\.\./\.\./etc/passwd'"),
}
BAD_TASK_TEXT = {
    "top_level_list": (lambda t: "[1, 2, 3]", r"top level must be a JSON object"),
    "nan_token": (lambda t: t.replace('"test_accuracy": 0.5', '"test_accuracy": NaN'), r"NaN is not a JSON number"),
    "infinity_token": (lambda t: t.replace('"test_accuracy": 0.5', '"test_accuracy": -Infinity'),
                       r"-Infinity is not a JSON number"),
    "float_overflow": (lambda t: t.replace('"test_accuracy": 0.5', '"test_accuracy": 1e400'),
                       r"1e400 overflows a float"),
    "huge_integer": (lambda t: t.replace('"num_layers": 2', '"num_layers": 1' + "0" * 5000),
                     r"malformed JSON: .*5001 digits"),
    "duplicate_keys": (lambda t: t.replace('"task": "task_0"', '"task": "task_0", "task": "task_1"'),
                       r"duplicate key 'task'"),
    "deep_nesting": (lambda t: t[:-2] + ', "x": ' + "[" * 50_000 + "]" * 50_000 + "}\n",
                     r"nested deeper than \d+ levels"),
    "invalid_utf8": (lambda t: t.replace('"c0"', '"c\udcff"'), r"malformed JSON: 'utf-8' codec can't decode byte 0xff"),
    "lone_surrogate_escape": (lambda t: t.replace('"c0"', '"\\ud800"'), r"'labels\[0\]' contains .* U\+D800"),
    "truncated": (lambda t: t[: len(t) // 2], r"malformed JSON: Unterminated string"),
    "empty_file": (lambda t: "", r"malformed JSON: Expecting value: line 1 column 1"),
}
BAD_CONFIG_EDITS = {
    "num_heads_zero": (lambda d: d.update(num_heads=0), r"'num_heads' must lie in .*got 0"),
    "patch_size_zero": (lambda d: d.update(patch_size=0), r"'patch_size' must lie in .*got 0"),
    "hidden_size_negative": (lambda d: d.update(hidden_size=-16), r"'hidden_size' must lie in .*got -16"),
    "hidden_not_divisible": (lambda d: d.update(num_heads=3), r"hidden_size 16 is not divisible by num_heads 3"),
    "layer_norm_eps_negative": (lambda d: d.update(layer_norm_eps=-1),
                                r"'layer_norm_eps' must be a finite number .*got -1"),
    "layer_norm_eps_zero": (lambda d: d.update(layer_norm_eps=0), r"'layer_norm_eps' must be a finite number .*got 0"),
    "hidden_size_string": (lambda d: d.update(hidden_size="16"), r"'hidden_size' must be an integer, got str"),
    "hidden_size_huge": (lambda d: d.update(hidden_size=2**40, num_heads=1), r"'hidden_size' must lie in"),
    "activation_unknown": (lambda d: d.update(activation="relu"), r"'activation' must be one of .*got 'relu'"),
    "root_tokens_bomb": (lambda d: d.update(patch_size=1, root={"image_size": 4096, "num_layers": 2}),
                         r"root\.image_size 4096 with patch_size 1 makes [\d,]+ tokens, over the"),
    "root_num_layers_bomb": (lambda d: d["root"].update(num_layers=10**9), r"'root\.num_layers' must lie in"),
    "not_mu2hub": (lambda d: d.update(library_name="transformers"),
                   r"not a mu2hub repo \(library_name='transformers'\)"),
    "root_missing": (lambda d: d.pop("root"), r"missing required key 'root'"),
}


def _readers_refuse(folder: Path, capsys, file: str, needle: str) -> None:
    """Every reader of a repo gives a FormatError naming `file` and matching `needle` (or a FAIL verdict) within
    SECONDS; the CLI the same in one line, exit 2."""
    match = f"{re.escape(file)}: .*{needle}"
    start = time.monotonic()
    with pytest.raises(FormatError, match=match):
        mu2hub.from_pretrained(folder, task="task_0")
    with pytest.raises(FormatError, match=match):
        mu2hub.system_info(folder)
    with pytest.raises(FormatError, match=match):
        SpaceSystem(folder).model("task_0")
    assert not verify(folder, tasks=["task_0"]).ok
    capsys.readouterr()
    assert cli.main(["info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and re.search(f"error: {match}", err), err
    assert time.monotonic() - start < SECONDS


@pytest.mark.parametrize("case", sorted(set(BAD_TASK_EDITS) | set(BAD_TASK_TEXT)))
def test_tampered_task_file_every_reader_refuses(folder, case, capsys):
    path = folder / "tasks/task_0.json"
    if case in BAD_TASK_TEXT:
        tamper, needle = BAD_TASK_TEXT[case]
        original = path.read_text()
        text = tamper(original)
        assert text != original  # the tampering happened
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
    else:
        tamper, needle = BAD_TASK_EDITS[case]
        data = json.loads(path.read_text())
        tamper(data)
        path.write_text(json.dumps(data))
    _readers_refuse(folder, capsys, "tasks/task_0.json", needle)


@pytest.mark.parametrize("case", sorted(BAD_CONFIG_EDITS))
def test_tampered_config_every_reader_refuses(folder, case, capsys):
    path = folder / "config.json"
    tamper, needle = BAD_CONFIG_EDITS[case]
    data = json.loads(path.read_text())
    tamper(data)
    path.write_text(json.dumps(data))
    _readers_refuse(folder, capsys, "config.json", needle)
    with pytest.raises(FormatError, match=f"config\\.json: .*{needle}"):
        mu2hub.list_tasks(folder)  # `mu2hub tasks` too: not a silent empty list


def test_unknown_keys_are_ignored_where_the_format_says(folder):
    """The other side of strictness: a future exporter's extra keys load (bounded), known ones still typed."""
    path = folder / "tasks/task_0.json"
    data = json.loads(path.read_text())
    data.update(future={"nested": [1, 2, {"x": "y"}]})
    data["metrics"]["new_metric"] = {"per_class": [0.1, 0.2]}
    data["lineage"]["tool"] = "mu2hub 9.0"
    path.write_text(json.dumps(data))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["activation"], cfg["future"] = "gelu", [1]
    (folder / "config.json").write_text(json.dumps(cfg))
    assert mu2hub.from_pretrained(folder, task="task_0").predict(np.zeros((8, 8, 3), np.uint8))


def _component_case(case: str) -> bytes:
    norm = {"bias": ("F32", [16]), "scale": ("F32", [16])}
    return {
        "header_bomb": lambda: struct.pack("<Q", 2**62) + b"{}      ",
        "header_longer_than_file": lambda: struct.pack("<Q", 4096) + b"{}      ",
        "header_not_json": lambda: struct.pack("<Q", 8) + b"{not js}",
        "header_is_a_list": lambda: struct.pack("<Q", 8) + b"[1, 2] " + b" ",
        "metadata_not_a_mapping": lambda: _raw_component(norm, meta="norm", kind="norm"),
        "metadata_value_not_a_string": lambda: _raw_component(norm, meta={"format": "mu2hub/1", "kind": "norm", "x": 1}),
        "metadata_without_kind": lambda: _raw_component(norm, meta={"format": "mu2hub/1"}),
        "metadata_other_format": lambda: _raw_component(norm, meta={"format": "evil/9", "kind": "norm"}),
        "tensor_without_shape": lambda: _patched(norm, lambda h: h["bias"].pop("shape")),
        "tensor_negative_shape": lambda: _patched(norm, lambda h: h["bias"].update(shape=[-16])),
        "tensor_rank_bomb": lambda: _patched(norm, lambda h: h["bias"].update(shape=[1] * 64)),
        "tensor_name_traversal": lambda: _patched(norm, lambda h: h.update({"../x": h.pop("bias")})),
        "overlapping_offsets": lambda: _patched(norm, lambda h: h["scale"].update(data_offsets=[0, 64])),
        "trailing_bytes": lambda: component_bytes({"bias": np.zeros(16, np.float32), "scale": np.ones(16, np.float32)},
                                                  "norm") + b"\x00" * 8,
        "float64": lambda: _raw_component({"bias": ("F64", [16]), "scale": ("F32", [16])}, kind="norm"),
        "nan_weights": lambda: component_bytes({"bias": np.full(16, np.nan, np.float32), "scale": np.ones(16, np.float32)},
                                               "norm"),
        "too_many_tensors": lambda: _raw_component({f"t{i}": ("F32", [1]) for i in range(schema.MAX_TENSORS + 1)},
                                                   kind="norm"),
        "deep_header": lambda: _st_raw(b'{"__metadata__":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    }[case]()


def _patched(tensors: dict, fn) -> bytes:
    data = _raw_component(tensors, kind="norm")
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    fn(header)
    return _st_raw(json.dumps(header).encode(), data[8 + n :])


def _st_raw(header: bytes, body: bytes = b"") -> bytes:
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + body


# Each case and what the error must say after naming the file.
COMPONENT_CASES = {
    "header_bomb": r"the header claims [\d,]+ bytes \(limit",
    "header_longer_than_file": r"truncated: the header alone claims 4,096 bytes",
    "header_not_json": r"malformed JSON",
    "header_is_a_list": r"header must be a JSON object, got list",
    "metadata_not_a_mapping": r"header\.__metadata__ must be a JSON object, got str",
    "metadata_value_not_a_string": r"'__metadata__\.x' must be a string",
    "metadata_without_kind": r"missing required key 'header\.__metadata__\.kind'",
    "metadata_other_format": r"'header\.__metadata__\.format' must be one of \['mu2hub/1'\], got 'evil/9'",
    "tensor_without_shape": r"missing required key 'header\.bias\.shape'",
    "tensor_negative_shape": r"'header\.bias\.shape\[0\]' must lie in .*got -16",
    "tensor_rank_bomb": r"'header\.bias\.shape' must hold 0 to 4 items, got 64",
    "tensor_name_traversal": r"'tensor name' is malformed: '\.\./x'",
    "overlapping_offsets": r"tensor 'scale': data_offsets \[0, 64\] do not pack",
    "trailing_bytes": r"8 bytes after the last tensor",
    "float64": r"'header\.bias\.dtype' must be one of \['F32'\], got 'F64'",
    "nan_weights": r"tensor 'bias' holds NaN or Inf values",
    "too_many_tensors": r"65 tensors, over the 64 limit",
    "deep_header": r"nested deeper than \d+ levels",
}


@pytest.mark.parametrize("case", sorted(COMPONENT_CASES))
def test_tampered_component_a_task_references_is_refused(folder, case, capsys):
    """The task file names the crafted file by its true sha256 (the id checks pass): the header schema must stop it."""
    data = _component_case(case)
    cid = component_id(data)
    (folder / component_filename(cid)).parent.mkdir(parents=True, exist_ok=True)
    (folder / component_filename(cid)).write_bytes(data)
    path = folder / "tasks/task_0.json"
    raw = json.loads(path.read_text())
    for c in raw["path"]["components"]:
        if c["slot"] == "norm":
            c.update(id=cid, bytes=len(data))
    path.write_text(json.dumps(raw))
    start = time.monotonic()
    match = f"{re.escape(component_filename(cid))}: .*{COMPONENT_CASES[case]}"
    with pytest.raises(FormatError, match=match):
        mu2hub.from_pretrained(folder, task="task_0")
    report = verify(folder, tasks=["task_0"])
    assert not report.ok and report.tasks["task_0"].problems
    capsys.readouterr()
    assert cli.main(["download", str(folder), "--task", "task_0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(match, err), err
    assert time.monotonic() - start < SECONDS


def test_deleted_config_json_on_the_hub_is_named(hub, repo, tmp_path, capsys):
    from huggingface_hub import CommitOperationDelete

    HfApi().create_commit(repo, [CommitOperationDelete("config.json")], commit_message="oops")
    with pytest.raises(FormatError, match="not a mu2hub repo: it has no config.json"):
        mu2hub.from_pretrained(repo, task="task_0", cache_dir=tmp_path)
    assert cli.main(["info", repo, "--cache-dir", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_missing_component_file_in_a_folder_is_named(folder):
    victim = next((folder / "components").rglob("*.safetensors"))
    victim.unlink()
    with pytest.raises(Mu2hubError, match=victim.name):
        for t in ("task_0", "task_1"):
            mu2hub.from_pretrained(folder, task=t)


# ---------------------------------------------------------------------------------------------------
# 3. Faulty servers: named errors within a bounded time, never a hang
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def short_deadline(monkeypatch):
    monkeypatch.setenv("MU2HUB_DOWNLOAD_DEADLINE", "1.5")


@pytest.mark.parametrize("case,fault,error", [
    ("stall_on_config", dict(kind="stall", path_contains="config.json"), DownloadTimeoutError),
    ("stall_on_component", dict(kind="stall", method="GET", path_contains="components/"), DownloadTimeoutError),
    ("trickle_component", dict(kind="trickle", method="GET", path_contains="components/", interval=0.5),
     DownloadTimeoutError),
    ("trickle_task_file", dict(kind="trickle", method="GET", path_contains="tasks/", interval=0.5),
     DownloadTimeoutError),
    ("cut_before_answer", dict(kind="cut", path_contains="/resolve/"), HubUnavailableError),
    ("cut_mid_body", dict(kind="cut", method="GET", path_contains="components/", after_bytes=16), HubUnavailableError),
    ("error_503", dict(kind="status", path_contains="/resolve/", status=503), HubUnavailableError),
    ("error_500_on_listing", dict(kind="status", path_contains="/tree/", status=500), HubUnavailableError),
    ("error_403", dict(kind="status", path_contains="tasks/", status=403), HubRequestError),
    ("error_429", dict(kind="status", path_contains="/resolve/", status=429), HubUnavailableError),
])
def test_faulty_server_gives_a_named_error_in_bounded_time(hub, repo, tmp_path, short_deadline, case, fault, error):
    hub.fault(times=None, **fault)
    start = time.monotonic()
    with pytest.raises(error) as e:
        if case == "error_500_on_listing":
            mu2hub.list_tasks(repo, cache_dir=tmp_path)
        else:
            mu2hub.from_pretrained(repo, task="task_0", cache_dir=tmp_path)
    assert repo in str(e.value) and time.monotonic() - start < SECONDS


def test_corrupt_content_from_the_server_is_caught_by_the_id(hub, repo, tmp_path):
    hub.fault("corrupt", method="GET", path_contains="components/", times=None)
    with pytest.raises(ComponentIntegrityError, match="force_download"):
        mu2hub.from_pretrained(repo, task="task_0", cache_dir=tmp_path)


def test_server_gone_gives_a_named_error(hub, repo, tmp_path, short_deadline):
    hub.stop()
    try:
        start = time.monotonic()
        with pytest.raises(HubUnavailableError):
            mu2hub.from_pretrained(repo, task="task_0", cache_dir=tmp_path)
        assert time.monotonic() - start < SECONDS
    finally:
        hub.start()


def test_cli_download_from_a_trickling_server_does_not_hang(hub, repo, tmp_path, short_deadline, capsys):
    hub.fault("trickle", method="GET", path_contains="components/", times=None, interval=0.5)
    start = time.monotonic()
    assert cli.main(["download", repo, "--task", "task_0", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "deadline" in err and "MU2HUB_DOWNLOAD_DEADLINE" in err and err.count("\n") == 1
    assert time.monotonic() - start < SECONDS


@pytest.mark.parametrize("case,args,needle", [
    ("unknown_repo", ["info", "adv/does-not-exist"], "repository not found"),
    ("bad_revision", ["info", "{repo}", "--revision", "nope"], "revision not found"),
    ("invalid_repo_id", ["info", "not/a/valid/repo"], "neither a local folder nor a valid Hub repo id"),
    ("unknown_task", ["download", "{repo}", "--task", "cifar10"], "available tasks"),
])
def test_cli_bad_arguments_give_one_line(hub, repo, tmp_path, capsys, case, args, needle):
    args = [a.format(repo=repo) for a in args] + ["--cache-dir", str(tmp_path)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("case,call,error", [
    ("no_such_repo", lambda repo, c: mu2hub.list_tasks("adv/does-not-exist", cache_dir=c), RepoNotFoundError),
    ("no_such_revision", lambda repo, c: mu2hub.from_pretrained(repo, task="task_0", revision="f" * 40, cache_dir=c),
     RepoNotFoundError),
    ("not_a_repo_id_nor_a_folder", lambda repo, c: mu2hub.from_pretrained("no/such/folder", task="t", cache_dir=c),
     InvalidRepoIdError),
    ("contradictory_arguments", lambda repo, c: mu2hub.from_pretrained(repo, task="task_0", force_download=True,
                                                                       local_files_only=True), ArgumentError),
])
def test_library_bad_arguments_are_named(hub, repo, tmp_path, case, call, error):
    with pytest.raises(error):
        call(repo, tmp_path)


def test_validate_against_a_stalled_hub_is_a_named_error(hub, repo, base, short_deadline, capsys):
    files, _ = contribution(base)
    num = open_pr(repo, files)
    hub.fault("stall", path_contains="/discussions/", times=None)
    start = time.monotonic()
    assert cli.main(["validate", repo, "--pr", str(num)]) == 2
    assert "MU2HUB_DOWNLOAD_DEADLINE" in capsys.readouterr().err and time.monotonic() - start < SECONDS


# ---------------------------------------------------------------------------------------------------
# 4. Inputs: images and folders
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(base):
    return mu2hub.from_pretrained(base, task="task_0")


@pytest.mark.parametrize("case,image,needle", [
    ("zero_by_zero_pil", Image.new("RGB", (0, 0)), "empty"),
    ("zero_height_array", np.zeros((0, 5, 3), np.uint8), "empty"),
    ("nan_float_batch", np.full((2, 8, 8, 3), np.nan, np.float32), "NaN"),
    ("float_0_255_batch", np.full((2, 8, 8, 3), 200.0, np.float32), "must lie in [0, 1]"),
    ("negative_float_image", np.full((8, 8, 3), -0.5, np.float32), "must lie in [0, 1]"),
    ("inf_float_image", np.full((8, 8, 3), np.inf, np.float64), "NaN or Inf"),
    ("int16_out_of_range", np.full((8, 8, 3), 300, np.int16), "[0, 255]"),
    ("wrong_rank", np.zeros((1, 2, 8, 8, 3), np.uint8), "expected an image"),
    ("two_channels", np.zeros((8, 8, 2), np.uint8), "expected an image"),
    ("complex_dtype", np.zeros((8, 8, 3), np.complex64), "unsupported image dtype"),
    ("object_dtype", np.array([[object()]]), "unsupported image dtype"),
    ("string", "not an image", "expected an image"),
    ("empty_list", [], "no images"),
    ("empty_batch", np.zeros((0, 8, 8, 3), np.uint8), "no images"),
    ("too_many_pixels", np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20_000, 10_000, 3)), "limit"),
])
def test_bad_images_are_refused_by_name(model, case, image, needle):
    with pytest.raises(ImageInputError) as e:
        model.predict(image)
    assert needle in str(e.value)


@pytest.mark.parametrize("case,batch,needle", [
    ("nan", np.full((1, 8, 8, 3), np.nan, np.float32), "NaN"),
    ("unscaled_0_255", np.full((1, 8, 8, 3), 255.0, np.float32), "[-1, 1]"),
    ("wrong_size", np.zeros((1, 16, 16, 3), np.float32), "expected a preprocessed batch"),
    ("wrong_channels", np.zeros((1, 8, 8, 1), np.float32), "expected a preprocessed batch"),
])
def test_bad_preprocessed_batches_are_refused_by_logits(model, case, batch, needle):
    with pytest.raises(ImageInputError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        model.logits(batch)


def test_predict_preprocesses_float_images_instead_of_trusting_them(model):
    image = np.random.default_rng(0).uniform(0, 1, (1, 20, 20, 3)).astype(np.float32)
    assert model.predict(image)[0] == model.predict(np.round(image * 255).astype(np.uint8))[0]
    with pytest.raises(ArgumentError):
        model.predict(image, top_k=0)


def _png(path: Path, size=(12, 12)) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _bomb_png(path: Path) -> Path:
    """A tiny PNG whose header claims 100,000 x 100,000 pixels (a decompression bomb)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("case", ["truncated_png", "decompression_bomb", "not_an_image", "empty_file", "missing_file"])
def test_cli_predict_bad_image_files_name_the_file(base, tmp_path, capsys, case):
    good = _png(tmp_path / "good.png")
    bad = tmp_path / f"{case}.png"
    if case == "truncated_png":
        bad.write_bytes(good.read_bytes()[:-30])
    elif case == "decompression_bomb":
        _bomb_png(bad)
    elif case == "not_an_image":
        bad.write_bytes(b"#!/bin/sh\nrm -rf /\n")
    elif case == "empty_file":
        bad.write_bytes(b"")
    start = time.monotonic()
    # a missing input stops before the model loads (2); an undecodable one is reported and the rest answered (1)
    assert cli.main(["predict", str(base), "--task", "task_0", str(good), str(bad)]) == (2 if case == "missing_file" else 1)
    err = capsys.readouterr().err
    assert bad.name in err and err.count("\n") == 1 and "Traceback" not in err
    assert time.monotonic() - start < SECONDS


def test_cli_predict_exits_2_when_every_input_is_bad(base, tmp_path, capsys):
    """1 only when some inputs were answered; when none was, the run failed as a whole: 2 (README, `predict -h`)."""
    bad = [tmp_path / "a.png", tmp_path / "b.png"]
    for b in bad:
        b.write_bytes(b"not an image")
    assert cli.main(["predict", str(base), "--task", "task_0", *map(str, bad)]) == 2
    assert capsys.readouterr().err.count("error:") == 2


def test_position_embedding_without_patch_tokens_is_a_named_error():
    from mu2hub.errors import ShapeMismatchError
    from mu2hub.model import resize_pos_embed

    with pytest.raises(ShapeMismatchError, match="0 patch tokens"):
        resize_pos_embed(np.zeros((1, 1, 16), np.float32), 2)


def test_pr_whose_position_embedding_has_no_patch_tokens_is_rejected_not_crashed_on(hub, repo, base):
    """A published path's pos_embed swapped for a (1, 1, d) one: validate reports it, no traceback."""
    files, tf = contribution(base)
    pos = component_bytes({"embedding": np.zeros((1, 1, DIMS.hidden_size), np.float32)}, "pos_embed")
    raw = json.loads(files[task_filename("extra")])
    for c in raw["path"]["components"]:
        if c["slot"] == "pos_embed":
            c.update(id=component_id(pos), bytes=len(pos), params=DIMS.hidden_size)
    files[task_filename("extra")] = json.dumps(raw).encode()
    files[component_filename(component_id(pos))] = pos
    report = mu2hub.validate(repo, open_pr(repo, files), merge=True)
    assert not report.ok and not report.merged, report.format()
    assert "patch tokens" in report.format() or "pos_embed" in report.format(), report.format()


def test_root_checkpoint_from_a_trickling_hub_is_bounded_by_the_deadline(hub, tmp_path, short_deadline):
    """`root.init = "timm:<repo>"` fetches through the same deadline as every other download."""
    import mu2hub

    hub.commit_folder("adv/timm-root", _timm_folder(tmp_path / "timm"), message="a timm checkpoint")
    hub.fault("trickle", method="GET", path_contains="adv/timm-root", interval=0.5, times=None)
    start = time.monotonic()
    with pytest.raises(DownloadTimeoutError):
        mu2hub.from_timm("adv/timm-root", cache_dir=tmp_path / "c")
    assert time.monotonic() - start < SECONDS


def _timm_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 0}))
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    return folder


def test_open_image_refuses_a_decompression_bomb_without_decoding_it(tmp_path):
    with pytest.raises(CorruptImageError, match="limit"):
        open_image(_bomb_png(tmp_path / "bomb.png"))
    assert MAX_PIXELS < 100_000 * 100_000


def _imagefolder(root: Path, corrupt: int = 1) -> Path:
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(12):
                _png(d / f"{i}.png", (8, 8))
    for i in range(corrupt):
        victim = root / "train" / "a" / f"{i}.png"
        victim.write_bytes(victim.read_bytes()[:-40])  # a PNG cut mid-stream ("Truncated File Read")
    return root


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_cli_evaluate_and_finetune_decode_mixed_sizes_at_the_tasks_size(base, tmp_path, command):
    root = tmp_path / "mixed"
    for split in ("train", "validation", "test"):
        for cls in ("c0", "c1", "c2"):  # the task's own labels
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(4):
                _png(d / f"{i}.png", (8, 8) if i % 2 else (13, 11))
    extra = ["--steps", "2", "--lr", "0.01", "--out", str(tmp_path / "v")] if command == "finetune" else []
    assert cli.main([command, str(base), "--task", "task_0", "--data", f"imagefolder:{root}", *extra]) == 0


def test_imagefolder_with_a_corrupt_file_names_it_and_can_skip_it(tmp_path):
    from mu2hub.data.hf import load_imagefolder

    root = _imagefolder(tmp_path / "folder", corrupt=2)
    with pytest.raises(CorruptImageError, match=r"train/a/[01]\.png.*skip_corrupt=True"):
        load_imagefolder(str(root))
    with pytest.warns(UserWarning, match="left out") as caught:
        data = load_imagefolder(str(root), skip_corrupt=True)
    assert sum(int(str(w.message).split("left out ")[1].split()[0]) for w in caught if "left out" in str(w.message)) == 2
    assert len(data.train) + len(data.validation) == 24 - 2 and len(data.test) == 24


def test_cli_skip_corrupt_images_flag_reaches_the_loader(tmp_path):
    from mu2hub.data.resolve import resolve_data

    root = _imagefolder(tmp_path / "folder", corrupt=1)
    a = cli.build_parser().parse_args(["finetune", "org/x", "--task", "t", "--data", str(root), "--steps", "1",
                                       "--lr", "0.1", "--skip-corrupt-images"])
    with pytest.warns(UserWarning, match="left out 1"):
        data = resolve_data(a.data, **cli._data_kwargs(a))
    assert len(data.train) + len(data.validation) == 23
    with pytest.raises(mu2hub.errors.DataError, match="skip_corrupt"):
        resolve_data("digits", **cli._data_kwargs(a))  # generated data has no files to skip: named, not a TypeError


def test_download_settings_are_validated(monkeypatch):
    from mu2hub.hub.transfer import deadline_for

    monkeypatch.setenv("MU2HUB_DOWNLOAD_DEADLINE", "10")
    monkeypatch.setenv("MU2HUB_MIN_DOWNLOAD_RATE", "1000")
    assert deadline_for(None) == 10 and deadline_for(5000) == 15
    for bad in ("0", "-3", "soon", "nan"):
        monkeypatch.setenv("MU2HUB_DOWNLOAD_DEADLINE", bad)
        with pytest.raises(mu2hub.errors.InvalidSettingError, match="MU2HUB_DOWNLOAD_DEADLINE"):
            deadline_for(1)


# The `mu2hub` command as a terminal starts it. A background job's children start with SIGINT ignored (POSIX), and
# Python then installs no KeyboardInterrupt handler: a suite run as `pytest ... &` would press Ctrl-C on a process
# deaf to it (the three tests below failed that way, as a timeout or a download that ran on to its deadline).
CLI_WITH_CTRL_C = [sys.executable, "-c", "import runpy, signal, sys; "
                   "signal.signal(signal.SIGINT, signal.default_int_handler); sys.argv[0] = 'mu2hub'; "
                   "runpy.run_module('mu2hub.cli', run_name='__main__')"]


def _seconds_to_exit_after_ctrl_c() -> float:
    """How long a process that imported the CLI and sits idle takes to exit after Ctrl-C, on this machine now: the
    share of an exit that is interpreter teardown and scheduling, not the command's own cancelling."""
    code = ("import signal, sys, time; import mu2hub.cli, huggingface_hub; "
            "signal.signal(signal.SIGINT, signal.default_int_handler); print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    return time.monotonic() - start


def test_cli_interrupt_and_traceback_setting(hub, repo, tmp_path):
    """Ctrl-C during a stalled download: one line and exit 130; MU2HUB_TRACEBACK=1 shows the traceback instead."""
    asked = threading.Event()
    hub.fault("hook", path_contains="config.json", action=asked.set)  # the client is there ...
    hub.fault("stall", path_contains="config.json", times=None)  # ... and then waits on a stalled answer
    env = {**os.environ, "MU2HUB_DOWNLOAD_DEADLINE": "30"}
    proc = subprocess.Popen([*CLI_WITH_CTRL_C, "download", repo, "--task", "task_0", "--cache-dir", str(tmp_path / "c")],
                            env=env, stderr=subprocess.PIPE, text=True)
    assert asked.wait(60)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().endswith("interrupted") and "Traceback" not in err
    hub.clear_faults()
    out = subprocess.run([sys.executable, "-m", "mu2hub.cli", "info", "adv/does-not-exist"], capture_output=True,
                         text=True, env={**os.environ, "MU2HUB_TRACEBACK": "1"}, timeout=120)
    assert out.returncode == 1 and "Traceback" in out.stderr and "RepoNotFoundError" in out.stderr


@pytest.mark.parametrize("fault", [{"kind": "stall", "seconds": 120}, {"kind": "trickle", "interval": 0.5}])
def test_cli_ctrl_c_during_component_downloads_exits_130_within_2_s(hub, repo, tmp_path, fault):
    """Ctrl-C while every component download is stalled or trickling (they run in parallel): exit 130 within 2 s
    (beyond what an idle process takes to exit on this machine at this moment), the cache passes `scan_cache_dir()`,
    and a later download completes."""
    from huggingface_hub import scan_cache_dir

    baseline = _seconds_to_exit_after_ctrl_c()

    asked = threading.Event()
    params = {k: v for k, v in fault.items() if k != "kind"}
    hub.fault("hook", path_contains="components/", action=asked.set)
    hub.fault(fault["kind"], path_contains="components/", times=None, **params)
    cache = tmp_path / "c"
    cmd = [*CLI_WITH_CTRL_C, "download", repo, "--task", "task_0", "--cache-dir", str(cache)]
    env = {**os.environ, "MU2HUB_DOWNLOAD_DEADLINE": "60"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    assert asked.wait(60)
    time.sleep(1.0)  # every worker is inside a transfer now
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - start
    assert proc.returncode == 130 and err.strip().endswith("interrupted") and "Traceback" not in err, err
    # "at once" is the claim: the transfers stall for 120 s and the deadline is 60 s, so waiting for either fails
    assert took < 2.0 + 2 * baseline, f"exit took {took:.1f} s after Ctrl-C (an idle process: {baseline:.1f} s)"
    hub.clear_faults()
    assert not scan_cache_dir(cache).warnings
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    info = scan_cache_dir(cache)
    assert not info.warnings and any(r.repo_id == repo for r in info.repos)


# ---------------------------------------------------------------------------------------------------
# 5. Files keep the umask's permissions
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_have_the_umasks_permissions(model, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "store" / "a.json", b"{}")
        model.save_pretrained(tmp_path / "export")
    finally:
        os.umask(old)
    files = [tmp_path / "store" / "a.json", *(p for p in (tmp_path / "export").rglob("*") if p.is_file())]
    assert len(files) > 3
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {mode}


def test_run_directory_and_exported_folder_are_readable_by_others(tmp_path, base):
    from mu2hub.publishing.publish import export

    old = os.umask(0o022)
    try:
        export(base, tmp_path / "out")
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert modes == {0o644}


# ---------------------------------------------------------------------------------------------------
# 6. Fuzzing the readers (bounded budget: the suite stays fast)
# ---------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=120, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@pytest.fixture(scope="module")
def valid(base) -> SimpleNamespace:
    task = json.loads((base / "tasks/task_0.json").read_text())
    comp = next((base / "components").rglob("*.safetensors")).read_bytes()
    return SimpleNamespace(task=task, config=json.loads((base / "config.json").read_text()), component=comp)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replace(node, path, value):
    if not path:
        return value
    node = json.loads(json.dumps(node))
    cur = node
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return node


_JSON_BYTES = st.sampled_from(list(b'{}[],:"0123456789-+.eEtrufalsn \\'))


@FUZZ
@given(data=st.data())
def test_fuzz_json_reader_on_mutated_bytes(valid, data):
    """A valid task file and config with a few bytes overwritten, inserted or cut (about half of the new bytes are
    JSON's own characters), so that many mutants still parse and reach the schema, where random bytes almost never
    get past the parser: the readers load them or raise FormatError, nothing else."""
    for doc, reader in ((valid.task, lambda v: TaskFile.from_json(v, "tasks/task_0.json")),
                        (valid.config, lambda v: SystemConfig.from_json(v))):
        blob = bytearray(json.dumps(doc).encode())
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(blob) - 1))
            byte = data.draw(_JSON_BYTES | st.integers(0, 255))
            op = data.draw(st.sampled_from(["overwrite", "insert", "delete"]))
            if op == "overwrite":
                blob[i] = byte
            elif op == "insert":
                blob.insert(i, byte)
            else:
                del blob[i]
        try:
            reader(schema.load_json(bytes(blob), "fuzz.json"))
        except FormatError:
            pass


@FUZZ
@given(data=st.data())
def test_fuzz_task_and_config_readers_on_mutated_files(valid, data):
    for doc, reader in ((valid.task, lambda v: TaskFile.from_json(v, "tasks/task_0.json")),
                        (valid.config, lambda v: SystemConfig.from_json(v))):
        path = data.draw(st.sampled_from(list(_paths(doc))))
        mutated = _replace(doc, path, data.draw(_json_values))
        try:
            parsed = reader(schema.load_json(json.dumps(mutated), "fuzz.json"))
        except FormatError:
            continue
        if isinstance(parsed, TaskFile):  # what loads is usable: slots, sizes, the JSON round trip
            try:
                parsed.structure(DIMS).slots()
            except FormatError:  # e.g. an image size the patch does not divide: named, not a crash
                pass
            assert TaskFile.from_json(json.loads(dump_json(parsed.to_json())), "tasks/task_0.json").task == parsed.task


@FUZZ
@given(data=st.data())
def test_fuzz_safetensors_readers_on_mutated_components(valid, tmp_path_factory, data):
    blob = bytearray(valid.component)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    raw = bytes(blob)
    try:
        parse_component(raw, filename="fuzz.safetensors")
    except FormatError:
        pass
    f = tmp_path_factory.mktemp("fuzz") / "c.safetensors"
    f.write_bytes(raw)
    try:
        read_component_file(f, expected_id=component_id(raw))
    except FormatError:
        pass


@FUZZ
@given(header=_json_values, size=st.integers(0, 4096))
def test_fuzz_component_header_schema(header, size):
    raw = json.dumps(header).encode()
    try:
        schema.check_component_header(struct.pack("<Q", len(raw)) + raw, 8 + len(raw) + size, "fuzz.safetensors")
    except FormatError:
        pass


@FUZZ
@given(shape=st.lists(st.integers(0, 6), max_size=4), dtype=st.sampled_from(["uint8", "uint16", "int32", "float32",
                                                                            "float64", "bool", "int8"]),
       fill=st.floats(allow_nan=True, allow_infinity=True))
def test_fuzz_image_inputs(shape, dtype, fill):
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            arr = np.full(shape, fill).astype(dtype)
    except (ValueError, OverflowError):
        return
    try:
        out = to_rgb_uint8(arr)
    except ImageInputError:
        return
    assert out.dtype == np.uint8 and out.shape[-1] == 3 and 0 not in out.shape
