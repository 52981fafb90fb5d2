"""The whole thesis pipeline on rendered phantoms, sized for a 2-core CPU: `make demo`.

    python -m xrayjax.demo --workdir runs/demo

Stages (each skipped when its outputs are complete, so a rerun after an interruption
continues): render phantom datasets → per-class CycleGANs → translate synthetic images per class
→ classifier ablation (natural only vs + synthetic, 2 seeds) → forearm multi-cycleGAN →
evaluation (translation quality, segmentation by eqs. 66 and 67, radial inclination) → report.
Everything lands in the workdir; `report.md` is the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Callable

from absl import flags

# Demo scale: 64×64 images, tiny networks. Real runs use the configs as they are.
IMAGE_SIZE = 64
GAN_STEPS = 200
MULTI_GAN_STEPS = 200
SYNTHETIC_PER_CLASS = 200
SEEDS = 2
CLASSIFIER_EPOCHS = 5
GEOMETRY_MASKS = 200


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the pipeline: `run(workdir)` makes what `done(workdir)` checks for."""

    name: str
    description: str
    run: Callable[[pathlib.Path], None]
    done: Callable[[pathlib.Path], bool]


def _data_dir(workdir: pathlib.Path) -> pathlib.Path:
    return workdir / "tfds"


def _gan_config(name: str, variant: str, workdir: pathlib.Path, steps: int):
    import importlib

    config = importlib.import_module(f"configs.{name}").get_config(
        f"data=phantom,runlocal{variant}"
    )
    config.data_dir = str(_data_dir(workdir))
    config.image_size = IMAGE_SIZE
    config.load_size = IMAGE_SIZE + IMAGE_SIZE // 8
    config.total_steps = steps  # the runlocal networks: 8 base filters, 2 residual blocks
    config.log_every = 25
    config.checkpoint_every = 100
    config.sample_every = 100
    return config


def _prepare(workdir: pathlib.Path) -> None:
    from data_prep import phantom

    for spec in phantom.DEMO_PRESET:
        phantom.build(spec, _data_dir(workdir), size=IMAGE_SIZE, overwrite=False)


def _prepared(workdir: pathlib.Path) -> bool:
    from data_prep import builder, phantom

    return all(builder.dataset_exists(_data_dir(workdir), s.name) for s in phantom.DEMO_PRESET)


def _train_gan(cls: str) -> Callable[[pathlib.Path], None]:
    def run(workdir: pathlib.Path) -> None:
        from xrayjax.trainers import gan

        config = _gan_config("cyclegan_forearm", f",cls={cls}", workdir, GAN_STEPS)
        gan.train(config, workdir / f"cyclegan_{cls}")

    return run


def _gan_done(name: str, steps: int) -> Callable[[pathlib.Path], bool]:
    def done(workdir: pathlib.Path) -> bool:
        from xrayjax import checkpoint

        path = workdir / name / "checkpoints"
        return path.exists() and checkpoint.Checkpointer(workdir / name, 1).latest_step() == steps

    return done


def _translate(workdir: pathlib.Path) -> None:
    from data_prep import builder
    from xrayjax import inference

    for cls in ("normal", "abnormal"):
        name = f"translated_{cls}"
        if builder.dataset_exists(_data_dir(workdir), name):
            continue
        config = _gan_config("cyclegan_forearm", f",cls={cls}", workdir, GAN_STEPS)
        inference.translate(
            config,
            workdir / f"cyclegan_{cls}",
            source="phantom_forearm_clean:train",
            from_domain="B",
            to_domain="A",
            num=0,
            output=name,
            data_dir=_data_dir(workdir),
        )


def _translated(workdir: pathlib.Path) -> bool:
    from data_prep import builder

    return all(
        builder.dataset_exists(_data_dir(workdir), f"translated_{c}")
        for c in ("normal", "abnormal")
    )


def _classifier_config(workdir: pathlib.Path):
    from configs import classifier_forearm

    config = classifier_forearm.get_config("data=phantom,runlocal")
    config.data_dir = str(_data_dir(workdir))
    config.synthetic.datasets = ("translated_normal:train", "translated_abnormal:train")
    config.image_size = IMAGE_SIZE
    config.load_size = IMAGE_SIZE + IMAGE_SIZE // 8
    config.num_epochs = CLASSIFIER_EPOCHS
    config.steps_per_epoch = 0
    config.model.width = 8
    config.model.num_modules = 4
    config.global_batch = 16
    config.log_every = 10
    config.checkpoint_every = 100
    return config


def _ablation(workdir: pathlib.Path) -> None:
    from xrayjax import ablation

    ablation.run_ablation(
        _classifier_config(workdir), [0, SYNTHETIC_PER_CLASS], SEEDS, workdir / "ablation"
    )


def _multi_gan(workdir: pathlib.Path) -> None:
    from xrayjax.trainers import gan

    gan.train(
        _gan_config("multicyclegan_forearm", "", workdir, MULTI_GAN_STEPS),
        workdir / "multicyclegan_forearm",
    )


# The GAN runs the evaluate stage measures: (run folder, config, variant, steps).
EVALUATED = (
    ("cyclegan_normal", "cyclegan_forearm", ",cls=normal", GAN_STEPS),
    ("multicyclegan_forearm", "multicyclegan_forearm", "", MULTI_GAN_STEPS),
)


def _evaluate(workdir: pathlib.Path) -> None:
    from xrayjax.trainers import gan_evaluate

    for run_dir, name, variant, steps in EVALUATED:
        config = _gan_config(name, variant, workdir, steps)
        # KID features and label predictions come from a natural-only ablation classifier.
        config.eval.classifier_workdir = str(workdir / "ablation" / "syn0_seed0")
        gan_evaluate.evaluate(config, workdir / run_dir)


def _evaluated(workdir: pathlib.Path) -> bool:
    return all((workdir / run_dir / "eval.json").exists() for run_dir, *_ in EVALUATED)


def _geometry(workdir: pathlib.Path) -> None:
    from xrayjax.evaluators import figures, geometry

    out = workdir / "geometry"
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for part in ("forearm", "wrist"):
        r = geometry.evaluate_on_phantoms(part, num=GEOMETRY_MASKS, seed=7, image_size=256)
        results[part] = {k: v for k, v in r.items() if not isinstance(v, list)}
        errors = [e for e in r["errors_deg"] if e is not None]
        figures.error_histogram(errors, out / f"errors_{part}.png")
    tmp = out / "radial_inclination.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out / "radial_inclination.json")


def _report(workdir: pathlib.Path) -> None:
    from xrayjax import report

    report.write_demo_report(workdir)


STAGES = (
    Stage(
        "prepare",
        "render phantom datasets (natural = radiograph style, synthetic = clean)",
        _prepare,
        _prepared,
    ),
    Stage(
        "cyclegan_normal",
        "CycleGAN natural ↔ synthetic, normal forearms",
        _train_gan("normal"),
        _gan_done("cyclegan_normal", GAN_STEPS),
    ),
    Stage(
        "cyclegan_abnormal",
        "CycleGAN natural ↔ synthetic, abnormal forearms",
        _train_gan("abnormal"),
        _gan_done("cyclegan_abnormal", GAN_STEPS),
    ),
    Stage(
        "translate",
        "translate every synthetic image with its class's G_AB",
        _translate,
        _translated,
    ),
    Stage(
        "ablation",
        "classifier: natural only vs + translated synthetic, 2 seeds each",
        _ablation,
        lambda w: (w / "ablation" / "table.md").exists(),
    ),
    Stage(
        "multicyclegan",
        "multi-cycleGAN natural ↔ synthetic ↔ mask, forearms",
        _multi_gan,
        _gan_done("multicyclegan_forearm", MULTI_GAN_STEPS),
    ),
    Stage(
        "evaluate",
        "translation quality, segmentation (eqs. 66, 67), radial inclination",
        _evaluate,
        _evaluated,
    ),
    Stage(
        "geometry",
        "radial inclination from 256×256 ground-truth phantom masks",
        _geometry,
        lambda w: (w / "geometry" / "radial_inclination.json").exists(),
    ),
    Stage("report", "write report.md", _report, lambda w: False),
)


def check_stage_names(names: list[str]) -> None:
    """ValueError naming every stage when one of `names` is not a stage."""
    unknown = sorted(set(names) - {stage.name for stage in STAGES})
    if unknown:
        raise ValueError(
            f"unknown stage(s) {', '.join(unknown)}; the stages are: "
            + ", ".join(stage.name for stage in STAGES)
        )


def run(workdir: pathlib.Path, only: list[str] | None = None) -> dict[str, float]:
    """Run every stage not yet done; returns (and records) each stage's seconds."""
    check_stage_names(only or [])
    workdir.mkdir(parents=True, exist_ok=True)
    times_path = workdir / "stage_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for i, stage in enumerate(STAGES, 1):
        if only and stage.name not in only:
            continue
        header = f"[{i}/{len(STAGES)}] {stage.name}: {stage.description}"
        if stage.done(workdir):
            print(f"{header} — already done, skipped", flush=True)
            continue
        print(header, flush=True)
        start = time.perf_counter()
        stage.run(workdir)
        times[stage.name] = round(time.perf_counter() - start, 1)
        times_path.write_text(json.dumps(times, indent=1) + "\n")
        print(f"    {stage.name} took {times[stage.name]:.0f} s", flush=True)
    return times


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(
        prog="python -m xrayjax.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/demo"))
    parser.add_argument("--only", help="comma-separated stage names to run (default: all)")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    try:
        check_stage_names(only or [])
    except ValueError as err:
        parser.error(str(err))
    flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
    from xrayjax import parallel

    parallel.enable_compilation_cache()
    start = time.perf_counter()
    run(args.workdir, only)
    print(f"demo finished in {time.perf_counter() - start:.0f} s; see {args.workdir / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
