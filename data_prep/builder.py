"""Writing TFDS datasets (array_record, no TensorFlow) atomically, with a preparation report.

Every data_prep command describes its dataset as features plus one example generator per split;
`build_dataset` turns that into `DATA_DIR/NAME/VERSION/` with `prep_report.json` beside the
records. The dataset is assembled in a hidden sibling folder and moved into place only when it is
complete, so a crash or Ctrl-C never leaves something that a reader would take for a dataset.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tqdm import tqdm

from data_prep import errors, storage

VERSION = "1.0.0"
MAX_LISTED_SKIPS = 1000  # report every skipped file up to this many, then only the counts


def default_data_dir() -> epath.Path:
    """The TFDS convention: $TFDS_DATA_DIR, else ~/tensorflow_datasets (either may be a URL)."""
    return storage.as_path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def dataset_dir(data_dir: os.PathLike | str, name: str) -> epath.Path:
    """Where the dataset NAME lives (the folder holding dataset_info.json)."""
    return storage.as_path(data_dir) / name / VERSION


def dataset_exists(data_dir: os.PathLike | str, name: str) -> bool:
    """True when a complete dataset NAME is in data_dir."""
    return (dataset_dir(data_dir, name) / "dataset_info.json").is_file()


@dataclasses.dataclass
class SplitRecorder:
    """Counts what one split's generator saw, wrote and skipped (with reasons)."""

    seen: int = 0
    written: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped_files: list = dataclasses.field(default_factory=list)

    def skip(self, path: Any, reason: str) -> None:
        """Record that `path` was left out and why."""
        self.skipped[reason] += 1
        if len(self.skipped_files) < MAX_LISTED_SKIPS:
            self.skipped_files.append([str(path), reason])

    def as_dict(self) -> dict:
        """JSON form for prep_report.json."""
        return {
            "seen": self.seen,
            "written": self.written,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "skipped_files": self.skipped_files,
        }


# A split generator receives its recorder and yields (unique key, example dict).
SplitGenerator = Callable[[SplitRecorder], Iterator[tuple[str, dict]]]


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose name, features and generators are given at construction."""

    VERSION = tfds.core.Version(VERSION)
    # Nothing is downloaded; without this tfds looks for a checksums file beside the module,
    # which fails for editable installs run from outside the source tree.
    url_infos = None

    def __init__(self, *, name, features, generators, recorders, description, source, **kwargs):
        self.name = name  # read by the base constructor
        self._source = source
        self._features = features
        self._generators = generators
        self._recorders = recorders
        self._description = description
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # dataset_info_from_configs needs a registered package layout; this works anywhere.
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._description,
            features=tfds.features.FeaturesDict(self._features),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in self._generators}

    def _generate_examples(self, split):
        recorder = self._recorders[split]
        for key, example in self._generators[split](recorder):
            recorder.written += 1
            yield key, example
        if recorder.written == 0:
            detail = f" (skipped: {dict(recorder.skipped)})" if recorder.skipped else ""
            raise errors.InputError(
                f"{self._source}: no usable images for split {split!r}{detail}; nothing was written"
            )


def image_feature(size: int) -> tfds.features.Image:
    """A one-channel PNG image feature; examples must give PNG bytes (numpy needs TensorFlow)."""
    return tfds.features.Image(shape=(size, size, 1), dtype=np.uint8, encoding_format="png")


def build_dataset(
    name: str,
    features: dict,
    generators: dict[str, SplitGenerator],
    data_dir: os.PathLike | str,
    *,
    source: str,
    description: str,
    overwrite: bool = False,
    settings: dict | None = None,
) -> epath.Path | None:
    """Write dataset NAME atomically; returns its folder, or None when it already exists.

    On cloud storage the dataset is built on local disk, then uploaded with its
    dataset_info.json last: readers take that file as the mark of a complete dataset.
    """
    data_dir = storage.as_path(data_dir)
    final = dataset_dir(data_dir, name)
    if dataset_exists(data_dir, name) and not overwrite:
        print(f"{name}: already prepared at {final} (pass --overwrite to rebuild); nothing done")
        return None
    remote = storage.is_url(data_dir)
    if not remote:
        data_dir.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(
        tempfile.mkdtemp(prefix=f".incomplete-{name}-", dir=None if remote else data_dir)
    )
    try:
        recorders = {split: SplitRecorder() for split in generators}
        tfds.disable_progress_bar()  # the generators carry their own bars with totals
        builder = _Builder(
            name=name,
            features=features,
            generators=generators,
            recorders=recorders,
            description=description,
            source=source,
            data_dir=str(staging),
            file_format="array_record",
        )
        builder.download_and_prepare(download_dir=str(staging / "downloads"))
        report = {
            "dataset": name,
            "version": VERSION,
            "source": source,
            "settings": settings or {},
            "splits": {split: r.as_dict() for split, r in recorders.items()},
        }
        built = dataset_dir(staging, name)
        text = json.dumps(report, indent=1, allow_nan=False)  # strict JSON: a NaN fails here
        (built / "prep_report.json").write_text(text + "\n")
        if remote:
            _upload(built, final)
        else:
            _move_into_place(built, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for split, r in recorders.items():
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(r.skipped.items())) or "none"
        print(f"{name}/{split}: {r.seen} seen, {r.written} written, skipped: {skipped}")
    print(f"{name}: written to {final} (report: {final / 'prep_report.json'})")
    return final


def _move_into_place(built: pathlib.Path, final: pathlib.Path) -> None:
    """Replace `final` by `built`; the old dataset is removed only once the new one is in place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        final.rename(old)
    built.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _upload(built: pathlib.Path, final: epath.Path) -> None:
    """Copy a locally built dataset to cloud storage; an older version there goes first,
    its dataset_info.json before the rest, so no reader mixes the two."""
    if final.exists():
        (final / "dataset_info.json").unlink(missing_ok=True)
        final.rmtree()
    storage.copy_tree(built, final, last=("dataset_info.json",))


def progress(items, split: str, total: int | None = None):
    """A progress bar over a split's inputs, on stderr."""
    return tqdm(items, total=total, desc=f"  {split}", unit="img", leave=False, file=sys.stderr)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every data_prep command shares."""
    parser.add_argument(
        "--data-dir",
        type=str,
        default=None,
        help="where datasets are written (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    )
    parser.add_argument("--image-size", type=int, default=256, help="output side in pixels")
    parser.add_argument(
        "--overwrite", action="store_true", help="rebuild a dataset that already exists"
    )


def resolve_data_dir(arg: str | os.PathLike | None) -> epath.Path:
    """The --data-dir value (a folder or a gs:// URL), or the TFDS default."""
    return storage.as_path(arg) if arg is not None else default_data_dir()


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run a data_prep main; its exit status (bad input: one `error:` line and 2, see errors)."""
    return errors.run_cli(lambda: main(argv))
