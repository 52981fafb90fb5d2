"""Trained GAN workdir → translated or segmented images → a new TFDS dataset.

Translation runs G_IJ over a source split (thesis 3.2.2: synthetic renders made natural-looking,
each keeping its label). Segmentation of natural images with a multi-cycleGAN (A natural,
B synthetic, C masks) follows eq. 66, G_CB(G_BA(a)), or eq. 67, G_CB(a), thresholded.

Every process runs the same jitted batches in lock-step; process 0 writes. Datasets are
written atomically (data_prep.builder), so a run that dies leaves nothing that looks complete.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import jax
import numpy as np

from data_prep import builder, images, storage
from xrayjax import checkpoint, parallel
from xrayjax.data import pipelines, sources, transforms
from xrayjax.trainers import gan as gan_trainer

EQUATIONS = ("66", "67")


def load_generators(config, workdir: str | os.PathLike):
    """(engine, state, mesh): the GAN state of the workdir's latest checkpoint, replicated."""
    ckpt = checkpoint.Checkpointer(workdir, every=1 << 30)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(
            f"no checkpoint in {ckpt.directory}: train this config in that workdir first"
        )
    engine = gan_trainer.build_engine(config, steps_per_epoch=1, total_steps=1)
    mesh = parallel.make_mesh()
    state = ckpt.restore_like(gan_trainer.init_fn(engine, config), parallel.replicated(mesh))
    ckpt.close()
    return engine, state, mesh


def default_batch(config) -> int:
    """The config's global batch rounded up to a whole number of rows per device."""
    devices = jax.device_count()
    return -(-max(devices, config.global_batch) // devices) * devices


def parse_source(source: str) -> tuple[str, str]:
    """'dataset:split' → (dataset, split)."""
    name, sep, split = source.partition(":")
    if not sep or not name or not split:
        raise ValueError(
            f"--source {source!r}: expected DATASET:SPLIT, e.g. phantom_forearm_clean:train"
        )
    return name, split


def _check_domain(config, name: str) -> None:
    if name not in config.domains:
        raise ValueError(
            f"domain {name!r} is not in the config; it has {', '.join(config.domains.keys())}"
        )


@dataclasses.dataclass
class _Batch:
    inputs: np.ndarray  # (n, H, W, 1) in [−1, 1], only the valid rows
    outputs: dict[str, np.ndarray]  # name → (n, H, W, 1)
    indices: np.ndarray  # source-table rows


def run_batches(table, preprocess, mesh, global_batch, fn: Callable) -> Iterator[_Batch]:
    """fn(images) → dict of arrays, over the whole table in order, on every process."""
    parallel.check_global_batch(global_batch, mesh)
    iterator = pipelines.eval_iterator(
        table,
        preprocess,
        global_batch=global_batch,
    )

    def run(batch):
        return {"outputs": fn(batch["image"]), **batch}

    # Replicated outputs: every process gets the whole batch (an all-gather); process 0 writes.
    jitted = jax.jit(run, out_shardings=parallel.replicated(mesh))
    for local in iterator:
        keep = {k: local[k] for k in ("image", "index", "valid")}
        out = parallel.fetch(jitted(parallel.global_batch_array(mesh, keep)))
        valid = out["valid"]
        outputs = {k: v[valid] for k, v in out["outputs"].items()}
        yield _Batch(out["image"][valid], outputs, out["index"][valid])


def _source_extras(table, index: int, size: int) -> dict:
    """Label and mask of a source record, when it has them."""
    record = table[int(index)]
    label = int(record["label"]) if "label" in record else -1
    mask = np.zeros((size, size, 1), np.uint8)
    has_mask = bool(record.get("has_mask", "mask" in record))
    if "mask" in record and has_mask:
        decoded = transforms.decode_png(record["mask"])
        mask = transforms.resize(decoded, size, nearest=True)[:, :, None]
    return {"label": label, "mask": images.encode_png(mask), "has_mask": has_mask}


def _write(name, data_dir, overwrite, batches, table, size, description, settings, extra_images):
    """Consume `batches` on every process; process 0 writes them as dataset `name`."""
    if jax.process_index() != 0:
        for _ in batches:
            pass
        parallel.barrier(f"write_{name}")
        return None

    def generate(recorder: builder.SplitRecorder):
        for batch in batches:
            for row, index in enumerate(batch.indices):
                recorder.seen += 1
                example = {"source_index": int(index)}
                example.update(_source_extras(table, index, size))
                for key, output in batch.outputs.items():
                    example[key] = images.encode_png(_to_uint8(output[row], key in extra_images))
                yield f"{int(index):09d}", example

    features = {
        "image": builder.image_feature(size),
        "label": np.int64,
        "mask": builder.image_feature(size),
        "has_mask": np.bool_,
        "source_index": np.int64,
    }
    for key in extra_images:
        features[key] = builder.image_feature(size)
    path = builder.build_dataset(
        name,
        features,
        {"train": generate},
        data_dir,
        source=settings["source"],
        description=description,
        overwrite=overwrite,
        settings=settings,
    )
    parallel.barrier(f"write_{name}")
    return path


def _to_uint8(image: np.ndarray, binary: bool) -> np.ndarray:
    if binary:
        return (image > 0.5).astype(np.uint8)
    return np.clip(np.round((image + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _refuse_existing(name: str, data_dir, overwrite: bool) -> None:
    if builder.dataset_exists(data_dir, name) and not overwrite:
        raise ValueError(
            f"dataset {name!r} already exists in {data_dir}; choose another --output or pass "
            "--overwrite to replace it"
        )


def translate(
    config,
    workdir,
    *,
    source: str,
    from_domain: str,
    to_domain: str,
    num: int,
    output: str,
    data_dir=None,
    overwrite: bool = False,
    global_batch: int = 0,
):
    """Write dataset `output`: G_{to,from} applied to the first `num` (0: all) records.

    Only records whose label the source domain's config accepts are translated.
    """
    _check_domain(config, from_domain)
    _check_domain(config, to_domain)
    if from_domain == to_domain:
        raise ValueError("--from and --to name the same domain")
    data_dir = storage.as_path(data_dir or config.data_dir or sources.default_data_dir())
    _refuse_existing(output, data_dir, overwrite)
    name, split = parse_source(source)
    spec = config.domains[from_domain]
    # A per-class GAN translates only its class (thesis 3.2.2): the source domain's label filter.
    labels = list(spec.labels) or None
    table = sources.open_table(name, split, config.data_dir or data_dir, labels)
    if num > len(table):
        raise ValueError(f"--num {num}: {source} has only {len(table)} records")
    if num:
        table = table.subset(np.arange(num))
    pair = to_domain + from_domain

    def make_fn(engine, gen_params):
        return lambda x: {"image": engine.translate(gen_params, pair, x)}

    return _generate_dataset(
        config,
        workdir,
        table,
        spec,
        make_fn,
        output=output,
        data_dir=data_dir,
        overwrite=overwrite,
        global_batch=global_batch,
        description=f"{source} translated by G_{pair} of {workdir}",
        settings={"source": source, "workdir": str(workdir), "generator": f"G_{pair}", "num": num},
    )


def segment(
    config,
    workdir,
    *,
    source: str,
    equation: str,
    output: str,
    num: int = 0,
    threshold: float = 0.0,
    data_dir=None,
    overwrite: bool = False,
    global_batch: int = 0,
):
    """Write dataset `output`: bone masks of natural images by eq. 66 or 67 (domains A, B, C)."""
    if equation not in EQUATIONS:
        raise ValueError(f"--equation {equation!r}; allowed: {', '.join(EQUATIONS)}")
    for domain in "ABC":
        _check_domain(config, domain)
    data_dir = storage.as_path(data_dir or config.data_dir or sources.default_data_dir())
    _refuse_existing(output, data_dir, overwrite)
    name, split = parse_source(source)
    table = sources.open_table(name, split, config.data_dir or data_dir)
    if num:
        table = table.subset(np.arange(min(num, len(table))))

    def make_fn(engine, gen_params):
        def fn(x):
            through = engine.translate(gen_params, "BA", x) if equation == "66" else x
            mask_image = engine.translate(gen_params, "CB", through)  # masks are ±1 images
            return {"predicted_mask": (mask_image > threshold).astype(np.float32)}

        return fn

    return _generate_dataset(
        config,
        workdir,
        table,
        config.domains["A"],
        make_fn,
        output=output,
        data_dir=data_dir,
        overwrite=overwrite,
        global_batch=global_batch,
        description=f"bone masks of {source} by eq. {equation}",
        settings={
            "source": source,
            "workdir": str(workdir),
            "equation": equation,
            "threshold": threshold,
        },
        prediction="predicted_mask",
    )


def _generate_dataset(
    config,
    workdir,
    table,
    spec,
    make_fn,
    *,
    output,
    data_dir,
    overwrite,
    global_batch,
    description,
    settings,
    prediction=None,
):
    """Run make_fn(engine, params) over `table` (as domain `spec` is read) into dataset `output`.

    Without `prediction`, the function's "image" is the written image; with it, the written
    image is the (preprocessed) input and the prediction is a second image feature.
    """
    engine, state, mesh = load_generators(config, workdir)
    preprocess = gan_trainer.domain_preprocess(config, spec, augment=False)
    batch = global_batch or default_batch(config)
    batches = run_batches(table, preprocess, mesh, batch, make_fn(engine, state.gen_params))
    extra_images = ()
    if prediction is not None:
        extra_images = (prediction,)
        batches = (
            dataclasses.replace(b, outputs={"image": b.inputs, **b.outputs}) for b in batches
        )
    return _write(
        output,
        data_dir,
        overwrite,
        batches,
        table,
        config.image_size,
        description,
        settings,
        extra_images=extra_images,
    )
