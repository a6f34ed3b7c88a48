"""Categorical value support with MuZero's invertible transform h(x) = sign(x)(sqrt(|x|+1)-1) + eps*x.

Scalars are squashed by h, then split between the two nearest integer atoms of the support
[-size, size] ("two-hot"); decoding takes the expectation over atoms and inverts h exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 0.001


def transform(x: jax.Array) -> jax.Array:
  """h(x), elementwise."""
  return jnp.sign(x) * (jnp.sqrt(jnp.abs(x) + 1.0) - 1.0) + EPS * x


def inverse_transform(y: jax.Array) -> jax.Array:
  """h^-1(y), elementwise: the exact inverse of `transform`.

  With u = sqrt(|x| + 1), h is the quadratic EPS*u^2 + u - (1 + EPS + |y|) = 0. Its root is written as
  u - 1 = 2|y| / (s + 1 + 2 EPS), s = sqrt(1 + 4 EPS (|y| + 1 + EPS)), which avoids float32 cancellation
  near 0; then |x| = u^2 - 1 = (u - 1)(u + 1).
  """
  s = jnp.sqrt(1.0 + 4.0 * EPS * (jnp.abs(y) + 1.0 + EPS))
  d = 2.0 * jnp.abs(y) / (s + 1.0 + 2.0 * EPS)
  return jnp.sign(y) * d * (d + 2.0)


def scalar_to_probs(x: jax.Array, size: int) -> jax.Array:
  """f32[...] scalars -> f32[..., 2*size+1] two-hot probabilities over atoms -size..size of h(x)."""
  y = jnp.clip(transform(x), -size, size)
  low = jnp.floor(y)
  upper_weight = y - low
  low_index = (low + size).astype(jnp.int32)
  high_index = jnp.minimum(low_index + 1, 2 * size)
  num = 2 * size + 1
  return (
    jax.nn.one_hot(low_index, num) * (1.0 - upper_weight)[..., None]
    + jax.nn.one_hot(high_index, num) * upper_weight[..., None]
  )


def logits_to_scalar(logits: jax.Array) -> jax.Array:
  """f32[..., 2*size+1] logits -> f32[...] scalars: expectation over atoms, then h^-1."""
  size = (logits.shape[-1] - 1) // 2
  atoms = jnp.arange(-size, size + 1, dtype=logits.dtype)
  return inverse_transform(jnp.sum(jax.nn.softmax(logits, axis=-1) * atoms, axis=-1))
