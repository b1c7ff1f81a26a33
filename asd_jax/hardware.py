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
