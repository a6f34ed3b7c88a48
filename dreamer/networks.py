"""EfficientZero networks: representation, dynamics with a value-prefix LSTM, prediction, projection.

Two families with one interface: `MuZeroMLP` for vector observations and `MuZeroResNet`, EfficientZero's Atari
network (strided convolutions and residual blocks down to a 6x6 latent from 96x96 frames). One flax module
holds all parts; callers pick a part through the thin pure wrappers of `Model` (`represent`, `dynamics`,
`predict`, `project`). With `state_norm` (config), latents are min-max normalised to [0, 1] per sample, as
MuZero does, so that dynamics and representation outputs live on one scale; EfficientZero's Atari
configuration leaves it off (`state_norm=False`), and so do the atari100k presets.

Normalisation (`config.norm`): 'batch' is EfficientZero's BatchNorm (PyTorch's momentum 0.1): the learner's
forward passes run in training mode (statistics of the batch, running averages moved after every call) and
everything else (search, acting, bootstrap values, reanalysis, evaluation) reads the running averages, as
EfficientZero's `model.train()` / `model.eval()`. Parameters are then the flax variables {'params',
'batch_stats'}. 'layer' is LayerNorm over channels: no running statistics and no coupling of the samples of a
batch. Every network call goes through `Model.call`, which threads the running averages in training mode.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamer.config import Config

Params = Any

# The terminal head's initial logit: p = 0.007, so that an untrained head barely discounts search (deaths are
# rare steps) while its gradient is not yet saturated.
TERMINAL_BIAS = -5.0


class LSTMState(NamedTuple):
  """The value-prefix LSTM's carry: c, h: f32[B, lstm_dim]."""

  c: jax.Array
  h: jax.Array


def zero_lstm_state(batch: int, dim: int) -> LSTMState:
  return LSTMState(jnp.zeros((batch, dim)), jnp.zeros((batch, dim)))


def dynamics_step(
  call: Callable[..., Any],
  latent: jax.Array,
  action: jax.Array,
  lstm: LSTMState,
  depth: int | jax.Array,
  *,
  horizon: int,
) -> tuple[jax.Array, LSTMState, jax.Array]:
  """One model step from a state `depth` steps below its root (int, or i32[B] per sample), with the
  value-prefix rule: the LSTM starts again from zero on the step out of every depth that is a multiple of
  `horizon` (so each prefix sums at most `horizon` rewards). `call(method, *args)` runs the network (eval or
  training mode). latent f32[B, ...], action i32[B] -> (next latent, LSTM state, value-prefix logits f32[B, R]).
  This is the one place the rule is written: training, distillation and search all step through it."""
  if isinstance(depth, int):
    lstm = zero_lstm_state(latent.shape[0], lstm.c.shape[-1]) if depth % horizon == 0 else lstm
  else:
    reset = (depth % horizon == 0)[:, None]
    lstm = jax.tree.map(lambda x: jnp.where(reset, 0.0, x), lstm)
  return call("dynamics", latent, action, lstm)


def unroll(
  call: Callable[..., Any],
  latent: jax.Array,
  action: jax.Array,
  *,
  lstm_dim: int,
  horizon: int,
  after_step: Callable[[jax.Array], jax.Array] | None = None,
  read: Callable[[int, jax.Array], Any] | None = None,
) -> tuple[list[jax.Array], list[jax.Array], list[Any]]:
  """The model unrolled from root latents f32[B, ...] along action i32[B, K] (see dynamics_step). Returns the
  K+1 latents (the root first), the K value-prefix logits f32[B, R], and read(k, latent) of each latent k
  (empty without `read`). after_step(latent) is applied to each new latent before anything reads it
  (training halves its gradient there). `read` runs on each latent as soon as it is made, so in training
  mode every network part is called in depth order."""
  lstm = zero_lstm_state(latent.shape[0], lstm_dim)
  latents, prefixes, reads = [latent], [], [read(0, latent)] if read is not None else []
  for k in range(action.shape[1]):
    latent, lstm, prefix = dynamics_step(call, latent, action[:, k], lstm, k, horizon=horizon)
    latent = after_step(latent) if after_step is not None else latent
    latents.append(latent)
    prefixes.append(prefix)
    if read is not None:
      reads.append(read(k + 1, latent))
  return latents, prefixes, reads


def normalize_latent(x: jax.Array) -> jax.Array:
  """Min-max scales each sample's latent f32[B, D] to [0, 1]."""
  low = jnp.min(x, axis=-1, keepdims=True)
  high = jnp.max(x, axis=-1, keepdims=True)
  return (x - low) / jnp.maximum(high - low, 1e-5)


class MLP(nn.Module):
  """Dense -> norm -> ReLU blocks, then a final Dense (zero-initialised if `zero_last`)."""

  hidden: tuple[int, ...]
  out: int
  zero_last: bool = False
  bias_last: float = 0.0  # the final Dense's initial bias
  norm: str = "layer"  # see `make_norm`
  train: bool = False  # only read by norm 'batch'
  dtype: Any = None  # compute dtype of every layer (None: float32, from the inputs and parameters)

  @nn.compact
  def __call__(self, x: jax.Array, shift: jax.Array | None = None) -> jax.Array:
    """x [B, F] -> [B, out]; `shift` [B, hidden[0]], if given, is added to the first layer's pre-activation
    (the same as more input columns into that layer, without changing its parameters' shapes)."""
    for i, width in enumerate(self.hidden):
      pre = nn.Dense(width, dtype=self.dtype)(x)
      pre = pre + shift.astype(pre.dtype) if i == 0 and shift is not None else pre
      x = nn.relu(make_norm(self.norm, self.train, self.dtype)(pre))
    init = nn.initializers.zeros if self.zero_last else nn.initializers.lecun_normal()
    bias = nn.initializers.constant(self.bias_last)
    return nn.Dense(self.out, kernel_init=init, bias_init=bias, dtype=self.dtype)(x)


def split_task(obs: jax.Array, slots: int) -> tuple[jax.Array, jax.Array]:
  """obs [B, ..., F + slots] (`worlds/task.py`: the last axis ends with the task one-hot, the same in every
  frame and pixel) -> (obs [B, ..., F], task f32[B, slots]); with no slots, (obs, an empty [B, 0])."""
  if not slots:
    return obs, jnp.zeros((obs.shape[0], 0), jnp.float32)
  task = obs.reshape(obs.shape[0], -1, obs.shape[-1])[:, -1, -slots:]
  return obs[..., :-slots], task.astype(jnp.float32)


class MuZeroMLP(nn.Module):
  """The MLP variant for vector observations f32[B, *obs_shape], or for small images (MinAtar's 10x10xC)
  with a convolution first (`conv_channels`, the torso of the MinAtar paper's DQN)."""

  num_actions: int
  latent_dim: int
  hidden_dim: int
  lstm_dim: int
  proj_dim: int
  value_atoms: int
  reward_atoms: int
  state_norm: bool = True
  conv_channels: int = 0  # > 0: a 3x3 convolution (same padding) and ReLU read image observations first
  terminal_head: bool = False  # a head predicting whether a latent ended its episode (`terminal`)
  decoder_size: int = 0  # > 0: a decoder of a latent into its observation's elements, flat (`decode`)
  task_slots: int = 0  # > 0: observations end with a task one-hot over this many slots (`split_task`)
  task_home: int = 0  # the slot of the world the network trains on: its latent offset is 0
  # With task_slots: the latent carries the member (its last task_slots entries, the home slot zeroed) and the
  # dynamics read it at every step, so one model can hold members whose physics differ (`dynamics`).
  task_dynamics: bool = False
  prior_head: bool = False  # search's prior from a head of its own (`search_predict`); acting alone: the policy head
  norm: str = "layer"  # see `make_norm`
  train: bool = False  # only read by norm 'batch'
  dtype: Any = None  # compute dtype (see `make_network`); every method returns float32

  def setup(self) -> None:
    h, nk = self.hidden_dim, {"norm": self.norm, "train": self.train, "dtype": self.dtype}
    self.conv = nn.Conv(self.conv_channels, (3, 3), padding=1, dtype=self.dtype) if self.conv_channels else None
    # Zero at the start and fed zeros on the home world, so its rows for other members get no gradient
    # (and no Adam or weight-decay step) until data of those members arrives: a checkpoint acts on every
    # member exactly as on its own until then.
    # float32 whatever the compute dtype: one row is added per member, nothing to gain from bfloat16.
    self.task_offset = nn.Dense(self.latent_dim, use_bias=False, kernel_init=nn.initializers.zeros)
    # The same zero start for the dynamics' view of the member: a shift of their first hidden layer.
    self.dyn_task = nn.Dense(h, use_bias=False, kernel_init=nn.initializers.zeros) if self.task_dynamics else None
    self.repr_net = MLP((h, h), self.latent_dim, **nk)
    self.dyn_net = MLP((h, h), self.latent_dim, **nk)
    self.lstm = nn.OptimizedLSTMCell(self.lstm_dim, dtype=self.dtype)
    self.prefix_head = MLP((h,), self.reward_atoms, zero_last=True, **nk)
    self.trunk = MLP((), h, dtype=self.dtype)
    self.policy_head = MLP((h,), self.num_actions, zero_last=True, **nk)
    self.search_prior = MLP((h,), self.num_actions, zero_last=True, **nk) if self.prior_head else None
    self.value_head = MLP((h,), self.value_atoms, zero_last=True, **nk)
    if self.terminal_head:
      self.end_head = MLP((h,), 1, zero_last=True, bias_last=TERMINAL_BIAS, **nk)
    if self.decoder_size:
      self.decoder = MLP((h, h), self.decoder_size, **nk)
    self.projector = MLP((self.proj_dim,), self.proj_dim, **nk)
    self.proj_predictor = MLP((self.proj_dim // 2,), self.proj_dim, **nk)

  def represent(self, obs: jax.Array) -> jax.Array:
    """obs [B, *obs_shape] (with `conv_channels`: [B, H, W, C]) -> latent f32[B, latent_dim] (with
    `task_dynamics`: f32[B, latent_dim + task_slots], the member carried at the end)."""
    x, task = split_task(obs.astype(jnp.float32), self.task_slots)
    if self.conv is not None:
      x = nn.relu(self.conv(x))
    latent = self.repr_net(x.reshape(obs.shape[0], -1)).astype(jnp.float32)
    if self.task_slots:
      # Thresholded: intensity augmentation scales every channel, the one-hot's too. The home slot never counts.
      away = (task > 0.5).astype(jnp.float32) * (1.0 - jax.nn.one_hot(self.task_home, self.task_slots))
      latent = latent + self.task_offset(away)
    latent = normalize_latent(latent) if self.state_norm else latent
    return jnp.concatenate([latent, away], axis=-1) if self.task_dynamics else latent

  def _split_latent(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
    """latent -> (the state f32[B, latent_dim], the member it carries f32[B, task_slots], or [B, 0])."""
    if not self.task_dynamics:
      return latent, latent[:, :0]
    return latent[:, : self.latent_dim], latent[:, self.latent_dim :]

  def dynamics(self, latent: jax.Array, action: jax.Array, lstm: LSTMState) -> tuple[jax.Array, LSTMState, jax.Array]:
    """latent f32[B, D], action int[B], lstm -> next latent f32[B, D], lstm, prefix logits f32[B, R]. With
    `task_dynamics` the first hidden layer also reads the member and its product with the action (zero at
    home: the home world's dynamics are exactly those without it), and the next latent carries the member on."""
    a = jax.nn.one_hot(action, self.num_actions)
    state, away = self._split_latent(latent)
    shift = None
    if self.dyn_task is not None:
      by_action = (away[:, :, None] * a[:, None, :]).reshape(away.shape[0], -1)
      shift = self.dyn_task(jnp.concatenate([away, by_action], axis=-1))
    nxt = state + self.dyn_net(jnp.concatenate([state, a], axis=-1), shift).astype(jnp.float32)
    nxt = normalize_latent(nxt) if self.state_norm else nxt
    (c, h), out = self.lstm((lstm.c, lstm.h), nxt)
    nxt = jnp.concatenate([nxt, away], axis=-1) if self.task_dynamics else nxt
    return nxt, f32_lstm(c, h), self.prefix_head(nn.relu(out)).astype(jnp.float32)

  def predict(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
    """latent f32[B, D] -> policy logits f32[B, A], value logits f32[B, V]."""
    return self._heads(latent, self.policy_head)

  def search_predict(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
    """What search reads: `predict`'s, or with `prior_head` the logits of the search prior's own head."""
    return self._heads(latent, self.policy_head if self.search_prior is None else self.search_prior)

  def _heads(self, latent: jax.Array, policy: nn.Module) -> tuple[jax.Array, jax.Array]:
    x = nn.relu(self.trunk(self._split_latent(latent)[0]))
    return policy(x).astype(jnp.float32), self.value_head(x).astype(jnp.float32)

  def terminal(self, latent: jax.Array) -> jax.Array:
    """latent f32[B, D] -> logit f32[B] that the step into this latent ended its episode (`terminal_head`)."""
    return self.end_head(self._split_latent(latent)[0])[:, 0].astype(jnp.float32)

  def decode(self, latent: jax.Array) -> jax.Array:
    """latent f32[B, D] -> f32[B, decoder_size]: the observation's elements, flat (logits for bool frames)."""
    return self.decoder(self._split_latent(latent)[0]).astype(jnp.float32)

  def project(self, latent: jax.Array, with_head: bool) -> jax.Array:
    """latent -> projection f32[B, P]; the online branch adds the prediction head (SimSiam style)."""
    z = self.projector(self._split_latent(latent)[0])
    return (self.proj_predictor(z) if with_head else z).astype(jnp.float32)

  def __call__(self, obs: jax.Array, action: jax.Array) -> Any:
    """Touches every part once (for `init`)."""
    latent = self.represent(obs)
    nxt, _, prefix = self.dynamics(latent, action, zero_lstm_state(obs.shape[0], self.lstm_dim))
    end = self.terminal(nxt) if self.terminal_head else None
    prior = self.search_predict(nxt) if self.prior_head else None
    decoded = self.decode(latent) if self.decoder_size else None
    return self.predict(nxt), prefix, self.project(nxt, True), end, prior, decoded


def normalize_latent_nd(x: jax.Array) -> jax.Array:
  """Min-max scales each sample of f32[B, ...] to [0, 1] over all its other axes."""
  flat = normalize_latent(x.reshape(x.shape[0], -1))
  return flat.reshape(x.shape)


def make_norm(kind: str, train: bool, dtype: Any = None) -> nn.Module:
  """'layer': LayerNorm over the last (channel) axis. 'batch': BatchNorm over every other axis with PyTorch's
  momentum 0.1 and eps 1e-5 (EfficientZero's), batch statistics when `train` (the running averages in the
  mutable 'batch_stats' collection move) else the running averages. Statistics are reduced in float32 whatever
  the compute `dtype` (flax's default)."""
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)
  return nn.LayerNorm(dtype=dtype)


def f32_lstm(c: jax.Array, h: jax.Array) -> LSTMState:
  """The LSTM's carry kept in float32 between model steps, whatever the compute dtype."""
  return LSTMState(c.astype(jnp.float32), h.astype(jnp.float32))


class ResBlock(nn.Module):
  """EfficientZero's residual block: conv-norm-relu-conv-norm, plus the input (strided conv if `stride` 2)."""

  channels: int
  stride: int = 1
  norm: str = "layer"
  train: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(nn.Conv, self.channels, (3, 3), padding=1, use_bias=False, dtype=self.dtype)
    norm = functools.partial(make_norm, self.norm, self.train, self.dtype)
    y = nn.relu(norm()(conv(strides=self.stride)(x)))
    y = norm()(conv()(y))
    if self.stride != 1 or x.shape[-1] != self.channels:
      x = conv(strides=self.stride)(x)
    return nn.relu(x + y)


def _avg_pool(x: jax.Array) -> jax.Array:
  # PyTorch's AvgPool2d(3, stride=2, padding=1), padding counted, as EfficientZero's DownSample.
  return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)


class Head(nn.Module):
  """1x1 conv to `channels` -> norm -> relu -> flatten -> MLP to `out` (zero-initialised last layer)."""

  channels: int
  hidden: int
  out: int
  bias_last: float = 0.0
  norm: str = "layer"
  train: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(make_norm(self.norm, self.train, self.dtype)(nn.Conv(self.channels, (1, 1), dtype=self.dtype)(x)))
    nk = {"norm": self.norm, "train": self.train, "dtype": self.dtype}
    mlp = MLP((self.hidden,), self.out, zero_last=True, bias_last=self.bias_last, **nk)
    return mlp(x.reshape(x.shape[0], -1)).astype(jnp.float32)


class MuZeroResNet(nn.Module):
  """EfficientZero's Atari network for stacked frames uint8[B, S, H, W, C] (or one frame [B, H, W, C]).

  Frames are scaled to [0, 1] and the stack is folded into channels (S*C). Representation: 3x3 conv stride 2
  (channels/2), a residual block, a strided residual block (channels), a block, avg-pool /2, a block, avg-pool
  /2 (96 -> 6), then `blocks` blocks; without `downsample` (MinAtar) a 3x3 conv (channels) and one block at
  full resolution, then `blocks` blocks. Dynamics: the latent with constant action planes (`action_planes`:
  one plane action / A, or A one-hot planes), 3x3 conv, norm, plus the latent, relu, `blocks` blocks; the value
  prefix comes from a 1x1 conv of the next latent through the LSTM. Projection: flatten, 3 dense layers
  (proj_dim) and a 2-layer predictor (SimSiam).
  """

  num_actions: int
  channels: int
  blocks: int
  head_channels: int
  head_hidden: int
  lstm_dim: int
  proj_dim: int
  value_atoms: int
  reward_atoms: int
  state_norm: bool = False
  downsample: bool = True  # False: no stride or pooling (small frames such as MinAtar's 10x10)
  action_planes: str = "scalar"  # 'scalar': one plane action / A (EfficientZero); 'onehot': A planes
  terminal_head: bool = False  # a head predicting whether a latent ended its episode (`terminal`)
  pixel_max: float = 255.0  # observations are divided by this: 255 for uint8 pixels, 1 for MinAtar's bools
  prior_head: bool = False  # search's prior from a head of its own (`search_predict`); acting alone: the policy head
  norm: str = "layer"  # see `make_norm`
  train: bool = False  # only read by norm 'batch'
  dtype: Any = None  # compute dtype (see `make_network`); every method returns float32

  def setup(self) -> None:
    c, dt = self.channels, self.dtype
    nk = {"norm": self.norm, "train": self.train, "dtype": dt}
    norm = lambda: make_norm(self.norm, self.train, dt)  # noqa: E731
    if self.downsample:
      self.stem = nn.Conv(c // 2, (3, 3), 2, padding=1, use_bias=False, dtype=dt)
      self.down = [ResBlock(c // 2, **nk), ResBlock(c, stride=2, **nk), ResBlock(c, **nk), ResBlock(c, **nk)]
    else:
      self.stem = nn.Conv(c, (3, 3), padding=1, use_bias=False, dtype=dt)
      self.down = [ResBlock(c, **nk)]
    self.stem_norm = norm()
    self.repr_blocks = [ResBlock(c, **nk) for _ in range(self.blocks)]
    self.dyn_conv = nn.Conv(c, (3, 3), padding=1, use_bias=False, dtype=dt)
    self.dyn_norm = norm()
    self.dyn_blocks = [ResBlock(c, **nk) for _ in range(self.blocks)]
    self.prefix_conv = nn.Conv(self.head_channels, (1, 1), dtype=dt)
    self.prefix_conv_norm = norm()
    self.lstm = nn.OptimizedLSTMCell(self.lstm_dim, dtype=dt)
    self.prefix_norm = norm()
    self.prefix_head = MLP((self.head_hidden,), self.reward_atoms, zero_last=True, **nk)
    self.pred_blocks = [ResBlock(c, **nk) for _ in range(self.blocks)]
    self.value_head = Head(self.head_channels, self.head_hidden, self.value_atoms, **nk)
    self.policy_head = Head(self.head_channels, self.head_hidden, self.num_actions, **nk)
    self.search_prior = Head(self.head_channels, self.head_hidden, self.num_actions, **nk) if self.prior_head else None
    if self.terminal_head:
      self.end_head = Head(self.head_channels, self.head_hidden, 1, bias_last=TERMINAL_BIAS, **nk)
    p = self.proj_dim
    self.projector = [nn.Dense(p, dtype=dt), norm(), nn.Dense(p, dtype=dt), norm(), nn.Dense(p, dtype=dt), norm()]
    self.proj_predictor = MLP((p // 2,), p, **nk)

  def represent(self, obs: jax.Array) -> jax.Array:
    """obs uint8 or bool [B, S, H, W, C] or [B, H, W, C] -> latent f32[B, H/16, W/16, channels] (downsample)
    or f32[B, H, W, channels]."""
    x = obs.astype(jnp.float32) / self.pixel_max  # (augmented frames arrive as f32 on the pixel scale)
    if x.ndim == 5:  # fold the stack into channels: [B, H, W, S*C], oldest frame first
      x = jnp.moveaxis(x, 1, 3).reshape(*x.shape[:1], *x.shape[2:4], -1)
    x = nn.relu(self.stem_norm(self.stem(x)))
    if self.downsample:
      x = self.down[1](self.down[0](x))
      x = _avg_pool(self.down[2](x))
      x = _avg_pool(self.down[3](x))
    else:
      x = self.down[0](x)
    for block in self.repr_blocks:
      x = block(x)
    x = x.astype(jnp.float32)
    return normalize_latent_nd(x) if self.state_norm else x

  def dynamics(self, latent: jax.Array, action: jax.Array, lstm: LSTMState) -> tuple[jax.Array, LSTMState, jax.Array]:
    """latent f32[B, h, w, c], action int[B], lstm -> next latent, lstm, prefix logits f32[B, R]."""
    if self.action_planes == "onehot":
      a = jax.nn.one_hot(action, self.num_actions)
    else:
      a = (action.astype(jnp.float32) / self.num_actions)[:, None]
    plane = jnp.broadcast_to(a[:, None, None, :], (*latent.shape[:3], a.shape[-1]))
    x = self.dyn_norm(self.dyn_conv(jnp.concatenate([latent, plane], axis=-1)))
    x = nn.relu(x + latent)
    for block in self.dyn_blocks:
      x = block(x)
    # The value prefix reads the dynamics output before any state normalisation, as EfficientZero.
    r = nn.relu(self.prefix_conv_norm(self.prefix_conv(x)))
    x = x.astype(jnp.float32)
    nxt = normalize_latent_nd(x) if self.state_norm else x
    (c, h), out = self.lstm((lstm.c, lstm.h), r.reshape(r.shape[0], -1))
    return nxt, f32_lstm(c, h), self.prefix_head(nn.relu(self.prefix_norm(out))).astype(jnp.float32)

  def predict(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
    """latent f32[B, h, w, c] -> policy logits f32[B, A], value logits f32[B, V]."""
    return self._heads(latent, self.policy_head)

  def search_predict(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
    """What search reads: `predict`'s, or with `prior_head` the search prior's own head for the logits."""
    return self._heads(latent, self.policy_head if self.search_prior is None else self.search_prior)

  def _heads(self, latent: jax.Array, policy: nn.Module) -> tuple[jax.Array, jax.Array]:
    x = latent
    for block in self.pred_blocks:
      x = block(x)
    return policy(x), self.value_head(x)

  def terminal(self, latent: jax.Array) -> jax.Array:
    """latent f32[B, h, w, c] -> logit f32[B] that the step into this latent ended its episode."""
    return self.end_head(latent)[:, 0]

  def project(self, latent: jax.Array, with_head: bool) -> jax.Array:
    """latent -> projection f32[B, proj_dim]; the online branch adds the prediction head."""
    z = latent.reshape(latent.shape[0], -1)
    for i, layer in enumerate(self.projector):
      z = nn.relu(layer(z)) if i in (1, 3) else layer(z)
    return (self.proj_predictor(z) if with_head else z).astype(jnp.float32)

  def __call__(self, obs: jax.Array, action: jax.Array) -> Any:
    """Touches every part once (for `init`)."""
    latent = self.represent(obs)
    nxt, _, prefix = self.dynamics(latent, action, zero_lstm_state(obs.shape[0], self.lstm_dim))
    end = self.terminal(nxt) if self.terminal_head else None
    prior = self.search_predict(nxt) if self.prior_head else None
    return self.predict(nxt), prefix, self.project(nxt, True), end, prior


def make_network(
  config: Config, num_actions: int, obs_dtype: Any = jnp.uint8, obs_shape: tuple[int, ...] | None = None
) -> nn.Module:
  """The config's network for `num_actions` actions and observations of `obs_dtype` (resnet: uint8 pixels
  are scaled by 1/255, other dtypes are taken as they are) and of `obs_shape` as the network sees them (frames
  stacked), which only the observation decoder reads (`obs_loss_weight` > 0)."""
  from worlds.task import member  # the worlds package (gymnasium) only where a network is made

  # Config validation already limits `network` to the families built here.
  atoms = {"value_atoms": 2 * config.value_support + 1, "reward_atoms": 2 * config.reward_support + 1}
  # bfloat16: matmuls and convolutions in bfloat16; parameters stay float32 (flax's param_dtype), and every
  # network output is cast back to float32, so losses, optimizer state and search statistics stay float32.
  atoms["dtype"] = jnp.bfloat16 if config.compute_dtype == "bfloat16" else None
  if config.network == "resnet":
    return MuZeroResNet(
      num_actions=num_actions,
      channels=config.channels,
      blocks=config.res_blocks,
      head_channels=config.head_channels,
      head_hidden=config.head_hidden,
      lstm_dim=config.lstm_dim,
      proj_dim=config.proj_dim,
      state_norm=config.state_norm,
      downsample=config.downsample,
      action_planes=config.action_planes,
      terminal_head=config.terminal_loss_weight > 0.0,
      norm=config.norm,
      prior_head=config.prior_head,
      pixel_max=255.0 if jnp.dtype(obs_dtype) == jnp.uint8 else 1.0,
      **atoms,
    )
  return MuZeroMLP(
    num_actions=num_actions,
    latent_dim=config.latent_dim,
    hidden_dim=config.hidden_dim,
    lstm_dim=config.lstm_dim,
    proj_dim=config.proj_dim,
    state_norm=config.state_norm,
    conv_channels=config.conv_channels,
    terminal_head=config.terminal_loss_weight > 0.0,
    decoder_size=decoder_size(config, obs_shape),
    task_slots=config.task_input,
    task_home=member(config.world),
    task_dynamics=config.task_dynamics,
    prior_head=config.prior_head,
    norm=config.norm,
    **atoms,
  )


def decoder_size(config: Config, obs_shape: tuple[int, ...] | None) -> int:
  """The observation decoder's output size: the observation's element count with `obs_loss_weight` > 0, else 0."""
  if config.obs_loss_weight == 0.0:
    return 0
  if obs_shape is None:
    raise ValueError("obs_loss_weight > 0 needs the observation shape to size the decoder: pass obs_shape")
  return math.prod(obs_shape)


def init_params(net: nn.Module, rng_key: jax.Array, obs_shape: tuple[int, ...]) -> Params:
  """The network's variables: {'params': ...}, plus {'batch_stats': ...} (means 0, variances 1) with BatchNorm."""
  obs = jnp.zeros((1, *obs_shape), jnp.float32)
  return net.init(rng_key, obs, jnp.zeros((1,), jnp.int32))


class Model(NamedTuple):
  """Pure functions over (params, ...) for one network (in eval mode); what search, actor and learner close
  over. `params` are the network's flax variables."""

  net: nn.Module

  def call(self, params: Params, method: str, *args: Any, train: bool = False) -> Any:
    """net.<method>(*args). train=False: BatchNorm reads its running averages; returns the output.
    train=True: BatchNorm normalises by this batch's statistics and moves its running averages, as a
    PyTorch module in train mode; returns (output, params with the new running averages). Every network call
    of search, acting and learning passes here."""
    if not train:
      return self.net.apply(params, *args, method=method)
    out, moved = self.net.clone(train=True).apply(params, *args, method=method, mutable=["batch_stats"])
    return out, {**params, **moved}

  def represent(self, params: Params, obs: jax.Array) -> jax.Array:
    return self.call(params, "represent", obs)

  def dynamics(self, params: Params, latent: jax.Array, action: jax.Array, lstm: LSTMState):
    return self.call(params, "dynamics", latent, action, lstm)

  def predict(self, params: Params, latent: jax.Array):
    return self.call(params, "predict", latent)

  def search_predict(self, params: Params, latent: jax.Array):
    """What search reads (the network's `search_predict`): `predict` unless the network has a search prior head."""
    return self.call(params, "search_predict", latent)

  def project(self, params: Params, latent: jax.Array, with_head: bool) -> jax.Array:
    return self.call(params, "project", latent, with_head)

  def terminal(self, params: Params, latent: jax.Array) -> jax.Array:
    return self.call(params, "terminal", latent)

  def decode(self, params: Params, latent: jax.Array) -> jax.Array:
    return self.call(params, "decode", latent)

  @property
  def has_decoder(self) -> bool:
    """Whether the network decodes latents into observations (config `obs_loss_weight` > 0)."""
    return bool(getattr(self.net, "decoder_size", 0))

  @property
  def has_terminal(self) -> bool:
    """Whether the network predicts terminations (config `terminal_loss_weight` > 0)."""
    return self.net.terminal_head

  @property
  def lstm_dim(self) -> int:
    return self.net.lstm_dim
