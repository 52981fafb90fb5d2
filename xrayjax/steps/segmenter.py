"""A supervised bone segmenter's train state and pure, jitted steps.

It is a measuring instrument, not part of the thesis: trained on natural-style phantoms with
their exact bone masks, it finds the bone in an image of that style. GAN evaluation uses it to
check that translations keep the anatomy (Dice between the source mask and the bone it finds in
the translated image), and its own Dice on held-out natural images is the reference that says
how far it can be trusted. Its network is the CycleGAN generator (one output channel, tanh):
the target is the mask in {−1, 1}, the loss the mean squared error plus a soft Dice term, bone
where the output > 0.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from xrayjax import optim


@flax.struct.dataclass
class SegmenterState:
    """Everything a segmenter run needs to continue exactly."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    rng: jax.Array


@dataclasses.dataclass(frozen=True)
class SegmenterEngine:
    """Static description of a segmenter run: network and optimizer."""

    model: nn.Module
    tx: optax.GradientTransformation

    def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> SegmenterState:
        """Fresh parameters and optimizer state."""
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        params = self.model.init(rng, dummy, train=False)["params"]
        return SegmenterState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=self.tx.init(params),
            rng=jax.random.fold_in(rng, 1 << 20),
        )

    def predict(self, params: dict, images: jax.Array) -> jax.Array:
        """(B, H, W, 1) images in [−1, 1] → (B, H, W, 1) float32 in (−1, 1); bone where > 0."""
        return self.model.apply({"params": params}, images, train=False)

    def train_step(self, state: SegmenterState, batch: dict) -> tuple[SegmenterState, dict]:
        """One Adam update on {'image': (B, H, W, 1), 'mask': (B, H, W, 1) in {−1, 1}}."""

        def loss_fn(params):
            out = self.predict(params, batch["image"])
            # Bone is a few percent of the pixels: squared error alone first learns "no bone
            # anywhere"; a soft Dice term per image rewards the overlap itself.
            prob, truth = (out + 1) / 2, (batch["mask"] + 1) / 2
            overlap = jnp.sum(prob * truth, axis=(1, 2, 3))
            soft_dice = 2 * overlap / (jnp.sum(prob + truth, axis=(1, 2, 3)) + 1.0)
            return jnp.mean(jnp.square(out - batch["mask"])) + jnp.mean(1 - soft_dice), out

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        pred, truth = out > 0, batch["mask"] > 0
        overlap = jnp.sum(pred & truth)
        dice = 2 * overlap / jnp.maximum(jnp.sum(pred) + jnp.sum(truth), 1)
        new_state = SegmenterState(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            rng=state.rng,
        )
        return new_state, {"loss": loss, "batch_dice": dice, "lr": optim.current_lr(opt_state)}
