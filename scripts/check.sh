#!/usr/bin/env bash
# The whole check, as README and CI run it: dev environment, format, lint, types, tests,
# then the zipapp, the Python version matrix and the DoD runtime check.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${ORCH_VENV:-.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    # Some distributions ship python3 without ensurepip: fall back to virtualenv.
    rm -rf "$venv"
    "$python" -m pip install --quiet --user virtualenv
    "$python" -m virtualenv --quiet "$venv"
  fi
fi
echo "== installing orch with its dev tools"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
export PATH="$PWD/$venv/bin:$PATH"

echo "== ruff format --check ."
ruff format --check .
echo "== ruff check ."
ruff check .
echo "== mypy (strict) on orch"
mypy
echo "== pytest"
pytest -q
