"""The classifier's train state and pure, jitted steps (thesis 3.2.3).

Cross-entropy on the two logits (0 normal, 1 abnormal), Adam, and batch-norm statistics over the
global batch: under `jax.jit` with the batch sharded on the 'data' mesh axis the batch mean and
variance are reduced over every device, so a run gives the same numbers on 1 or 4 devices.

The state also keeps the epoch's running tally of correct predictions, so the logged training
accuracy ("running over the epoch", as in the thesis's figs. 36-38) survives a resume exactly.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from xrayjax import losses, optim


@flax.struct.dataclass
class ClassifierState:
    """Everything a classifier run needs to continue exactly: one pytree, checkpointed whole."""

    step: jax.Array
    params: dict
    batch_stats: dict  # batch-norm running averages, used in evaluation
    opt_state: optax.OptState
    rng: jax.Array  # raw uint32 key data (the step itself draws nothing yet)
    epoch_tally: jax.Array  # int32 [correct, seen] over the current epoch's training batches


@dataclasses.dataclass(frozen=True)
class ClassifierEngine:
    """Static description of a classifier run: network, optimizer, epoch length."""

    model: nn.Module
    tx: optax.GradientTransformation
    steps_per_epoch: int

    def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> ClassifierState:
        """Fresh parameters, batch statistics and optimizer state."""
        variables = self.model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params = variables["params"]
        return ClassifierState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables["batch_stats"],
            opt_state=self.tx.init(params),
            rng=jax.random.fold_in(rng, 1 << 20),
            epoch_tally=jnp.zeros((2,), jnp.int32),
        )

    def train_step(self, state: ClassifierState, batch: dict) -> tuple[ClassifierState, dict]:
        """One Adam update on a batch {'image': (B, H, W, 1), 'label': (B,) int32}.

        Metrics: loss (mean cross-entropy), batch_accuracy, accuracy (running over the epoch so
        far; at an epoch's last step, the epoch's training accuracy) and lr.
        """
        images, labels = batch["image"], batch["label"]

        def loss_fn(params):
            logits, updates = self.model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
            )
            return losses.cross_entropy(logits, labels), (logits, updates["batch_stats"])

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # argmax picks abnormal only when its logit is larger, i.e. probability > ½ (MURA's rule).
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels).astype(jnp.int32)
        first_of_epoch = state.step % self.steps_per_epoch == 0
        tally = jnp.where(first_of_epoch, 0, state.epoch_tally) + jnp.stack(
            [correct, jnp.int32(labels.shape[0])]
        )
        new_state = ClassifierState(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            rng=state.rng,
            epoch_tally=tally,
        )
        metrics = {
            "loss": loss,
            "batch_accuracy": correct / labels.shape[0],
            "accuracy": tally[0] / tally[1],
            "lr": jnp.asarray(optim.current_lr(opt_state)),
        }
        return new_state, metrics

    def eval_step(self, state: ClassifierState, batch: dict) -> dict:
        """Per-example probability of abnormal (softmax[:, 1]) with running-average batch norm.

        The batch is a padded evaluation batch; `valid` and `index` are passed through so the
        caller can drop the padding and put the probabilities in table order.
        """
        logits = self.model.apply(
            {"params": state.params, "batch_stats": state.batch_stats},
            batch["image"],
            train=False,
        )
        return {
            "probability": jax.nn.softmax(logits, axis=-1)[:, 1],
            "valid": batch["valid"],
            "index": batch["index"],
        }
