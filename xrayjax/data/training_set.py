"""The classifier's data (thesis 3.2.3): the mixed natural + synthetic training set, its
source-dependent transform, and the natural-only test set."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from data_prep import errors
from xrayjax.data import sources, transforms
from xrayjax.data.sources import labelled_table, parse_spec

CLASS_NAMES = ("normal", "abnormal")  # label 0, 1


def _data_dir(config) -> str | None:
    return config.data_dir or None


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int((labels == c).sum()) for c, name in enumerate(CLASS_NAMES)}


def training_set(config: ml_collections.ConfigDict) -> tuple[sources.RecordTable, dict]:
    """The natural train split + `synthetic.per_class` images of each class (seeded draw).

    Returns the mixed table (natural rows first, from its source 0) and a summary of its class
    counts. Synthetic images of a class are drawn without replacement from the pooled
    synthetic datasets.
    """
    data_dir = _data_dir(config)
    natural, natural_labels = labelled_table(config.natural.train, data_dir, "natural dataset")
    per_class = int(config.synthetic.per_class)
    if per_class < 0:
        raise errors.InputError(f"config.synthetic.per_class={per_class} must be 0 or more")
    summary = {
        "natural": {"dataset": config.natural.train, **_counts(natural_labels)},
        "synthetic": {"datasets": list(config.synthetic.datasets), "per_class": per_class},
    }
    parts = [natural]
    if per_class:
        if not config.synthetic.datasets:
            raise errors.InputError(
                "config.synthetic.per_class > 0 but config.synthetic.datasets is empty"
            )
        pools = [
            labelled_table(s, data_dir, "synthetic dataset") for s in config.synthetic.datasets
        ]
        rng = np.random.default_rng(config.seed)
        for c, name in enumerate(CLASS_NAMES):
            pool = sources.concatenate([table.subset(labels == c) for table, labels in pools])
            if per_class > len(pool):
                found = ", ".join(
                    f"{spec}: {int((labels == c).sum())}"
                    for spec, (_, labels) in zip(config.synthetic.datasets, pools, strict=True)
                )
                raise errors.InputError(
                    f"config.synthetic.per_class={per_class}, but only {len(pool)} {name} "
                    f"(label {c}) synthetic images exist ({found}); lower "
                    "--config.synthetic.per_class or add datasets to config.synthetic.datasets"
                )
            parts.append(pool.subset(np.sort(rng.choice(len(pool), per_class, replace=False))))
    table = sources.concatenate(parts)
    totals = {name: summary["natural"][name] + per_class for name in CLASS_NAMES}
    for name, count in totals.items():
        if count == 0:
            raise errors.InputError(
                f"the training set has no {name} images ({config.natural.train} holds none and "
                "no synthetic ones are added); both classes are needed"
            )
    summary["total"] = {**totals, "images": len(table)}
    return table, summary


def eval_table(config, split: str | None = None) -> tuple[sources.RecordTable, np.ndarray, str]:
    """The (natural-only) evaluation split: records, labels and its 'name:split'.

    `split` is a split of the test dataset ('valid') or a 'name:split'; default config's test.
    """
    spec = config.natural.test
    if split:
        spec = split if ":" in split else f"{parse_spec(spec)[0]}:{split}"
    name, _ = parse_spec(spec)
    added = [parse_spec(s) for s in config.synthetic.datasets]
    if parse_spec(spec) in added:
        raise errors.InputError(
            f"the test set {spec} is one of config.synthetic.datasets, the images added to the "
            "training set; evaluate on held-out natural images only"
        )
    # Other splits of the natural dataset may be added (a natural-rich ceiling); a synthetic one
    # must never be the test set.
    if name != parse_spec(config.natural.train)[0] and name in {n for n, _ in added}:
        raise errors.InputError(
            f"the test set {spec} comes from a synthetic dataset ({name} is in "
            "config.synthetic.datasets); evaluate on natural images only"
        )
    table, labels = labelled_table(spec, _data_dir(config), "test set")
    return table, labels, spec


@dataclasses.dataclass(frozen=True)
class MixedPreprocess:
    """Training transform choosing CLAHE by source: natural records (source 0 of the mixed
    table) get the natural transform, synthetic ones the synthetic transform."""

    natural: transforms.Preprocess
    synthetic: transforms.Preprocess

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        pre = self.natural if record["source"] == 0 else self.synthetic
        out = pre(record, rng)
        return {"image": out["image"], "label": np.int32(out["label"])}
