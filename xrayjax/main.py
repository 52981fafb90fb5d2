"""Entry point: `python -m xrayjax.main --config configs/X.py[:variant] --workdir DIR [--mode M]`.

`--config.field=value` overrides a config field (unknown fields and wrong types are rejected).
Rerunning the same command resumes from the workdir's latest checkpoint.

Exit status: 0 done; 2 bad input (a flag, config variant or value, dataset, workdir), told in
one `error:` line (XRAYJAX_TRACEBACK=1 adds the traceback); 3 a non-finite loss stopped
training; 1 anything else, a bug, with its traceback.
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from data_prep import errors
from xrayjax import logging as runlog
from xrayjax import parallel

MODES = ("train", "evaluate", "translate", "segment")

config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, samples, reports")
flags.DEFINE_enum("mode", "train", MODES, "what to do with the config and workdir")
flags.DEFINE_string(
    "split", None, "evaluate: split of the test dataset, or 'name:split' (default: config's test)"
)
flags.DEFINE_string(
    "source", None, "translate/segment: source records as DATASET:SPLIT, or a folder of images"
)
flags.DEFINE_string("from", None, "translate: source domain name (e.g. B)")
flags.DEFINE_string("to", None, "translate: target domain name (e.g. A)")
flags.DEFINE_integer(
    "num",
    0,
    "translate/segment: the first NUM source records (0: all; more than the source holds is an "
    "error naming its size)",
)
flags.DEFINE_string(
    "output", None, "translate/segment: dataset name to write, or (from a folder) a folder"
)
flags.DEFINE_enum(
    "fit", "stretch", ["stretch", "pad"], "translate/segment a folder: how images become square"
)
flags.DEFINE_string("data_dir", None, "translate/segment: where to write (default: config's)")
flags.DEFINE_bool("overwrite", False, "translate/segment: replace an existing output dataset")
flags.DEFINE_enum("equation", "67", ["66", "67"], "segment: G_CB(G_BA(a)) (66) or G_CB(a) (67)")
flags.DEFINE_float("threshold", 0.0, "segment: mask image value above which a pixel is bone")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def run(config, workdir: str, mode: str, split: str | None = None) -> None:
    """Dispatch to the trainer the config names."""
    trainer = config.get("trainer")
    if mode in ("translate", "segment"):
        from xrayjax import inference

        for name in ("source", "output") + (("from", "to") if mode == "translate" else ()):
            if not FLAGS[name].value:
                raise errors.InputError(f"--mode {mode} needs --{name}")
        if os.path.isdir(os.path.expanduser(FLAGS.source)):
            # A folder of image files → PNGs and a CSV in the folder --output.
            kwargs = dict(source=FLAGS.source, output=FLAGS.output, fit=FLAGS.fit)
            translate, segment = inference.translate_folder, inference.segment_folder
        else:
            kwargs = dict(
                source=FLAGS.source,
                output=FLAGS.output,
                num=FLAGS.num,
                data_dir=FLAGS.data_dir,
                overwrite=FLAGS.overwrite,
            )
            translate, segment = inference.translate, inference.segment
        if mode == "translate":
            translate(
                config, workdir, from_domain=FLAGS["from"].value, to_domain=FLAGS.to, **kwargs
            )
        else:
            segment(config, workdir, equation=FLAGS.equation, threshold=FLAGS.threshold, **kwargs)
    elif trainer == "segmenter":
        from xrayjax.trainers import segmenter

        if mode == "evaluate":
            raise errors.InputError(
                "a segmenter evaluates itself at the end of training (eval.json)"
            )
        segmenter.train(config, workdir)
    elif trainer == "classifier":
        from xrayjax.trainers import classifier

        if mode == "evaluate":
            classifier.evaluate(config, workdir, split)
        else:
            classifier.train(config, workdir)
    elif mode == "evaluate" and trainer == "gan":
        # Translation quality, eq. 66/67 segmentation, radial inclination → eval.json + figures.
        from xrayjax import evaluate

        if split:
            raise errors.InputError(
                "--split is for classifiers; a GAN config names each domain's eval_split "
                "(--config.domains.A.eval_split=...)"
            )
        evaluate.evaluate(config, workdir)
    elif mode == "evaluate":
        raise errors.InputError(f"--mode evaluate is not available for config.trainer={trainer!r}")
    elif trainer == "gan":
        from xrayjax.trainers import gan

        gan.train(config, workdir)
    else:
        raise errors.InputError(f"config.trainer={trainer!r} is not known")


def main(argv: list[str]) -> None:
    """absl main."""
    del argv
    parallel.enable_compilation_cache()
    parallel.initialize_distributed()
    runlog.run_cli(
        lambda: run(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.split),
        quiet_libraries=not FLAGS["verbosity"].present,
    )


if __name__ == "__main__":
    app.run(main, flags_parser=runlog.parse_flags)
