"""Losses: least-squares GAN (thesis eqs. 36-39, 45-56), cycle (40, 57-59), identity (41, 60-62),
the N-domain totals (42-43, 63-64), and cross-entropy for the classifier.

Naming follows the thesis: `G_IJ` translates domain J → domain I (second letter = input) and
`D_IJ` tells real images of I from `G_IJ(j)`. Sums over images are means here (the thesis's
‖·‖₁ is a mean absolute error, THESIS_SPEC.md), so loss values do not grow with the batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax


def ordered_pairs(domains: Sequence[str]) -> list[tuple[str, str]]:
    """Every (target, source) pair of distinct domains: one generator and discriminator each."""
    return [(i, j) for i, j in itertools.permutations(domains, 2)]


def pair_name(target: str, source: str) -> str:
    """'AB' for the generator G_AB (B → A) and discriminator D_AB."""
    return f"{target}{source}"


def lsgan_generator(d_fake: jax.Array) -> jax.Array:
    """Eq. 36: ½·mean((D(G(x)) − 1)²)."""
    return 0.5 * jnp.mean(jnp.square(d_fake.astype(jnp.float32) - 1.0))


def lsgan_discriminator(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
    """Eq. 38: ½·[mean((D(real) − 1)²) + mean(D(fake)²)]."""
    real = jnp.mean(jnp.square(d_real.astype(jnp.float32) - 1.0))
    fake = jnp.mean(jnp.square(d_fake.astype(jnp.float32)))
    return 0.5 * (real + fake)


def l1(x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean absolute error."""
    return jnp.mean(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))


# generator(pair name, images) → translated images
Translate = Callable[[str, jax.Array], jax.Array]
# discriminator(pair name, images) → patch scores
Score = Callable[[str, jax.Array], jax.Array]


def generator_losses(
    real: Mapping[str, jax.Array],
    generate: Translate,
    discriminate: Score,
    *,
    cycle_weight: float,
    identity_weight: float,
) -> tuple[jax.Array, dict[str, jax.Array], dict[str, jax.Array]]:
    """Total generator loss (eqs. 42/63), its named terms, and the fakes G_IJ(j) by pair name.

    Adversarial terms over ordered pairs; cycle terms over ordered pairs, which is each unordered
    pair's two directions (eqs. 57-59); identity terms for every generator on its own target
    domain (eqs. 60-62).
    """
    domains = list(real)
    pairs = ordered_pairs(domains)
    fakes = {pair_name(i, j): generate(pair_name(i, j), real[j]) for i, j in pairs}
    terms: dict[str, jax.Array] = {}
    adversarial = cycle = identity = jnp.float32(0.0)
    for i, j in pairs:
        name = pair_name(i, j)
        adv = lsgan_generator(discriminate(name, fakes[name]))
        # G_JI(G_IJ(j)) ≈ j: back to the source domain.
        cyc = l1(generate(pair_name(j, i), fakes[name]), real[j])
        idt = l1(generate(name, real[i]), real[i]) if identity_weight else jnp.float32(0.0)
        terms[f"adv_{name}"], terms[f"cycle_{name}"], terms[f"identity_{name}"] = adv, cyc, idt
        adversarial, cycle, identity = adversarial + adv, cycle + cyc, identity + idt
    total = adversarial + cycle_weight * cycle + identity_weight * identity
    terms.update(adv=adversarial, cycle=cycle, identity=identity, total=total)
    return total, terms, fakes


def discriminator_losses(
    real: Mapping[str, jax.Array], fakes: Mapping[str, jax.Array], discriminate: Score
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total discriminator loss (eqs. 43/64) and its per-pair terms (eqs. 38-39, 51-56)."""
    terms = {}
    total = jnp.float32(0.0)
    for i, j in ordered_pairs(list(real)):
        name = pair_name(i, j)
        terms[f"d_{name}"] = lsgan_discriminator(
            discriminate(name, real[i]), discriminate(name, fakes[name])
        )
        total = total + terms[f"d_{name}"]
    terms["total"] = total
    return total, terms


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None):
    """Mean softmax cross-entropy over examples, optionally weighted (e.g. 0 for padding)."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    if weights is None:
        return jnp.mean(losses)
    weights = weights.astype(jnp.float32)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
