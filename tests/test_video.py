"""Evaluation videos: MinAtar frames drawn from the channels, files with the episode's frame count and size for
a MinAtar and a gymnasium world, TensorBoard's copy, and every failure one line while the run goes on."""

import json
import subprocess
import sys

import numpy as np
import pytest

import worlds
from dreamer import actor, board, video
from dreamer import config as config_lib
from dreamer.logger import read_metrics
from dreamer.train import train
from worlds.minatar import CELL_PIXELS, palette

imageio = pytest.importorskip("imageio.v2")


def frame_count_and_size(path) -> tuple[int, tuple[int, int]]:
  with imageio.get_reader(path, format="FFMPEG") as reader:
    frames = [f for f in reader]
  return len(frames), frames[0].shape[:2]


def test_minatar_frame_is_each_cells_last_lit_channel_in_its_colour():
  with worlds.make("minatar:Breakout", num_envs=2, seed=3) as world:
    world.reset(3)
    world.step(np.array([1, 2]))
    image = world.render(1)
    state = world._envs[1].state()  # noqa: SLF001 - the package's own view of the board
  colours = palette(state.shape[-1])
  assert image.shape == (10 * CELL_PIXELS, 10 * CELL_PIXELS, 3) and image.dtype == np.uint8
  for y in range(10):
    for x in range(10):
      lit = np.flatnonzero(state[y, x])
      want = colours[lit[-1]] if len(lit) else np.zeros(3, np.uint8)
      assert (image[y * CELL_PIXELS : (y + 1) * CELL_PIXELS, x * CELL_PIXELS : (x + 1) * CELL_PIXELS] == want).all()
  assert len({tuple(c) for c in colours}) == len(colours) and state.any()


def test_atari_frames_are_the_emulators_rgb_screen():
  with worlds.make("atari:Pong", num_envs=1, seed=0, frame_size=84) as world:
    world.reset(0)
    for _ in range(30):
      world.step(np.array([0]))
    image = world.render(0)
  assert image.shape == (210, 160, 3) and image.dtype == np.uint8 and len(np.unique(image.reshape(-1, 3), axis=0)) > 2


@pytest.mark.parametrize(
  "world_id, kwargs, size",
  [("minatar:Breakout", {}, (160, 160)), ("gym:CartPole-v1", {"render_mode": "rgb_array"}, (400, 600))],
)
def test_a_recorded_episode_has_one_frame_per_step_of_env_0(tmp_path, world_id, kwargs, size):
  with worlds.make(world_id, num_envs=3, seed=1, **kwargs) as world:
    rng = np.random.default_rng(0)
    recorder = video.Recorder(world, tmp_path / "v" / "ep.mp4", fps=15)
    res = actor.run_episodes(world, lambda obs: rng.integers(0, 2, len(obs)), seed=1, max_steps=500, record=recorder)
    preview = recorder.finish()
  length = int(res.lengths[0])
  assert recorder.count == length and len(preview) == min(length, 300) > 0
  assert frame_count_and_size(tmp_path / "v" / "ep.mp4") == (length, size)


def test_failures_are_one_line_and_spare_the_episode(tmp_path, monkeypatch):
  with worlds.make("toy:chain", num_envs=2, seed=0) as world:  # a world that cannot draw
    recorder = video.Recorder(world, tmp_path / "a.mp4", fps=15)
    res = actor.run_episodes(world, lambda obs: np.zeros(len(obs), int), seed=0, max_steps=50, record=recorder)
    assert len(res.returns) == 2
    with pytest.raises(video.VideoError, match="^ChainWorld cannot draw frames, so it has no video$"):
      recorder.finish()
  blocker = tmp_path / "file"
  blocker.write_text("")
  with worlds.make("minatar:Breakout", num_envs=1, seed=0) as world:
    world.reset(0)
    recorder = video.Recorder(world, blocker / "v.mp4", fps=15)  # its folder would be inside a file
    recorder()
    with pytest.raises(video.VideoError, match="^cannot write video .*v.mp4'"):
      recorder.finish()
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-ffmpeg"))  # the ffmpeg binary is missing
    recorder = video.Recorder(world, tmp_path / "c.mp4", fps=15)
    recorder()
    with pytest.raises(video.VideoError, match="^cannot write video .*c.mp4'") as missing:
      recorder.finish()
    assert "\n" not in str(missing.value) and not (tmp_path / "c.mp4").exists()
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if the extra were not installed
    recorder = video.Recorder(world, tmp_path / "b.mp4", fps=15)
    recorder()
    with pytest.raises(video.VideoError, match=r"videos need the 'video' extra \(pip install '.\[video\]'\)"):
      recorder.finish()


def test_training_records_one_video_per_evaluation_and_tensorboard_shows_it(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator

  config = config_lib.load(
    "cartpole",
    ["total_env_steps=300", "eval_every=150", "eval_episodes=2", "learning_starts=100", "video=true",
     "stop_return=inf", "eval_max_steps=60"],
  )  # fmt: skip
  train(config, tmp_path, console=False)
  records = read_metrics(tmp_path)
  videos = [r for r in records if r.get("event") == "video"]
  evals = [r["env_steps"] for r in records if "eval/search_return" in r and not r.get("summary")]
  assert [r["env_steps"] for r in videos] == evals and len(evals) == 2
  for r in videos:
    assert frame_count_and_size(r["path"]) == (r["frames"], (400, 600)) and 1 <= r["frames"] <= 60
  acc = event_accumulator.EventAccumulator(
    str(tmp_path / board.DIR_NAME / board.VIDEO_DIR), size_guidance={"images": 0}
  )
  acc.Reload()
  assert [e.step for e in acc.Images("eval/video")] == evals
  assert acc.Images("eval/video")[0].encoded_image_string[:6] == b"GIF89a"


def test_a_world_that_cannot_draw_is_reported_once_and_the_run_goes_on(tmp_path):
  config = config_lib.load("debug", ["total_env_steps=400", "eval_every=100", "video=true", "stop_return=inf"])
  summary = train(config, tmp_path, console=False)
  assert summary["env_steps"] == 400 and summary["stopped"] is None
  failed = [r for r in read_metrics(tmp_path) if r.get("event") == "video_failed"]
  assert len(failed) == 1 and "cannot draw frames" in failed[0]["error"]
  assert not (tmp_path / "videos").exists()


def test_eval_video_from_the_command_line(tmp_path):
  config = config_lib.load("cartpole", ["total_env_steps=200", "learning_starts=100", "eval_max_steps=40"])
  train(config, tmp_path / "run", console=False)
  out = tmp_path / "clips" / "ep.mp4"
  cmd = [sys.executable, "-m", "dreamer.cli", "eval", "--checkpoint", str(tmp_path / "run"), "--episodes", "2"]
  done = subprocess.run(cmd + ["--video", str(out)], capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  result = json.loads(done.stdout)
  assert result["video"] == str(out) and frame_count_and_size(out) == (result["video_frames"], (400, 600))
  bad = subprocess.run(cmd + ["--video", str(tmp_path / "x.avi")], capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
    f"dreamer: error: --video {str(tmp_path / 'x.avi')!r} must name an .mp4 file"
  ]
