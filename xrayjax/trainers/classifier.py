"""The classifier training loop (thesis 3.2.3): build the mixed training set, restore, train,
evaluate on the natural test set every epoch, checkpoint, and report.

Outputs in the workdir: metrics.jsonl and TensorBoard (train/* at log steps; at every epoch's end
also epoch, train/accuracy over the epoch and test/{accuracy,sensitivity,specificity,roc_auc}),
training_set.json (class counts of the mixed set), eval.json (the full classification report
with bootstrap intervals, study level where the test set has study ids) and convergence.png
(train and test accuracy per epoch, like the thesis's figs. 36-38). Rerunning the same command
resumes exactly; `evaluate` recomputes eval.json from the latest checkpoint with the same code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import cv2
import jax
import ml_collections
import numpy as np
from etils import epath

from data_prep import storage
from xrayjax import checkpoint, optim, parallel
from xrayjax import logging as runlog
from xrayjax.data import pipelines, sources, transforms
from xrayjax.evaluators import classification
from xrayjax.models.classifier import ResNetClassifier
from xrayjax.train.classifier import ClassifierEngine, ClassifierState
from xrayjax.trainers.gan import compute_dtype, resume_or_start

CLASS_NAMES = ("normal", "abnormal")  # label 0, 1
TEST_KEYS = ("accuracy", "sensitivity", "specificity", "roc_auc")
_EVAL_WORKERS_FROM = 1000  # smaller eval sets decode faster than worker processes start


def parse_spec(spec: str) -> tuple[str, str]:
    """'name:split' → (name, split)."""
    name, sep, split = spec.partition(":")
    if not sep or not name or not split:
        raise ValueError(f"dataset {spec!r}: write it as 'name:split', e.g. 'mura:valid'")
    return name, split


def _data_dir(config) -> str | None:
    return config.data_dir or None


def labelled_table(spec: str, data_dir, role: str) -> tuple[sources.RecordTable, np.ndarray]:
    """A split's records and their labels; ValueError unless every label is 0 or 1."""
    name, split = parse_spec(spec)
    table = sources.open_table(name, split, data_dir)
    if "label" not in table.sources[0].dataset_info.features:
        raise ValueError(f"{role} {spec} has no labels; the classifier needs labels 0/1")
    labels = table.column("label").astype(np.int64)
    if not np.isin(labels, (0, 1)).any():
        raise ValueError(
            f"{role} {spec} has no labels: none of its {len(labels)} records is labelled 0 "
            "(normal) or 1 (abnormal) (an image_folder dataset without normal/ and abnormal/ "
            "folders carries label -1)"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"{role} {spec}: {int((~np.isin(labels, (0, 1))).sum())} unlabelled records"
        )
    return table, labels


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int((labels == c).sum()) for c, name in enumerate(CLASS_NAMES)}


def training_set(config: ml_collections.ConfigDict) -> tuple[sources.RecordTable, dict]:
    """The natural train split + `synthetic.per_class` images of each class (seeded draw).

    Returns the mixed table (natural rows first, from its source 0) and a summary of its class
    counts. Synthetic
    images of a class are drawn without replacement from the pooled synthetic datasets.
    """
    data_dir = _data_dir(config)
    natural, natural_labels = labelled_table(config.natural.train, data_dir, "natural dataset")
    per_class = int(config.synthetic.per_class)
    if per_class < 0:
        raise ValueError(f"config.synthetic.per_class={per_class} must be 0 or more")
    summary = {
        "natural": {"dataset": config.natural.train, **_counts(natural_labels)},
        "synthetic": {"datasets": list(config.synthetic.datasets), "per_class": per_class},
    }
    parts = [natural]
    if per_class:
        if not config.synthetic.datasets:
            raise ValueError(
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
                raise ValueError(
                    f"config.synthetic.per_class={per_class}, but only {len(pool)} {name} "
                    f"(label {c}) synthetic images exist ({found}); lower "
                    "--config.synthetic.per_class or add datasets to config.synthetic.datasets"
                )
            parts.append(pool.subset(np.sort(rng.choice(len(pool), per_class, replace=False))))
    table = sources.concatenate(parts)
    totals = {name: summary["natural"][name] + per_class for name in CLASS_NAMES}
    for name, count in totals.items():
        if count == 0:
            raise ValueError(
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
        raise ValueError(
            f"the test set {spec} is one of config.synthetic.datasets, the images added to the "
            "training set; evaluate on held-out natural images only"
        )
    # Other splits of the natural dataset may be added (a natural-rich ceiling); a synthetic one
    # must never be the test set.
    if name != parse_spec(config.natural.train)[0] and name in {n for n, _ in added}:
        raise ValueError(
            f"the test set {spec} comes from a synthetic dataset ({name} is in "
            "config.synthetic.datasets); evaluate on natural images only"
        )
    table, labels = labelled_table(spec, _data_dir(config), "test set")
    return table, labels, spec


def schedule_lengths(config, num_train: int) -> tuple[int, int]:
    """(steps per epoch, total steps): an epoch passes the mixed training set once."""
    per_epoch = config.steps_per_epoch or max(1, math.ceil(num_train / config.global_batch))
    return per_epoch, config.total_steps or config.num_epochs * per_epoch


def build_engine(config, steps_per_epoch: int) -> ClassifierEngine:
    """The network and optimizer from the config (constant learning rate, as in the thesis)."""
    model = ResNetClassifier(
        width=config.model.width,
        num_modules=config.model.num_modules,
        blocks_per_module=config.model.blocks_per_module,
        dtype=compute_dtype(config),
    )
    tx = optim.adam(config.optim.lr, config.optim.b1, config.optim.b2)
    return ClassifierEngine(model=model, tx=tx, steps_per_epoch=steps_per_epoch)


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


def preprocess(config, clahe: bool, augment: bool) -> transforms.Preprocess:
    """Classifier transform: crop, flip and rotation within ±rotate_deg when augmenting."""
    return transforms.Preprocess(
        image_size=config.image_size,
        load_size=config.load_size,
        use_clahe=clahe,
        augment=augment,
        crop=True,
        flip=True,
        rotate_deg=config.rotate_deg,
        keep=("label",),
    )


def _device_batch(mesh, local: dict) -> dict:
    """Host batch → global arrays; int64 fields become int32 (jax runs without x64)."""
    local = {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in local.items()}
    return parallel.global_batch_array(mesh, local)


class Evaluator:
    """Probabilities of abnormal for every record of the test table, in table order."""

    def __init__(self, engine: ClassifierEngine, config, table, labels, mesh):
        self.config, self.table, self.labels, self.mesh = config, table, labels, mesh
        self.preprocess = dataclasses.replace(
            preprocess(config, config.natural.clahe, augment=False), keep=()
        )
        features = table.sources[0].dataset_info.features
        self.study_ids = table.column("study_id") if "study_id" in features else None
        self._engine = engine
        self._fn = None

    def probabilities(self, state: ClassifierState) -> np.ndarray:
        """One unaugmented pass over the table (every process takes part)."""
        if self._fn is None:
            shardings = jax.tree.map(lambda _: parallel.replicated(self.mesh), state)
            self._fn = jax.jit(
                self._engine.eval_step,
                in_shardings=(shardings, parallel.batch_sharding(self.mesh)),
                out_shardings=parallel.replicated(self.mesh),
            )
        iterator = pipelines.eval_iterator(
            self.table,
            self.preprocess,
            global_batch=self.config.global_batch,
            workers=self.config.workers if len(self.table) >= _EVAL_WORKERS_FROM else 0,
        )
        probabilities = np.full(len(self.table), np.nan)
        for local in iterator:
            out = parallel.fetch(self._fn(state, _device_batch(self.mesh, local)))
            valid = out["valid"].astype(bool)
            probabilities[out["index"][valid]] = out["probability"][valid]
        return probabilities

    def epoch_metrics(self, probabilities: np.ndarray) -> dict[str, float]:
        """Point estimates for metrics.jsonl (NaN where undefined, e.g. one class only)."""
        predictions = (probabilities > classification.THRESHOLD).astype(np.int64)
        values = {
            "accuracy": classification.accuracy(self.labels, predictions),
            "sensitivity": classification.sensitivity(self.labels, predictions),
            "specificity": classification.specificity(self.labels, predictions),
            "roc_auc": classification.roc_auc(self.labels, probabilities),
        }
        return {f"test/{k}": values[k] for k in TEST_KEYS}

    def report(self, probabilities: np.ndarray, spec: str, step: int, total_steps) -> dict:
        """eval.json's content: where from, then the full classification report."""
        body = classification.classification_report(
            self.labels,
            probabilities,
            self.study_ids,
            num_resamples=self.config.bootstrap_resamples,
            seed=0,
        )
        # Per-image probabilities let the ablation pair runs on the same test images.
        return {
            "split": spec,
            "step": step,
            "total_steps": total_steps,
            **body,
            "labels": self.labels.tolist(),
            "probabilities": probabilities.tolist(),
        }


def write_report(workdir: epath.Path, report: dict, name: str = "eval.json") -> epath.Path:
    """Write a report as JSON (process 0) and print its headline numbers."""
    path = workdir / name
    if jax.process_index() == 0:
        runlog.write_json(path, report)
        parts = []
        for key in ("accuracy", "sensitivity", "specificity", "roc_auc", "study_kappa"):
            if key in report:
                low, high = report[f"{key}_ci"]
                parts.append(f"{key} {report[key]:.3f} [{low:.3f}, {high:.3f}]")
        print(f"{report['split']} at step {report['step']}: " + ", ".join(parts), flush=True)
        print(f"wrote {path}", flush=True)
    return path


def convergence_figure(records: list[dict], size: tuple[int, int] = (640, 400)) -> np.ndarray:
    """Train and test accuracy per epoch as a line chart (uint8 BGR image), from metrics.jsonl."""
    epochs = [r for r in records if "epoch" in r]
    width, height = size
    left, right, top, bottom = 60, 20, 30, 45
    image = np.full((height, width, 3), 255, np.uint8)
    x_max = max([r["epoch"] for r in epochs] + [1])
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)

    def to_px(epoch: float, acc: float) -> tuple[int, int]:
        x = left + (epoch / x_max) * (width - left - right)
        y = height - bottom - acc * (height - top - bottom)
        return round(x), round(y)

    for tick in np.linspace(0.0, 1.0, 6):
        y = to_px(0, tick)[1]
        cv2.line(image, (left, y), (width - right, y), (225, 225, 225), 1)
        cv2.putText(image, f"{tick:.1f}", (left - 35, y + 4), font, 0.4, black, 1, cv2.LINE_AA)
    for tick in np.unique(np.linspace(0, x_max, 6).round().astype(int)):
        x = to_px(tick, 0)[0]
        cv2.putText(image, str(tick), (x - 6, height - bottom + 16), font, 0.4, black, 1)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), black, 1)
    cv2.putText(image, "epoch", (width // 2 - 20, height - 8), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(image, "accuracy", (5, 18), font, 0.45, black, 1, cv2.LINE_AA)
    series = (("train/accuracy", (200, 100, 0), "train"), ("test/accuracy", (0, 0, 210), "test"))
    for k, (key, colour, label) in enumerate(series):
        points = [to_px(r["epoch"], r[key]) for r in epochs if math.isfinite(r.get(key, math.nan))]
        if len(points) > 1:
            cv2.polylines(image, [np.asarray(points, np.int32)], False, colour, 2, cv2.LINE_AA)
        for point in points if len(points) <= 60 else []:
            cv2.circle(image, point, 3, colour, -1, cv2.LINE_AA)
        y = top + 18 + 18 * k
        cv2.line(image, (width - right - 90, y - 4), (width - right - 65, y - 4), colour, 2)
        cv2.putText(image, label, (width - right - 58, y), font, 0.45, black, 1, cv2.LINE_AA)
    return image


def init_fn(engine: ClassifierEngine, config):
    """rng → a fresh state for the configured image size."""

    def init(key: jax.Array) -> ClassifierState:
        return engine.init(key, (config.image_size, config.image_size, 1))

    return init


def _setup(config, split: str | None = None):
    """Mesh and test set, checked before anything else happens."""
    mesh = parallel.make_mesh()
    parallel.check_global_batch(config.global_batch, mesh)
    return mesh, eval_table(config, split)


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> ClassifierState:
    """Train (or resume) the configured classifier in `workdir`; returns the final state."""
    workdir = storage.as_path(workdir)
    mesh, (test, test_labels, test_spec) = _setup(config)
    table, summary = training_set(config)
    steps_per_epoch, total_steps = schedule_lengths(config, len(table))
    summary |= {"steps_per_epoch": steps_per_epoch, "total_steps": total_steps}
    engine = build_engine(config, steps_per_epoch)
    natural_pre = preprocess(config, config.natural.clahe, augment=True)
    mixed = MixedPreprocess(
        natural_pre, dataclasses.replace(natural_pre, use_clahe=config.synthetic.clahe)
    )
    data_it = pipelines.train_iterator(
        table,
        mixed,
        global_batch=config.global_batch,
        seed=config.seed,
        workers=config.workers,
    )
    ckpt, state, start = resume_or_start(config, workdir, init_fn(engine, config), mesh, data_it)
    if jax.process_index() == 0:
        storage.write_text(workdir / "training_set.json", json.dumps(summary, indent=1) + "\n")
        total = summary["total"]
        verb = f"resuming at step {start}" if start else "starting"
        print(
            f"{verb} of {total_steps} ({steps_per_epoch} per epoch); training set: "
            f"{total['normal']} normal + {total['abnormal']} abnormal = {total['images']} images "
            f"({summary['natural']['normal']} + {summary['natural']['abnormal']} from "
            f"{config.natural.train}, {summary['synthetic']['per_class']} per class synthetic); "
            f"test: {test_spec}, {len(test)} images",
            flush=True,
        )
    evaluator = Evaluator(engine, config, test, test_labels, mesh)
    writer = runlog.MetricWriter(workdir, resume_step=start)
    step_fn = parallel.jit_step(engine.train_step, mesh, state)
    progress = runlog.Progress(total_steps, start, config.global_batch)
    probabilities = None
    try:
        for step in range(start + 1, total_steps + 1):
            state, metrics = step_fn(state, _device_batch(mesh, next(data_it)))
            last = step == total_steps
            epoch_end = last or step % steps_per_epoch == 0
            due_log = last or step % config.log_every == 0
            if due_log or epoch_end or step % config.checkpoint_every == 0:
                values = {f"train/{k}": float(v) for k, v in parallel.fetch(metrics).items()}
                runlog.check_finite(step, values)  # before any save: checkpoints stay good
                if epoch_end:
                    probabilities = evaluator.probabilities(state)
                    values = {"epoch": math.ceil(step / steps_per_epoch), **values}
                    values |= evaluator.epoch_metrics(probabilities)
                if due_log or epoch_end:
                    writer.write(step, values)
                progress.update(step, values)
            ckpt.save(step, state, data_it, force=last)
    finally:
        progress.close()
        writer.close()
        ckpt.close()
    if probabilities is None:  # resumed at the end: nothing was evaluated in this process
        probabilities = evaluator.probabilities(state)
    step = int(jax.device_get(state.step))
    write_report(workdir, evaluator.report(probabilities, test_spec, step, total_steps))
    runlog.save_png(workdir / "convergence.png", convergence_figure(runlog.read_metrics(workdir)))
    return state


def evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, split: str | None = None
) -> dict:
    """Evaluate the workdir's latest checkpoint on `split` (default: the config's test split).

    Writes eval.json for the config's test split, eval_<name>_<split>.json for another one.
    """
    workdir = storage.as_path(workdir)
    mesh, (table, labels, spec) = _setup(config, split)
    if not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}: nothing to evaluate")
    ckpt = checkpoint.Checkpointer(workdir, config.checkpoint_every, config.keep_checkpoints)
    try:
        if ckpt.latest_step() is None:
            raise FileNotFoundError(
                f"no checkpoint in {ckpt.directory}: nothing to evaluate (train first)"
            )
        # The epoch length only matters to training; shapes do not depend on it.
        engine = build_engine(config, steps_per_epoch=1)
        state = ckpt.restore_like(init_fn(engine, config), parallel.replicated(mesh))
    finally:
        ckpt.close()
    info = workdir / "training_set.json"
    total_steps = json.loads(info.read_text())["total_steps"] if info.exists() else None
    evaluator = Evaluator(engine, config, table, labels, mesh)
    report = evaluator.report(
        evaluator.probabilities(state), spec, int(jax.device_get(state.step)), total_steps
    )
    name = "eval.json" if spec == config.natural.test else f"eval_{spec.replace(':', '_')}.json"
    write_report(workdir, report, name)
    return report
