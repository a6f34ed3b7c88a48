"""EfficientZero networks: representation, dynamics with a value-prefix LSTM, prediction, projection.

One flax module holds all parts; callers pick a part with `apply(..., method=...)` through the thin pure
wrappers at the bottom (`represent`, `dynamics`, `predict`, `project`). Latents are min-max normalised to
[0, 1] per sample, as in EfficientZero, so that dynamics and representation outputs live on one scale.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamer.config import Config

Params = Any


class LSTMState(NamedTuple):
  """The value-prefix LSTM's carry: c, h: f32[B, lstm_dim]."""
  c: jax.Array
  h: jax.Array


def zero_lstm_state(batch: int, dim: int) -> LSTMState:
  return LSTMState(jnp.zeros((batch, dim)), jnp.zeros((batch, dim)))


def normalize_latent(x: jax.Array) -> jax.Array:
  """Min-max scales each sample's latent f32[B, D] to [0, 1]."""
  low = jnp.min(x, axis=-1, keepdims=True)
  high = jnp.max(x, axis=-1, keepdims=True)
  return (x - low) / jnp.maximum(high - low, 1e-5)


class MLP(nn.Module):
  """Dense -> LayerNorm -> ReLU blocks, then a final Dense (zero-initialised if `zero_last`)."""
  hidden: tuple[int, ...]
  out: int
  zero_last: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.hidden:
      x = nn.relu(nn.LayerNorm()(nn.Dense(width)(x)))
    init = nn.initializers.zeros if self.zero_last else nn.initializers.lecun_normal()
    return nn.Dense(self.out, kernel_init=init)(x)


class MuZeroMLP(nn.Module):
  """The MLP variant for vector observations f32[B, *obs_shape]."""
  num_actions: int
  latent_dim: int
  hidden_dim: int
  lstm_dim: int
  proj_dim: int
  value_atoms: int
  reward_atoms: int

  def setup(self) -> None:
    h = self.hidden_dim
    self.repr_net = MLP((h, h), self.latent_dim)
    self.dyn_net = MLP((h, h), self.latent_dim)
    self.lstm = nn.OptimizedLSTMCell(self.lstm_dim)
    self.prefix_head = MLP((h,), self.reward_atoms, zero_last=True)
    self.trunk = MLP((), h)
    self.policy_head = MLP((h,), self.num_actions, zero_last=True)
    self.value_head = MLP((h,), self.value_atoms, zero_last=True)
    self.projector = MLP((self.proj_dim,), self.proj_dim)
    self.proj_predictor = MLP((self.proj_dim // 2,), self.proj_dim)

  def represent(self, obs: jax.Array) -> jax.Array:
    """obs [B, *obs_shape] -> latent f32[B, latent_dim]."""
    x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
    return normalize_latent(self.repr_net(x))

  def dynamics(self, latent: jax.Array, action: jax.Array,
               lstm: LSTMState) -> tuple[jax.Array, LSTMState, jax.Array]:
    """latent f32[B, D], action int[B], lstm -> next latent f32[B, D], lstm, prefix logits f32[B, R]."""
    a = jax.nn.one_hot(action, self.num_actions)
    nxt = normalize_latent(latent + self.dyn_net(jnp.concatenate([latent, a], axis=-1)))
    (c, h), out = self.lstm((lstm.c, lstm.h), nxt)
    return nxt, LSTMState(c, h), self.prefix_head(nn.relu(out))

  def predict(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
    """latent f32[B, D] -> policy logits f32[B, A], value logits f32[B, V]."""
    x = nn.relu(self.trunk(latent))
    return self.policy_head(x), self.value_head(x)

  def project(self, latent: jax.Array, with_head: bool) -> jax.Array:
    """latent -> projection f32[B, P]; the online branch adds the prediction head (SimSiam style)."""
    z = self.projector(latent)
    return self.proj_predictor(z) if with_head else z

  def __call__(self, obs: jax.Array, action: jax.Array) -> Any:
    """Touches every part once (for `init`)."""
    latent = self.represent(obs)
    nxt, _, prefix = self.dynamics(latent, action, zero_lstm_state(obs.shape[0], self.lstm_dim))
    return self.predict(nxt), prefix, self.project(nxt, True)


def make_network(config: Config, num_actions: int) -> nn.Module:
  # Config validation already limits `network` to the families built here ('mlp').
  return MuZeroMLP(
      num_actions=num_actions, latent_dim=config.latent_dim, hidden_dim=config.hidden_dim,
      lstm_dim=config.lstm_dim, proj_dim=config.proj_dim,
      value_atoms=2 * config.value_support + 1, reward_atoms=2 * config.reward_support + 1)


def init_params(net: nn.Module, rng_key: jax.Array, obs_shape: tuple[int, ...]) -> Params:
  obs = jnp.zeros((1, *obs_shape), jnp.float32)
  return net.init(rng_key, obs, jnp.zeros((1,), jnp.int32))


class Model(NamedTuple):
  """Pure functions over (params, ...) for one network; what search, actor and learner close over."""
  net: nn.Module

  def represent(self, params: Params, obs: jax.Array) -> jax.Array:
    return self.net.apply(params, obs, method=MuZeroMLP.represent)

  def dynamics(self, params: Params, latent: jax.Array, action: jax.Array, lstm: LSTMState):
    return self.net.apply(params, latent, action, lstm, method=MuZeroMLP.dynamics)

  def predict(self, params: Params, latent: jax.Array):
    return self.net.apply(params, latent, method=MuZeroMLP.predict)

  def project(self, params: Params, latent: jax.Array, with_head: bool) -> jax.Array:
    return self.net.apply(params, latent, with_head, method=MuZeroMLP.project)

  @property
  def lstm_dim(self) -> int:
    return self.net.lstm_dim
