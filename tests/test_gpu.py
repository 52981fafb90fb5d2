"""Checks that need an accelerator (run by launch/gpu_check.sh; skipped on CPU)."""

import jax
import numpy as np
import pytest

from xrayjax import parallel


@pytest.mark.gpu
def test_bfloat16_and_float32_steps_agree():
    from configs import cyclegan_forearm
    from xrayjax import build

    rng = np.random.default_rng(0)
    rows = 2 * jax.device_count()  # divides over every accelerator of the machine
    batch = {d: {"image": rng.uniform(-1, 1, (rows, 64, 64, 1)).astype(np.float32)} for d in "AB"}
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config = cyclegan_forearm.get_config("runlocal")
        config.dtype = dtype
        engine = build.gan_engine(config, steps_per_epoch=10, total_steps=100)
        mesh = parallel.make_mesh()
        state = jax.jit(lambda k, e=engine: e.init(k, (64, 64, 1)))(jax.random.PRNGKey(0))
        step = parallel.jit_step(engine.train_step, mesh, parallel.replicate(mesh, state))
        history = []
        for _ in range(3):
            state, metrics = step(state, parallel.global_batch_array(mesh, batch))
            history.append(float(metrics["loss_g"]))
        losses[dtype] = history
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05)
