"""Names of the machine a figure was measured on, for benchmark reports."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device) -> str:
    """A JAX device as a reader would name it: the CPU model, or the accelerator's kind."""
    return cpu_name() if device.platform == "cpu" else getattr(device, "device_kind", str(device))


# Published dense peaks of known accelerators, TFLOP/s per chip (vendors' data sheets; SXM/OAM parts where there
# are several). JAX's default float32 matmul precision runs on TF32 tensor cores on NVIDIA GPUs from Ampere on and
# on bfloat16 passes on TPUs, so the benchmark's measured float32 peak is compared with both columns.
PUBLISHED_PEAKS_TFLOPS = {  # device_kind substring -> {"float32": ..., "tf32" / "bfloat16": ...}
    "H200": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4},
    "H100": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4},
    "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0},
    "L4": {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0},
    "V100": {"float32": 15.7},
    "TPU v4": {"bfloat16": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0},
    "TPU v5e": {"bfloat16": 197.0},
    "TPU v5p": {"bfloat16": 459.0},
}


def published_peak(device) -> dict | None:
    """``{"device_kind", "tflops": {precision: TFLOP/s}, "source"}`` for a known accelerator, else None (CPUs:
    their peak depends on the model, the clock and the cores, so only the measured peak is reported)."""
    if device.platform == "cpu":
        return None
    kind = getattr(device, "device_kind", "")
    for name, peaks in PUBLISHED_PEAKS_TFLOPS.items():
        if name.lower() in kind.lower():
            return {"device_kind": kind, "tflops": dict(peaks), "source": "vendor data sheet, dense (no sparsity)"}
    return None
