#!/usr/bin/env bash
# diffusers' pipeline conformance suite against JointDiffusionPipeline (issue 30; docs/conformance.md).
# Usage: bash benchmarks/conformance/run.sh [DIFFUSERS_DIR]   (from the repository root; needs git and network once)
# diffusers' test files are fetched into DIFFUSERS_DIR (default /tmp/diffusers-tests), never into this repository.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${1:-/tmp/diffusers-tests}
COMMIT=58eb52c0803ea9af3abec60841c2a093bdf1f951  # the diffusers snapshot measured (its tests match 0.42's mixin)
if [ ! -d "$DIR/tests/pipelines" ]; then
    git clone --filter=blob:none --no-checkout https://github.com/huggingface/diffusers "$DIR"
    git -C "$DIR" sparse-checkout set tests
    git -C "$DIR" checkout -q "$COMMIT"
fi
PY=${PYTHON:-$REPO/.venv/bin/python}
"$PY" -m pip install -q parameterized requests-mock  # what diffusers' test utilities import
cp "$REPO/benchmarks/conformance/test_jointdiff_conformance.py" "$DIR/"
cd "$DIR"
OMP_NUM_THREADS=1 PYTHONPATH="$DIR:$REPO/src" "$PY" -m pytest -p no:cacheprovider -q -rA test_jointdiff_conformance.py \
    | grep -E "^(PASSED|FAILED|SKIPPED|ERROR)|passed|failed" || true
