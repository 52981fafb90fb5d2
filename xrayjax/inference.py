"""Trained GAN workdir → translated or segmented images → a new TFDS dataset, or a folder.

Translation runs G_IJ over a source split (thesis 3.2.2: synthetic renders made natural-looking,
each keeping its label). Segmentation of natural images with a multi-cycleGAN (A natural,
B synthetic, C masks) follows eq. 66, G_CB(G_BA(a)), or eq. 67, G_CB(a), thresholded.

A folder of image files (PNG, JPEG, DICOM...) can be the source instead of a dataset: its
images are prepared as data_prep prepares training data (grayscale, 256×256 by --fit), then as
the config's domain reads them (CLAHE, resize); the results come back at each file's own size,
as PNGs and a CSV.

Every process runs the same jitted batches in lock-step; process 0 writes. Datasets are
written atomically (data_prep.builder), so a run that dies leaves nothing that looks complete.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import pathlib
from collections.abc import Callable, Iterator

import cv2
import jax
import numpy as np
from tqdm import tqdm

from data_prep import builder, errors, images, storage
from xrayjax import build, parallel
from xrayjax import logging as runlog
from xrayjax.data import pipelines, sources, transforms
from xrayjax.evaluators import figures, geometry

EQUATIONS = ("66", "67")


def default_batch(config) -> int:
    """The config's global batch rounded up to a whole number of rows per device."""
    devices = jax.device_count()
    return -(-max(devices, config.global_batch) // devices) * devices


def _parse_source(source: str) -> tuple[str, str]:
    return sources.parse_spec(source, "--source", " (or an existing folder of images)")


def _check_domain(config, name: str) -> None:
    if name not in config.domains:
        raise errors.InputError(
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
    return transforms.to_uint8(image)


def _refuse_existing(name: str, data_dir, overwrite: bool) -> None:
    if builder.dataset_exists(data_dir, name) and not overwrite:
        raise errors.InputError(
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
        raise errors.InputError("--from and --to name the same domain")
    data_dir = storage.as_path(data_dir or config.data_dir or sources.default_data_dir())
    _refuse_existing(output, data_dir, overwrite)
    name, split = _parse_source(source)
    spec = config.domains[from_domain]
    # A per-class GAN translates only its class (thesis 3.2.2): the source domain's label filter.
    labels = list(spec.labels) or None
    table = _first_records(
        sources.open_table(name, split, config.data_dir or data_dir, labels), num, source
    )
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


def _first_records(table: sources.RecordTable, num: int, source: str) -> sources.RecordTable:
    """The first `num` records of `table` (0: all); InputError when it holds fewer, so that a
    run never writes fewer images than asked for without a word."""
    if num < 0:
        raise errors.InputError(f"--num {num}: give 0 (all records) or more")
    if num > len(table):
        raise errors.InputError(f"--num {num}: {source} has only {len(table)} records")
    return table.subset(np.arange(num)) if num else table


def _segment_fn(engine, gen_params, equation: str, threshold: float) -> Callable:
    """images → {"predicted_mask": {0, 1}} by eq. 66 or 67."""

    def fn(x):
        through = engine.translate(gen_params, "BA", x) if equation == "66" else x
        mask_image = engine.translate(gen_params, "CB", through)  # masks are ±1 images
        return {"predicted_mask": (mask_image > threshold).astype(np.float32)}

    return fn


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
    """Write dataset `output`: bone masks of the first `num` (0: all) natural images by eq. 66
    or 67 (domains A, B, C)."""
    if equation not in EQUATIONS:
        raise errors.InputError(f"--equation {equation!r}; allowed: {', '.join(EQUATIONS)}")
    for domain in "ABC":
        _check_domain(config, domain)
    data_dir = storage.as_path(data_dir or config.data_dir or sources.default_data_dir())
    _refuse_existing(output, data_dir, overwrite)
    name, split = _parse_source(source)
    table = _first_records(
        sources.open_table(name, split, config.data_dir or data_dir), num, source
    )

    def make_fn(engine, gen_params):
        return _segment_fn(engine, gen_params, equation, threshold)

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
            "num": num,
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
    engine, state, mesh = build.load_generators(config, workdir)
    preprocess = build.domain_preprocess(config, spec, augment=False)
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


# data_prep's default --image-size: the resolution CLAHE saw when the training data was prepared.
PREPARED_SIZE = 256
CSV_COLUMNS = ("file", "radial_inclination_deg", "reason", "bone_area_px", "pixel_spacing_mm")
MEASURE_SIDE = 512  # long side at which the radius is measured on a mask


@dataclasses.dataclass
class FolderImage:
    """One readable file of a source folder."""

    file: str  # path relative to the folder
    gray: np.ndarray  # uint8 (H, W) at the file's own size
    pixel_spacing_mm: list[float] | None  # (row, column), from DICOM
    output: str = ""  # the PNG name its results are written under


class _FolderRecords:
    """Folder images as the records a domain's preprocessing reads (prepared PNG bytes)."""

    def __init__(self, found: list[FolderImage], fit: str):
        self.encoded = [
            images.encode_png(images.resize_square(f.gray, PREPARED_SIZE, fit)) for f in found
        ]

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.encoded[int(index)], "index": np.int64(index)}


def read_folder(source, fit: str) -> tuple[list[FolderImage], list[tuple[str, str]]]:
    """The readable image files under `source` (any depth, sorted), each with its output name,
    and the (file, reason) of every file that could not be read. `fit` is checked first."""
    if fit not in images.FIT_MODES:
        raise errors.InputError(f"--fit {fit!r}; allowed: {', '.join(images.FIT_MODES)}")
    root = pathlib.Path(source).expanduser()
    if not root.is_dir():
        raise errors.MissingInput(f"--source {source} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    found, skipped = [], []
    for path in tqdm(files, desc="reading", unit="file", disable=jax.process_index() != 0):
        name = path.relative_to(root).as_posix()
        try:
            gray, info = images.read_gray_with_info(path)
        except images.UnreadableImage as err:
            skipped.append((name, str(err)))
            continue
        found.append(FolderImage(name, gray, info.get("pixel_spacing_mm")))
    if not found:
        listed = "; ".join(f"{n}: {why}" for n, why in skipped[:5]) or "it is empty"
        raise errors.InputError(f"no readable image in {root} ({listed})")
    # A PNG name per file: its relative path with .png for its extension, or with .png added
    # where two files would otherwise share a name (x.png beside x.dcm).
    plain = [str(pathlib.PurePosixPath(f.file).with_suffix(".png")) for f in found]
    counts = collections.Counter(plain)
    for name, f in zip(plain, found, strict=True):
        f.output = name if counts[name] == 1 or f.file == name else f"{f.file}.png"
    return found, skipped


def to_original_size(image: np.ndarray, shape: tuple[int, int], fit: str, nearest: bool):
    """A square model output back onto an (H, W) file's geometry: unstretched, or unpadded."""
    height, width = shape
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC
    if fit == "pad":
        side = max(height, width)
        full = cv2.resize(image, (side, side), interpolation=interpolation)
        top, left = (side - height) // 2, (side - width) // 2
        return full[top : top + height, left : left + width]
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _measuring_size(shape: tuple[int, int], spacing_mm: list[float] | None) -> tuple[int, int]:
    """(width, height) with the long side MEASURE_SIDE and square pixels in millimetres, so
    that the measured angle is the anatomical one even for anisotropic pixel spacing."""
    height, width = shape
    if spacing_mm and spacing_mm[0] > 0 and spacing_mm[1] > 0:
        width = width * spacing_mm[1] / spacing_mm[0]
    scale = MEASURE_SIDE / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _folder_run(config, workdir, found, spec, fit: str, make_fn, global_batch: int):
    """(FolderImage, outputs of one row) for every image, in order, on every process."""
    engine, state, mesh = build.load_generators(config, workdir)
    preprocess = build.domain_preprocess(config, spec, augment=False)
    batch = global_batch or default_batch(config)
    batches = run_batches(
        _FolderRecords(found, fit), preprocess, mesh, batch, make_fn(engine, state.gen_params)
    )
    bar = tqdm(total=len(found), desc="images", unit="img", disable=jax.process_index() != 0)
    for b in batches:
        for row, index in enumerate(b.indices):
            yield found[int(index)], {k: v[row] for k, v in b.outputs.items()}
        bar.update(len(b.indices))
    bar.close()


def _write_csv(path, columns, rows) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text(path, text.getvalue())


def segment_folder(
    config,
    workdir,
    *,
    source,
    output,
    equation: str,
    threshold: float = 0.0,
    fit: str = "stretch",
    global_batch: int = 0,
) -> list[dict]:
    """Bone masks, overlays and radial inclination of every image file in folder `source`:
    OUT/masks/NAME.png, OUT/overlays/NAME.png and OUT/measurements.csv; returns the CSV rows."""
    if equation not in EQUATIONS:
        raise errors.InputError(f"--equation {equation!r}; allowed: {', '.join(EQUATIONS)}")
    for domain in "ABC":
        _check_domain(config, domain)
    found, skipped = read_folder(source, fit)
    out = storage.as_path(output)
    rows = []
    writing = jax.process_index() == 0

    def make_fn(engine, gen_params):
        return _segment_fn(engine, gen_params, equation, threshold)

    spec = config.domains["A"]
    for item, outputs in _folder_run(config, workdir, found, spec, fit, make_fn, global_batch):
        mask = to_original_size(
            outputs["predicted_mask"][..., 0].astype(np.uint8), item.gray.shape, fit, True
        )
        size = _measuring_size(item.gray.shape, item.pixel_spacing_mm)
        small = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        try:
            measured = geometry.measure_radius(small)
            angle, reason = measured.inclination_deg, ""
            caption = f"{item.file}: radial inclination {angle:.1f} deg (eq. {equation})"
        except ValueError as err:  # the mask does not show a measurable radius
            measured, angle, reason = None, None, str(err)
            caption = f"{item.file}: not measured ({reason})"
        spacing = item.pixel_spacing_mm
        rows.append(
            {
                "file": item.file,
                "radial_inclination_deg": "" if angle is None else f"{angle:.2f}",
                "reason": reason,
                "bone_area_px": int(mask.sum()),
                "pixel_spacing_mm": _spacing_text(spacing),
            }
        )
        if writing:
            runlog.save_png(out / "masks" / item.output, mask * np.uint8(255))
            gray = cv2.resize(item.gray, size, interpolation=cv2.INTER_AREA)
            overlay = figures.mask_overlay(gray, small, measured, caption)
            runlog.save_png(out / "overlays" / item.output, overlay)
    rows += [
        {"file": f, "radial_inclination_deg": "", "reason": f"skipped: {why}"} for f, why in skipped
    ]
    if writing:
        _write_csv(out / "measurements.csv", CSV_COLUMNS, rows)
        measured_count = sum(1 for r in rows if r["radial_inclination_deg"])
        print(
            f"{len(found)} images segmented by eq. {equation}, radial inclination measured on "
            f"{measured_count}; {len(skipped)} files skipped; wrote {out / 'measurements.csv'}",
            flush=True,
        )
    return rows


def _spacing_text(spacing: list[float] | None) -> str:
    if not spacing:
        return ""
    if abs(spacing[0] - spacing[1]) < 1e-9:
        return f"{spacing[0]:g}"
    return f"{spacing[0]:g};{spacing[1]:g}"  # row;column, as DICOM lists them


def translate_folder(
    config,
    workdir,
    *,
    source,
    output,
    from_domain: str,
    to_domain: str,
    fit: str = "stretch",
    global_batch: int = 0,
) -> list[dict]:
    """G_{to,from} of every image file in folder `source`, at each file's own size:
    OUT/translated/NAME.png and OUT/translations.csv (file, output, reason); returns the rows."""
    _check_domain(config, from_domain)
    _check_domain(config, to_domain)
    if from_domain == to_domain:
        raise errors.InputError(f"--from and --to are both {from_domain!r}")
    found, skipped = read_folder(source, fit)
    out = storage.as_path(output)
    pair = to_domain + from_domain

    def make_fn(engine, gen_params):
        return lambda x: {"image": engine.translate(gen_params, pair, x)}

    spec = config.domains[from_domain]
    rows = []
    for item, outputs in _folder_run(config, workdir, found, spec, fit, make_fn, global_batch):
        square = transforms.to_uint8(outputs["image"][..., 0])
        translated = to_original_size(square, item.gray.shape, fit, nearest=False)
        rows.append({"file": item.file, "output": f"translated/{item.output}", "reason": ""})
        runlog.save_png(out / "translated" / item.output, translated)
    rows += [{"file": f, "output": "", "reason": f"skipped: {why}"} for f, why in skipped]
    if jax.process_index() == 0:
        _write_csv(out / "translations.csv", ("file", "output", "reason"), rows)
        print(
            f"{len(found)} images translated by G_{pair}; {len(skipped)} files skipped; "
            f"wrote {out / 'translated'}",
            flush=True,
        )
    return rows
