"""Resume, in process: bit-identical continuation, unreadable checkpoints, divergence, a full disk."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import assert_same_state

from dreamer import checkpoint as ckpt_lib
from dreamer import config as config_lib
from dreamer import train as train_lib
from dreamer.agent import load_checkpoint
from dreamer.logger import read_metrics
from dreamer.train import Diverged, train

# The debug preset, run to its end (no early stop), checkpointing every 16 updates: ~150 updates in all.
OVERRIDES = ["stop_return=inf", "total_env_steps=800", "checkpoint_every_updates=16", "checkpoints_kept=3"]


def _config(*extra: str) -> config_lib.Config:
  return config_lib.load("debug", OVERRIDES + list(extra))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("straight")
  summary = train(_config(), run_dir, console=False)
  return run_dir, summary


def test_stopped_and_resumed_run_is_bit_identical_to_a_straight_run(straight, tmp_path):
  run_dir, summary = straight
  half = summary["updates"] // 2
  first = train(_config(), tmp_path, console=False, stop_after_updates=half)
  assert first["stopped"] == "stop_after_updates" and half <= first["updates"] < summary["updates"]
  second = train(_config(), tmp_path, console=False)
  assert second["resumed_from"] == first["env_steps"]
  for key in ("env_steps", "updates", "episodes", "eval/search_return", "eval/policy_return"):
    assert second[key] == summary[key], key
  assert_same_state(load_checkpoint(run_dir), load_checkpoint(tmp_path))
  # The losses logged after the resume are those of the straight run.
  straight_losses = {r["updates"]: r["loss/total"] for r in read_metrics(run_dir) if "loss/total" in r}
  resumed_losses = {r["updates"]: r["loss/total"] for r in read_metrics(tmp_path) if "loss/total" in r}
  assert resumed_losses == straight_losses


def _flip_state_byte(step_dir: Path) -> None:
  data = max((step_dir / "state").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else -1)
  raw = bytearray(data.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  data.write_bytes(bytes(raw))


def _wrong_state_checksum(step_dir: Path) -> None:
  meta = step_dir / "meta" / "metadata"
  table = json.loads(meta.read_text())
  table["checksums"]["state"][0] ^= 1
  meta.write_text(json.dumps(table))


def _truncate_params(step_dir: Path) -> None:
  data = max((step_dir / "params").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else -1)
  data.write_bytes(data.read_bytes()[:50])


def _delete_meta(step_dir: Path) -> None:
  shutil.rmtree(step_dir / "meta")


@pytest.mark.parametrize(
  "damage, message",
  [
    (_wrong_state_checksum, "is corrupt: its state arrays do not match the checksums"),
    # A flipped byte of orbax's compressed files fails either its decompression or our checksums.
    (_flip_state_byte, "is corrupt: its state arrays do not match the checksums|cannot be read"),
    (_truncate_params, "cannot be read"),
    (_delete_meta, "cannot be read"),
  ],
)
def test_unreadable_newest_checkpoint_is_reported_and_the_previous_one_used(
  straight, tmp_path, damage, message, capsys
):
  run_dir, summary = straight
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  steps = sorted(int(p.name) for p in (copy / "checkpoints").iterdir())
  damage(copy / "checkpoints" / str(steps[-1]))
  with pytest.raises(ckpt_lib.CheckpointError, match=message):
    load_checkpoint(copy, steps[-1])
  # Reading the run whole (as `dreamer dream` and `dreamer eval` do) falls back the same way, with one warning.
  warned = []
  assert load_checkpoint(copy, warn=warned.append).step == steps[-2]
  assert len(warned) == 1 and re.search(message, warned[0]) and "used the previous checkpoint" in warned[0]
  capsys.readouterr()
  resumed = train(_config(), copy, console=False)
  assert resumed["resumed_from"] == steps[-2]
  err = capsys.readouterr().err  # quiet means no progress lines, not a silent fall-back
  assert "dreamer: warning:" in err and re.search(message, err), err
  events = [r for r in read_metrics(copy) if r.get("event") == "checkpoint_unreadable"]
  assert [e["step"] for e in events] == [steps[-1]] and re.search(message, events[0]["error"])
  assert len(list((copy / "corrupt_checkpoints").iterdir())) == 1  # kept for inspection, out of the way
  # Replaying from the previous checkpoint lands exactly where the straight run ended.
  assert resumed["updates"] == summary["updates"]
  assert_same_state(load_checkpoint(run_dir), load_checkpoint(copy))


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  train(_config(), tmp_path, console=False, stop_after_updates=32)
  good = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
  # An absurd learning rate (a change a resume allows) makes the parameters overflow within a few updates.
  with pytest.raises(Diverged, match=r"non-finite loss at update \d+ \(env step \d+\): loss/total=nan") as info:
    train(_config("learning_rate=1e30"), tmp_path, console=False)
  assert f"the last good checkpoint is '{tmp_path.resolve() / 'checkpoints' / str(good[-1])}'" in str(info.value)
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == good
  saved = load_checkpoint(tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved.params))
  assert read_metrics(tmp_path)[-1]["event"] == "diverged"


def test_non_finite_weights_are_never_saved_nor_named_good(straight, tmp_path):
  # The reproduction: an update with a finite loss can make the weights overflow; with a checkpoint
  # after every update, the next save would hold them. It must stop instead, naming a finite checkpoint.
  run_dir, summary = straight
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  longer = f"total_env_steps={summary['env_steps'] + 400}"
  # One update per acting step, then a checkpoint: the overflowing update's own loss is still finite.
  absurd = _config(
    longer, "learning_rate=1e39", "updates_per_chunk=1", "updates_per_env_step=0.125", "checkpoint_every_updates=1"
  )
  with pytest.raises(Diverged, match=r"non-finite weights at .* after update") as info:
    train(absurd, copy, console=False)
  for step in sorted(int(p.name) for p in (copy / "checkpoints").iterdir()):
    saved = load_checkpoint(copy, step)
    trees = (saved.params, saved.state["learner"].target_params, saved.state["learner"].opt_state)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(trees) if np.issubdtype(x.dtype, np.inexact)), step
  named = re.search(r"the last good checkpoint is '([^']+)'", str(info.value)).group(1)
  assert Path(named).is_dir()


def test_every_checkpoint_unreadable_is_an_error_that_moves_nothing(straight, tmp_path):
  run_dir, _ = straight
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  steps = sorted(int(p.name) for p in (copy / "checkpoints").iterdir())
  for step in steps:
    _wrong_state_checksum(copy / "checkpoints" / str(step))
  with pytest.raises(ckpt_lib.CheckpointError, match=r"no checkpoint of .* can be read .*the run was not restarted"):
    train(_config(), copy, console=False)
  assert sorted(int(p.name) for p in (copy / "checkpoints").iterdir()) == steps  # nothing moved
  assert not (copy / "corrupt_checkpoints").exists()
  assert not any(r.get("event") == "resume" for r in read_metrics(copy, raw=True))  # the history is whole


def test_resume_applies_allowed_changes_and_logs_them(straight, tmp_path):
  run_dir, summary = straight
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  longer = train(_config("total_env_steps=960"), copy, console=False)
  assert longer["resumed_from"] == summary["env_steps"] and longer["env_steps"] == 960
  resume = [r for r in read_metrics(copy) if r.get("event") == "resume"]
  assert resume[-1]["changed"] == {"total_env_steps": [800, 960]}
  assert json.loads((copy / "config.json").read_text())["total_env_steps"] == 960
  assert [r for r in read_metrics(copy) if r.get("summary")] == [read_metrics(copy)[-1]]


def test_resume_refuses_a_change_of_world_or_network_shape(straight):
  run_dir, _ = straight
  for change in ("world=toy:chain-8", "hidden_dim=32", "optimizer=sgd"):
    with pytest.raises(config_lib.ConfigError, match=f"cannot resume .* with a different {change.split('=')[0]}"):
      train(_config(change), run_dir, console=False)


def _mount_tmpfs(where: Path, size: str) -> bool:
  where.mkdir()
  ok = (
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True).returncode
    == 0
  )
  return ok


@pytest.mark.slow
def test_full_disk_is_a_clear_error_that_corrupts_nothing(tmp_path):
  disk = tmp_path / "disk"
  if not _mount_tmpfs(disk, "1200k"):
    pytest.skip("mounting a small tmpfs needs root")
  try:
    run = disk / "run"
    args = ["train", "--config", "debug", "--logdir", str(run), "--quiet"] + [
      f"--set={o}" for o in OVERRIDES + ["replay_capacity=1600", "checkpoints_kept=10"]
    ]
    proc = subprocess.run([sys.executable, "-m", "dreamer.cli", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert "\n" not in err and err.startswith("dreamer: error:"), err[-2000:]
    assert "No space left on device" in err and "the last complete checkpoint is" in err, err
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
  finally:
    subprocess.run(["umount", str(disk)], check=False)
  leftovers = [p.name for p in (copy / "checkpoints").iterdir() if not p.name.isdigit()]
  assert not leftovers, leftovers
  steps = sorted(int(p.name) for p in (copy / "checkpoints").iterdir())
  assert steps and f"checkpoints/{steps[-1]}'" in err
  for step in steps:
    load_checkpoint(copy, step)  # every complete checkpoint reads back and matches its checksums
  read_metrics(copy)
  # With space again, the run resumes from its newest checkpoint and finishes.
  done = train(_config("replay_capacity=1600", "checkpoints_kept=10"), copy, console=False)
  assert done["resumed_from"] == steps[-1] and done["env_steps"] == 800


def test_last_complete_never_names_a_checkpoint_still_being_written(tmp_path):
  """A failure report names only finished checkpoints: orbax lists a step once its save starts."""
  ckpts = ckpt_lib.Checkpoints(tmp_path / "run")
  try:
    state = {"x": np.arange(1000, dtype=np.float32)}
    ckpts.save(1, state, state, {})
    ckpts.wait()
    ckpts.save(2, state, state, {})
    assert ckpts.last_complete().endswith(f"{ckpts.path(1)!r}")  # 2 is still pending
    ckpts.wait()
    assert ckpts.last_complete().endswith(f"{ckpts.path(2)!r}")
  finally:
    ckpts.close()


def test_resume_is_bit_identical_with_resets_the_awr_term_reward_priorities_terminal_head_and_decoder_on(tmp_path):
  # Resets (shrink-and-perturb every 16 updates) derive their fresh weights from the learner's own key, so a
  # run stopped between two resets and resumed ends exactly where an unbroken one does; the AWR term beside
  # search's target (awr_weight) rides along: it must keep no state of its own; the value-prefix term of the
  # priorities (priority_reward_weight) lives in the replay's priorities, which the checkpoint holds; the
  # terminal head (terminal_loss_weight) and the observation decoder (obs_loss_weight) are parameters like any
  # other, saved and restored with them.
  resets = ["total_env_steps=480", "reset_interval=16", "reset_parts=prediction", "reset_shrink=0.5", "awr_weight=1"]
  resets += ["priority_reward_weight=1", "terminal_loss_weight=1", "obs_loss_weight=1"]
  straight_run = train(_config(*resets), tmp_path / "straight", console=False)
  first = train(_config(*resets), tmp_path / "cut", console=False, stop_after_updates=40)
  assert first["stopped"] == "stop_after_updates" and first["updates"] < straight_run["updates"]
  second = train(_config(*resets), tmp_path / "cut", console=False)
  assert second["updates"] == straight_run["updates"] and second["updates"] > 48  # three resets at least
  assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "cut"))


def test_resume_is_bit_identical_with_exploratory_repeats_on(tmp_path):
  # Repeats running at the cut are saved in the checkpoint's meta and continued, and their draws come from the
  # loop's own key: a run cut mid-repeat and resumed ends exactly where an unbroken one does.
  explore = ["total_env_steps=480", "explore_epsilon=0.5", "explore_zeta=1.5", "explore_max_repeat=50"]
  explore.append("explore_decay_steps=450")
  straight_run = train(_config(*explore), tmp_path / "straight", console=False)
  first = train(_config(*explore), tmp_path / "cut", console=False, stop_after_updates=40)
  assert first["stopped"] == "stop_after_updates" and first["updates"] < straight_run["updates"]
  cut = ckpt_lib.Checkpoints(tmp_path / "cut", keep=3)
  try:
    assert any(left > 0 for left in cut.read_meta(max(cut.steps()))["repeats"]["left"])  # cut mid-repeat
  finally:
    cut.close()
  second = train(_config(*explore), tmp_path / "cut", console=False)
  assert second["updates"] == straight_run["updates"]
  assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "cut"))
  records = [r for r in read_metrics(tmp_path / "straight") if "train/explored" in r]
  assert max(r["train/explored"] for r in records) > 0 and records[-1]["train/explore_epsilon"] == 0


@pytest.mark.parametrize("redraw", ["noise_redraw=0.2", "noise_hold_spread=0.001"])
def test_resume_is_bit_identical_with_noise_held_per_episode(tmp_path, redraw):
  # The noise each env holds is saved in the checkpoint's meta and its fresh draws (at episodes' ends and
  # redraws, random or after a search that told the actions apart) come from the loop's own key: a run cut
  # mid-episode and resumed ends where an unbroken one does.
  hold = ["total_env_steps=480", "noise_hold=episode", redraw]
  straight_run = train(_config(*hold), tmp_path / "straight", console=False)
  first = train(_config(*hold), tmp_path / "cut", console=False, stop_after_updates=40)
  assert first["stopped"] == "stop_after_updates" and first["updates"] < straight_run["updates"]
  cut = ckpt_lib.Checkpoints(tmp_path / "cut", keep=3)
  try:
    held = np.asarray(cut.read_meta(max(cut.steps()))["held"])
  finally:
    cut.close()
  assert held.shape == (_config().num_envs, 2) and len(np.unique(held)) == held.size  # every env its own draw
  second = train(_config(*hold), tmp_path / "cut", console=False)
  assert second["updates"] == straight_run["updates"]
  assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "cut"))


def test_noise_hold_may_change_on_resume(tmp_path, monkeypatch):
  # A run started without held noise and resumed with it: its checkpoint holds none, so every env draws fresh
  # noise from the restored key, not the first draw of the seed (which a new run holds at its first step);
  # and back: a run resumed without it saves none.
  seen, act = [], train_lib.act
  monkeypatch.setattr(
    train_lib, "act", lambda p, c: seen.append(None if c.held is None else c.held.copy()) or act(p, c)
  )
  plain, hold = ["total_env_steps=480"], ["total_env_steps=480", "noise_hold=episode"]
  train(_config(*plain), tmp_path / "cut", console=False, stop_after_updates=40)
  assert seen[-1] is None
  seen.clear()
  train(_config(*hold), tmp_path / "cut", console=False, stop_after_updates=64)
  resumed = seen[0]
  seen.clear()
  train(_config(*hold), tmp_path / "new", console=False, stop_after_updates=8)
  assert resumed.shape == seen[0].shape == (_config().num_envs, 2)
  assert (resumed != seen[0]).all()
  summary = train(_config(*plain), tmp_path / "cut", console=False)
  assert summary["stopped"] is None and seen[-1] is None
  done = ckpt_lib.Checkpoints(tmp_path / "cut", keep=3)
  try:
    assert done.read_meta(max(done.steps()))["held"] is None
  finally:
    done.close()


def test_new_episodes_on_resume_draw_fresh_noise(tmp_path, monkeypatch):
  # A checkpoint whose world state cannot be restored (its checksum no longer matches) resumes with new
  # episodes: they start with fresh noise, not the noise the saved episodes held.
  seen, act = [], train_lib.act
  record = lambda p, c: seen.append(c.held.copy()) or act(p, c)  # noqa: E731
  monkeypatch.setattr(train_lib, "act", record)
  hold = ["total_env_steps=480", "noise_hold=episode"]
  train(_config(*hold), tmp_path, console=False, stop_after_updates=40)
  ckpts = ckpt_lib.Checkpoints(tmp_path, keep=3)
  step = max(ckpts.steps())
  ckpts.close()
  meta_file = tmp_path / "checkpoints" / str(step) / "meta" / "metadata"
  meta = json.loads(meta_file.read_text())
  meta["world_state"]["crc32"] += 1
  meta_file.write_text(json.dumps(meta))
  seen.clear()
  summary = train(_config(*hold), tmp_path, console=False)
  assert summary["resumed_from"] == step and summary["stopped"] is None
  assert (seen[0] != np.asarray(meta["held"], np.float32)).all()


def test_resume_is_bit_identical_with_the_residual_network_and_one_hot_action_planes(tmp_path):
  # The 10x10 residual network with one plane per action (`action_planes`) on a MinAtar world: the planes are
  # parameters' shapes only, saved and restored like any other; a cut run ends where an unbroken one does.
  pytest.importorskip("minatar")
  net = ["world=minatar:Breakout", "network=resnet", "downsample=false", "channels=4", "head_channels=2"]
  net += ["head_hidden=4", "action_planes=onehot", "total_env_steps=640", "num_envs=4", "eval_max_steps=50"]
  straight_run = train(_config(*net), tmp_path / "straight", console=False)
  first = train(_config(*net), tmp_path / "cut", console=False, stop_after_updates=16)
  assert first["stopped"] == "stop_after_updates" and first["updates"] < straight_run["updates"]
  second = train(_config(*net), tmp_path / "cut", console=False)
  assert second["updates"] == straight_run["updates"]
  assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "cut"))
  kernel = load_checkpoint(tmp_path / "cut").params["params"]["dyn_conv"]["kernel"]
  assert kernel.shape[2] == 4 + 6  # the latent's channels and one plane per action


@pytest.mark.parametrize("dynamics", ["false", "true"])
def test_resume_is_bit_identical_with_task_input_and_the_offsets_stay_zero_on_the_home_world(tmp_path, dynamics):
  # Task features (`task_input`) on a family member that is not its base (SpaceInvaders-fast, member 1): the
  # world's saved state carries them, and the network's offset rows, unused on the home world, stay zero
  # (with `task_dynamics`, the dynamics' rows too).
  pytest.importorskip("minatar")
  task = ["world=minatar:SpaceInvaders-fast", "task_input=2", "total_env_steps=640", "num_envs=4"]
  task += ["eval_max_steps=50", f"task_dynamics={dynamics}"]
  straight_run = train(_config(*task), tmp_path / "straight", console=False)
  first = train(_config(*task), tmp_path / "cut", console=False, stop_after_updates=16)
  assert first["stopped"] == "stop_after_updates" and first["updates"] < straight_run["updates"]
  second = train(_config(*task), tmp_path / "cut", console=False)
  assert second["updates"] == straight_run["updates"]
  saved = load_checkpoint(tmp_path / "cut")
  assert_same_state(load_checkpoint(tmp_path / "straight"), saved)
  assert saved.params["params"]["task_offset"]["kernel"].shape == (2, _config(*task).latent_dim)
  assert not np.any(saved.params["params"]["task_offset"]["kernel"])
  assert ("dyn_task" in saved.params["params"]) == (dynamics == "true")
  assert not np.any(saved.params["params"].get("dyn_task", {}).get("kernel", 0))
  assert saved.state["obs"].shape[-1] == 6 + 2  # SpaceInvaders' six channels and the two task planes
