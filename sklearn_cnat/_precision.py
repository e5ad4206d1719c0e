"""Training precision: bfloat16 autocast where the processor computes it natively.

``precision="auto"`` picks, at run time (machines differ between sessions):

* CUDA: float16 autocast (bfloat16 where the device supports it) with float32 weights;
* a CPU with AMX-BF16 or AVX512-BF16 (read from the processor's feature flags): bfloat16
  autocast, which oneDNN runs natively (measured 2-3x the float32 throughput of a train
  step for the shipped conv nets, docs/benchmarks.md);
* any other CPU: float32 (bfloat16 would be emulated, slower than float32).

Only the network's forward/backward in training uses it; the ridge head, the certificates
and calibration stay float64, and served outputs are computed in float32
(docs/certificates.md, section 7).
"""

import functools

import torch

from .exceptions import CNATValueError

__all__ = []

_PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=1)
def _cpu_flags():
    """The processor's feature flags (Linux ``/proc/cpuinfo``); empty where unreadable."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _cpu_has_native_bf16(flags=None):
    """Whether the CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16)."""
    flags = _cpu_flags() if flags is None else flags
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def _autocast_dtype(precision, device):
    """``None`` (float32) or the autocast dtype for ``precision`` on ``device``."""
    if precision not in _PRECISIONS:
        raise CNATValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    kind = torch.device(device).type if device is not None else "cpu"
    if precision == "float32":
        return None
    if precision == "auto":
        if kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if kind == "cpu":
            return torch.bfloat16 if _cpu_has_native_bf16() else None
        return None
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    if kind == "cpu" and dtype is torch.float16:
        raise CNATValueError("precision='float16' needs a CUDA device; on a CPU use 'bfloat16' or 'auto'")
    return dtype


def _describe(precision, device):
    """Human-readable resolved precision, e.g. ``"bfloat16 autocast (cpu: amx_bf16)"``."""
    dtype = _autocast_dtype(precision, device)
    if dtype is None:
        return "float32"
    flags = sorted({"amx_bf16", "avx512_bf16"} & set(_cpu_flags()))
    where = torch.device(device).type if device is not None else "cpu"
    return f"{str(dtype).replace('torch.', '')} autocast ({where}{': ' + ', '.join(flags) if flags and where == 'cpu' else ''})"
