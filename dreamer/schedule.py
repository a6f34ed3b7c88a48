"""The training loop's clocks: small rules that say when something is due, given the counters it reads.

The counters themselves live in the loop's `Progress` (saved in every checkpoint), so a clock holds only its
setting and a resumed run continues its schedule exactly.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Every:
  """Due when a counter reaches `next_at`; the next time is then the counter's next multiple of `period`.
  period 0: never due."""

  period: int

  def first(self) -> int:
    """`next_at` of a new run: the first multiple of the period (0 when never due)."""
    return self.period

  def due(self, count: int, next_at: int) -> bool:
    return self.period > 0 and count >= next_at

  def following(self, count: int) -> int:
    """`next_at` after firing at `count` (or after a change of period): the next multiple above it."""
    return (count // self.period + 1) * self.period if self.period > 0 else 0


@dataclasses.dataclass(frozen=True)
class Ratio:
  """A replay ratio: `ratio` units of work owed per step once `start` steps are done, paid in whole chunks
  of `chunk` units."""

  ratio: float
  chunk: int
  start: int = 0

  def owe(self, owed: float, steps: int, *, done: int) -> float:
    """The debt after `steps` more steps, `done` steps in all (counted with them)."""
    return owed + steps * self.ratio if done >= self.start else owed

  def pay(self, owed: float) -> tuple[int, float]:
    """(chunks due now, the debt left): chunks are paid one by one, so the float debt is exactly what
    subtracting each chunk in turn leaves."""
    chunks = 0
    while owed >= self.chunk:
      owed -= self.chunk
      chunks += 1
    return chunks, owed
