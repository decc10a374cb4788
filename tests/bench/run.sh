#!/usr/bin/env bash
# `make bench`: engine benchmarks. Figures are printed, never asserted.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NBCI=${1:-$ROOT/target/release/nbci}
exec "$ROOT/.venv/bin/python" "$HERE/engine_bench.py" --nbci "$NBCI" --papermill "$ROOT/.venv/bin/papermill" "${@:2}"
