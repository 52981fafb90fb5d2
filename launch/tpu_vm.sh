#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create it (or reuse it), install xrayjax on every worker, and
# run the same command on all workers; jax.distributed.initialize() finds the slice's hosts.
#
# Usage:   launch/tpu_vm.sh CONFIG gs://BUCKET/runs/NAME [--config.field=value ...]
# Example: TPU_NAME=xray-v4 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#            launch/tpu_vm.sh configs/cyclegan_forearm.py:cls=normal gs://my-bucket/runs/cg_normal \
#            --config.global_batch=32 --config.dtype=bfloat16
#
# Environment:
#   TPU_NAME          TPU VM name (required)
#   ZONE              GCP zone (required)
#   ACCELERATOR_TYPE  e.g. v4-8, v5litepod-16 (needed only to create the VM)
#   RUNTIME_VERSION   TPU software version (default tpu-ubuntu2204-base)
#   PROJECT           GCP project (default: gcloud's configured project)
#   TFDS_DATA_DIR     prepared datasets, e.g. gs://BUCKET/tensorflow_datasets (required); read
#                     from the bucket directly (array_record's reader speaks gs://)
#   STAGE_DATASETS    optional dataset names (e.g. "mura phantom_forearm_clean"): each worker
#                     first copies them to its local disk (python -m data_prep.stage) and
#                     trains from there, which saves one bucket request per record read
#   REPO_URL          where workers clone xrayjax from (default: copy this checkout with scp)
# The workdir is a gs:// path: orbax writes checkpoints there directly, so a preempted slice
# resumes from the bucket when this script is rerun; process 0 writes metrics.jsonl, samples and
# reports there too (TensorBoard events are written locally and copied up at each log step).
# Credentials: the TPU VM's service account (it needs read/write access to the bucket).
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG gs://BUCKET/WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
: "${TFDS_DATA_DIR:?set TFDS_DATA_DIR (e.g. gs://BUCKET/tensorflow_datasets)}"
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
project_flag=()
if [ -n "${PROJECT:-}" ]; then project_flag=(--project="$PROJECT"); fi

tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" "${project_flag[@]}"; }

if ! tpu describe "$TPU_NAME" >/dev/null 2>&1; then
  : "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE to create $TPU_NAME}"
  tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${REPO_URL:-}" ]; then
  tpu ssh "$TPU_NAME" --worker=all --command="rm -rf xrayjax && git clone --depth 1 $REPO_URL xrayjax"
else
  tar -C "$root" --exclude=.venv --exclude=runs --exclude=.git -czf /tmp/xrayjax-src.tgz .
  tpu scp /tmp/xrayjax-src.tgz "$TPU_NAME":/tmp/xrayjax-src.tgz --worker=all
  tpu ssh "$TPU_NAME" --worker=all --command="rm -rf xrayjax && mkdir xrayjax && tar -C xrayjax -xzf /tmp/xrayjax-src.tgz"
fi
tpu ssh "$TPU_NAME" --worker=all --command="cd xrayjax && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"

data_dir=$TFDS_DATA_DIR
stage=""
if [ -n "${STAGE_DATASETS:-}" ]; then
  data_dir=/tmp/xrayjax_tfds
  echo "every worker copies $STAGE_DATASETS from $TFDS_DATA_DIR to $data_dir, then trains from there"
  stage=".venv/bin/python -m data_prep.stage --data-dir=$TFDS_DATA_DIR --to=$data_dir $STAGE_DATASETS && "
else
  echo "workers read datasets from $TFDS_DATA_DIR directly (set STAGE_DATASETS to copy them first)"
fi
quoted=$(printf ' %q' "$@")
tpu ssh "$TPU_NAME" --worker=all --command="cd xrayjax && ${stage}TFDS_DATA_DIR=$data_dir .venv/bin/python -m xrayjax.main --config=$config --workdir=$workdir$quoted"
