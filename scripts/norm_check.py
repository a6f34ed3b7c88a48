"""LayerNorm or BatchNorm in the Atari network? Measures both on the same supervised task; prints JSON.

EfficientZero's Atari network uses BatchNorm; ours uses LayerNorm (`dreamer/networks.py`). This fits the
representation and value head of `MuZeroResNet` with either normalisation (every norm of the conv trunk and
the heads; the small dense MLPs keep LayerNorm in both) to the discounted clipped return-to-go of real Atari
frames under a random policy, a value-prediction task of the kind the learner solves, and reports for each:
held-out value cross-entropy and squared error, the squared error of BatchNorm in eval mode (running averages:
what search and acting would use) and in train mode (statistics of the evaluated batch), and the median time
of one update. Same data, minibatches, initial parameters' seeds and optimiser for both.

  python scripts/norm_check.py [--game Pong] [--seeds 0 1 2] [--updates 300] [--channels 32]
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
from dreamer.bench import commit  # noqa: E402
from dreamer.networks import MuZeroResNet  # noqa: E402


def collect(game: str, envs: int, steps: int, discount: float, seed: int):
  """Random play (train mode: clipped rewards, life loss ends episodes): stacked obs uint8[N, 4, 96, 96, 3]
  and returns-to-go f32[N], env-major, dropping each env's last `tail` steps (their return is unfinished)."""
  world = worlds.make(f"atari:{game}", num_envs=envs, seed=seed)
  rng = np.random.default_rng(seed)
  obs = frames.start(world.reset(seed), 4)
  seen, rewards, ends = [], [], []
  for _ in range(steps):
    step = world.step(rng.integers(0, world.spec.num_actions, envs))
    seen.append(obs)
    rewards.append(step.reward)
    ends.append(step.terminated | step.truncated)
    obs = frames.push(obs, step.obs, ends[-1], 4)
  world.close()
  ret = np.zeros((steps, envs), np.float32)
  running = np.zeros(envs, np.float32)
  for t in reversed(range(steps)):
    running = rewards[t] + discount * running * ~ends[t]
    ret[t] = running
  tail = 150  # discount^150 < 0.17: the unfinished part of a return matters little after this
  keep = slice(0, steps - tail)
  return np.stack(seen)[keep].swapaxes(0, 1), ret[keep].swapaxes(0, 1)  # [envs, T', ...]


def run(norm: str, seed: int, data, args) -> dict:
  (train_obs, train_ret), (test_obs, test_ret) = data
  make = functools.partial(MuZeroResNet, num_actions=6, channels=args.channels, blocks=1, head_channels=16,
                           head_hidden=32, lstm_dim=64, proj_dim=64, value_atoms=601, reward_atoms=601, norm=norm)
  net, net_eval = make(train=True), make(train=False)
  variables = net.init(jax.random.PRNGKey(seed), train_obs[:2], jnp.zeros(2, jnp.int32))
  params, stats = variables["params"], variables.get("batch_stats", {})
  opt = optax.adam(args.lr)
  opt_state = opt.init(params)

  def value_logits(module, params, stats, obs, mutable):
    out = module.apply({"params": params, "batch_stats": stats}, obs, method=lambda m, o: m.predict(m.represent(o))[1],
                       mutable=["batch_stats"] if mutable else False)
    return out if mutable else (out, {"batch_stats": stats})

  @jax.jit
  def update(params, stats, opt_state, obs, ret):
    def loss(p):
      logits, new = value_logits(net, p, stats, obs, norm == "batch")
      return jnp.mean(-jnp.sum(support.scalar_to_probs(ret, 300) * jax.nn.log_softmax(logits), -1)), new
    (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new["batch_stats"], opt_state, value

  @functools.partial(jax.jit, static_argnums=0)
  def evaluate(module, params, stats, obs, ret):
    logits, _ = value_logits(module, params, stats, obs, norm == "batch" and module.train)
    ce = -jnp.sum(support.scalar_to_probs(ret, 300) * jax.nn.log_softmax(logits), -1)
    return jnp.mean(ce), jnp.mean((support.logits_to_scalar(logits) - ret) ** 2)

  def test(module, obs=test_obs, ret=test_ret):
    parts = [evaluate(module, params, stats, obs[j:j + args.batch], ret[j:j + args.batch])
             for j in range(0, len(obs) - args.batch + 1, args.batch)]
    return [float(np.mean([p[k] for p in parts])) for k in (0, 1)]

  rng = np.random.default_rng(seed)
  seconds, curve = [], []
  every = max(1, args.updates // args.evals)
  for n in range(1, args.updates + 1):
    i = rng.integers(0, len(train_obs), args.batch)
    t0 = time.perf_counter()
    params, stats, opt_state, value = update(params, stats, opt_state, train_obs[i], train_ret[i])
    jax.block_until_ready(value)
    seconds.append(time.perf_counter() - t0)
    if n % every == 0 or n == args.updates:
      curve.append([n, test(net_eval)[1]])
      print(f"{norm} seed {seed} update {n}: test value mse {curve[-1][1]:.4f}", file=sys.stderr, flush=True)

  ce, mse = test(net_eval)
  out = {"norm": norm, "seed": seed, "test_value_ce": ce, "test_value_mse": mse,
         "train_value_mse": test(net_eval, train_obs[:len(test_obs)], train_ret[:len(test_obs)])[1],
         "best_test_value_mse": min(m for _, m in curve), "test_value_mse_curve": curve,
         "update_ms_median": 1000 * statistics.median(seconds[1:])}
  if norm == "batch":
    out["test_value_mse_batch_statistics"] = test(net)[1]
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--game", default="Pong")
  parser.add_argument("--envs", type=int, default=8)
  parser.add_argument("--steps", type=int, default=700, help="agent steps collected per env")
  parser.add_argument("--updates", type=int, default=300)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--channels", type=int, default=32)
  parser.add_argument("--lr", type=float, default=3e-4)
  parser.add_argument("--discount", type=float, default=0.997 ** 4,
                      help="of the return-to-go target; a short horizon (0.9) makes it a function of the frames")
  parser.add_argument("--evals", type=int, default=10, help="held-out evaluations along training")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  args = parser.parse_args()
  obs, ret = collect(args.game, args.envs, args.steps, args.discount, seed=1234)
  split = args.envs * 3 // 4  # whole envs held out: test frames come from games never trained on
  flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
  data = ((flat(obs[:split]), flat(ret[:split])), (flat(obs[split:]), flat(ret[split:])))
  runs = [run(norm, seed, data, args) for seed in args.seeds for norm in ("layer", "batch")]
  summary = {}
  for norm in ("layer", "batch"):
    mine = [r for r in runs if r["norm"] == norm]
    summary[norm] = {k: statistics.median(r[k] for r in mine) for k in mine[0]
                     if k not in ("norm", "seed", "test_value_mse_curve")}
  print(json.dumps({"game": args.game, "commit": commit(), "backend": jax.default_backend(), "args": vars(args),
                    "train_frames": len(data[0][0]), "test_frames": len(data[1][0]),
                    "test_return_variance": float(np.var(data[1][1])),
                    "test_mse_of_train_mean": float(np.mean((data[1][1] - np.mean(data[0][1])) ** 2)), "median_over_seeds": summary,
                    "runs": runs}, indent=1))


if __name__ == "__main__":
  main()
