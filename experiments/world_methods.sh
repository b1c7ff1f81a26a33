#!/usr/bin/env bash
# The DCASE-like synthetic world, every type in one run per method, 3 seeds in one program each; then the table of
# the official score per type and over all types (mean ± std over seeds): experiments/world_table.py.
#   WORLD=/path/to/world RUNS=runs/world bash experiments/world_methods.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORLD=${WORLD:-runs/world_data}
RUNS=${RUNS:-runs/world}
[ -f "$WORLD/synthetic.json" ] || $PY launch.py --mode=synth --config.synthetic.layout=dcase2025 --data_dir="$WORLD"
# the clip-vector kNN has no seed (one deterministic fit); the trained methods get 3 seeds in one program
$PY launch.py --method=logmel_knn --data_dir="$WORLD" --machine_type=all --workdir="$RUNS/logmel_knn"
for method in lstm dense_ae; do
  $PY launch.py --method=$method --data_dir="$WORLD" --machine_type=all --num_seeds=3 --workdir="$RUNS/$method"
done
# the classifier's default recipe: one model over every type, classes type x section x attributes
$PY launch.py --method=id_classifier --data_dir="$WORLD" --machine_type=all --num_seeds=3 \
  --workdir="$RUNS/id_classifier"
$PY experiments/world_table.py "$RUNS"/*/
