"""RSNA Pediatric Bone Age (Kaggle layout) → TFDS dataset `rsna_boneage` (splits train, test).

    python -m data_prep.rsna_boneage --source /data/rsna-bone-age --data-dir ~/tensorflow_datasets

Expected under --source:
    boneage-training-dataset.csv   id,boneage,male          (months; True/False)
    boneage-training-dataset/[boneage-training-dataset/]<id>.png
    boneage-test-dataset.csv       Case ID,Sex              (M/F; no ages)
    boneage-test-dataset/[boneage-test-dataset/]<id>.png
The Kaggle copy doubles each image folder; both forms are found.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys

import numpy as np
import tensorflow_datasets as tfds

from data_prep import builder, errors, images

# split → (csv file, image folder, id column, sex column, age column or None)
_LAYOUT = {
    "train": ("boneage-training-dataset.csv", "boneage-training-dataset", "id", "male", "boneage"),
    "test": ("boneage-test-dataset.csv", "boneage-test-dataset", "Case ID", "Sex", None),
}
_MALE = {"true": 1, "m": 1, "male": 1, "1": 1, "false": 0, "f": 0, "female": 0, "0": 0}


def _image_folder(source: pathlib.Path, folder: str) -> pathlib.Path:
    """The folder holding the PNGs, whether Kaggle's doubled nesting is there or not."""
    for candidate in (source / folder / folder, source / folder):
        if candidate.is_dir() and any(candidate.glob("*.png")):
            return candidate
    raise errors.MissingInput(
        f"no PNG images in {source / folder} or {source / folder / folder}: "
        "--source must be the RSNA Bone Age folder as downloaded"
    )


def _read_csv(path: pathlib.Path, columns: list[str]) -> list[tuple[int, dict]]:
    """Rows of a CSV with a header, checked to have the expected columns."""
    if not path.is_file():
        raise errors.MissingInput(
            f"{path} not found: --source must be the RSNA Bone Age folder holding "
            "boneage-training-dataset.csv and boneage-test-dataset.csv"
        )
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise errors.InputError(
                f"{path}: missing column(s) {missing}; found {reader.fieldnames}"
            )
        return [(line_no, row) for line_no, row in enumerate(reader, start=2)]


def _split_generator(source, split, size, fit, skip_missing):
    csv_name, folder_name, id_col, sex_col, age_col = _LAYOUT[split]
    csv_path = source / csv_name
    columns = [id_col, sex_col] + ([age_col] if age_col else [])
    rows = _read_csv(csv_path, columns)
    folder = _image_folder(source, folder_name)
    entries = []
    for line_no, row in rows:
        record_id = row[id_col].strip()
        sex = row[sex_col].strip().lower()
        if sex not in _MALE:
            raise errors.InputError(f"{csv_path}:{line_no}: unreadable sex value {row[sex_col]!r}")
        try:
            age = float(row[age_col]) if age_col else -1.0
        except ValueError:
            raise errors.InputError(
                f"{csv_path}:{line_no}: bone age {row[age_col]!r} is not a number"
            ) from None
        path = folder / f"{record_id}.png"
        if not skip_missing and not path.is_file():
            raise errors.MissingInput(
                f"{csv_path}:{line_no} names id {record_id}, but {path} does not exist "
                "(--skip-missing skips such rows)"
            )
        entries.append((record_id, path, age, _MALE[sex]))

    def generate(recorder: builder.SplitRecorder):
        for record_id, path, age, male in builder.progress(entries, split):
            recorder.seen += 1
            if not path.is_file():
                recorder.skip(path, "missing file")
                continue
            try:
                image = images.load_image(path, size, fit)
            except images.UnreadableImage as err:
                recorder.skip(path, str(err))
                continue
            yield (
                record_id,
                {
                    "image": images.encode_png(image),
                    "boneage_months": np.float32(age),
                    "male": male,
                    "id": record_id,
                },
            )

    return generate


def main(argv: list[str] | None = None) -> None:
    """Build the `rsna_boneage` dataset from the Kaggle folder."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.rsna_boneage", description=__doc__)
    parser.add_argument("--source", type=pathlib.Path, required=True)
    parser.add_argument("--name", default="rsna_boneage", help="dataset name to write")
    parser.add_argument("--fit", default="stretch", choices=images.FIT_MODES)
    parser.add_argument(
        "--skip-missing", action="store_true", help="skip rows whose file is missing"
    )
    builder.add_common_args(parser)
    args = parser.parse_args(argv)
    source = args.source.expanduser()
    if not source.is_dir():
        raise errors.MissingInput(f"--source {source} is not a folder")
    size = args.image_size
    generators = {
        split: _split_generator(source, split, size, args.fit, args.skip_missing)
        for split in _LAYOUT
    }
    features = {
        "image": builder.image_feature(size),
        "boneage_months": np.float32,  # -1 where unknown (the test split)
        "male": np.int64,
        "id": tfds.features.Text(),
    }
    builder.build_dataset(
        args.name,
        features,
        generators,
        builder.resolve_data_dir(args.data_dir),
        source=str(source),
        description=f"RSNA Pediatric Bone Age hands, grayscale {size}x{size}.",
        overwrite=args.overwrite,
        settings={"image_size": size, "fit": args.fit},
    )


if __name__ == "__main__":
    sys.exit(builder.run_cli(main))
