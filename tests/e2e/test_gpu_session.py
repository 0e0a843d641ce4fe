"""The prepared GPU session (bench/gpu_session.sh) runs through every section on this machine at toy sizes
(`--smoke`), so a session lent a GPU spends its minutes measuring, not debugging. No timings are asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from locations import REPO


def test_smoke_session_runs_every_section(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    out = subprocess.run(["bash", str(REPO / "bench/gpu_session.sh"), "--smoke"], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_session.json").read_text())
    assert report["smoke"] and set(report["status"]) == {"check", "matmul", "B16-infer", "B16-train", "prefix",
                                                         "L16-infer", "L16-train", "cost", "ablations"}
    assert all(v.startswith("ok") for v in report["status"].values()), report["status"]
    results = report["results"]
    assert results["B16-train"]["peer_how"] == "torch.compile"  # the compiled peer ran (aot_eager backend here)
    assert results["prefix"]["cached_blocks"] == 3 and results["prefix"]["plain_blocks"] == 0
    assert results["prefix"]["cached_accuracy"] == results["prefix"]["plain_accuracy"]
    assert len(results["cost"]["rows"]) == 7 and results["check"]["torch"]
    log = (tmp_path / "gpu_session.log").read_text()
    assert "== machine" in log and "SMOKE (toy sizes, not a measurement)" in log and "exit 0" in log
    # a section that does not fit the budget is skipped, reported, and named in the rerun command
    out = subprocess.run(["bash", str(REPO / "bench/gpu_session.sh"), "--smoke", "--only", "check,cost",
                          "--budget-s", "0"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "bash bench/gpu_session.sh --smoke --only check,cost" in out.stdout
