"""Typed, strict, documented training configuration with TOML presets.

A run's configuration is the `Config` defaults, then a preset (a TOML file in `configs/` or a path), then
`--set key=value` overrides, in that order. Unknown keys and wrong types are errors that name the nearest
valid keys; every resolved config is saved to the run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from pathlib import Path
from typing import Any, get_type_hints

# Installed wheels carry the presets as dreamer/presets; a source checkout has them in configs/.
PRESET_DIR = next(
  (
    p
    for p in (Path(__file__).resolve().parent / "presets", Path(__file__).resolve().parent.parent / "configs")
    if p.is_dir()
  ),
  Path(__file__).resolve().parent / "presets",
)


class ConfigError(ValueError):
  """A user mistake in a configuration: the message is one line meant for the user."""


INT_MAX = 2**31 - 1
"""The largest integer setting (a count, a size, a seed). jax, without x64, counts and indexes in 32-bit
integers and the replay stores env steps as int32, so a larger count would wrap around; and every seed derived
from `seed` (seed + env index, seed + 10000 for evaluation, seed + env steps on a resume) then stays below
2**32, the range in which jax's keys and numpy's RandomState tell seeds apart. Memory is checked apart, by
`dreamer.limits` (sizes that fit in 32 bits can still exhaust it)."""


def number_checks(settings: Any, infinite_ok: tuple[str, ...] = ()) -> list[tuple[bool, str]]:
  """(ok, message) of every number of the dataclass instance `settings`: integers at most INT_MAX and a
  `seed` in [0, INT_MAX]; floats (and lists of floats) finite, NaN and +-inf refused, except that the keys
  in `infinite_ok` may be +-inf (never NaN). Other bounds are each class's own checks."""
  checks = []
  for key, hint in get_type_hints(type(settings)).items():
    value = getattr(settings, key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int and number and key == "seed":
      checks.append((0 <= value <= INT_MAX, f"seed must be in [0, {INT_MAX}] (0 to 2**31 - 1), got {value}"))
    elif hint is int and number:  # the lower bounds are each key's own
      why = "2**31 - 1: jax counts in 32-bit integers"
      checks.append((value <= INT_MAX, f"{key} must be at most {INT_MAX} ({why}), got {value}"))
    elif hint is float and number:
      if key in infinite_ok:
        checks.append((not math.isnan(value), f"{key} must be a number or +-inf, got nan"))
      else:
        checks.append((math.isfinite(value), f"{key} must be a finite number, got {value}"))
    elif hint == tuple[float, ...] and all(type(v) in (int, float) for v in value):
      checks.append((all(map(math.isfinite, value)), f"{key} must hold finite numbers, got {list(value)}"))
  return checks


@dataclasses.dataclass(frozen=True)
class Config:
  """Every setting of a training run. Sizes are totals (divided across devices later)."""

  # --- world and run ---
  preset: str = ""
  """The preset (name or TOML path) this config was resolved from, set by `load`; informational only (shown by
  `dreamer runs`; '' when the config was built without one)."""
  world: str = "toy:chain"
  """World id, e.g. 'toy:chain', 'gym:CartPole-v1' (see `worlds.available()`)."""
  num_envs: int = 8
  """Environments stepped together by the actor; one batched search per step serves all of them."""
  total_env_steps: int = 20_000
  """Real environment steps (summed over envs) after which training stops."""
  seed: int = 0
  """Seeds parameters, search, replay sampling and the worlds."""
  stop_return: float = math.inf
  """Stop early once the mean evaluation return acting with search reaches this value (inf: never; the one
  float setting that may be infinite: -inf stops at the first evaluation; NaN is refused as everywhere)."""
  frame_stack: int = 1
  """Frames the agent stacks into one observation (4 for Atari); replay still stores each frame once."""
  task_input: int = 0
  """0: off. N >= 2: every observation carries the one-hot of its world's place in its task family over N
  slots (`worlds/task.py`: 0 the family's base, e.g. 'gym:CartPole-v1'; 'cartpole:<member>' its place in the
  family's list; 'minatar:<Game>-<variant>' 1 + its place among the game's variants), so one model can hold
  members whose frames look alike but whose physics differ (/dream on another member). The network adds a
  learned latent offset per member, zero for the world it trains on and zero at the start for every other, so
  a checkpoint acts on another member exactly as on its own until /dream adapts it (network 'mlp')."""
  task_dynamics: bool = False
  """With task_input: the dynamics read the member at every imagined step too (the latent carries it; their
  first hidden layer gets a learned shift per member and per member and action, zero for the world the run trains
  on and zero at the start), so one model can hold members whose actions act differently (e.g.
  'cartpole:reversed'). On its home world the network computes the same function as without it; a run there
  learns as without it up to the order of floating-point sums."""
  prior_head: bool = False
  """Search reads its prior from a policy head of its own, while acting without search reads the policy head.
  Written by `dreamer dream --set search_prior=kept` on its output (search keeps its model's prior, acting alone
  reads the distilled head); such a checkpoint is evaluated, played and dreamed on, not trained further."""
  devices: int = 0
  """Devices the run spreads over by data parallelism (`dreamer/devices.py`): N the first N that JAX sees
  (batch_size and num_envs must divide by N); 0 as many of them as divide both (all of them when they do).
  The learning is the same on any count, up to the order of floating-point sums; a resume may change it."""
  first_device: int = 0
  """Index of the run's first device among those JAX sees: the run uses devices first_device, first_device + 1,
  ... (`dreamer compare --devices` gives each concurrent run its own)."""

  # --- Atari worlds (used only by 'atari:' worlds; see worlds/atari.py) ---
  atari_frame_size: int = 96
  """Frames are resized to this many pixels square."""
  atari_grayscale: bool = False
  """Grey frames (1 channel) instead of RGB (3)."""
  atari_sticky_actions: float = 0.0
  """Probability that each emulator frame repeats the previous frame's action, ALE's sticky-action rule drawn
  from the world's own seeded generator (0: the Atari 100k protocol of EfficientZero; 0.25: Machado et al.)."""
  atari_full_action_set: bool = False
  """All 18 actions instead of the game's minimal set."""
  atari_noop_max: int = 30
  """Up to this many no-op frames at the start of every game."""
  atari_train_max_steps: int = 27_000
  """Training games are cut off (truncated) after this many agent steps; evaluation uses eval_max_steps."""

  # --- MinAtar worlds (used only by 'minatar:' worlds; see worlds/minatar.py) ---
  minatar_sticky_actions: float = 0.1
  """Probability that the previous action repeats (0.1: the MinAtar paper's protocol)."""
  minatar_full_action_set: bool = True
  """All 6 actions (the MinAtar paper) instead of the game's minimal set."""
  minatar_ramping: bool = True
  """Difficulty ramping of Asterix, Seaquest and SpaceInvaders (on in the MinAtar paper)."""
  minatar_max_steps: int = 100_000
  """Training games are cut off (truncated) after this many agent steps; evaluation uses eval_max_steps."""

  # --- networks ---
  network: str = "mlp"
  """Network family: 'mlp' (vector observations) or 'resnet' (EfficientZero's Atari network, for frames)."""
  latent_dim: int = 64
  """Width of the latent state produced by representation and dynamics."""
  hidden_dim: int = 128
  """Width of hidden layers in every MLP."""
  lstm_dim: int = 64
  """Width of the value-prefix LSTM."""
  proj_dim: int = 128
  """Width of the projection / prediction heads used by the consistency loss."""
  conv_channels: int = 0
  """mlp: channels of a 3x3 convolution applied to image observations before the MLP (0: none; MinAtar's
  DQN uses 16)."""
  channels: int = 64
  """resnet: channels of the latent (the stem has half)."""
  downsample: bool = True
  """resnet: EfficientZero's stem, strided down by 16 (96x96 frames -> 6x6); false keeps the frame's own
  resolution (MinAtar's 10x10) with one convolution and a residual block."""
  res_blocks: int = 1
  """resnet: residual blocks after the downsampling stem, in representation and in dynamics."""
  action_planes: str = "scalar"
  """resnet: how dynamics sees the action: 'scalar', one constant plane action / num_actions (EfficientZero),
  or 'onehot', one constant plane per action (1 for the action taken). The MLP always takes a one-hot action."""
  head_channels: int = 16
  """resnet: channels of the 1x1 convolutions feeding the value, policy and value-prefix heads."""
  head_hidden: int = 32
  """resnet: hidden width of the value, policy and value-prefix heads."""
  norm: str = "layer"
  """Normalisation layers of both network families: 'layer' (LayerNorm) or 'batch' (BatchNorm, EfficientZero's
  choice: the learner normalises by batch statistics and moves running averages with momentum 0.1 as
  PyTorch; search, acting, targets, reanalysis and evaluation use the running averages; weight decay skips
  them)."""
  state_norm: bool = True
  """Min-max normalise latents to [0, 1] per sample (MuZero); EfficientZero's Atari configuration does not."""
  compute_dtype: str = "float32"
  """'float32', or 'bfloat16': matmuls and convolutions in bfloat16 (for accelerators), with float32 parameters,
  optimizer state, network outputs, losses and search statistics."""
  augment: bool = False
  """Random shift and intensity augmentation of frames in the learner, as EfficientZero."""
  augment_shift: int = 4
  """augment: frames shift by up to this many pixels each way, edges repeated (EfficientZero: 4 at 96x96)."""
  augment_intensity: float = 0.05
  """augment: frames scale by 1 + augment_intensity * clip(N(0, 1), -2, 2) (0: no intensity change)."""
  value_support: int = 25
  """Value support is the integers in [-value_support, value_support], in transformed space h(x)."""
  reward_support: int = 5
  """Value-prefix support is the integers in [-reward_support, reward_support], in transformed space."""

  # --- search ---
  search: str = "gumbel"
  """'gumbel' (Gumbel MuZero), 'puct' (MuZero pUCT with root Dirichlet noise), or 'none': the policy-only
  baseline, the same agent without search: it acts by sampling the policy network (at temperature 1 in
  training: `actor.temperature`), does no reanalysis, and trains the policy by advantage-weighted regression
  on the actions taken (see `awr_temperature`); the model is still trained, and evaluation 'with search' is
  its argmax."""
  awr_temperature: float = 1.0
  """Temperature of the advantage weights exp(A / (awr_temperature * rms(A))) (search 'none', `awr_weight`)."""
  awr_weight: float = 0.0
  """search 'gumbel' or 'puct': weight of the advantage-weighted regression on the actions taken (search
  'none''s policy loss), added to the cross-entropy to search's policy target. It learns from the returns
  actually seen, as Muesli adds a policy gradient to its model-based target: where the model's Q differences are
  too small for search to move the target (`q_range_floor`), the policy still learns. 0: search's target alone.
  Must be 0 with search 'none', whose policy loss is this regression alone."""
  policy_entropy_weight: float = 0.0
  """Weight of an entropy bonus on the policy head: every unrolled step with a policy target subtracts
  w * H(pi) from its policy loss (LightZero's `policy_entropy_weight`), pushing the policy away from narrowing
  onto what it already does. 0: no bonus. At 0.05 it did not hold a policy-only run's entropy against a 0.25
  acting temperature (docs/atari100k.md); acting at 1 did."""
  train_search: bool = True
  """False: training runs no search: acting samples the policy network and the policy learns by search 'none''s
  advantage-weighted regression on real returns, so the run trains exactly as search 'none' does; `search` then
  runs only in evaluations, over the learned model, so the run's figures 'with search' show what searching the
  model adds at decision time to a policy that search did not teach (for budgets where the model's Q
  differences are too noisy to train on). Needs a search; no reanalysis, no `awr_weight`."""
  num_simulations: int = 16
  """Simulations per search, when acting and when reanalysing."""
  max_considered_actions: int = 16
  """Gumbel: actions considered at the root by sequential halving."""
  q_normalization: str = "children"
  """Gumbel: min-max range for completed Q-values: 'tree' (every visited edge, as EfficientZero) or 'children'
  (the node's own children, mctx's default; with two actions this turns any Q difference into 0 vs 1)."""
  q_range_floor: float = 1e-8
  """The smallest min-max range Q-values are normalised by (Gumbel: its completed Q-values, over the range
  `q_normalization` picks; pUCT: mctx's range over the node's value and its children's Q). Before the first
  reward every Q difference is model noise; a range floored at this stops it from being stretched into a full
  preference (EfficientZero and EfficientZero V2 floor it at 0.01; mctx at 1e-8)."""
  dirichlet_alpha: float = 0.3
  """pUCT: concentration of root Dirichlet noise."""
  dirichlet_fraction: float = 0.25
  """pUCT: weight of root Dirichlet noise (0 disables it)."""
  pb_c_init: float = 1.25
  """pUCT: exploration constant c1."""
  pb_c_base: float = 19652.0
  """pUCT: exploration constant c2."""
  temperatures: tuple[float, ...] = (1.0, 0.5, 0.25)
  """Acting temperature per stage of training (pUCT: visit-count temperature; Gumbel: gumbel noise scale).
  Training that acts with the policy network alone (search 'none', `train_search` off) samples it at 1
  throughout (`actor.temperature` says why)."""
  temperature_bounds: tuple[float, ...] = (0.5, 0.75)
  """Fractions of total_env_steps at which the acting temperature moves to the next stage."""
  noise_hold: str = "step"
  """Gumbel: how long acting's root Gumbel noise lasts while training: 'step' (drawn afresh every step, Gumbel
  MuZero's) or 'episode' (drawn per env when its episode starts and held until it ends, still scaled by the
  acting temperature). Over a flat model a search whose noise changes every step acts as a random walk
  (MinAtar Freeway never crosses); noise held for an episode holds the same preference for the whole game, as
  a random greedy Q-network does. The policy target stays search's noiseless one (`search.run_search`).
  Evaluation draws afresh every step. No effect where training runs no search (search 'none', `train_search`
  off: the policy network samples its own actions), so a preset holding noise still runs the search 'none'
  baseline with `--set search=none`; search 'puct' refuses it."""
  noise_redraw: float = 0.0
  """With noise_hold 'episode': the probability per step that an env's held noise is redrawn before its
  episode ends, so holds last 1/noise_redraw steps on average (geometric), cut by the episode's end. 0: held
  for the whole episode. Over a flat model the envs then walk in straight lines of about that length: in
  MinAtar Freeway (2,500-step games) holding one uniformly drawn action crosses 5.3 times a game on average
  both for whole games and for holds of ~30 steps, but whole-game holds cross in one game of four, ~30-step
  holds in every game (docs/minatar.md)."""
  noise_hold_spread: float = 0.0
  """With noise_hold 'episode': an env's held noise is also redrawn after every step whose search told the
  root's actions apart by at least this much (`SearchOutput.q_spread`: max minus min of the visited root
  actions' Q values, in return units), so noise is held only while the model cannot tell the actions apart
  (MinAtar Freeway before its first crossing) and is drawn afresh every step where it can (Breakout and
  SpaceInvaders, whose rewards come from the start and which whole-episode holds cost half their return).
  0: no such redraw. Training logs the share of acting env steps whose spread was under it as
  `train/noise_flat`. A search that visits a single root action (max_considered_actions 1) has spread 0, so
  the key then changes nothing."""
  explore_epsilon: float = 0.0
  """Temporally-extended exploration (ez-greedy, Dabney, Ostrovski & Barreto 2021) while training: an env
  with no exploratory repeat running starts one with this probability per step, repeating one action drawn
  uniformly from the action set for a duration drawn from a zeta distribution (`explore_zeta`). 0: off.
  Before the first reward a search over a flat model acts like a random walk (MinAtar Freeway: no crossing in
  10,000 uniform-random steps); repeats reach states that single random steps do not. Evaluation never
  explores."""
  explore_zeta: float = 2.0
  """Exponent mu of the repeat durations' distribution P(n) proportional to n^-mu, n in 1..explore_max_repeat."""
  explore_max_repeat: int = 100
  """The longest exploratory repeat, in env steps."""
  explore_decay_steps: int = 0
  """Env steps over which explore_epsilon falls linearly to 0 (0: it stays constant for the whole run)."""
  value_prefix_horizon: int = 5
  """The value-prefix LSTM state and prefix are reset every this many model steps."""

  # --- targets and replay ---
  discount: float = 0.997
  """Discount per env step."""
  td_steps: int = 5
  """n of the n-step value target."""
  td_age_steps: int = 0
  """Off-policy correction: the TD horizon shrinks by one per this many env steps of sample age (0: off)."""
  unroll_steps: int = 5
  """K: model steps unrolled per training sample."""
  batch_size: int = 256
  """Training samples per update."""
  replay_capacity: int = 100_000
  """Rows kept in replay (all envs together); the oldest are overwritten."""
  priority_alpha: float = 0.6
  """Prioritised replay exponent (0: uniform)."""
  priority_beta: float = 0.4
  """Initial importance-weight exponent, annealed linearly to 1 over training."""
  priority_eps: float = 1e-6
  """Added to |value error| to form a priority."""
  priority_reward_weight: float = 0.0
  """w: a sampled row's priority is |root value error| + w * the largest |value-prefix error| along its unroll
  (0: EfficientZero's value error alone). Rare rewards the model still mispredicts get their rows replayed more."""
  reanalyze_fraction: float = 0.0
  """Fraction of each batch whose policy targets are recomputed by fresh search with current parameters."""
  value_target: str = "td"
  """Value target of the reanalysed samples: 'td' (the n-step return bootstrapped from the target network, as
  EfficientZero), 'search' (the root value of the reanalysis search at each unroll row: EfficientZero V2's
  search-based value estimation, here from the same search as the policy, so with the current parameters) or
  'mixed' (EfficientZero V2's mixed target: 'search' for samples older than `search_value_age` env steps, 'td'
  for fresher ones). Samples that are not reanalysed always use 'td'."""
  search_value_age: int = 10_000
  """value_target 'mixed': samples at most this many env steps old keep the n-step target."""

  # --- losses and optimiser ---
  value_loss_weight: float = 0.25
  """EfficientZero's value loss weight."""
  policy_loss_weight: float = 1.0
  """Policy loss weight."""
  reward_loss_weight: float = 1.0
  """Value-prefix loss weight."""
  consistency_loss_weight: float = 2.0
  """Self-supervised consistency loss weight (0 disables it)."""
  terminal_loss_weight: float = 0.0
  """> 0: the network gets a terminal head (DreamerV3's continuation predictor, on MuZero's latents): on every
  unrolled latent it predicts whether that step ended its episode by termination (a death, not a time limit),
  trained by binary cross-entropy on replay's terminations with this weight, and search discounts each model
  step by discount * (1 - p(terminal)), so a child predicted terminal adds its reward and nothing after it. Without
  it the value alone must foresee a death, one low target per episode. 0: no head (the network and every
  search are today's, bit for bit)."""
  obs_loss_weight: float = 0.0
  """> 0: the network gets an observation decoder (DreamerV3's reconstruction, on MuZero's latents): every latent
  of the unroll, the root's and the K the dynamics predict, is decoded into its real observation (the root's and
  the next K; with `augment`, all shifted as the root was, so they share its frame of reference, with no
  intensity change; the decoder is not in any `reset_parts` group but 'all'), by per-element binary
  cross-entropy for bool frames (MinAtar) and squared error otherwise, summed over the elements and weighted
  like the value loss over depths, so that the latent must carry the frame's content (where the cars and
  enemies are) that the RL losses leave out.
  'mlp' network only. 0: no decoder (the network and every update are today's, bit for bit)."""
  optimizer: str = "adam"
  """'adam' (AdamW) or 'sgd' (SGD with momentum, EfficientZero's choice)."""
  learning_rate: float = 3e-3
  """Peak learning rate."""
  warmup_updates: int = 0
  """Updates of linear learning-rate warm-up."""
  weight_decay: float = 1e-4
  """Weight decay (decoupled for adam, L2 for sgd)."""
  momentum: float = 0.9
  """SGD momentum."""
  max_grad_norm: float = 5.0
  """Global gradient-norm clip."""
  target_update_interval: int = 100
  """Updates between copies of the parameters into the target network."""
  reset_interval: int = 0
  """Updates between resets of `reset_parts` (0: never). A reset is shrink-and-perturb (Ash & Adams 2020; BBF,
  Schwarzer et al. 2023): theta <- reset_shrink * theta + (1 - reset_shrink) * theta_fresh, with theta_fresh a
  new random initialisation; it keeps a network plastic under a high replay ratio."""
  reset_parts: str = "heads"
  """What a reset touches: 'heads' (the policy and value heads), 'prediction' (the whole prediction function),
  'model' (dynamics, the value-prefix LSTM and head, and `task_input`'s latent offsets), 'all' (every learned
  parameter)."""
  reset_shrink: float = 0.0
  """Weight of the old parameters in a reset, in [0, 1): 0 is a full re-initialisation (BBF's later layers),
  0.5 BBF's shrink-and-perturb of its encoder."""

  # --- schedule ---
  updates_per_env_step: float = 0.25
  """Replay ratio: learner updates per real env step."""
  updates_per_chunk: int = 16
  """Updates run inside one jitted dispatch."""
  learning_starts: int = 1000
  """Env steps collected before the first update."""
  eval_every: int = 1000
  """Env steps between evaluations (0: only at the end)."""
  eval_episodes: int = 32
  """Episodes per evaluation, each acting with search and with the policy network alone."""
  eval_max_steps: int = 27_000
  """Cap on the length of an evaluation episode."""
  checkpoint_every_updates: int = 1000
  """Learner updates between full-state checkpoints (0: only at the end and on SIGINT/SIGTERM)."""
  checkpoints_kept: int = 3
  """The newest this many checkpoints are kept; older ones are deleted."""
  video: bool = False
  """Record one evaluation episode per evaluation (env 0, acting with search) as RUN_DIR/videos/
  eval_<env steps>.mp4 and in TensorBoard (Atari: the emulator's RGB screen; MinAtar: channels drawn as colours;
  gym worlds: their rgb_array render). Needs the 'video' extra; where a video cannot be made the run says why
  once and goes on without videos."""
  video_fps: float = 15.0
  """Frames per second of the videos (one frame per agent step)."""
  tensorboard: bool = True
  """Mirror metrics.jsonl into TensorBoard event files in RUN_DIR/tensorboard (`tensorboard --logdir RUN_DIR`)."""

  def __post_init__(self) -> None:
    # Every condition is evaluated, then the first that fails is reported: numbers that are not finite (or
    # too large for 32 bits) first, so that a NaN is named as such rather than as out of range.
    checks = number_checks(self, infinite_ok=("stop_return",)) + self._world_checks() + self._model_checks()
    checks += self._learning_checks() + self._schedule_checks()
    for ok, message in checks:
      if not ok:
        raise ConfigError(f"invalid config: {message}")

  def _world_checks(self) -> list[tuple[bool, str]]:
    """(ok, message) of the run size, the world settings and the observation pipeline."""
    from worlds.task import slots_error  # the worlds package (gymnasium) only where a config is checked

    slots_why = slots_error(self.world, self.task_input) if self.task_input else None
    return [
      (self.num_envs >= 1, "num_envs must be >= 1"),
      (self.devices >= 0, "devices must be >= 0 (0: automatic)"),
      (self.first_device >= 0, "first_device must be >= 0"),
      (self.total_env_steps >= 1, "total_env_steps must be >= 1"),
      (self.network in ("mlp", "resnet"), f"network must be 'mlp' or 'resnet', got {self.network!r}"),
      (
        self.action_planes in ("scalar", "onehot"),
        f"action_planes must be 'scalar' or 'onehot', got {self.action_planes!r}",
      ),
      (
        self.network == "resnet" or self.action_planes == "scalar",
        "action_planes 'onehot' is for network 'resnet' (the MLP already takes a one-hot action): leave it 'scalar'",
      ),
      (self.frame_stack >= 1, "frame_stack must be >= 1"),
      (
        self.task_input == 0 or self.task_input >= 2,
        f"task_input must be 0 (off) or the number of task slots, >= 2, got {self.task_input}",
      ),
      (
        self.task_input == 0 or self.network == "mlp",
        "task_input is built for network 'mlp' (its latent offset per task): leave it at 0 with network 'resnet'",
      ),
      (slots_why is None, str(slots_why)),
      (
        not self.task_dynamics or self.task_input >= 2,
        "task_dynamics needs task_input (the member the dynamics read): set task_input >= 2 or leave it false",
      ),
      (16 <= self.atari_frame_size <= 160, "atari_frame_size must be in [16, 160] (frames are only shrunk)"),
      (0.0 <= self.atari_sticky_actions <= 1.0, "atari_sticky_actions must be in [0, 1]"),
      (self.atari_noop_max >= 0, "atari_noop_max must be >= 0"),
      (self.atari_train_max_steps >= 1, "atari_train_max_steps must be >= 1"),
      (self.conv_channels >= 0, "conv_channels must be >= 0"),
      (self.augment_shift >= 0, "augment_shift must be >= 0"),
      (0.0 <= self.augment_intensity < 0.5, "augment_intensity must be in [0, 0.5)"),
      (0.0 <= self.minatar_sticky_actions <= 1.0, "minatar_sticky_actions must be in [0, 1]"),
      (self.minatar_max_steps >= 1, "minatar_max_steps must be >= 1"),
    ]

  def _model_checks(self) -> list[tuple[bool, str]]:
    """(ok, message) of the network's shape and the tree search."""
    return [
      (
        min(self.channels, self.res_blocks + 1, self.head_channels, self.head_hidden) >= 1 and self.channels % 2 == 0,
        "channels must be even and >= 2, res_blocks >= 0, head sizes >= 1",
      ),
      (self.norm in ("layer", "batch"), f"norm must be 'layer' or 'batch', got {self.norm!r}"),
      (
        self.compute_dtype in ("float32", "bfloat16"),
        f"compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}",
      ),
      (self.search in ("gumbel", "puct", "none"), f"search must be 'gumbel', 'puct' or 'none', got {self.search!r}"),
      (self.awr_temperature > 0.0, "awr_temperature must be > 0"),
      (self.awr_weight >= 0.0, "awr_weight must be >= 0 (0: search's policy target alone)"),
      (self.policy_entropy_weight >= 0.0, "policy_entropy_weight must be >= 0 (0: no entropy bonus)"),
      (self.terminal_loss_weight >= 0.0, "terminal_loss_weight must be >= 0 (0: no terminal head)"),
      (self.obs_loss_weight >= 0.0, "obs_loss_weight must be >= 0 (0: no observation decoder)"),
      (
        self.obs_loss_weight == 0.0 or self.network == "mlp",
        f"obs_loss_weight decodes the 'mlp' network's flat latent; network {self.network!r} has none: leave "
        "obs_loss_weight at 0 or use network 'mlp'",
      ),
      (
        self.search != "none" or self.awr_weight == 0.0,
        "awr_weight adds advantage-weighted regression to a search's policy target; with search 'none' the policy "
        "loss is that regression alone: leave awr_weight at 0",
      ),
      (
        self.train_search or self.search != "none",
        "train_search=false trains without search and evaluates with it: it needs search 'gumbel' or 'puct'",
      ),
      (
        self.train_search or self.awr_weight == 0.0,
        "train_search=false already trains the policy by that regression alone: leave awr_weight at 0",
      ),
      (
        self.q_normalization in ("tree", "children"),
        f"q_normalization must be 'tree' or 'children', got {self.q_normalization!r}",
      ),
      (self.q_range_floor > 0.0, "q_range_floor must be > 0"),
      (
        self.noise_hold in ("step", "episode"),
        f"noise_hold must be 'step' or 'episode', got {self.noise_hold!r}",
      ),
      (0.0 <= self.noise_redraw <= 1.0, "noise_redraw must be in [0, 1] (0: held for the whole episode)"),
      (
        self.noise_redraw == 0.0 or self.noise_hold == "episode",
        "noise_redraw redraws noise that noise_hold='episode' holds: set that too, or leave noise_redraw at 0",
      ),
      (
        0.0 <= self.noise_hold_spread < math.inf,
        "noise_hold_spread must be a finite number >= 0 (0: held noise is not redrawn for the search's Q spread)",
      ),
      (
        self.noise_hold_spread == 0.0 or self.noise_hold == "episode",
        "noise_hold_spread redraws noise that noise_hold='episode' holds: set that too, or leave noise_hold_spread "
        "at 0",
      ),
      (
        self.noise_hold == "step" or self.search != "puct",
        "noise_hold='episode' holds Gumbel search's root noise; search 'puct' has none (its noise is Dirichlet): "
        f"with search 'puct' set {self._plain_noise_settings()}",
      ),
      (self.optimizer in ("adam", "sgd"), f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}"),
      (self.num_simulations >= 2, "num_simulations must be >= 2"),
      (self.max_considered_actions >= 1, "max_considered_actions must be >= 1"),
      (self.dirichlet_alpha > 0.0, "dirichlet_alpha must be > 0"),
      (0.0 <= self.dirichlet_fraction <= 1.0, "dirichlet_fraction must be in [0, 1]"),
      (self.pb_c_init >= 0.0 and self.pb_c_base > 0.0, "pb_c_init must be >= 0 and pb_c_base > 0"),
    ]

  def _plain_noise_settings(self) -> str:
    """The settings that return acting to fresh noise every step, naming every key this config has set, so one
    error covers them all (`noise_redraw` and `noise_hold_spread` need noise_hold 'episode')."""
    keys = ["noise_hold='step'"]
    keys += ["noise_redraw=0"] if self.noise_redraw else []
    keys += ["noise_hold_spread=0"] if self.noise_hold_spread else []
    return ", ".join(keys)

  def _learning_checks(self) -> list[tuple[bool, str]]:
    """(ok, message) of the targets, the replay buffer and the optimiser."""
    return [
      (0.0 < self.discount <= 1.0, "discount must be in (0, 1]"),
      (self.td_steps >= 1, "td_steps must be >= 1"),
      (self.td_age_steps >= 0, "td_age_steps must be >= 0"),
      (self.unroll_steps >= 1, "unroll_steps must be >= 1"),
      (self.value_prefix_horizon >= 1, "value_prefix_horizon must be >= 1"),
      (self.batch_size >= 1, "batch_size must be >= 1"),
      (
        self.replay_capacity >= self.num_envs * (self.unroll_steps + self.td_steps + 4),
        "replay_capacity must hold at least num_envs * (unroll_steps + td_steps + 4) rows",
      ),
      (self.priority_alpha >= 0.0, "priority_alpha must be >= 0"),
      (self.priority_reward_weight >= 0.0, "priority_reward_weight must be >= 0 (0: the root value error alone)"),
      (0.0 <= self.priority_beta <= 1.0, "priority_beta must be in [0, 1]"),
      (self.priority_eps > 0.0, "priority_eps must be > 0"),
      (0.0 <= self.reanalyze_fraction <= 1.0, "reanalyze_fraction must be in [0, 1]"),
      (
        self.train_search or self.reanalyze_fraction == 0.0,
        "train_search=false runs no search in training, so no reanalysis: leave reanalyze_fraction at 0",
      ),
      (
        self.value_target in ("td", "search", "mixed"),
        f"value_target must be 'td', 'search' or 'mixed', got {self.value_target!r}",
      ),
      (
        self.value_target == "td" or (self.search != "none" and round(self.reanalyze_fraction * self.batch_size) >= 1),
        f"value_target {self.value_target!r} takes its values from the reanalysis search: it needs a search and "
        "reanalyze_fraction * batch_size to round to at least 1 (one reanalysed sample)",
      ),
      (self.search_value_age >= 0, "search_value_age must be >= 0"),
      (self.learning_rate > 0.0, "learning_rate must be > 0"),
      (self.warmup_updates >= 0, "warmup_updates must be >= 0"),
      (self.weight_decay >= 0.0, "weight_decay must be >= 0"),
      (0.0 <= self.momentum <= 1.0, "momentum must be in [0, 1]"),
      (
        min(self.value_loss_weight, self.policy_loss_weight, self.reward_loss_weight, self.consistency_loss_weight)
        >= 0.0,
        "loss weights (value_, policy_, reward_, consistency_loss_weight) must be >= 0",
      ),
      (self.max_grad_norm > 0.0, "max_grad_norm must be > 0"),
      (self.target_update_interval >= 1, "target_update_interval must be >= 1"),
      (self.reset_interval >= 0, "reset_interval must be >= 0 (0: never)"),
      (
        self.reset_parts in ("heads", "prediction", "model", "all"),
        f"reset_parts must be 'heads', 'prediction', 'model' or 'all', got {self.reset_parts!r}",
      ),
      (0.0 <= self.reset_shrink < 1.0, "reset_shrink must be in [0, 1)"),
      (self.updates_per_env_step > 0.0, "updates_per_env_step must be > 0"),
      (self.updates_per_chunk >= 1, "updates_per_chunk must be >= 1"),
      (self.learning_starts >= 0, "learning_starts must be >= 0"),
    ]

  def _schedule_checks(self) -> list[tuple[bool, str]]:
    """(ok, message) of evaluation, checkpoints, acting temperatures and layer sizes."""
    return [
      (self.eval_every >= 0, "eval_every must be >= 0"),
      (self.eval_episodes >= 1, "eval_episodes must be >= 1"),
      (self.eval_max_steps >= 1, "eval_max_steps must be >= 1"),
      (0.0 < self.video_fps <= 240.0, "video_fps must be in (0, 240]"),
      (self.checkpoint_every_updates >= 0, "checkpoint_every_updates must be >= 0"),
      (self.checkpoints_kept >= 1, "checkpoints_kept must be >= 1"),
      (
        len(self.temperatures) == len(self.temperature_bounds) + 1,
        "temperatures must have one more entry than temperature_bounds",
      ),
      (all(t >= 0 for t in self.temperatures), "temperatures must be >= 0"),
      (list(self.temperature_bounds) == sorted(self.temperature_bounds), "temperature_bounds must be increasing"),
      (0.0 <= self.explore_epsilon <= 1.0, "explore_epsilon must be in [0, 1] (0: no exploratory repeats)"),
      (self.explore_zeta > 0.0, "explore_zeta must be > 0"),
      (self.explore_max_repeat >= 1, "explore_max_repeat must be >= 1"),
      (self.explore_decay_steps >= 0, "explore_decay_steps must be >= 0 (0: epsilon stays constant)"),
      (min(self.latent_dim, self.hidden_dim, self.lstm_dim, self.proj_dim) >= 1, "layer widths must be >= 1"),
      (self.value_support >= 1 and self.reward_support >= 1, "supports must be >= 1"),
    ]

  def to_dict(self) -> dict[str, Any]:
    return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
  return list(value) if isinstance(value, tuple) else value


def world_kwargs(config: Config, *, train: bool) -> dict[str, Any]:
  """Keyword arguments for `worlds.make(config.world, ...)`: the task slots with `task_input`, and the Atari
  protocol settings for 'atari:' worlds (train: life loss ends an episode and rewards are clipped; eval: whole
  games, true scores), the MinAtar ones for 'minatar:' worlds, else none."""
  task = {"task_slots": config.task_input} if config.task_input else {}
  return task | _family_kwargs(config, train=train)


def _family_kwargs(config: Config, *, train: bool) -> dict[str, Any]:
  if config.world.startswith("minatar:"):
    return {
      "sticky_actions": config.minatar_sticky_actions,
      "full_action_set": config.minatar_full_action_set,
      "ramping": config.minatar_ramping,
      "max_steps": config.minatar_max_steps if train else config.eval_max_steps,
    }
  if not config.world.startswith("atari:"):  # gym worlds draw frames only when made to (for evaluation videos)
    return {"render_mode": "rgb_array"} if config.world.startswith("gym:") and config.video and not train else {}
  kwargs = {
    "frame_size": config.atari_frame_size,
    "grayscale": config.atari_grayscale,
    "sticky_actions": config.atari_sticky_actions,
    "full_action_set": config.atari_full_action_set,
    "noop_max": config.atari_noop_max,
    "mode": "train" if train else "eval",
    "max_steps": config.atari_train_max_steps if train else config.eval_max_steps,
  }
  return kwargs


def field_names(cls: type = Config) -> list[str]:
  return [f.name for f in dataclasses.fields(cls)]


def _nearest(key: str, cls: type = Config) -> str:
  close = difflib.get_close_matches(key, field_names(cls), n=3, cutoff=0.5)
  return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def coerce(key: str, value: Any, source: str, cls: type = Config) -> Any:
  """Checks `value` against the type of field `key` of the dataclass `cls`; converts ints to floats and lists
  to tuples."""
  if key not in field_names(cls):
    raise ConfigError(f"unknown config key {key!r} in {source}{_nearest(key, cls)}")
  hint = get_type_hints(cls)[key]
  name = getattr(hint, "__name__", str(hint))
  if hint is bool or hint is str:
    if type(value) is not hint:
      raise ConfigError(f"config key {key!r} in {source} must be a {name}, got {value!r}")
    return value
  if hint is int:
    if type(value) is not int:
      raise ConfigError(f"config key {key!r} in {source} must be an integer, got {value!r}")
    return value
  if hint is float:
    if type(value) not in (int, float):
      raise ConfigError(f"config key {key!r} in {source} must be a number, got {value!r}")
    return float(value)
  # tuple[float, ...]
  if not isinstance(value, (list, tuple)) or any(type(v) not in (int, float) for v in value):
    raise ConfigError(f"config key {key!r} in {source} must be a list of numbers, got {value!r}")
  return tuple(float(v) for v in value)


def presets() -> list[str]:
  return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _load_toml(preset: str) -> tuple[dict[str, Any], str]:
  path = Path(preset)
  if not (preset.endswith(".toml") or path.exists()):
    path = PRESET_DIR / f"{preset}.toml"
    if not path.exists():
      raise ConfigError(f"unknown preset {preset!r}: available presets are {presets()}, or give a path to a .toml file")
  if path.is_dir():
    raise ConfigError(f"config file {str(path)!r} is a directory; give a preset name or a .toml file")
  if not path.is_file():
    what = "is not a regular file" if path.exists() else "does not exist"
    raise ConfigError(f"config file {str(path)!r} {what}")
  try:
    return tomllib.loads(path.read_bytes().decode("utf-8")), str(path)
  except OSError as e:
    raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
  except UnicodeDecodeError:
    raise ConfigError(f"config file {str(path)!r} is not text (not UTF-8); give a TOML file") from None
  except (tomllib.TOMLDecodeError, RecursionError) as e:
    raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None


def parse_override(item: str) -> tuple[str, Any]:
  """Parses one `key=value` override; the value is read as a TOML value, or as a bare string."""
  if "=" not in item:
    raise ConfigError(f"override {item!r} must look like key=value (e.g. --set batch_size=128)")
  key, text = item.split("=", 1)
  key = key.strip()
  try:
    value = tomllib.loads(f"v = {text}")["v"]
  except tomllib.TOMLDecodeError:
    value = text  # a bare word such as gym:CartPole-v1
  return key, value


def load(preset: str | None = None, overrides: list[str] | None = None, **kwargs: Any) -> Config:
  """Resolves defaults <- preset <- `key=value` overrides <- keyword arguments into a checked `Config`."""
  values: dict[str, Any] = {}
  if preset is not None:
    values["preset"] = preset
    table, source = _load_toml(preset)
    for key, value in table.items():
      values[key] = coerce(key, value, source)
  for item in overrides or []:
    key, value = parse_override(item)
    values[key] = coerce(key, value, "--set")
  for key, value in kwargs.items():
    values[key] = coerce(key, value, "arguments")
  return Config(**values)


def from_dict(table: dict[str, Any], source: str, overrides: list[str] | None = None, *, cls: type = Config) -> Any:
  """Rebuilds a saved config of dataclass `cls` strictly (checkpoints, resumed runs), then applies overrides."""
  values = {k: coerce(k, v, source, cls) for k, v in table.items()}
  for item in overrides or []:
    key, value = parse_override(item)
    values[key] = coerce(key, value, "--set", cls)
  return cls(**values)


def load_saved(path: str | Path) -> Config:
  """The config a run directory saved (its config.json), strictly checked; ConfigError (one line naming the
  file) when it cannot be read or is not a config: not text, not JSON, not an object, unknown keys, wrong
  types or values. Keys it lacks take their defaults (a run of an older dreamer)."""
  path = Path(path)
  where = f"the saved config {str(path)!r}"
  fix = "repair it, or start the run over with --fresh --config PRESET_OR_PATH"
  try:
    table = json.loads(path.read_bytes().decode("utf-8"))
  except OSError as e:
    raise ConfigError(f"cannot read {where}: {e.strerror or e}") from None
  except UnicodeDecodeError:
    raise ConfigError(f"{where} is not text (not UTF-8); {fix}") from None
  except (json.JSONDecodeError, RecursionError) as e:
    raise ConfigError(f"{where} is not valid JSON ({e}); {fix}") from None
  if not isinstance(table, dict):
    raise ConfigError(f"{where} must hold a JSON object of config keys, got {type(table).__name__}; {fix}")
  try:
    return from_dict(table, where)
  except ConfigError as e:
    message = str(e).removeprefix("invalid config: ")
    raise ConfigError(f"{message if where in message else f'{where}: {message}'}; {fix}") from None


# Keys that fix what a run is: its world, the shapes of its parameters, optimizer state and replay, and its
# seed. A resumed run may change anything else (learning rate, length, evaluation, checkpoint cadence).
IDENTITY_KEYS = (
  "world",
  "network",
  "latent_dim",
  "hidden_dim",
  "lstm_dim",
  "proj_dim",
  "channels",
  "res_blocks",
  "head_channels",
  "head_hidden",
  "value_support",
  "reward_support",
  "frame_stack",
  "task_input",
  "task_dynamics",
  "prior_head",
  "atari_frame_size",
  "atari_grayscale",
  "atari_sticky_actions",
  "atari_full_action_set",
  "atari_noop_max",
  "atari_train_max_steps",
  "minatar_sticky_actions",
  "minatar_full_action_set",
  "minatar_ramping",
  "minatar_max_steps",
  "downsample",
  "action_planes",
  "conv_channels",
  "norm",
  "state_norm",
  "num_envs",
  "replay_capacity",
  "optimizer",
  "seed",
)


def check_resumable(saved: Config, new: Config, where: str) -> dict[str, tuple[Any, Any]]:
  """Refuses a resume whose config changes the run's meaning; returns the other changes {key: (old, new)}."""
  changed = {k: (getattr(saved, k), getattr(new, k)) for k in field_names() if getattr(saved, k) != getattr(new, k)}
  fixed = [k for k in IDENTITY_KEYS if k in changed]
  if fixed:
    what = ", ".join(f"{k} {changed[k][0]!r} -> {changed[k][1]!r}" for k in fixed)
    raise ConfigError(
      f"cannot resume {where} with a different {what}: these keys fix what a run is "
      f"({', '.join(IDENTITY_KEYS)}); use --fresh to replace the run or choose a new --logdir"
    )
  if (saved.terminal_loss_weight > 0) != (new.terminal_loss_weight > 0):  # the head exists or not: other weights
    raise ConfigError(
      f"cannot resume {where} with terminal_loss_weight {saved.terminal_loss_weight!r} -> "
      f"{new.terminal_loss_weight!r}: a weight of 0 means no terminal head, so this changes the network's "
      "parameters; keep it above 0 (or at 0), use --fresh to replace the run or choose a new --logdir"
    )
  if (saved.obs_loss_weight > 0) != (new.obs_loss_weight > 0):  # the decoder exists or not
    raise ConfigError(
      f"cannot resume {where} with obs_loss_weight {saved.obs_loss_weight!r} -> {new.obs_loss_weight!r}: a "
      "weight of 0 means no observation decoder, so this changes the network's parameters; keep it above 0 (or "
      "at 0), use --fresh to replace the run or choose a new --logdir"
    )
  return changed
