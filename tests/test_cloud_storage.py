"""A gs:// workdir and data dir, against a local GCS emulator on 127.0.0.1 (no network).

A runlocal CycleGAN trains with both its workdir and its datasets in the bucket, is killed with
SIGKILL after its first checkpoint and rerun through launch/local.sh; it must end exactly as the
same run on local disk.
Evaluation and translation then read the trained run from the bucket.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import main_process
import numpy as np
import pytest
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.server import create_server
from main_process import GAN, GAN_OVERRIDES, ROOT

from data_prep import builder, errors, phantom, stage, storage
from xrayjax import evaluate, inference
from xrayjax import logging as runlog
from xrayjax.data import sources

BUCKET = "xray-bucket"
WORKDIR = f"gs://{BUCKET}/runs/cg"
DATA_DIR = f"gs://{BUCKET}/tfds"


def _download_with_generation(original):
    """The emulator's media download, plus the x-goog-generation header that GCS sends on every
    object read and that tensorstore's OCDBT checkpoints (orbax's format) need to read back."""

    def download(request, response, storage_, *args, **kwargs):
        try:
            obj = storage_.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj["metageneration"])
        except NotFound:
            pass  # the original handler answers 404
        return original(request, response, storage_, *args, **kwargs)

    return download


@pytest.fixture(scope="module")
def bucket(phantom_data_dir):
    """An in-memory GCS emulator holding the GAN's two phantom datasets; the environment of
    this process (and the runs it starts) points every GCS client at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    original = objects.download
    objects.download = _download_with_generation(original)  # read at each request
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs (epath's gs:// backend) and google-cloud-storage
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore, which orbax writes through
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # array_record's reader (google-cloud-cpp)
        "GCE_METADATA_ROOT": "127.0.0.1:9",  # no metadata server: credential lookup fails fast
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        for name in ("phantom_forearm_radiograph", "phantom_forearm_clean"):
            storage.copy_tree(
                builder.dataset_dir(phantom_data_dir, name),
                builder.dataset_dir(DATA_DIR, name),
                last=("dataset_info.json",),
            )
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
        objects.download = original


def _object_exists(url: str, name: str) -> bool:
    """Whether the bucket holds object `name`, asked of the emulator directly (no client cache)."""
    quoted = urllib.parse.quote(name, safe="")
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o/{quoted}", timeout=5):
            return True
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise


@pytest.fixture(scope="module")
def trained_in_bucket(bucket, gan_reference):
    """The CycleGAN killed after its first committed checkpoint in the bucket, then rerun."""
    process = main_process.start(GAN, WORKDIR, DATA_DIR, *GAN_OVERRIDES)
    # On GCS, orbax writes a step's folder in place and marks it complete with this object.
    marker = "runs/cg/checkpoints/4/commit_success.txt"
    deadline = time.time() + main_process.TIMEOUT_S
    while not _object_exists(bucket, marker):
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint 4 in the bucket"
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert not _object_exists(bucket, "runs/cg/checkpoints/12/commit_success.txt")
    # Rerun the way a preempted job is: through the launch script, with the same arguments.
    resumed = subprocess.run(
        [
            "bash",
            str(ROOT / "launch/local.sh"),
            GAN,
            WORKDIR,
            f"--config.data_dir={DATA_DIR}",
            *GAN_OVERRIDES,
        ],
        env=dict(main_process.device_env(), PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=main_process.TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return resumed


def test_killed_run_resumes_from_the_bucket_and_ends_as_on_local_disk(
    trained_in_bucket, gan_reference
):
    reference, _ = gan_reference
    assert "resuming at step" in trained_in_bucket.stdout
    assert "resuming at step 0" not in trained_in_bucket.stdout
    remote = storage.as_path(WORKDIR)
    assert runlog.read_metrics(remote) == main_process.metrics(reference)
    config = json.loads((remote / "config.json").read_text())
    assert config["data_dir"] == DATA_DIR
    assert config == {**json.loads((reference / "config.json").read_text()), "data_dir": DATA_DIR}
    assert sorted(p.name for p in (remote / "samples").iterdir()) == [
        "step_00000006.png",
        "step_00000012.png",
    ]
    assert list((remote / "tensorboard").glob("events.out.tfevents.*"))
    want = main_process.flat_arrays(main_process.checkpoint_state(reference, 12)["gen_params"])
    got = main_process.flat_arrays(main_process.checkpoint_state(remote, 12)["gen_params"])
    assert want.keys() == got.keys() and len(want) > 10
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # The URL was never taken for a local path.
    assert not (ROOT / "gs:").exists()
    assert not (ROOT / "gs:").is_symlink()


def test_evaluate_and_translate_read_the_bucket(trained_in_bucket, tmp_path):
    config = main_process.gan_config(DATA_DIR)
    report = evaluate.evaluate(config, WORKDIR)
    assert report["step"] == 12
    remote = storage.as_path(WORKDIR)
    assert json.loads((remote / "eval.json").read_text()) == runlog.json_safe(report)
    assert (remote / "eval" / "translation_AB.png").read_bytes()[:4] == b"\x89PNG"
    inference.translate(
        config,
        WORKDIR,
        source="phantom_forearm_clean:train",
        from_domain="B",
        to_domain="A",
        num=4,
        output="translated_from_bucket",
        data_dir=tmp_path,
    )
    table = sources.open_table("translated_from_bucket", "train", tmp_path)
    assert len(table) == 4 and set(table.column("label")) == {0}
    assert not (ROOT / "gs:").exists() and not (tmp_path / "gs:").exists()


def test_stage_copies_datasets_from_the_bucket_once(bucket, phantom_data_dir, tmp_path):
    names = ["phantom_forearm_radiograph", "phantom_forearm_clean"]
    assert all(count > 0 for count in stage.stage(names, DATA_DIR, tmp_path).values())
    assert stage.stage(names, DATA_DIR, tmp_path) == {name: 0 for name in names}  # all there
    for name in names:
        local = sources.open_table(name, "train", tmp_path)
        original = sources.open_table(name, "train", phantom_data_dir)
        assert len(local) == len(original)
        assert local[3]["image"] == original[3]["image"]
    with pytest.raises(errors.MissingInput, match="phantom_wrist_clean"):
        stage.stage(["phantom_wrist_clean"], DATA_DIR, tmp_path)
    # A builder writes to the bucket too: built locally, then uploaded whole.
    spec = phantom.PhantomSpec("wrist", "clean", num=4, num_test=2, seed=4)
    phantom.build(spec, DATA_DIR, size=64, overwrite=False)
    assert not (ROOT / "gs:").exists()
    stage.stage(["phantom_wrist_clean"], DATA_DIR, tmp_path)
    assert len(sources.open_table("phantom_wrist_clean", "test", tmp_path)) == 2
    assert len(sources.open_table("phantom_wrist_clean", "train", DATA_DIR)) == 4
