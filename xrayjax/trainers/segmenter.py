"""The supervised bone segmenter's loop: train on images with exact masks, then measure it.

Outputs in the workdir: config.json, metrics.jsonl and TensorBoard (train/loss, train/batch_dice)
and eval.json: Dice of its masks against the exact ones on the test split (per image and mean),
the reference that tells how far GAN evaluation may trust it. Rerunning resumes exactly.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from data_prep import storage
from xrayjax import build, parallel
from xrayjax import logging as runlog
from xrayjax.data import pipelines
from xrayjax.data.sources import masked_table
from xrayjax.evaluators import segmentation
from xrayjax.steps.segmenter import SegmenterEngine, SegmenterState


def measure(config, engine: SegmenterEngine, state: SegmenterState, mesh, spec: str) -> dict:
    """Dice of the segmenter's masks against the exact ones over a whole split."""
    table = masked_table(spec, config.data_dir or None)
    pre = build.segmenter_preprocess(config, augment=False)
    fn = jax.jit(
        lambda params, batch: {
            "pred": engine.predict(params, batch["image"]) > 0,
            "mask": batch["mask"] > 0,
            "valid": batch["valid"],
        },
        out_shardings=parallel.replicated(mesh),
    )
    iterator = pipelines.eval_iterator(table, pre, global_batch=config.global_batch)
    dice = []
    for local in iterator:
        out = parallel.fetch(fn(state.params, parallel.global_batch_array(mesh, local)))
        for pred, mask in zip(out["pred"][out["valid"]], out["mask"][out["valid"]], strict=True):
            dice.append(segmentation.dice(pred[..., 0], mask[..., 0]))
    return {
        "split": spec,
        "step": int(jax.device_get(state.step)),
        "dice_mean": float(np.mean(dice)),
        "dice_std": float(np.std(dice)),
        "num_images": len(dice),
        "dice": dice,
    }


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> SegmenterState:
    """Train (or resume) the configured segmenter in `workdir`, then write eval.json."""
    workdir = storage.as_path(workdir)
    mesh = parallel.make_mesh()
    parallel.check_global_batch(config.global_batch, mesh)
    table = masked_table(config.data.train, config.data_dir or None)
    masked_table(config.data.test, config.data_dir or None)  # fail early when missing
    engine = build.segmenter_engine(config)
    data_it = pipelines.train_iterator(
        table,
        build.segmenter_preprocess(config, augment=True),
        global_batch=config.global_batch,
        seed=config.seed,
        workers=config.workers,
    )
    init = build.segmenter_init(engine, config)
    ckpt, state, start = build.resume_or_start(config, workdir, init, mesh, data_it)
    if jax.process_index() == 0:
        verb = f"resuming at step {start}" if start else "starting"
        print(f"{verb} of {config.total_steps}; {config.data.train}: {len(table)} images")
    writer = runlog.MetricWriter(workdir, resume_step=start)
    step_fn = parallel.jit_step(engine.train_step, mesh, state)
    progress = runlog.Progress(config.total_steps, start, config.global_batch)
    try:
        for step in range(start + 1, config.total_steps + 1):
            state, metrics = step_fn(state, parallel.global_batch_array(mesh, next(data_it)))
            last = step == config.total_steps
            if last or step % config.log_every == 0 or step % config.checkpoint_every == 0:
                values = {f"train/{k}": float(v) for k, v in parallel.fetch(metrics).items()}
                runlog.check_finite(step, values)
                writer.write(step, values)
                progress.update(step, values)
            ckpt.save(step, state, data_it, force=last)
    finally:
        progress.close()
        writer.close()
        ckpt.close()
    report = measure(config, engine, state, mesh, config.data.test)
    if jax.process_index() == 0:
        runlog.write_json(workdir / "eval.json", report)
        print(
            f"{config.data.test}: Dice {report['dice_mean']:.3f} ± {report['dice_std']:.3f} "
            f"over {report['num_images']} images; wrote {workdir / 'eval.json'}",
            flush=True,
        )
    return state
