#!/usr/bin/env bash
# The id classifier's default recipe and its ablations on the DCASE-like world, every type in one run, 3 seeds in
# one program each: the candidates of experiments/select_id_classifier.py named below (their flags read from its
# DISCRETE table: the compact networks, single branch, fixed centres, one model per type, 64-frame windows), plain kNN
# (the default run's saved embeddings scored again, no training); then the table (experiments/world_table.py).
#   WORLD=/path/to/world RUNS=runs/world_ablations bash experiments/world_id_classifier_ablations.sh
# A run that finished is not trained again (launch.py resumes or reuses its work directory).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORLD=${WORLD:-runs/world_data}
RUNS=${RUNS:-runs/world_ablations}
[ -f "$WORLD/synthetic.json" ] || $PY launch.py --mode=synth --config.synthetic.layout=dcase2025 --data_dir="$WORLD"
CANDIDATES=(compact_body single_branch_spectrogram fixed_centres per_type_models windows_64)
run() {  # name, then the overrides
  local name=$1; shift
  $PY launch.py --method=id_classifier --data_dir="$WORLD" --machine_type=all --num_seeds=3 \
    --workdir="$RUNS/$name" "$@"
}
run default
$PY experiments/rescore_run.py --run "$RUNS/default" --world "$WORLD" --backends knn --out "$RUNS/rescored"
for name in "${CANDIDATES[@]}"; do
  # shellcheck disable=SC2046  # the flags are words without spaces
  run "$name" $($PY experiments/select_id_classifier.py --flags "$name")
done
$PY experiments/world_table.py "$RUNS/default" "$RUNS/rescored/backend_knn" "${CANDIDATES[@]/#/$RUNS/}" \
  --json "$RUNS/ablations.json"
