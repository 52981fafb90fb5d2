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

import jax
import ml_collections
import numpy as np
from etils import epath

from data_prep import storage
from xrayjax import build, parallel
from xrayjax import logging as runlog
from xrayjax.data import pipelines
from xrayjax.data.training_set import MixedPreprocess, eval_table, training_set
from xrayjax.evaluators import classification, figures
from xrayjax.steps.classifier import ClassifierEngine, ClassifierState

TEST_KEYS = ("accuracy", "sensitivity", "specificity", "roc_auc")
_EVAL_WORKERS_FROM = 1000  # smaller eval sets decode faster than worker processes start


def schedule_lengths(config, num_train: int) -> tuple[int, int]:
    """(steps per epoch, total steps): an epoch passes the mixed training set once."""
    per_epoch = config.steps_per_epoch or max(1, math.ceil(num_train / config.global_batch))
    return per_epoch, config.total_steps or config.num_epochs * per_epoch


def _device_batch(mesh, local: dict) -> dict:
    """Host batch → global arrays; int64 fields become int32 (jax runs without x64)."""
    local = {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in local.items()}
    return parallel.global_batch_array(mesh, local)


class Evaluator:
    """Probabilities of abnormal for every record of the test table, in table order."""

    def __init__(self, engine: ClassifierEngine, config, table, labels, mesh):
        self.config, self.table, self.labels, self.mesh = config, table, labels, mesh
        self.preprocess = dataclasses.replace(
            build.classifier_preprocess(config, config.natural.clahe, augment=False), keep=()
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
    engine = build.classifier_engine(config, steps_per_epoch)
    natural_pre = build.classifier_preprocess(config, config.natural.clahe, augment=True)
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
    init = build.classifier_init(engine, config)
    ckpt, state, start = build.resume_or_start(config, workdir, init, mesh, data_it)
    if jax.process_index() == 0:
        runlog.write_json(workdir / "training_set.json", summary)
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
    runlog.save_png(
        workdir / "convergence.png",
        figures.chart_image(figures.convergence_chart(runlog.read_metrics(workdir))),
    )
    return state


def evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, split: str | None = None
) -> dict:
    """Evaluate the workdir's latest checkpoint on `split` (default: the config's test split).

    Writes eval.json for the config's test split, eval_<name>_<split>.json for another one.
    """
    workdir = storage.as_path(workdir)
    mesh, (table, labels, spec) = _setup(config, split)
    # The epoch length only matters to training; shapes do not depend on it.
    engine = build.classifier_engine(config, steps_per_epoch=1)
    state, _ = build.restore_latest(workdir, build.classifier_init(engine, config), mesh)
    info = workdir / "training_set.json"
    total_steps = json.loads(info.read_text())["total_steps"] if info.exists() else None
    evaluator = Evaluator(engine, config, table, labels, mesh)
    report = evaluator.report(
        evaluator.probabilities(state), spec, int(jax.device_get(state.step)), total_steps
    )
    name = "eval.json" if spec == config.natural.test else f"eval_{spec.replace(':', '_')}.json"
    write_report(workdir, report, name)
    return report
