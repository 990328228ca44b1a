"""Whether this CPU does 16-bit floating-point arithmetic in hardware.

PyTorch runs bfloat16 and float16 on any CPU, but without the instructions (x86: AVX-512 BF16 / FP16
or AMX; Arm: BF16 / FP16 SIMD) it converts every product, and a matrix product runs about 40x slower
than in float32: 0.8 against 33 GFLOP/s measured on a 2-core AMD EPYC with AVX2 only, one thread,
[512 x 896] @ [896 x 4864]. With AMX, bfloat16 ran about 4.3x faster than float32 instead (an Intel
Xeon of the same 2-core size). A user who takes ``--dtype bfloat16`` for a speed-up deserves a line
saying which of the two machines this is."""
from __future__ import annotations

import sys

#: /proc/cpuinfo flags (x86 "flags", Arm "Features") that give each dtype its own arithmetic
NATIVE = {"bfloat16": ("avx512_bf16", "amx_bf16", "bf16"), "float16": ("avx512_fp16", "amx_fp16", "fphp", "asimdhp")}


def _cpuinfo() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return None


def cpu_flags(text: str | None = None) -> set[str] | None:
    """The feature flags in ``text`` (default: this CPU's /proc/cpuinfo), or None where it cannot tell."""
    text = _cpuinfo() if text is None else text
    flags: set[str] = set()
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags or None


def has_arithmetic(dtype: str, flags: set[str] | None) -> bool | None:
    """Whether a CPU with ``flags`` computes in 16-bit ``dtype`` in hardware (None: the flags are unknown)."""
    return None if flags is None else bool(flags & set(NATIVE[dtype]))


def slow_dtype_warning(dtype: str, flags: set[str] | None) -> str | None:
    """A one-line warning when ``dtype`` has no arithmetic of its own on a CPU with ``flags``, else None."""
    if dtype not in NATIVE or has_arithmetic(dtype, flags) is not False:
        return None
    return (f"dipsim: warning: this CPU has no {dtype} arithmetic ({', '.join(NATIVE[dtype][:2])}, or Arm's), so "
            f"{dtype} runs far slower than float32 here (about 40x on an AVX2-only CPU); use --dtype float32")


def warn_slow_dtype(dtype: str) -> None:
    message = slow_dtype_warning(dtype, cpu_flags())
    if message:
        print(message, file=sys.stderr, flush=True)


def describe() -> str:
    """One line naming this CPU and its 16-bit arithmetic, for benchmark output."""
    import os
    import platform

    text = _cpuinfo() or ""
    name = next((ln.partition(":")[2].strip() for ln in text.splitlines() if ln.startswith("model name")),
                platform.processor() or platform.machine())
    flags = cpu_flags(text)
    native = ("unknown" if flags is None else
              ", ".join(f"{d} {'yes' if has_arithmetic(d, flags) else 'no'}" for d in NATIVE))
    return f"CPU: {name}, {os.cpu_count()} cores; 16-bit arithmetic in hardware: {native}"
