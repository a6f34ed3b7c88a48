"""LayerNorm or BatchNorm in the Atari network? Measures both on the same supervised task; prints JSON.

EfficientZero's Atari network uses BatchNorm; ours uses LayerNorm (`dreamer/networks.py`). This trains the
representation of `MuZeroResNet` and one of its heads, with either normalisation (every norm of the conv trunk
and the heads; the small dense MLPs keep LayerNorm in both), on real Atari frames from random play, and
reports for each: the held-out loss and score, BatchNorm's score in eval mode (running averages: what search
and acting would use) and in train mode (statistics of the evaluated batch), and the median time of one
update. Same data, minibatches, initial parameters' seeds and optimiser for both. Two tasks:

  inverse  which way the agent's action moved (Pong: none/FIRE, RIGHT, LEFT) from the stack that ends with the
           frame after the action: the frames decide it, so it measures how well each trunk learns (score:
           held-out accuracy; chance about 1/3);
  value    the discounted clipped return-to-go (value head, 601-atom support; score: held-out squared error,
           to set beside the targets' variance). Under random play it is mostly unpredictable noise: both norms
           end at the variance, so it shows little.

  python scripts/norm_check.py [--task inverse] [--game Pong] [--seeds 0 1 2] [--updates 600] [--channels 32]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import worlds  # noqa: E402
from dreamer import frames, support  # noqa: E402
from dreamer.networks import MuZeroResNet  # noqa: E402
from dreamer.suites import commit  # noqa: E402

# Pong's minimal actions NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE as the paddle moves: none, right, left.
MOVES = np.array([0, 0, 1, 2, 1, 2])


def collect(game: str, envs: int, steps: int, discount: float, seed: int):
  """Random play (train mode: clipped rewards, life loss ends episodes), env-major [envs, T', ...], dropping
  each env's last `tail` steps (their return is unfinished): stacks before each action uint8[.., 4, 96, 96, 3],
  stacks after it (ending with the frame the action led to), actions, returns-to-go f32 and whether the step
  ended an episode (its after-stack is the next episode's start)."""
  world = worlds.make(f"atari:{game}", num_envs=envs, seed=seed)
  rng = np.random.default_rng(seed)
  obs = frames.start(world.reset(seed), 4)
  before, after, actions, rewards, ends = [], [], [], [], []
  for _ in range(steps):
    action = rng.integers(0, world.spec.num_actions, envs)
    step = world.step(action)
    before.append(obs)
    actions.append(action)
    rewards.append(step.reward)
    ends.append(step.terminated | step.truncated)
    obs = frames.push(obs, step.obs, ends[-1], 4)
    after.append(obs)
  world.close()
  ret = np.zeros((steps, envs), np.float32)
  running = np.zeros(envs, np.float32)
  for t in reversed(range(steps)):
    running = rewards[t] + discount * running * ~ends[t]
    ret[t] = running
  tail = 150  # discount^150 < 0.17: the unfinished part of a return matters little after this
  keep = slice(0, steps - tail)
  return {
    k: np.stack(v)[keep].swapaxes(0, 1)
    for k, v in [("before", before), ("after", after), ("action", actions), ("ret", ret), ("end", ends)]
  }


def run(norm: str, seed: int, data, args) -> dict:
  (train_x, train_y), (test_x, test_y) = data
  inverse = args.task == "inverse"
  make = functools.partial(
    MuZeroResNet,
    num_actions=3 if inverse else 6,
    channels=args.channels,
    blocks=1,
    head_channels=16,
    head_hidden=32,
    lstm_dim=64,
    proj_dim=64,
    value_atoms=601,
    reward_atoms=601,
    norm=norm,
  )
  net, net_eval = make(train=True), make(train=False)
  variables = net.init(jax.random.PRNGKey(seed), train_x[:2], jnp.zeros(2, jnp.int32))
  params, stats = variables["params"], variables.get("batch_stats", {})
  opt = optax.adam(args.lr)
  opt_state = opt.init(params)
  head = 0 if inverse else 1  # predict() returns (policy logits, value logits)

  def logits_of(module, params, stats, obs, mutable):
    out = module.apply(
      {"params": params, "batch_stats": stats},
      obs,
      method=lambda m, o: m.predict(m.represent(o))[head],
      mutable=["batch_stats"] if mutable else False,
    )
    return out if mutable else (out, {"batch_stats": stats})

  def losses(logits, y):
    """(cross-entropy f32[B], score f32[B]: correct (inverse) or squared error (value))."""
    if inverse:
      return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1)[:, 0], (
        jnp.argmax(logits, -1) == y
      ).astype(jnp.float32)
    return -jnp.sum(support.scalar_to_probs(y, 300) * jax.nn.log_softmax(logits), -1), (
      support.logits_to_scalar(logits) - y
    ) ** 2

  @jax.jit
  def update(params, stats, opt_state, obs, y):
    def loss(p):
      logits, new = logits_of(net, p, stats, obs, norm == "batch")
      return jnp.mean(losses(logits, y)[0]), new

    (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new["batch_stats"], opt_state, value

  @functools.partial(jax.jit, static_argnums=0)
  def evaluate(module, params, stats, obs, y):
    logits, _ = logits_of(module, params, stats, obs, norm == "batch" and module.train)
    return [jnp.mean(v) for v in losses(logits, y)]

  def test(module, x=test_x, y=test_y):
    parts = [
      evaluate(module, params, stats, x[j : j + args.batch], y[j : j + args.batch])
      for j in range(0, len(x) - args.batch + 1, args.batch)
    ]
    return [float(np.mean([p[k] for p in parts])) for k in (0, 1)]

  score = "accuracy" if inverse else "mse"
  rng = np.random.default_rng(seed)
  seconds, curve = [], []
  every = max(1, args.updates // args.evals)
  for n in range(1, args.updates + 1):
    i = rng.integers(0, len(train_x), args.batch)
    t0 = time.perf_counter()
    params, stats, opt_state, value = update(params, stats, opt_state, train_x[i], train_y[i])
    jax.block_until_ready(value)
    seconds.append(time.perf_counter() - t0)
    if n % every == 0 or n == args.updates:
      curve.append([n, test(net_eval)[1]])
      print(f"{norm} seed {seed} update {n}: test {score} {curve[-1][1]:.4f}", file=sys.stderr, flush=True)

  ce, final = test(net_eval)
  out = {
    "norm": norm,
    "seed": seed,
    "test_ce": ce,
    f"test_{score}": final,
    f"train_{score}": test(net_eval, train_x[: len(test_x)], train_y[: len(test_y)])[1],
    f"test_{score}_curve": curve,
    "update_ms_median": 1000 * statistics.median(seconds[1:]),
  }
  if norm == "batch":
    out[f"test_{score}_batch_statistics"] = test(net)[1]
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", choices=["inverse", "value"], default="inverse")
  parser.add_argument("--game", default="Pong", help="inverse needs Pong's action set")
  parser.add_argument("--envs", type=int, default=8)
  parser.add_argument("--steps", type=int, default=700, help="agent steps collected per env")
  parser.add_argument("--updates", type=int, default=600)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--channels", type=int, default=32)
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument("--discount", type=float, default=0.997**4, help="value: of the return-to-go")
  parser.add_argument("--evals", type=int, default=6, help="held-out evaluations along training")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  args = parser.parse_args()
  if args.task == "inverse" and args.game != "Pong":
    parser.error("--task inverse maps Pong's action set; use --game Pong")
  d = collect(args.game, args.envs, args.steps, args.discount, seed=1234)
  if args.task == "inverse":
    x, y, keep = d["after"], MOVES[d["action"]].astype(np.int32), ~d["end"]
  else:
    x, y, keep = d["before"], d["ret"], np.ones_like(d["end"])
  split = args.envs * 3 // 4  # whole envs held out: test frames come from games never trained on
  data = tuple((x[part][keep[part]], y[part][keep[part]]) for part in (slice(0, split), slice(split, None)))
  runs = [run(norm, seed, data, args) for seed in args.seeds for norm in ("layer", "batch")]
  summary = {}
  for norm in ("layer", "batch"):
    mine = [r for r in runs if r["norm"] == norm]
    summary[norm] = {
      k: statistics.median(r[k] for r in mine)
      for k in mine[0]
      if k not in ("norm", "seed") and not k.endswith("_curve")
    }
  train_y, test_y = data[0][1], data[1][1]
  if args.task == "inverse":
    base = {"test_accuracy_of_majority_class": float(np.mean(test_y == np.bincount(train_y).argmax()))}
  else:
    base = {
      "test_return_variance": float(np.var(test_y)),
      "test_mse_of_train_mean": float(np.mean((test_y - np.mean(train_y)) ** 2)),
    }
  print(
    json.dumps(
      {
        "task": args.task,
        "game": args.game,
        "commit": commit(),
        "backend": jax.default_backend(),
        "args": vars(args),
        "train_frames": len(train_y),
        "test_frames": len(test_y),
        **base,
        "median_over_seeds": summary,
        "runs": runs,
      },
      indent=1,
    )
  )


if __name__ == "__main__":
  main()
