"""The GAN training loop: build, restore, train, log, sample, checkpoint.

Rerunning the same command on the same workdir resumes from the latest checkpoint with the
same data position, so a killed run finishes with exactly the parameters and logged losses of
an uninterrupted one.
"""

from __future__ import annotations

import math
import os

import jax
import ml_collections
import numpy as np
from etils import epath

from data_prep import errors, storage
from xrayjax import build, parallel
from xrayjax import logging as runlog
from xrayjax.data import pipelines, sources, transforms
from xrayjax.steps.gan import GanEngine, GanState


def domain_tables(config: ml_collections.ConfigDict) -> dict[str, sources.RecordTable]:
    """Open every configured domain's records (label-filtered), failing early when missing."""
    if len(config.domains) < 2:
        raise errors.InputError("a GAN config needs at least two domains under config.domains")
    tables = {}
    for name, spec in config.domains.items():
        labels = list(spec.labels) if spec.labels else None
        tables[name] = sources.open_table(spec.dataset, spec.split, config.data_dir or None, labels)
    return tables


def schedule_lengths(config, tables) -> tuple[int, int]:
    """(steps per epoch, total steps): an epoch passes the largest domain once."""
    largest = max(len(t) for t in tables.values())
    per_epoch = config.steps_per_epoch or max(1, math.ceil(largest / config.global_batch))
    total = config.total_steps or config.num_epochs * per_epoch
    return per_epoch, total


class SampleWriter:
    """PNG grids every `sample_every` steps; rows of j | G_IJ(j) | G_JI(G_IJ(j)) per pair IJ."""

    def __init__(self, engine: GanEngine, config, tables, mesh, workdir: epath.Path):
        self.engine, self.every, self.dir = engine, config.sample_every, workdir / "samples"
        n = config.num_samples
        # Fixed images (the first of each domain, unaugmented), the same on every process.
        self.images = {}
        for name, spec in config.domains.items():
            pre = build.domain_preprocess(config, spec, augment=False)
            table = tables[name]
            self.images[name] = np.stack(
                [pre(table[i])["image"] for i in range(min(n, len(table)))]
            )
        self.images = parallel.replicate(mesh, self.images)
        self._fn = jax.jit(self._translate)

    def _translate(self, gen_params, images):
        out = {}
        for pair in self.engine.pairs:
            target, source = pair
            fake = self.engine.translate(gen_params, pair, images[source])
            out[pair] = (
                images[source],
                fake,
                self.engine.translate(gen_params, source + target, fake),
            )
        return out

    def maybe_write(self, step: int, state: GanState, force: bool = False) -> None:
        """Write the grid for `step` when it is due."""
        if not force and (not self.every or step % self.every):
            return
        results = parallel.fetch(self._fn(state.gen_params, self.images))
        rows = []
        for pair in self.engine.pairs:
            source, fake, back = (transforms.to_uint8(x) for x in results[pair])
            rows += [[s, f, b] for s, f, b in zip(source, fake, back, strict=True)]
        runlog.save_png(self.dir / f"step_{step:08d}.png", runlog.image_grid(rows))


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> GanState:
    """Train (or resume) the configured GAN in `workdir`; returns the final state."""
    workdir = storage.as_path(workdir)
    mesh = parallel.make_mesh()
    parallel.check_global_batch(config.global_batch, mesh)
    tables = domain_tables(config)
    steps_per_epoch, total_steps = schedule_lengths(config, tables)
    engine = build.gan_engine(config, steps_per_epoch, total_steps)
    data_it = pipelines.unpaired_iterator(
        {
            name: (tables[name], build.domain_preprocess(config, spec))
            for name, spec in config.domains.items()
        },
        global_batch=config.global_batch,
        seed=config.seed,
        workers=config.workers,
    )
    init = build.gan_init(engine, config)
    ckpt, state, start = build.resume_or_start(config, workdir, init, mesh, data_it)
    writer = runlog.MetricWriter(workdir, resume_step=start)
    if jax.process_index() == 0:
        sizes = ", ".join(f"{n}: {len(t)} images" for n, t in tables.items())
        verb = f"resuming at step {start}" if start else "starting"
        print(f"{verb} of {total_steps} ({steps_per_epoch} per epoch); {sizes}", flush=True)
    samples = SampleWriter(engine, config, tables, mesh, workdir)
    progress = runlog.Progress(total_steps, start, config.global_batch)
    step_fn = None
    try:
        for step in range(start + 1, total_steps + 1):
            batch = parallel.global_batch_array(mesh, next(data_it))
            state = engine.with_learning_rates(state, step - 1)
            if step_fn is None:
                step_fn = parallel.compile_step(
                    engine.train_step, mesh, state, batch, build.large_cpu_train_step(engine)
                )
            state, metrics = step_fn(state, batch)
            last = step == total_steps
            due_ckpt = last or step % config.checkpoint_every == 0
            if last or step % config.log_every == 0 or due_ckpt:
                values = {f"train/{k}": float(v) for k, v in parallel.fetch(metrics).items()}
                runlog.check_finite(step, values)  # before any save: checkpoints stay good
                if last or step % config.log_every == 0:
                    writer.write(step, values)
                progress.update(step, values)
            samples.maybe_write(step, state, force=last)
            ckpt.save(step, state, data_it, force=last)
    finally:
        progress.close()
        writer.close()
        ckpt.close()
    return state
