"""The ablation runner: every (setting, seed) run, the summary table, and resuming without
retraining finished runs."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import classifier_forearm
from xrayjax.evaluators import classification
from xrayjax.tools import ablation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/classifier_forearm.py:data=phantom,runlocal"
# 2 steps per epoch, 2 epochs: 4 steps per run.
FIELDS = {"steps_per_epoch": 2, "num_epochs": 2, "checkpoint_every": 2, "log_every": 2}


def _config(data_dir):
    config = classifier_forearm.get_config("data=phantom,runlocal")
    config.data_dir = str(data_dir)
    for key, value in FIELDS.items():
        config[key] = value
    return config


def test_arms_refuse_what_cannot_be_an_arm():
    assert ablation.Arm("n", "natural").describe() == "natural only"
    assert ablation.Arm("c", "ceiling", 5, ("x:extra",), clahe=True).describe() == (
        "natural-rich ceiling (+ 5 natural / class)"
    )
    with pytest.raises(ValueError, match="kind 'translatd'"):
        ablation.Arm("t", "translatd", 5)
    with pytest.raises(ValueError, match="adds nothing"):
        ablation.Arm("t", "translated", 0)
    with pytest.raises(ValueError, match="adds nothing"):
        ablation.Arm("n", "natural", 3)
    arms = ablation.settings_arms([0, 5000])
    assert [(a.name, a.kind, a.per_class) for a in arms] == [
        ("syn0", "natural", 0),
        ("syn5000", "translated", 5000),
    ]


def test_thesis_figures_sit_beside_the_arm_the_thesis_ran():
    """Table 2 of the thesis trained on natural images plus N translated ones per class: its
    figures go beside the natural arm and the translated arm of the same N, nowhere else."""
    arms = [
        ablation.Arm("syn0", "natural"),
        ablation.Arm("syn5000", "translated", 5000),
        ablation.Arm("raw5000", "untranslated", 5000),
        ablation.Arm("syn7", "translated", 7),
    ]
    report = {"accuracy": 0.5, "sensitivity": 0.5, "specificity": 0.5, "roc_auc": 0.5}
    rows = ablation.summarise({arm.name: [(0, report)] for arm in arms}, arms)
    thesis = {row["arm"]: row["thesis_accuracy"] for row in rows}
    assert thesis["syn0"] == ablation.THESIS_TABLE2[0]["accuracy"]
    assert thesis["syn5000"] == ablation.THESIS_TABLE2[5000]["accuracy"]
    assert thesis["syn0"] != thesis["syn5000"]
    assert np.isnan(thesis["raw5000"]) and np.isnan(thesis["syn7"])


def test_two_settings_two_seeds_then_resume_without_retraining(phantom_data_dir, tmp_path):
    workdir = tmp_path / "ablation"
    rows = ablation.run_ablation(_config(phantom_data_dir), [0, 4], 2, workdir)
    runs = sorted(p.name for p in workdir.iterdir() if p.is_dir())
    assert runs == ["syn0_seed0", "syn0_seed1", "syn4_seed0", "syn4_seed1"]
    reports = {name: json.loads((workdir / name / "eval.json").read_text()) for name in runs}
    assert all(r["step"] == r["total_steps"] == 4 for r in reports.values())
    sizes = {
        name: json.loads((workdir / name / "training_set.json").read_text())["total"]["images"]
        for name in runs
    }
    assert sizes == {"syn0_seed0": 24, "syn0_seed1": 24, "syn4_seed0": 32, "syn4_seed1": 32}
    # Seeds differ: the two runs of a setting are not copies of each other.
    assert (workdir / "syn0_seed0" / "metrics.jsonl").read_text() != (
        workdir / "syn0_seed1" / "metrics.jsonl"
    ).read_text()

    assert [row["synthetic_per_class"] for row in rows] == [0, 4]
    assert [row["training_data"] for row in rows] == ["natural only", "+ 4 translated / class"]
    # The paired difference uses the per-image probabilities each run keeps in eval.json.
    labels = np.asarray(reports["syn0_seed0"]["labels"])
    arm = np.stack([reports[f"syn4_seed{s}"]["probabilities"] for s in (0, 1)], 1)
    ref = np.stack([reports[f"syn0_seed{s}"]["probabilities"] for s in (0, 1)], 1)
    expected = np.mean(
        [classification.roc_auc(labels, arm[:, s]) - classification.roc_auc(labels, ref[:, s])
         for s in (0, 1)]
    )  # fmt: skip
    assert rows[1]["diff_roc_auc"] == pytest.approx(expected)
    assert rows[1]["diff_roc_auc_ci_low"] <= expected <= rows[1]["diff_roc_auc_ci_high"]
    assert np.isnan(rows[0]["diff_roc_auc"])
    for row in rows:
        mine = [reports[f"syn{row['synthetic_per_class']}_seed{s}"] for s in (0, 1)]
        assert row["runs"] == 2
        for metric in ("sensitivity", "specificity", "accuracy", "roc_auc"):
            values = [r[metric] for r in mine]
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values)), metric
            assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1)), metric
        best = max((0, 1), key=lambda s: (mine[s]["accuracy"], -s))
        assert row["best_seed"] == best
        assert row["best_accuracy"] == mine[best]["accuracy"]
        assert row["best_sensitivity"] == mine[best]["sensitivity"]
        assert np.isnan(row["study_kappa_mean"])  # phantoms have no study ids
    # The thesis ran no 4-per-class setting: nothing to compare that arm with.
    assert np.isnan(rows[1]["thesis_accuracy"])

    table = (workdir / "table.md").read_text().splitlines()
    body = [line for line in table if line.startswith("| ") and not line.startswith("| training")]
    assert [line.split(" | ")[0] for line in body] == ["| natural only", "| + 4 translated / class"]
    acc = rows[0]["accuracy_mean"], rows[0]["accuracy_std"]
    assert f"{acc[0]:.3f} ± {acc[1]:.3f}" in body[0]
    thesis = [rows[0][f"thesis_{k}"] for k in ("sensitivity", "specificity", "accuracy")]
    assert "| " + " | ".join(f"{v:.3f}" for v in thesis) + " |" in body[0]
    assert "study κ" not in table[4]  # no study-level column without study ids
    with (workdir / "table.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["synthetic_per_class"] for r in csv_rows] == ["0", "4"]
    assert float(csv_rows[1]["accuracy_mean"]) == pytest.approx(rows[1]["accuracy_mean"])
    assert csv_rows[1]["thesis_accuracy"] == "" and csv_rows[0]["study_kappa_mean"] == ""

    # Second invocation (command line): finished runs are not touched; a run without its final
    # eval.json (half-finished) goes back to the trainer, which resumes at its last checkpoint.
    stamps = {name: (workdir / name / "metrics.jsonl").stat().st_mtime_ns for name in runs}
    half_finished = workdir / "syn4_seed1" / "eval.json"
    eval_text = half_finished.read_text()
    half_finished.unlink()
    table_before = (workdir / "table.md").read_text()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "xrayjax.tools.ablation",
            f"--config={CONFIG}",
            f"--workdir={workdir}",
            "--synthetic=0,4",
            "--seeds=2",
            f"--config.data_dir={phantom_data_dir}",
            *(f"--config.{k}={v}" for k, v in FIELDS.items()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("finished, skipped") == 3
    assert "[4/4] syn4_seed1: training" in result.stdout
    assert "resuming at step 4 of 4" in result.stdout
    for name in ("syn0_seed0", "syn0_seed1", "syn4_seed0"):
        assert (workdir / name / "metrics.jsonl").stat().st_mtime_ns == stamps[name], name
    assert half_finished.read_text() == eval_text
    assert (workdir / "table.md").read_text() == table_before


def test_bad_arguments(phantom_data_dir, tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        ablation.run_ablation(_config(phantom_data_dir), [], 2, tmp_path)
    # A setting asking for more synthetic images than exist fails before any training.
    with pytest.raises(ValueError, match="only"):
        ablation.run_ablation(_config(phantom_data_dir), [500], 1, tmp_path / "big")
    assert not (tmp_path / "big" / "syn500_seed0" / "checkpoints").exists()
