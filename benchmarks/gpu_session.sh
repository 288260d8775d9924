#!/usr/bin/env bash
# One GPU session's device run (issues 35 and 33), for a GPU lent for minutes: each part
# has its own time limit and its own log under LOG_DIR, and a part that fails or runs out
# of time does not stop the next.
#   1. benchmarks/gpu_check.sh: the GPU tests and gpu.py's sweep (layer vs cuDNN, epochs,
#      evaluation)
#   2. benchmarks/search_throughput.py: the main job's trials per minute at 1, 4 and 8
#      searches sharing the GPU, and 200 trials extrapolated
#   3. experiments/compare.sh: the SASRec comparison on ML-1M, leave-one-out, windows of
#      200, NDCG@10 (TRIALS trials a model, SEEDS seeds, WORKERS at a time)
#
#     MLSTM4RECO_DATA=../shared/data bash benchmarks/gpu_session.sh [LOG_DIR]
#
# Time limits (seconds): CHECK_TIMEOUT (300), THROUGHPUT_TIMEOUT (180), COMPARE_TIMEOUT
# (240); TRIALS (8), SEEDS (5), WORKERS (8) for the comparison.
set -u -o pipefail
cd "$(dirname "$0")/.."
logs=${1:-results/gpu_session}
mkdir -p "$logs"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
status=0

TEST_TIMEOUT=120 BENCH_TIMEOUT=$((${CHECK_TIMEOUT:-300} - 120)) \
    bash benchmarks/gpu_check.sh "$logs/check" 2>&1 | tail -n 40 > "$logs/check.log"
status=$((status | $?))

timeout "${THROUGHPUT_TIMEOUT:-180}" "$python" benchmarks/search_throughput.py --dataset ml1m \
    --model mlstm --workers 1 4 8 --trials-per-worker 2 --device cuda --out "$logs" \
    > "$logs/throughput.log" 2>&1
status=$((status | $?))

TRIALS=${TRIALS:-8} SEEDS=${SEEDS:-5} WORKERS=${WORKERS:-8} THREADS=1 DEVICE=cuda \
    OUT="$logs/results" timeout "${COMPARE_TIMEOUT:-240}" \
    bash experiments/compare.sh ml1m leave_one_out 200 ndcg@10 > "$logs/compare.log" 2>&1
status=$((status | $?))

echo "gpu_session exit $status" | tee -a "$logs/session.log"
exit "$status"
