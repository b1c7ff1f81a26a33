"""Benchmark (not a test): log-mel features for the training clips of a DCASE-dev-sized synthetic slider set.

Reports clips/s for a cold build (cache miss: decode + log-mel in parallel + write) and a warm load (cache hit), and
the peak RSS of each, against the size of the feature array. Each phase runs in a fresh subprocess so its peak RSS
is its own.

  python -m asd_jax.data.bench_features --output=bench_features.json [--num_clips=2804]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

_PHASE = r"""
import json, resource, sys, time  # the sum below touches every page in chunks: the data really is there
import numpy as np
from asd_jax.data.features import extract_features
paths = json.load(open(sys.argv[1]))
started = time.perf_counter()
result = extract_features(paths, cache_root=sys.argv[2], progress=False)
opened = time.perf_counter() - started
checksum = sum(float(result.features[i:i + 64].sum(dtype=np.float64)) for i in range(0, len(result.features), 64))
loaded = time.perf_counter() - started
print(json.dumps({"cache_hit": result.cache_hit, "clips": len(result.paths), "skipped": len(result.skipped),
                  "shape": list(result.features.shape), "open_s": opened, "load_and_read_s": loaded,
                  "checksum": checksum,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _phase(paths_file: str, cache_root: str) -> dict:
    output = subprocess.run([sys.executable, "-c", _PHASE, paths_file, cache_root], check=True,
                            capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_clips", type=int, default=2804, help="training clips (2,804 = real slider dev train)")
    parser.add_argument("--data_dir", default="", help="existing DCASE-layout data; default: synthetic dev-size set")
    parser.add_argument("--output", default="bench_features.json")
    args = parser.parse_args(argv)

    from asd_jax.data import dcase, synthetic

    if args.data_dir:
        data_dir = args.data_dir
    else:
        config = synthetic.SynthConfig.dcase_dev_size(num_test_normal=0, num_test_anomaly=0)
        data_dir = synthetic.default_dataset(config=config)
    paths = [c.path for c in dcase.find_clips(data_dir, "slider").select("train")][: args.num_clips]
    with tempfile.TemporaryDirectory() as scratch:
        paths_file = os.path.join(scratch, "paths.json")
        with open(paths_file, "w") as handle:
            json.dump(paths, handle)
        cache_root = os.path.join(scratch, "cache")
        cold = _phase(paths_file, cache_root)
        warm = _phase(paths_file, cache_root)
    array_mb = 4 * cold["shape"][0] * cold["shape"][1] * cold["shape"][2] / 2**20
    results = {
        "benchmark": "log-mel feature cache", "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "data_dir": data_dir,
        "num_clips": cold["clips"], "feature_array_mb": round(array_mb, 1),
        "cold": {**cold, "clips_per_s": cold["clips"] / cold["open_s"]},
        "warm": {**warm, "clips_per_s_open": warm["clips"] / warm["open_s"],
                 "clips_per_s_read": warm["clips"] / warm["load_and_read_s"]},
        "warm_speedup_open": cold["open_s"] / warm["open_s"],
        "warm_speedup_read": cold["open_s"] / warm["load_and_read_s"],
        "peak_rss_over_array_cold": max(cold["peak_rss_mb"], cold["peak_rss_children_mb"]) / array_mb,
        "peak_rss_over_array_warm": warm["peak_rss_mb"] / array_mb,
    }
    results["targets"] = {"warm_at_least_50x_faster": results["warm_speedup_read"] >= 50,
                          "peak_rss_under_2x_array": max(results["peak_rss_over_array_cold"],
                                                         results["peak_rss_over_array_warm"]) < 2}
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"{cold['clips']} clips, feature array {array_mb:.0f} MB")
    print(f"cold build: {cold['open_s']:.1f} s ({results['cold']['clips_per_s']:.1f} clips/s), "
          f"peak RSS {cold['peak_rss_mb']:.0f} MB (largest worker {cold['peak_rss_children_mb']:.0f} MB)")
    print(f"warm load:  open {warm['open_s'] * 1e3:.1f} ms, open + read every value {warm['load_and_read_s']:.2f} s "
          f"({results['warm_speedup_read']:.0f}x faster than cold), peak RSS {warm['peak_rss_mb']:.0f} MB")
    print(f"targets: {results['targets']}  -> {args.output}")
    return results


if __name__ == "__main__":
    main()
