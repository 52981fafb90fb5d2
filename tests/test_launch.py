"""Launch scripts: valid bash in strict mode, and a usage message. launch/local.sh trains (and
resumes) a run in test_cloud_storage, on a gs:// workdir."""

import pathlib
import subprocess

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
