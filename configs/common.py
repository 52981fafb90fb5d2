"""Blocks shared by the experiment configs. Configs import only ml_collections and this file."""

from __future__ import annotations

import ml_collections

# The spellings of a yes/no variant's value; anything else (a typo such as `ture`) is refused
# rather than read as no.
YES = ("1", "true", "yes")
NO = ("0", "false", "no")


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'cls=abnormal,data=phantom,runlocal' → fields over `defaults` (a bare word sets True).

    Raises ValueError for an unknown key or a value of the wrong kind. Configs import only
    ml_collections and this file, so it is a plain ValueError; the command line reports it as
    bad input (xrayjax.logging.parse_flags).
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in values:
            raise ValueError(f"unknown config variant {key!r}; known: {', '.join(sorted(values))}")
        if not value:
            values[key] = True
        elif isinstance(values[key], bool):
            if value.lower() not in YES + NO:
                raise ValueError(
                    f"config variant {key}={value!r} is neither yes nor no; write one of "
                    f"{', '.join(YES + NO)} (any case), or the bare word {key} for yes"
                )
            values[key] = value.lower() in YES
        elif isinstance(values[key], int):
            try:
                values[key] = int(value)
            except ValueError:
                raise ValueError(f"config variant {key}={value!r} is not a whole number") from None
        else:
            values[key] = value
    return ml_collections.ConfigDict(values)


def domain(
    dataset: str,
    split: str = "train",
    *,
    image_key: str = "image",
    clahe: bool = False,
    labels: tuple[int, ...] = (),
) -> ml_collections.ConfigDict:
    """One image domain: which dataset split, which image feature, CLAHE, which labels."""
    return ml_collections.ConfigDict(
        {
            "dataset": dataset,
            "split": split,
            # `--mode evaluate` reads this split: MURA's 'valid' is the thesis's test set
            # (sec. 3.1); the other datasets have a 'test' split.
            "eval_split": "valid" if dataset == "mura" else "test",
            "image_key": image_key,  # 'mask' reads a dataset's bone masks as images
            "clahe": clahe,  # thesis 3.2.1: CLAHE on natural images
            "labels": labels,  # () keeps every label
        }
    )


def choose(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Check a variant value against its allowed list."""
    if value not in allowed:
        raise ValueError(f"config variant {name}={value!r}; allowed: {', '.join(allowed)}")
    return value


def run_fields(config: ml_collections.ConfigDict) -> None:
    """Fields every trainer reads: seeds, data location, logging and checkpoint cadence."""
    config.seed = 0
    config.data_dir = ""  # empty: $TFDS_DATA_DIR, else ~/tensorflow_datasets
    config.workers = 2  # grain worker processes per host
    config.log_every = 50
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    config.dtype = "float32"  # compute dtype; 'bfloat16' on GPU/TPU (parameters stay float32)


def layer_forms() -> dict[str, str]:
    """config.model's layer forms (xrayjax/models/layers.py), all "auto".

    Every form gives the same numbers up to float summation order; "auto" picks the fastest
    measured one per backend. The plain forms ("transpose", "valid", "xla") compile faster.
    """
    return {
        "upsample": "auto",  # or "transpose" | "subpixel" | "taps"
        "downsample": "auto",  # or "conv" | "taps"
        "reflect_conv": "auto",  # or "valid" | "same_crop" | "taps" | "winograd"
        "weight_grad": "auto",  # or "xla" | "matmul"
    }


def gan_config() -> ml_collections.ConfigDict:
    """The CycleGAN defaults of thesis 3.2.2.1 (two domains); experiments fill in the domains."""
    config = ml_collections.ConfigDict()
    config.trainer = "gan"
    run_fields(config)
    config.domains = ml_collections.ConfigDict()
    config.image_size = 256  # thesis 3.2.1: every image 256×256
    config.load_size = 286  # reference CycleGAN: resize to 286, random crop 256
    config.global_batch = 1  # thesis and reference: batch size 1
    config.num_epochs = 30  # thesis 4.1: 30 epochs (longer degraded quality)
    config.steps_per_epoch = 0  # 0: the largest domain's size / global batch
    config.total_steps = 0  # 0: num_epochs × steps_per_epoch
    config.model = ml_collections.ConfigDict(
        {
            "features": 64,  # ResNet generator, 9 blocks (sec. 3.2.2.1)
            "num_blocks": 9,
            "dropout_rate": 0.2,  # thesis: dropout 0.2 in the residual blocks
            **layer_forms(),
            "disc_features": 64,  # 70×70 PatchGAN
            "disc_layers": 3,  # 3 → 70×70 receptive field; 4 → the thesis's "6 conv layers"
        }
    )
    config.loss = ml_collections.ConfigDict({"cycle_weight": 10.0, "identity_weight": 5.0})  # λ, γ
    config.pool_size = 50  # reference CycleGAN image history; 0 turns it off
    config.disc_every = 1  # generator updates per discriminator update
    config.optim = ml_collections.ConfigDict(
        {
            "gen": {"lr": 2e-4, "b1": 0.5, "b2": 0.999},  # Adam (sec. 3.2.2.1)
            "disc": {"lr": 2e-4, "b1": 0.5, "b2": 0.999},
            "constant_epochs": 10,  # then linear decay to 0 at the last step
        }
    )
    config.sample_every = 1000  # PNG grids: input | translated | reconstructed
    config.num_samples = 4
    # `--mode evaluate` (xrayjax/evaluate.py): the measurements the thesis left to the eye.
    config.eval = ml_collections.ConfigDict(
        {
            # Workdir of a trained classifier (configs/classifier_forearm.py): its penultimate
            # layer gives the features for KID, its predictions the label preservation of
            # translated images. "" skips both (eval.json records why).
            "classifier_workdir": "",
            # Per target domain, a classifier trained on that domain's style (overrides
            # classifier_workdir there): e.g. B = one trained on clean renders.
            "classifiers": ml_collections.ConfigDict({"A": "", "B": ""}),
            # Workdir of a supervised bone segmenter (configs/segmenter_forearm.py) for images
            # of `segmenter_domain`: it finds the bone of translations into that domain (anatomy
            # preservation) and segments A beside eqs. 66/67. "" → Otsu thresholds.
            "segmenter_workdir": "",
            "segmenter_domain": "A",
            # Eqs. 66/67: a mask image (generator output in [−1, 1]) is bone above this value.
            "threshold": 0.0,
            "max_images": 500,  # the first images of each domain's eval split (0: all)
        }
    )
    return config


def shrink_gan_for_cpu(config: ml_collections.ConfigDict) -> None:
    """The runlocal variant: tiny networks, 64×64 images, a dozen steps, frequent checkpoints."""
    config.image_size = 64
    config.load_size = 72
    config.global_batch = 4  # divides 1, 2 or 4 devices
    config.total_steps = 12
    config.model.features = 8
    config.model.num_blocks = 2
    config.model.disc_features = 8
    config.pool_size = 4
    config.optim.constant_epochs = 0
    config.workers = 0
    config.log_every = 2
    config.checkpoint_every = 4
    config.sample_every = 6
    config.num_samples = 2


def multicyclegan_config(natural: str, synthetic: str) -> ml_collections.ConfigDict:
    """Three domains (sec. 3.2.4): natural X-rays A, synthetic X-rays B, their bone masks C."""
    config = gan_config()
    config.domains.A = domain(natural, "train", clahe=True)
    config.domains.B = domain(synthetic, "train")
    config.domains.C = domain(synthetic, "train", image_key="mask")
    config.loss.cycle_weight = 5.0  # λ (sec. 3.2.4)
    config.loss.identity_weight = 1.0  # γ
    config.disc_every = 3  # generators updated 3 times per discriminator update
    config.optim.gen = {"lr": 2e-4, "b1": 0.5, "b2": 0.9}  # separate optimisers (sec. 3.2.4)
    config.optim.disc = {"lr": 5e-5, "b1": 0.5, "b2": 0.9}
    return config
