#!/usr/bin/env bash
# Every GPU check of the project in one run, for a GPU lent for minutes (issue 6):
# the device and versions, the layer and Triton tests compiled on the GPU, then
# benchmarks/gpu.py --sweep (kernel resources, Triton vs fused in each precision, layer
# times against cuDNN's LSTM, launch-option sweep, ML-1M epochs, evaluation, MRR with the
# kernels vs the fused path, full softmax float32 vs bfloat16). Arguments after LOG_DIR go to
# gpu.py: with --tune the sweep comes first and its fastest configuration at fp32 accuracy
# is measured beside the defaults. What gpu.py measures also goes to LOG_DIR/gpu.json (seconds,
# differences, MRR; rewritten after each part).
#
#     MLSTM4RECO_DATA=../shared/data bash benchmarks/gpu_check.sh [LOG_DIR [gpu.py options]]
#
# Runs from the repository root without installing the package (PYTHONPATH), so a
# machine with torch, Triton and the dependencies (hyperopt included) is enough. Each
# part has its own time limit; logs go to LOG_DIR (default results/gpu_check).
set -u -o pipefail
cd "$(dirname "$0")/.."
logs=${1:-results/gpu_check}
mkdir -p "$logs"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    "$python" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
    "$python" -c "import triton; print('triton', triton.__version__)" 2>&1
} 2>&1 | tee "$logs/device.log"

# -m 'not sm90': the tests that compile the kernels for sm_90 without a GPU run in CI
timeout "${TEST_TIMEOUT:-240}" "$python" -m pytest -q -p no:cacheprovider -m "not sm90" \
    tests/test_triton_mlstm.py tests/test_layers.py 2>&1 | tee "$logs/tests.log"
tests=$?

timeout "${BENCH_TIMEOUT:-420}" "$python" benchmarks/gpu.py --sweep --json "$logs/gpu.json" "${@:2}" 2>&1 \
    | tee "$logs/gpu.log"
bench=$?

echo "tests exit $tests, benchmark exit $bench" | tee -a "$logs/device.log"
exit $((tests || bench))
