"""The N-domain CycleGAN engine: train state and the pure, jitted training step.

For domains D1..DN there is a generator G_IJ (J → I) and a discriminator D_IJ for every ordered
pair. Two domains give the CycleGAN of thesis eqs. 36-44; three give the multi-cycleGAN of
eqs. 45-64. Each step updates the generators; every `disc_every`-th step also updates the
discriminators on generated images passed through the per-pair history pools.

Randomness: the step's key is the state's key folded with the step; each use of a network
folds in a use number, and each example folds in its row of the global batch, so a run gives
the same numbers on 1 or 4 devices and after a resume.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from xrayjax import losses, optim
from xrayjax.steps.image_pool import PoolState, init_pool, query_pool


@flax.struct.dataclass
class GanState:
    """Everything a GAN run needs to continue exactly: one pytree, checkpointed whole."""

    step: jax.Array
    gen_params: dict
    disc_params: dict
    gen_opt_state: optax.OptState
    disc_opt_state: optax.OptState
    pools: dict[str, PoolState]
    last_disc_terms: dict[str, jax.Array]  # the latest discriminator losses, for logging
    rng: jax.Array  # raw uint32 key data


def example_keys(key: jax.Array, batch: int) -> jax.Array:
    """One key per row of the global batch, independent of how the batch is sharded."""
    return jax.vmap(lambda row: jax.random.fold_in(key, row))(jnp.arange(batch))


@dataclasses.dataclass(frozen=True)
class GanEngine:
    """Static description of an N-domain GAN: networks, loss weights, optimizers, schedules.

    The schedules run on the host (`with_learning_rates`) and take no part in equality, so
    engines that differ only in them share one compiled step.
    """

    domains: Sequence[str]
    # Called as ResnetGenerator is: `dropout_rate`, `draw_dropout_masks`, `dropout_masks=`.
    generator: nn.Module
    discriminator: nn.Module
    gen_tx: optax.GradientTransformation
    disc_tx: optax.GradientTransformation
    cycle_weight: float
    identity_weight: float
    pool_size: int = 50
    disc_every: int = 1  # generator updates per discriminator update (3 for the multi-cycleGAN)
    # update number → rate; None keeps the optimizers' initial rates
    gen_schedule: optim.Schedule | None = dataclasses.field(default=None, compare=False)
    disc_schedule: optim.Schedule | None = dataclasses.field(default=None, compare=False)

    @property
    def pairs(self) -> list[str]:
        """Names of the ordered pairs, e.g. ['AB', 'BA']."""
        return [losses.pair_name(i, j) for i, j in losses.ordered_pairs(self.domains)]

    def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> GanState:
        """Fresh parameters (a key each), optimizer states and empty pools."""
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        # Initialisers draw millions of numbers; the 'rbg' generator compiles ~4x faster for
        # that on CPU than threefry. The training randomness (state.rng) stays threefry.
        init_root = jax.random.wrap_key_data(jnp.tile(rng, 2), impl="rbg")
        keys = jnp.stack(
            [jax.random.split(jax.random.fold_in(init_root, k)) for k in range(len(self.pairs))]
        )
        # One network initialised per loop iteration: the program holds each network's
        # initialiser once instead of once per pair (the tiny three-domain init compiles in
        # 6.4 s instead of 8.1 s, with the same parameters to the bit).
        gens = jax.lax.map(
            lambda key: self.generator.init(key, dummy, train=False)["params"], keys[:, 0]
        )
        discs = jax.lax.map(lambda key: self.discriminator.init(key, dummy)["params"], keys[:, 1])
        gen_params, disc_params = (
            {name: jax.tree.map(lambda x, k=k: x[k], stacked) for k, name in enumerate(self.pairs)}
            for stacked in (gens, discs)
        )
        return GanState(
            step=jnp.zeros((), jnp.int32),
            gen_params=gen_params,
            disc_params=disc_params,
            gen_opt_state=self.gen_tx.init(gen_params),
            disc_opt_state=self.disc_tx.init(disc_params),
            pools={name: init_pool(self.pool_size, image_shape) for name in self.pairs},
            last_disc_terms={f"d_{name}": jnp.zeros((), jnp.float32) for name in self.pairs}
            | {"total": jnp.zeros((), jnp.float32)},
            rng=jax.random.fold_in(rng, 1 << 20),
        )

    @functools.cached_property
    def _generate_train(self):
        """G(images) with dropout keyed per example, as one jitted function.

        The network runs once on the whole batch, each example's dropout masks drawn beforehand
        from its key (`ResnetGenerator.draw_dropout_masks`): the masks of one call per example
        under vmap, and the same function, rounded otherwise. Calls per example were the slower
        (under vmap a custom-gradient layer's weight gradient is one small matmul per example;
        the 64-px steps 6-12 % slower, docs/performance.md "Whole-batch generator calls").

        The loss calls a generator 3 times per pair (translation, cycle, identity): jitting the
        call makes jax trace the network once per image shape instead of once per call, which
        cuts the step's tracing time several-fold; XLA inlines it, so the program is the same.
        """

        def apply(params, images, keys):
            if self.generator.dropout_rate == 0:
                return self.generator.apply(params, images, train=True)
            masks = self.generator.draw_dropout_masks(keys, images.shape[1:])
            return self.generator.apply(params, images, train=True, dropout_masks=masks)

        return jax.jit(apply)

    @functools.cached_property
    def _discriminate(self):
        """D(images) as one jitted function, traced once per image shape (see above)."""
        return jax.jit(self.discriminator.apply)

    def _translator(self, gen_params, key, train: bool):
        """generate(pair, images) with a fresh dropout key per call and per example."""
        uses = iter(range(1 << 30))

        def generate(name: str, images: jax.Array) -> jax.Array:
            params = {"params": gen_params[name]}
            if not train:
                return self.generator.apply(params, images, train=False)
            keys = example_keys(jax.random.fold_in(key, next(uses)), images.shape[0])
            return self._generate_train(params, images, keys)

        return generate

    def _scorer(self, disc_params):
        def discriminate(name: str, images: jax.Array) -> jax.Array:
            return self._discriminate({"params": disc_params[name]}, images)

        return discriminate

    def with_learning_rates(self, state: GanState, step: int) -> GanState:
        """The state with the rates of its step number `step` (0-based) written in, before it runs.

        The discriminators' schedule counts their own updates; they are written only on the
        steps that update them, so the logged rate stays that of their latest update.
        """
        if self.gen_schedule is not None:
            rate = self.gen_schedule(step)
            state = state.replace(gen_opt_state=optim.with_learning_rate(state.gen_opt_state, rate))
        if self.disc_schedule is not None and (step + 1) % self.disc_every == 0:
            rate = self.disc_schedule(step // self.disc_every)
            state = state.replace(
                disc_opt_state=optim.with_learning_rate(state.disc_opt_state, rate)
            )
        return state

    def train_step(self, state: GanState, batch: dict) -> tuple[GanState, dict]:
        """One generator update (and a discriminator update every `disc_every` steps)."""
        real = {d: batch[d]["image"] for d in self.domains}
        step_key = jax.random.fold_in(state.rng, state.step)
        gen_key, pool_key = jax.random.split(step_key)

        def gen_loss(gen_params):
            generate = self._translator(gen_params, gen_key, train=True)
            total, terms, fakes = losses.generator_losses(
                real,
                generate,
                self._scorer(state.disc_params),
                cycle_weight=self.cycle_weight,
                identity_weight=self.identity_weight,
            )
            return total, (terms, fakes)

        (_, (g_terms, fakes)), g_grads = jax.value_and_grad(gen_loss, has_aux=True)(
            state.gen_params
        )
        g_updates, gen_opt_state = self.gen_tx.update(
            g_grads, state.gen_opt_state, state.gen_params
        )
        gen_params = optax.apply_updates(state.gen_params, g_updates)
        fakes = jax.lax.stop_gradient(fakes)

        def update_discriminators(operands):
            disc_params, disc_opt_state, pools = operands
            pooled, new_pools = {}, {}
            for k, name in enumerate(self.pairs):
                keys = example_keys(jax.random.fold_in(pool_key, k), fakes[name].shape[0])
                new_pools[name], pooled[name] = query_pool(pools[name], fakes[name], keys)

            def disc_loss(params):
                return losses.discriminator_losses(real, pooled, self._scorer(params))

            (_, d_terms), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(disc_params)
            d_updates, disc_opt_state = self.disc_tx.update(d_grads, disc_opt_state, disc_params)
            disc_params = optax.apply_updates(disc_params, d_updates)
            return disc_params, disc_opt_state, new_pools, d_terms

        def keep_discriminators(operands):
            disc_params, disc_opt_state, pools = operands
            return disc_params, disc_opt_state, pools, state.last_disc_terms

        operands = (state.disc_params, state.disc_opt_state, state.pools)
        if self.disc_every == 1:
            disc_params, disc_opt_state, pools, d_terms = update_discriminators(operands)
        else:
            disc_params, disc_opt_state, pools, d_terms = jax.lax.cond(
                (state.step + 1) % self.disc_every == 0,
                update_discriminators,
                keep_discriminators,
                operands,
            )
        new_state = GanState(
            step=state.step + 1,
            gen_params=gen_params,
            disc_params=disc_params,
            gen_opt_state=gen_opt_state,
            disc_opt_state=disc_opt_state,
            pools=pools,
            last_disc_terms=d_terms,
            rng=state.rng,
        )
        metrics = {f"loss_g_{k}": v for k, v in g_terms.items() if k != "total"}
        metrics["loss_g"] = g_terms["total"]
        metrics.update({f"loss_{k}": v for k, v in d_terms.items() if k != "total"})
        metrics["loss_d"] = d_terms["total"]
        metrics["lr_g"] = jnp.asarray(optim.current_lr(gen_opt_state))
        metrics["lr_d"] = jnp.asarray(optim.current_lr(disc_opt_state))
        return new_state, metrics

    def translate(self, gen_params: dict, pair: str, images: jax.Array) -> jax.Array:
        """G_pair(images) in evaluation mode (no dropout)."""
        return self.generator.apply({"params": gen_params[pair]}, images, train=False)
