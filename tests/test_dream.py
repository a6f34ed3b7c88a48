"""`dreamer play` and `dreamer dream`: the recording format, the teacher without its search bonus, distillation
with a perfect model, the gate's negative control, and resuming a job."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import worlds
from dreamer import checkpoint as ckpt_lib
from dreamer import cli, distil, dream
from dreamer import experience as exp_lib
from dreamer import replay as replay_lib
from dreamer.agent import Agent, load_checkpoint


def test_recording_holds_what_the_world_did_and_replays_as_training_inserts():
  world = worlds.make("toy:chain", num_envs=2, seed=0)
  script = np.array([[1, 0], [1, 0], [1, 1], [1, 0], [0, 0], [1, 1], [1, 1], [1, 1]])  # [T, B]
  it = iter(script)

  def act(obs):
    a = next(it)
    return a, np.eye(2, dtype=np.float32)[a], np.full(2, 0.5, np.float32)

  arrays = exp_lib.record(world, act, steps=len(script), seed=0, stack=1)
  # By hand: env 0 goes right from cell 1 (cells 2, 3, 4, 5: +1 on its 4th step), restarts and wanders; env 1
  # steps to cell 0 and off the left end on its 2nd step (+0.1), restarts and wanders.
  np.testing.assert_array_equal(arrays["action"], script)
  reference = worlds.make("toy:chain", num_envs=2, seed=0)
  obs = reference.reset(0)
  for t, a in enumerate(script):
    np.testing.assert_array_equal(arrays["obs"][t], obs)
    step = reference.step(a)
    np.testing.assert_array_equal(arrays["reward"][t], step.reward)
    np.testing.assert_array_equal(arrays["terminated"][t], step.terminated)
    for i in np.flatnonzero(step.terminated | step.truncated):
      k = int(np.flatnonzero((arrays["end_t"] == t) & (arrays["end_env"] == i))[0])
      np.testing.assert_array_equal(arrays["end_obs"][k], step.final_obs[i])
    obs = step.obs
  assert arrays["game_returns"].tolist() == pytest.approx([0.1, 1.0])
  assert arrays["end_t"].tolist() == [1, 3] and arrays["end_env"].tolist() == [1, 0]
  # Replay rows equal what the training loop inserts for the same steps.
  config = dream.config_lib.load("debug", ["num_envs=2"])
  agent = Agent(config, world.spec)
  exp = exp_lib.Experience({"env_steps": script.size}, {k: v for k, v in arrays.items() if k != "game_returns"})
  empty = lambda: replay_lib.init(2, 2 * 24, (6,), np.float32, 2)  # noqa: E731
  got = exp_lib.to_replay(exp, agent.add, empty(), start=0, stop=len(script))
  want = empty()
  world = worlds.make("toy:chain", num_envs=2, seed=0)
  obs = world.reset(0)
  for t, a in enumerate(script):
    step = world.step(a)
    ended = step.terminated | step.truncated
    row = replay_lib.Rows(
      obs,
      a,
      step.reward,
      np.eye(2, dtype=np.float32)[a],
      np.full(2, 0.5, np.float32),
      np.zeros(2, bool),
      np.zeros(2, bool),
      np.full(2, 2 * t, np.int32),
    )
    want = agent.add(want, row, step.final_obs, ended, step.terminated)
    obs = step.obs
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(x, y)
  assert int(np.asarray(got.rows.last).sum()) == 2  # one final-observation row per ended episode


def test_split_keeps_a_held_out_tail():
  assert exp_lib.split_steps(100, 0.2) == 80
  assert exp_lib.split_steps(100, 0.0) == 100
  assert exp_lib.split_steps(2, 0.9) == 1 and exp_lib.split_steps(2, 0.01) == 1


@pytest.fixture(scope="module")
def reset_run(debug_run, tmp_path_factory):
  """The debug run with its policy head's last layer zeroed: a uniform prior whose argmax (left) earns 0.1,
  while search in its intact model still earns the optimal 1.0; and a recording of it acting with search."""
  _, run_dir, _ = debug_run
  root = tmp_path_factory.mktemp("dream")
  saved = load_checkpoint(run_dir)
  params = jax.tree.map(np.array, saved.params)
  head = params["params"]["policy_head"]
  last = sorted(k for k in head if k.startswith("Dense"))[-1]
  head[last]["kernel"][:] = 0.0
  head[last]["bias"][:] = 0.0
  out = root / "reset"
  shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns("checkpoints"))
  ckpts = ckpt_lib.Checkpoints(out, keep=1)
  ckpts.save(saved.step, params, saved.state, {k: saved.meta[k] for k in ("config", "spec", "progress", "world_state")})
  ckpts.wait()
  ckpts.close()
  assert cli.main(["play", "--checkpoint", str(out), "--steps", "200", "--envs", "4", "--out", str(root / "rec")]) == 0
  return root, out, root / "rec"


SMALL = ["adapt_updates=0", "dream_ratio=20", "updates_per_chunk=5", "eval_episodes=4", "roots=32"]


def test_perfect_model_distils_the_search_return_into_the_policy(reset_run, capsys):
  root, run, rec = reset_run
  capsys.readouterr()
  # adapt_updates=0: the teacher is the checkpoint itself, whose model of the chain is exact (next test).
  # Budget 80 gives 10 distil updates; 5 (budget 20) left the KL at 0.36x its start on one CPU, 0.22x on another.
  settings = dream.dream_config([*SMALL, "dream_ratio=80"])
  report = dream.run(str(run), str(rec), root / "d", settings=settings, console=False)
  ret = report["returns"]["experience"]
  assert ret["policy"]["before"][0] == pytest.approx(0.1) and ret["search"]["before"][0] == pytest.approx(1.0)
  assert ret["policy"]["after"][0] == pytest.approx(ret["search"]["before"][0])  # the policy alone reaches search
  assert report["accepted"]
  # The policy head alone (train 'policy', the default) fits the labels: KL 0.499 -> 0.071 measured (AMD EPYC).
  assert report["distil"]["after"]["teacher_kl"] < 0.25 * report["distil"]["before"]["teacher_kl"]
  # A perfect model: held-out rewards are predicted within 0.15 at every depth the chain reaches.
  fit = report["fit"]["experience"]["teacher"]
  assert max(x for x in fit["prefix_abs"] if x is not None) < 0.15
  # The written checkpoint holds the new weights: dreamer eval reads them.
  assert cli.main(["eval", "--checkpoint", str(root / "d"), "--episodes", "4"]) == 0
  assert json.loads(capsys.readouterr().out)["policy_return"] == pytest.approx(1.0)
  for name in ("report.md", "report.json", "returns.png", "fit.png", "distil.png"):
    assert (root / "d" / name).stat().st_size > 0
  # Re-issuing the command resumes: finished phases are skipped, a removed one is redone the same way.
  state = json.loads((root / "d" / "dream.json").read_text())
  del state["done"]["gate"], state["done"]["write"]
  (root / "d" / "dream.json").write_text(json.dumps(state))
  again = dream.run(str(run), str(rec), root / "d", settings=settings, console=False)
  assert again["returns"] == report["returns"] and again["accepted"]
  with pytest.raises(dream.ConfigError, match="holds a dream job with other inputs or settings .roots 32 there, 16"):
    other = dream.dream_config([*SMALL, "dream_ratio=80", "roots=16"])  # only the roots differ
    dream.run(str(run), str(rec), root / "d", settings=other, console=False)


def test_corrupted_dynamics_is_rejected_by_the_gate(reset_run):
  root, run, rec = reset_run
  # student_model 'adapted': the student carries the spoilt model (with 'checkpoint' it would not).
  settings = dream.dream_config(SMALL + ["corrupt_dynamics=30", "student_model=adapted", "teacher_check=false"])
  report = dream.run(str(run), str(rec), root / "bad", settings=settings, console=False)
  assert not report["accepted"]
  # Distilling search in a spoilt model must fail a check of the experience world: either its search return
  # falls (the student carries the spoilt model) or its policy alone does not rise (the labels were noise).
  # Which one catches it depends on the numerics of the installed jax and mctx: on the chain any consistent
  # preference for 'right' is optimal, so the policy may happen to rise, and the prior may carry search.
  ret = report["returns"]["experience"]
  search_fell = ret["search"]["after"][0] < 0.9 * ret["search"]["before"][0]
  policy_rose = ret["policy"]["after"][0] > ret["policy"]["before"][0]
  assert search_fell or not policy_rose, ret
  failed = [r for r in report["reasons"] if "experience world" in r and ("beyond" in r or "did not rise" in r)]
  assert failed, report["reasons"]
  # The original weights were written.
  written = load_checkpoint(root / "bad")
  original = load_checkpoint(run)
  for a, b in zip(jax.tree.leaves(written.params), jax.tree.leaves(original.params)):
    np.testing.assert_array_equal(a, b)


def test_a_student_on_the_checkpoints_model_carries_its_distilled_heads_and_nothing_else(reset_run):
  """student_model 'checkpoint': the written student is the checkpoint's representation and world model with
  the distilled prediction function, exactly; with a corrupted teacher model (what 'adapted' would carry)."""
  root, run, rec = reset_run
  settings = SMALL + ["corrupt_dynamics=30", "student_model=checkpoint", "teacher_check=false"]
  dream.run(str(run), str(rec), root / "own-model", settings=dream.dream_config(settings), console=False)
  job = dream.Job(str(run), str(rec), None, dream.dream_config(settings))
  teacher, _ = dream._load_tree(root / "own-model" / "phases" / "teacher.npz", job.base)
  student, _ = dream._load_tree(root / "own-model" / "phases" / "student.npz", job.base)
  heads = distil.part_mask(job.base, distil.PREDICTION_PARTS)
  dynamics = distil.part_mask(job.base, distil.DYNAMICS_PARTS)  # what corrupt_dynamics spoils
  moved = lambda a, b: float(jnp.max(jnp.abs(a - b)))  # noqa: E731
  for is_head, is_dyn, s, t, b in zip(*map(jax.tree.leaves, (heads, dynamics, student, teacher, job.base))):
    if is_head:
      continue
    np.testing.assert_array_equal(s, b)  # representation and world model: the checkpoint's
    assert not is_dyn or moved(t, b) > 1.0  # ... not the teacher's corrupted one
  assert max(moved(s, b) for h, s, b in zip(*map(jax.tree.leaves, (heads, student, job.base))) if h) > 1e-4


def test_the_teacher_check_keeps_the_adapted_model_only_where_it_searches_no_worse():
  base = {"experience": {"search": [400.0, 404.0], "policy": [1.0]}, "anchor": {"search": [460.0], "policy": [2.0]}}
  worse = {"experience": {"search": [284.0, 284.0], "policy": [9.0]}, "anchor": {"search": [470.0], "policy": [0.0]}}
  got = dream.teacher_check(base, worse, keep=0.9)
  assert got == {"search": {"experience": [402.0, 284.0], "anchor": [460.0, 470.0]}, "teacher": "checkpoint",
                 "worse_on": ["experience"]}  # fmt: skip
  within = {"experience": {"search": [362.0, 362.0]}, "anchor": {"search": [415.0]}}  # 90.05% and 90.2%
  assert dream.teacher_check(base, within, keep=0.9)["teacher"] == "adapted"
  assert dream.teacher_check(base, within, keep=0.95)["worse_on"] == ["experience", "anchor"]
  negative = {"experience": {"search": [-20.0]}}  # Pong: -20 -> -21.9 keeps 90%, -22.1 does not
  assert dream.teacher_check(negative, {"experience": {"search": [-21.9]}}, keep=0.9)["teacher"] == "adapted"
  assert dream.teacher_check(negative, {"experience": {"search": [-22.1]}}, keep=0.9)["teacher"] == "checkpoint"


def test_a_teacher_that_fails_its_check_is_replaced_by_the_checkpoint(reset_run, monkeypatch):
  """The corrupted teacher is judged worse (forced here: on the chain the prior may carry search): the job's
  teacher is then the checkpoint, exactly, and the report says so."""
  root, run, rec = reset_run
  calls = []

  def worse(baseline, teacher, *, keep):
    calls.append(set(baseline))
    return {"search": {w: [1.0, 0.0] for w in baseline}, "teacher": "checkpoint", "worse_on": sorted(baseline)}

  monkeypatch.setattr(dream, "teacher_check", worse)
  settings = dream.dream_config(SMALL + ["corrupt_dynamics=30"])
  report = dream.run(str(run), str(rec), root / "checked", settings=settings, console=False)
  assert calls == [{"experience"}]  # judged on the worlds the baseline evaluated
  job = dream.Job(str(run), str(rec), None, settings)
  teacher, _ = dream._load_tree(root / "checked" / "phases" / "teacher.npz", job.base)
  for t, b in zip(jax.tree.leaves(teacher), jax.tree.leaves(job.base)):
    np.testing.assert_array_equal(t, b)
  assert report["teacher_check"]["teacher"] == "checkpoint" and report["teacher_from_update"] == 0
  assert "the checkpoint's own model" in (root / "checked" / "report.md").read_text()


@pytest.mark.slow
def test_without_the_search_bonus_the_teacher_is_the_prior_and_the_weights_barely_move(debug_run, reset_run):
  _, run_dir, _ = debug_run
  _, reset, rec = reset_run
  # One head: the checkpoint's params are read with the job's network.
  job = dream.Job(str(reset), str(rec), None, dream.dream_config([*SMALL, "search_prior=distilled"]))
  trained = jax.device_put(load_checkpoint(run_dir).params)
  obs = distil.sample_roots(job.rb_exp, jax.random.PRNGKey(0), 32, 1)

  def gap(params, bonus):
    """max |teacher target - student prior| on imagined states, teacher = student = params."""
    reh = distil.rehearse(
      params,
      params,
      obs,
      jax.random.PRNGKey(1),
      model=job.model,
      config=job.config,
      horizon=3,
      num_simulations=8,
      search_bonus=bonus,
      guard=0.5,
    )
    logits, _ = distil.student_outputs(
      params, obs, reh.action, model=job.model, horizon=job.config.value_prefix_horizon
    )
    return float(jnp.max(jnp.abs(reh.policy - jax.nn.softmax(logits))))

  # The teacher's target is exactly the prior without the bonus, for a trained (peaked) prior and for the
  # uniform one; with it, search changes the uniform prior's target.
  assert gap(trained, 0.0) < 1e-6 and gap(job.base, 0.0) < 1e-6
  assert gap(job.base, 1.0) > 0.05
  moved = {}
  for bonus in (0.0, 1.0):
    dc = dream.dream_config(SMALL + [f"search_bonus={bonus}", "value_weight=0", "horizon=3"])
    optimizer = distil.make_optimizer(learning_rate=dc.distil_learning_rate, train="all", params=job.base)
    chunk = distil.make_distil_chunk(job.model, job.config, optimizer, dc, anchor=False)
    state = distil.DistilState(
      jax.tree.map(jnp.copy, job.base), optimizer.init(job.base), jax.random.PRNGKey(2), jnp.int32(0)
    )
    for _ in range(4):  # 20 updates
      state, _ = chunk(state, job.base, job.base, job.rb_exp, job.rb_exp)
    moved[bonus] = max(
      float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(job.base))
    )
  # The bound: 20 SGD steps (learning rate 0.05, momentum 0.9) on a float-noise gradient move no weight by
  # 1e-5; with the bonus on, the same steps move weights by more than 1e-3.
  assert moved[0.0] < 1e-5, moved
  assert moved[1.0] > 1e-3, moved


def test_the_one_head_path_distils_end_to_end_and_its_anchor_kl_holds_the_policy(reset_run):
  """search_prior 'distilled' (one head: search reads what was distilled) through every phase, without and with
  the anchor's KL term (`kl_weight`; the recording serves as the anchor too, so the term reads B's states). Without
  it the policy alone reaches search's 1.0 and the job writes a one-head network; a heavy KL holds the student
  near the checkpoint's policy on those states, so it drifts far less than without."""
  root, run, rec = reset_run
  report = {}
  for weight in (0.0, 100.0):
    settings = dream.dream_config([*SMALL, "dream_ratio=80", "search_prior=distilled", f"kl_weight={weight}"])
    out = root / f"one-head-kl{weight:g}"
    report[weight] = dream.run(str(run), str(rec), out, anchor=str(rec), settings=settings, console=False)
  free, held = report[0.0], report[100.0]
  assert free["accepted"]
  assert free["returns"]["experience"]["policy"]["after"][0] == pytest.approx(1.0)
  written = load_checkpoint(root / "one-head-kl0")
  assert "search_prior" not in written.params["params"] and not written.meta["config"].get("prior_head", False)
  # With an anchor its drift is logged; weighted, the term keeps the student close to the checkpoint.
  assert "anchor_drift" in held["distil"]["history"][-1]
  drift_free, drift_held = free["distil"]["after"]["drift_anchor"], held["distil"]["after"]["drift_anchor"]
  assert drift_held < 0.25 * drift_free, (drift_held, drift_free)
  # A job made before search_prior existed stored no such key, and ran one head: it resumes as that.
  state_file = root / "one-head-kl0" / "dream.json"
  state = json.loads(state_file.read_text())
  del state["settings"]["search_prior"]
  state_file.write_text(json.dumps(state))
  same = dream.dream_config([*SMALL, "dream_ratio=80", "search_prior=distilled", "kl_weight=0"])
  assert dream.run(str(run), str(rec), root / "one-head-kl0", anchor=str(rec), settings=same, console=False) == free
  with pytest.raises(dream.ConfigError, match="search_prior 'distilled' there, 'kept' here"):
    today = dream.dream_config([*SMALL, "dream_ratio=80"])
    dream.run(str(run), str(rec), root / "one-head-kl0", anchor=str(rec), settings=today, console=False)


def test_the_job_samples_its_replays_as_they_are(reset_run):
  # Adaptation's data: the experience and anchor recordings and the checkpoint's replay, each at its own ring
  # length (nothing padded to the longest), every batch split in proportion to their sampleable rows.
  _, run, rec = reset_run
  job = dream.Job(str(run), str(rec), str(rec), dream.dream_config(SMALL))
  assert job.dc.adapt_replay
  mixed = job.mixed()
  saved = job.saved.state["replay"]
  assert [r.priority.shape for r in mixed.replays] == [
    job.rb_exp.priority.shape,
    job.rb_anchor.priority.shape,
    saved.priority.shape,
  ]
  assert sum(replay_lib.nbytes(r) for r in mixed.replays) == sum(
    replay_lib.nbytes(r) for r in (job.rb_exp, job.rb_anchor, jax.tree.map(jnp.asarray, saved))
  )
  counts = [int(np.sum(np.asarray(r.priority) > 0)) for r in mixed.replays]
  assert sum(mixed.sizes) == job.learn_config.batch_size
  for n, c in zip(mixed.sizes, counts, strict=True):
    assert abs(n - job.learn_config.batch_size * c / sum(counts)) < 1
  assert all(set(np.unique(np.asarray(r.priority))) <= {0.0, 1.0} for r in mixed.replays)


@pytest.mark.parametrize("train", ["policy", "heads", "all"])
def test_distil_optimizer_moves_only_its_parts_and_its_rate_decays_to_zero(train):
  from dreamer.networks import init_params, make_network

  config = dream.config_lib.load("debug", [])
  params = init_params(make_network(config, 2, np.float32), jax.random.PRNGKey(0), (6,))
  steps = 4
  optimizer = distil.make_optimizer(learning_rate=0.1, train=train, params=params, updates=steps)
  state = optimizer.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  moves = []
  for _ in range(steps + 1):
    updates, state = optimizer.update(grads, state, params)
    moves.append(updates)
  flat = ckpt_lib.flatten(moves[0])
  prefix = {
    "policy": ("params_policy_head",),
    "heads": tuple(f"params_{p}" for p in distil.PREDICTION_PARTS),
    "all": ("params_",),
  }[train]
  moved = {k for k, v in flat.items() if np.any(np.asarray(v) != 0)}
  assert moved and moved == {k for k in flat if k.startswith(prefix)}, sorted(moved)
  # Cosine decay: the first step is the full rate (momentum trace = gradient, clipped to global norm 5), and
  # the step after `updates` is exactly zero although the momentum trace is not.
  assert all(np.all(np.asarray(v) == 0) for v in jax.tree.leaves(moves[-1]))
  assert max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(moves[0])) > 0


def test_gate_reads_each_return_against_its_own_allowance():
  job = type("J", (), {"dc": dream.dream_config()})()  # the gate reads only the settings
  base = {"experience": {"policy": [100.0], "search": [200.0]}, "anchor": {"policy": [-20.0], "search": [50.0]}}

  def decide(exp_policy, exp_search, anchor_policy, anchor_search):
    after = {
      "experience": {"policy": [exp_policy], "search": [exp_search]},
      "anchor": {"policy": [anchor_policy], "search": [anchor_search]},
    }
    return dream.gate(job, base, after)["accepted"]

  assert decide(101, 181, -20.9, 45.5)  # search may lose 10%, the anchor's policy 5% of |-20| = 1
  assert not decide(100, 200, -20, 50)  # the experience world's policy alone must rise
  assert not decide(101, 179, -20, 50)  # experience search lost 10.5%
  assert not decide(101, 200, -21.1, 50)  # anchor policy lost 5.5% of |-20|
  assert not decide(101, 200, -20, 44)  # anchor search lost 12%
  # Without an anchor only the experience world is read.
  alone = {"experience": base["experience"]}
  assert dream.gate(job, alone, {"experience": {"policy": [101.0], "search": [181.0]}})["accepted"]
  assert not dream.gate(job, alone, {"experience": {"policy": [101.0], "search": [179.0]}})["accepted"]


def test_value_target_chooses_what_the_value_head_is_pulled_toward():
  from dreamer import support
  from dreamer.networks import Model, init_params, make_network

  config = dream.config_lib.load("debug", [])
  net = make_network(config, 2, np.float32)
  model, params = Model(net), init_params(net, jax.random.PRNGKey(0), (6,))
  obs = jax.random.normal(jax.random.PRNGKey(1), (4, 6))
  reh = distil.Rehearsal(
    jnp.zeros((4, 0), jnp.int32),
    jnp.full((4, 1, 2), 0.5),
    jnp.full((4, 1), 5.0),
    jnp.full((4, 1), -3.0),
    jnp.ones((4, 1), bool),
  )
  _, value_logits = model.predict(params, model.represent(params, obs))
  for target, scalar in (("search", 5.0), ("teacher", -3.0)):
    _, aux = distil.loss_fn(
      params, obs, reh, None, None, model=model, config=config, value_weight=1.0, kl_weight=0.0, value_target=target
    )
    want = -jnp.sum(
      support.scalar_to_probs(jnp.full((4,), scalar), config.value_support) * jax.nn.log_softmax(value_logits), -1
    ).mean()
    assert float(aux["distil/value_ce"]) == pytest.approx(float(want), rel=1e-5)


@pytest.mark.slow
def test_control_fine_tunes_on_real_data_for_the_distil_phase_compute(reset_run):
  root, run, rec = reset_run
  dc = dream.dream_config(SMALL)
  report = dream.run(
    str(run), str(rec), root / "control", settings=dream.dream_config(SMALL + ["control=true"]), console=False
  )
  job = dream.Job(str(run), str(rec), None, dc)
  updates, _ = dream.distil_updates(job)
  budget = updates * distil.forward_steps_per_update(job.dc)  # forward-pass equivalents of the distil phase
  spent = report["compute"]["control"]["forward_steps"]
  per_update = spent / report["compute"]["control"]["updates"]
  assert abs(spent - budget) <= per_update / 2  # matched to the nearest learner update
  assert report["compute"]["imagined_per_real_step"] == 0.0
  # It trained: the candidate moved away from the teacher (the checkpoint: adapt_updates=0), and its last
  # steps were decayed to nothing, as distillation's are.
  teacher, _ = dream._load_tree(root / "control" / "phases" / "teacher.npz", job.base)
  student, _ = dream._load_tree(root / "control" / "phases" / "student.npz", job.base)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(student), jax.tree.leaves(teacher))) > 1e-4
  optimizer, _ = dream._learner_chunk(job, 1, "all", decay_updates=4)
  params = job.base
  state = optimizer.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for _ in range(4):
    _, state = optimizer.update(grads, state, params)
  last, _ = optimizer.update(grads, state, params)
  assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(last))


def test_a_kept_search_prior_searches_as_before_while_acting_alone_reads_the_distilled_head(reset_run, capsys):
  """search_prior 'kept': the student keeps its model's prior for search in a second head (`prior_head`) while
  its policy head learns the labels. On the chain, the checkpoint's prior is uniform (reset_run) and its search
  already optimal; the written network acts alone at the search's return, its search prior is the checkpoint's
  policy head to the bit, and training it further is refused, losing nothing."""
  root, run, rec = reset_run
  settings = dream.dream_config([*SMALL, "dream_ratio=80", "search_prior=kept"])
  report = dream.run(str(run), str(rec), root / "kept", settings=settings, console=False)
  assert report["accepted"]
  ret = report["returns"]["experience"]
  assert ret["policy"]["after"][0] == pytest.approx(1.0) and ret["search"]["after"][0] == pytest.approx(1.0)
  written, original = load_checkpoint(root / "kept"), load_checkpoint(run)
  assert written.meta["config"]["prior_head"] and not original.meta["config"].get("prior_head", False)
  jax.tree.map(
    np.testing.assert_array_equal, written.params["params"]["search_prior"], original.params["params"]["policy_head"]
  )
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), written.params["params"]["policy_head"],
                       original.params["params"]["policy_head"])  # fmt: skip
  assert max(jax.tree.leaves(moved)) > 1e-4
  # The network's search reads the kept head: the root's prior is uniform, acting alone is not.
  config = dream.config_lib.from_dict(written.meta["config"], "test")
  agent = Agent(config, worlds.make("toy:chain", num_envs=1).spec)
  obs = jnp.zeros((1, *agent.obs_shape), jnp.float32)
  latent = agent.model.represent(written.params, obs)
  prior, _ = agent.model.search_predict(written.params, latent)
  policy, _ = agent.model.predict(written.params, latent)
  np.testing.assert_array_equal(prior, np.zeros_like(prior))
  assert not np.allclose(policy, prior)
  assert cli.main(["eval", "--checkpoint", str(root / "kept"), "--episodes", "4"]) == 0
  assert json.loads(capsys.readouterr().out)["search_return"] == pytest.approx(1.0)
  before = sorted(p.name for p in (root / "kept").rglob("*"))
  assert cli.main(["train", "--logdir", str(root / "kept")]) != 0
  assert "prior_head: this network's search reads a prior head of its own" in capsys.readouterr().err
  assert sorted(p.name for p in (root / "kept").rglob("*")) == before
  # A rejected job writes the checkpoint as it was: one head.
  bad = dream.dream_config([*SMALL, "search_prior=kept", "corrupt_dynamics=30", "student_model=adapted",
                            "teacher_check=false"])  # fmt: skip
  assert not dream.run(str(run), str(rec), root / "kept-bad", settings=bad, console=False)["accepted"]
  assert "search_prior" not in load_checkpoint(root / "kept-bad").params["params"]
