"""The step benchmark: one JSON line per (dtype, global batch), a failing size reported in
its line without stopping the sweep, and bad flags refused before anything compiles."""

import json
import subprocess
import sys

from main_process import ROOT, device_env

CLASSIFIER = "configs/classifier_forearm.py:runlocal"


def _benchmark(*flags):
    return subprocess.run(
        [sys.executable, "-m", "xrayjax.tools.benchmark", f"--config={CLASSIFIER}", *flags],
        cwd=ROOT,
        env=device_env(4),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_sweep_prints_a_line_per_size_and_reports_a_failing_one():
    result = _benchmark("--global-batches=8,6", "--dtypes=float32", "--steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(r["dtype"], r["global_batch"]) for r in lines] == [("float32", 8), ("float32", 6)]
    timed, failed = lines
    assert timed["devices"] == 4 and timed["image_size"] == 32
    assert timed["step_s_median"] > 0 and timed["flops_per_step"] > 0
    assert abs(timed["images_per_s"] - 8 / timed["step_s_median"]) < 0.01 * timed["images_per_s"]
    # Each device's program takes at least its shard of the batch (2 of 8 32x32 float32 images)
    # as an argument, and the process holds at least that.
    memory = timed["memory_bytes"]
    assert memory["argument"] >= 2 * 32 * 32 * 4 and memory["temp"] > 0
    assert timed["peak_rss_mb"] * 2**20 > memory["argument"] + memory["temp"]
    assert "global batch 6 does not divide by the 4 devices" in failed["error"]


def test_bad_flags_are_refused():
    result = _benchmark("--dtypes=float16")
    assert result.returncode != 0 and "unknown dtype(s) float16" in result.stderr
    result = _benchmark("--global-batches=4,x")
    assert result.returncode != 0 and "--global_batches takes integers" in result.stderr
