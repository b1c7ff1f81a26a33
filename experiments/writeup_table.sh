#!/usr/bin/env bash
# Reproduce the write-up's comparison on one data set (default: the built-in synthetic slider set).
#   experiments/writeup_table.sh [DATA_DIR] [NUM_SEEDS]
# Pass --vggish_handle through VGGISH_HANDLE=/path/to/saved_model to add the VGGish + OC-SVM row.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${1:-}
SEEDS=${2:-3}
RUNS=()
for method in lstm gru_ae dense_ae logmel_ocsvm; do
  seeds=$SEEDS; [[ $method == *ocsvm ]] && seeds=1
  $PY launch.py --method=$method ${DATA:+--data_dir=$DATA} --num_seeds=$seeds --workdir=runs/writeup/$method --progress=false
  RUNS+=(runs/writeup/$method)
done
if [[ -n "${VGGISH_HANDLE:-}" ]]; then
  $PY launch.py --method=vggish_ocsvm ${DATA:+--data_dir=$DATA} --vggish_handle="$VGGISH_HANDLE" --workdir=runs/writeup/vggish_ocsvm --progress=false
  RUNS+=(runs/writeup/vggish_ocsvm)
fi
$PY experiments/writeup_table.py "${RUNS[@]}" | tee runs/writeup/table.md
