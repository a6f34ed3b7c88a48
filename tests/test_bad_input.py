"""Every row of the bad-input table (docs/checkpoints.md, section 'Bad input'), run as written: one line on
stderr, the documented message, exit code 2, and nothing already saved is touched."""

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path

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
  return {
    "RUN": run,
    "EXP": root / "exp",
    "FILE": root / "file",
    "OTHER": root / "other",
    "BADTOML": root / "bad.toml",
    "KEYTOML": root / "key.toml",
    "CORRUPT": corrupt,
    "FUTURE": future,
  }


def _fill(text: str, places: dict[str, Path]) -> str:
  return re.sub(r"\b(RUN|EXP|FILE|OTHER|BADTOML|KEYTOML|CORRUPT|FUTURE)\b", lambda m: str(places[m.group(1)]), text)


def _digest(path: Path) -> str:
  h = hashlib.sha256()
  for p in sorted(path.rglob("*")):
    if p.is_file():
      h.update(str(p.relative_to(path)).encode())
      h.update(p.read_bytes())
  return h.hexdigest()


@pytest.mark.parametrize("what, command, message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_gets_one_clear_line(what, command, message, places, capsys, monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)  # relative paths in the table ('nothere') resolve to an empty directory
  before = _digest(places["RUN"])
  argv = shlex.split(_fill(command, places))[1:]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("dreamer: error:") and "\n" not in err, err
  assert _fill(message, places) in err, err
  assert _digest(places["RUN"]) == before  # the saved run is untouched
  assert not (tmp_path / "nothere").exists()
