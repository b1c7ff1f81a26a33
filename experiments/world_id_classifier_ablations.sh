#!/usr/bin/env bash
# The id classifier's default recipe and its ablations on the DCASE-like world, every type in one run, 3 seeds in
# one program each: single branch (spectrogram only), one model per type, fixed centres, 64-frame windows instead
# of the whole clip, plain kNN (the default run's saved embeddings scored again, no training); then the table
# (experiments/world_table.py).
#   WORLD=/path/to/world RUNS=runs/world_ablations bash experiments/world_id_classifier_ablations.sh
# A run that finished is not trained again (launch.py resumes or reuses its work directory).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORLD=${WORLD:-runs/world_data}
RUNS=${RUNS:-runs/world_ablations}
[ -f "$WORLD/synthetic.json" ] || $PY launch.py --mode=synth --config.synthetic.layout=dcase2025 --data_dir="$WORLD"
run() {  # name, then the overrides
  local name=$1; shift
  $PY launch.py --method=id_classifier --data_dir="$WORLD" --machine_type=all --num_seeds=3 \
    --workdir="$RUNS/$name" "$@"
}
run default
$PY experiments/rescore_run.py --run "$RUNS/default" --world "$WORLD" --backends knn --out "$RUNS/rescored"
run spectrogram_only --config.id_classifier.frontend=spectrogram
run fixed_centres --config.id_classifier.centres=fixed
run per_type_models --config.id_classifier.types=separate
run windows_64 --config.id_classifier.frames=64 --config.id_classifier.train.windows_per_clip=8
$PY experiments/world_table.py "$RUNS/default" "$RUNS/rescored/backend_knn" "$RUNS/spectrogram_only" \
  "$RUNS/fixed_centres" "$RUNS/per_type_models" "$RUNS/windows_64" --json "$RUNS/ablations.json"
