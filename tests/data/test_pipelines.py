"""grain pipelines: CLAHE, determinism across workers and processes, exact resume, padding."""

import os
import time

import cv2
import numpy as np
import pytest

from data_prep import builder, images
from xrayjax.data import pipelines, sources, transforms

SIZE = 32
N = 36


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A dataset `toy` of N random 32×32 images with labels 0/1 and masks."""
    data = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)

    def generate(recorder):
        for i in range(N):
            recorder.seen += 1
            # Smooth low-contrast images, so CLAHE visibly changes them.
            image = cv2.GaussianBlur(rng.integers(60, 120, (SIZE, SIZE), dtype=np.uint8), (5, 5), 0)
            mask = (image > 90).astype(np.uint8)
            yield (
                f"r{i}",
                {
                    "image": images.encode_png(image),
                    "mask": images.encode_png(mask),
                    "label": i % 3 == 0,
                    "record": i,
                },
            )

    features = {
        "image": builder.image_feature(SIZE),
        "mask": builder.image_feature(SIZE),
        "label": np.int64,
        "record": np.int64,
    }
    builder.build_dataset(
        "toy", features, {"train": generate, "test": generate}, data, source="test", description=""
    )
    return data


def _batches(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


TRAIN = transforms.Preprocess(image_size=24, load_size=28, use_clahe=True, rotate_deg=20.0)


def test_clahe_matches_opencv(data_dir):
    table = sources.open_table("toy", "test", data_dir)
    pre = transforms.Preprocess(image_size=SIZE, use_clahe=True, augment=False, keep=("record",))
    batch = next(pipelines.eval_iterator(table, pre, global_batch=4))
    raw = table[int(batch["index"][0])]
    decoded = cv2.imdecode(np.frombuffer(raw["image"], np.uint8), cv2.IMREAD_GRAYSCALE)
    expected = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(decoded)
    assert not np.array_equal(expected, decoded)
    np.testing.assert_allclose(batch["image"][0, :, :, 0], expected / 127.5 - 1.0, atol=1e-6)


def test_train_batches_shapes_and_values(data_dir):
    table = sources.open_table("toy", "train", data_dir)
    batch = next(pipelines.train_iterator(table, TRAIN, global_batch=8, seed=3))
    assert batch["image"].shape == (8, 24, 24, 1) and batch["image"].dtype == np.float32
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    assert batch["label"].shape == (8,) and len(set(batch["index"].tolist())) == 8


def test_same_batches_for_0_and_2_workers(data_dir):
    table = sources.open_table("toy", "train", data_dir)
    kwargs = dict(global_batch=8, seed=5)
    serial = _batches(pipelines.train_iterator(table, TRAIN, workers=0, **kwargs), 6)
    parallel = _batches(pipelines.train_iterator(table, TRAIN, workers=2, **kwargs), 6)
    _assert_same(serial, parallel)
    other_seed = next(pipelines.train_iterator(table, TRAIN, global_batch=8, seed=6))
    assert not np.array_equal(other_seed["index"], serial[0]["index"])


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_iterator_continues_exactly(data_dir, workers):
    table = sources.open_table("toy", "train", data_dir)
    make = lambda: pipelines.train_iterator(table, TRAIN, global_batch=8, seed=1, workers=workers)  # noqa: E731
    uninterrupted = make()
    _batches(uninterrupted, 4)  # crosses the first epoch boundary (36 records, 8 per batch)
    state = uninterrupted.get_state()
    expected = _batches(uninterrupted, 3)
    resumed = make()
    resumed.set_state(state)
    _assert_same(_batches(resumed, 3), expected)


class _Counting:
    """A preprocess that counts the records it has prepared."""

    def __init__(self, preprocess):
        self.preprocess, self.calls = preprocess, 0

    def __call__(self, record, rng=None):
        self.calls += 1
        return self.preprocess(record, rng)


def test_reads_a_few_batches_ahead_not_hundreds(data_dir):
    """A short run must not preprocess hundreds of batches it never uses: grain's default
    read-ahead (500 elements, each a batch here) took the cores from the train step."""
    table = sources.open_table("toy", "train", data_dir)
    counting = _Counting(TRAIN)
    iterator = pipelines.train_iterator(table, counting, global_batch=4, seed=0)
    first = next(iterator)
    time.sleep(1.0)  # the read-ahead threads fill their buffer meanwhile
    # Two batches per thread at most, a thread per core (grain's default read 500 ahead).
    threads = min(16, os.cpu_count() or 1)
    assert 4 * 2 <= counting.calls <= 4 * (1 + 3 * threads), counting.calls
    # Bounded read-ahead changes nothing in what is read.
    _assert_same(
        [first], _batches(pipelines.train_iterator(table, TRAIN, global_batch=4, seed=0), 1)
    )


def test_new_permutation_each_epoch(data_dir):
    table = sources.open_table("toy", "train", data_dir)
    it = pipelines.train_iterator(table, TRAIN, global_batch=6, seed=0)
    epochs = [np.concatenate([b["index"] for b in _batches(it, N // 6)]) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(N))
    assert not np.array_equal(epochs[0], epochs[1])


def test_process_shards_are_disjoint_cover_and_form_the_global_batch(data_dir):
    table = sources.open_table("toy", "train", data_dir)
    g = 12
    single = _batches(pipelines.train_iterator(table, TRAIN, global_batch=g, seed=2), N // g)
    shards = [
        _batches(
            pipelines.train_iterator(
                table, TRAIN, global_batch=g, seed=2, process_index=p, process_count=2
            ),
            N // g,
        )
        for p in range(2)
    ]
    seen = [set(np.concatenate([b["index"] for b in shard]).tolist()) for shard in shards]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(N))
    for whole, first, second in zip(single, *shards, strict=True):
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([first[key], second[key]]))


def test_eval_pads_and_covers_once(data_dir):
    table = sources.open_table("toy", "test", data_dir)
    pre = transforms.Preprocess(image_size=16, augment=False)
    g = 8  # 36 records → 5 global batches, the last with 4 padded rows
    assert pipelines.eval_batches(table, g) == 5
    per_process = [
        list(pipelines.eval_iterator(table, pre, global_batch=g, process_index=p, process_count=2))
        for p in range(2)
    ]
    assert [len(b) for b in per_process] == [5, 5]
    valid = np.concatenate([b["index"][b["valid"]] for shard in per_process for b in shard])
    assert sorted(valid.tolist()) == list(range(N))
    padded = [b for shard in per_process for b in shard if not b["valid"].all()]
    assert sum(int((~b["valid"]).sum()) for b in padded) == 4
    assert all((b["image"][~b["valid"]] == -1).all() for b in padded)
    whole = list(pipelines.eval_iterator(table, pre, global_batch=g))
    np.testing.assert_array_equal(
        np.concatenate([b["index"] for b in whole]), np.r_[np.arange(N), [-1] * 4]
    )


def test_unpaired_domains_and_mask_domain(data_dir):
    images_table = sources.open_table("toy", "train", data_dir)
    masks_pre = transforms.Preprocess(image_size=24, load_size=28, image_key="mask")
    it = pipelines.unpaired_iterator(
        {"A": (images_table, TRAIN), "C": (images_table, masks_pre)}, global_batch=4, seed=0
    )
    batches = _batches(it, 3)
    assert set(batches[0]) == {"A", "C"}
    masks = np.concatenate([b["C"]["image"] for b in batches])
    assert set(np.unique(masks).tolist()) == {-1.0, 1.0}  # masks stay binary
    # Each domain has its own order.
    order_a = np.concatenate([b["A"]["index"] for b in batches])
    order_c = np.concatenate([b["C"]["index"] for b in batches])
    assert not np.array_equal(order_a, order_c)


def test_label_filter_and_concatenate(data_dir):
    abnormal = sources.open_table("toy", "train", data_dir, labels=[1])
    assert len(abnormal) == N // 3 and set(abnormal.column("label").tolist()) == {1}
    both = sources.concatenate([abnormal, sources.open_table("toy", "test", data_dir, labels=[0])])
    assert len(both) == N and both.names == ["toy:train", "toy:test"]
    assert both[len(abnormal)]["source"] == 1


def test_batch_must_divide_processes():
    with pytest.raises(ValueError, match="does not divide by the 3 processes"):
        pipelines.per_process_batch(8, 3)


def test_missing_dataset_and_split_messages(data_dir, tmp_path):
    with pytest.raises(sources.DatasetNotFound, match="python -m data_prep.mura"):
        sources.open_table("mura", "train", tmp_path)
    with pytest.raises(sources.DatasetNotFound, match="data_prep.phantom --preset configs"):
        sources.open_table("phantom_forearm_clean", "train", tmp_path)
    with pytest.raises(sources.DatasetNotFound, match=r"has no split 'valid'.*\['test', 'train'\]"):
        sources.open_table("toy", "valid", data_dir)


def test_paired_image_and_mask_stay_registered(data_dir):
    """PairedPreprocess crops and flips an image and its mask alike (toy masks are image > 90)."""
    table = sources.open_table("toy", "train", data_dir)
    common = dict(image_size=24, load_size=SIZE, augment=True, keep=())
    paired = transforms.PairedPreprocess(
        image=transforms.Preprocess(**common),
        mask=transforms.Preprocess(image_key="mask", **common),
    )
    outputs = set()
    for i in range(8):
        out = paired(table[i], np.random.default_rng(i))
        assert out["image"].shape == out["mask"].shape == (24, 24, 1)
        pixels = np.round((out["image"][..., 0] + 1.0) * 127.5)
        np.testing.assert_array_equal(out["mask"][..., 0] > 0, pixels > 90)
        assert set(np.unique(out["mask"])) <= {-1.0, 1.0}
        again = paired(table[0], np.random.default_rng(100 + i))["image"]
        outputs.add(again.tobytes())
    assert len(outputs) > 1  # the augmentation does vary
    with pytest.raises(ValueError, match="must read 'mask'"):
        transforms.PairedPreprocess(image=transforms.Preprocess(), mask=transforms.Preprocess())


def test_load_size_equal_to_image_size_trains_at_the_evaluated_scale(data_dir):
    """With load_size == image_size a training crop is the evaluated image or its mirror, never
    an enlarged window: the scale the GANs and the segmenter are measured at."""
    table = sources.open_table("toy", "train", data_dir)
    evaluated = transforms.Preprocess(image_size=SIZE, augment=False, keep=())(table[3])["image"]
    same = transforms.Preprocess(image_size=SIZE, load_size=SIZE, keep=())
    zoomed = transforms.Preprocess(image_size=SIZE, load_size=SIZE + SIZE // 8, keep=())
    views = {evaluated.tobytes(), evaluated[:, ::-1].tobytes()}
    seen = {same(table[3], np.random.default_rng(i))["image"].tobytes() for i in range(8)}
    assert seen == views  # both flips appear, nothing else
    for i in range(8):
        assert zoomed(table[3], np.random.default_rng(i))["image"].tobytes() not in views
