"""Entry point: `python -m xrayjax.main --config configs/X.py[:variant] --workdir DIR [--mode M]`.

`--config.field=value` overrides a config field (unknown fields and wrong types are rejected).
Rerunning the same command resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import os
import pathlib
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from xrayjax import parallel

MODES = ("train",)

config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, samples, reports")
flags.DEFINE_enum("mode", "train", MODES, "what to do with the config and workdir")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def run(config, workdir: str, mode: str) -> None:
    """Dispatch to the trainer the config names."""
    trainer = config.get("trainer")
    if trainer == "gan":
        from xrayjax.trainers import gan

        gan.train(config, workdir)
    else:
        raise ValueError(f"config.trainer={trainer!r} is not known")


def main(argv: list[str]) -> None:
    """absl main."""
    del argv
    if not FLAGS["verbosity"].present:
        # orbax and grain log every save and worker at INFO; the progress bar says enough.
        absl_logging.set_verbosity(absl_logging.WARNING)
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        # Reruns (resumes, evaluation) reuse compiled steps instead of compiling again.
        cache = pathlib.Path("~/.cache/xrayjax/jax-compilation").expanduser()
        jax.config.update("jax_compilation_cache_dir", str(cache))
    parallel.initialize_distributed()
    try:
        run(FLAGS.config, FLAGS.workdir, FLAGS.mode)
    except (ValueError, FileNotFoundError) as err:
        # Bad input (config, data, workdir): one clear line; nothing was written past the error.
        if os.environ.get("XRAYJAX_TRACEBACK"):
            raise
        print(f"error: {err}\n(set XRAYJAX_TRACEBACK=1 to see the traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
