"""House style is part of the suite (so `.ci/run` fails on it): ruff's lint and format checks over the tree,
with the settings in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes(command):
  out = subprocess.run([sys.executable, "-m", "ruff", *command, str(ROOT)], capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0, out.stdout + out.stderr


def _first_party_imports(path: Path, package: str) -> list[tuple[str, str | None, int]]:
  """(module, alias or imported name, line) of every import of a first-party module in a file, at any depth
  (imports inside functions included); `from pkg import name` yields pkg.name when that is a module."""
  import ast

  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found += [(a.name, a.asname or a.name, node.lineno) for a in node.names if a.name.split(".")[0] in FIRST_PARTY]
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FIRST_PARTY:
      for a in node.names:
        sub = f"{node.module}.{a.name}"
        is_module = (ROOT / (sub.replace(".", "/") + ".py")).exists()
        found.append((sub if is_module else node.module, (a.asname or a.name) if is_module else a.name, node.lineno))
  return found


FIRST_PARTY = ("dreamer", "worlds")


def _modules() -> dict[str, Path]:
  out = {}
  for package in FIRST_PARTY:
    for path in sorted((ROOT / package).glob("*.py")):
      out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
  return out


def test_no_import_circle():
  modules = _modules()
  graph = {m: sorted({dep for dep, _, _ in _first_party_imports(p, m)} - {m}) for m, p in modules.items()}
  state, path = {}, []

  def visit(m):  # depth-first; a module met again while still on the path closes a circle
    state[m] = "open"
    path.append(m)
    for dep in graph.get(m, []):
      assert state.get(dep) != "open", "import circle: " + " -> ".join(path[path.index(dep) :] + [dep])
      if dep not in state:
        visit(dep)
    path.pop()
    state[m] = "done"

  for m in graph:
    if m not in state:
      visit(m)
  assert graph["dreamer.agent"] and "dreamer.train" not in graph["dreamer.dream"]  # the graph was really read


def test_no_private_name_crosses_modules():
  import ast

  crossing = []
  for module, path in _modules().items():
    imports = _first_party_imports(path, module)
    crossing += [f"{module}:{line} imports {name}" for _, name, line in imports if name.startswith("_")]
    aliases = {alias for dep, alias, _ in imports if (ROOT / (dep.replace(".", "/") + ".py")).exists()}
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
        if node.attr.startswith("_") and not node.attr.startswith("__"):
          crossing.append(f"{module}:{node.lineno} reads {node.value.id}.{node.attr}")
  assert not crossing, crossing
