"""The whole thesis pipeline on a phantom world with the thesis's conditions: `make demo`.

    python -m xrayjax.demo --workdir runs/demo [--seed S] [--preset demo|study] [--only STAGES]

Stages (each skipped when its outputs are complete, so a rerun after an interruption
continues): render the phantom world → train the measuring instruments (positive-control
classifiers for each style, a supervised bone segmenter) → per-class CycleGANs → translate the
synthetic renders per class → classifier ablation (natural only, + N and + 2N translated,
+ N untranslated, and in the study a natural-rich ceiling; several seeds) → multi-cycleGAN(s) →
evaluation (translation quality, segmentation by eqs. 66 and 67 against a baseline that learns
nothing, radial inclination from the predicted masks) → summary.json and report.md.

Every random choice (phantoms, initialisation, data order) derives from --seed. Settings were
chosen on phantoms rendered from other seeds, never on a test split. The study preset runs the
same stages at 128 px with larger networks, 5 seeds and both multi-cycleGANs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

from absl import flags

from xrayjax import ablation as ablation_lib


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big each stage is; one per preset."""

    name: str
    image_size: int
    seeds: int  # classifier runs per arm
    synthetic_per_class: int  # N: the ablation adds N and 2N per class
    ceiling: bool  # the natural-rich arm (as many natural images as natural + N per class)
    classifier: dict[str, Any]  # config fields of every classifier run (ablation and controls)
    control_steps: int  # the positive controls train on plenty of images, this long
    segmenter: dict[str, Any]
    gan: dict[str, Any]  # config fields of the per-class CycleGANs
    multi_gan: dict[str, Any]  # ... and of the multi-cycleGAN(s)
    body_parts: tuple[str, ...]  # one multi-cycleGAN per body part
    eval_images: int  # images per domain in GAN evaluation


_GAN = {
    "model.features": 16,
    "model.num_blocks": 4,
    "model.disc_features": 16,
    "model.dropout_rate": 0.2,
    "global_batch": 4,
    "pool_size": 50,
    "total_steps": 400,
    "optim.constant_epochs": 2,
    "workers": 0,
    "log_every": 25,
    "checkpoint_every": 200,
    "sample_every": 200,
    "keep_checkpoints": 1,
}
DEMO = Scale(
    name="demo",
    image_size=64,
    seeds=2,
    synthetic_per_class=600,
    ceiling=False,
    classifier={
        "model.width": 16,
        "model.num_modules": 4,
        "global_batch": 32,
        "total_steps": 300,
        "optim.lr": 1e-3,
        "workers": 0,
        "log_every": 25,
        "checkpoint_every": 300,
        "keep_checkpoints": 1,
        "bootstrap_resamples": 1000,
    },
    control_steps=600,
    segmenter={
        "model.features": 16,
        "model.num_blocks": 2,
        "global_batch": 16,
        "total_steps": 400,
        "workers": 0,
        "log_every": 50,
        "checkpoint_every": 400,
        "keep_checkpoints": 1,
    },
    gan=_GAN,
    multi_gan=_GAN,
    body_parts=("forearm",),
    eval_images=200,
)
STUDY = dataclasses.replace(
    DEMO,
    name="study",
    image_size=128,
    seeds=5,
    ceiling=True,
    classifier={**DEMO.classifier, "total_steps": 400},
    control_steps=800,
    segmenter={**DEMO.segmenter, "total_steps": 600},
    gan={**DEMO.gan, "model.features": 16, "total_steps": 600},
    multi_gan={**DEMO.multi_gan, "model.features": 16, "total_steps": 600},
    body_parts=("forearm", "wrist"),
)
# Every stage in a minute or two, for tests of the orchestration: the numbers mean nothing.
SMOKE = dataclasses.replace(
    DEMO,
    name="smoke",
    image_size=32,
    synthetic_per_class=8,
    classifier={**DEMO.classifier, "model.width": 4, "model.num_modules": 2, "global_batch": 8,
                "total_steps": 4, "checkpoint_every": 4, "bootstrap_resamples": 50},
    control_steps=4,
    segmenter={**DEMO.segmenter, "model.features": 4, "model.num_blocks": 1, "global_batch": 8,
               "total_steps": 4, "checkpoint_every": 4},
    gan={**DEMO.gan, "model.features": 4, "model.num_blocks": 1, "model.disc_features": 4,
         "pool_size": 4, "total_steps": 4, "checkpoint_every": 4, "sample_every": 4},
    multi_gan={**DEMO.multi_gan, "model.features": 4, "model.num_blocks": 1,
               "model.disc_features": 4, "pool_size": 4, "total_steps": 3, "checkpoint_every": 3,
               "sample_every": 3},
    eval_images=16,
)  # fmt: skip
PRESETS = {"demo": DEMO, "study": STUDY, "smoke": SMOKE}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the pipeline: `run(workdir)` makes what `done(workdir)` checks for."""

    name: str
    description: str
    run: Callable[[pathlib.Path], None]
    done: Callable[[pathlib.Path], bool]


def _settings(workdir: pathlib.Path) -> tuple[Scale, int]:
    """The preset and seed this workdir was started with (run.json)."""
    path = workdir / "run.json"
    info = json.loads(path.read_text()) if path.exists() else {"preset": "demo", "seed": 0}
    return PRESETS[info["preset"]], int(info["seed"])


def _data_dir(workdir: pathlib.Path) -> pathlib.Path:
    return workdir / "tfds"


def configure(module: str, variant: str, fields: dict[str, Any]):
    """configs/<module>.py:<variant> with `fields` ('a.b' paths) set on the locked config, so a
    misspelt field raises instead of adding itself."""
    config = importlib.import_module(f"configs.{module}").get_config(variant)
    config.lock()
    for path, value in fields.items():
        *parents, leaf = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


def _seed(workdir: pathlib.Path, offset: int) -> int:
    """A stage's seed: distinct per stage, and per demo seed."""
    return 1000 * _settings(workdir)[1] + offset


def _prepare(workdir: pathlib.Path) -> None:
    from data_prep import phantom

    scale, seed = _settings(workdir)
    for spec in _phantom_specs(scale, seed):
        phantom.build(spec, _data_dir(workdir), size=scale.image_size, overwrite=False)


def _phantom_specs(scale: Scale, seed: int):
    from data_prep import phantom

    return phantom.PRESETS[scale.name](seed)


def _prepared(workdir: pathlib.Path) -> bool:
    from data_prep import builder

    scale, seed = _settings(workdir)
    return all(
        builder.dataset_exists(_data_dir(workdir), s.name) for s in _phantom_specs(scale, seed)
    )


# ----- measuring instruments ---------------------------------------------------------------

CONTROLS = {
    # name: (train split, test split, CLAHE): a classifier trained on plenty of one style.
    "control_natural": ("phantom_forearm_radiograph:extra", "phantom_forearm_radiograph:test", 1),
    "control_clean": ("phantom_forearm_clean:train", "phantom_forearm_clean:test", 0),
}


def _classifier_config(workdir: pathlib.Path, fields: dict[str, Any]):
    scale, _ = _settings(workdir)
    size = scale.image_size
    return configure(
        "classifier_forearm",
        "data=phantom",
        {
            **scale.classifier,
            "data_dir": str(_data_dir(workdir)),
            "image_size": size,
            "load_size": size + size // 8,
            "num_epochs": 1,
            "steps_per_epoch": scale.classifier["total_steps"],
            **fields,
        },
    )


def _instruments(workdir: pathlib.Path) -> None:
    from xrayjax.trainers import classifier, segmenter

    scale, _ = _settings(workdir)
    for k, (name, (train, test, clahe)) in enumerate(CONTROLS.items()):
        if (workdir / name / "eval.json").exists():
            continue
        steps = scale.control_steps
        config = _classifier_config(
            workdir,
            {
                "natural.train": train,
                "natural.test": test,
                "natural.clahe": bool(clahe),
                "synthetic.per_class": 0,
                "synthetic.datasets": (),
                "seed": _seed(workdir, 100 + k),
                "total_steps": steps,
                "steps_per_epoch": steps,
                "checkpoint_every": steps,
            },
        )
        classifier.train(config, workdir / name)
    if not (workdir / "segmenter" / "eval.json").exists():
        size = scale.image_size
        config = configure(
            "segmenter_forearm",
            "",
            {
                **scale.segmenter,
                "data_dir": str(_data_dir(workdir)),
                "data.train": "phantom_forearm_radiograph:extra",
                "data.test": "phantom_forearm_radiograph:test",
                "image_size": size,
                "load_size": size + size // 8,
                "seed": _seed(workdir, 110),
            },
        )
        segmenter.train(config, workdir / "segmenter")


def _instruments_done(workdir: pathlib.Path) -> bool:
    names = (*CONTROLS, "segmenter")
    return all((workdir / name / "eval.json").exists() for name in names)


# ----- GANs ---------------------------------------------------------------------------------


def _gan_config(workdir: pathlib.Path, module: str, variant: str = "", seed_offset: int = 3):
    """A GAN config at the preset's scale; forearm runs get the forearm instruments."""
    scale, _ = _settings(workdir)
    size = scale.image_size
    fields = dict(scale.multi_gan if module.startswith("multi") else scale.gan)
    if "forearm" in module:
        fields |= {
            "eval.classifiers.A": str(workdir / "control_natural"),
            "eval.classifiers.B": str(workdir / "control_clean"),
            "eval.segmenter_workdir": str(workdir / "segmenter"),
        }
    return configure(
        module,
        f"data=phantom{variant}",
        {
            **fields,
            "data_dir": str(_data_dir(workdir)),
            "image_size": size,
            "load_size": size + size // 8,
            "seed": _seed(workdir, seed_offset),
            "eval.max_images": scale.eval_images,
        },
    )


def _cyclegan_config(workdir: pathlib.Path, cls: str):
    """The per-class CycleGAN's config (thesis 3.2.2)."""
    return _gan_config(
        workdir, "cyclegan_forearm", f",cls={cls}", 1 + ("normal", "abnormal").index(cls)
    )


def _gan_done(run: str) -> Callable[[pathlib.Path], bool]:
    def done(workdir: pathlib.Path) -> bool:
        from xrayjax import checkpoint

        path = workdir / run
        if not (path / "checkpoints").exists() or not (path / "config.json").exists():
            return False
        steps = json.loads((path / "config.json").read_text())["total_steps"]
        return checkpoint.Checkpointer(path, 1).latest_step() == steps

    return done


def _train_cyclegan(cls: str) -> Callable[[pathlib.Path], None]:
    def run(workdir: pathlib.Path) -> None:
        from xrayjax.trainers import gan

        gan.train(_cyclegan_config(workdir, cls), workdir / f"cyclegan_{cls}")

    return run


def _translate(workdir: pathlib.Path) -> None:
    from data_prep import builder
    from xrayjax import inference

    for cls in ("normal", "abnormal"):
        name = f"translated_{cls}"
        if builder.dataset_exists(_data_dir(workdir), name):
            continue
        inference.translate(
            _cyclegan_config(workdir, cls),
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


def _multi_runs(workdir: pathlib.Path) -> list[tuple[str, str]]:
    """(run folder, config module) of each multi-cycleGAN of the preset."""
    scale, _ = _settings(workdir)
    return [(f"multicyclegan_{part}", f"multicyclegan_{part}") for part in scale.body_parts]


def _multi_gans(workdir: pathlib.Path) -> None:
    from xrayjax.trainers import gan

    for k, (run, module) in enumerate(_multi_runs(workdir)):
        if not _gan_done(run)(workdir):
            gan.train(_gan_config(workdir, module, seed_offset=3 + k), workdir / run)


def _multi_done(workdir: pathlib.Path) -> bool:
    return all(_gan_done(run)(workdir) for run, _ in _multi_runs(workdir))


# ----- ablation ---------------------------------------------------------------------------


def ablation_arms(scale: Scale) -> list[ablation_lib.Arm]:
    """The arms: the thesis's (natural only, + N and + 2N translated) and the controls."""
    n = scale.synthetic_per_class
    translated = ("translated_normal:train", "translated_abnormal:train")
    arms = [
        ablation_lib.Arm("natural", "natural"),
        ablation_lib.Arm(f"translated{n}", "translated", n, translated),
        ablation_lib.Arm(f"translated{2 * n}", "translated", 2 * n, translated),
        ablation_lib.Arm(f"untranslated{n}", "untranslated", n, ("phantom_forearm_clean:train",)),
    ]
    if scale.ceiling:
        extra = ("phantom_forearm_radiograph:extra",)
        arms.append(ablation_lib.Arm(f"ceiling{n}", "ceiling", n, extra, clahe=True))
    return arms


def _ablation(workdir: pathlib.Path) -> None:
    scale, _ = _settings(workdir)
    config = _classifier_config(workdir, {"seed": _seed(workdir, 200)})
    ablation_lib.run_arms(config, ablation_arms(scale), scale.seeds, workdir / "ablation")


# ----- evaluation, report -------------------------------------------------------------------


def _evaluated_runs(workdir: pathlib.Path) -> list[tuple[str, Any]]:
    """(run folder, its config) of every GAN the evaluate stage measures."""
    runs = [(f"cyclegan_{c}", _cyclegan_config(workdir, c)) for c in ("normal", "abnormal")]
    multi = _multi_runs(workdir)
    return runs + [
        (run, _gan_config(workdir, module, seed_offset=3 + k))
        for k, (run, module) in enumerate(multi)
    ]


def _evaluate(workdir: pathlib.Path) -> None:
    from xrayjax.trainers import gan_evaluate

    for run, config in _evaluated_runs(workdir):
        if not (workdir / run / "eval.json").exists():
            gan_evaluate.evaluate(config, workdir / run)


def _evaluated(workdir: pathlib.Path) -> bool:
    return all((workdir / run / "eval.json").exists() for run, _ in _evaluated_runs(workdir))


def _geometry(workdir: pathlib.Path) -> None:
    from xrayjax import logging as runlog
    from xrayjax.evaluators import figures, geometry

    out = workdir / "geometry"
    results = {}
    for part in ("forearm", "wrist"):
        r = geometry.evaluate_on_phantoms(part, num=200, seed=_seed(workdir, 7), image_size=256)
        results[part] = {k: v for k, v in r.items() if not isinstance(v, list)}
        errors = [e for e in r["errors_deg"] if e is not None]
        figures.error_histogram(errors, out / f"errors_{part}.png")
    runlog.write_json(out / "radial_inclination.json", results)


def _report(workdir: pathlib.Path) -> None:
    from xrayjax import report

    report.write_demo_report(workdir)


STAGES = (
    Stage(
        "prepare",
        "render the phantom world (natural = radiograph style, synthetic = clean renders)",
        _prepare,
        _prepared,
    ),
    Stage(
        "instruments",
        "positive-control classifiers (each style) and the supervised bone segmenter",
        _instruments,
        _instruments_done,
    ),
    Stage(
        "cyclegan_normal",
        "CycleGAN natural ↔ synthetic, normal forearms",
        _train_cyclegan("normal"),
        _gan_done("cyclegan_normal"),
    ),
    Stage(
        "cyclegan_abnormal",
        "CycleGAN natural ↔ synthetic, abnormal forearms",
        _train_cyclegan("abnormal"),
        _gan_done("cyclegan_abnormal"),
    ),
    Stage(
        "translate",
        "translate every synthetic render with its class's G_AB",
        _translate,
        _translated,
    ),
    Stage(
        "ablation",
        "classifier: natural only, + N / 2N translated, + N untranslated (seeds per arm)",
        _ablation,
        lambda w: (w / "ablation" / "table.md").exists(),
    ),
    Stage(
        "multicyclegan",
        "multi-cycleGAN natural ↔ synthetic ↔ mask",
        _multi_gans,
        _multi_done,
    ),
    Stage(
        "evaluate",
        "translation quality, segmentation (eqs. 66, 67, baseline), radial inclination",
        _evaluate,
        _evaluated,
    ),
    Stage(
        "geometry",
        "the radial-inclination measurement on 256×256 ground-truth phantom masks",
        _geometry,
        lambda w: (w / "geometry" / "radial_inclination.json").exists(),
    ),
    Stage("report", "write summary.json and report.md", _report, lambda w: False),
)


def check_stage_names(names: list[str]) -> None:
    """ValueError naming every stage when one of `names` is not a stage."""
    unknown = sorted(set(names) - {stage.name for stage in STAGES})
    if unknown:
        raise ValueError(
            f"unknown stage(s) {', '.join(unknown)}; the stages are: "
            + ", ".join(stage.name for stage in STAGES)
        )


def start(workdir: pathlib.Path, preset: str = "demo", seed: int = 0) -> None:
    """Record the workdir's preset and seed, or refuse a workdir started with other ones."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; the presets are: {', '.join(PRESETS)}")
    path = workdir / "run.json"
    if path.exists():
        info = json.loads(path.read_text())
        if (info["preset"], int(info["seed"])) != (preset, seed):
            raise ValueError(
                f"{workdir} holds a run with --preset {info['preset']} --seed {info['seed']}; "
                f"use another --workdir for --preset {preset} --seed {seed}"
            )
        return
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"preset": preset, "seed": seed}) + "\n")


def run(
    workdir: pathlib.Path, only: list[str] | None = None, preset: str = "demo", seed: int = 0
) -> dict[str, float]:
    """Run every stage not yet done; returns (and records) each stage's seconds."""
    check_stage_names(only or [])
    start(workdir, preset, seed)
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
        begin = time.perf_counter()
        stage.run(workdir)
        times[stage.name] = round(time.perf_counter() - begin, 1)
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
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0, help="every random choice derives from it")
    parser.add_argument("--only", help="comma-separated stage names to run (default: all)")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    try:
        check_stage_names(only or [])
        if args.seed < 0:
            raise ValueError(f"--seed must be 0 or more, got {args.seed}")
        start(args.workdir, args.preset, args.seed)
    except ValueError as err:
        parser.error(str(err))
    flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
    from xrayjax import parallel

    parallel.enable_compilation_cache()
    begin = time.perf_counter()
    run(args.workdir, only, args.preset, args.seed)
    print(f"demo finished in {time.perf_counter() - begin:.0f} s; see {args.workdir / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
