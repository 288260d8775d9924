#!/usr/bin/env bash
# The SASRec comparison of docs/results.md: for each model a TPE search of the same
# budget on the validation objective, then each search's best over model seeds
# (reproduce --tuned), every model paired against the mLSTM; all under one protocol,
# one set of windows and one objective. Resumes where it stopped (the results files do).
#
#   experiments/compare.sh DATASET PROTOCOL WINDOW OBJECTIVE
#   TRIALS=20 SEEDS=5 experiments/compare.sh ml1m leave_one_out 200 ndcg@10
#   experiments/compare.sh ml1m user 100,20,100 mrr           # the study's protocol
#
# Environment: TRIALS (search budget per model, default 20), SEEDS (default 5),
# WORKERS (searches and runs at a time, default 1), THREADS (torch threads each,
# default torch's), MODELS, BASELINE (the model all are paired against, default
# mlstm_softmax_dropout), OUT (default results), CONFIG_DIR, DEVICE (default auto).
set -euo pipefail

if [ "$#" -ne 4 ]; then
    sed -n '2,14p' "$0" >&2
    exit 2
fi
dataset=$1 protocol=$2 window=$3 objective=$4
trials=${TRIALS:-20} seeds=${SEEDS:-5} workers=${WORKERS:-1}
models=${MODELS:-sasrec gru_softmax_dropout lstm_softmax_dropout mlstm_softmax_dropout}
here=$(cd "$(dirname "$0")" && pwd)
study=(--dataset "$dataset" --protocol "$protocol" --window "$window" --objective "$objective"
    --out "${OUT:-results}" --device "${DEVICE:-auto}")
if [ -n "${CONFIG_DIR:-}" ]; then study+=(--config-dir "$CONFIG_DIR"); fi
threads=()
if [ -n "${THREADS:-}" ]; then threads=(--threads "$THREADS"); fi

for model in $models; do
    # WORKERS searches share the model's folder: each claims its own trial numbers
    pids=()
    for _ in $(seq "$workers"); do
        python "$here/run.py" search "${study[@]}" --model "$model" --trials "$trials" \
            "${threads[@]}" --quiet &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
done
# shellcheck disable=SC2086  # the models are words
python "$here/run.py" reproduce "${study[@]}" --tuned --models $models --seeds "$seeds" \
    --workers "$workers" "${threads[@]}" --baseline "${BASELINE:-mlstm_softmax_dropout}"
