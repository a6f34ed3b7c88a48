"""The one way our reports draw: matplotlib's object-oriented API (a `Figure` with its own Agg canvas).

No pyplot and no `matplotlib.use`: nothing global is set, so drawing a report never changes the backend of
the program that asked for it, and a figure is released as soon as it is written (pyplot would keep it).

  with plots.png(path, dpi=100, figsize=(6, 3)) as fig:
    ax = fig.subplots()
    ax.plot(...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from matplotlib.figure import Figure


def figure(**kwargs: Any) -> Figure:
  """A new `Figure(**kwargs)` (figsize, layout, ...) drawn by its own Agg canvas."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)
  return fig


@contextlib.contextmanager
def png(path: str | Path, *, dpi: float, **kwargs: Any) -> Iterator[Figure]:
  """A new figure (`kwargs` as for `figure`) to draw on; written to `path` as PNG at `dpi` when the block ends
  without an error, and released (cleared) either way."""
  fig = figure(**kwargs)
  try:
    yield fig
    fig.savefig(path, format="png", dpi=dpi)
  finally:
    fig.clear()
