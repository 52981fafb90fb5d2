"""Every experiment config loads, rejects bad variants, and its runlocal variant trains."""

import importlib
import json
import pathlib

import pytest

CONFIGS = sorted(
    p.stem
    for p in (pathlib.Path(__file__).parents[2] / "configs").glob("*.py")
    if p.stem not in ("__init__", "common")
)
GAN_CONFIGS = [name for name in CONFIGS if "cyclegan" in name]


def test_there_are_configs():
    assert {"cyclegan_forearm", "multicyclegan_forearm", "multicyclegan_wrist"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_default_config_cites_thesis_values(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    if name in GAN_CONFIGS:
        assert config.num_epochs == 30 and config.image_size == 256
        assert config.optim.constant_epochs == 10
        three = name.startswith("multi")
        assert len(config.domains) == (3 if three else 2)
        assert config.disc_every == (3 if three else 1)
        assert (config.loss.cycle_weight, config.loss.identity_weight) == (
            (5.0, 1.0) if three else (10.0, 5.0)
        )
    with pytest.raises(ValueError, match="unknown config variant"):
        importlib.import_module(f"configs.{name}").get_config("colour=blue")


def test_cyclegan_variants_filter_labels():
    module = importlib.import_module("configs.cyclegan_forearm")
    assert module.get_config("cls=abnormal").domains.A.labels == (1,)
    assert module.get_config("cls=normal,data=phantom").domains.A.dataset == (
        "phantom_forearm_radiograph"
    )
    with pytest.raises(ValueError, match="allowed: normal, abnormal"):
        module.get_config("cls=broken")


def test_yes_no_variants_refuse_unknown_spellings():
    from configs import common

    for value, want in (("", True), ("TRUE", True), ("yes", True), ("1", True), ("No", False)):
        item = "runlocal" + (f"={value}" if value else "")
        assert common.parse_arg(item, runlocal=False).runlocal is want
    # A typo is refused, not read as no: the message names the key, the value and the spellings.
    with pytest.raises(ValueError) as refused:
        common.parse_arg("data=phantom,runlocal=ture", runlocal=False, data="mura")
    message = str(refused.value)
    assert "runlocal='ture'" in message and "1, true, yes, 0, false, no" in message
    with pytest.raises(ValueError, match="synthetic='lots' is not a whole number"):
        common.parse_arg("synthetic=lots", synthetic=0)


@pytest.mark.parametrize("name", GAN_CONFIGS)
def test_runlocal_trains(name, tiny_gan):
    config, workdir, state = tiny_gan(name)
    assert int(state["step"]) == config.total_steps
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, config.total_steps + 1))
    assert len(state["gen_params"]) == len(config.domains) * (len(config.domains) - 1)


def test_layer_forms_reach_the_networks_and_a_typo_is_refused():
    from configs import cyclegan_forearm, segmenter_forearm
    from data_prep import errors
    from xrayjax import build

    config = cyclegan_forearm.get_config("runlocal")
    config.model.update(
        reflect_conv="valid", upsample="transpose", downsample="conv", weight_grad="xla"
    )
    engine = build.gan_engine(config, steps_per_epoch=1, total_steps=1)
    generator = engine.generator
    forms = (generator.reflect_conv, generator.upsample, generator.downsample)
    assert (*forms, generator.weight_grad) == ("valid", "transpose", "conv", "xla")
    assert engine.discriminator.weight_grad == "xla"
    segmenter_config = segmenter_forearm.get_config("runlocal")
    segmenter_config.model.weight_grad = "matmul"
    assert build.segmenter_engine(segmenter_config).model.weight_grad == "matmul"
    # A workdir's config.json from before the fields existed means the "auto" forms it ran.
    del config.model["reflect_conv"]
    assert build.layer_forms(config)["reflect_conv"] == "auto"
    config.model.weight_grad = "matmull"
    with pytest.raises(errors.InputError, match=r"model.weight_grad='matmull'; allowed: auto"):
        build.gan_engine(config, steps_per_epoch=1, total_steps=1)


def test_a_large_cpu_step_takes_the_forms_of_xla_convolutions():
    import jax

    from configs import cyclegan_forearm
    from xrayjax import build

    config = cyclegan_forearm.get_config("runlocal")
    config.model.weight_grad = "matmul"  # chosen by the user: kept
    engine = build.gan_engine(config, steps_per_epoch=1, total_steps=1)
    large = build.large_cpu_step_engine(engine)
    forms = (large.generator.reflect_conv, large.generator.upsample, large.generator.downsample)
    assert forms == ("winograd", "auto", "taps")
    assert large.generator.weight_grad == large.discriminator.weight_grad == "matmul"
    large = build.large_cpu_step_engine(engine, build.WINOGRAD_WEIGHT_GRAD_MIN_BYTES_ACCESSED + 1)
    assert large.generator.weight_grad == "matmul"
    config.model.weight_grad = "auto"
    engine = build.gan_engine(config, 1, 1)
    large = build.large_cpu_step_engine(engine, build.WINOGRAD_WEIGHT_GRAD_MIN_BYTES_ACCESSED)
    assert large.generator.weight_grad == large.discriminator.weight_grad == "xla"
    # Above its threshold Winograd's weight gradient, which the discriminator takes as XLA's.
    step = build.large_cpu_train_step(engine)(build.WINOGRAD_WEIGHT_GRAD_MIN_BYTES_ACCESSED + 1)
    large = step.__self__
    assert large.generator.weight_grad == large.discriminator.weight_grad == "winograd"
    # Other forms, the same parameters: a state or checkpoint serves both engines.
    init = jax.eval_shape(build.gan_init(engine, config), jax.random.PRNGKey(0))
    large_init = jax.eval_shape(build.gan_init(large, config), jax.random.PRNGKey(0))
    assert jax.tree.structure(init) == jax.tree.structure(large_init)
    assert jax.tree.leaves(init) == jax.tree.leaves(large_init)
