"""Losses against values computed by hand on tiny inputs."""

import jax.numpy as jnp
import numpy as np
import pytest

from xrayjax import losses


def test_lsgan_terms_by_hand():
    d_fake = jnp.array([[0.0, 0.5], [1.0, 2.0]])
    # ½·mean((x − 1)²) = ½·(1 + 0.25 + 0 + 1)/4
    assert float(losses.lsgan_generator(d_fake)) == pytest.approx(0.5 * 2.25 / 4)
    d_real = jnp.array([1.0, 0.0])
    # ½·[mean((1−1)², (0−1)²) + mean(0², .5², 1², 2²)] = ½·[0.5 + 5.25/4]
    assert float(losses.lsgan_discriminator(d_real, d_fake)) == pytest.approx(0.5 * (0.5 + 1.3125))


def test_l1_and_cross_entropy():
    assert float(losses.l1(jnp.array([1.0, -1.0]), jnp.array([0.0, 1.0]))) == pytest.approx(1.5)
    logits = jnp.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    labels = jnp.array([0, 1])
    # −log ½ and −log ¼
    expected = (np.log(2.0) + np.log(4.0)) / 2
    assert float(losses.cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-6)
    weighted = losses.cross_entropy(logits, labels, jnp.array([1.0, 0.0]))
    assert float(weighted) == pytest.approx(np.log(2.0), rel=1e-6)


def test_pairs():
    assert losses.ordered_pairs("AB") == [("A", "B"), ("B", "A")]
    assert len(losses.ordered_pairs("ABC")) == 6
    assert losses.pair_name("A", "C") == "AC"


def _toy_networks():
    """G_IJ(x) = x·g_IJ and D_IJ(x) = x·d_IJ: losses computable by hand."""
    gains = {"AB": 2.0, "BA": 0.25, "AC": 3.0, "CA": 0.5, "BC": 1.5, "CB": 0.75}
    scores = {"AB": 0.5, "BA": 1.0, "AC": 0.1, "CA": 0.2, "BC": 0.3, "CB": 0.4}
    return (lambda n, x: x * gains[n]), (lambda n, x: x * scores[n]), gains, scores


def test_two_domain_engine_is_eqs_36_to_44():
    generate, discriminate, g, s = _toy_networks()
    a, b = jnp.full((2, 3, 3, 1), 0.4), jnp.full((2, 3, 3, 1), -0.2)
    total, terms, fakes = losses.generator_losses(
        {"A": a, "B": b}, generate, discriminate, cycle_weight=10.0, identity_weight=5.0
    )
    av, bv = 0.4, -0.2
    adv_ab = 0.5 * (bv * g["AB"] * s["AB"] - 1) ** 2  # eq. 36
    adv_ba = 0.5 * (av * g["BA"] * s["BA"] - 1) ** 2  # eq. 37
    cyc = abs(av * g["BA"] * g["AB"] - av) + abs(bv * g["AB"] * g["BA"] - bv)  # eq. 40
    idt = abs(av * g["AB"] - av) + abs(bv * g["BA"] - bv)  # eq. 41
    assert float(terms["adv_AB"]) == pytest.approx(adv_ab)
    assert float(terms["adv_BA"]) == pytest.approx(adv_ba)
    assert float(terms["cycle"]) == pytest.approx(cyc)
    assert float(terms["identity"]) == pytest.approx(idt)
    assert float(total) == pytest.approx(adv_ab + adv_ba + 10 * cyc + 5 * idt)  # eq. 42
    np.testing.assert_allclose(fakes["AB"], b * g["AB"])
    d_total, d_terms = losses.discriminator_losses({"A": a, "B": b}, fakes, discriminate)
    d_a = 0.5 * ((av * s["AB"] - 1) ** 2 + (bv * g["AB"] * s["AB"]) ** 2)  # eq. 38
    d_b = 0.5 * ((bv * s["BA"] - 1) ** 2 + (av * g["BA"] * s["BA"]) ** 2)  # eq. 39
    assert float(d_terms["d_AB"]) == pytest.approx(d_a)
    assert float(d_total) == pytest.approx(d_a + d_b)  # eq. 43


def test_three_domain_total_is_eq_63():
    generate, discriminate, g, s = _toy_networks()
    x = {"A": 0.4, "B": -0.2, "C": 0.9}
    real = {k: jnp.full((1, 2, 2, 1), v) for k, v in x.items()}
    total, terms, fakes = losses.generator_losses(
        real, generate, discriminate, cycle_weight=5.0, identity_weight=1.0
    )
    assert len(fakes) == 6
    adv = sum(0.5 * (x[j] * g[i + j] * s[i + j] - 1) ** 2 for i, j in losses.ordered_pairs("ABC"))
    # eqs. 57-59: each unordered pair contributes both directions
    cyc = sum(abs(x[j] * g[i + j] * g[j + i] - x[j]) for i, j in losses.ordered_pairs("ABC"))
    # eqs. 60-62: G_AB(a), G_AC(a), G_BA(b), G_BC(b), G_CA(c), G_CB(c)
    idt = sum(abs(x[i] * g[i + j] - x[i]) for i, j in losses.ordered_pairs("ABC"))
    assert float(terms["adv"]) == pytest.approx(adv)
    assert float(terms["cycle"]) == pytest.approx(cyc)
    assert float(terms["identity"]) == pytest.approx(idt)
    assert float(total) == pytest.approx(adv + 5 * cyc + idt)
    d_total, d_terms = losses.discriminator_losses(real, fakes, discriminate)
    assert len([k for k in d_terms if k.startswith("d_")]) == 6  # eq. 64
    expected_d = sum(
        0.5 * ((x[i] * s[i + j] - 1) ** 2 + (x[j] * g[i + j] * s[i + j]) ** 2)
        for i, j in losses.ordered_pairs("ABC")
    )
    assert float(d_total) == pytest.approx(expected_d)
