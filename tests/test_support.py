"""The value transform, its inverse, and the categorical (two-hot) projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer import support


def test_transform_matches_formula():
  x = np.array([-1000.0, -3.5, -1.0, 0.0, 0.25, 1.0, 8.0, 333.0])
  expected = np.sign(x) * (np.sqrt(np.abs(x) + 1) - 1) + 0.001 * x
  np.testing.assert_allclose(support.transform(jnp.asarray(x)), expected, rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_inverse_round_trip(jit):
  x = jnp.asarray(np.concatenate([-np.logspace(-3, 4, 50), [0.0], np.logspace(-3, 4, 50)]), jnp.float32)
  inv = jax.jit(support.inverse_transform) if jit else support.inverse_transform
  fwd = jax.jit(support.transform) if jit else support.transform
  np.testing.assert_allclose(inv(fwd(x)), x, rtol=2e-5, atol=2e-5)
  y = jnp.linspace(-20.0, 20.0, 81)
  np.testing.assert_allclose(fwd(inv(y)), y, rtol=1e-5, atol=1e-5)


def test_two_hot_exact_small_case():
  # h(x) = 1.5 exactly for x with sqrt(x+1) - 1 + 0.001x = 1.5; pick y on the grid instead: use the inverse.
  x = support.inverse_transform(jnp.asarray([1.5, -2.0, 0.0, 2.25]))
  probs = np.asarray(support.scalar_to_probs(x, 3))  # atoms -3..3
  expected = np.zeros((4, 7))
  expected[0, 3 + 1], expected[0, 3 + 2] = 0.5, 0.5
  expected[1, 3 - 2] = 1.0
  expected[2, 3] = 1.0
  expected[3, 3 + 2], expected[3, 3 + 3] = 0.75, 0.25
  np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_projection_clips_to_support_and_sums_to_one():
  x = jnp.asarray([-1e6, -5.0, 0.3, 7.0, 1e6])
  probs = support.scalar_to_probs(x, 5)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  assert probs[0, 0] == pytest.approx(1.0) and probs[-1, -1] == pytest.approx(1.0)


def test_projection_then_decode_recovers_scalars():
  x = jnp.asarray([-300.0, -7.25, -1.0, 0.0, 0.5, 3.0, 42.0, 250.0])
  logits = jnp.log(support.scalar_to_probs(x, 25) + 1e-30)
  # The mean of the two-hot distribution is h(x) exactly, so decoding gives x back.
  np.testing.assert_allclose(support.logits_to_scalar(logits), x, rtol=1e-4, atol=1e-4)
