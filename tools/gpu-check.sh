#!/usr/bin/env bash
# The GPU check, in one go, on a machine with an NVIDIA GPU:
#
#   1. build a wheel of every package (packages/flows-*) and install them, not editable, in a
#      fresh virtual environment with a CUDA build of torch;
#   2. run every package's suite with --device cuda, in float64 and in float32 (what
#      `nox -s tests-cuda` runs, against the built wheels);
#   3. run the GPU benchmark: python benchmarks/run.py --device cuda (small and GPU-sized
#      workloads, ours eager and compiled with CUDA graphs, beside the floor, zuko and nflows).
#
# Usage:   tools/gpu-check.sh [OUT]          (OUT defaults to build/gpu-check)
# Writes:  OUT/dist/*.whl, OUT/tests-float64.log, OUT/tests-float32.log, OUT/bench.log,
#          OUT/bench.json, OUT/summary.txt
# Environment:
#   FLOWS_CUDA_TORCH  the torch requirement to install if the environment has no CUDA torch
#                     (default torch==2.14.1, the newest release tested; see TORCH_VERSIONS in
#                     noxfile.py)
#   FLOWS_BENCH_ARGS  extra arguments for benchmarks/run.py (e.g. "--repeats 7")
#
# The environment is made with --system-site-packages, so a machine whose Python already has
# a CUDA torch (and pytest, zuko, nflows) uses them and needs no package index; otherwise the
# missing requirements are installed with pip. With no GPU it says so and exits 2.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${1:-build/gpu-check}
TORCH=${FLOWS_CUDA_TORCH:-torch==2.14.1}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no GPU here (nvidia-smi finds none): nothing was run" >&2
    exit 2
fi
nvidia-smi -L

rm -rf "$OUT"
mkdir -p "$OUT/dist"
python3 -m venv --system-site-packages "$OUT/venv"
PY="$OUT/venv/bin/python"

has_cuda_torch() {
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}
if ! has_cuda_torch; then
    echo "gpu-check: installing $TORCH (no CUDA torch in this Python)"
    "$PY" -m pip install -q "$TORCH"
fi
has_cuda_torch || { echo "gpu-check: torch sees no GPU after installing $TORCH" >&2; exit 1; }

# 1. The wheels, then the packages from them alone (no sources on the path).
"$PY" -m pip wheel -q --no-deps --wheel-dir "$OUT/dist" packages/flows-*/
"$PY" -m pip install -q --no-deps --force-reinstall "$OUT"/dist/*.whl
missing=$("$PY" - <<'EOF'
import importlib.util
wanted = {
    "pluggy": "pluggy", "numpy": "numpy", "tqdm": "tqdm", "torchdiffeq": "torchdiffeq",
    "matplotlib": "matplotlib", "pytest": "pytest", "hypothesis": "hypothesis",
    "zuko": "zuko", "nflows": "nflows", "sbi": "sbi", "pyro": "pyro-ppl",
}
print(" ".join(pip for module, pip in wanted.items() if importlib.util.find_spec(module) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "gpu-check: installing $missing"
    "$PY" -m pip install -q $missing
fi
"$PY" -c 'import torch, flows.core; print("torch", torch.__version__, "on", torch.cuda.get_device_name())'

# 2. Every suite on the GPU (the tests-cuda session's command), both dtypes.
status=0
suites=(packages/flows-*/tests)
for dtype in float64 float32; do
    echo "gpu-check: tests on cuda, $dtype"
    if ! "$PY" -m pytest -q -p no:cacheprovider "${suites[@]}" --device cuda --dtype "$dtype" \
        >"$OUT/tests-$dtype.log" 2>&1; then
        status=1
    fi
    tail -n 3 "$OUT/tests-$dtype.log"
done

# 3. The GPU benchmark.
echo "gpu-check: benchmark"
# shellcheck disable=SC2086  # FLOWS_BENCH_ARGS is a list of arguments
if ! "$PY" benchmarks/run.py --device cuda --no-commands --json "$OUT/bench.json" \
    ${FLOWS_BENCH_ARGS:-} >"$OUT/bench.log" 2>&1; then
    status=1
fi
sed -n '/^targets:/,$p' "$OUT/bench.log"

{
    echo "gpu-check $(date -u +%FT%TZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi -L
    for dtype in float64 float32; do echo "tests $dtype: $(tail -n 1 "$OUT/tests-$dtype.log")"; done
    sed -n '/^targets:/,$p' "$OUT/bench.log"
} >"$OUT/summary.txt"
echo "gpu-check: wrote $OUT/summary.txt (exit $status)"
exit $status
