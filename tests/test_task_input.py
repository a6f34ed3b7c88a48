"""Task input (`task_input`, `worlds/task.py`): a world's family member as a one-hot at the end of its
observations, and the network's latent offset per member, zero on the world it trains on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import worlds
from dreamer import config as config_lib
from dreamer import replay
from dreamer.agent import Agent
from dreamer.networks import LSTMState, MuZeroMLP, init_params, make_network
from worlds import WorldStateError

SLOTS = 6  # the cartpole family has six members


def test_members_are_numbered_from_each_familys_base():
  assert [worlds.member(w) for w in ("gym:CartPole-v1", "cartpole:base", "toy:chain", "atari:Pong")] == [0] * 4
  assert [worlds.member(f"cartpole:{n}") for n in worlds.CARTPOLE_VARIANTS] == [0, 1, 2, 3, 4, 5]
  assert worlds.member("minatar:SpaceInvaders") == 0
  assert worlds.member("minatar:SpaceInvaders-fast") == 1
  assert worlds.member("minatar:Asterix-fast") == 1  # numbered within its own game's variants
  # Checkpoints keep this numbering: the lists only grow at their ends.
  first = ["base", "long-pole", "heavy-pole", "weak-push", "high-gravity", "reversed"]
  assert list(worlds.CARTPOLE_VARIANTS)[:6] == first
  assert list(worlds.MINATAR_VARIANTS)[:2] == ["SpaceInvaders-fast", "Asterix-fast"]


def _play(world, steps, seed=3):
  rng = np.random.default_rng(seed)
  obs = [world.reset(seed)]
  out = []
  for _ in range(steps):
    s = world.step(rng.integers(0, world.spec.num_actions, world.num_envs))
    obs.append(s.obs)
    out.append(s)
  return np.stack(obs), out


@pytest.mark.parametrize(("world_id", "slots"), [("cartpole:heavy-pole", SLOTS), ("minatar:SpaceInvaders-fast", 3)])
def test_task_features_append_the_members_one_hot_and_change_nothing_else(world_id, slots):
  if world_id.startswith("minatar:"):
    pytest.importorskip("minatar")
  plain = worlds.make(world_id, num_envs=3, seed=0)
  tasked = worlds.make(world_id, num_envs=3, seed=0, task_slots=slots)
  inner = plain.spec.obs_shape
  assert tasked.spec.obs_shape == (*inner[:-1], inner[-1] + slots)
  assert tasked.spec.num_actions == plain.spec.num_actions and tasked.spec.obs_dtype == plain.spec.obs_dtype
  obs_p, steps_p = _play(plain, 120)
  obs_t, steps_t = _play(tasked, 120)
  np.testing.assert_array_equal(obs_t[..., : inner[-1]], obs_p)
  want = np.zeros(slots, obs_t.dtype)
  want[worlds.member(world_id)] = 1
  np.testing.assert_array_equal(obs_t[..., inner[-1] :], np.broadcast_to(want, (*obs_p.shape[:-1], slots)))
  assert any(s.terminated.any() or s.truncated.any() for s in steps_p)  # resets were crossed
  for sp, st in zip(steps_p, steps_t):
    for name in ("reward", "terminated", "truncated", "episode_return", "episode_length"):
      np.testing.assert_array_equal(getattr(st, name), getattr(sp, name))
    np.testing.assert_array_equal(st.final_obs[..., : inner[-1]], sp.final_obs)
    np.testing.assert_array_equal(st.final_obs[..., inner[-1] :], obs_t[0, ..., inner[-1] :])
  plain.close()
  tasked.close()


def test_task_features_state_round_trips_and_is_refused_by_another_member():
  a = worlds.make("cartpole:heavy-pole", num_envs=2, seed=0, task_slots=SLOTS)
  _play(a, 30)
  saved = a.get_state()
  actions = np.array([[0, 1], [1, 1], [1, 0], [0, 0]])
  first = [a.step(x).obs for x in actions]
  a.set_state(saved)
  np.testing.assert_array_equal(np.stack([a.step(x).obs for x in actions]), np.stack(first))
  for other in ("cartpole:long-pole", "gym:CartPole-v1"):  # the same physics' state from another member
    with worlds.make(other, num_envs=2, seed=0, task_slots=SLOTS) as w, pytest.raises(WorldStateError):
      w.set_state(saved)
  with worlds.make("cartpole:heavy-pole", num_envs=2, seed=0, task_slots=SLOTS + 1) as w:
    with pytest.raises(WorldStateError, match="member 2 of 6 slots, this world is member 2 of 7"):
      w.set_state(saved)


def test_a_member_beyond_the_slots_is_one_clear_error():
  with pytest.raises(ValueError, match="task_input=3 holds task members 0 to 2, but 'cartpole:reversed' is member 5"):
    worlds.make("cartpole:reversed", num_envs=1, task_slots=3)


def _net(**kw):
  base = dict(num_actions=2, latent_dim=8, hidden_dim=16, lstm_dim=8, proj_dim=8, value_atoms=5, reward_atoms=3)
  return MuZeroMLP(**{**base, "state_norm": False, **kw})


@pytest.mark.parametrize(("conv", "frame"), [(0, (5,)), (0, (2, 5)), (4, (4, 4, 3)), (4, (2, 4, 4, 3))])
def test_the_latent_is_the_plain_networks_plus_the_members_offset_and_none_at_home(conv, frame):
  # A network with task slots equals one without them on the observation's own features, plus the learned
  # offset row of the observation's member; the home member's row never counts. Vectors and images, alone
  # and in frame stacks of 2, where every frame carries the features.
  home, slots = 1, 3
  tasked, plain = _net(task_slots=slots, task_home=home, conv_channels=conv), _net(conv_channels=conv)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, *frame)).astype(np.float32)
  params = init_params(tasked, jax.random.PRNGKey(1), (*frame[:-1], frame[-1] + slots))
  assert not np.any(params["params"]["task_offset"]["kernel"])  # zero at the start
  offset = rng.normal(size=(slots, 8)).astype(np.float32)
  params["params"]["task_offset"]["kernel"] = jnp.asarray(offset)
  plain_params = {"params": {k: v for k, v in params["params"].items() if k != "task_offset"}}
  want = plain.apply(plain_params, x, method=plain.represent)
  for m in range(slots):
    one_hot = np.broadcast_to(np.eye(slots, dtype=np.float32)[m], (*x.shape[:-1], slots))
    got = tasked.apply(params, np.concatenate([x, one_hot], -1), method=tasked.represent)
    np.testing.assert_allclose(got, want + (0 if m == home else offset[m]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("state_norm", [False, True])
def test_the_dynamics_read_the_member_as_a_first_layer_shift_and_carry_it_on(state_norm):
  # Reference: the plain network (no task slots) whose dynamics' first-layer bias holds the member's row of
  # `dyn_task` plus its (member, action) row. At home the dynamics are the plain network's exactly, and every
  # other method reads only the latent's state part.
  home, slots, actions = 1, 3, 2
  tasked = _net(task_slots=slots, task_home=home, task_dynamics=True, terminal_head=True, state_norm=state_norm)
  plain = _net(terminal_head=True, state_norm=state_norm)
  rng = np.random.default_rng(0)
  params = init_params(tasked, jax.random.PRNGKey(1), (5 + slots,))
  assert not np.any(params["params"]["dyn_task"]["kernel"])  # zero at the start
  shift = rng.normal(size=(slots + slots * actions, 16)).astype(np.float32)
  params["params"]["dyn_task"]["kernel"] = jnp.asarray(shift)
  params["params"]["task_offset"]["kernel"] = jnp.asarray(rng.normal(size=(slots, 8)).astype(np.float32))
  plain_params = {"params": {k: v for k, v in params["params"].items() if k not in ("dyn_task", "task_offset")}}
  x = rng.normal(size=(4, 5)).astype(np.float32)
  lstm = LSTMState(*(jnp.asarray(rng.normal(size=(4, 8)), jnp.float32) for _ in range(2)))
  for m in range(slots):
    one_hot = np.broadcast_to(np.eye(slots, dtype=np.float32)[m], (4, slots))
    latent = tasked.apply(params, np.concatenate([x, one_hot], -1), method=tasked.represent)
    away = 0 if m == home else one_hot
    np.testing.assert_array_equal(latent[:, 8:], away * np.ones_like(one_hot))
    for a in range(actions):
      action = jnp.full((4,), a, jnp.int32)
      got = tasked.apply(params, latent, action, lstm, method="dynamics")
      ref_params = jax.tree.map(lambda v: v, plain_params)  # a copy of the dicts
      if m != home:
        bias = ref_params["params"]["dyn_net"]["Dense_0"]["bias"]
        ref_params["params"]["dyn_net"]["Dense_0"]["bias"] = bias + shift[m] + shift[slots + m * actions + a]
      want = plain.apply(ref_params, latent[:, :8], action, lstm, method="dynamics")
      np.testing.assert_allclose(got[0][:, :8], want[0], rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(got[0][:, 8:], latent[:, 8:])  # the member travels on
      np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-5)
      if m == home:  # exactly the plain network's: next state, LSTM state and value-prefix logits
        jax.tree.map(np.testing.assert_array_equal, (got[0][:, :8], *got[1:]), want)
    for method in ("predict", "terminal", "project"):
      args = (True,) if method == "project" else ()
      got = tasked.apply(params, latent, *args, method=method)
      want = plain.apply(plain_params, latent[:, :8], *args, method=method)
      jax.tree.map(np.testing.assert_array_equal, got, want)


def _config(**kw):
  small = dict(
    world="gym:CartPole-v1", num_envs=4, latent_dim=16, hidden_dim=32, lstm_dim=16, proj_dim=16, value_support=5,
    reward_support=3, num_simulations=4, max_considered_actions=2, batch_size=16, replay_capacity=400,
    unroll_steps=3, td_steps=3, value_prefix_horizon=2, updates_per_chunk=4, task_input=SLOTS,
  )  # fmt: skip
  return config_lib.Config(**{**small, **kw})


def _trained(config, data_world, seed=0):
  """Four updates of `config`'s learner on a replay of random play in `data_world` (with task features)."""
  world = worlds.make(data_world, num_envs=config.num_envs, seed=seed, task_slots=config.task_input)
  agent = Agent(config, world.spec)
  state, rb = agent.init(jax.random.PRNGKey(seed))
  rng = np.random.default_rng(seed)
  obs = world.reset(seed)
  for t in range(40):
    action = rng.integers(0, 2, config.num_envs)
    step = world.step(action)
    zeros = np.zeros(config.num_envs, np.float32)
    policy = np.full((config.num_envs, 2), 0.5, np.float32)
    idx = np.full(config.num_envs, t * config.num_envs, np.int32)
    row = replay.Rows(obs, action, step.reward, policy, zeros, zeros > 0, zeros > 0, idx)
    rb = agent.add(rb, row, step.final_obs, step.terminated | step.truncated, step.terminated)
    obs = step.obs
  world.close()
  before = jax.tree.map(np.asarray, state.params)
  new, _, _ = agent.train_chunk(state, rb, jnp.int32(160))
  return before, jax.tree.map(np.asarray, new.params)


@pytest.mark.slow
def test_learning_on_the_home_world_leaves_every_members_offset_at_zero_and_another_member_moves_only_its_own():
  # What makes a checkpoint act on every member as on its own: its training data never move an offset row,
  # Adam's and weight decay's steps included; data of member 2 (heavy-pole) move row 2 alone.
  # With task_dynamics the same holds for the dynamics' rows: member 2's row and its (member, action) rows.
  before, after = _trained(_config(task_dynamics=True), "gym:CartPole-v1")
  assert not np.any(after["params"]["task_offset"]["kernel"])
  assert not np.any(after["params"]["dyn_task"]["kernel"])
  assert np.any(after["params"]["repr_net"]["Dense_0"]["kernel"] != before["params"]["repr_net"]["Dense_0"]["kernel"])
  _, after = _trained(_config(weight_decay=0.1, task_dynamics=True), "cartpole:heavy-pole")
  rows = np.abs(after["params"]["task_offset"]["kernel"]).sum(axis=1)
  assert rows[2] > 0 and not np.any(np.delete(rows, 2))
  rows = np.abs(after["params"]["dyn_task"]["kernel"]).sum(axis=1)  # [member] + [member x action] rows
  moved = [2, SLOTS + 2 * 2, SLOTS + 2 * 2 + 1]
  assert np.all(rows[moved] > 0) and not np.any(np.delete(rows, moved))


def test_make_network_puts_the_home_slot_at_the_configs_world():
  net = make_network(_config(world="cartpole:weak-push"), 2, np.float32)
  assert (net.task_slots, net.task_home) == (SLOTS, 3)
  assert make_network(_config(task_input=0), 2, np.float32).task_slots == 0


def _records(run_dir):
  from dreamer.logger import read_metrics

  skip = ("wall", "speed/", "time/", "sys/", "replay/bytes", "eval/seconds", "resumed_from", "checkpoint", "logdir")
  return [{k: v for k, v in r.items() if not k.startswith(skip)} for r in read_metrics(run_dir)]


@pytest.mark.slow
def test_task_input_on_the_home_world_learns_exactly_as_without(tmp_path):
  # The features are split off before the network reads the frame and the home slot's offset is zero, so a
  # run on its family's base learns bit for bit as one without task input: a checkpoint made for /dream on
  # other members costs nothing on its own world.
  from dreamer.train import train

  overrides = ["stop_return=inf", "total_env_steps=800"]
  plain = train(config_lib.load("debug", overrides), tmp_path / "plain", console=False)
  tasked = train(config_lib.load("debug", [*overrides, "task_input=2"]), tmp_path / "tasked", console=False)
  assert tasked["updates"] == plain["updates"] > 100
  assert _records(tmp_path / "tasked") == _records(tmp_path / "plain")


@pytest.mark.slow
def test_task_dynamics_on_the_home_world_learn_as_without_up_to_rounding(tmp_path):
  # With `task_dynamics` the network computes the same function at home (exactly: the dynamics test above), but
  # the latent carries the member, and slicing it off changes XLA's order of floating-point sums in the
  # gradients: the runs agree to float32 rounding at first, then drift apart as any two orders of sums would.
  from dreamer.train import train

  overrides = ["stop_return=inf", "total_env_steps=800", "task_input=2"]
  plain = train(config_lib.load("debug", overrides), tmp_path / "plain", console=False)
  dyn = train(config_lib.load("debug", [*overrides, "task_dynamics=true"]), tmp_path / "dyn", console=False)
  assert dyn["updates"] == plain["updates"]
  want, got = _records(tmp_path / "plain")[:6], _records(tmp_path / "dyn")[:6]
  assert [sorted(r) for r in got] == [sorted(r) for r in want]
  for r, w in zip(got, want):
    for k, v in w.items():
      if isinstance(v, float):
        assert r[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
      else:
        assert r[k] == v, k


def test_adaptation_and_the_model_reset_include_the_task_offset_and_the_policy_head_does_not():
  from dreamer import distil

  params = init_params(_net(task_slots=3), jax.random.PRNGKey(0), (8,))
  model = distil.part_mask(params, distil.MODEL_PARTS)["params"]
  policy = distil.part_mask(params, distil.POLICY_PARTS)["params"]
  assert all(jax.tree.leaves(model["task_offset"])) and not any(jax.tree.leaves(model["repr_net"]))
  assert not any(jax.tree.leaves(policy["task_offset"]))


@pytest.mark.slow
def test_adapting_only_the_task_rows_moves_the_experience_members_rows_and_nothing_else(tmp_path):
  # /dream's adapt_train 'task' on a recording of 'cartpole:reversed' (member 5), mixed with the checkpoint's
  # own replay of its home world: reversed's offset row and its dynamics rows move, every other parameter
  # (the model of the home world) stays exactly the checkpoint's.
  from dreamer import cli, distil, dream
  from dreamer import learner as learner_lib
  from dreamer.train import train

  small = [f"{k}={v}" for k, v in _config().__dict__.items() if k in ("latent_dim", "hidden_dim", "lstm_dim")]
  settings = [*small, "task_input=6", "task_dynamics=true", "total_env_steps=300", "num_envs=2"]
  train(config_lib.load("cartpole", settings), tmp_path / "run", console=False)
  play = ["play", "--checkpoint", str(tmp_path / "run"), "--world", "cartpole:reversed", "--steps", "120"]
  assert cli.main([*play, "--envs", "2", "--out", str(tmp_path / "rec")]) == 0
  dc = dream.dream_config(["adapt_train=task", "student_model=adapted", "batch_size=16"])
  job = dream.Job(str(tmp_path / "run"), str(tmp_path / "rec"), None, dc)
  optimizer, chunk = dream._learner_chunk(job, 5, "task")
  one_head = distil.drop_prior(job.base)  # adaptation runs the learner on one head, as dream.adapt does
  state = learner_lib.init_state(jax.tree.map(jnp.copy, one_head), optimizer, jax.random.PRNGKey(0))
  state, _, _ = chunk(state, job.mixed(), jnp.int32(job.learn_config.total_env_steps))
  before, after = one_head["params"], jax.tree.map(np.asarray, state.params)["params"]
  for name in before:
    if name not in ("task_offset", "dyn_task"):
      jax.tree.map(np.testing.assert_array_equal, after[name], jax.tree.map(np.asarray, before[name]))
  moved = lambda name: np.abs(after[name]["kernel"] - np.asarray(before[name]["kernel"])).sum(axis=1)  # noqa: E731
  rows = moved("task_offset")
  assert rows[5] > 0 and not np.any(np.delete(rows, 5))
  rows, reversed_rows = moved("dyn_task"), [5, SLOTS + 5 * 2, SLOTS + 5 * 2 + 1]
  assert np.all(rows[reversed_rows] > 0) and not np.any(np.delete(rows, reversed_rows))
  # A recording of the checkpoint's own member would move nothing: refused.
  assert cli.main(["play", "--checkpoint", str(tmp_path / "run"), "--steps", "40", "--out", str(tmp_path / "own")]) == 0
  with pytest.raises(dream.ConfigError, match="adapt_train 'task' adapts the rows of other task members, but"):
    dream.Job(str(tmp_path / "run"), str(tmp_path / "own"), None, dc)
