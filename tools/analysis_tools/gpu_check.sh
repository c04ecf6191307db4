#!/usr/bin/env bash
# Usage: tools/analysis_tools/gpu_check.sh [--dry-run] [--out DIR]
# The checks that need a GPU, in one markdown report (tools/analysis_tools/gpu_check.py).
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON=${PYTHON:-python}
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ] && PYTHON="$ROOT/.venv/bin/python"
PYTHONPATH="$ROOT:$PYTHONPATH" exec "$PYTHON" "$ROOT/tools/analysis_tools/gpu_check.py" "$@"
