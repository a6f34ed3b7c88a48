"""Every row of the bad-input table (docs/checkpoints.md, section 'Bad input'), run as written: one line on
stderr, the documented message, exit code 2, and nothing already saved is touched."""

import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import get_type_hints

import pytest

from dreamer import cli
from dreamer import config as config_lib
from dreamer.train import train

TABLE_PAGE = Path(__file__).resolve().parent.parent / "docs" / "checkpoints.md"


def _table() -> list[tuple[str, str, str]]:
  """(bad input, command, message) for each row of the table under the 'Bad input' heading of TABLE_PAGE."""
  page = TABLE_PAGE.read_text()
  heading = re.search(r"^#+ Bad input[ \t]*$", page, re.MULTILINE)
  assert heading, f"no 'Bad input' heading in {TABLE_PAGE}"
  text = page[heading.end() :]
  rows = []
  for line in text.splitlines():
    m = re.fullmatch(r"\| (.+?) \| `(dreamer[^`]*)` \| `(.+)` \|", line.strip())
    if m:
      rows.append(m.groups())
    elif rows and not line.startswith("|"):
      break
  return rows


ROWS = _table()


def test_the_table_has_at_least_20_rows():
  assert len(ROWS) >= 20


@pytest.fixture(scope="module")
def places(tmp_path_factory):
  """The README's placeholders, made for real."""
  root = tmp_path_factory.mktemp("bad-input")
  run = root / "run"
  train(config_lib.load("debug", ["total_env_steps=400", "stop_return=inf"]), run, console=False)
  assert cli.main(["play", "--checkpoint", str(run), "--steps", "40", "--envs", "2", "--out", str(root / "exp")]) == 0
  (root / "file").write_text("not a directory\n")
  (root / "other").mkdir()
  (root / "other" / "notes.txt").write_text("someone's files\n")
  (root / "bad.toml").write_text("batch_size = = 3\n")
  (root / "key.toml").write_text("batch_sise = 3\n")
  corrupt = root / "corrupt"
  shutil.copytree(run, corrupt)
  # Arrays that no longer match the checksums written with them. Flipping a byte of orbax's compressed files
  # is not that: where the byte lands decides between a checksum mismatch and a decompression error.
  meta = next((corrupt / "checkpoints").glob("*/meta/metadata"))
  table = json.loads(meta.read_text())
  table["checksums"]["params"][0] ^= 1
  meta.write_text(json.dumps(table))
  future = root / "future"
  shutil.copytree(run, future)
  meta = next((future / "checkpoints").glob("*/meta/metadata"))
  meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 99}))
  (root / "binary.toml").write_bytes(bytes(range(128, 256)) * 4)
  made = {}
  for name, damage in DAMAGED_CONFIGS.items():  # runs whose config.json was damaged or hand-edited
    made[name] = root / name.lower()
    shutil.copytree(run, made[name])
    saved = made[name] / "config.json"
    saved.write_bytes(damage(saved.read_text()))
  return {
    "RUN": run,
    "EXP": root / "exp",
    "FILE": root / "file",
    "OTHER": root / "other",
    "BADTOML": root / "bad.toml",
    "KEYTOML": root / "key.toml",
    "BINARY": root / "binary.toml",
    "CORRUPT": corrupt,
    "FUTURE": future,
    **made,
  }


def _edit(**changes):
  return lambda text: json.dumps({**json.loads(text), **changes}).encode()


DAMAGED_CONFIGS = {
  "TORNCONF": lambda text: text[: len(text) // 2].encode(),
  "LISTCONF": lambda text: b"[1, 2]",
  "TYPECONF": _edit(batch_size="many"),
  "KEYCONF": _edit(batch_sise=3),
  "NANCONF": _edit(learning_rate=float("nan")),  # json writes NaN, and reads it back
  "BINCONF": lambda text: b"\x80\xff" + text.encode(),
}
PLACES = ("RUN", "EXP", "FILE", "OTHER", "BADTOML", "KEYTOML", "BINARY", "CORRUPT", "FUTURE", *DAMAGED_CONFIGS)
PLACE = re.compile(rf"\b({'|'.join(PLACES)})\b")


def _fill(text: str, places: dict[str, Path]) -> str:
  return PLACE.sub(lambda m: str(places[m.group(1)]), text)


def _digest(path: Path) -> str:
  h = hashlib.sha256()
  for p in sorted(path.rglob("*")):
    if p.is_file() and p.name != ".lock":  # the run lock says who trains there now: not the run's data
      h.update(str(p.relative_to(path)).encode())
      h.update(p.read_bytes())
  return h.hexdigest()


@pytest.mark.parametrize("what, command, message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_gets_one_clear_line(what, command, message, places, capsys, monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)  # relative paths in the table ('nothere') resolve to an empty directory
  runs = {"RUN", *PLACE.findall(command)} & {"RUN", "CORRUPT", "FUTURE", *DAMAGED_CONFIGS}
  before = {name: _digest(places[name]) for name in runs}
  argv = shlex.split(_fill(command, places))[1:]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("dreamer: error:") and "\n" not in err, err
  assert _fill(message, places) in err, err
  assert {name: _digest(places[name]) for name in runs} == before  # every saved run is untouched, in place
  assert not list(places["RUN"].parent.glob("*.replaced-*"))  # and none was moved aside
  assert not (tmp_path / "nothere").exists()


# ------------------------------------------------------------------ what a row of the table cannot express


def test_fresh_checks_the_whole_command_before_it_moves_the_run(places, tmp_path, monkeypatch, capsys):
  from dreamer import train as train_lib
  from dreamer.runlock import RunLock

  run = tmp_path / "run"
  shutil.copytree(places["RUN"], run)
  before = _digest(run)
  fresh = ["train", "--config", "debug", "--logdir", str(run), "--fresh"]
  for bad in (["--set", "lerning_rate=0.1"], ["--set", "world=toy:chain-2"], ["--set", "updates_per_env_step=inf"]):
    assert cli.main(fresh + bad) == 2
    assert _digest(run) == before and not list(tmp_path.glob("run.replaced-*"))  # still in place
  with RunLock(run):  # as if another process trained there
    assert cli.main(fresh) == 2
  assert "is in use by pid" in capsys.readouterr().err
  assert _digest(run) == before and not list(tmp_path.glob("run.replaced-*"))
  # A good command moves it aside, then trains (not what this tests).
  started = []
  monkeypatch.setattr(train_lib, "train", lambda config, logdir, **_: started.append(logdir) or {"stopped": None})
  assert cli.main(fresh) == 0
  aside = list(tmp_path.glob("run.replaced-*"))
  assert len(aside) == 1 and _digest(aside[0]) == before and started == [run] and not run.exists()


def test_a_full_disk_leaves_no_write_probe_and_a_leftover_one_is_not_foreign(tmp_path, monkeypatch):
  from dreamer.checkpoint import StorageError
  from dreamer.train import prepare_run_dir

  write_text = Path.write_text

  def full_disk(path, *args, **kwargs):
    if path.name == ".write-probe":
      path.touch()  # a full disk still makes the name, then cannot write its bytes
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write_text(path, *args, **kwargs)

  run = tmp_path / "run"
  with monkeypatch.context() as patch:
    patch.setattr(Path, "write_text", full_disk)
    with pytest.raises(StorageError, match="No space left on device"):
      prepare_run_dir(run)
  assert list(run.iterdir()) == []
  assert prepare_run_dir(run) == run  # with space again the retry starts
  # What a failed or killed start of an older dreamer may have left is not someone else's file.
  for leftover in (".write-probe", ".lock", "config.json.tmp"):
    other = tmp_path / leftover.strip(".")
    other.mkdir()
    (other / leftover).write_text("")
    assert prepare_run_dir(other) == other
  (run / "notes.txt").write_text("someone's files\n")
  with pytest.raises(config_lib.ConfigError, match="is a non-empty directory that holds no run"):
    prepare_run_dir(run)


def test_a_really_full_disk_then_space_again(tmp_path):
  from dreamer.checkpoint import StorageError
  from dreamer.train import prepare_run_dir

  disk = tmp_path / "disk"
  disk.mkdir()
  mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]
  if subprocess.run(mount, capture_output=True).returncode != 0:
    pytest.skip("mounting a small tmpfs needs root")
  try:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
      while os.write(fd, b"\0" * 4096):
        pass
    except OSError as e:
      assert e.errno == errno.ENOSPC
    finally:
      os.close(fd)
    with pytest.raises(StorageError, match="No space left on device"):
      prepare_run_dir(disk / "run")
    assert not (disk / "run" / ".write-probe").exists()
    (disk / "filler").unlink()
    assert prepare_run_dir(disk / "run") == disk / "run"
  finally:
    subprocess.run(["umount", str(disk)], check=False)


def _float_settings() -> list[tuple[type, str]]:
  from dreamer.dream import DreamConfig

  return [
    (cls, key)
    for cls in (config_lib.Config, DreamConfig)
    for key, hint in get_type_hints(cls).items()
    if hint in (float, tuple[float, ...])
  ]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("cls, key", _float_settings(), ids=lambda x: getattr(x, "__name__", x))
def test_no_float_setting_takes_nan_or_inf_but_stop_return_takes_inf(cls, key, value):
  from dreamer import dream

  default = getattr(cls(), key)
  text = f"[{', '.join([value] * len(default))}]" if isinstance(default, tuple) else value
  load = dream.dream_config if cls is dream.DreamConfig else lambda o: config_lib.load("debug", o)
  if key == "stop_return" and value != "nan":
    assert load([f"{key}={text}"]).stop_return == float(value)
    return
  with pytest.raises(config_lib.ConfigError, match=rf"{key} must (be a finite number|hold finite numbers|be a num)"):
    load([f"{key}={text}"])


def test_sizes_are_checked_against_the_memory_available(places, monkeypatch, capsys, tmp_path):
  from dreamer import limits

  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(limits, "available", lambda: (1e6, "this machine"))
  # The debug preset's state alone (parameters, target, Adam's moments: 0.8 MB; replay: 0.4 MB) is more.
  assert cli.main(["train", "--config", "debug", "--logdir", "new"]) == 2
  err = capsys.readouterr().err
  assert "this needs at least 1.3 MB" in err and "this machine has 1.0 MB available" in err, err
  assert "lower the network's widths or supports" in err and not (tmp_path / "new").exists()
  # A recording of 100000 steps of the toy world's 6 floats is 4.6 MB at least.
  assert cli.main(["play", "--checkpoint", str(places["RUN"]), "--steps", "100000", "--envs", "1", "--out", "rec"]) == 2
  err = capsys.readouterr().err
  assert "a recording of 100000 env steps: 4.6 MB" in err and "lower --steps" in err, err
