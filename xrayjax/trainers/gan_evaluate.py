"""`--mode evaluate` on a GAN workdir: the numbers the thesis left to the eye (issue 5, item 7).

On each domain's evaluation split (`domains.X.eval_split`; the first `eval.max_images` images),
for every ordered pair IJ (G_IJ translates J → I, THESIS_SPEC naming) and source images j of J:
- cycle reconstruction: L1 and SSIM between j and G_JI(G_IJ(j));
- anatomy preservation, where J's records carry bone masks: Dice between j's mask and the Otsu
  bone of G_IJ(j), beside the same Dice of j itself (the reference ceiling);
- with a classifier trained by this project (`eval.classifier_workdir`): KID on its penultimate
  features between real I images and G_IJ(j), and between real I images and j (the reference
  point); label preservation of G_IJ(j) against j's labels 0/1 (image targets, not masks).
Three-domain configs (A natural, B synthetic, C masks) also segment A by eq. 66, G_CB(G_BA(a)),
and eq. 67, G_CB(a), thresholded at `eval.threshold`: Dice, IoU and HD95 against A's masks
where they exist, and radial inclination on the ground-truth masks and on each equation's masks
(3×3 median filter first, as the geometry module's author measured to help), against the
dataset's `radial_inclination_deg` (phantoms) or else the angle measured on the ground truth.

Writes workdir/eval.json (NaN and ±inf as null) and PNG figures under workdir/eval/. Each domain
is passed once, in global batches over every device (inference's machinery); process 0 writes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import pathlib
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xrayjax import checkpoint, inference, parallel
from xrayjax.data import sources, transforms
from xrayjax.evaluators import figures, geometry, segmentation, translation
from xrayjax.trainers import classifier as classifier_trainer
from xrayjax.trainers import gan as gan_trainer

FIGURE_IMAGES = 8  # rows per figure
MEDIAN_FILTER = 3  # px: predicted masks are median-filtered before measuring their geometry
EQUATIONS = {"eq66": "G_CB(G_BA(a))", "eq67": "G_CB(a)"}  # thesis eqs. 66 and 67
NO_CLASSIFIER = (
    "config.eval.classifier_workdir is empty: KID and label preservation need a classifier "
    "trained by this project (configs/classifier_forearm.py) for features and predictions"
)


@dataclasses.dataclass
class _Domain:
    """One domain's evaluated records and what they know about themselves."""

    name: str
    spec: ml_collections.ConfigDict
    source: str  # 'dataset:split'
    table: sources.RecordTable
    labels: np.ndarray | None  # int64 per record (−1 unlabelled); None: no label feature
    masks: list[np.ndarray | None]  # uint8 {0, 1} (S, S) ground truth, None where unknown
    inclination: np.ndarray | None  # true radial inclination (deg) per record; None: unknown

    @property
    def is_mask_domain(self) -> bool:
        return self.spec.image_key == "mask"


def _open_domain(config, name: str, max_images: int) -> _Domain:
    spec = config.domains[name]
    split = spec.get("eval_split", "test")
    labels = list(spec.labels) if spec.labels else None
    table = sources.open_table(spec.dataset, split, config.data_dir or None, labels)
    if max_images:
        table = table.subset(np.arange(min(max_images, len(table))))
    features = table.sources[0].dataset_info.features
    size = config.image_size
    masks: list[np.ndarray | None] = [None] * len(table)
    if "mask" in features:
        for i in range(len(table)):
            record = table[i]
            if bool(record.get("has_mask", True)):
                mask = transforms.resize(transforms.decode_png(record["mask"]), size, nearest=True)
                masks[i] = (mask > 0).astype(np.uint8)
    return _Domain(
        name,
        spec,
        f"{spec.dataset}:{split}",
        table,
        table.column("label").astype(np.int64) if "label" in features else None,
        masks,
        (
            table.column("radial_inclination_deg").astype(np.float64)
            if "radial_inclination_deg" in features
            else None
        ),
    )


@dataclasses.dataclass
class _Classifier:
    """A trained classifier restored from its workdir: features and P(abnormal) of images."""

    config: ml_collections.ConfigDict
    engine: Any
    state: Any
    step: int
    workdir: pathlib.Path

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

    def describe(self) -> dict:
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


def load_classifier(workdir: str | pathlib.Path, mesh) -> _Classifier:
    """The classifier in `workdir` (its config.json and latest checkpoint), replicated on mesh."""
    workdir = pathlib.Path(workdir).expanduser()
    path = workdir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"eval.classifier_workdir={workdir}: no config.json there; train a classifier in it "
            "first (configs/classifier_forearm.py)"
        )
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    if config.get("trainer") != "classifier":
        raise ValueError(
            f"eval.classifier_workdir={workdir} holds a {config.get('trainer')!r} run, not a "
            "classifier"
        )
    if not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(f"eval.classifier_workdir={workdir}: no checkpoints folder")
    ckpt = checkpoint.Checkpointer(workdir, every=1 << 30)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"eval.classifier_workdir={workdir}: no checkpoint")
        engine = classifier_trainer.build_engine(config, steps_per_epoch=1)
        init = classifier_trainer.init_fn(engine, config)
        state = ckpt.restore_like(init, parallel.replicated(mesh))
    finally:
        ckpt.close()
    return _Classifier(config, engine, state, int(step), workdir)


def _is_three_domain(config) -> bool:
    return set("ABC") <= set(config.domains.keys()) and config.domains.C.image_key == "mask"


def _domain_pass(engine, gen_params, mesh, batch_size, config, domain, classifier, threshold):
    """One pass over a source domain: every translation out of it, per-image metrics, features.

    Returns lists keyed '<target>/<what>' (per image), 'features'/'probability' of the source
    images, and for domain A of a three-domain config the eq. 66/67 masks.
    """
    source = domain.name
    targets = [t for t in config.domains.keys() if t != source]
    segment = threshold is not None

    def fn(x):
        out = {}
        if classifier is not None:
            out["features"], out["probability"] = classifier.apply(x)
        for target in targets:
            fake = engine.translate(gen_params, target + source, x).astype(jnp.float32)
            out[f"{target}/translated"] = fake
            back = engine.translate(gen_params, source + target, fake).astype(jnp.float32)
            out[f"{target}/reconstructed"] = back
            if classifier is not None:
                out[f"{target}/features"], out[f"{target}/probability"] = classifier.apply(fake)
        if segment:
            out["eq66"] = engine.translate(gen_params, "CB", out["B/translated"]) > threshold
            out["eq67"] = engine.translate(gen_params, "CB", x) > threshold
        return out

    preprocess = gan_trainer.domain_preprocess(config, domain.spec, augment=False)
    acc: dict[str, list] = collections.defaultdict(list)
    for batch in inference.run_batches(domain.table, preprocess, mesh, batch_size, fn):
        x, out, indices = batch.inputs, batch.outputs, batch.indices
        acc["index"] += indices.tolist()
        acc["figure/source"] += list(x[: max(0, FIGURE_IMAGES - len(acc["figure/source"]))])
        known = [k for k, i in enumerate(indices) if domain.masks[i] is not None]
        masks = np.stack([domain.masks[indices[k]] for k in known]) if known else None
        if masks is not None:
            acc["source/anatomy"] += translation.anatomy_preservation_dice(masks, x[known])["dice"]
        for key in ("features", "probability"):
            if key in out:
                acc[key] += list(out[key])
        for key in EQUATIONS if segment else ():
            acc[key] += list(out[key][..., 0].astype(np.uint8))  # (S, S) {0, 1} each
        for target in targets:
            fake, back = out[f"{target}/translated"], out[f"{target}/reconstructed"]
            acc[f"{target}/l1"] += [
                translation.cycle_l1(a, b) for a, b in zip(x, back, strict=True)
            ]
            acc[f"{target}/ssim"] += [translation.ssim(a, b) for a, b in zip(x, back, strict=True)]
            if masks is not None:
                dice = translation.anatomy_preservation_dice(masks, fake[known])["dice"]
                acc[f"{target}/anatomy"] += dice
            room = max(0, FIGURE_IMAGES - len(acc[f"{target}/figure"]))
            acc[f"{target}/figure"] += list(fake[:room])
            for key in ("features", "probability"):
                if f"{target}/{key}" in out:
                    acc[f"{target}/{key}"] += list(out[f"{target}/{key}"])
    return acc


def _mean_std(values) -> dict:
    array = np.asarray(values, np.float64)
    if array.size == 0:
        return {"mean": math.nan, "std": math.nan}
    return {"mean": float(array.mean()), "std": float(array.std())}


def _dice_summary(values: list[float]) -> dict:
    summary = _mean_std(values)
    return {
        "dice_mean": summary["mean"],
        "dice_std": summary["std"],
        "num_images": len(values),
        "dice": values,
    }


def _kid(real, fake, untranslated) -> dict:
    sizes = {"num_real": len(real), "num_translated": len(fake)}
    if min(len(real), len(fake)) < 2:
        return {"skipped": "KID needs at least 2 images on each side", **sizes}
    real, fake, untranslated = (np.stack(v) for v in (real, fake, untranslated))
    subset = min(len(real), len(fake), len(untranslated), translation.KID_SUBSET_SIZE)
    kid = functools.partial(translation.kernel_inception_distance, subset_size=subset, seed=0)
    translated, reference = kid(real, fake), kid(real, untranslated)
    return {
        "translated": {"mean": translated[0], "std": translated[1]},
        "untranslated_source": {"mean": reference[0], "std": reference[1]},
        "subset_size": subset,
        "num_subsets": 10,
        **sizes,
    }


def _label_preservation(source: _Domain, target: _Domain, acc, pair: str, resamples: int):
    if target.is_mask_domain:
        return {"skipped": f"target domain {target.name} holds bone masks, not X-rays"}
    if source.labels is None:
        return {"skipped": f"source domain {source.name} ({source.source}) has no labels"}
    labels = source.labels[np.asarray(acc["index"], np.int64)]
    keep = np.isin(labels, (0, 1))
    if not keep.any():
        return {"skipped": f"source domain {source.name} ({source.source}) has no labels 0/1"}

    def report(probabilities):
        values = np.asarray(probabilities, np.float64)[keep]
        return translation.label_preservation(values, labels[keep], num_resamples=resamples, seed=0)

    return {
        "generator": f"G_{pair}",
        "translated": report(acc[f"{target.name}/probability"]),
        "untranslated_source": report(acc["probability"]),
    }


def _translation(config, domains, passes, classifier) -> dict:
    sections = {}
    for source, acc in passes.items():
        for target in (t for t in config.domains.keys() if t != source):
            pair = target + source
            l1, ssim = _mean_std(acc[f"{target}/l1"]), _mean_std(acc[f"{target}/ssim"])
            section: dict[str, Any] = {
                "generator": f"G_{pair}",
                "source": f"{source} ({domains[source].source})",
                "target": f"{target} ({domains[target].source})",
                "num_images": len(acc["index"]),
                "cycle": {
                    "reconstruction": f"G_{source}{target}(G_{pair}(j)) against j",
                    "l1_mean": l1["mean"],
                    "l1_std": l1["std"],
                    "ssim_mean": ssim["mean"],
                    "ssim_std": ssim["std"],
                    "l1": acc[f"{target}/l1"],
                    "ssim": acc[f"{target}/ssim"],
                },
            }
            if acc["source/anatomy"]:
                section["anatomy_preservation"] = {
                    "bone": "per-image Otsu threshold; Dice against the source mask",
                    "translated": _dice_summary(acc[f"{target}/anatomy"]),
                    "untranslated_source": _dice_summary(acc["source/anatomy"]),
                }
            else:
                reason = f"source {domains[source].source} has no bone masks"
                section["anatomy_preservation"] = {"skipped": reason}
            if classifier is None:
                section["kid"] = section["label_preservation"] = {"skipped": NO_CLASSIFIER}
            else:
                section["kid"] = {
                    "real": f"{target} ({domains[target].source})",
                    **_kid(passes[target]["features"], acc[f"{target}/features"], acc["features"]),
                }
                resamples = int(classifier.config.get("bootstrap_resamples", 1000))
                section["label_preservation"] = _label_preservation(
                    domains[source], domains[target], acc, pair, resamples
                )
            sections[pair] = section
    return sections


def _segmentation(domain: _Domain, acc, threshold: float) -> dict:
    truths = [domain.masks[i] for i in acc["index"]]
    section: dict[str, Any] = {
        "images": f"A ({domain.source})",
        "threshold": threshold,
        "equations": EQUATIONS,
        "num_images": len(truths),
        "bone_fraction_mean": {
            eq: _mean_std([m.mean() for m in acc[eq]])["mean"] for eq in EQUATIONS
        },
    }
    if any(t is not None for t in truths):
        preds = {eq: acc[eq] for eq in EQUATIONS}
        section.update(segmentation.compare_methods(preds, truths))
    else:
        section["skipped"] = f"{domain.source} has no ground-truth masks: no Dice, IoU or HD95"
    return section


def _median(mask: np.ndarray) -> np.ndarray:
    return cv2.medianBlur(np.ascontiguousarray(mask, np.uint8), MEDIAN_FILTER)


def _radial_inclination(domain: _Domain, acc) -> dict:
    indices = np.asarray(acc["index"], np.int64)
    truths = [domain.masks[i] for i in indices]
    if not any(t is not None for t in truths):
        return {"skipped": f"{domain.source} has no ground-truth masks to measure against"}
    section: dict[str, Any] = {"median_filter_px": MEDIAN_FILTER}
    known = [k for k, t in enumerate(truths) if t is not None]
    if domain.inclination is not None:
        section["truth"] = f"radial_inclination_deg of {domain.source}"
        angles = domain.inclination[indices[known]]
        section["ground_truth_masks"] = geometry.inclination_errors(
            [truths[k] for k in known], angles
        )
    else:
        section["truth"] = "measured on the ground-truth masks (the dataset gives no angle)"
        measured = []
        for k in known:
            try:
                measured.append((k, geometry.radial_inclination_deg(truths[k])))
            except ValueError:
                continue
        known, angles = [k for k, _ in measured], [a for _, a in measured]
    section["image_indices"] = indices[known].tolist()  # positions among the evaluated images
    section["num_images"] = len(known)
    for eq in EQUATIONS:
        masks = [_median(acc[eq][k]) for k in known]
        section[eq] = geometry.inclination_errors(masks, angles)
    return section


def _figures(workdir: pathlib.Path, config, passes, report) -> list[str]:
    out = workdir / "eval"
    paths = []
    for source, acc in passes.items():
        for target in (t for t in config.domains.keys() if t != source):
            pair = target + source
            paths.append(
                figures.translation_grid(
                    acc["figure/source"],
                    acc[f"{target}/figure"],
                    out / f"translation_{pair}.png",
                    titles=(f"{source} (source)", f"G_{pair}: {source} to {target}"),
                )
            )
    segmented = report.get("segmentation", {})
    if "equations" in segmented:
        acc = passes["A"]
        n = len(acc["figure/source"])
        for eq, formula in EQUATIONS.items():
            paths.append(
                figures.segmentation_grid(
                    acc["figure/source"],
                    acc[eq][:n],
                    out / f"segmentation_{eq}.png",
                    truths=acc["figure/truth"][:n],
                    titles=("A (natural)", f"eq. {eq[2:]}: {formula}"),
                )
            )
    inclination = report.get("radial_inclination", {})
    for key in ("ground_truth_masks", *EQUATIONS):
        if key in inclination:
            path = out / f"radial_inclination_errors_{key}.png"
            paths.append(figures.error_histogram(inclination[key]["errors_deg"], path))
    return [str(p.relative_to(workdir)) for p in paths]


def _json_safe(value):
    """numpy → Python; NaN and ±inf → None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _number(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _summary_lines(report: dict) -> list[str]:
    """Headline numbers of a (JSON-safe) report, one line each."""
    lines = []
    for pair, s in report["translation"].items():
        cycle = s["cycle"]
        text = f"G_{pair}: cycle L1 {_number(cycle['l1_mean'])}, SSIM {_number(cycle['ssim_mean'])}"
        if "anatomy_preservation" in s and "translated" in s["anatomy_preservation"]:
            anatomy = s["anatomy_preservation"]
            text += (
                f", anatomy Dice {_number(anatomy['translated']['dice_mean'])} (untranslated "
                f"{_number(anatomy['untranslated_source']['dice_mean'])})"
            )
        if "translated" in s["kid"]:
            kid = s["kid"]
            text += (
                f", KID {_number(kid['translated']['mean'], '.4g')} (untranslated "
                f"{_number(kid['untranslated_source']['mean'], '.4g')})"
            )
        if "translated" in s["label_preservation"]:
            accuracy = s["label_preservation"]["translated"]["accuracy"]
            text += f", labels kept {_number(accuracy)}"
        lines.append(text)
    seg = report["segmentation"]
    for eq in EQUATIONS:
        if isinstance(seg.get(eq), dict):
            lines.append(f"{eq} {EQUATIONS[eq]}: Dice {_number(seg[eq]['dice_mean'])}")
    incl = report["radial_inclination"]
    for key in ("ground_truth_masks", *EQUATIONS):
        if key in incl:
            r = incl[key]
            lines.append(
                f"radial inclination on {key}: MAE {_number(r['mae_deg'], '.2f')} deg over "
                f"{r['num_measured']} ({r['num_failures']} not measurable)"
            )
    return lines


def evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Evaluate the workdir's latest GAN checkpoint; writes eval.json and eval/*.png.

    eval.json (also returned) holds: workdir, step, settings, domains (dataset:split and counts
    per domain), features (the feature network, or why skipped), translation (per pair 'IJ':
    cycle, anatomy_preservation, kid, label_preservation), segmentation (eq66 and eq67
    reports side by side) and radial_inclination (ground_truth_masks, eq66, eq67: errors and
    failures), each `{"skipped": reason}` where it cannot apply, and figures (paths under
    the workdir). Per-image lists sit beside their means; `indices` count evaluated images.
    """
    workdir = pathlib.Path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(
            f"no checkpoint in {workdir / 'checkpoints'}: train this config in that workdir first"
        )
    settings = config.get("eval", ml_collections.ConfigDict())
    threshold = float(settings.get("threshold", 0.0))
    max_images = int(settings.get("max_images", 500))
    classifier_dir = settings.get("classifier_workdir", "")
    if max_images < 0:
        raise ValueError(f"config.eval.max_images={max_images} must be 0 (all) or more")
    domains = {name: _open_domain(config, name, max_images) for name in config.domains.keys()}
    # The classifier first: a wrong classifier_workdir fails before the GAN is loaded.
    classifier = load_classifier(classifier_dir, parallel.make_mesh()) if classifier_dir else None
    engine, state, mesh = inference.load_generators(config, workdir)
    gen_params, step = state.gen_params, int(jax.device_get(state.step))
    batch_size = inference.default_batch(config)
    three = _is_three_domain(config)
    passes = {
        name: _domain_pass(
            engine,
            gen_params,
            mesh,
            batch_size,
            config,
            domain,
            classifier,
            threshold if three and name == "A" else None,
        )
        for name, domain in domains.items()
    }
    report: dict[str, Any] = {
        "workdir": str(workdir),
        "step": step,
        "settings": {
            "image_size": config.image_size,
            "max_images": max_images,
            "threshold": threshold,
            "global_batch": batch_size,
        },
        "domains": {
            name: {
                "dataset": d.source,
                "image_key": d.spec.image_key,
                "num_images": len(d.table),
                "num_labelled": 0 if d.labels is None else int(np.isin(d.labels, (0, 1)).sum()),
                "num_masks": sum(m is not None for m in d.masks),
            }
            for name, d in domains.items()
        },
    }
    report["features"] = {"skipped": NO_CLASSIFIER} if classifier is None else classifier.describe()
    report["translation"] = _translation(config, domains, passes, classifier)
    if three:
        a = passes["A"]
        a["figure/truth"] = [domains["A"].masks[i] for i in a["index"][:FIGURE_IMAGES]]
        report["segmentation"] = _segmentation(domains["A"], a, threshold)
        report["radial_inclination"] = _radial_inclination(domains["A"], a)
    else:
        reason = (
            "segmentation needs domains A (natural), B (synthetic) and C (masks); this config "
            f"has {', '.join(config.domains.keys())}"
        )
        report["segmentation"] = report["radial_inclination"] = {"skipped": reason}
    report["figures"] = []
    if jax.process_index() == 0:
        report["figures"] = _figures(workdir, config, passes, report)
    report = _json_safe(report)
    if jax.process_index() == 0:
        path = workdir / "eval.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        tmp.replace(path)
        for line in _summary_lines(report):
            print(line, flush=True)
        print(f"wrote {path} and {len(report['figures'])} figures under {workdir / 'eval'}")
    parallel.barrier("gan_evaluate")
    return report
