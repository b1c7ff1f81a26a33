#!/usr/bin/env bash
# JAX against PyTorch on this CPU, in one command: the JAX training-step benchmark of `make bench` (lstm, gru_ae,
# dense_ae at ensemble size 1) and the three PyTorch references (experiments/bench_torch_*.py), alternated over
# ROUNDS rounds (odd rounds JAX first, even rounds PyTorch first, so a drift in load hits both), combined into one
# JSON with windows/s, shares of peak, load averages and the JAX/PyTorch speed ratio per method.
#
#   experiments/bench_torch_all.sh [OUTPUT.json]        # default bench_torch_all.json
#
# Environment: TORCH_PYTHON (a python with torch, default /work/torchvenv/bin/python), JAX_PYTHON (default
# .venv/bin/python), ROUNDS (default 2), THREADS (PyTorch threads, default 2), RUNS_DIR (keep the per-run JSONs
# there; default a temporary folder). The environment is passed through unchanged, so e.g. OMP_WAIT_POLICY reaches
# PyTorch (it is recorded in each PyTorch result).
set -euo pipefail

cd "$(dirname "$0")/.."
OUTPUT=${1:-bench_torch_all.json}
TORCH_PYTHON=${TORCH_PYTHON:-/work/torchvenv/bin/python}
JAX_PYTHON=${JAX_PYTHON:-.venv/bin/python}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
METHODS=(lstm gru_ae dense_ae)

if [[ ! -x "$TORCH_PYTHON" ]] || ! "$TORCH_PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "error: no PyTorch at TORCH_PYTHON=$TORCH_PYTHON." >&2
    echo "Install it in a virtualenv of its own, outside the repository (a CPU build):" >&2
    echo "    python3 -m venv /work/torchvenv && /work/torchvenv/bin/pip install torch==2.13.0 numpy" >&2
    echo "or set TORCH_PYTHON to a python that can import torch." >&2
    exit 2
fi
if [[ ! -x "$JAX_PYTHON" ]] || ! "$JAX_PYTHON" -c "import asd_jax" >/dev/null 2>&1; then
    echo "error: JAX_PYTHON=$JAX_PYTHON cannot import asd_jax; run 'make venv' or set JAX_PYTHON." >&2
    exit 2
fi

RUNS_DIR=${RUNS_DIR:-$(mktemp -d)}
mkdir -p "$RUNS_DIR"
echo "per-run JSON in $RUNS_DIR"

run_jax() {
    echo "== round $1: JAX (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    "$JAX_PYTHON" launch.py --mode=benchmark --method="$(IFS=,; echo "${METHODS[*]}")" --ensemble_sizes=1 \
        --output="$RUNS_DIR/jax_$1.json"
}

run_torch() {
    for method in "${METHODS[@]}"; do
        echo "== round $1: PyTorch $method (load average $(cut -d' ' -f1-3 /proc/loadavg))"
        "$TORCH_PYTHON" "experiments/bench_torch_$method.py" --threads="$THREADS" \
            --output="$RUNS_DIR/torch_${method}_$1.json"
    done
}

for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then
        run_jax "$round"
        run_torch "$round"
    else
        run_torch "$round"
        run_jax "$round"
    fi
done

"$JAX_PYTHON" - "$RUNS_DIR" "$ROUNDS" "$OUTPUT" "${METHODS[@]}" <<'EOF'
"""Combine the per-run JSONs into one report: per method and round the JAX and PyTorch windows/s, and their ratio."""
import datetime
import json
import os
import statistics
import sys

runs_dir, rounds, output, methods = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
read = lambda name: json.load(open(os.path.join(runs_dir, name)))
jax_runs = [read(f"jax_{r}.json") for r in range(1, rounds + 1)]
torch_runs = {m: [read(f"torch_{m}_{r}.json") for r in range(1, rounds + 1)] for m in methods}
report = {"cpu": jax_runs[0]["cpu"], "cpu_count": jax_runs[0]["cpu_count"], "rounds": rounds,
          "jax_version": jax_runs[0]["jax_version"], "torch_version": torch_runs[methods[0]][0]["torch_version"],
          "torch_threads": torch_runs[methods[0]][0]["threads"],
          "torch_omp_wait_policy": torch_runs[methods[0]][0].get("omp_wait_policy", ""),
          "ratio_note": "jax_over_torch = JAX windows/s / PyTorch windows/s (> 1: JAX faster), from the medians "
                        "over rounds; per_round pairs the runs of one round",
          "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "methods": {}}
print(f"\n{report['cpu']} ({report['cpu_count']} CPUs), JAX {report['jax_version']} vs torch "
      f"{report['torch_version']} ({report['torch_threads']} threads), {rounds} rounds")
print(f"{'method':10} {'JAX win/s':>11} {'torch win/s':>12} {'JAX/torch':>10} {'JAX % peak':>11} {'torch % peak':>13}"
      "  per-round JAX/torch")
for method in methods:
    jax_rows = [next(row for row in run["results"] if row["method"] == method) for run in jax_runs]
    jax_speed = [row["windows_per_s_per_member"] for row in jax_rows]
    torch_speed = [run["windows_per_s"] for run in torch_runs[method]]
    per_round = [j / t for j, t in zip(jax_speed, torch_speed)]
    entry = {"jax_windows_per_s": jax_speed, "torch_windows_per_s": torch_speed,
             "jax_windows_per_s_median": statistics.median(jax_speed),
             "torch_windows_per_s_median": statistics.median(torch_speed),
             "jax_over_torch": statistics.median(jax_speed) / statistics.median(torch_speed),
             "jax_over_torch_per_round": per_round,
             "jax_share_of_peak": [row["share_of_peak"] for row in jax_rows],
             "torch_share_of_peak": [run["share_of_peak"] for run in torch_runs[method]],
             "jax_load_average": [[run["load_average_before"], run["load_average_after"]] for run in jax_runs],
             "torch_load_average": [[run["load_average_before"], run["load_average_after"]]
                                    for run in torch_runs[method]]}
    report["methods"][method] = entry
    print(f"{method:10} {entry['jax_windows_per_s_median']:11,.0f} {entry['torch_windows_per_s_median']:12,.0f} "
          f"{entry['jax_over_torch']:10.2f} {100 * statistics.median(entry['jax_share_of_peak']):10.1f}% "
          f"{100 * statistics.median(entry['torch_share_of_peak']):12.1f}%  "
          + " ".join(f"{ratio:.2f}" for ratio in per_round))
report["runs"] = {"jax": jax_runs, "torch": torch_runs}
with open(output, "w") as handle:
    json.dump(report, handle, indent=2)
print(f"wrote {output}")
EOF
