"""Run output: metrics.jsonl on resume, and whole-file writes."""

import json

import numpy as np

from xrayjax import logging as runlog


def test_resume_drops_lines_past_the_checkpoint_and_a_line_cut_by_a_kill(tmp_path):
    lines = [json.dumps({"step": s, "loss": s / 10}) for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "lo')
    writer = runlog.MetricWriter(tmp_path, resume_step=3)
    assert [r["step"] for r in runlog.read_metrics(tmp_path)] == [1, 2, 3]
    writer.write(4, {"loss": np.float32(0.25)})
    writer.close()
    assert runlog.read_metrics(tmp_path)[-1] == {"step": 4, "loss": 0.25}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # Written whole: no temporary file is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tensorboard"]


def test_write_json_is_strict_and_whole(tmp_path):
    path = runlog.write_json(tmp_path / "a" / "eval.json", {"x": float("nan"), "y": np.int64(2)})
    assert json.loads(path.read_text()) == {"x": None, "y": 2}
    runlog.save_png(tmp_path / "a" / "grid.png", np.zeros((4, 4), np.uint8))
    assert (tmp_path / "a" / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["eval.json", "grid.png"]
