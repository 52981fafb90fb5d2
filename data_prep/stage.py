"""Copy prepared datasets from a data dir (typically gs://) to a local one, before training.

Training reads gs:// datasets directly (array_record's reader speaks GCS), but each random
record read is then a request to the bucket. A local copy on every worker avoids that. Rerunning
copies only what is missing; each dataset's dataset_info.json is copied last, so a dataset that
was half copied when a worker died reads as absent, never as complete.

Usage: python -m data_prep.stage --data-dir gs://BUCKET/tfds --to /tmp/tfds NAME [NAME ...]
"""

from __future__ import annotations

import argparse
import sys

from data_prep import builder, errors, storage


def stage(names: list[str], data_dir: str, local_dir: str) -> dict[str, int]:
    """Copy each dataset NAME (all its versions) from `data_dir` to `local_dir`; files copied
    per dataset."""
    source_root = storage.as_path(data_dir)
    copied = {}
    for name in names:
        source = source_root / name
        if not builder.dataset_exists(source_root, name):
            raise errors.MissingInput(
                f"dataset {name!r} is not prepared in {data_dir} (no {name}/{builder.VERSION}/"
                "dataset_info.json there); prepare it or upload it first"
            )
        copied[name] = storage.copy_tree(
            source, storage.as_path(local_dir) / name, last=("dataset_info.json",)
        )
    return copied


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help="dataset names, e.g. mura phantom_forearm_clean")
    parser.add_argument(
        "--data-dir", required=True, help="where the datasets are (gs:// or a folder)"
    )
    parser.add_argument("--to", required=True, help="the local data dir to copy them into")
    args = parser.parse_args(argv)
    for name, count in stage(args.names, args.data_dir, args.to).items():
        print(f"{name}: {count} files copied from {args.data_dir} to {args.to}", flush=True)


if __name__ == "__main__":
    sys.exit(builder.run_cli(main))
