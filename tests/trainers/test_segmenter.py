"""The supervised bone segmenter: it learns masks, its eval.json is what it measures, it resumes
without retraining, and GAN evaluation can load it."""

import json

import jax
import numpy as np
import pytest

from configs import segmenter_forearm
from xrayjax import build, parallel
from xrayjax.data import pipelines, sources
from xrayjax.evaluators import segmentation
from xrayjax.models import layers
from xrayjax.trainers import segmenter


@pytest.fixture(scope="module")
def trained(phantom_data_dir, tmp_path_factory):
    # Clean renders, whose masks are exactly image > 0: a few dozen steps learn them.
    config = segmenter_forearm.get_config("runlocal")
    config.data_dir = str(phantom_data_dir)
    config.data.train = "phantom_forearm_clean:train"
    config.data.test = "phantom_forearm_clean:test"
    config.data.clahe = False
    config.total_steps = 60
    config.checkpoint_every = 30
    config.model.features = 8
    config.model.update(layers.PLAIN_FORMS)  # compiles faster (main_process.PLAIN_FORMS)
    config.optim.lr = 3e-3
    workdir = tmp_path_factory.mktemp("segmenter")
    segmenter.train(config, workdir)
    return config, workdir


def test_it_learns_and_eval_json_is_what_the_loaded_segmenter_measures(trained):
    config, workdir = trained
    report = json.loads((workdir / "eval.json").read_text())
    assert report["step"] == 60 and report["num_images"] == 8 and len(report["dice"]) == 8
    assert report["dice_mean"] > 0.5  # all-background scores 0, all-bone about 0.1 here
    loaded = build.load_segmenter(workdir, parallel.make_mesh())
    assert loaded.describe()["reference_dice"] == report["dice_mean"]
    table = sources.masked_table(config.data.test, config.data_dir)
    batch = next(
        pipelines.eval_iterator(
            table, build.segmenter_preprocess(config, augment=False), global_batch=8
        )
    )
    bone = np.asarray(jax.jit(loaded.apply)(batch["image"]))
    dice = [
        segmentation.dice(b[..., 0], m[..., 0] > 0)
        for b, m in zip(bone, batch["mask"], strict=True)
    ]
    np.testing.assert_allclose(dice, report["dice"], atol=1e-6)


def test_rerun_of_a_finished_run_trains_nothing(trained, capsys):
    config, workdir = trained
    before = (workdir / "metrics.jsonl").read_text()
    segmenter.train(config, workdir)
    assert "resuming at step 60 of 60" in capsys.readouterr().out
    assert (workdir / "metrics.jsonl").read_text() == before


def test_a_dataset_without_masks_is_refused(trained, tmp_path):
    config, _ = trained
    config = config.copy_and_resolve_references()
    config.data.train = "phantom_forearm_clean:valid"
    with pytest.raises(Exception, match="no split 'valid'"):
        segmenter.train(config, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="train a segmenter"):
        build.load_segmenter(tmp_path / "nothing", parallel.make_mesh())
