"""scripts/target_probe.py: its statistics by hand, the reward-bias sharpening it looks for on a model built to
have it, and a probe of a debug run."""

import importlib.util
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer import search
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
  prior's logits. Q then carries no preference between actions except the bias times the depth explored."""

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
  none = target_probe.target_stats(prior, _targets(0.0, obs))
  assert none["kl_target_prior"] < 1e-9 and none["sharper"] == 0.0  # no bias: the target is the prior
  up, down = (target_probe.target_stats(prior, _targets(b, obs)) for b in (0.05, -0.05))
  assert up["sharper"] > 0.9 and up["target_top"] > up["prior_top"] + 0.02
  assert up["target_entropy"] < up["prior_entropy"] - 0.05
  assert down["sharper"] < 0.1 and down["target_top"] < down["prior_top"] - 0.02
  assert down["target_entropy"] > down["prior_entropy"]


def test_probe_of_a_debug_run(debug_run):
  config, run_dir, _ = debug_run
  same = f"num_simulations={config.num_simulations}"
  out = target_probe.main([str(run_dir), "--states", "12", "--noise", "2", "--games", "4", "--variant", same])
  assert out["states"] == 12 and out["checkpoint"].startswith(str(run_dir))
  variants = out["variants"]
  assert variants[same] == variants["as trained"]  # a variant that changes nothing searches exactly as trained
  fields = {"prior_entropy", "target_entropy", "prior_top", "target_top", "sharper", "kl_target_prior"}
  assert set(variants["as trained"]) == fields and all(np.isfinite(v) for v in variants["as trained"].values())
  fewer = target_probe.main(
    [str(run_dir), "--states", "12", "--noise", "2", "--games", "4", "--variant", "num_simulations=2"]
  )
  assert fewer["variants"]["num_simulations=2"] != variants["as trained"]  # the variant's setting is what searched
  with pytest.raises(Exception, match="only the search's settings"):
    target_probe.main([str(run_dir), "--variant", "learning_rate=1.0"])
