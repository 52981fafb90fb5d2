"""Prepared TFDS datasets as random-access record tables for grain.

Images stay PNG bytes here (decoded later, in the pipeline's workers, with OpenCV), so that
scanning labels or building mixed training sets costs no image decoding.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_prep import builder, errors, storage

IMAGE_FEATURES = ("image", "mask")

# How each known dataset is made, for the message when it is missing.
_HOW_TO_MAKE = {
    "mura": "python -m data_prep.mura --source /path/to/MURA-v1.1 --data-dir {data_dir}",
    "rsna_boneage": "python -m data_prep.rsna_boneage --source /path/to/rsna --data-dir {data_dir}",
}


class DatasetNotFound(errors.MissingInput):
    """A dataset or split that has not been prepared; the message says how to make it."""


def default_data_dir() -> epath.Path:
    """The TFDS convention: $TFDS_DATA_DIR, else ~/tensorflow_datasets (either may be a URL)."""
    return builder.default_data_dir()


def _how_to_make(name: str, data_dir: os.PathLike) -> str:
    if name in _HOW_TO_MAKE:
        return _HOW_TO_MAKE[name].format(data_dir=data_dir)
    if name.startswith("phantom_"):
        return f"python -m data_prep.phantom --preset configs --data-dir {data_dir}"
    return (
        f"python -m data_prep.image_folder --source DIR --name {name} --data-dir {data_dir} "
        "(or a translate run writing it)"
    )


def dataset_path(name: str, data_dir: str | os.PathLike | None = None) -> epath.Path:
    """The folder of the newest complete version of dataset `name` (local or gs://; array_record
    reads gs:// itself)."""
    data_dir = storage.as_path(data_dir) if data_dir else default_data_dir()
    versions = sorted(
        (p for p in (data_dir / name).glob("*") if (p / "dataset_info.json").is_file()),
        key=lambda p: tuple(int(x) if x.isdigit() else 0 for x in p.name.split(".")),
    )
    if not versions:
        raise DatasetNotFound(
            f"dataset {name!r} is not prepared in {data_dir}; make it with: "
            f"{_how_to_make(name, data_dir)}"
        )
    return versions[-1]


def open_split(name: str, split: str, data_dir: str | os.PathLike | None = None):
    """A tfds ArrayRecordDataSource of one split, with image features left as PNG bytes."""
    builder = tfds.builder_from_directory(str(dataset_path(name, data_dir)))
    if split not in builder.info.splits:
        raise DatasetNotFound(
            f"dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits)}"
        )
    decoders = {
        key: tfds.decode.SkipDecoding() for key in IMAGE_FEATURES if key in builder.info.features
    }
    return builder.as_data_source(split=split, decoders=decoders)


@dataclasses.dataclass
class RecordTable:
    """A random-access view over rows (source, record) of one or more dataset splits.

    Each record comes back as the dataset's example dict plus `index`, its row in this table,
    and `source`, which of `names` it came from.
    """

    sources: list
    names: list[str]
    rows: np.ndarray  # int64 (n, 2): source number, record number within that source

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        source, record = self.rows[int(index)]
        example = dict(self.sources[source][int(record)])
        example["index"] = np.int64(index)
        example["source"] = np.int64(source)
        return example

    def column(self, key: str) -> np.ndarray:
        """One scalar feature of every row, read without decoding images."""
        return np.asarray([self.sources[s][int(r)][key] for s, r in self.rows])

    def subset(self, keep: np.ndarray) -> RecordTable:
        """The rows selected by a boolean mask or an index array, in that order."""
        return RecordTable(self.sources, self.names, self.rows[keep])


def open_table(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    labels: Sequence[int] | None = None,
) -> RecordTable:
    """A table over one split, optionally only the records whose label is in `labels`."""
    source = open_split(name, split, data_dir)
    table = RecordTable(
        [source],
        [f"{name}:{split}"],
        np.stack([np.zeros(len(source)), np.arange(len(source))], 1).astype(np.int64),
    )
    if labels is not None:
        if "label" not in source.dataset_info.features:
            raise errors.InputError(
                f"dataset {name!r} has no labels, so it cannot be filtered by label"
            )
        table = table.subset(np.isin(table.column("label"), list(labels)))
        if len(table) == 0:
            raise errors.InputError(f"{name}:{split} has no records with label in {list(labels)}")
    return table


def concatenate(tables: Sequence[RecordTable]) -> RecordTable:
    """One table holding the rows of several, in order."""
    sources, names, rows = [], [], []
    for table in tables:
        rows.append(table.rows + np.array([len(sources), 0]))
        sources.extend(table.sources)
        names.extend(table.names)
    return RecordTable(sources, names, np.concatenate(rows).astype(np.int64))


def parse_spec(spec: str, role: str = "dataset", other: str = "") -> tuple[str, str]:
    """'name:split' → (name, split); ValueError naming `role` (and `other` accepted forms)."""
    name, sep, split = spec.partition(":")
    if not sep or not name or not split:
        raise errors.InputError(
            f"{role} {spec!r}: write it as DATASET:SPLIT, e.g. mura:valid{other}"
        )
    return name, split


def labelled_table(spec: str, data_dir, role: str) -> tuple[RecordTable, np.ndarray]:
    """A split's records and their labels; ValueError unless every label is 0 or 1."""
    name, split = parse_spec(spec, role)
    table = open_table(name, split, data_dir)
    if "label" not in table.sources[0].dataset_info.features:
        raise errors.InputError(f"{role} {spec} has no labels; the classifier needs labels 0/1")
    labels = table.column("label").astype(np.int64)
    if not np.isin(labels, (0, 1)).any():
        raise errors.InputError(
            f"{role} {spec} has no labels: none of its {len(labels)} records is labelled 0 "
            "(normal) or 1 (abnormal) (an image_folder dataset without normal/ and abnormal/ "
            "folders carries label -1)"
        )
    if not np.isin(labels, (0, 1)).all():
        raise errors.InputError(
            f"{role} {spec}: {int((~np.isin(labels, (0, 1))).sum())} unlabelled records"
        )
    return table, labels


def masked_table(spec: str, data_dir) -> RecordTable:
    """A split's records that carry a bone mask; ValueError when it has none."""
    name, split = parse_spec(spec)
    table = open_table(name, split, data_dir)
    features = table.sources[0].dataset_info.features
    if "mask" not in features:
        raise errors.InputError(f"{spec} has no 'mask' feature: a segmenter needs exact bone masks")
    if "has_mask" in features:
        table = table.subset(table.column("has_mask").astype(bool))
        if len(table) == 0:
            raise errors.InputError(f"{spec}: none of its records has a mask")
    return table
