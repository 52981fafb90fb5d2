"""The whole thesis pipeline on a phantom world with the thesis's conditions: `make demo`.

    python -m xrayjax.tools.demo --workdir runs/demo [--seed S] [--preset demo|perclass|study]
        [--only STAGES]

Stages (each skipped when its outputs are complete, so a rerun after an interruption
continues): render the phantom world → train the measuring instruments (positive-control
classifiers for each style, a supervised bone segmenter) → a CycleGAN (--preset perclass
adds the thesis's per-class pair) → translate the synthetic renders → classifier ablation
(natural only, + N and + 2N translated, + N untranslated, and in the study a natural-rich ceiling) →
multi-cycleGAN(s), trained in a second process beside them →
evaluation (translation quality, segmentation by eqs. 66 and 67 against a baseline that learns
nothing, radial inclination from the predicted masks) → summary.json and report.md.

Every random choice (phantoms, initialisation, data order) derives from --seed. The settings
were chosen on seed 0's runs; other seeds check whether they hold on other phantoms. The
study preset runs the same stages at 128 px, with 5 seeds and both multi-cycleGANs.
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

from configs import common as config_defaults
from data_prep import errors
from xrayjax import logging as runlog
from xrayjax.tools import ablation as ablation_lib


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big each stage is; one per preset."""

    name: str
    image_size: int
    seeds: int  # classifier runs per arm
    synthetic_per_class: int  # N: the ablation adds N and 2N per class
    ceiling: bool  # the natural-rich arm (as many natural images as natural + N per class)
    classifier: dict[str, Any]  # config fields of every classifier run (ablation and controls)
    control_steps: dict[str, int]  # per positive control (CONTROLS): it trains this long
    segmenter: dict[str, Any]
    gan: dict[str, Any]  # config fields of the per-class CycleGANs
    multi_gan: dict[str, Any]  # ... and of the multi-cycleGAN(s)
    per_class_gans: bool  # also the thesis's per-class CycleGANs, as a control arm
    body_parts: tuple[str, ...]  # one multi-cycleGAN per body part
    eval_images: int  # images per domain in GAN evaluation
    # GANs train on random crops of images enlarged by 9/8 (the reference CycleGAN's 286 -> 256)
    # when True; when False on whole images at the size they are evaluated at (flips only).
    zoomed_gan_crops: bool


# Batch 1, as the thesis and the reference CycleGAN: at the same cost, batch 1 makes ~3x as many
# updates as batch 4 here, and translated as well (KID, anatomy and labels on the instruments).
_GAN = {
    "model.features": 16,
    "model.num_blocks": 4,
    "model.disc_features": 16,
    "model.dropout_rate": 0.2,
    "global_batch": 1,
    "pool_size": 50,
    "total_steps": 1000,
    "optim.constant_epochs": 1,  # an epoch (one pass over the largest domain) outlasts the run
    "workers": 0,
    "log_every": 50,
    "checkpoint_every": 500,
    "sample_every": 500,
    "keep_checkpoints": 1,
}


def thesis_schedule(fields: dict[str, Any], total_steps: int) -> dict[str, Any]:
    """GAN fields whose run of `total_steps` keeps the configs' thesis schedule (30 epochs, the
    rate constant for 10, then decaying to 0), scaled down."""
    thesis = config_defaults.gan_config()
    per_epoch = total_steps // thesis.num_epochs
    if per_epoch < 1:
        raise ValueError(f"{total_steps} steps cannot hold {thesis.num_epochs} epochs")
    total = per_epoch * thesis.num_epochs
    return {
        **fields,
        "total_steps": total,
        "steps_per_epoch": per_epoch,
        "optim.constant_epochs": thesis.optim.constant_epochs,
        "checkpoint_every": total // 2,
        "sample_every": total // 2,
    }


DEMO = Scale(
    name="demo",
    image_size=64,
    seeds=1,  # the study runs 5 per arm; the demo's 20 minutes hold one
    synthetic_per_class=300,
    ceiling=False,
    classifier={
        "model.width": 16,
        "model.num_modules": 4,
        "global_batch": 32,
        "total_steps": 300,
        "steps_per_epoch": 100,  # three test evaluations: the convergence curve
        "optim.lr": 1e-3,
        "workers": 0,
        "log_every": 25,
        "checkpoint_every": 300,
        "keep_checkpoints": 1,
        "bootstrap_resamples": 1000,
    },
    # The natural style's gap detector appears after a plateau of 300-600 steps (seed-dependent);
    # the clean style's within 200, but its decisions are calibrated (accuracy at 0.5, which label
    # preservation counts) only later.
    control_steps={"control_natural": 800, "control_clean": 300},
    segmenter={
        "model.features": 16,
        "model.num_blocks": 2,
        "global_batch": 16,
        "total_steps": 500,
        "workers": 0,
        "log_every": 50,
        "checkpoint_every": 500,
        "keep_checkpoints": 1,
    },
    # Long enough for G_BA (clean style from the natural one), with the learning rate decaying
    # over the last two thirds as in the thesis: on seed 0 (2026-12-02), G_BA's anatomy Dice
    # 0.695 -> 0.768 and KID x1000 1431 -> 1057 against 1000 steps at a constant rate
    # (docs/results.md).
    gan=thesis_schedule(_GAN, 2000),
    # It trains in a second process beside the instruments, CycleGAN and ablation: longer. On
    # seed 0 (2026-12-02) the thesis schedule over 1600 steps gave eq. 66 Dice 0.727 against
    # 0.740 for this constant rate, and cost 4 more minutes.
    multi_gan={**_GAN, "total_steps": 1200, "checkpoint_every": 600, "sample_every": 600},
    per_class_gans=False,
    body_parts=("forearm",),
    eval_images=200,
    # Evaluation translates whole images at image_size, so crops of a 9/8 enlargement train the
    # GANs on bones 12.5 % wider than the ones they are measured on. Trained at the evaluated
    # scale, on 400 phantoms of a validation world: G_BA's anatomy Dice 0.763 -> 0.856 and
    # 0.733 -> 0.858 (CycleGANs of the worlds of seeds 0 and 1; the collimation strips it used
    # to outline as bone vanished), eq. 66's Dice 0.716 -> 0.821 (seed 0; docs/results.md).
    zoomed_gan_crops=False,
)
# The same networks at 128 px, 5 seeds per arm, the ceiling arm and both multi-cycleGANs, sized
# to 2 hours on 2 CPU cores from steps measured at 128 px beside the multi-cycleGAN (classifier
# 0.59 s, multi-cycleGAN 2.5 s; docs/results.md). At 128 px the natural style's gap detector
# appears within 200 steps.
STUDY = dataclasses.replace(
    DEMO,
    name="study",
    image_size=128,
    seeds=5,
    ceiling=True,
    classifier={**DEMO.classifier, "total_steps": 200, "checkpoint_every": 200},
    control_steps={"control_natural": 400, "control_clean": 300},
    gan=_GAN,  # the GANs as the study ran them (docs/results.md)
    multi_gan={**_GAN, "total_steps": 800, "checkpoint_every": 400, "sample_every": 400},
    body_parts=("forearm", "wrist"),
    zoomed_gan_crops=True,  # as the study ran
)  # fmt: skip
# The demo plus the thesis's per-class CycleGAN pair (one per class), as a control arm.
PER_CLASS = dataclasses.replace(DEMO, name="perclass", per_class_gans=True)
# Every stage in a minute or two, for tests of the orchestration: the numbers mean nothing.
SMOKE = dataclasses.replace(
    DEMO,
    name="smoke",
    image_size=32,
    synthetic_per_class=8,
    classifier={**DEMO.classifier, "model.width": 4, "model.num_modules": 2, "global_batch": 8,
                "total_steps": 4, "checkpoint_every": 4, "bootstrap_resamples": 50},
    control_steps={"control_natural": 4, "control_clean": 4},
    segmenter={**DEMO.segmenter, "model.features": 4, "model.num_blocks": 1, "global_batch": 8,
               "total_steps": 4, "checkpoint_every": 4},
    gan={**DEMO.gan, "model.features": 4, "model.num_blocks": 1, "model.disc_features": 4,
         "pool_size": 4, "total_steps": 4, "checkpoint_every": 4, "sample_every": 4},
    multi_gan={**DEMO.multi_gan, "model.features": 4, "model.num_blocks": 1,
               "model.disc_features": 4, "pool_size": 4, "total_steps": 3, "checkpoint_every": 3,
               "sample_every": 3},
    eval_images=16,
)  # fmt: skip
PRESETS = {"demo": DEMO, "perclass": PER_CLASS, "study": STUDY, "smoke": SMOKE}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the pipeline: `run(workdir)` makes what `done(workdir)` checks for.

    A background stage runs in a second process beside the stages after it (its output goes to
    WORKDIR/logs/<name>.log): on two cores, two jobs together finish sooner than one after
    the other. A stage waits for the background stages it `needs` before it starts.
    """

    name: str
    description: str
    run: Callable[[pathlib.Path], None]
    done: Callable[[pathlib.Path], bool]
    background: bool = False
    needs: tuple[str, ...] = ()


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
            **fields,
        },
    )


def _instruments(workdir: pathlib.Path) -> None:
    from xrayjax.trainers import classifier, segmenter

    scale, _ = _settings(workdir)
    for k, (name, (train, test, clahe)) in enumerate(CONTROLS.items()):
        if (workdir / name / "eval.json").exists():
            continue
        steps = scale.control_steps[name]
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
                "steps_per_epoch": steps // 3,
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
                # Trained at the scale it measures (configs/segmenter_forearm.py says why).
                "load_size": size,
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
            "load_size": size + size // 8 if scale.zoomed_gan_crops else size,
            "seed": _seed(workdir, seed_offset),
            "eval.max_images": scale.eval_images,
        },
    )


# The CycleGANs: one on both classes translates for the ablation; the thesis's per-class pair
# (one per class) runs in presets with `per_class_gans`, as a control arm.
CYCLEGAN_CLASSES = ("both", "normal", "abnormal")


def _cyclegan_classes(workdir: pathlib.Path) -> tuple[str, ...]:
    scale, _ = _settings(workdir)
    return CYCLEGAN_CLASSES if scale.per_class_gans else CYCLEGAN_CLASSES[:1]


def _cyclegan_run(cls: str) -> str:
    return "cyclegan" if cls == "both" else f"cyclegan_{cls}"


def _translated_name(cls: str) -> str:
    return "translated" if cls == "both" else f"translated_{cls}"


def _cyclegan_config(workdir: pathlib.Path, cls: str):
    """A CycleGAN's config (thesis 3.2.2): cls=both, or one class as in the thesis. The
    per-class pair shares its seed, so the two start alike and see their data in one order."""
    return _gan_config(workdir, "cyclegan_forearm", f",cls={cls}", 1 + (cls != "both"))


def _gan_done(run: str) -> Callable[[pathlib.Path], bool]:
    def done(workdir: pathlib.Path) -> bool:
        from xrayjax import checkpoint

        path = workdir / run
        if not (path / "checkpoints").exists() or not (path / "config.json").exists():
            return False
        steps = json.loads((path / "config.json").read_text())["total_steps"]
        return checkpoint.Checkpointer(path, 1).latest_step() == steps

    return done


def _train_cyclegans(workdir: pathlib.Path) -> None:
    from xrayjax.trainers import gan

    for cls in _cyclegan_classes(workdir):
        if not _gan_done(_cyclegan_run(cls))(workdir):
            gan.train(_cyclegan_config(workdir, cls), workdir / _cyclegan_run(cls))


def _cyclegans_done(workdir: pathlib.Path) -> bool:
    return all(_gan_done(_cyclegan_run(c))(workdir) for c in _cyclegan_classes(workdir))


def _translate(workdir: pathlib.Path) -> None:
    from data_prep import builder
    from xrayjax import inference

    for cls in _cyclegan_classes(workdir):
        name = _translated_name(cls)
        if builder.dataset_exists(_data_dir(workdir), name):
            continue
        inference.translate(
            _cyclegan_config(workdir, cls),
            workdir / _cyclegan_run(cls),
            source="phantom_forearm_clean:train",
            from_domain="B",
            to_domain="A",
            num=0,
            output=name,
            data_dir=_data_dir(workdir),
        )


def _translated(workdir: pathlib.Path) -> bool:
    from data_prep import builder

    names = [_translated_name(cls) for cls in _cyclegan_classes(workdir)]
    return all(builder.dataset_exists(_data_dir(workdir), name) for name in names)


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
    translated = ("translated:train",)
    arms = [
        ablation_lib.Arm("natural", "natural"),
        ablation_lib.Arm(f"translated{n}", "translated", n, translated),
        ablation_lib.Arm(f"translated{2 * n}", "translated", 2 * n, translated),
        ablation_lib.Arm(f"untranslated{n}", "untranslated", n, ("phantom_forearm_clean:train",)),
    ]
    if scale.ceiling:
        extra = ("phantom_forearm_radiograph:extra",)
        arms.append(ablation_lib.Arm(f"ceiling{n}", "ceiling", n, extra, clahe=True))
    if scale.per_class_gans:
        per_class = ("translated_normal:train", "translated_abnormal:train")
        arms.append(ablation_lib.Arm(f"perclass{n}", "translated_per_class", n, per_class))
    return arms


def _ablation(workdir: pathlib.Path) -> None:
    scale, _ = _settings(workdir)
    config = _classifier_config(workdir, {"seed": _seed(workdir, 200)})
    ablation_lib.run_arms(config, ablation_arms(scale), scale.seeds, workdir / "ablation")


# ----- evaluation, report -------------------------------------------------------------------


def _evaluated_runs(workdir: pathlib.Path) -> list[tuple[str, Any]]:
    """(run folder, its config) of every GAN the evaluate stage measures."""
    runs = [(_cyclegan_run(c), _cyclegan_config(workdir, c)) for c in _cyclegan_classes(workdir)]
    multi = _multi_runs(workdir)
    return runs + [
        (run, _gan_config(workdir, module, seed_offset=3 + k))
        for k, (run, module) in enumerate(multi)
    ]


def _evaluate(workdir: pathlib.Path) -> None:
    from xrayjax import evaluate

    for run, config in _evaluated_runs(workdir):
        if not (workdir / run / "eval.json").exists():
            evaluate.evaluate(config, workdir / run)


def _evaluated(workdir: pathlib.Path) -> bool:
    return all((workdir / run / "eval.json").exists() for run, _ in _evaluated_runs(workdir))


def _geometry(workdir: pathlib.Path) -> None:
    from xrayjax.evaluators import figures
    from xrayjax.tools import phantoms

    out = workdir / "geometry"
    results = {}
    for part in ("forearm", "wrist"):
        r = phantoms.evaluate_on_phantoms(part, num=200, seed=_seed(workdir, 7), image_size=256)
        results[part] = {k: v for k, v in r.items() if not isinstance(v, list)}
        errors = [e for e in r["errors_deg"] if e is not None]
        runlog.save_png(
            out / f"errors_{part}.png", figures.chart_image(figures.error_histogram(errors))
        )
    runlog.write_json(out / "radial_inclination.json", results)


def _report(workdir: pathlib.Path) -> None:
    from xrayjax.tools import report

    report.write_demo_report(workdir)


STAGES = (
    Stage(
        "prepare",
        "render the phantom world (natural = radiograph style, synthetic = clean renders)",
        _prepare,
        _prepared,
    ),
    Stage(
        "multicyclegan",
        "multi-cycleGAN natural ↔ synthetic ↔ mask (in a second process)",
        _multi_gans,
        _multi_done,
        background=True,
    ),
    Stage(
        "instruments",
        "positive-control classifiers (each style) and the supervised bone segmenter",
        _instruments,
        _instruments_done,
    ),
    Stage(
        "cyclegan",
        "CycleGAN natural ↔ synthetic forearms (perclass: also one per class, as the thesis)",
        _train_cyclegans,
        _cyclegans_done,
    ),
    Stage(
        "translate",
        "translate every synthetic render with G_AB (perclass: also with its class's)",
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
        "evaluate",
        "translation quality, segmentation (eqs. 66, 67, baseline), radial inclination",
        _evaluate,
        _evaluated,
        needs=("multicyclegan",),
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
        raise errors.InputError(
            f"unknown stage(s) {', '.join(unknown)}; the stages are: "
            + ", ".join(stage.name for stage in STAGES)
        )


def start(workdir: pathlib.Path, preset: str = "demo", seed: int = 0) -> None:
    """Record the workdir's preset and seed, or refuse a workdir started with other ones."""
    if preset not in PRESETS:
        raise errors.InputError(f"unknown preset {preset!r}; the presets are: {', '.join(PRESETS)}")
    path = workdir / "run.json"
    if path.exists():
        info = json.loads(path.read_text())
        if (info["preset"], int(info["seed"])) != (preset, seed):
            raise errors.InputError(
                f"{workdir} holds a run with --preset {info['preset']} --seed {info['seed']}; "
                f"use another --workdir for --preset {preset} --seed {seed}"
            )
        return
    workdir.mkdir(parents=True, exist_ok=True)
    runlog.write_json(path, {"preset": preset, "seed": seed})


def _record_time(workdir: pathlib.Path, name: str, seconds: float) -> dict[str, float]:
    """Add a stage's seconds to stage_times.json (locked: a background stage writes too)."""
    import fcntl

    path = workdir / "stage_times.json"
    with open(workdir / ".stage_times.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        times = json.loads(path.read_text()) if path.exists() else {}
        times[name] = round(seconds, 1)
        runlog.write_json(path, times)
    return times


def _die_with_parent() -> None:
    """In the child: end when the demo's process ends, however it ends (Linux)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _launch(workdir: pathlib.Path, stage: Stage, preset: str, seed: int):
    """Start a background stage in its own process; returns (process, its log path)."""
    import subprocess

    log = workdir / "logs" / f"{stage.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "xrayjax.tools.demo", "--workdir", str(workdir)]
    command += ["--only", stage.name, "--preset", preset, "--seed", str(seed)]
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return process, log


def _wait(name: str, pending: dict) -> None:
    """Wait for a background stage; RuntimeError naming its log when it failed."""
    process, log = pending.pop(name)
    print(f"    waiting for {name} (log: {log})", flush=True)
    if process.wait() != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"stage {name} failed (exit {process.returncode}); see {log}:\n{tail}")
    print(f"    {name} finished", flush=True)


def run(
    workdir: pathlib.Path, only: list[str] | None = None, preset: str = "demo", seed: int = 0
) -> dict[str, float]:
    """Run every stage not yet done; returns (and records) each stage's seconds.

    Background stages run in a second process only when every stage runs (no `only`).
    """
    check_stage_names(only or [])
    start(workdir, preset, seed)
    times_path = workdir / "stage_times.json"
    pending: dict = {}
    try:
        for i, stage in enumerate(STAGES, 1):
            if only and stage.name not in only:
                continue
            for name in stage.needs:
                if name in pending:
                    _wait(name, pending)
            header = f"[{i}/{len(STAGES)}] {stage.name}: {stage.description}"
            if stage.done(workdir):
                print(f"{header} — already done, skipped", flush=True)
                continue
            if stage.background and not only:
                pending[stage.name] = _launch(workdir, stage, preset, seed)
                print(f"{header} — started beside the next stages", flush=True)
                continue
            print(header, flush=True)
            begin = time.perf_counter()
            stage.run(workdir)
            seconds = time.perf_counter() - begin
            _record_time(workdir, stage.name, seconds)
            print(f"    {stage.name} took {seconds:.0f} s", flush=True)
        for name in list(pending):
            _wait(name, pending)
    finally:
        for process, _ in pending.values():  # an error or an interrupt: stop what still runs
            process.terminate()
            process.wait()
    return json.loads(times_path.read_text()) if times_path.exists() else {}


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(
        prog="python -m xrayjax.tools.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", default="runs/demo", help="a local folder")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0, help="every random choice derives from it")
    parser.add_argument("--only", help="comma-separated stage names to run (default: all)")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    try:
        if "://" in args.workdir:
            # Its stages share files through locks and a second process: local disk only.
            raise errors.InputError(
                f"--workdir {args.workdir}: the demo runs on a local folder; train single "
                "configs with python -m xrayjax.main to use cloud storage"
            )
        args.workdir = pathlib.Path(args.workdir)
        check_stage_names(only or [])
        if args.seed < 0:
            raise errors.InputError(f"--seed must be 0 or more, got {args.seed}")
        start(args.workdir, args.preset, args.seed)
    except errors.InputError as err:
        parser.error(str(err))
    flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
    from xrayjax import parallel

    parallel.enable_compilation_cache()
    begin = time.perf_counter()
    run(args.workdir, only, args.preset, args.seed)
    print(f"demo finished in {time.perf_counter() - begin:.0f} s; see {args.workdir / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
