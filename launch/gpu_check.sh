#!/usr/bin/env bash
# Accelerator check: the tests marked `gpu`, then the full-size CycleGAN step benchmark
# (256×256, global batch 1, 8 and 32, float32 and bfloat16) as a table of step time, images/s
# and MFU. Made for a fresh single-GPU machine without network access (about 5 minutes):
# it installs nothing from the network. Python packages the machine lacks come from wheels in
# .whl/ (launch/offline_wheels.sh makes them); xrayjax itself runs from this source tree.
# On a machine without an accelerator it runs what it can and says what it skipped.
#
# Usage:   launch/gpu_check.sh [OUTPUT_DIR]        (default: $OUT, else runs/gpu_check)
# Environment (all optional):
#   PYTHON       interpreter (default: .venv/bin/python if present, else python3)
#   BATCHES      global batches to benchmark (default "1 8 32")
#   DTYPES       compute dtypes (default "float32 bfloat16")
#   STEPS        timed steps per benchmark (default 5)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
out=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$out"
BATCHES=${BATCHES:-"1 8 32"}
DTYPES=${DTYPES:-"float32 bfloat16"}
STEPS=${STEPS:-5}

needs="import grain, tensorflow_datasets, array_record, ml_collections, tensorboardX"
if ! "$PYTHON" -c "$needs" 2>/dev/null; then
  # The interpreter lacks part of the stack: take it from the wheels carried in .whl/.
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "$PYTHON lacks grain/tensorflow-datasets/ml-collections/tensorboardX and .whl/ has no" \
      "wheels: make them with launch/offline_wheels.sh on a machine with a network" >&2
    exit 2
  fi
  site=/tmp/xrayjax-site
  if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
    .whl/*.whl; then
    echo "the wheels in .whl/ do not install on $("$PYTHON" --version); launch/offline_wheels.sh" \
      "makes them for Python 3.12" >&2
    exit 2
  fi
  export PYTHONPATH="$site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$root:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1

backend=$("$PYTHON" - <<'PY'
import jax
print(jax.default_backend())
PY
)
"$PYTHON" -c "import jax, flax, optax; d = jax.devices()[0]; print(f'jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}; {jax.device_count()} x {d.device_kind} ({d.platform})')"

echo "== tests marked gpu =="
if [ "$backend" = cpu ]; then
  echo "no GPU or TPU backend: the gpu tests are collected and skipped"
  pytest_env=(env)
else
  pytest_env=(env JAX_PLATFORMS="")  # let jax use the accelerator inside the test process
fi
tests_failed=0
"${pytest_env[@]}" "$PYTHON" -m pytest -m gpu -q -rs -p no:cacheprovider tests 2>&1 \
  | tee "$out/gpu_tests.log" || tests_failed=1
# The benchmark still runs: its table is worth having even when a test fails.
[ "$tests_failed" = 0 ] || echo "gpu tests FAILED (see $out/gpu_tests.log); benchmarking anyway"

echo "== CycleGAN step benchmark =="
bench="$out/benchmark.jsonl"
: > "$bench"
if [ "$backend" = cpu ]; then
  echo "no GPU or TPU backend: the full-size table is skipped; one runlocal-size step proves the path"
  "$PYTHON" -m xrayjax.tools.benchmark --config=configs/cyclegan_forearm.py:runlocal --steps=2 \
    --global_batches=1 --dtypes=float32 2>>"$out/benchmark.err" | tee -a "$bench"
else
  # One process for the whole table (imports and set-up once); a size that fails, out of memory
  # say, prints its error line and the sweep goes on. Compiled programs are cached on disk, so
  # a rerun after a timeout skips the compiles already done.
  "$PYTHON" -m xrayjax.tools.benchmark --config=configs/cyclegan_forearm.py --image_size=256 \
    --global_batches="${BATCHES// /,}" --dtypes="${DTYPES// /,}" --steps="$STEPS" \
    2>>"$out/benchmark.err" | tee -a "$bench" \
    || echo '{"dtype": "-", "global_batch": "-", "error": "the benchmark process failed"}' >> "$bench"
fi

"$PYTHON" - "$bench" "$out/performance.md" <<'PY'
import datetime, json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
kind = next((r["device_kind"] for r in rows if "device_kind" in r), "?")
lines = [f"CycleGAN training step (configs/cyclegan_forearm.py), {kind}, {datetime.date.today()}", "",
         "| dtype | image | global batch | step (s) | images/s | MFU | trace (s) | compile (s) |",
         "|---|---|---|---|---|---|---|---|"]
for r in rows:
    if "error" in r:
        lines.append(f"| {r['dtype']} | 256 | {r['global_batch']} | failed: {' '.join(r['error'].split())[:120].replace('|', '/')} | | | | |")
        continue
    mfu = f"{r['mfu']:.1%}" if "mfu" in r else "n/a"
    lines.append(f"| {r['dtype']} | {r['image_size']} | {r['global_batch']} | "
                 f"{r['step_s_median']:.4f} | {r['images_per_s']:.1f} | {mfu} | "
                 f"{r['trace_s']:.1f} | {r['compile_s']:.0f} |")
text = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
PY
if [ "$tests_failed" != 0 ]; then
  echo "gpu tests failed: see $out/gpu_tests.log" >&2
  exit 1
fi
