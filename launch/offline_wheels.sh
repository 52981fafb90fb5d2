#!/usr/bin/env bash
# Wheels for running xrayjax on an offline machine whose Python 3.12 image already holds the
# jax stack (jax, flax, optax, orbax-checkpoint, opencv, etils, protobuf >= 6.31, tqdm, pytest):
# grain, tensorflow-datasets, array-record, ml-collections, tensorboardX and what they need,
# about 10 MiB, written to one folder. Run it on a machine with network access, copy the folder
# to the repository root of the offline machine as .whl/, and launch/gpu_check.sh installs it
# there without a network (pip --no-index). Checked against jax 0.11.2 on Python 3.12.
#
# Usage:   launch/offline_wheels.sh [DEST]        (default: .whl)
# Environment (optional):
#   PYTHON   interpreter that runs pip (default python3; its own version does not matter)
set -euo pipefail

dest=${1:-.whl}
PYTHON=${PYTHON:-python3}
mkdir -p "$dest"
# One version of each: the offline install takes every wheel in the folder.
pinned=(
  grain==0.2.18 tensorflow-datasets==4.9.10 array-record==0.8.6 ml-collections==1.1.0
  importlib_resources==7.1.0 tensorboardX==2.6.5 portpicker==1.6.0 dm-tree==0.1.10
  immutabledict==4.3.1 simple_parsing==0.1.9 docstring-parser==0.18.0
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0
  toml==0.10.2 einops==0.8.2
)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" "${pinned[@]}"
# promise is published as source only; its wheel is pure Python, so building it here is enough.
"$PYTHON" -m pip wheel -q --no-deps --no-binary=:all: -w "$dest" promise==2.3
count=$(find "$dest" -maxdepth 1 -name '*.whl' | wc -l)
echo "$count wheels in $dest ($(du -sh "$dest" | cut -f1)); for python -m xrayjax.* on that machine"
