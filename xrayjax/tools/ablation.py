"""The synthetic-augmentation ablation (thesis 4.2, Table 2) with repeats and error bars.

    python -m xrayjax.tools.ablation --config configs/classifier_forearm.py \
        --synthetic 0,5000,10000 --seeds 5 --workdir runs/ablation [--config.field=value ...]

Trains every (setting, seed) pair in `workdir/syn{N}_seed{S}`, one after another in this
process, with `synthetic.per_class = N` and `seed = config.seed + S`. A run whose eval.json
reports its last step is skipped; a half-finished run is resumed by the trainer. Then writes
`workdir/table.md` and `table.csv`: per setting, mean ± sample std over seeds of sensitivity,
specificity, accuracy, ROC AUC and (test sets with study ids) study kappa, the best run's values
(best = highest test accuracy; the thesis's Table 2 reports best runs) and the thesis's numbers.
Change a config field → use a new workdir (the workdir is the runs' identity).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from data_prep import errors
from xrayjax import logging as runlog
from xrayjax import parallel
from xrayjax.evaluators import classification, statistics

# Thesis Table 2 (best run of each setting) and the std of accuracy over its 5 repeats.
THESIS_TABLE2 = {
    0: {"sensitivity": 0.623, "specificity": 0.693, "accuracy": 0.658, "accuracy_std": 0.03},
    5000: {"sensitivity": 0.629, "specificity": 0.847, "accuracy": 0.787, "accuracy_std": 0.004},
    10000: {"sensitivity": 0.675, "specificity": 0.860, "accuracy": 0.767, "accuracy_std": 0.003},
}
METRICS = ("sensitivity", "specificity", "accuracy", "roc_auc", "study_kappa")
BEST = ("sensitivity", "specificity", "accuracy")
THESIS = ("sensitivity", "specificity", "accuracy", "accuracy_std")


KINDS = ("natural", "translated", "untranslated", "ceiling", "translated_per_class")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One training set of the ablation: the natural train split plus `per_class` added images
    of each class drawn from `datasets` (the config's synthetic datasets when empty).

    kind: natural (nothing added), translated (synthetic renders translated to the natural
    style: the thesis's arms), untranslated (clean renders as they are: does translating
    matter?), ceiling (more natural images instead: what the added images could reach at best)
    or translated_per_class (translated by one CycleGAN per class, as the thesis did).
    """

    name: str
    kind: str
    per_class: int = 0
    datasets: tuple[str, ...] = ()
    clahe: bool = False  # CLAHE on the added images: natural-style images get it, as in training

    def __post_init__(self):
        if self.kind not in KINDS:
            raise errors.InputError(
                f"arm {self.name}: kind {self.kind!r}; allowed: {', '.join(KINDS)}"
            )
        if self.per_class < 0 or (self.kind == "natural") != (self.per_class == 0):
            raise errors.InputError(
                f"arm {self.name}: a natural arm adds nothing, every other arm adds images "
                f"(per_class={self.per_class})"
            )

    def describe(self) -> str:
        """The arm as the table names it."""
        if self.kind == "natural":
            return "natural only"
        if self.kind == "ceiling":
            return f"natural-rich ceiling (+ {self.per_class:,} natural / class)"
        if self.kind == "translated_per_class":
            return f"+ {self.per_class:,} translated by per-class CycleGANs / class"
        return f"+ {self.per_class:,} {self.kind} / class"


def settings_arms(settings: list[int]) -> list[Arm]:
    """The thesis's arms: 0 (natural only) and N translated images per class, named synN."""
    return [Arm(f"syn{n}", "natural" if n == 0 else "translated", int(n)) for n in settings]


def run_name(arm: Arm, seed: int) -> str:
    """The run's folder name under the ablation workdir."""
    return f"{arm.name}_seed{seed}"


def finished_report(run_dir: pathlib.Path) -> dict | None:
    """The run's eval.json when it reports the run's last step, else None."""
    path = run_dir / "eval.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    if report.get("total_steps") is None or report["step"] != report["total_steps"]:
        return None
    return report


def run_config(config: ml_collections.ConfigDict, arm: Arm, seed: int):
    """A copy of `config` for one (arm, seed) pair."""
    config = config.copy_and_resolve_references()
    config.synthetic.per_class = int(arm.per_class)
    if arm.datasets:
        config.synthetic.datasets = tuple(arm.datasets)
    config.synthetic.clahe = bool(arm.clahe)
    config.seed = int(config.seed + seed)
    return config


def run_all(
    config: ml_collections.ConfigDict,
    arms: list[Arm],
    num_seeds: int,
    workdir: str | pathlib.Path,
) -> dict[str, list[tuple[int, dict]]]:
    """Train (or skip, or resume) every run; {arm name: [(seed, eval report), ...]}."""
    from xrayjax.data.training_set import training_set
    from xrayjax.trainers import classifier

    workdir = pathlib.Path(workdir)
    if num_seeds < 1 or not arms:
        raise errors.InputError(
            "the ablation needs at least one --synthetic setting and --seeds ≥ 1"
        )
    if len({arm.name for arm in arms}) != len(arms):
        raise errors.InputError(f"arm names repeat: {[arm.name for arm in arms]}")
    for arm in arms:  # a setting that cannot be drawn fails before anything trains
        training_set(run_config(config, arm, 0))
    pairs = [(arm, s) for arm in arms for s in range(num_seeds)]
    results: dict[str, list[tuple[int, dict]]] = {arm.name: [] for arm in arms}
    for i, (arm, seed) in enumerate(pairs, 1):
        run_dir = workdir / run_name(arm, seed)
        report = finished_report(run_dir)
        if jax.process_index() == 0:
            status = "finished, skipped" if report else "training"
            print(f"[{i}/{len(pairs)}] {run_dir.name}: {status}", flush=True)
        if report is None:
            classifier.train(run_config(config, arm, seed), run_dir)
            report = finished_report(run_dir)
            if report is None:
                raise RuntimeError(f"{run_dir} finished without a final eval.json")
        results[arm.name].append((seed, report))
    return results


def _scores(runs: list[tuple[int, dict]]) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, (N, seeds) probabilities) of runs that kept their per-image probabilities."""
    if not runs or any("probabilities" not in report for _, report in runs):
        return None
    labels = np.asarray(runs[0][1]["labels"], np.int64)
    return labels, np.stack([np.asarray(r["probabilities"], np.float64) for _, r in runs], 1)


def paired_differences(
    results: dict[str, list[tuple[int, dict]]], arms: list[Arm], resamples: int = 1000
) -> dict[str, dict | None]:
    """Per arm, ROC AUC and accuracy minus the natural arm's, paired over the seeds both ran,
    with 95 % bootstrap intervals over test images (None for the natural arm itself)."""
    natural = next((arm for arm in arms if arm.kind == "natural"), None)
    out: dict[str, dict | None] = {arm.name: None for arm in arms}
    if natural is None:
        return out
    reference = dict(results[natural.name])
    for arm in arms:
        if arm is natural:
            continue
        seeds = [seed for seed, _ in results[arm.name] if seed in reference]
        mine = _scores([(s, r) for s, r in results[arm.name] if s in seeds])
        theirs = _scores([(s, reference[s]) for s in seeds])
        if mine is None or theirs is None or not np.array_equal(mine[0], theirs[0]):
            continue
        labels = mine[0]

        def accuracy_of(y, p):
            return classification.accuracy(y, (p > classification.THRESHOLD).astype(np.int64))

        out[arm.name] = {"seeds": seeds}
        for metric, fn in (("roc_auc", classification.roc_auc), ("accuracy", accuracy_of)):
            out[arm.name][metric] = classification.paired_difference(
                labels, mine[1], theirs[1], fn, num_resamples=resamples, seed=0
            )
    return out


def summarise(results: dict[str, list[tuple[int, dict]]], arms: list[Arm]) -> list[dict]:
    """One row per arm: runs, mean/std per metric, the best run's values, the thesis's numbers
    and, beside the natural arm, the paired difference of ROC AUC and accuracy."""
    differences = paired_differences(results, arms)
    rows = []
    for arm in arms:
        runs = results[arm.name]
        row: dict = {
            "arm": arm.name,
            "kind": arm.kind,
            "training_data": arm.describe(),
            "synthetic_per_class": arm.per_class,
            "runs": len(runs),
        }
        row["seeds"] = " ".join(str(seed) for seed, _ in runs)
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = statistics.mean_std(
                [report.get(metric) for _, report in runs], ddof=1
            )
        # Best by accuracy; the first seed wins a tie.
        best_seed, best = max(runs, key=lambda run: (run[1]["accuracy"], -run[0]))
        row["best_seed"] = best_seed
        for metric in BEST + ("roc_auc",):
            row[f"best_{metric}"] = best[metric]
        diff = differences[arm.name]
        for metric in ("roc_auc", "accuracy"):
            d = diff[metric] if diff else {"difference": math.nan, "ci": [math.nan, math.nan]}
            row[f"diff_{metric}"] = d["difference"]
            row[f"diff_{metric}_ci_low"], row[f"diff_{metric}_ci_high"] = d["ci"]
        thesis = (
            THESIS_TABLE2.get(arm.per_class, {}) if arm.kind in ("natural", "translated") else {}
        )
        for key in THESIS:
            row[f"thesis_{key}"] = thesis.get(key, math.nan)
        rows.append(row)
    return rows


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _signed(value: float, low: float, high: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def markdown_table(rows: list[dict], title: str) -> str:
    """table.md's text."""
    with_kappa = any(math.isfinite(row["study_kappa_mean"]) for row in rows)
    shown = [m for m in METRICS if m != "study_kappa" or with_kappa]
    names = {"sensitivity": "sens.", "specificity": "spec.", "accuracy": "acc.",
             "roc_auc": "ROC AUC", "study_kappa": "study κ"}  # fmt: skip
    header = ["training data", "runs", *(f"{names[m]} mean ± std" for m in shown)]
    header += ["ROC AUC − natural only [95 % CI]", "best seed", *(f"best {names[m]}" for m in BEST)]
    header += ["thesis sens.", "thesis spec.", "thesis acc.", "thesis std acc."]
    lines = [
        f"# {title}",
        "",
        "Test-set metrics; mean ± sample standard deviation over seeds. The difference to "
        "natural only is paired: the mean over seeds of (this arm's ROC AUC − the natural arm's "
        "with the same seed), with a 95 % percentile-bootstrap interval over test images (each "
        "resample shared by every seed and both arms). Best = the run with the highest test "
        "accuracy (the thesis's Table 2 reports best runs; its last column is the std of "
        "accuracy over its 5 repeats). Thesis numbers are for MURA forearms.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [row["training_data"], str(row["runs"])]
        cells += [f"{_fmt(row[f'{m}_mean'])} ± {_fmt(row[f'{m}_std'])}" for m in shown]
        cells.append(
            _signed(row["diff_roc_auc"], row["diff_roc_auc_ci_low"], row["diff_roc_auc_ci_high"])
        )
        cells += [str(row["best_seed"]), *(_fmt(row[f"best_{m}"]) for m in BEST)]
        cells += [_fmt(row[f"thesis_{k}"]) for k in THESIS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict], workdir: str | pathlib.Path, title: str) -> None:
    """table.md and table.csv (process 0); undefined numbers are '–' and empty, respectively."""
    if jax.process_index() != 0:
        return
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "table.md").write_text(markdown_table(rows, title))
    with (workdir / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: "" if isinstance(v, float) and not math.isfinite(v) else v
                    for k, v in row.items()
                }
            )
    print(f"wrote {workdir / 'table.md'} and table.csv", flush=True)


def run_arms(
    config: ml_collections.ConfigDict,
    arms: list[Arm],
    num_seeds: int,
    workdir: str | pathlib.Path,
) -> list[dict]:
    """Every run of every arm, then the tables; returns the table rows."""
    rows = summarise(run_all(config, arms, num_seeds, workdir), arms)
    title = f"Synthetic-augmentation ablation: {config.natural.train} → {config.natural.test}"
    write_tables(rows, workdir, title)
    if jax.process_index() == 0:
        print(markdown_table(rows, title), flush=True)
    return rows


def run_ablation(
    config: ml_collections.ConfigDict,
    settings: list[int],
    num_seeds: int,
    workdir: str | pathlib.Path,
) -> list[dict]:
    """The thesis's arms (`settings`: synthetic images per class, 0 = natural only)."""
    if any(n < 0 for n in settings):
        raise errors.InputError(f"--synthetic values must be ≥ 0, got {settings}")
    return run_arms(config, settings_arms(settings), num_seeds, workdir)


config_flags.DEFINE_config_file("config", None, "classifier config file", lock_config=True)
flags.DEFINE_string("workdir", None, "ablation folder: one subfolder per run, plus the tables")
flags.DEFINE_list("synthetic", ["0", "5000", "10000"], "synthetic images per class, per setting")
flags.DEFINE_integer("seeds", 5, "repeats per setting (seed offsets 0 .. seeds-1)")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    """absl main."""
    del argv
    parallel.enable_compilation_cache()
    parallel.initialize_distributed()

    def body():
        if FLAGS.config.get("trainer") != "classifier":
            raise errors.InputError(
                "the ablation runs classifier configs (config.trainer='classifier')"
            )
        try:
            settings = [int(n) for n in FLAGS.synthetic]
        except ValueError:
            raise errors.InputError(
                f"--synthetic takes whole numbers, got {','.join(FLAGS.synthetic)}"
            ) from None
        run_ablation(FLAGS.config, settings, FLAGS.seeds, FLAGS.workdir)

    runlog.run_cli(body, quiet_libraries=not FLAGS["verbosity"].present)


if __name__ == "__main__":
    app.run(main, flags_parser=runlog.parse_flags)
