"""The supervised bone segmenter's loop: train on images with exact masks, then measure it.

Outputs in the workdir: config.json, metrics.jsonl and TensorBoard (train/loss, train/batch_dice)
and eval.json: Dice of its masks against the exact ones on the test split (per image and mean),
the reference that tells how far GAN evaluation may trust it. Rerunning resumes exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from data_prep import storage
from xrayjax import checkpoint, optim, parallel
from xrayjax import logging as runlog
from xrayjax.data import pipelines, sources, transforms
from xrayjax.evaluators import segmentation
from xrayjax.models import ResnetGenerator
from xrayjax.train.segmenter import SegmenterEngine, SegmenterState
from xrayjax.trainers.classifier import parse_spec
from xrayjax.trainers.gan import compute_dtype, resume_or_start


def build_engine(config: ml_collections.ConfigDict) -> SegmenterEngine:
    """The network (a CycleGAN generator without dropout) and Adam at a constant rate."""
    model = ResnetGenerator(
        features=config.model.features,
        num_blocks=config.model.num_blocks,
        dropout_rate=0.0,
        dtype=compute_dtype(config),
    )
    return SegmenterEngine(model, optim.adam(config.optim.lr, config.optim.b1, config.optim.b2))


def init_fn(engine: SegmenterEngine, config):
    """rng → a fresh state for the configured image size."""

    def init(key: jax.Array) -> SegmenterState:
        return engine.init(key, (config.image_size, config.image_size, 1))

    return init


def preprocess(config, augment: bool) -> transforms.PairedPreprocess:
    """Image (CLAHE as configured) and mask, cropped and flipped alike when augmenting."""
    common = dict(
        image_size=config.image_size, load_size=config.load_size, augment=augment, keep=()
    )
    return transforms.PairedPreprocess(
        image=transforms.Preprocess(use_clahe=config.data.clahe, **common),
        mask=transforms.Preprocess(image_key="mask", **common),
    )


def masked_table(spec: str, data_dir) -> sources.RecordTable:
    """A split's records that carry a bone mask; ValueError when it has none."""
    name, split = parse_spec(spec)
    table = sources.open_table(name, split, data_dir)
    features = table.sources[0].dataset_info.features
    if "mask" not in features:
        raise ValueError(f"{spec} has no 'mask' feature: a segmenter needs exact bone masks")
    if "has_mask" in features:
        table = table.subset(table.column("has_mask").astype(bool))
        if len(table) == 0:
            raise ValueError(f"{spec}: none of its records has a mask")
    return table


@dataclasses.dataclass
class Segmenter:
    """A trained segmenter, replicated on a mesh: bone masks of images of its style."""

    config: ml_collections.ConfigDict
    engine: SegmenterEngine
    state: SegmenterState
    workdir: epath.Path

    def apply(self, images: jax.Array) -> jax.Array:
        """(B, S, S, 1) in [−1, 1] → bool (B, S, S, 1) bone, resized to its size and back."""
        size, shape = self.config.image_size, images.shape
        if shape[1:3] != (size, size):
            images = jax.image.resize(images, (shape[0], size, size, 1), "linear")
        out = self.engine.predict(self.state.params, images)
        if shape[1:3] != (size, size):
            out = jax.image.resize(out, shape, "linear")
        return out > 0

    def describe(self) -> dict[str, Any]:
        """Where it came from and how well it did on its own test split."""
        report = json.loads((self.workdir / "eval.json").read_text())
        return {
            "segmenter_workdir": str(self.workdir),
            "trained_on": self.config.data.train,
            "reference_split": report["split"],
            "reference_dice": report["dice_mean"],
        }


def load(workdir: str | os.PathLike, mesh) -> Segmenter:
    """The segmenter trained in `workdir` (config.json, latest checkpoint, eval.json)."""
    workdir = storage.as_path(workdir)
    path = workdir / "config.json"
    if not path.is_file() or not (workdir / "eval.json").is_file():
        raise FileNotFoundError(
            f"segmenter workdir {workdir}: no config.json and eval.json there; train a segmenter "
            "in it first (configs/segmenter_forearm.py)"
        )
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    if config.get("trainer") != "segmenter":
        raise ValueError(f"{workdir} holds a {config.get('trainer')!r} run, not a segmenter")
    engine = build_engine(config)
    ckpt = checkpoint.Checkpointer(workdir, every=1 << 30)
    try:
        state = ckpt.restore_like(init_fn(engine, config), parallel.replicated(mesh))
    finally:
        ckpt.close()
    return Segmenter(config, engine, state, workdir)


def measure(config, engine: SegmenterEngine, state: SegmenterState, mesh, spec: str) -> dict:
    """Dice of the segmenter's masks against the exact ones over a whole split."""
    table = masked_table(spec, config.data_dir or None)
    pre = preprocess(config, augment=False)
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
    engine = build_engine(config)
    data_it = pipelines.train_iterator(
        table,
        preprocess(config, augment=True),
        global_batch=config.global_batch,
        seed=config.seed,
        workers=config.workers,
    )
    ckpt, state, start = resume_or_start(config, workdir, init_fn(engine, config), mesh, data_it)
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
