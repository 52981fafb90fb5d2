"""`--mode evaluate` on a GAN workdir: the numbers the thesis left to the eye.

On each domain's evaluation split (`domains.X.eval_split`; the first `eval.max_images` images),
for every ordered pair IJ (G_IJ translates J → I, THESIS_SPEC naming) and source images j of J:
- cycle reconstruction: L1 and SSIM between j and G_JI(G_IJ(j));
- anatomy preservation, where J's records carry bone masks: Dice between j's mask and the bone
  found in G_IJ(j). The bone finder depends on the target: the supervised segmenter of
  `eval.segmenter_workdir` for translations into `eval.segmenter_domain` (natural style, where
  one threshold also catches soft tissue), the mask itself above `eval.threshold` for a mask
  domain, else each image's Otsu threshold. Its reference is the same finder on real I images
  against their own exact masks: an anatomy Dice is read against that number;
- with classifiers trained by this project (`eval.classifiers.<I>`, else
  `eval.classifier_workdir`): KID on the penultimate features of I's classifier between real I
  images and G_IJ(j), and between real I images and j (untranslated: how far apart the domains
  start), with the KID between two disjoint halves of the real I images as the floor; label
  preservation: I's classifier's predictions on G_IJ(j) against j's labels 0/1, beside its
  accuracy on real labelled I images (the reference).
Three-domain configs (A natural, B synthetic, C masks) also segment A by eq. 66, G_CB(G_BA(a)),
and eq. 67, G_CB(a), thresholded at `eval.threshold`, beside a baseline that learns nothing
(each natural image's Otsu threshold) and, with a segmenter for A, its supervised masks: Dice,
IoU and HD95 against A's masks where they exist. Radial inclination is measured on the ground-
truth masks (the measurement's own reference) and on each method's masks against the dataset's
`radial_inclination_deg` (phantoms), else against the angle measured on the ground truth.
Masks smaller than MEASURE_MIN_SIZE are upsampled from their soft values first, ground truth
alike, since the distal radius is then only a few pixels wide.

Writes workdir/eval.json (NaN and ±inf as null) and PNG figures under workdir/eval/. Each domain
is passed once, in global batches over every device (inference's machinery); process 0 writes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from data_prep import errors, storage
from xrayjax import build, inference, parallel
from xrayjax import logging as runlog
from xrayjax.data import sources, transforms
from xrayjax.evaluators import figures, geometry, segmentation, statistics, translation

FIGURE_IMAGES = 8  # rows per figure
MEDIAN_FILTER = 3  # px: predicted masks are median-filtered before measuring their geometry
# Radial inclination needs the distal radius to span pixels: smaller masks are measured after
# bilinear upsampling to MEASURE_UPSAMPLE px (ground truth on phantoms at 64 px: MAE ≈ 3.7°
# upsampled; at 128 px ≈ 0.9° as they are).
MEASURE_MIN_SIZE = 128
MEASURE_UPSAMPLE = 256
EQUATIONS = {"eq66": "G_CB(G_BA(a))", "eq67": "G_CB(a)"}  # thesis eqs. 66 and 67
BASELINE = "per-image Otsu threshold of the natural image (learns nothing)"
SUPERVISED = "supervised segmenter trained on natural images with exact masks"
NO_CLASSIFIER = (
    "no classifier for domain {domain}: set config.eval.classifiers.{domain} or "
    "config.eval.classifier_workdir to a classifier trained by this project "
    "(configs/classifier_forearm.py); KID and label preservation need its features and "
    "predictions"
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


def _load_classifiers(config, settings, mesh) -> dict[str, build.Classifier]:
    """Each X-ray domain's classifier (its own, else the default one), each workdir loaded once."""
    default = settings.get("classifier_workdir", "")
    per_domain = settings.get("classifiers", ml_collections.ConfigDict())
    loaded: dict[str, build.Classifier] = {}
    out = {}
    for name, spec in config.domains.items():
        workdir = per_domain.get(name, "") or default
        if spec.image_key == "mask" or not workdir:
            continue
        if workdir not in loaded:
            loaded[workdir] = build.load_classifier(workdir, mesh)
        out[name] = loaded[workdir]
    return out


def _is_three_domain(config) -> bool:
    return set("ABC") <= set(config.domains.keys()) and config.domains.C.image_key == "mask"


@dataclasses.dataclass(frozen=True)
class _Tools:
    """The measuring instruments of one evaluation: classifiers per domain, the segmenter."""

    classifiers: dict[str, build.Classifier]
    segmenter: build.Segmenter | None
    segmenter_domain: str
    threshold: float

    def bone_finder(self, domain: _Domain) -> str:
        """How the bone of an image of `domain` is found (eval.json's words)."""
        if self.segmenter is not None and domain.name == self.segmenter_domain:
            return f"segmenter in {self.segmenter.workdir}"
        if domain.is_mask_domain:
            return f"mask above {self.threshold}"
        return "per-image Otsu threshold"


def _bone_dice(tools: _Tools, domain: _Domain, masks, images, segmented) -> list[float]:
    """Dice of the bone found in images of `domain` against `masks` (one per image)."""
    if segmented is not None:
        return [segmentation.dice(p[..., 0], m) for p, m in zip(segmented, masks, strict=True)]
    if domain.is_mask_domain:
        return translation.anatomy_preservation_dice(masks, images, tools.threshold)["dice"]
    return translation.anatomy_preservation_dice(masks, images)["dice"]


def _domain_pass(engine, gen_params, mesh, batch_size, config, domains, name, tools, segment):
    """One pass over a source domain: every translation out of it, per-image metrics, features.

    Returns lists: '<target>/<what>' per translated image, 'features@D' / 'probability@D' of
    the source images under domain D's classifier, 'self/anatomy' (the bone finder on the
    source images against their masks) and, for domain A of a three-domain config, the soft
    eq. 66/67 outputs and the supervised segmenter's masks.
    """
    domain = domains[name]
    targets = [t for t in config.domains.keys() if t != name]
    segmenter, seg_domain = tools.segmenter, tools.segmenter_domain

    def fn(x):
        out = {}
        for key, clf in tools.classifiers.items():
            out[f"features@{key}"], out[f"probability@{key}"] = clf.apply(x)
        if segmenter is not None and name == seg_domain:
            out["self/bone"] = segmenter.apply(x)
        for target in targets:
            fake = engine.translate(gen_params, target + name, x).astype(jnp.float32)
            out[f"{target}/translated"] = fake
            back = engine.translate(gen_params, name + target, fake).astype(jnp.float32)
            out[f"{target}/reconstructed"] = back
            if target in tools.classifiers:
                clf = tools.classifiers[target]
                out[f"{target}/features"], out[f"{target}/probability"] = clf.apply(fake)
            if segmenter is not None and target == seg_domain:
                out[f"{target}/bone"] = segmenter.apply(fake)
        if segment:
            out["eq66"] = engine.translate(gen_params, "CB", out["B/translated"])
            out["eq67"] = engine.translate(gen_params, "CB", x)
        return out

    preprocess = build.domain_preprocess(config, domain.spec, augment=False)
    acc: dict[str, list] = collections.defaultdict(list)
    for batch in inference.run_batches(domain.table, preprocess, mesh, batch_size, fn):
        x, out, indices = batch.inputs, batch.outputs, batch.indices
        acc["index"] += indices.tolist()
        acc["figure/source"] += list(x[: max(0, FIGURE_IMAGES - len(acc["figure/source"]))])
        known = [k for k, i in enumerate(indices) if domain.masks[i] is not None]
        masks = np.stack([domain.masks[indices[k]] for k in known]) if known else None
        if masks is not None:
            mine = out["self/bone"][known] if "self/bone" in out else None
            acc["self/anatomy"] += _bone_dice(tools, domain, masks, x[known], mine)
        for key in out:
            if key.startswith(("features@", "probability@")):
                acc[key] += list(out[key])
        if segment:
            for eq in EQUATIONS:
                acc[f"{eq}/soft"] += list(out[eq][..., 0].astype(np.float32))
                acc[eq] += list((out[eq][..., 0] > tools.threshold).astype(np.uint8))
            acc["baseline"] += [segmentation.otsu_bone(image) for image in x]
            if "self/bone" in out:
                acc["supervised"] += list(out["self/bone"][..., 0].astype(np.uint8))
        for target in targets:
            fake, back = out[f"{target}/translated"], out[f"{target}/reconstructed"]
            acc[f"{target}/l1"] += [
                translation.cycle_l1(a, b) for a, b in zip(x, back, strict=True)
            ]
            acc[f"{target}/ssim"] += [translation.ssim(a, b) for a, b in zip(x, back, strict=True)]
            if masks is not None:
                bone = out[f"{target}/bone"][known] if f"{target}/bone" in out else None
                acc[f"{target}/anatomy"] += _bone_dice(
                    tools, domains[target], masks, fake[known], bone
                )
            room = max(0, FIGURE_IMAGES - len(acc[f"{target}/figure"]))
            acc[f"{target}/figure"] += list(fake[:room])
            for key in ("features", "probability"):
                if f"{target}/{key}" in out:
                    acc[f"{target}/{key}"] += list(out[f"{target}/{key}"])
    return acc


def _dice_summary(values: list[float]) -> dict:
    mean, std = statistics.mean_std(values)
    return {
        "dice_mean": mean,
        "dice_std": std,
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
    translated, untranslated_kid = kid(real, fake), kid(real, untranslated)
    report = {
        "translated": {"mean": translated[0], "std": translated[1]},
        "untranslated_source": {"mean": untranslated_kid[0], "std": untranslated_kid[1]},
        "subset_size": subset,
        "num_subsets": 10,
        **sizes,
    }
    # The floor: two disjoint halves of the real images, as alike as two samples can be.
    half = len(real) // 2
    if half >= 2:
        floor = translation.kernel_inception_distance(
            real[:half], real[half : 2 * half], subset_size=min(half, subset), seed=0
        )
        report["reference_real"] = {"mean": floor[0], "std": floor[1], "num_each": half}
    return report


def _label_report(probabilities, labels, resamples: int) -> dict | None:
    labels = np.asarray(labels, np.int64)
    keep = np.isin(labels, (0, 1))
    if not keep.any():
        return None
    values = np.asarray(probabilities, np.float64)[keep]
    return translation.label_preservation(values, labels[keep], num_resamples=resamples, seed=0)


def _label_preservation(source: _Domain, target: _Domain, acc, target_acc, clf) -> dict:
    if target.is_mask_domain:
        return {"skipped": f"target domain {target.name} holds bone masks, not X-rays"}
    if source.labels is None:
        return {"skipped": f"source domain {source.name} ({source.source}) has no labels"}
    labels = source.labels[np.asarray(acc["index"], np.int64)]
    resamples = int(clf.config.get("bootstrap_resamples", 1000))
    translated = _label_report(acc[f"{target.name}/probability"], labels, resamples)
    if translated is None:
        return {"skipped": f"source domain {source.name} ({source.source}) has no labels 0/1"}
    report = {
        "generator": f"G_{target.name}{source.name}",
        "classifier": str(clf.workdir),
        "translated": translated,
        "untranslated_source": _label_report(acc[f"probability@{target.name}"], labels, resamples),
    }
    if target.labels is not None:
        own = target.labels[np.asarray(target_acc["index"], np.int64)]
        reference = _label_report(target_acc[f"probability@{target.name}"], own, resamples)
        if reference is not None:
            report["reference"] = {"images": f"real {target.name} ({target.source})", **reference}
    return report


def _translation(config, domains, passes, tools: _Tools) -> dict:
    sections = {}
    for source, acc in passes.items():
        for target in (t for t in config.domains.keys() if t != source):
            pair = target + source
            l1_mean, l1_std = statistics.mean_std(acc[f"{target}/l1"])
            ssim_mean, ssim_std = statistics.mean_std(acc[f"{target}/ssim"])
            section: dict[str, Any] = {
                "generator": f"G_{pair}",
                "source": f"{source} ({domains[source].source})",
                "target": f"{target} ({domains[target].source})",
                "num_images": len(acc["index"]),
                "cycle": {
                    "reconstruction": f"G_{source}{target}(G_{pair}(j)) against j",
                    "l1_mean": l1_mean,
                    "l1_std": l1_std,
                    "ssim_mean": ssim_mean,
                    "ssim_std": ssim_std,
                    "l1": acc[f"{target}/l1"],
                    "ssim": acc[f"{target}/ssim"],
                },
            }
            if acc[f"{target}/anatomy"]:
                anatomy = {
                    "bone": tools.bone_finder(domains[target]),
                    "translated": _dice_summary(acc[f"{target}/anatomy"]),
                }
                own = passes[target]["self/anatomy"]
                if own:
                    anatomy["reference"] = {
                        "images": f"real {target} ({domains[target].source}), own masks",
                        **_dice_summary(own),
                    }
                section["anatomy_preservation"] = anatomy
            else:
                reason = f"source {domains[source].source} has no bone masks"
                section["anatomy_preservation"] = {"skipped": reason}
            clf = tools.classifiers.get(target)
            if clf is None:
                reason = {"skipped": NO_CLASSIFIER.format(domain=target)}
                if domains[target].is_mask_domain:
                    reason = {"skipped": f"target domain {target} holds bone masks, not X-rays"}
                section["kid"] = section["label_preservation"] = reason
            else:
                section["kid"] = {
                    "real": f"{target} ({domains[target].source})",
                    "features": str(clf.workdir),
                    **_kid(
                        passes[target][f"features@{target}"],
                        acc[f"{target}/features"],
                        acc[f"features@{target}"],
                    ),
                }
                section["label_preservation"] = _label_preservation(
                    domains[source], domains[target], acc, passes[target], clf
                )
            sections[pair] = section
    return sections


def _segmentation(domain: _Domain, acc, threshold: float) -> dict:
    truths = [domain.masks[i] for i in acc["index"]]
    methods = dict(EQUATIONS) | {"baseline": BASELINE}
    if acc["supervised"]:
        methods["supervised"] = SUPERVISED
    section: dict[str, Any] = {
        "images": f"A ({domain.source})",
        "threshold": threshold,
        "equations": EQUATIONS,
        "methods": methods,
        "num_images": len(truths),
        "bone_fraction_mean": {
            key: statistics.mean_std([m.mean() for m in acc[key]])[0] for key in methods
        },
    }
    if any(t is not None for t in truths):
        section.update(segmentation.compare_methods({key: acc[key] for key in methods}, truths))
    else:
        section["skipped"] = f"{domain.source} has no ground-truth masks: no Dice, IoU or HD95"
    return section


def measurable(mask_or_soft: np.ndarray, threshold: float) -> np.ndarray:
    """A mask ready for radial inclination: upsampled from its soft values when small, then
    thresholded and median-filtered (see MEASURE_MIN_SIZE)."""
    values = np.asarray(mask_or_soft, np.float32)
    if values.shape[0] < MEASURE_MIN_SIZE:
        size = (MEASURE_UPSAMPLE, MEASURE_UPSAMPLE)
        values = cv2.resize(values, size, interpolation=cv2.INTER_LINEAR)
    mask = (values > threshold).astype(np.uint8)
    return cv2.medianBlur(mask, MEDIAN_FILTER)


def _truth_measurable(mask: np.ndarray) -> np.ndarray:
    """Ground truth on the same footing: {0, 1} upsampled alike when small, cut at ½."""
    if mask.shape[0] >= MEASURE_MIN_SIZE:
        return mask
    return measurable(mask, 0.5)


def _radial_inclination(domain: _Domain, acc, threshold: float = 0.0) -> dict:
    indices = np.asarray(acc["index"], np.int64)
    truths = [domain.masks[i] for i in indices]
    if not any(t is not None for t in truths):
        return {"skipped": f"{domain.source} has no ground-truth masks to measure against"}
    size = next(t for t in truths if t is not None).shape[0]
    section: dict[str, Any] = {
        "median_filter_px": MEDIAN_FILTER,
        "measured_at_px": size if size >= MEASURE_MIN_SIZE else MEASURE_UPSAMPLE,
        "image_px": size,
    }
    known = [k for k, t in enumerate(truths) if t is not None]
    truth_masks = [_truth_measurable(truths[k]) for k in known]
    if domain.inclination is not None:
        section["truth"] = f"radial_inclination_deg of {domain.source}"
        angles = domain.inclination[indices[known]]
        section["ground_truth_masks"] = geometry.inclination_errors(truth_masks, angles)
    else:
        section["truth"] = "measured on the ground-truth masks (the dataset gives no angle)"
        measured = []
        for k, mask in zip(known, truth_masks, strict=True):
            try:
                measured.append((k, geometry.radial_inclination_deg(mask)))
            except ValueError:
                continue
        section["ground_truth_unmeasurable"] = len(known) - len(measured)
        known, angles = [k for k, _ in measured], [a for _, a in measured]
    section["image_indices"] = indices[known].tolist()  # positions among the evaluated images
    section["num_images"] = len(known)
    for eq in EQUATIONS:
        soft = acc.get(f"{eq}/soft") or acc[eq]
        cut = threshold if f"{eq}/soft" in acc else 0.5
        masks = [measurable(soft[k], cut) for k in known]
        section[eq] = geometry.inclination_errors(masks, angles)
    if acc.get("supervised"):
        masks = [measurable(acc["supervised"][k], 0.5) for k in known]
        section["supervised"] = geometry.inclination_errors(masks, angles)
    return section


def _figures(workdir: epath.Path, config, passes, report) -> list[str]:
    out = workdir / "eval"
    drawn = {}  # file name → figure
    for source, acc in passes.items():
        for target in (t for t in config.domains.keys() if t != source):
            pair = target + source
            drawn[f"translation_{pair}.png"] = figures.translation_grid(
                acc["figure/source"],
                acc[f"{target}/figure"],
                titles=(f"{source} (source)", f"G_{pair}: {source} to {target}"),
            )
    segmented = report.get("segmentation", {})
    if "equations" in segmented:
        acc = passes["A"]
        n = len(acc["figure/source"])
        for key, formula in segmented["methods"].items():
            label = f"eq. {key[2:]}: {formula}" if key in EQUATIONS else key
            drawn[f"segmentation_{key}.png"] = figures.segmentation_grid(
                acc["figure/source"],
                acc[key][:n],
                truths=acc["figure/truth"][:n],
                titles=("A (natural)", label),
            )
    inclination = report.get("radial_inclination", {})
    for key in ("ground_truth_masks", *EQUATIONS, "supervised"):
        if key in inclination:
            drawn[f"radial_inclination_errors_{key}.png"] = figures.chart_image(
                figures.error_histogram(inclination[key]["errors_deg"])
            )
    for name, image in drawn.items():
        runlog.save_png(out / name, image)
    return [f"eval/{name}" for name in drawn]


def _number(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _summary_lines(report: dict) -> list[str]:
    """Headline numbers of a (JSON-safe) report, one line each."""
    lines = []
    for pair, s in report["translation"].items():
        cycle = s["cycle"]
        text = f"G_{pair}: cycle L1 {_number(cycle['l1_mean'])}, SSIM {_number(cycle['ssim_mean'])}"
        anatomy = s.get("anatomy_preservation", {})
        if "translated" in anatomy:
            ref = anatomy.get("reference", {}).get("dice_mean")
            text += (
                f", anatomy Dice {_number(anatomy['translated']['dice_mean'])} "
                f"(reference {_number(ref)})"
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
    for key in seg.get("methods", {}):
        if isinstance(seg.get(key), dict):
            lines.append(f"{key} {seg['methods'][key]}: Dice {_number(seg[key]['dice_mean'])}")
    incl = report["radial_inclination"]
    for key in ("ground_truth_masks", *EQUATIONS, "supervised"):
        if key in incl:
            r = incl[key]
            lines.append(
                f"radial inclination on {key}: MAE {_number(r['mae_deg'], '.2f')} deg over "
                f"{r['num_measured']} ({r['num_failures']} not measurable)"
            )
    return lines


def _tools(config, settings, threshold: float, mesh) -> _Tools:
    classifiers = _load_classifiers(config, settings, mesh)
    segmenter_dir = settings.get("segmenter_workdir", "")
    domain = settings.get("segmenter_domain", "A")
    if segmenter_dir and domain not in config.domains:
        raise errors.InputError(
            f"config.eval.segmenter_domain={domain!r} is not a domain of this config "
            f"({', '.join(config.domains.keys())})"
        )
    segmenter = build.load_segmenter(segmenter_dir, mesh) if segmenter_dir else None
    return _Tools(classifiers, segmenter, domain, threshold)


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Evaluate the workdir's latest GAN checkpoint; writes eval.json and eval/*.png.

    eval.json (also returned) holds: workdir, step, settings, domains (dataset:split and counts
    per domain), features (the feature network per domain, or why skipped), segmenter,
    translation (per pair 'IJ': cycle, anatomy_preservation, kid, label_preservation),
    segmentation (eq66, eq67, baseline and supervised side by side) and radial_inclination
    (ground_truth_masks and each method: errors and failures), each `{"skipped": reason}` where
    it cannot apply, and figures (paths under the workdir). Per-image lists sit beside their
    means; `indices` count evaluated images.
    """
    workdir = storage.as_path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise errors.MissingInput(
            f"no checkpoint in {workdir / 'checkpoints'}: train this config in that workdir first"
        )
    settings = config.get("eval", ml_collections.ConfigDict())
    threshold = float(settings.get("threshold", 0.0))
    max_images = int(settings.get("max_images", 500))
    if max_images < 0:
        raise errors.InputError(f"config.eval.max_images={max_images} must be 0 (all) or more")
    domains = {name: _open_domain(config, name, max_images) for name in config.domains.keys()}
    # The instruments first: a wrong workdir fails before the GAN is loaded.
    tools = _tools(config, settings, threshold, parallel.make_mesh())
    engine, state, mesh = build.load_generators(config, workdir)
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
            domains,
            name,
            tools,
            three and name == "A",
        )
        for name in domains
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
    report["features"] = {
        name: (
            tools.classifiers[name].describe()
            if name in tools.classifiers
            else {"skipped": NO_CLASSIFIER.format(domain=name)}
        )
        for name, d in domains.items()
        if not d.is_mask_domain
    }
    report["segmenter"] = (
        {"domain": tools.segmenter_domain, **tools.segmenter.describe()}
        if tools.segmenter is not None
        else {"skipped": "config.eval.segmenter_workdir is empty: bone found by Otsu thresholds"}
    )
    report["translation"] = _translation(config, domains, passes, tools)
    if three:
        a = passes["A"]
        a["figure/truth"] = [domains["A"].masks[i] for i in a["index"][:FIGURE_IMAGES]]
        report["segmentation"] = _segmentation(domains["A"], a, threshold)
        report["radial_inclination"] = _radial_inclination(domains["A"], a, threshold)
    else:
        reason = (
            "segmentation needs domains A (natural), B (synthetic) and C (masks); this config "
            f"has {', '.join(config.domains.keys())}"
        )
        report["segmentation"] = report["radial_inclination"] = {"skipped": reason}
    report["figures"] = []
    if jax.process_index() == 0:
        report["figures"] = _figures(workdir, config, passes, report)
    report = runlog.json_safe(report)
    if jax.process_index() == 0:
        path = runlog.write_json(workdir / "eval.json", report)
        for line in _summary_lines(report):
            print(line, flush=True)
        print(f"wrote {path} and {len(report['figures'])} figures under {workdir / 'eval'}")
    parallel.barrier("gan_evaluate")
    return report
