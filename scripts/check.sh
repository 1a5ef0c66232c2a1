#!/usr/bin/env bash
# The whole check, as README and CI run it: dev environment, format, lint, types, tests,
# then the zipapp, the Python version matrix and the DoD runtime check.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${ORCH_VENV:-.venv}
case $venv in /*) ;; *) venv="$PWD/$venv" ;; esac
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
export PATH="$venv/bin:$PATH"

echo "== ruff format --check ."
ruff format --check .
echo "== ruff check ."
ruff check .
echo "== mypy (strict) on orch"
mypy
# The report tests parse our Mermaid with the real Mermaid library under Node when it is
# installed; without node they skip with a visible reason.
mermaid_prefix=${ORCH_MERMAID_PREFIX:-/tmp/mermaid-node}
export ORCH_MERMAID_NODE_MODULES="$mermaid_prefix/node_modules"
if command -v npm >/dev/null 2>&1 && [ ! -d "$ORCH_MERMAID_NODE_MODULES/mermaid" ]; then
  echo "== installing mermaid + jsdom into $mermaid_prefix (test-only)"
  npm install --silent --no-audit --no-fund --prefix "$mermaid_prefix" mermaid jsdom >/dev/null 2>&1 \
    || echo "   (npm install failed: the Mermaid tests will skip)"
fi

# The slurm executor's tests run against a real one-node cluster (scripts/slurm_up.sh needs
# root and installs Debian's Slurm packages when missing; ~2 s when it is up). Without one they
# skip with the reason shown; the check never fails for want of Slurm.
echo "== slurm test cluster (scripts/slurm_up.sh)"
if ! bash scripts/slurm_up.sh; then
  echo "   (slurm unavailable: the cluster tests will skip)"
fi
echo "== pytest"
pytest -q

echo "== zipapp: dist/orch.pyz"
python scripts/build_zipapp.py
echo "== version matrix: the zipapp under every CPython 3.8-3.13 found"
python scripts/version_matrix.py --pyz dist/orch.pyz
echo "== DoD runtime check (tools/dod_check.py --skip-quality-gates)"
dod_home=$(mktemp -d)
python tools/dod_check.py --skip-quality-gates --home "$dod_home"
rm -rf "$dod_home"
