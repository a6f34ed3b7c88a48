"""Frame augmentations for the consistency loss (EfficientZero's 'shift' and 'intensity', both on by config).

Each sample gets one random shift and one intensity factor, shared by every frame it holds (all stacked frames,
and all unroll steps when given together), as EfficientZero transforms a sample's channel-stacked frames as
one image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def shift(x: jax.Array, rng_key: jax.Array, *, pad: int = 4) -> jax.Array:
  """x [B, ..., H, W, C] -> same shape: each sample shifted by up to `pad` pixels in each direction, edges
  repeated (replicate padding then a random crop of the original size)."""
  b, h, w = x.shape[0], x.shape[-3], x.shape[-2]
  offset = jax.random.randint(rng_key, (b, 2), 0, 2 * pad + 1) - pad

  def one(img, off):
    rows = jnp.clip(jnp.arange(h) + off[0], 0, h - 1)
    cols = jnp.clip(jnp.arange(w) + off[1], 0, w - 1)
    return jnp.take(jnp.take(img, rows, axis=-3), cols, axis=-2)

  return jax.vmap(one)(x, offset)


def intensity(x: jax.Array, rng_key: jax.Array, *, scale: float = 0.05) -> jax.Array:
  """x f32[B, ...] -> x * (1 + scale * clip(N(0, 1), -2, 2)), one factor per sample."""
  noise = jnp.clip(jax.random.normal(rng_key, (x.shape[0],)), -2.0, 2.0)
  return x * (1.0 + scale * noise).reshape(-1, *([1] * (x.ndim - 1)))


def augment(x: jax.Array, rng_key: jax.Array, *, pad: int = 4, scale: float = 0.05) -> jax.Array:
  """Frames [B, ..., H, W, C] of any dtype -> f32 (same pixel scale) shifted by up to `pad` pixels, then
  intensity-scaled by `scale`."""
  return intensity(augment_shift(x, rng_key, pad=pad), jax.random.split(rng_key)[1], scale=scale)


def augment_shift(x: jax.Array, rng_key: jax.Array, *, pad: int = 4) -> jax.Array:
  """Frames [B, ..., H, W, C] of any dtype -> f32 shifted as `augment(..., rng_key, pad=pad)` shifts, without
  its intensity: the same offset per sample, so other frames of a sample can be seen in the augmented frame's
  frame of reference. `rng_key` splits into (shift key, intensity key); this reads the first."""
  return shift(x.astype(jnp.float32), jax.random.split(rng_key)[0], pad=pad)
