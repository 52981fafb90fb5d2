"""Rendered phantom X-rays → TFDS datasets (splits train and test), with exact masks and geometry.

    python -m data_prep.phantom --body-part forearm --style clean --num 1000 [--seed 0]
    python -m data_prep.phantom --preset configs  # every dataset the data=phantom configs read
    python -m data_prep.phantom --preset demo [--seed S]   # the demo's phantom world

Dataset names default to `phantom_<body part>_<style>`. Features: image, label (0 normal,
1 abnormal), mask (bone, {0, 1}), radial_inclination_deg, radius_axis (x0, y0, x1, y1 in
pixels, proximal → distal), rotation_deg and render_index. The train split renders indices
0..num-1, the test split the next num-test indices and the optional extra split the next
num-extra, so the splits never share a limb.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import os
import sys
import time

import numpy as np
import tensorflow_datasets as tfds

from data_prep import builder, errors, images, render


@dataclasses.dataclass(frozen=True)
class PhantomSpec:
    """One phantom dataset to render: splits train, test and (when num_extra > 0) extra."""

    body_part: str
    style: str
    num: int
    num_test: int
    seed: int
    num_extra: int = 0  # natural-style images kept apart for measuring instruments and ceilings

    @property
    def name(self) -> str:
        """The default dataset name."""
        return f"phantom_{self.body_part}_{self.style}"


def demo_preset(seed: int = 0) -> tuple[PhantomSpec, ...]:
    """The demo's phantom world (`python -m xrayjax.tools.demo`), every draw derived from `seed`.

    As in the thesis, natural (radiograph-style) training images are scarce: 120 forearms
    against 1,400 clean renders, of which the ablation adds 300 (N) or 600 (2N) per class
    (thesis: 1,825 natural images, 5,000 or 10,000 synthetic per class). With 240 natural
    images a classifier already reached ROC AUC ≈ 0.95 on them alone, leaving synthetic images
    nothing to add. The natural extra split (2,000) trains only the measuring instruments (the
    positive-control classifier, the bone segmenter) and the study's natural-rich ceiling.
    Natural and synthetic domains come from different seeds, so they show different limbs: the
    GANs train unpaired.
    """
    return (
        PhantomSpec("forearm", "radiograph", num=120, num_test=400, seed=10 * seed + 1,
                    num_extra=2000),
        PhantomSpec("forearm", "clean", num=1400, num_test=200, seed=10 * seed + 2),
    )  # fmt: skip


def study_preset(seed: int = 0) -> tuple[PhantomSpec, ...]:
    """The study's phantom world: the demo's forearms plus wrists for the second multi-cycleGAN."""
    return (
        *demo_preset(seed),
        PhantomSpec("wrist", "radiograph", num=600, num_test=200, seed=10 * seed + 3,
                    num_extra=1000),
        PhantomSpec("wrist", "clean", num=600, num_test=200, seed=10 * seed + 4),
    )  # fmt: skip


def configs_preset(seed: int = 0) -> tuple[PhantomSpec, ...]:
    """Every dataset the data=phantom configs read, small enough for `--preset` smoke runs."""
    return (
        PhantomSpec("forearm", "radiograph", num=800, num_test=200, seed=10 * seed + 1),
        PhantomSpec("forearm", "clean", num=800, num_test=100, seed=10 * seed + 2),
        PhantomSpec("wrist", "radiograph", num=300, num_test=100, seed=10 * seed + 3),
        PhantomSpec("wrist", "clean", num=300, num_test=100, seed=10 * seed + 4),
    )


def smoke_preset(seed: int = 0) -> tuple[PhantomSpec, ...]:
    """The demo's datasets, tiny: for tests of the pipeline's plumbing."""
    return (
        PhantomSpec("forearm", "radiograph", num=24, num_test=16, seed=10 * seed + 1, num_extra=24),
        PhantomSpec("forearm", "clean", num=48, num_test=16, seed=10 * seed + 2),
    )


PRESETS = {
    "demo": demo_preset,
    "perclass": demo_preset,
    "study": study_preset,
    "configs": configs_preset,
    "smoke": smoke_preset,
}
_MIN_PARALLEL = 64  # below this, starting worker processes costs more than it saves


def _render_example(args: tuple) -> tuple[str, dict]:
    body_part, style, seed, index, size = args
    phantom = render.render_phantom(body_part, style, seed, index, image_size=size)
    return f"{index:08d}", {
        "image": images.encode_png(phantom.image[:, :, None]),
        "label": phantom.label,
        "mask": images.encode_png(phantom.mask[:, :, None]),
        "radial_inclination_deg": np.float32(phantom.radial_inclination_deg),
        "radius_axis": np.asarray(phantom.radius_axis, np.float32),
        "rotation_deg": np.float32(phantom.rotation_deg),
        "render_index": index,
    }


def _split_generator(spec: PhantomSpec, split: str, first: int, count: int, size: int, workers):
    def generate(recorder: builder.SplitRecorder):
        jobs = [
            (spec.body_part, spec.style, spec.seed, i, size) for i in range(first, first + count)
        ]
        if workers == 1 or count < _MIN_PARALLEL:
            for key, example in builder.progress(map(_render_example, jobs), split, total=count):
                recorder.seen += 1
                yield key, example
            return
        # forkserver: tfds may have started threads, which plain fork does not copy safely.
        context = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = pool.map(_render_example, jobs, chunksize=16)
            for key, example in builder.progress(results, split, total=count):
                recorder.seen += 1
                yield key, example

    return generate


def build(spec: PhantomSpec, data_dir, size: int, overwrite: bool, name: str | None = None):
    """Render one phantom dataset into data_dir."""
    workers = max(1, min(os.cpu_count() or 1, 8))
    generators = {
        "train": _split_generator(spec, "train", 0, spec.num, size, workers),
        "test": _split_generator(spec, "test", spec.num, spec.num_test, size, workers),
    }
    if spec.num_extra:
        first = spec.num + spec.num_test
        generators["extra"] = _split_generator(spec, "extra", first, spec.num_extra, size, workers)
    features = {
        "image": builder.image_feature(size),
        "label": tfds.features.ClassLabel(names=["normal", "abnormal"]),
        "mask": builder.image_feature(size),
        "radial_inclination_deg": np.float32,
        "radius_axis": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "rotation_deg": np.float32,
        "render_index": np.int64,
    }
    return builder.build_dataset(
        name or spec.name,
        features,
        generators,
        data_dir,
        source=f"phantom renderer ({spec.body_part}, {spec.style}, seed {spec.seed})",
        description=f"Rendered {spec.style} {spec.body_part} phantoms, {size}x{size}, exact masks.",
        overwrite=overwrite,
        settings={
            **dataclasses.asdict(spec),
            "image_size": size,
            "render_grid": size * render.supersampling(size),
            "removed_segment_fraction": list(render.GAP_FRACTION),
            "removed_segment_centre": list(render.GAP_CENTRE),
            "removed_segment_angle_deg": render.GAP_ANGLE_DEG,
        },
    )


def main(argv: list[str] | None = None) -> None:
    """Render phantom datasets."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.phantom", description=__doc__)
    parser.add_argument("--preset", help=f"render a set of datasets: {', '.join(PRESETS)}")
    parser.add_argument("--body-part", help=f"one of {', '.join(render.BODY_PARTS)}")
    parser.add_argument("--style", help=f"one of {', '.join(render.STYLES)}")
    parser.add_argument("--num", type=int, default=1000, help="train images")
    parser.add_argument("--num-test", type=int, default=None, help="test images (default num/5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="dataset name (default phantom_<body part>_<style>)")
    builder.add_common_args(parser)
    args = parser.parse_args(argv)
    data_dir = builder.resolve_data_dir(args.data_dir)
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise errors.InputError(
                f"unknown --preset {args.preset!r}; allowed: {', '.join(PRESETS)}"
            )
        start = time.perf_counter()
        for spec in PRESETS[args.preset](args.seed):
            build(spec, data_dir, args.image_size, args.overwrite)
        print(f"preset {args.preset}: done in {time.perf_counter() - start:.1f} s")
        return
    if args.body_part not in render.BODY_PARTS:
        raise errors.InputError(
            f"--body-part {args.body_part!r} is not one of: {', '.join(render.BODY_PARTS)}"
        )
    if args.style not in render.STYLES:
        raise errors.InputError(f"--style {args.style!r} is not one of: {', '.join(render.STYLES)}")
    if args.num < 1:
        raise errors.InputError(f"--num must be at least 1, got {args.num}")
    num_test = max(1, args.num // 5) if args.num_test is None else args.num_test
    if num_test < 1:
        raise errors.InputError(f"--num-test must be at least 1, got {num_test}")
    spec = PhantomSpec(args.body_part, args.style, args.num, num_test, args.seed)
    build(spec, data_dir, args.image_size, args.overwrite, args.name)


if __name__ == "__main__":
    sys.exit(builder.run_cli(main))
