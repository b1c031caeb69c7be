#!/usr/bin/env bash
# Build the wheel, install it (not editable) into a fresh environment and run two commands from outside the
# repository (one run from options, one from a --config file): the built-in task files must come from the installed
# package, not from this checkout.
# Usage: bash scripts/wheel_check.sh [VENV_DIR]   (default .venv-wheel; about 1 to 2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(realpath -m "${1:-.venv-wheel}")
dist=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$dist" "$work"' EXIT
python3.11 -m pip wheel -q --no-deps . -w "$dist"
rm -rf "$venv"
python3.11 -m venv "$venv"
"$venv/bin/pip" install -q -c constraints.txt "$dist"/l2sparse-*.whl
py="$venv/bin/python"
cd "$work"
"$py" -c "import l2sparse, pathlib; assert 'site-packages' in l2sparse.__file__, l2sparse.__file__"
"$py" -m l2sparse.tasks list --dataset synthetic | grep -q "synthetic-default"
"$py" -m l2sparse.train --steps 2 --train-size 8 --test-size 4 --image-size 16 --batch-size 4 --out run --quiet
test -s run/report.json
printf 'steps: 2\ntrain-size: 8\ntest-size: 4\nimage-size: 16\nbatch-size: 4\nquiet: true\n' > run.yaml
"$py" -m l2sparse.train --config run.yaml --out run-from-file
test -s run-from-file/report.json
echo "wheel check: the installed wheel lists its tasks and trains"
