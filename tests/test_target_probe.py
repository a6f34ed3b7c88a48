"""scripts/target_probe.py: its statistics by hand, the reward-bias sharpening it looks for on a model built to
have it, and a probe of a debug run."""

import importlib.util
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer import actor, search
from dreamer.networks import LSTMState
from dreamer.support import scalar_to_probs

spec = importlib.util.spec_from_file_location(
  "target_probe", Path(__file__).resolve().parent.parent / "scripts" / "target_probe.py"
)
target_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(target_probe)

SUPPORT = 5


def test_target_stats_by_hand():
  prior = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
  targets = np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [[0.5, 0.2, 0.3], [0.3, 0.1, 0.6]]])
  out = target_probe.target_stats(prior, targets)
  mean = np.array([[0.6, 0.2, 0.2], [0.2, 0.1, 0.7]])
  h = lambda p: -(p * np.log(p)).sum(-1)  # noqa: E731
  assert out["prior_entropy"] == pytest.approx(h(prior).mean())
  assert out["target_entropy"] == pytest.approx(h(mean).mean())
  assert out["prior_top"] == pytest.approx((0.5 + 0.8) / 2) and out["target_top"] == pytest.approx((0.6 + 0.7) / 2)
  assert out["sharper"] == 0.5  # state 0's top gains (0.5 -> 0.6), state 1's loses (0.8 -> 0.7)
  kl = (mean * np.log(mean / prior)).sum(-1).mean()
  assert out["kl_target_prior"] == pytest.approx(kl)


class BiasModel(NamedTuple):
  """Every model step predicts reward `bias` and value 0, and keeps the latent; the latent (6 numbers) is the
  prior's logits. Q then ranks no action above another: a visited action's Q is the bias."""

  bias: float
  lstm_dim: int = 2
  has_terminal: bool = False

  def represent(self, params, obs):
    return obs

  def dynamics(self, params, latent, action, lstm):
    prefix = lstm.c[:, 0] + self.bias
    return latent, LSTMState(lstm.c.at[:, 0].set(prefix), lstm.h), jnp.log(scalar_to_probs(prefix, SUPPORT) + 1e-30)

  def predict(self, params, latent):
    return latent, jnp.log(scalar_to_probs(jnp.zeros(latent.shape[:1]), SUPPORT) + 1e-30)

  def search_predict(self, params, latent):
    return self.predict(params, latent)


def _targets(bias, obs):
  settings = dict(kind="gumbel", num_simulations=4, discount=0.99, horizon=5, max_considered_actions=4)
  settings |= dict(q_normalization="tree", q_range_floor=0.01)
  model = BiasModel(bias)
  root = search.make_root(model, None, obs)
  run = jax.jit(lambda k: search.run_search(model, None, k, root, temperature=1.0, noise=True, **settings).policy)
  return np.stack([np.asarray(run(k)) for k in jax.random.split(jax.random.PRNGKey(0), 32)])


def test_a_reward_bias_sharpens_searchs_target_and_a_negative_one_flattens_it():
  # Four simulations over six actions: the visited actions' Q is one step's bias, the others' is completed
  # with the root value mixed in (mctx's v_mix), so a positive bias raises exactly the actions search
  # explored, which Gumbel top-k draws in proportion to the prior: on average the prior's favourite gains.
  obs = jnp.asarray(np.random.default_rng(0).normal(size=(64, 6)), jnp.float32)
  prior = np.asarray(jax.nn.softmax(obs))
  none = _targets(0.0, obs)  # no bias: every draw's target is the prior
  np.testing.assert_allclose(none, np.broadcast_to(prior, none.shape), atol=1e-6)
  up, down = (target_probe.target_stats(prior, _targets(b, obs)) for b in (0.05, -0.05))
  assert up["sharper"] > 0.9 and up["target_top"] > up["prior_top"] + 0.02
  assert up["target_entropy"] < up["prior_entropy"] - 0.05
  assert down["sharper"] < 0.1 and down["target_top"] < down["prior_top"] - 0.02
  assert down["target_entropy"] > down["prior_entropy"]


def test_probe_of_a_debug_run(debug_run):
  config, run_dir, _ = debug_run
  same, fewer = f"num_simulations={config.num_simulations}", "num_simulations=2"
  args = [str(run_dir), "--states", "12", "--every", "3", "--noise", "2", "--games", "4"]
  out = target_probe.main([*args, "--variant", same, "--variant", fewer])
  assert out["states"] == 12 and out["checkpoint"].startswith(str(run_dir))
  # the newest checkpoint, searched at the acting temperature of its env step
  newest = max(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
  assert out["env_step"] == newest and out["temperature"] == actor.temperature(config, newest)
  variants = out["variants"]
  assert variants[same] == variants["as trained"]  # a variant that changes nothing searches exactly as trained
  assert variants[fewer] != variants["as trained"]  # the variant's setting is what searched
  fields = {"prior_entropy", "target_entropy", "prior_top", "target_top", "sharper", "kl_target_prior"}
  assert set(variants["as trained"]) == fields and all(np.isfinite(v) for v in variants["as trained"].values())
  with pytest.raises(Exception, match="only the search's settings"):
    target_probe.main([str(run_dir), "--variant", "learning_rate=1.0"])
  with pytest.raises(SystemExit):  # search=none has no target to compare
    target_probe.main([str(run_dir), "--variant", "search=none"])
