"""The GAN training loop: build, restore, train, log, sample, checkpoint.

Rerunning the same command on the same workdir resumes from the latest checkpoint with the
same data position, so a killed run finishes with exactly the parameters and logged losses of
an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from data_prep import storage
from xrayjax import checkpoint, optim, parallel
from xrayjax import logging as runlog
from xrayjax.data import pipelines, sources, transforms
from xrayjax.models import PatchDiscriminator, ResnetGenerator
from xrayjax.train.gan import GanEngine, GanState

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict):
    """The configured compute dtype, with a clear error for a typo."""
    if config.dtype not in DTYPES:
        raise ValueError(f"config.dtype={config.dtype!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[config.dtype]


def domain_tables(config: ml_collections.ConfigDict) -> dict[str, sources.RecordTable]:
    """Open every configured domain's records (label-filtered), failing early when missing."""
    if len(config.domains) < 2:
        raise ValueError("a GAN config needs at least two domains under config.domains")
    tables = {}
    for name, spec in config.domains.items():
        labels = list(spec.labels) if spec.labels else None
        tables[name] = sources.open_table(spec.dataset, spec.split, config.data_dir or None, labels)
    return tables


def domain_preprocess(config, spec, augment: bool = True) -> transforms.Preprocess:
    """The per-record transform of one domain (GANs: crop and flip, no rotation)."""
    return transforms.Preprocess(
        image_size=config.image_size,
        load_size=config.load_size,
        image_key=spec.image_key,
        use_clahe=spec.clahe,
        augment=augment,
        keep=(),
    )


def schedule_lengths(config, tables) -> tuple[int, int]:
    """(steps per epoch, total steps): an epoch passes the largest domain once."""
    largest = max(len(t) for t in tables.values())
    per_epoch = config.steps_per_epoch or max(1, math.ceil(largest / config.global_batch))
    total = config.total_steps or config.num_epochs * per_epoch
    return per_epoch, total


def build_engine(config, steps_per_epoch: int, total_steps: int) -> GanEngine:
    """Networks, optimizers and loss weights from the config."""
    dtype = compute_dtype(config)
    constant = config.optim.constant_epochs * steps_per_epoch
    every = config.disc_every
    gen_sched = optim.constant_then_linear_decay(config.optim.gen.lr, constant, total_steps)
    # The discriminators update once per `every` steps; their schedule counts their updates.
    disc_sched = optim.constant_then_linear_decay(
        config.optim.disc.lr, constant // every, max(1, total_steps // every)
    )
    return GanEngine(
        domains=tuple(config.domains.keys()),
        generator=ResnetGenerator(
            features=config.model.features,
            num_blocks=config.model.num_blocks,
            dropout_rate=config.model.dropout_rate,
            upsample=config.model.upsample,
            dtype=dtype,
        ),
        discriminator=PatchDiscriminator(
            features=config.model.disc_features, n_layers=config.model.disc_layers, dtype=dtype
        ),
        gen_tx=optim.adam(gen_sched, config.optim.gen.b1, config.optim.gen.b2),
        disc_tx=optim.adam(disc_sched, config.optim.disc.b1, config.optim.disc.b2),
        cycle_weight=config.loss.cycle_weight,
        identity_weight=config.loss.identity_weight,
        pool_size=config.pool_size,
        disc_every=every,
    )


def write_config(config, workdir: epath.Path) -> None:
    """config.json, written once (process 0)."""
    path = workdir / "config.json"
    if jax.process_index() == 0 and not path.exists():
        storage.write_text(path, json.dumps(config.to_dict(), indent=1, default=str) + "\n")


def resume_or_start(config, workdir: epath.Path, init, mesh, data_it):
    """(checkpointer, state, start step): the latest checkpoint's state with the data position
    restored, else `init(PRNGKey(config.seed))`; config.json written on the first start."""
    ckpt = checkpoint.Checkpointer(workdir, config.checkpoint_every, config.keep_checkpoints)
    state = ckpt.restore_or_init(
        init, jax.random.PRNGKey(config.seed), parallel.replicated(mesh), data_it
    )
    write_config(config, workdir)
    return ckpt, state, int(jax.device_get(state.step))


def init_fn(engine: GanEngine, config):
    """rng → a fresh state for the configured image size."""
    return functools.partial(engine.init, image_shape=(config.image_size, config.image_size, 1))


class SampleWriter:
    """PNG grids every `sample_every` steps; rows of j | G_IJ(j) | G_JI(G_IJ(j)) per pair IJ."""

    def __init__(self, engine: GanEngine, config, tables, mesh, workdir: epath.Path):
        self.engine, self.every, self.dir = engine, config.sample_every, workdir / "samples"
        n = config.num_samples
        # Fixed images (the first of each domain, unaugmented), the same on every process.
        self.images = {}
        for name, spec in config.domains.items():
            pre = domain_preprocess(config, spec, augment=False)
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
            source, fake, back = (runlog.to_uint8(x) for x in results[pair])
            rows += [[s, f, b] for s, f, b in zip(source, fake, back, strict=True)]
        runlog.save_png(self.dir / f"step_{step:08d}.png", runlog.image_grid(rows))


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> GanState:
    """Train (or resume) the configured GAN in `workdir`; returns the final state."""
    workdir = storage.as_path(workdir)
    mesh = parallel.make_mesh()
    parallel.check_global_batch(config.global_batch, mesh)
    tables = domain_tables(config)
    steps_per_epoch, total_steps = schedule_lengths(config, tables)
    engine = build_engine(config, steps_per_epoch, total_steps)
    data_it = pipelines.unpaired_iterator(
        {
            name: (tables[name], domain_preprocess(config, spec))
            for name, spec in config.domains.items()
        },
        global_batch=config.global_batch,
        seed=config.seed,
        workers=config.workers,
    )
    ckpt, state, start = resume_or_start(config, workdir, init_fn(engine, config), mesh, data_it)
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
            if step_fn is None:
                step_fn = parallel.compile_step(engine.train_step, mesh, state, batch)
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
