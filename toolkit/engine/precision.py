"""Numeric precision of training: fp32, or bf16 autocast where the hardware has bf16 arithmetic."""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

from toolkit.errors import ToolkitError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Return True when the CPU reports bf16 dot-product instructions (AVX512-BF16 or AMX-BF16).

    Reads the Linux ``/proc/cpuinfo`` flags, and returns False where that file is missing.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """Turn ``auto`` into ``bf16`` (a CUDA GPU with bf16) or ``fp32`` (elsewhere); check an explicit choice.

    NOTE: ``auto`` keeps fp32 on CPUs, including those with bf16 instructions, until a
    benchmark shows bf16 autocast is faster there and trains as well.
    """
    if name not in PRECISIONS:
        raise ToolkitError(f"invalid precision '{name}'; use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        log.warning("this CPU reports no bf16 instructions: bf16 autocast will be emulated and slow")
    return name


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Return the autocast context of ``precision``: bf16 autocast, or a no-op for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
