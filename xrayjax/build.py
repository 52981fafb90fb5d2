"""Config → engine, initial or restored state, per-record transform: what trainers, inference
and evaluation all build the same way.

Each network has an engine (networks, optimizers, loss weights), an init function
(rng → fresh state) and a transform (record → model input); `restore_latest` loads a trained
workdir's state for inference, `resume_or_start` a training run's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from data_prep import errors, storage
from xrayjax import checkpoint, optim, parallel
from xrayjax import logging as runlog
from xrayjax.data import transforms
from xrayjax.models import PatchDiscriminator, ResNetClassifier, ResnetGenerator, layers
from xrayjax.steps.classifier import ClassifierEngine, ClassifierState
from xrayjax.steps.gan import GanEngine
from xrayjax.steps.segmenter import SegmenterEngine, SegmenterState

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict):
    """The configured compute dtype, with a clear error for a typo."""
    if config.dtype not in DTYPES:
        raise errors.InputError(f"config.dtype={config.dtype!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[config.dtype]


def _image_shape(config) -> tuple[int, int, int]:
    return (config.image_size, config.image_size, 1)


def layer_forms(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The networks' layer forms (config.model), with a clear error for an unknown one."""
    forms = {}
    for field, allowed in layers.FORMS.items():
        # Workdirs trained before a field existed ran its "auto" form.
        forms[field] = config.model.get(field, "auto")
        if forms[field] not in allowed:
            # The layers check it too, but only when first traced, and as an internal contract.
            raise errors.InputError(
                f"config.model.{field}={forms[field]!r}; allowed: {', '.join(allowed)}"
            )
    return forms


# --- GAN (CycleGAN and multi-cycleGAN) -------------------------------------------------------

# The "auto" forms suit XLA's default CPU convolutions (YNNPACK's). A large CPU step compiles
# with XLA's own (`parallel.large_cpu_step_options`), under which the plain reflect conv and
# XLA's weight gradient are the faster (jaxlib 0.10.2): the 128-px step with 32 features and
# batch 4 took 2.90 against 3.42 s (best of 6, median 3.21 against 3.77), the full-size step
# 9.88 against 10.96 s (best of 3, median 10.68 against 11.26), temporaries 773 against 834 and
# 2,035 against 2,130 MiB (docs/performance.md, "YNNPACK's convolutions"). Its residual convs
# then take Winograd's form; with the generator called on the whole batch as well (a change of
# the same day), the 128-px step took 3.21 against 3.75 s (median of 10, alternating with the
# tree before), the full-size step 10.85 against 12.16 s (median of 5), at 1,562 and 3,122 MiB
# of peak against 1,518 and 3,113 (docs/performance.md, "Winograd"). Under jaxlib 0.12.1 these
# forms with XLA's convolutions took 2.82 s against 3.60 in the "auto" forms with YNNPACK's, the
# full-size step 9.60 against 17.00 s (docs/performance.md, "Large steps under jaxlib 0.12.1").
# On 2026-12-06 (afternoon) the transformed kernel of Winograd's form became sums of taps, the
# generator's last conv (to 1 channel) took the taps form, its products pixel-major, and the
# stride-2 convs the "taps" downsampling (input gradient as the taps transposed conv, matmul
# weight gradient): alone, the full-size stride-2 convs' forward and backward 121 → 66 and
# 52 → 40 ms, the 128-px ones' 23 → 17 and 15 → 13 ms (best of 10-16; docs/performance.md,
# "Sums of taps").
# Since 2026-12-06 (night) "auto" itself takes XLA's weight gradient and, for the convs that
# Winograd's form leaves to "valid", that form (layers.py): a large step's forms differ from a
# small one's in the residual convs, the layout of the last conv's taps and the stride-2 convs.
LARGE_CPU_STEP_FORMS = {"reflect_conv": "winograd", "downsample": "taps", "weight_grad": "xla"}

# Winograd's weight gradient (layers.py) took the residual convs' weight gradient from 26 to 18
# ms alone (1×64×64×256) and the full-size step from 0.73 to 0.67 of PyTorch's time, the 128-px
# step with 32 features and batch 4 from 0.81 to 0.71; but its ~30 more compiled kernels per
# conv stay resident with the program, and the 128-px process's peak rose from 1,689 to
# 2,085 MiB (PyTorch's 1,567), the full-size one's only from 3,310 to 3,283 (docs/performance.md,
# "Winograd's weight gradient"). So steps whose memory traffic per device is above this
# threshold take it: the full-size step's is 174 GB, the 128-px one's 64 GB (67 GB with the
# config's 64-feature discriminator).
WINOGRAD_WEIGHT_GRAD_MIN_BYTES_ACCESSED = 100e9


def large_cpu_step_engine(engine: GanEngine, traffic: float = 0.0) -> GanEngine:
    """The engine for a large CPU step with `traffic` bytes of memory traffic per device.

    Its "auto" forms take `LARGE_CPU_STEP_FORMS`, and its weight gradient Winograd's where the
    traffic is above `WINOGRAD_WEIGHT_GRAD_MIN_BYTES_ACCESSED`. Forms change no parameter, so
    states and checkpoints are shared with the engine given; results differ by float rounding.
    """
    large_forms = dict(LARGE_CPU_STEP_FORMS)
    if traffic > WINOGRAD_WEIGHT_GRAD_MIN_BYTES_ACCESSED:
        large_forms["weight_grad"] = "winograd"

    def resolved(module):
        forms = {
            field: form
            for field, form in large_forms.items()
            if getattr(module, field, None) == "auto"
        }
        return module.clone(**forms) if forms else module

    generator, discriminator = resolved(engine.generator), resolved(engine.discriminator)
    return dataclasses.replace(engine, generator=generator, discriminator=discriminator)


def large_cpu_train_step(engine: GanEngine) -> Callable[[float], Callable]:
    """For `parallel.lower_step`: a large CPU step's traffic per device → its train step."""
    return lambda traffic: large_cpu_step_engine(engine, traffic).train_step


def gan_engine(config, steps_per_epoch: int, total_steps: int) -> GanEngine:
    """Networks, optimizers and loss weights from the config."""
    dtype = compute_dtype(config)
    forms = layer_forms(config)
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
            dtype=dtype,
            **forms,
        ),
        discriminator=PatchDiscriminator(
            features=config.model.disc_features,
            n_layers=config.model.disc_layers,
            weight_grad=forms["weight_grad"],
            dtype=dtype,
        ),
        gen_tx=optim.adam(
            config.optim.gen.lr, config.optim.gen.b1, config.optim.gen.b2, scheduled=True
        ),
        disc_tx=optim.adam(
            config.optim.disc.lr, config.optim.disc.b1, config.optim.disc.b2, scheduled=True
        ),
        cycle_weight=config.loss.cycle_weight,
        identity_weight=config.loss.identity_weight,
        pool_size=config.pool_size,
        disc_every=every,
        gen_schedule=gen_sched,
        disc_schedule=disc_sched,
    )


def gan_init(engine: GanEngine, config):
    """rng → a fresh GAN state for the configured image size."""
    return functools.partial(engine.init, image_shape=_image_shape(config))


def domain_preprocess(config, spec, augment: bool = True) -> transforms.Preprocess:
    """The per-record transform of one GAN domain (crop and flip, no rotation)."""
    return transforms.Preprocess(
        image_size=config.image_size,
        load_size=config.load_size,
        image_key=spec.image_key,
        use_clahe=spec.clahe,
        augment=augment,
        keep=(),
    )


# --- classifier ------------------------------------------------------------------------------


def classifier_engine(config, steps_per_epoch: int) -> ClassifierEngine:
    """The network and optimizer from the config (constant learning rate, as in the thesis)."""
    model = ResNetClassifier(
        width=config.model.width,
        num_modules=config.model.num_modules,
        blocks_per_module=config.model.blocks_per_module,
        dtype=compute_dtype(config),
    )
    tx = optim.adam(config.optim.lr, config.optim.b1, config.optim.b2)
    return ClassifierEngine(model=model, tx=tx, steps_per_epoch=steps_per_epoch)


def classifier_init(engine: ClassifierEngine, config):
    """rng → a fresh classifier state for the configured image size."""
    return functools.partial(engine.init, image_shape=_image_shape(config))


def classifier_preprocess(config, clahe: bool, augment: bool) -> transforms.Preprocess:
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


# --- segmenter -------------------------------------------------------------------------------


def segmenter_engine(config: ml_collections.ConfigDict) -> SegmenterEngine:
    """The network (a CycleGAN generator without dropout) and Adam at a constant rate."""
    model = ResnetGenerator(
        features=config.model.features,
        num_blocks=config.model.num_blocks,
        dropout_rate=0.0,
        dtype=compute_dtype(config),
        **layer_forms(config),
    )
    return SegmenterEngine(model, optim.adam(config.optim.lr, config.optim.b1, config.optim.b2))


def segmenter_init(engine: SegmenterEngine, config):
    """rng → a fresh segmenter state for the configured image size."""
    return functools.partial(engine.init, image_shape=_image_shape(config))


def segmenter_preprocess(config, augment: bool) -> transforms.PairedPreprocess:
    """Image (CLAHE as configured) and mask, cropped and flipped alike when augmenting."""
    common = dict(
        image_size=config.image_size, load_size=config.load_size, augment=augment, keep=()
    )
    return transforms.PairedPreprocess(
        image=transforms.Preprocess(use_clahe=config.data.clahe, **common),
        mask=transforms.Preprocess(image_key="mask", **common),
    )


# --- states ----------------------------------------------------------------------------------


def write_config(config, workdir: epath.Path) -> None:
    """config.json, written once (process 0); strict JSON (a NaN setting is written as null)."""
    path = workdir / "config.json"
    if jax.process_index() == 0 and not path.exists():
        text = json.dumps(
            runlog.json_safe(config.to_dict()), indent=1, default=str, allow_nan=False
        )
        storage.write_text(path, text + "\n")


def resume_or_start(config, workdir: epath.Path, init, mesh, data_it):
    """(checkpointer, state, start step): the latest checkpoint's state with the data position
    restored, else `init(PRNGKey(config.seed))`; config.json written on the first start."""
    ckpt = checkpoint.Checkpointer(workdir, config.checkpoint_every, config.keep_checkpoints)
    state = ckpt.restore_or_init(
        init, jax.random.PRNGKey(config.seed), parallel.replicated(mesh), data_it
    )
    write_config(config, workdir)
    return ckpt, state, int(jax.device_get(state.step))


def restore_latest(workdir: str | os.PathLike, init, mesh, what: str = "this config"):
    """(state, step): the latest checkpoint of a trained workdir, replicated on `mesh`, shaped
    as `init(rng)` makes it; FileNotFoundError naming the workdir when it has none."""
    workdir = storage.as_path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise errors.MissingInput(
            f"no checkpoint in {workdir / 'checkpoints'}: train {what} in that workdir first"
        )
    ckpt = checkpoint.Checkpointer(workdir, every=1 << 30)
    try:
        if ckpt.latest_step() is None:
            raise errors.MissingInput(
                f"no checkpoint in {ckpt.directory}: train {what} in that workdir first"
            )
        state = ckpt.restore_like(init, parallel.replicated(mesh))
    finally:
        ckpt.close()
    # The step restored, which is older than the latest when that one was unreadable.
    return state, int(jax.device_get(state.step))


def trained_config(workdir: str | os.PathLike, trainer: str, example: str):
    """The config.json of a workdir trained by `trainer`; a clear error for anything else."""
    workdir = storage.as_path(workdir)
    path = workdir / "config.json"
    if not path.is_file():
        raise errors.MissingInput(
            f"{trainer} workdir {workdir}: no config.json there; train a {trainer} in it "
            f"first ({example})"
        )
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    if config.get("trainer") != trainer:
        raise errors.InputError(
            f"{trainer} workdir {workdir} holds a {config.get('trainer')!r} run, not a {trainer}"
        )
    return config


def load_generators(config, workdir: str | os.PathLike):
    """(engine, state, mesh): the GAN state of the workdir's latest checkpoint, replicated."""
    engine = gan_engine(config, steps_per_epoch=1, total_steps=1)
    mesh = parallel.make_mesh()
    state, _ = restore_latest(workdir, gan_init(engine, config), mesh)
    return engine, state, mesh


@dataclasses.dataclass
class Classifier:
    """A trained classifier restored from its workdir: features and P(abnormal) of images."""

    config: ml_collections.ConfigDict
    engine: ClassifierEngine
    state: ClassifierState
    step: int
    workdir: epath.Path

    def apply(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, S, S, 1) in [−1, 1] → penultimate features (B, D), P(abnormal) (B,)."""
        size = self.config.image_size
        if images.shape[1:3] != (size, size):
            images = jax.image.resize(images, (images.shape[0], size, size, 1), "linear")
        variables = {"params": self.state.params, "batch_stats": self.state.batch_stats}
        logits, features = self.engine.model.apply(
            variables, images, train=False, return_features=True
        )
        return features, jax.nn.softmax(logits, axis=-1)[:, 1]

    def describe(self) -> dict[str, Any]:
        """Which network gave the features (eval.json's `features`)."""
        model = self.config.model
        feature_dim = model.width * 2 ** (model.num_modules - 1)  # the last module's channels
        return {
            "network": (
                f"ResNetClassifier penultimate layer (global average pool, {feature_dim} "
                f"features) of the classifier in {self.workdir} at step {self.step}"
            ),
            "classifier_workdir": str(self.workdir),
            "classifier_step": self.step,
            "trained_on": self.config.natural.train,
            "input_size": self.config.image_size,
            "feature_dim": feature_dim,
        }


def load_classifier(workdir: str | os.PathLike, mesh) -> Classifier:
    """The classifier in `workdir` (its config.json and latest checkpoint), replicated on mesh."""
    workdir = storage.as_path(workdir)
    config = trained_config(workdir, "classifier", "configs/classifier_forearm.py")
    # The epoch length only matters to training; shapes do not depend on it.
    engine = classifier_engine(config, steps_per_epoch=1)
    state, step = restore_latest(workdir, classifier_init(engine, config), mesh, "a classifier")
    return Classifier(config, engine, state, step, workdir)


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


def load_segmenter(workdir: str | os.PathLike, mesh) -> Segmenter:
    """The segmenter trained in `workdir` (config.json, latest checkpoint, eval.json)."""
    workdir = storage.as_path(workdir)
    config = trained_config(workdir, "segmenter", "configs/segmenter_forearm.py")
    if not (workdir / "eval.json").is_file():
        raise errors.MissingInput(
            f"segmenter workdir {workdir}: no eval.json there; its training did not finish "
            "(rerun it to resume)"
        )
    engine = segmenter_engine(config)
    state, _ = restore_latest(workdir, segmenter_init(engine, config), mesh, "a segmenter")
    return Segmenter(config, engine, state, workdir)
