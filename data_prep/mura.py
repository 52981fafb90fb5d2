"""MURA v1.1 as downloaded → TFDS dataset `mura` (splits train, valid).

    python -m data_prep.mura --source /data/MURA-v1.1 --data-dir ~/tensorflow_datasets \
        [--body-part XR_FOREARM]

The CSVs have no header row, and their paths start with the root folder's name
(`MURA-v1.1/train/XR_FOREARM/patient00123/study1_positive/image1.png`). Labels come from
`*_labeled_studies.csv` (1 abnormal, 0 normal) and are cross-checked with the study folder's
`_positive`/`_negative` suffix.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import re
import sys

import tensorflow_datasets as tfds

from data_prep import builder, errors, images

BODY_PARTS = (
    "XR_ELBOW",
    "XR_FINGER",
    "XR_FOREARM",
    "XR_HAND",
    "XR_HUMERUS",
    "XR_SHOULDER",
    "XR_WRIST",
)
SPLITS = ("train", "valid")
_PATH = re.compile(r"^[^/]+/(train|valid)/(XR_[A-Z]+)/(patient\d+)/(study\d+)_(positive|negative)/")


def _read_rows(path: pathlib.Path, columns: int) -> list[tuple[int, list[str]]]:
    """Header-less CSV rows with their line numbers; a wrong shape is an InputError."""
    if not path.is_file():
        raise _missing_csv_error(path)
    rows = []
    with path.open(newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != columns or not _PATH.match(row[0].strip()):
                raise errors.InputError(
                    f"{path}:{line_no}: expected {columns} column(s) starting with a MURA path "
                    f"like MURA-v1.1/train/XR_FOREARM/patient00001/study1_positive/..., "
                    f"got {row!r} (MURA's CSVs have no header row)"
                )
            rows.append((line_no, [c.strip() for c in row]))
    return rows


def _missing_csv_error(path: pathlib.Path) -> errors.MissingInput:
    return errors.MissingInput(
        f"{path} not found: --source must be the MURA-v1.1 folder as downloaded, holding "
        "train_image_paths.csv, train_labeled_studies.csv, valid_image_paths.csv and "
        "valid_labeled_studies.csv"
    )


def _relative(csv_path: str) -> str:
    """Drop the leading root-folder component, so a renamed root folder still works."""
    return csv_path.split("/", 1)[1]


def _split_generator(source, split, body_part, size, fit, skip_missing):
    image_rows = _read_rows(source / f"{split}_image_paths.csv", 1)
    study_rows = _read_rows(source / f"{split}_labeled_studies.csv", 2)
    study_labels = {}
    for line_no, (study, label) in study_rows:
        if label not in ("0", "1"):
            raise errors.InputError(
                f"{source / f'{split}_labeled_studies.csv'}:{line_no}: label must be 0 or 1, "
                f"got {label!r}"
            )
        study_labels[_relative(study).rstrip("/") + "/"] = int(label)
    wanted = [(n, row[0]) for n, row in image_rows if f"/{body_part}/" in row[0]]
    csv_name = source / f"{split}_image_paths.csv"
    if not skip_missing:
        # Check every file first: failing half-way through a long build helps nobody.
        for line_no, rel in wanted:
            path = source / _relative(rel)
            if not path.is_file():
                raise errors.MissingInput(
                    f"{csv_name}:{line_no} names {path}, which does not exist "
                    "(incomplete download or wrong --source?; --skip-missing skips such rows)"
                )

    def generate(recorder: builder.SplitRecorder):
        for _line_no, rel in builder.progress(wanted, split):
            recorder.seen += 1
            path = source / _relative(rel)
            _, _, patient, study, folder_label = _PATH.match(rel).groups()
            study_key = _relative(rel).rsplit("/", 1)[0] + "/"
            if not path.is_file():
                recorder.skip(path, "missing file")
                continue
            if study_key not in study_labels:
                recorder.skip(path, "study not in labeled_studies csv")
                continue
            label = study_labels[study_key]
            if label != (folder_label == "positive"):
                recorder.skip(path, "csv label disagrees with study folder name")
                continue
            try:
                image = images.load_image(path, size, fit)
            except images.UnreadableImage as err:
                recorder.skip(path, str(err))
                continue
            yield (
                rel,
                {
                    "image": images.encode_png(image),
                    "label": label,
                    "patient_id": patient,
                    "study_id": f"{patient}/{study}",
                    "image_path": _relative(rel),
                },
            )

    return generate


def main(argv: list[str] | None = None) -> None:
    """Build the `mura` dataset from a MURA-v1.1 root."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.mura", description=__doc__)
    parser.add_argument("--source", type=pathlib.Path, required=True, help="the MURA-v1.1 folder")
    parser.add_argument("--body-part", default="XR_FOREARM", help=f"one of {', '.join(BODY_PARTS)}")
    parser.add_argument("--name", default="mura", help="dataset name to write")
    parser.add_argument("--fit", default="stretch", choices=images.FIT_MODES)
    parser.add_argument(
        "--skip-missing", action="store_true", help="skip CSV rows whose file is missing"
    )
    builder.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.body_part not in BODY_PARTS:
        raise errors.InputError(
            f"unknown --body-part {args.body_part!r}; allowed: {', '.join(BODY_PARTS)}"
        )
    source = args.source.expanduser()
    if not source.is_dir():
        raise errors.MissingInput(f"--source {source} is not a folder")
    size = args.image_size
    generators = {
        split: _split_generator(source, split, args.body_part, size, args.fit, args.skip_missing)
        for split in SPLITS
    }
    features = {
        "image": builder.image_feature(size),
        "label": tfds.features.ClassLabel(names=["normal", "abnormal"]),
        "patient_id": tfds.features.Text(),
        "study_id": tfds.features.Text(),
        "image_path": tfds.features.Text(),
    }
    builder.build_dataset(
        args.name,
        features,
        generators,
        builder.resolve_data_dir(args.data_dir),
        source=str(source),
        description=f"MURA v1.1 {args.body_part}, grayscale {size}x{size}; label 1 = abnormal.",
        overwrite=args.overwrite,
        settings={"body_part": args.body_part, "image_size": size, "fit": args.fit},
    )


if __name__ == "__main__":
    sys.exit(builder.run_cli(main))
