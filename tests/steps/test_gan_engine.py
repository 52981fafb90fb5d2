"""The N-domain GAN engine: structure, update rules, and equality across device counts."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xrayjax import optim, parallel
from xrayjax.steps.gan import GanEngine, example_keys


class TinyGenerator(nn.Module):
    """Conv → dropout → conv → tanh: enough to exercise dropout keys and gradients.

    It has the generator interface the engine calls: masks drawn per example beforehand.
    """

    dropout_rate: float = 0.5

    def draw_dropout_masks(self, keys, image_shape):
        keep = 1.0 - self.dropout_rate
        return jax.vmap(lambda k: jax.random.bernoulli(k, keep, (*image_shape[:2], 4)))(keys)

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_masks=None):
        h = nn.relu(nn.Conv(4, (3, 3))(x))
        if train and dropout_masks is not None:
            h = jnp.where(dropout_masks, h / (1.0 - self.dropout_rate), 0.0)
        else:
            h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return jnp.tanh(nn.Conv(1, (3, 3))(h))


class TinyDiscriminator(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Conv(1, (4, 4), strides=(2, 2))(nn.leaky_relu(nn.Conv(4, (3, 3))(x), 0.2))


def _engine(domains="AB", disc_every=1, pool_size=4, total_steps=6):
    return GanEngine(
        domains=tuple(domains),
        generator=TinyGenerator(),
        discriminator=TinyDiscriminator(),
        gen_tx=optim.adam(2e-3, b1=0.5, b2=0.999, scheduled=True),
        disc_tx=optim.adam(1e-3, b1=0.5, b2=0.999, scheduled=True),
        cycle_weight=10.0,
        identity_weight=5.0,
        pool_size=pool_size,
        disc_every=disc_every,
        gen_schedule=optim.constant_then_linear_decay(2e-3, 2, total_steps),
        disc_schedule=optim.constant_then_linear_decay(
            1e-3, 2 // disc_every, max(1, total_steps // disc_every)
        ),
    )


def _batches(domains, n, batch=4, size=8):
    rng = np.random.default_rng(0)
    return [
        {
            d: {"image": rng.uniform(-1, 1, (batch, size, size, 1)).astype(np.float32)}
            for d in domains
        }
        for _ in range(n)
    ]


def _run(engine, devices, batches):
    mesh = parallel.make_mesh(devices)
    state = parallel.replicate(mesh, engine.init(jax.random.PRNGKey(0), (8, 8, 1)))
    step = parallel.jit_step(engine.train_step, mesh, state)
    history = []
    for i, batch in enumerate(batches):
        state = engine.with_learning_rates(state, i)
        state, metrics = step(state, parallel.global_batch_array(mesh, batch))
        history.append(parallel.fetch(metrics))
    return parallel.fetch(state), history


def test_three_domains_have_six_generators_and_discriminators():
    engine = _engine("ABC")
    state = engine.init(jax.random.PRNGKey(0), (8, 8, 1))
    assert sorted(state.gen_params) == ["AB", "AC", "BA", "BC", "CA", "CB"]
    assert sorted(state.disc_params) == sorted(state.gen_params)
    assert sorted(state.pools) == sorted(state.gen_params)
    # Each network has its own initialisation.
    ab = state.gen_params["AB"]["Conv_0"]["kernel"]
    ba = state.gen_params["BA"]["Conv_0"]["kernel"]
    assert not np.allclose(ab, ba)


def test_one_and_four_devices_give_the_same_losses():
    assert jax.device_count() == 4
    engine = _engine("AB")
    batches = _batches("AB", 5)
    _, one = _run(engine, jax.devices()[:1], batches)
    _, four = _run(engine, jax.devices(), batches)
    for m1, m4 in zip(one, four, strict=True):
        for key in m1:
            np.testing.assert_allclose(m1[key], m4[key], rtol=2e-5, atol=1e-6, err_msg=key)
    # The losses move: the test would notice a step that does nothing.
    assert one[0]["loss_g"] != one[-1]["loss_g"]


def test_discriminators_update_every_third_step():
    engine = _engine("ABC", disc_every=3)
    state, history = _run(engine, jax.devices(), _batches("ABC", 6))
    counts = [float(h["loss_d"]) for h in history]
    # Steps 0, 1 report the initial (zero) terms; step 2 the first update; 3, 4 keep it.
    assert counts[0] == counts[1] == 0.0 and counts[2] > 0.0
    assert counts[3] == counts[4] == counts[2] and counts[5] != counts[2]
    assert int(state.disc_opt_state.inner_state[0].count) == 2
    assert int(state.gen_opt_state.inner_state[0].count) == 6
    assert int(state.pools["AB"].count) == 4  # filled by the first update's 4 images
    # Their schedule counts their updates: rates for updates 0 and 1 at steps 2 and 5; the
    # steps between log the latest update's rate.
    assert [np.float32(h["lr_d"]) for h in history] == [np.float32(1e-3)] * 5 + [0.0]


def test_learning_rates_logged_and_decay_to_zero():
    engine = _engine("AB")
    _, history = _run(engine, jax.devices(), _batches("AB", 6))
    lrs = [np.float32(h["lr_g"]) for h in history]
    assert lrs == [engine.gen_schedule(i) for i in range(6)]  # to the last bit
    assert lrs[0] == np.float32(2e-3) and lrs[3] < lrs[2] and lrs[-1] == 0.0
    assert float(history[-1]["lr_d"]) == 0.0


def test_the_step_program_holds_no_schedule():
    """Runs of other lengths and rates compile to one program, so the persistent compilation
    cache serves them across processes."""
    state = _engine().init(jax.random.PRNGKey(0), (8, 8, 1))
    batch = {d: {"image": jnp.zeros((4, 8, 8, 1))} for d in "AB"}
    short, long = _engine(total_steps=6), _engine(total_steps=600)
    other_rates = dataclasses.replace(
        long,
        gen_tx=optim.adam(5e-4, b1=0.5, b2=0.999, scheduled=True),
        gen_schedule=optim.constant_then_linear_decay(5e-4, 100, 600),
    )
    assert other_rates != short
    programs = {
        jax.jit(e.train_step).lower(state, batch).as_text() for e in (short, long, other_rates)
    }
    assert len(programs) == 1


def test_dropout_depends_on_example_not_on_batch_position_only():
    engine = _engine("AB")
    state = engine.init(jax.random.PRNGKey(0), (8, 8, 1))
    generate = engine._translator(state.gen_params, jax.random.PRNGKey(1), train=True)
    same = jnp.ones((2, 8, 8, 1))
    out = generate("AB", same)
    # Two identical images get different dropout masks.
    assert not np.allclose(out[0], out[1])
    evaluated = engine.translate(state.gen_params, "AB", same)
    np.testing.assert_allclose(evaluated[0], evaluated[1])


def test_whole_batch_winograd_generator_calls_equal_the_per_example_calls():
    from xrayjax.models import ResnetGenerator

    # the plain forms: they compile the fastest
    generator = ResnetGenerator(
        features=2, num_blocks=1, reflect_conv="valid", upsample="transpose", weight_grad="xla"
    )
    fast = dataclasses.replace(_engine("AB"), generator=generator.clone(reflect_conv="winograd"))
    params = generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)), train=False)
    images = jnp.asarray(_batches("A", 1, batch=3, size=16)[0]["A"]["image"])
    images = images.at[1].set(images[0])  # two equal images: only their masks tell them apart
    # rbg compiles several times faster than threefry; both forms draw under vmap over the keys
    keys = example_keys(jax.random.key(1, impl="rbg"), 3)
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(images.shape), jnp.float32)

    def per_example_calls(params, images, keys):  # the reference: a call per example, its key
        def one(image, key):
            return generator.apply(params, image[None], train=True, rngs={"dropout": key})[0]

        return jax.vmap(one)(images, keys)

    @jax.jit
    def value_and_grads(params, images):
        results = []
        for generate in (per_example_calls, fast._generate_train):
            y, vjp = jax.vjp(lambda p, x, g=generate: g(p, x, keys), params, images)
            results.append(jax.tree.leaves((y, *vjp(cotangent))))
        return results

    per_example, whole_batch = value_and_grads(params, images)
    # convs feeding an instance norm have ~0 bias gradients: compare on the gradients' scale
    scale = max(float(jnp.max(jnp.abs(g))) for g in per_example[1:])
    np.testing.assert_allclose(whole_batch[0], per_example[0], rtol=0, atol=1e-5)  # output
    for a, b in zip(whole_batch[1:], per_example[1:], strict=True):  # parameter, input grads
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)
    pairs = zip(whole_batch, per_example, strict=True)
    assert not all(np.array_equal(a, b) for a, b in pairs)  # another program, not one twice
    assert not np.allclose(whole_batch[0][0], whole_batch[0][1])  # each example its own masks


def test_gradients_reach_every_generator():
    # Generators update at every step whatever `disc_every` is; 3 makes this the program of the
    # test above, already compiled.
    engine = _engine("ABC", disc_every=3)
    state0 = engine.init(jax.random.PRNGKey(0), (8, 8, 1))
    state, _ = _run(engine, jax.devices(), _batches("ABC", 1))
    for name in state0.gen_params:
        before = jax.tree.leaves(state0.gen_params[name])
        after = jax.tree.leaves(state.gen_params[name])
        assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True)), name


def test_thesis_networks_one_and_four_devices_agree(phantom_data_dir):
    """The real (tiny) generator and discriminator, as the runlocal config builds them."""
    from configs import cyclegan_forearm
    from xrayjax import build

    config = cyclegan_forearm.get_config("data=phantom,runlocal")
    config.image_size = 32
    config.model.num_blocks = 1  # compiles faster; every layer kind is still there
    # Plain SGD, and each step starts both device counts from the same state. Chained runs
    # amplify reduction-order rounding (1e-7 after one step) within five steps: to 4e-4 with
    # Adam under jax 0.12 (its first updates are ±lr for any gradient, even a rounding-size one
    # such as a conv bias before an instance norm's), to 2e-2 with SGD under both jax versions.
    # Adam is elementwise on replicated state, so it cannot tell device counts apart; the
    # networks, losses, gradient means, pools and dropout keys are what this test is for.
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=0.005)
    engine = dataclasses.replace(
        build.gan_engine(config, steps_per_epoch=2, total_steps=10), gen_tx=sgd, disc_tx=sgd
    )
    rng = np.random.default_rng(1)
    batches = [
        {d: {"image": rng.uniform(-1, 1, (4, 32, 32, 1)).astype(np.float32)} for d in "AB"}
        for _ in range(5)
    ]

    meshes = [parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh(jax.devices())]
    state = parallel.fetch(
        jax.jit(lambda key: engine.init(key, (32, 32, 1)))(jax.random.PRNGKey(0))
    )
    steps = [parallel.jit_step(engine.train_step, m, parallel.replicate(m, state)) for m in meshes]
    for i, batch in enumerate(batches):
        (s1, m1), (s4, m4) = (
            parallel.fetch(
                step(parallel.replicate(m, state), parallel.global_batch_array(m, batch))
            )
            for step, m in zip(steps, meshes, strict=True)
        )
        for key in ("loss_g", "loss_d", "loss_g_cycle", "loss_g_identity", "loss_g_adv"):
            np.testing.assert_allclose(m1[key], m4[key], rtol=1e-5, err_msg=f"step {i}: {key}")
        # Updates are compared per array by norm. Worst measured gaps, all at step 4 with jax
        # 0.10.2: 6e-4 of the update on an Intel Xeon (AVX2); 1.3e-2 on an AMD EPYC (AVX-512)
        # at -O1 (3.4e-3 at -O3), the kernels of G_AB's stem, downsampling and residual convs
        # by 1.1-1.3e-2 while the losses agree to 6e-6: rounding, amplified on the way back.
        # 1.5e-5 on jax 0.12. A gradient summed instead of averaged makes the gap 3x the update,
        # a sharding-dependent dropout key or pool far more; the floor covers biases whose
        # gradient is zero up to rounding (1e-9).
        for tree in ("gen_params", "disc_params"):
            for (path, p), a, b in zip(
                jax.tree_util.tree_leaves_with_path(getattr(state, tree)),
                jax.tree.leaves(getattr(s1, tree)),
                jax.tree.leaves(getattr(s4, tree)),
                strict=True,
            ):
                u1, u4 = (np.asarray(x, np.float64) - p for x in (a, b))
                gap, size = np.linalg.norm(u1 - u4), np.linalg.norm(u1)
                assert gap <= 5e-2 * size + 1e-7, (i, tree, jax.tree_util.keystr(path), gap, size)
        for part in ("pools", "rng", "step", "last_disc_terms"):
            for (path, a), b in zip(
                jax.tree_util.tree_leaves_with_path(getattr(s1, part)),
                jax.tree.leaves(getattr(s4, part)),
                strict=True,
            ):
                np.testing.assert_allclose(
                    a,
                    b,
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"step {i}: {part}{jax.tree_util.keystr(path)}",
                )
        state = s1


def test_equal_engines_share_one_jitted_step():
    """Runs in one process (an ablation's seeds, the per-class CycleGAN pair, runs of other
    lengths) trace and compile a step once."""
    from configs import cyclegan_forearm
    from xrayjax import build

    config = cyclegan_forearm.get_config("runlocal")
    first, second = (build.gan_engine(config, steps_per_epoch=4, total_steps=12) for _ in "ab")
    longer = build.gan_engine(config, steps_per_epoch=5, total_steps=13)  # another schedule
    config.model.num_blocks += 1
    deeper = build.gan_engine(config, steps_per_epoch=4, total_steps=12)
    mesh = parallel.make_mesh()
    state = jax.eval_shape(build.gan_init(first, config), jax.random.PRNGKey(0))
    assert first == second == longer and first is not second and deeper != first
    assert longer.gen_schedule(11) != first.gen_schedule(11)
    step = parallel.jit_step(first.train_step, mesh, state)
    assert parallel.jit_step(second.train_step, mesh, state) is step
    assert parallel.jit_step(longer.train_step, mesh, state) is step
    assert parallel.jit_step(deeper.train_step, mesh, state) is not step
    other_mesh = parallel.make_mesh(jax.devices()[:1])
    assert parallel.jit_step(first.train_step, other_mesh, state) is not step
