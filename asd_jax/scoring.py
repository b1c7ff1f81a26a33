"""``--mode=score``: score new recordings with a trained run and decide, per clip, normal or anomaly."""

from __future__ import annotations

import json

import numpy as np

from asd_jax.data import dcase
from asd_jax.evaluate.official import unit_word
from asd_jax.evaluate.thresholds import ThresholdSet
from asd_jax.methods import registry
from asd_jax.rundir import RunDir
from asd_jax.train import ensemble


def score_files(workdir: str, paths: list[str], output: str = "", progress: bool = True) -> list[dict]:
    """Score new recordings with the trained run in ``workdir``: per file its score, the threshold and the decision.

    A clip whose name (or raw MIMII folder) gives its machine id / section is judged by that unit's threshold (its
    domain's, when the name gives one and the run has it), any other by the global threshold; each row says which
    (``threshold_scope``). A run that could set no threshold (too few training normals to hold any out) gives
    scores without a decision."""
    if not paths:
        raise ValueError("give the wav files to score after the flags: "
                         "python launch.py --mode=score --workdir=RUN clip1.wav clip2.wav")
    run = RunDir(workdir)
    config = run.load_config()
    config.progress = progress
    saved = run.read_json(RunDir.THRESHOLD)
    threshold = ThresholdSet.from_json(saved) if saved.get("policy") is not None else None
    resolved = run.load_resolved()
    unit_name = unit_word(resolved.get("protocol", "dcase2020"))
    members = [ensemble.Member(m["name"], m["seed"], tuple(m["hparams"].items())) for m in resolved["members"]]
    detector = registry.get(config.method).restore_detector(config, run, members)
    scores = detector.score(list(paths), "scoring")
    rows = []
    for path, member_scores in zip(scores.paths, scores.values.T):
        score = float(np.mean(member_scores))
        if threshold is None:  # the run could set none: the score alone, and why
            rows.append({"file": path, "score": score, "threshold": None, "threshold_unit": None,
                         "threshold_domain": None, "threshold_scope": saved.get("reason") or "no threshold",
                         "decision": None})
            continue
        named = dcase.unit_of(path)
        value, unit, domain = threshold.lookup(*(named or (None, None)))
        if unit is not None:
            scope = f"{unit_name} {unit}" + (f", {domain} domain" if domain else "")
        elif not threshold.per_unit:
            scope = "global"
        elif named is None:
            scope = f"global: the file name gives no {unit_name}"
        else:
            scope = f"global: {unit_name} {named[0]} has no threshold of its own"
        rows.append({"file": path, "score": score, "threshold": value, "threshold_unit": unit,
                     "threshold_domain": domain, "threshold_scope": scope,
                     "decision": "anomaly" if score > value else "normal"})
    rows += [{"file": s["file"], "error": s["error"]} for s in scores.skipped]
    for row in rows:
        if "error" in row:
            print(f"{row['file']}: SKIPPED ({row['error']})")
        elif threshold is None:
            print(f"{row['file']}: score {row['score']:.6g}  (no decision: the run has no threshold)")
        else:
            print(f"{row['file']}: score {row['score']:.6g}  threshold {row['threshold']:.6g} "
                  f"({threshold.policy}, {row['threshold_scope']}{', TEST-TUNED' if threshold.test_tuned else ''})"
                  f"  -> {row['decision']}")
    if output:
        with open(output, "w") as handle:
            json.dump({"workdir": workdir, "method": config.method,
                       "threshold": threshold.to_json() if threshold is not None else saved,
                       "clips": rows}, handle, indent=2)
    return rows
