#!/usr/bin/env bash
# One host, every accelerator it has (or the CPU): the same command researchers type by hand.
#
# Usage:   launch/local.sh CONFIG WORKDIR [--config.field=value ...]
# Example: launch/local.sh configs/cyclegan_forearm.py:cls=normal runs/cg_normal
#
# Environment (all optional):
#   PYTHON              interpreter to use (default: .venv/bin/python if present, else python3)
#   TFDS_DATA_DIR       where prepared datasets live (default ~/tensorflow_datasets)
#   CUDA_VISIBLE_DEVICES  restrict the GPUs used
#   XLA_PYTHON_CLIENT_MEM_FRACTION  GPU memory fraction jax may take (jax default 0.75)
# Rerunning the same command resumes from WORKDIR's latest checkpoint.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi

cd "$root"
exec "$PYTHON" -m xrayjax.main --config="$config" --workdir="$workdir" "$@"
