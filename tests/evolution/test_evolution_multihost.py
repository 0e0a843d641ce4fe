"""Multi-host evolution for real: 2 JAX processes on 127.0.0.1 (2 CPU devices each, Gloo collectives) against one
process with 4 devices and a sequential run; only process 0 writes; malformed jobs and a dying process stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mu2hub.errors import JobMismatchError
from mu2hub.evolution.evolve import evolve
from mu2hub.evolution.placement import check_layout, place
from mu2hub.evolution.run import RunDir

from locations import REPO, SUPPORT

EVOLVE = REPO / "training" / "evolve.py"
TIMEOUT = 420  # per process: generous for 2 loaded cores; a hang fails the test instead of the suite

# Process 1 runs under this guard: an audit hook that refuses (and reports) every attempt to create, change, rename
# or delete anything under the run directory. Every file mu2hub writes goes through Python's open/os calls, which
# raise these audit events; the refusal raises inside process 1, so a write there fails the job, not just a check.
GUARD = textwrap.dedent("""
    import os, runpy, sys
    ROOT = os.path.realpath(os.environ["MU2HUB_READONLY_DIR"])
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    MUTATING = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.utime", "os.chmod", "os.chown", "os.truncate",
                "os.link", "os.symlink", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

    def inside(path):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return isinstance(path, str) and os.path.realpath(path).startswith(ROOT + os.sep) or path == ROOT

    def guard(event, args):
        if event == "open":
            writes = isinstance(args[0], (str, bytes)) and (args[2] or 0) & WRITE or any(c in (args[1] or "") for c in "wax+")
            paths = [args[0]] if writes else []
        elif event in MUTATING:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes))]
        else:
            return
        for p in paths:
            if inside(p):
                if not SELF_TEST:
                    print(f"WRITE ATTEMPT BY PROCESS 1: {event} {p}", file=sys.stderr, flush=True)
                raise PermissionError(f"process 1 may not write the run directory: {event} {p}")

    SELF_TEST = True  # the guard must refuse what an atomic write does: create a temp file, make a folder, rename
    sys.addaudithook(guard)
    for attempt in (lambda: os.open(os.path.join(ROOT, ".t"), os.O_WRONLY | os.O_CREAT), lambda: open(ROOT + "/t", "w"),
                    lambda: os.mkdir(ROOT + "/d"), lambda: os.replace(ROOT + "/a", ROOT + "/b")):
        try:
            attempt()
        except PermissionError:
            continue
        sys.exit("the write guard let a write through")
    SELF_TEST = False
    print("WRITE GUARD ACTIVE", file=sys.stderr, flush=True)
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config_file(tmp: Path, name: str, **overrides) -> Path:
    """A config file: the tiny config with `overrides` (what every process of a job loads)."""
    f = tmp / f"{name}.py"
    f.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(SUPPORT)!r})
        from tiny_config import get_config as tiny

        def get_config(arg=None):
            c = tiny()
            c.update({overrides!r})
            return c
    """))
    return f


def _env(devices: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **extra}


def _launch(config: Path, workdir: Path, *, processes: int, devices: int, extra=(), configs=None) -> list[subprocess.Popen]:
    """`processes` copies of one command (process 1 under the write guard); one process: no distributed job."""
    base = [str(EVOLVE), "--workdir", str(workdir), "--quiet", *extra]
    if processes == 1:
        return [subprocess.Popen([sys.executable, *base, "--config", str(config)], env=_env(devices),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(processes):
        job = ["--config", str((configs or [config] * processes)[i]), "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", str(processes), "--process-id", str(i), "--coordinator-timeout", "120"]
        cmd = [sys.executable, *(["-c", GUARD] if i else []), *base, *job]
        procs.append(subprocess.Popen(cmd, env=_env(devices, MU2HUB_READONLY_DIR=str(workdir)),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs: list[subprocess.Popen], timeout: float = TIMEOUT) -> list[tuple[int, str]]:
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            out.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _run(config: Path, workdir: Path, *, processes: int, devices: int) -> RunDir:
    results = _finish(_launch(config, workdir, processes=processes, devices=devices))
    for i, (rc, err) in enumerate(results):
        assert rc == 0, f"process {i} failed (rc {rc}):\n{err[-3000:]}"
        assert "WRITE ATTEMPT" not in err, err[-3000:]
    assert processes == 1 or "WRITE GUARD ACTIVE" in results[1][1]  # process 1 ran under the guard throughout
    return RunDir(workdir)


def _same_children(a: RunDir, b: RunDir, *, quality_atol: float = 0.0) -> None:
    """Task files, scores and every child of the history agree: bit for bit (the same component ids) unless a
    tolerance is given for the qualities (then trained components may differ in the last float bits)."""
    assert a.system.list_tasks() == b.system.list_tasks() != []
    for task in a.system.list_tasks():
        x, y = a.system.read_task(task), b.system.read_task(task)
        assert [c.slot for c in x.components] == [c.slot for c in y.components]
        if not quality_atol:
            assert [c.id for c in x.components] == [c.id for c in y.components]
        assert x.metrics["score"] == pytest.approx(y.metrics["score"], abs=quality_atol + 1e-9)
        assert x.metrics["test_accuracy"] == pytest.approx(y.metrics["test_accuracy"], abs=quality_atol + 1e-9)
    ha, hb = a.history(), b.history()
    assert len(ha) == len(hb) > 0
    key = lambda r: (r["task"], r["loop"], r["generation"], r["parent"], r["kept"], json.dumps(r["mutations"], sort_keys=True),  # noqa: E731
                     json.dumps(r["sources"], sort_keys=True))
    assert [key(r) for r in ha] == [key(r) for r in hb]
    for r, s in zip(ha, hb):
        assert r["quality"] == pytest.approx(s["quality"], abs=quality_atol + 1e-9)
        assert r["score"] == pytest.approx(s["score"], abs=quality_atol + 1e-9)


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------------
# One child per device: 4 devices in one process = 2 processes × 2 devices = one device, sequentially
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def per_device(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("per_device")
    config = _config_file(tmp, "cpd", children_per_generation=4, exchange_chunk_bytes=4096)
    return config, _run(config, tmp / "one_process", processes=1, devices=4)


def test_child_per_device_on_four_devices_matches_the_sequential_run(per_device, tmp_path):
    config, four = per_device
    rows = four.history()
    for gen in {(r["task"], r["loop"], r["generation"]) for r in rows}:
        devices = [r["devices"] for r in rows if (r["task"], r["loop"], r["generation"]) == gen]
        assert sorted(devices) == [[0], [1], [2], [3]], devices  # the 4 siblings on 4 distinct devices
    sys.path.insert(0, str(REPO / "training"))
    from evolve import load_config

    sequential = evolve(load_config(str(config)), tmp_path / "sequential", quiet=True)  # this process: 1 device
    assert {d for r in sequential.history() for d in r["devices"]} == {0}
    _same_children(four, sequential)


def test_two_processes_child_per_device_match_one_process_and_only_process_0_writes(per_device, tmp_path):
    config, four = per_device
    two = _run(config, tmp_path / "two_processes", processes=2, devices=2)
    _same_children(four, two)
    assert json.loads((two.root / "agents/main.json").read_text())["layout"] == {
        "processes": 2, "devices_per_process": 2, "parallelism": "child_per_device"}


# ---------------------------------------------------------------------------------------------------
# One child data-parallel over every device of the job
# ---------------------------------------------------------------------------------------------------


def test_two_processes_data_parallel_match_one_process_with_four_devices(tmp_path):
    config = _config_file(tmp_path, "dp", tasks=["digits"], children_per_generation=2, parallelism="data_parallel")
    four = _run(config, tmp_path / "one_process", processes=1, devices=4)
    two = _run(config, tmp_path / "two_processes", processes=2, devices=2)
    assert {tuple(r["devices"]) for r in two.history()} == {(0, 1, 2, 3)}
    # the same batches over the same 4 devices; only the reduction across processes may round differently
    validation = 1 / 64
    _same_children(four, two, quality_atol=validation)


# ---------------------------------------------------------------------------------------------------
# Malformed jobs: refused before any state is written
# ---------------------------------------------------------------------------------------------------


def test_processes_started_with_different_configs_stop_before_writing(tmp_path):
    a = _config_file(tmp_path, "a", tasks=["digits"])
    b = _config_file(tmp_path, "b", tasks=["digits"], generations=2)
    workdir = tmp_path / "run"
    results = _finish(_launch(a, workdir, processes=2, devices=2, configs=[a, b]), timeout=180)
    for rc, err in results:
        assert rc == 2 and "another command than process 0" in err and "generations" in err, err[-2000:]
    assert list(workdir.iterdir()) == []


def test_a_coordinator_that_never_answers_is_a_clear_error(tmp_path):
    config = _config_file(tmp_path, "c", tasks=["digits"])
    cmd = [sys.executable, str(EVOLVE), "--config", str(config), "--workdir", str(tmp_path / "run"), "--quiet",
           "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2", "--process-id", "1",
           "--coordinator-timeout", "2"]
    out = subprocess.run(cmd, env=_env(2), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "did not answer within 2 s" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("job, why", [
    (["--num-processes", "2", "--process-id", "5"], "--process-id must be in 0..1"),  # waited 300 s in silence
    (["--num-processes", "2", "--process-id", "-1"], "--process-id must be in 0..1"),
    (["--num-processes", "0", "--process-id", "0"], "--num-processes must be at least 1"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "1"], "HOST:PORT"),
    (["--coordinator", "localhost:99999", "--num-processes", "2", "--process-id", "1"], "HOST:PORT"),
])
def test_a_job_that_cannot_form_is_refused_at_once(tmp_path, job, why):
    config = _config_file(tmp_path, "c", tasks=["digits"])
    coordinator = [] if "--coordinator" in job else ["--coordinator", f"127.0.0.1:{_free_port()}"]
    cmd = [sys.executable, str(EVOLVE), "--config", str(config), "--workdir", str(tmp_path / "run"), "--quiet",
           *job, *coordinator]
    out = subprocess.run(cmd, env=_env(2), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and why in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_children_must_divide_among_hosts_and_placement_is_one_child_per_device():
    with pytest.raises(JobMismatchError, match="not a multiple of the 2 processes"):
        check_layout({"children_per_generation": 3, "parallelism": "child_per_device"}, 2)
    with pytest.raises(JobMismatchError, match="parallelism"):
        check_layout({"children_per_generation": 4, "parallelism": "pipeline"}, 1)
    check_layout({"children_per_generation": 3, "parallelism": "data_parallel"}, 2)  # every process trains each
    assert [(p.process, p.local, p.device) for p in place(4, 2, 2)] == [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]
    # more children than devices: each device trains its share one after another
    assert [(p.process, p.device) for p in place(8, 2, 2)] == [(0, 0), (0, 1), (0, 0), (0, 1),
                                                               (1, 2), (1, 3), (1, 2), (1, 3)]


def test_a_run_written_by_another_layout_is_refused_before_writing(per_device):
    config, four = per_device
    before = _files(four.root)
    sys.path.insert(0, str(REPO / "training"))
    from evolve import load_config

    with pytest.raises(JobMismatchError, match=r"1 process\(es\) × 4 device\(s\).*this one is 1 × 1"):
        evolve(load_config(str(config)), four.root, resume=True, quiet=True)  # this process has 1 device
    assert _files(four.root) == before


# ---------------------------------------------------------------------------------------------------
# A dying process
# ---------------------------------------------------------------------------------------------------


def _kill_after(procs: list[subprocess.Popen], record: Path, victim: int) -> None:
    """SIGKILL process `victim` once `record` (a generation's history file) exists: the next generation is in flight."""
    deadline = time.time() + TIMEOUT
    while not record.exists() and time.time() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.1)
    assert record.exists(), _finish(procs, timeout=5)
    procs[victim].send_signal(signal.SIGKILL)


def test_a_dying_process_stops_the_others_with_a_clear_error_and_the_job_resumes(tmp_path):
    config = _config_file(tmp_path, "die", tasks=["digits"], generations=3, children_per_generation=2)
    workdir = tmp_path / "run"
    history = workdir / "history" / "main"
    # 1. process 1 dies: process 0's next exchange fails, and it says so and how to go on
    procs = _launch(config, workdir, processes=2, devices=1)
    _kill_after(procs, history / "00000-00000.jsonl", victim=1)
    t0 = time.time()
    (rc0, err0), _ = _finish(procs, timeout=240)
    assert rc0 not in (0, None) and time.time() - t0 < 200
    assert "another process stopped answering" in err0 and "--resume" in err0, err0[-3000:]
    # 2. the whole job restarts; now process 0 (the coordinator, the writer) dies: JAX stops process 1 at once
    procs = _launch(config, workdir, processes=2, devices=1, extra=["--resume"])
    _kill_after(procs, history / "00000-00001.jsonl", victim=0)
    t0 = time.time()
    _, (rc1, err1) = _finish(procs, timeout=240)
    assert rc1 not in (0, None) and time.time() - t0 < 200
    assert "another process stopped answering" in err1 or "another task died" in err1, err1[-3000:]
    state = json.loads((workdir / "agents/main.json").read_text())
    assert state["generation"] < 3 and state["loop"] == 0
    # 3. restarted again, it continues from the last complete generation; each generation is on record once
    rerun = _finish(_launch(config, workdir, processes=2, devices=1, extra=["--resume"]))
    assert [rc for rc, _ in rerun] == [0, 0], rerun[0][1][-2000:] + rerun[1][1][-2000:]
    rows = RunDir(workdir).history()
    assert sorted((r["generation"], tuple(r["devices"])) for r in rows) == [(g, (d,)) for g in range(3) for d in (0, 1)]
