"""metrics.jsonl is read back by compare, bench and scripts: a torn last line (a kill) is skipped, any other
damage is one line naming the line, never a traceback."""

import json

import pytest

from dreamer import compare
from dreamer.config import ConfigError
from dreamer.logger import MetricsError, read_metrics


def _write(tmp_path, lines):
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
  (tmp_path / "config.json").write_text("{}")
  return tmp_path


def test_a_torn_last_line_is_skipped_and_a_resume_supersedes(tmp_path):
  rows = [{"env_steps": 8}, {"env_steps": 16}, {"event": "resume", "env_steps": 8}, {"env_steps": 16, "x": 1}]
  run = _write(tmp_path, [json.dumps(r) for r in rows] + ['{"env_steps": 2'])
  assert read_metrics(run) == [rows[0], rows[2], rows[3]]


@pytest.mark.parametrize(
  "lines, problem",
  [
    (['{"env_steps": 8}', "{oops", '{"env_steps": 16}'], "line 2 is not JSON"),
    (['{"env_steps": 8}', "[1, 2]"], "line 2 is not a JSON object"),
    (['{"event": "resume", "env_steps": "8"}'], "line 1: a resume marker without integer env_steps"),
  ],
)
def test_damage_is_named_by_line(tmp_path, lines, problem):
  run = _write(tmp_path, lines)
  with pytest.raises(MetricsError, match=problem):
    read_metrics(run)
  assert not compare.finished(run)
  with pytest.raises(ConfigError, match=f"is not a readable run directory .*{problem}"):
    compare.load_run(run)
