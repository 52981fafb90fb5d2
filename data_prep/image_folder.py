"""Any folder of images → a TFDS dataset (how users bring their own renders or labelled masks).

    python -m data_prep.image_folder --source DIR --name NAME --data-dir ~/tensorflow_datasets

Layouts accepted under DIR:
    *.png ...                        no classes (label -1)
    normal/*.png  abnormal/*.png     classes (label 0 / 1)
    masks/<stem>.png                 optional binary masks matched to images by file stem
Images may be PNG, JPEG, BMP, TIFF or DICOM (`.dcm`, or any file with the DICOM preamble; see
data_prep/dicom.py). Features: image, label, mask (zeros and has_mask false where no mask
exists), has_mask, file_name, pixel_spacing_mm (row, column; −1 when unknown).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import numpy as np
import tensorflow_datasets as tfds

from data_prep import builder, errors, images

CLASSES = ("normal", "abnormal")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _collect(source: pathlib.Path) -> list[tuple[pathlib.Path, int]]:
    """Candidate files with their labels (-1 without class folders)."""
    class_dirs = [source / c for c in CLASSES if (source / c).is_dir()]
    if class_dirs:
        return [
            (path, CLASSES.index(folder.name))
            for folder in class_dirs
            for path in images.list_files(folder)
        ]
    return [(path, -1) for path in images.list_files(source)]


def _masks_by_stem(source: pathlib.Path) -> dict[str, pathlib.Path]:
    masks = source / "masks"
    if not masks.is_dir():
        return {}
    found: dict[str, pathlib.Path] = {}
    for path in images.list_files(masks):
        if path.stem in found:
            raise errors.InputError(f"{masks}: two masks share the stem {path.stem!r}")
        found[path.stem] = path
    return found


def stored_pixel_spacing(
    spacing_mm: list[float] | None, shape: tuple[int, int], size: int, fit: str
) -> tuple[float, float]:
    """(row, column) mm per pixel once an (H, W) image is made size×size by `fit`; (−1, −1)
    when the file gave no spacing."""
    if not spacing_mm:
        return (-1.0, -1.0)
    rows, cols = shape
    if fit == "pad":
        rows = cols = max(rows, cols)
    return (spacing_mm[0] * rows / size, spacing_mm[1] * cols / size)


def main(argv: list[str] | None = None) -> None:
    """Build a dataset from a folder of images."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.image_folder", description=__doc__)
    parser.add_argument("--source", type=pathlib.Path, required=True)
    parser.add_argument("--name", required=True, help="dataset name: lowercase letters, digits, _")
    parser.add_argument("--split", default="train", help="split name to write (default: train)")
    parser.add_argument("--fit", default="stretch", choices=images.FIT_MODES)
    builder.add_common_args(parser)
    args = parser.parse_args(argv)
    if not _NAME.match(args.name):
        raise errors.InputError(
            f"--name {args.name!r}: use lowercase letters, digits and underscores, starting "
            "with a letter (TFDS dataset names)"
        )
    source = args.source.expanduser()
    if not source.is_dir():
        raise errors.MissingInput(f"--source {source} is not a folder")
    candidates = _collect(source)
    masks = _masks_by_stem(source)
    stems = [path.stem for path, _ in candidates]
    if masks and len(set(stems)) != len(stems):
        raise errors.InputError(
            f"{source}: image file stems repeat across class folders, so masks/ cannot be "
            "matched to them; rename the images"
        )
    size = args.image_size
    # Filled while the split is written; the prep report is serialised after that.
    dicom_files: dict[str, dict] = {}

    def generate(recorder: builder.SplitRecorder):
        for path, label in builder.progress(candidates, args.split):
            recorder.seen += 1
            try:
                gray, info = images.read_gray_with_info(path)
            except images.UnreadableImage as err:
                recorder.skip(path, str(err))
                continue
            image = images.resize_square(gray, size, args.fit)[:, :, None]
            spacing = stored_pixel_spacing(info.get("pixel_spacing_mm"), gray.shape, size, args.fit)
            if info:
                dicom_files[str(path.relative_to(source))] = info
            mask_path = masks.get(path.stem)
            mask = np.zeros((size, size, 1), np.uint8)
            if mask_path is not None:
                try:
                    mask = images.load_mask(mask_path, size, args.fit)
                except images.UnreadableImage as err:
                    recorder.skip(path, f"mask {mask_path.name}: {err}")
                    continue
            yield (
                str(path.relative_to(source)),
                {
                    "image": images.encode_png(image),
                    "label": label,
                    "mask": images.encode_png(mask),
                    "has_mask": mask_path is not None,
                    "file_name": str(path.relative_to(source)),
                    "pixel_spacing_mm": np.asarray(spacing, np.float32),
                },
            )

    features = {
        "image": builder.image_feature(size),
        "label": np.int64,  # 0 normal, 1 abnormal, -1 without class folders
        "mask": builder.image_feature(size),
        "has_mask": np.bool_,
        "file_name": tfds.features.Text(),
        # (row, column) mm per pixel of the stored image; −1 where the file does not say.
        "pixel_spacing_mm": tfds.features.Tensor(shape=(2,), dtype=np.float32),
    }
    builder.build_dataset(
        args.name,
        features,
        {args.split: generate},
        builder.resolve_data_dir(args.data_dir),
        source=str(source),
        description=f"Images from {source}, grayscale {size}x{size}.",
        overwrite=args.overwrite,
        settings={
            "image_size": size,
            "fit": args.fit,
            "masks": len(masks),
            "dicom": dicom_files,  # per DICOM file: photometric, pixel spacing, transfer syntax
        },
    )


if __name__ == "__main__":
    sys.exit(builder.run_cli(main))
