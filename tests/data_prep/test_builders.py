"""Dataset builders on small fake MURA, RSNA and image-folder trees made here."""

import json
import pathlib

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import builder, image_folder, mura, rsna_boneage

SIZE = 32
# A 12-bit detector's range inside a 16-bit PNG, already at the output size.
SIXTEEN_BIT = np.linspace(1000, 4095, SIZE * SIZE).reshape(SIZE, SIZE).astype(np.uint16)


def _png(path: pathlib.Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _read(data_dir: pathlib.Path, name: str, split: str) -> list[dict]:
    ds = tfds.builder_from_directory(str(builder.dataset_dir(data_dir, name)))
    source = ds.as_data_source(split=split)
    return [source[i] for i in range(len(source))]


def _report(data_dir, name):
    return json.loads((builder.dataset_dir(data_dir, name) / "prep_report.json").read_text())


def _make_mura(root: pathlib.Path) -> pathlib.Path:
    """A MURA-v1.1 tree: 2 train forearm studies, 1 valid study, plus decoys."""
    src = root / "MURA-v1.1"
    rng = np.random.default_rng(0)
    images = {
        "train/XR_FOREARM/patient00001/study1_positive/image1.png": rng.integers(
            0, 255, (40, 30, 3), dtype=np.uint8
        ),  # RGB
        "train/XR_FOREARM/patient00001/study1_positive/image2.png": SIXTEEN_BIT,
        "train/XR_FOREARM/patient00002/study1_negative/image1.png": rng.integers(
            0, 255, (64, 64), dtype=np.uint8
        ),
        "train/XR_HAND/patient00003/study1_negative/image1.png": np.zeros((8, 8), np.uint8),
        "valid/XR_FOREARM/patient00010/study1_negative/image1.png": np.full((20, 20), 9, np.uint8),
        "valid/XR_FOREARM/patient00011/study2_positive/image1.png": np.full((20, 20), 7, np.uint8),
    }
    for rel, image in images.items():
        _png(src / rel, image)
    corrupt = src / "train/XR_FOREARM/patient00002/study1_negative/image2.png"
    good = cv2.imencode(".png", np.zeros((30, 30), np.uint8))[1].tobytes()
    corrupt.write_bytes(good[: len(good) // 2])  # truncated PNG
    text = src / "train/XR_FOREARM/patient00002/study1_negative/image3.png"
    text.write_text("not an image at all\n")
    train_paths = [
        "MURA-v1.1/train/XR_FOREARM/patient00001/study1_positive/image1.png",
        "MURA-v1.1/train/XR_FOREARM/patient00001/study1_positive/image2.png",
        "MURA-v1.1/train/XR_FOREARM/patient00002/study1_negative/image1.png",
        "MURA-v1.1/train/XR_FOREARM/patient00002/study1_negative/image2.png",
        "MURA-v1.1/train/XR_FOREARM/patient00002/study1_negative/image3.png",
        "MURA-v1.1/train/XR_HAND/patient00003/study1_negative/image1.png",
    ]
    (src / "train_image_paths.csv").write_text("\n".join(train_paths) + "\n")
    (src / "train_labeled_studies.csv").write_text(
        "MURA-v1.1/train/XR_FOREARM/patient00001/study1_positive/,1\n"
        "MURA-v1.1/train/XR_FOREARM/patient00002/study1_negative/,0\n"
        "MURA-v1.1/train/XR_HAND/patient00003/study1_negative/,0\n"
    )
    (src / "valid_image_paths.csv").write_text(
        "MURA-v1.1/valid/XR_FOREARM/patient00010/study1_negative/image1.png\n"
        "MURA-v1.1/valid/XR_FOREARM/patient00011/study2_positive/image1.png\n"
    )
    (src / "valid_labeled_studies.csv").write_text(
        "MURA-v1.1/valid/XR_FOREARM/patient00010/study1_negative/,0\n"
        "MURA-v1.1/valid/XR_FOREARM/patient00011/study2_positive/,1\n"
    )
    return src


def test_mura_counts_labels_ids_and_skips(tmp_path):
    src = _make_mura(tmp_path)
    data = tmp_path / "tfds"
    assert (
        builder.run_cli(
            mura.main, ["--source", str(src), "--data-dir", str(data), "--image-size", str(SIZE)]
        )
        == 0
    )
    train = _read(data, "mura", "train")
    assert len(train) == 3  # forearm only; the hand and two bad files are left out
    by_path = {r["image_path"].decode(): r for r in train}
    rgb = by_path["train/XR_FOREARM/patient00001/study1_positive/image1.png"]
    assert rgb["label"] == 1 and rgb["image"].shape == (SIZE, SIZE, 1)
    assert rgb["patient_id"] == b"patient00001" and rgb["study_id"] == b"patient00001/study1"
    sixteen = by_path["train/XR_FOREARM/patient00001/study1_positive/image2.png"]
    stretched = np.round((SIXTEEN_BIT - 1000.0) * 255.0 / 3095.0).astype(np.uint8)
    np.testing.assert_array_equal(sixteen["image"][:, :, 0], stretched)
    assert by_path["train/XR_FOREARM/patient00002/study1_negative/image1.png"]["label"] == 0
    valid = _read(data, "mura", "valid")
    assert sorted((r["patient_id"], r["label"]) for r in valid) == [
        (b"patient00010", 0),
        (b"patient00011", 1),
    ]
    report = _report(data, "mura")
    assert report["splits"]["train"]["seen"] == 5
    assert report["splits"]["train"]["written"] == 3
    assert report["splits"]["train"]["skipped_by_reason"] == {
        "not an image (unrecognised file signature)": 1,
        "truncated PNG": 1,
    }
    assert report["splits"]["valid"]["skipped"] == 0


def test_mura_gray_conversion_of_rgb(tmp_path):
    src = _make_mura(tmp_path)
    data = tmp_path / "tfds"
    mura.main(["--source", str(src), "--data-dir", str(data), "--image-size", "64"])
    rgb = cv2.imread(str(src / "train/XR_FOREARM/patient00001/study1_positive/image1.png"))
    expected = cv2.resize(
        cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY), (64, 64), interpolation=cv2.INTER_CUBIC
    )
    record = [
        r
        for r in _read(data, "mura", "train")
        if r["image_path"].endswith(b"image1.png") and r["label"] == 1
    ][0]
    np.testing.assert_array_equal(record["image"][:, :, 0], expected)


def test_mura_errors(tmp_path, capsys):
    src = _make_mura(tmp_path)
    data = tmp_path / "tfds"
    (src / "valid_labeled_studies.csv").unlink()
    assert builder.run_cli(mura.main, ["--source", str(src), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "valid_labeled_studies.csv not found" in err
    assert not builder.dataset_exists(data, "mura")

    src = _make_mura(tmp_path / "second")
    (src / "train/XR_FOREARM/patient00002/study1_negative/image1.png").unlink()
    assert builder.run_cli(mura.main, ["--source", str(src), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "train_image_paths.csv:3" in err and "patient00002/study1_negative/image1.png" in err
    assert not builder.dataset_exists(data, "mura")

    # With a header row, the CSV is named with the line and the expected form.
    src = _make_mura(tmp_path / "third")
    paths = src / "valid_image_paths.csv"
    paths.write_text("Path\n" + paths.read_text())
    assert builder.run_cli(mura.main, ["--source", str(src), "--data-dir", str(data)]) == 2
    assert "valid_image_paths.csv:1" in capsys.readouterr().err

    assert (
        builder.run_cli(mura.main, ["--source", str(tmp_path / "nope"), "--data-dir", str(data)])
        == 2
    )
    assert "nope is not a folder" in capsys.readouterr().err
    assert (
        builder.run_cli(
            mura.main, ["--source", str(src), "--data-dir", str(data), "--body-part", "XR_KNEE"]
        )
        == 2
    )
    assert "XR_FOREARM" in capsys.readouterr().err


def _make_rsna(root: pathlib.Path, doubled: bool) -> pathlib.Path:
    src = root / "rsna"
    train_dir = src / "boneage-training-dataset"
    test_dir = src / "boneage-test-dataset"
    if doubled:
        train_dir, test_dir = train_dir / train_dir.name, test_dir / test_dir.name
    for i, record_id in enumerate((1377, 1378, 1379)):
        _png(train_dir / f"{record_id}.png", np.full((48, 40), 10 * i, np.uint8))
    _png(test_dir / "4360.png", np.zeros((48, 40), np.uint8))
    (src / "boneage-training-dataset.csv").write_text(
        "id,boneage,male\n1377,180,False\n1378,12,True\n1379,94,False\n"
    )
    (src / "boneage-test-dataset.csv").write_text("Case ID,Sex\n4360,M\n")
    return src


@pytest.mark.parametrize("doubled", [True, False])
def test_rsna(tmp_path, doubled):
    src = _make_rsna(tmp_path, doubled)
    data = tmp_path / "tfds"
    rsna_boneage.main(["--source", str(src), "--data-dir", str(data), "--image-size", str(SIZE)])
    train = {r["id"]: r for r in _read(data, "rsna_boneage", "train")}
    assert sorted(train) == [b"1377", b"1378", b"1379"]
    assert train[b"1377"]["boneage_months"] == 180 and train[b"1377"]["male"] == 0
    assert train[b"1378"]["male"] == 1 and train[b"1379"]["image"].shape == (SIZE, SIZE, 1)
    assert int(train[b"1379"]["image"].mean()) == 20
    test = _read(data, "rsna_boneage", "test")
    assert len(test) == 1 and test[0]["boneage_months"] == -1 and test[0]["male"] == 1


def test_rsna_errors(tmp_path, capsys):
    src = _make_rsna(tmp_path, True)
    data = tmp_path / "tfds"
    csv_path = src / "boneage-training-dataset.csv"
    csv_path.write_text("id,age,male\n1377,180,False\n")
    assert builder.run_cli(rsna_boneage.main, ["--source", str(src), "--data-dir", str(data)]) == 2
    assert "missing column(s) ['boneage']" in capsys.readouterr().err
    csv_path.write_text("id,boneage,male\n1377,180,False\n9999,5,True\n")
    assert builder.run_cli(rsna_boneage.main, ["--source", str(src), "--data-dir", str(data)]) == 2
    assert "9999.png does not exist" in capsys.readouterr().err
    assert not builder.dataset_exists(data, "rsna_boneage")


def _make_folder(root: pathlib.Path) -> pathlib.Path:
    src = root / "renders"
    for i in range(3):
        _png(src / "normal" / f"n{i}.png", np.full((40, 40), 50 + i, np.uint8))
    for i in range(2):
        _png(src / "abnormal" / f"a{i}.png", np.full((40, 40), 100 + i, np.uint8))
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    _png(src / "abnormal" / "a2.png", rgba)
    (src / "normal" / "empty.png").write_bytes(b"")
    (src / "normal" / "notes.txt").write_text("rendered with AnatomyPlot3D\n")
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 5:15] = 255
    _png(src / "masks" / "n0.png", mask)
    _png(src / "masks" / "a1.png", mask)
    return src


def test_image_folder_classes_and_masks(tmp_path):
    src = _make_folder(tmp_path)
    data = tmp_path / "tfds"
    image_folder.main(
        [
            "--source",
            str(src),
            "--name",
            "renders",
            "--data-dir",
            str(data),
            "--image-size",
            str(SIZE),
        ]
    )
    records = {r["file_name"].decode(): r for r in _read(data, "renders", "train")}
    assert sorted(records) == [
        "abnormal/a0.png",
        "abnormal/a1.png",
        "abnormal/a2.png",
        "normal/n0.png",
        "normal/n1.png",
        "normal/n2.png",
    ]
    assert [records[k]["label"] for k in sorted(records)] == [1, 1, 1, 0, 0, 0]
    assert {k for k, r in records.items() if r["has_mask"]} == {"normal/n0.png", "abnormal/a1.png"}
    mask = records["normal/n0.png"]["mask"][:, :, 0]
    assert set(np.unique(mask)) == {0, 1}
    # 20×10 of 40×40 pixels is 1/8 of the image, resized to SIZE×SIZE.
    assert mask.sum() == SIZE * SIZE // 8
    assert records["normal/n1.png"]["mask"].sum() == 0
    assert records["abnormal/a2.png"]["image"][0, 0, 0] == 200  # RGBA → gray
    report = _report(data, "renders")["splits"]["train"]
    assert report["seen"] == 8 and report["written"] == 6
    assert report["skipped_by_reason"] == {
        "empty file": 1,
        "not an image (unrecognised file signature)": 1,
    }


def test_image_folder_without_classes_and_errors(tmp_path, capsys):
    src = tmp_path / "flat"
    _png(src / "x.png", np.zeros((10, 10), np.uint8))
    data = tmp_path / "tfds"
    image_folder.main(["--source", str(src), "--name", "flat", "--data-dir", str(data)])
    (record,) = _read(data, "flat", "train")
    assert record["label"] == -1 and not record["has_mask"]
    # A second build does not touch the first; --overwrite replaces it.
    _png(src / "y.png", np.zeros((10, 10), np.uint8))
    image_folder.main(["--source", str(src), "--name", "flat", "--data-dir", str(data)])
    assert len(_read(data, "flat", "train")) == 1
    image_folder.main(
        ["--source", str(src), "--name", "flat", "--data-dir", str(data), "--overwrite"]
    )
    assert len(_read(data, "flat", "train")) == 2

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_text("text")
    code = builder.run_cli(
        image_folder.main, ["--source", str(junk), "--name", "junk", "--data-dir", str(data)]
    )
    assert code == 2 and "no usable images" in capsys.readouterr().err
    assert not builder.dataset_exists(data, "junk")
    assert not [p for p in data.iterdir() if p.name.startswith(".incomplete")]
    code = builder.run_cli(
        image_folder.main, ["--source", str(src), "--name", "Bad-Name", "--data-dir", str(data)]
    )
    assert code == 2 and "Bad-Name" in capsys.readouterr().err


def test_failed_build_leaves_no_dataset(tmp_path):
    data = tmp_path / "tfds"

    def generate(recorder):
        for i in range(5):
            if i == 3:
                raise RuntimeError("disk on fire")
            recorder.seen += 1
            yield str(i), {"image": b"", "label": i}

    features = {"image": builder.image_feature(8), "label": np.int64}
    with pytest.raises(RuntimeError, match="disk on fire"):
        builder.build_dataset(
            "broken", features, {"train": generate}, data, source="test", description=""
        )
    assert not builder.dataset_exists(data, "broken")
    assert [p.name for p in data.iterdir()] == []


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert builder.default_data_dir() == tmp_path
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert builder.default_data_dir() == pathlib.Path("~/tensorflow_datasets").expanduser()
