#!/usr/bin/env bash
# Run the benchmark suite (shared/BENCHMARKS.md) and write benchmarks/RESULTS.md.
#
#   bash benchmarks/run.sh [--full] [other run.py options]
#
# Uses its own virtualenv, .venv-bench at the repository root (sqlalchemy-oso pins packaging<24,
# which must not leak into the test environment). It is created from nothing when missing and
# refreshed when pyproject.toml or the peer list below changes. BENCH_PYTHON picks the interpreter.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
PY="${BENCH_PYTHON:-python3}"
PEERS=(
    "pycasbin"
    "oso==0.27.3"
    "sqlalchemy-oso==0.27.2"
    "sqla-authz==0.1.0b4"
    "cadurso==1.0.1"
    "psycopg[binary]"
)

stamp() {
    {
        printf '%s\n' "${PEERS[@]}"
        if [ -f "$ROOT/pyproject.toml" ]; then cat "$ROOT/pyproject.toml"; fi
    } | sha256sum | cut -d' ' -f1
}

if [ ! -x "$VENV/bin/python" ]; then
    echo "run.sh: creating $VENV"
    "$PY" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.bench-stamp" 2>/dev/null || true)" != "$(stamp)" ]; then
    echo "run.sh: installing the peers and bastion into $VENV"
    pip_install() {
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
            | { grep -v "is ignored" || true; }
    }
    pip_install sqlalchemy "${PEERS[@]}"
    if [ -f "$ROOT/pyproject.toml" ]; then
        pip_install -e "$ROOT[postgres]" \
            || echo "run.sh: WARNING: installing bastion failed; src/ is still on PYTHONPATH"
    else
        echo "run.sh: no pyproject.toml yet; bastion is taken from src/ via PYTHONPATH"
    fi
    # A last check that every peer imports.
    "$VENV/bin/python" -c "import sqlalchemy, psycopg, casbin, oso, sqlalchemy_oso, sqla_authz, cadurso"
    stamp >"$VENV/.bench-stamp"
fi

export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONHASHSEED=0
exec "$VENV/bin/python" "$ROOT/benchmarks/run.py" "$@"
