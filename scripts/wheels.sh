#!/usr/bin/env bash
# Wheels for a GPU machine without network (docs/atari100k.md, "GPU check"). Such a machine has jax, flax, optax,
# chex and orbax-checkpoint installed, with their own dependencies; this downloads the rest of what the project
# needs (mctx, gymnasium, ale-py with its ROMs, tensorboard, matplotlib, and setuptools to build the project) into
# wheels/ (git ignores it), for Linux x86_64 and one Python version, and writes wheels/requirements.txt.
#
#   scripts/wheels.sh                  # on a networked machine, in the checkout
#   PYTHON_VERSION=3.11 scripts/wheels.sh
#
# Then copy the checkout with wheels/ to the GPU machine, and there:
#   pip install --no-index --find-links wheels -r wheels/requirements.txt
#   pip install --no-index --find-links wheels --no-deps -e .
#
# How: pip resolves (without downloading) the closure of what we need and the closure of what the machine has,
# both for the target platform; only the difference is downloaded, each wheel pinned and without its
# dependencies, so jax, jaxlib, scipy, numpy and CUDA wheels never come. Needs pip >= 22.2 (--dry-run --report).
# Env: PYTHON (python3), PYTHON_VERSION (3.12), WHEELS (wheels).
set -euo pipefail

case "${1:-}" in
  -h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"  # the comment above
    exit 0
    ;;
esac

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VERSION=${PYTHON_VERSION:-3.12}
WHEELS=${WHEELS:-wheels}
NEEDED=(mctx gymnasium ale-py tensorboard matplotlib)  # the project's runtime dependencies a jax machine lacks
PRESENT=(jax flax optax chex orbax-checkpoint)  # on the GPU machine already
BUILD=("setuptools>=77")  # pyproject.toml's build backend, for pip install -e . without network
# manylinux_2_28 and older: glibc 2.28 (RHEL 8, Ubuntu 20.04) and later run them.
TARGET=(--only-binary=:all: --implementation cp --python-version "$VERSION"
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
resolve() {  # the report of what pip would install for the target, from nothing: resolve REPORT PACKAGE...
  local report=$1
  shift
  "$PYTHON" -m pip install -q --dry-run --ignore-installed --report "$report" "${TARGET[@]}" --target "$tmp/t" "$@"
}
resolve "$tmp/needed.json" "${NEEDED[@]}" "${BUILD[@]}"
resolve "$tmp/present.json" "${PRESENT[@]}"

# name==version of every needed wheel the machine lacks; requirements.txt pins the top-level ones.
"$PYTHON" - "$tmp" "$WHEELS" "${NEEDED[@]}" <<'EOF'
import json, pathlib, re, sys

tmp, wheels, top = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
def pins(report):
  return {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads((tmp / report).read_text())["install"]}
needed, present = pins("needed.json"), pins("present.json")
lacking = {n: v for n, v in needed.items() if n not in present and not n.startswith("nvidia-")}
(tmp / "download.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(lacking.items())))
wheels.mkdir(exist_ok=True)
(wheels / "requirements.txt").write_text("".join(f"{norm(n)}=={needed[norm(n)]}\n" for n in top))
print("wheels:", " ".join(f"{n}=={v}" for n, v in sorted(lacking.items())))
EOF
"$PYTHON" -m pip download -q --no-deps "${TARGET[@]}" -d "$WHEELS" -r "$tmp/download.txt"
echo "$(ls "$WHEELS"/*.whl | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1) in $WHEELS/"
