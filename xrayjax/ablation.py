"""The synthetic-augmentation ablation (thesis 4.2, Table 2) with repeats and error bars.

    python -m xrayjax.ablation --config configs/classifier_forearm.py \
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
import json
import math
import pathlib

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from xrayjax import logging as runlog
from xrayjax import parallel

# Thesis Table 2 (best run of each setting) and the std of accuracy over its 5 repeats.
THESIS_TABLE2 = {
    0: {"sensitivity": 0.623, "specificity": 0.693, "accuracy": 0.658, "accuracy_std": 0.03},
    5000: {"sensitivity": 0.629, "specificity": 0.847, "accuracy": 0.787, "accuracy_std": 0.004},
    10000: {"sensitivity": 0.675, "specificity": 0.860, "accuracy": 0.767, "accuracy_std": 0.003},
}
METRICS = ("sensitivity", "specificity", "accuracy", "roc_auc", "study_kappa")
BEST = ("sensitivity", "specificity", "accuracy")
THESIS = ("sensitivity", "specificity", "accuracy", "accuracy_std")


def run_name(per_class: int, seed: int) -> str:
    """The run's folder name under the ablation workdir."""
    return f"syn{per_class}_seed{seed}"


def finished_report(run_dir: pathlib.Path) -> dict | None:
    """The run's eval.json when it reports the run's last step, else None."""
    path = run_dir / "eval.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    if report.get("total_steps") is None or report["step"] != report["total_steps"]:
        return None
    return report


def run_config(config: ml_collections.ConfigDict, per_class: int, seed: int):
    """A copy of `config` for one (setting, seed) pair."""
    config = config.copy_and_resolve_references()
    config.synthetic.per_class = int(per_class)
    config.seed = int(config.seed + seed)
    return config


def run_all(
    config: ml_collections.ConfigDict,
    settings: list[int],
    num_seeds: int,
    workdir: str | pathlib.Path,
) -> dict[int, list[tuple[int, dict]]]:
    """Train (or skip, or resume) every run; {setting: [(seed, eval report), ...]}."""
    from xrayjax.trainers import classifier

    workdir = pathlib.Path(workdir)
    if num_seeds < 1 or not settings:
        raise ValueError("the ablation needs at least one --synthetic setting and --seeds ≥ 1")
    if any(n < 0 for n in settings):
        raise ValueError(f"--synthetic values must be ≥ 0, got {settings}")
    pairs = [(n, s) for n in settings for s in range(num_seeds)]
    results: dict[int, list[tuple[int, dict]]] = {n: [] for n in settings}
    for i, (per_class, seed) in enumerate(pairs, 1):
        run_dir = workdir / run_name(per_class, seed)
        report = finished_report(run_dir)
        if jax.process_index() == 0:
            status = "finished, skipped" if report else "training"
            print(f"[{i}/{len(pairs)}] {run_dir.name}: {status}", flush=True)
        if report is None:
            classifier.train(run_config(config, per_class, seed), run_dir)
            report = finished_report(run_dir)
            if report is None:
                raise RuntimeError(f"{run_dir} finished without a final eval.json")
        results[per_class].append((seed, report))
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1) of the finite values; NaN where undefined."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    mean = float(finite.mean()) if finite.size else math.nan
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return mean, std


def summarise(results: dict[int, list[tuple[int, dict]]]) -> list[dict]:
    """One row per setting: runs, mean/std per metric, the best run's values, the thesis's."""
    rows = []
    for per_class, runs in results.items():
        row: dict = {"synthetic_per_class": per_class, "runs": len(runs)}
        row["seeds"] = " ".join(str(seed) for seed, _ in runs)
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(
                [report.get(metric) for _, report in runs]
            )
        # Best by accuracy; the first seed wins a tie.
        best_seed, best = max(runs, key=lambda run: (run[1]["accuracy"], -run[0]))
        row["best_seed"] = best_seed
        for metric in BEST:
            row[f"best_{metric}"] = best[metric]
        thesis = THESIS_TABLE2.get(per_class, {})
        for key in THESIS:
            row[f"thesis_{key}"] = thesis.get(key, math.nan)
        rows.append(row)
    return rows


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(rows: list[dict], title: str) -> str:
    """table.md's text."""
    with_kappa = any(math.isfinite(row["study_kappa_mean"]) for row in rows)
    shown = [m for m in METRICS if m != "study_kappa" or with_kappa]
    names = {"sensitivity": "sens.", "specificity": "spec.", "accuracy": "acc.",
             "roc_auc": "ROC AUC", "study_kappa": "study κ"}  # fmt: skip
    header = ["synthetic / class", "runs", *(f"{names[m]} mean ± std" for m in shown)]
    header += ["best seed", *(f"best {names[m]}" for m in BEST)]
    header += ["thesis sens.", "thesis spec.", "thesis acc.", "thesis std acc."]
    lines = [
        f"# {title}",
        "",
        "Test-set metrics; mean ± sample standard deviation over seeds. Best = the run with the "
        "highest test accuracy (the thesis's Table 2 reports best runs; its last column is the "
        "std of accuracy over its 5 repeats). Thesis numbers are for MURA forearms.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [f"{row['synthetic_per_class']:,}", str(row["runs"])]
        cells += [f"{_fmt(row[f'{m}_mean'])} ± {_fmt(row[f'{m}_std'])}" for m in shown]
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


def run_ablation(
    config: ml_collections.ConfigDict,
    settings: list[int],
    num_seeds: int,
    workdir: str | pathlib.Path,
) -> list[dict]:
    """Every run, then the tables; returns the table rows."""
    rows = summarise(run_all(config, settings, num_seeds, workdir))
    title = f"Synthetic-augmentation ablation: {config.natural.train} → {config.natural.test}"
    write_tables(rows, workdir, title)
    if jax.process_index() == 0:
        print(markdown_table(rows, title), flush=True)
    return rows


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
            raise ValueError("the ablation runs classifier configs (config.trainer='classifier')")
        run_ablation(FLAGS.config, [int(n) for n in FLAGS.synthetic], FLAGS.seeds, FLAGS.workdir)

    runlog.run_cli(body, quiet_libraries=not FLAGS["verbosity"].present)


if __name__ == "__main__":
    app.run(main)
