"""`dreamer.plots`: one figure, written as PNG and released, without pyplot or a global backend."""

import subprocess
import sys

import pytest

from dreamer import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_png_writes_the_figure_and_releases_it(tmp_path):
  with plots.png(tmp_path / "a.png", dpi=50, figsize=(2, 1)) as fig:
    fig.subplots().plot([0, 1], [1, 0])
  assert (tmp_path / "a.png").read_bytes()[:8] == PNG_MAGIC
  assert not fig.axes  # cleared once written


def test_png_writes_nothing_when_drawing_fails(tmp_path):
  with pytest.raises(RuntimeError, match="drawing failed"), plots.png(tmp_path / "b.png", dpi=50) as fig:
    fig.subplots()
    raise RuntimeError("drawing failed")
  assert not (tmp_path / "b.png").exists() and not fig.axes


def test_reports_draw_without_pyplot_or_a_backend_choice(tmp_path):
  # A fresh interpreter: the reports' modules, imported and drawing, leave matplotlib's global state alone.
  code = (
    "import sys, matplotlib\n"
    "backend = dict.__getitem__(matplotlib.rcParams, 'backend')  # read without resolving it\n"
    "from dreamer import compare, dream_report, plots, report\n"
    f"with plots.png({str(tmp_path / 'c.png')!r}, dpi=50) as fig:\n"
    "  fig.subplots().plot([0, 1])\n"
    "assert 'matplotlib.pyplot' not in sys.modules\n"
    "assert dict.__getitem__(matplotlib.rcParams, 'backend') is backend\n"
  )
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
