"""Input-pipeline throughput: decode + CLAHE + resize + crop + flip, images/s per worker count.

    python -m data_prep.phantom --preset configs         # once, to have a dataset to read
    python -m xrayjax.tools.data_benchmark --workers 0,2 [--dataset phantom_forearm_radiograph]

Prints one JSON line per worker count.
"""

from __future__ import annotations

import argparse
import json
import time

from absl import flags

from xrayjax.data import pipelines, sources, transforms


def measure(table, preprocess, workers: int, batch: int, batches: int, seed: int = 0) -> dict:
    """Images/s of the training pipeline after one warm-up batch (which starts the workers)."""
    iterator = pipelines.train_iterator(
        table, preprocess, global_batch=batch, seed=seed, workers=workers
    )
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    return {
        "workers": workers,
        "batch": batch,
        "images": batch * batches,
        "seconds": round(seconds, 3),
        "images_per_s": round(batch * batches / seconds, 1),
    }


def main() -> None:
    """Run the benchmark for each worker count given."""
    parser = argparse.ArgumentParser(
        prog="python -m xrayjax.tools.data_benchmark", description=__doc__
    )
    parser.add_argument("--dataset", default="phantom_forearm_radiograph")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--load-size", type=int, default=286)
    args = parser.parse_args()
    flags.FLAGS.mark_as_parsed()  # grain workers read absl flags (grain 0.2.18)
    table = sources.open_table(args.dataset, args.split, args.data_dir)
    preprocess = transforms.Preprocess(
        image_size=args.image_size, load_size=args.load_size, use_clahe=True
    )
    for workers in (int(w) for w in args.workers.split(",")):
        result = measure(table, preprocess, workers, args.batch, args.batches)
        print(json.dumps({"dataset": args.dataset, **result}), flush=True)


if __name__ == "__main__":
    main()
