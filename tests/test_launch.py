"""Launch scripts: valid bash, and launch/local.sh trains a runlocal config on CPU."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "launch").iterdir())


def test_scripts_exist():
    names = {p.name for p in SCRIPTS}
    assert {"local.sh", "slurm_gpu.sbatch", "tpu_vm.sh", "gpu_check.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax_and_strict_mode(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "set -euo pipefail" in text
    assert "xrayjax" in text and text.startswith("#!/usr/bin/env bash")


def test_usage_message_without_arguments():
    result = subprocess.run(["bash", str(ROOT / "launch/local.sh")], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_local_sh_trains_runlocal(phantom_data_dir, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    workdir = tmp_path / "run"
    result = subprocess.run(
        [
            "bash",
            str(ROOT / "launch/local.sh"),
            "configs/cyclegan_forearm.py:cls=abnormal,data=phantom,runlocal",
            str(workdir),
            f"--config.data_dir={phantom_data_dir}",
            "--config.log_every=1",  # the programs of the shared GAN run: its compiles are cached
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [
        json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 13))
    assert json.loads((workdir / "config.json").read_text())["domains"]["A"]["labels"] == [1]
