"""Score a finished ``--method=id_classifier --machine_type=all`` run again with other score backends, without
retraining: each backend refits from the training embeddings the run saved, and each type's official figures are
computed as the run computes them. Writes ``<out>/backend_<name>/summary.json`` and ``<type>/results.json`` for
``experiments/world_table.py``.

    python experiments/rescore_run.py --run runs/world --world /tmp/world --backends knn --out runs/world_rescored
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import select_id_classifier  # noqa: E402
from asd_jax.rundir import RunDir  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the finished run's work directory (its config.json is used)")
    parser.add_argument("--world", required=True, help="the data folder the run trained on")
    parser.add_argument("--backends", default="knn", help="comma list of score backends")
    parser.add_argument("--out", required=True, help="where each backend's figures are written")
    args = parser.parse_args(argv)
    base = RunDir(args.run).load_config()
    if base.method != "id_classifier":
        parser.error(f"{args.run} is a {base.method} run: only id_classifier runs have score backends to change")
    select_id_classifier.rescore_backends(base, {}, args.world, args.run, [b for b in args.backends.split(",") if b],
                                          out_root=args.out)


if __name__ == "__main__":
    main()
