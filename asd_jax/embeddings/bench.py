"""Benchmark (not a test): VGGish embeddings per second, Flax (jitted, after warm-up) vs TensorFlow, same clips.

    python -m asd_jax.embeddings.bench --handle=PATH --num_clips=64 --output=vggish_bench.json

Both backends embed the same random 16 kHz clips through :class:`asd_jax.embeddings.vggish.VGGishExtractor`
(waveform in, [patches, 128] numpy out, host transfers included); each is warmed up first and timed over
``--repeats`` full passes (best and all times reported). TensorFlow never sees a GPU (JAX owns accelerators), so on
a GPU machine this compares JAX on the GPU with TensorFlow on the CPU; the JSON names both devices. Without
``--handle`` a random-weight VGGish-shaped model is built in a temporary folder, and the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np

from asd_jax.hardware import cpu_name, device_name
from asd_jax.models import vggish as vggish_model


def _time_backend(extractor, clips: list[np.ndarray], warmup: list[np.ndarray], repeats: int) -> tuple[dict, list]:
    start = time.perf_counter()
    extractor.embed_clips(warmup)
    warmup_s = time.perf_counter() - start
    times, outputs = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = extractor.embed_clips(clips)
        times.append(time.perf_counter() - start)
    patches = sum(len(output) for output in outputs)
    best = min(times)
    return {"warmup_s": warmup_s, "seconds": times, "best_s": best, "embeddings_per_s": patches / best,
            "clips_per_s": len(clips) / best}, outputs


def run(handle: str | None, num_clips: int, batch_size: int, seconds: float, repeats: int, seed: int) -> dict:
    """Time both backends on ``num_clips`` random clips; returns the JSON-ready report."""
    import jax

    from asd_jax.embeddings.vggish import VGGishExtractor, import_tensorflow

    tf = import_tensorflow()
    rng = np.random.default_rng(seed)
    samples = int(round(seconds * vggish_model.SAMPLE_RATE))
    clips = [(0.1 * rng.standard_normal(samples)).astype(np.float32) for _ in range(num_clips)]
    temporary = None
    if handle is None:
        from asd_jax.embeddings.testing import FIXTURE_NOTE, save_random_vggish

        temporary = tempfile.mkdtemp(prefix="vggish_bench_")
        handle = save_random_vggish(os.path.join(temporary, "model"), seed=seed)
        model_note = FIXTURE_NOTE
    else:
        model_note = handle
    try:
        flax = VGGishExtractor(handle, "flax", batch_size=batch_size, progress=False)
        flax_report, flax_out = _time_backend(flax, clips, clips[:batch_size], repeats)
        del flax
        tf_extractor = VGGishExtractor(handle, "tf", progress=False)
        tf_report, tf_out = _time_backend(tf_extractor, clips, clips[:1], repeats)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    device = jax.devices()[0]
    return {
        "model": model_note,
        "random_weights": temporary is not None,
        "num_clips": num_clips,
        "clip_seconds": seconds,
        "embeddings_per_clip": vggish_model.num_patches(samples),
        "batch_size": batch_size,
        "repeats": repeats,
        "flax": {**flax_report, "device": f"{device.platform}: "
                 f"{device_name(device)}",
                 "jax_version": jax.__version__, "precision": "highest"},
        "tf": {**tf_report, "device": f"cpu: {cpu_name()} (GPUs hidden from TensorFlow)",
               "tf_version": tf.__version__},
        "flax_speedup_over_tf": tf_report["best_s"] / flax_report["best_s"],
        "max_abs_diff_flax_vs_tf": float(max(np.max(np.abs(a - b)) for a, b in zip(flax_out, tf_out))),
        "host": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handle", default=None, help="TF-Hub handle or SavedModel folder; none: random fixture")
    parser.add_argument("--num_clips", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16, help="clips per Flax call")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over all clips (best is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="vggish_bench.json")
    args = parser.parse_args(argv)
    report = run(args.handle, args.num_clips, args.batch_size, args.seconds, max(1, args.repeats), args.seed)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"Flax ({report['flax']['device']}): {report['flax']['embeddings_per_s']:.1f} embeddings/s; "
          f"TF ({report['tf']['device']}): {report['tf']['embeddings_per_s']:.1f} embeddings/s; "
          f"max |diff| {report['max_abs_diff_flax_vs_tf']:.2e}; written to {args.output}")
    return report


if __name__ == "__main__":
    main()
