"""Every benchmark script under scripts/ still imports and parses its options (a rename once broke two of them
silently, since nothing in the suite ran them)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "scripts").glob("*.py"))


def test_there_are_scripts():
  assert len(SCRIPTS) >= 4


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_imports_and_prints_its_usage(script):
  done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "usage:" in done.stdout
